"""The 10 CoOp data sets read from a split file (plus FGVC-Aircraft from its own lists).

Folder names, split-file names and the way missing split files are generated follow CoOp's
`datasets/*.py` (KaiyangZhou/CoOp); see docs/reproduce.md and CoOp's DATASETS.md for the layout.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from vlprompt.data.registry import COOP_DATASETS_MD, register_dataset
from vlprompt.data.splits import (
    check_items_exist,
    folder_classes,
    human_classname,
    items_from_class_folders,
    make_splits,
    read_json_file,
    read_or_make_split,
    read_text_file,
    require_dir,
    require_file,
    split_per_class,
    split_trainval,
)
from vlprompt.data.templates import TEMPLATES
from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError


def _hint(anchor: str) -> str:
    return f"Download and lay it out as in {COOP_DATASETS_MD}#{anchor}."


def dataset_root(root: Path | None, dataset_dir: str, hint: str) -> Path:
    """`<root>/<dataset_dir>`, or a DataError saying what is missing and how to get it."""
    if root is None:
        raise DataError(
            f"this data set is read from a data root: pass root=DIR (or --root DIR) where "
            f"{dataset_dir}/ lives. {hint}"
        )
    root = Path(root).expanduser()
    require_dir(root, "data root", "Pass the folder that holds your data sets.")
    return require_dir(root / dataset_dir, "data set folder", hint)


def _finish(name, parts, source, **fields) -> DatasetSplits:
    check_items_exist(parts, source)
    return make_splits(name, parts, source=str(source), **fields)


def _read_lines(path: Path, hint: str) -> list[str]:
    require_file(path, "list file", hint)
    lines = read_text_file(path, "list file").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def _one_based(path: Path, line: str, text: str) -> int:
    """A 1-based label of a list file as a 0-based label."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise DataError(
            f"{path}: bad line {line!r}; its label {text!r} should be a whole number from 1"
        )
    return int(text) - 1


def _load_mat(path: Path, key: str, hint: str):
    """`scipy.io.loadmat(path)[key]`; an unreadable file or a missing key -> DataError."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return loadmat(str(path))[key]
    except KeyError:
        raise DataError(
            f"{path} holds no {key!r} variable; it is not the data set's original file. {hint}"
        ) from None
    except (OSError, ValueError, TypeError, NotImplementedError, MatReadError) as e:
        raise DataError(
            f"cannot read MATLAB file {path}: {e}; replace it with the original. {hint}"
        ) from e


def _folder_dataset(
    name: str,
    root: Path | None,
    dataset_dir: str,
    image_subdir: str,
    split_name: str,
    anchor: str,
    *,
    ignored: tuple[str, ...] = (),
    new_names: dict[str, str] | None = None,
    write_split: bool = True,
) -> DatasetSplits:
    """Data sets stored as <image_dir>/<class>/*: split 50/20/30 per class when no split file."""
    hint = _hint(anchor)
    ddir = dataset_root(root, dataset_dir, hint)
    image_dir = require_dir(ddir / image_subdir, "image folder", hint)
    split_path = ddir / f"split_zhou_{split_name}.json"

    def make():
        classes = folder_classes(image_dir, ignored)
        if not classes:
            raise DataError(f"image folder {image_dir} holds no class folders. {hint}")
        groups = items_from_class_folders(image_dir, classes, new_names)
        return split_per_class(groups, (0.5, 0.2, 0.3))

    parts = read_or_make_split(split_path, image_dir, make, write_split=write_split)
    return _finish(name, parts, split_path, extra={"dataset_dir": str(ddir)})


# --- Caltech101, DTD, Food101, EuroSAT: class folders ---------------------------------------

CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CALTECH_NEW_NAMES = {
    "airplanes": "airplane",
    "Faces": "face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
}
EUROSAT_NEW_NAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@register_dataset(
    "caltech101",
    template=TEMPLATES["caltech101"],
    description="Caltech-101: 100 object classes (BACKGROUND_Google and Faces_easy dropped)",
    dataset_dir="caltech-101",
    hint=_hint("caltech101"),
)
def load_caltech101(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    return _folder_dataset(
        "caltech101", root, "caltech-101", "101_ObjectCategories", "Caltech101", "caltech101",
        ignored=CALTECH_IGNORED, new_names=CALTECH_NEW_NAMES, write_split=write_split,
    )  # fmt: skip


@register_dataset(
    "dtd",
    template=TEMPLATES["dtd"],
    description="Describable Textures: 47 texture classes",
    dataset_dir="dtd",
    hint=_hint("dtd"),
)
def load_dtd(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    return _folder_dataset(
        "dtd", root, "dtd", "images", "DescribableTextures", "dtd", write_split=write_split
    )


@register_dataset(
    "food101",
    template=TEMPLATES["food101"],
    description="Food-101: 101 dishes",
    dataset_dir="food-101",
    hint=_hint("food101"),
)
def load_food101(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    return _folder_dataset(
        "food101", root, "food-101", "images", "Food101", "food101", write_split=write_split
    )


@register_dataset(
    "eurosat",
    template=TEMPLATES["eurosat"],
    description="EuroSAT: 10 land-cover classes of Sentinel-2 satellite images",
    dataset_dir="eurosat",
    hint=_hint("eurosat"),
)
def load_eurosat(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    return _folder_dataset(
        "eurosat", root, "eurosat", "2750", "EuroSAT", "eurosat",
        new_names=EUROSAT_NEW_NAMES, write_split=write_split,
    )  # fmt: skip


# --- Oxford Pets: annotations/trainval.txt + test.txt -----------------------------------------


@register_dataset(
    "oxford_pets",
    template=TEMPLATES["oxford_pets"],
    description="Oxford-IIIT Pets: 37 cat and dog breeds",
    dataset_dir="oxford_pets",
    hint=_hint("oxfordpets"),
)
def load_oxford_pets(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    hint = _hint("oxfordpets")
    ddir = dataset_root(root, "oxford_pets", hint)
    image_dir = require_dir(ddir / "images", "image folder", hint)
    split_path = ddir / "split_zhou_OxfordPets.json"

    def read(list_name: str) -> list[Datum]:
        items = []
        path = ddir / "annotations" / list_name
        for line in _read_lines(path, hint):
            fields = line.split()
            if len(fields) < 2:
                raise DataError(f"{path}: bad line {line!r}; expected 'Name_123 label ...'")
            stem, label = fields[0], _one_based(path, line, fields[1])
            breed = stem.rsplit("_", 1)[0].lower()
            items.append(Datum(str(image_dir / f"{stem}.jpg"), label, human_classname(breed)))
        return items

    def make():
        train, val = split_trainval(read("trainval.txt"))
        return {"train": train, "val": val, "test": read("test.txt")}

    parts = read_or_make_split(split_path, image_dir, make, write_split=write_split)
    return _finish("oxford_pets", parts, split_path, extra={"dataset_dir": str(ddir)})


# --- Oxford Flowers: imagelabels.mat + cat_to_name.json ---------------------------------------


@register_dataset(
    "oxford_flowers",
    template=TEMPLATES["oxford_flowers"],
    description="Oxford Flowers-102: 102 flower species",
    dataset_dir="oxford_flowers",
    hint=_hint("flowers102"),
)
def load_oxford_flowers(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    hint = _hint("flowers102")
    ddir = dataset_root(root, "oxford_flowers", hint)
    image_dir = require_dir(ddir / "jpg", "image folder", hint)
    split_path = ddir / "split_zhou_OxfordFlowers.json"

    def make():
        label_file = require_file(ddir / "imagelabels.mat", "label file", hint)
        names_file = require_file(ddir / "cat_to_name.json", "class-name file", hint)
        labels = _load_mat(label_file, "labels", hint).reshape(-1)
        names = read_json_file(names_file, "class-name file")
        if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
            raise DataError(
                f"{names_file} must be a JSON object mapping flower label -> name, e.g. "
                '{"1": "pink primrose"}. ' + hint
            )
        groups: dict[int, list[Datum]] = defaultdict(list)
        for i, label in enumerate(labels):
            label = int(label)  # 1-based
            if str(label) not in names:
                raise DataError(f"{names_file} has no name for flower label {label}")
            path = image_dir / f"image_{i + 1:05d}.jpg"
            groups[label].append(Datum(str(path), label - 1, human_classname(names[str(label)])))
        return split_per_class(groups, (0.5, 0.2, 0.3))

    parts = read_or_make_split(split_path, image_dir, make, write_split=write_split)
    return _finish("oxford_flowers", parts, split_path, extra={"dataset_dir": str(ddir)})


# --- Stanford Cars: devkit .mat annotations; split paths relative to the data-set folder ------


def _car_name(meta_name: str) -> str:
    """'AM General Hummer SUV 2000' -> '2000 AM General Hummer SUV' (CoOp puts the year first)."""
    words = meta_name.split(" ")
    return " ".join([words[-1], *words[:-1]])


@register_dataset(
    "stanford_cars",
    template=TEMPLATES["stanford_cars"],
    description="Stanford Cars: 196 car models",
    dataset_dir="stanford_cars",
    hint=_hint("stanfordcars"),
)
def load_stanford_cars(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    hint = _hint("stanfordcars")
    ddir = dataset_root(root, "stanford_cars", hint)
    split_path = ddir / "split_zhou_StanfordCars.json"

    def read(image_subdir: str, anno: Path, meta: Path) -> list[Datum]:
        annos = _load_mat(require_file(anno, "annotation file", hint), "annotations", hint)
        names = _load_mat(require_file(meta, "class-name file", hint), "class_names", hint)
        try:
            names = [str(n[0]) for n in names[0]]
            rows = [(int(a["class"][0, 0]) - 1, str(a["fname"][0])) for a in annos[0]]
        except (IndexError, KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{anno} or {meta} is not laid out as the Stanford Cars devkit files ({e}). {hint}"
            ) from e
        items = []
        for label, fname in rows:
            if not 0 <= label < len(names):
                raise DataError(
                    f"{anno}: image {fname} has class {label + 1}, but {meta} names classes "
                    f"1..{len(names)}. {hint}"
                )
            path = ddir / image_subdir / fname
            items.append(Datum(str(path), label, human_classname(_car_name(names[label]))))
        return items

    def make():
        meta = ddir / "devkit" / "cars_meta.mat"
        trainval = read("cars_train", ddir / "devkit" / "cars_train_annos.mat", meta)
        test = read("cars_test", ddir / "cars_test_annos_withlabels.mat", meta)
        train, val = split_trainval(trainval)
        return {"train": train, "val": val, "test": test}

    parts = read_or_make_split(split_path, ddir, make, write_split=write_split)
    return _finish("stanford_cars", parts, split_path, extra={"dataset_dir": str(ddir)})


# --- SUN397: ClassName.txt + Training_01.txt / Testing_01.txt ---------------------------------


def _sun_name(relpath: str) -> str:
    """'a/apartment_building/outdoor/sun_x.jpg' -> 'outdoor apartment building'."""
    parts = relpath.split("/")[1:-1]  # drop the first letter and the file name
    return human_classname(" ".join(parts[::-1]))


@register_dataset(
    "sun397",
    template=TEMPLATES["sun397"],
    description="SUN397: 397 scene categories",
    dataset_dir="sun397",
    hint=_hint("sun397"),
)
def load_sun397(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    hint = _hint("sun397")
    ddir = dataset_root(root, "sun397", hint)
    image_dir = require_dir(ddir / "SUN397", "image folder", hint)
    split_path = ddir / "split_zhou_SUN397.json"

    def read(list_name: str, cname2lab: dict[str, int]) -> list[Datum]:
        items = []
        path = ddir / list_name
        for line in _read_lines(path, hint):
            rel = line.lstrip("/")
            folder = rel.rsplit("/", 1)[0]
            if folder not in cname2lab:
                raise DataError(f"{path}: class {folder!r} of {line!r} is not in ClassName.txt")
            items.append(Datum(str(image_dir / rel), cname2lab[folder], _sun_name(rel)))
        return items

    def make():
        classes = [s.lstrip("/") for s in _read_lines(ddir / "ClassName.txt", hint)]
        cname2lab = {c: i for i, c in enumerate(classes)}
        train, val = split_trainval(read("Training_01.txt", cname2lab))
        return {"train": train, "val": val, "test": read("Testing_01.txt", cname2lab)}

    parts = read_or_make_split(split_path, image_dir, make, write_split=write_split)
    return _finish("sun397", parts, split_path, extra={"dataset_dir": str(ddir)})


# --- UCF101: middle frames + ucfTrainTestlist -------------------------------------------------


def _ucf_folder(action: str) -> str:
    """'ApplyEyeMakeup' -> 'Apply_Eye_Makeup' (the midframe folders split CamelCase)."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@register_dataset(
    "ucf101",
    template=TEMPLATES["ucf101"],
    description="UCF101: 101 human actions (middle video frames)",
    dataset_dir="ucf101",
    hint=_hint("ucf101"),
)
def load_ucf101(root: Path | None, *, write_split: bool = True, **_) -> DatasetSplits:
    hint = _hint("ucf101")
    ddir = dataset_root(root, "ucf101", hint)
    image_dir = require_dir(ddir / "UCF-101-midframes", "image folder", hint)
    split_path = ddir / "split_zhou_UCF101.json"
    lists = ddir / "ucfTrainTestlist"

    def read(list_name: str, cname2lab: dict[str, int]) -> list[Datum]:
        items = []
        for line in _read_lines(lists / list_name, hint):
            action, _, filename = line.split()[0].partition("/")
            if not action or not filename or "/" in filename:
                raise DataError(
                    f"{lists / list_name}: bad line {line!r}; expected 'Action/v_Action_g01_c01.avi'"
                )
            if action not in cname2lab:
                raise DataError(f"{lists / list_name}: action {action!r} is not in classInd.txt")
            folder = _ucf_folder(action)
            path = image_dir / folder / filename.replace(".avi", ".jpg")
            items.append(Datum(str(path), cname2lab[action], human_classname(folder)))
        return items

    def make():
        cname2lab = {}
        for line in _read_lines(lists / "classInd.txt", hint):
            fields = line.split()
            if len(fields) != 2:
                raise DataError(f"{lists / 'classInd.txt'}: bad line {line!r}; expected '1 Action'")
            cname2lab[fields[1]] = _one_based(lists / "classInd.txt", line, fields[0])
        train, val = split_trainval(read("trainlist01.txt", cname2lab))
        return {"train": train, "val": val, "test": read("testlist01.txt", cname2lab)}

    parts = read_or_make_split(split_path, image_dir, make, write_split=write_split)
    return _finish("ucf101", parts, split_path, extra={"dataset_dir": str(ddir)})


# --- FGVC-Aircraft: variants.txt + images_variant_{train,val,test}.txt -------------------------


@register_dataset(
    "fgvc_aircraft",
    template=TEMPLATES["fgvc_aircraft"],
    description="FGVC-Aircraft: 100 aircraft variants",
    dataset_dir="fgvc_aircraft",
    hint=_hint("fgvcaircraft"),
)
def load_fgvc_aircraft(root: Path | None, **_) -> DatasetSplits:
    hint = _hint("fgvcaircraft")
    ddir = dataset_root(root, "fgvc_aircraft", hint)
    image_dir = require_dir(ddir / "images", "image folder", hint)
    classnames = _read_lines(ddir / "variants.txt", hint)
    cname2lab = {c: i for i, c in enumerate(classnames)}
    parts = {}
    for split in ("train", "val", "test"):
        path = ddir / f"images_variant_{split}.txt"
        items = []
        for line in _read_lines(path, hint):
            stem, _, cname = line.partition(" ")
            if cname not in cname2lab:
                raise DataError(f"{path}: variant {cname!r} of image {stem} is not in variants.txt")
            items.append(Datum(str(image_dir / f"{stem}.jpg"), cname2lab[cname], cname))
        parts[split] = items
    return _finish(
        "fgvc_aircraft", parts, ddir / "images_variant_*.txt",
        classnames=classnames, extra={"dataset_dir": str(ddir)},
    )  # fmt: skip
