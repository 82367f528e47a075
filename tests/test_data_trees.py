"""Tiny CoOp-layout fixture trees (real 8x8 images written by PIL) and one test per benchmark.

The builders are imported by the other tests/test_data_*.py files. Each benchmark tree has a
few classes with a few images each, laid out exactly as CoOp's DATASETS.md describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlprompt.data import build_dataset, load_full

IMAGENET_CLASSES = [
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great_white_shark"),
    ("n01491361", "tiger shark"),
]


def write_image(path: Path, seed: int = 0, size: int = 8) -> Path:
    """A small RGB image with seeded random pixels, format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_text(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{s}\n" for s in lines), encoding="utf-8")
    return path


def class_folders(image_dir: Path, classes: list[str], per_class: int, ext: str = ".jpg") -> None:
    for c, cls in enumerate(classes):
        for i in range(per_class):
            write_image(image_dir / cls / f"{cls}_{i:03d}{ext}", seed=100 * c + i)


# --- one builder per benchmark layout ---------------------------------------------------------


def make_caltech101(root: Path, per_class: int = 10) -> Path:
    image_dir = root / "caltech-101" / "101_ObjectCategories"
    class_folders(
        image_dir, ["BACKGROUND_Google", "Faces_easy", "Faces", "accordion", "airplanes"], per_class
    )
    return root


def make_dtd(root: Path, per_class: int = 10) -> Path:
    class_folders(root / "dtd" / "images", ["banded", "blotchy", "braided"], per_class)
    return root


def make_food101(root: Path, per_class: int = 10) -> Path:
    class_folders(
        root / "food-101" / "images", ["apple_pie", "baby_back_ribs", "baklava"], per_class
    )
    return root


def make_eurosat(root: Path, per_class: int = 10) -> Path:
    class_folders(root / "eurosat" / "2750", ["AnnualCrop", "Forest", "SeaLake"], per_class)
    return root


def make_oxford_pets(root: Path, trainval: int = 5, test: int = 3) -> Path:
    ddir = root / "oxford_pets"
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]
    tv_lines, test_lines = ["# comment lines are skipped"], []
    for label, (breed, species) in enumerate(breeds, 1):
        for i in range(trainval + test):
            stem = f"{breed}_{i + 1}"
            write_image(ddir / "images" / f"{stem}.jpg", seed=10 * label + i)
            line = f"{stem} {label} {species} {label}"
            (tv_lines if i < trainval else test_lines).append(line)
    write_text(ddir / "annotations" / "trainval.txt", tv_lines)
    write_text(ddir / "annotations" / "test.txt", test_lines)
    return root


def make_oxford_flowers(root: Path, per_class: int = 10) -> Path:
    from scipy.io import savemat

    ddir = root / "oxford_flowers"
    labels = [1 + (i % 3) for i in range(3 * per_class)]  # interleaved, as in the real file
    for i in range(len(labels)):
        write_image(ddir / "jpg" / f"image_{i + 1:05d}.jpg", seed=i)
    savemat(str(ddir / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    names = {"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells"}
    (ddir / "cat_to_name.json").write_text(json.dumps(names), encoding="utf-8")
    return root


def _car_annos(path: Path, rows: list[tuple[str, int]]) -> None:
    from scipy.io import savemat

    annos = np.zeros((1, len(rows)), dtype=[("fname", "O"), ("class", "O")])
    for i, (fname, label) in enumerate(rows):
        annos[0, i] = (fname, np.array([[label]], dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"annotations": annos})


def make_stanford_cars(root: Path, trainval: int = 5, test: int = 3) -> Path:
    from scipy.io import savemat

    ddir = root / "stanford_cars"
    meta = np.empty((1, 2), dtype=object)
    meta[0, 0], meta[0, 1] = "AM General Hummer SUV 2000", "Acura RL Sedan 2012"
    (ddir / "devkit").mkdir(parents=True)
    savemat(str(ddir / "devkit" / "cars_meta.mat"), {"class_names": meta})
    train_rows, test_rows = [], []
    for label in (1, 2):
        for i in range(trainval):
            name = f"{label}{i:04d}.jpg"
            write_image(ddir / "cars_train" / name, seed=label * 100 + i)
            train_rows.append((name, label))
        for i in range(test):
            name = f"{label}{i:04d}.jpg"
            write_image(ddir / "cars_test" / name, seed=label * 1000 + i)
            test_rows.append((name, label))
    _car_annos(ddir / "devkit" / "cars_train_annos.mat", train_rows)
    _car_annos(ddir / "cars_test_annos_withlabels.mat", test_rows)
    return root


def make_sun397(root: Path, trainval: int = 5, test: int = 3) -> Path:
    ddir = root / "sun397"
    classes = ["a/abbey", "a/apartment_building/outdoor", "b/bakery/shop"]
    train_lines, test_lines = [], []
    for c, cls in enumerate(classes):
        for i in range(trainval + test):
            rel = f"{cls}/sun_{c}{i:03d}.jpg"
            write_image(ddir / "SUN397" / rel, seed=c * 10 + i)
            (train_lines if i < trainval else test_lines).append("/" + rel)
    write_text(ddir / "ClassName.txt", ["/" + c for c in classes])
    write_text(ddir / "Training_01.txt", train_lines)
    write_text(ddir / "Testing_01.txt", test_lines)
    return root


def make_ucf101(root: Path, trainval: int = 5, test: int = 3) -> Path:
    ddir = root / "ucf101"
    actions = ["ApplyEyeMakeup", "Archery", "YoYo"]
    folders = ["Apply_Eye_Makeup", "Archery", "Yo_Yo"]
    train_lines, test_lines = [], []
    for c, (action, folder) in enumerate(zip(actions, folders), 1):
        for i in range(trainval + test):
            stem = f"v_{action}_g{i + 1:02d}_c01"
            write_image(ddir / "UCF-101-midframes" / folder / f"{stem}.jpg", seed=c * 10 + i)
            if i < trainval:
                train_lines.append(f"{action}/{stem}.avi {c}")
            else:
                test_lines.append(f"{action}/{stem}.avi")
    lists = ddir / "ucfTrainTestlist"
    write_text(lists / "classInd.txt", [f"{c} {a}" for c, a in enumerate(actions, 1)])
    write_text(lists / "trainlist01.txt", train_lines)
    write_text(lists / "testlist01.txt", test_lines)
    return root


def make_fgvc_aircraft(root: Path, per_split: tuple[int, int, int] = (4, 2, 3)) -> Path:
    ddir = root / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "F-16A/B"]
    write_text(ddir / "variants.txt", variants)
    n = 1000000
    for split, k in zip(("train", "val", "test"), per_split):
        lines = []
        for v in variants:
            for _ in range(k):
                n += 1
                write_image(ddir / "images" / f"{n}.jpg", seed=n)
                lines.append(f"{n} {v}")
        write_text(ddir / f"images_variant_{split}.txt", lines)
    return root


def _classnames_txt(path: Path) -> None:
    write_text(path, [f"{w} {name}" for w, name in IMAGENET_CLASSES])


def make_imagenet(root: Path, train: int = 6, val: int = 2) -> Path:
    ddir = root / "imagenet"
    _classnames_txt(ddir / "classnames.txt")
    for c, (wnid, _) in enumerate(IMAGENET_CLASSES):
        for i in range(train):
            write_image(ddir / "images" / "train" / wnid / f"{wnid}_{i}.JPEG", seed=c * 50 + i)
        for i in range(val):
            write_image(ddir / "images" / "val" / wnid / f"ILSVRC_val_{c}{i}.JPEG", seed=c * 70 + i)
    return root


def make_imagenetv2(root: Path, per_class: int = 2) -> Path:
    ddir = root / "imagenetv2"
    _classnames_txt(ddir / "classnames.txt")
    for label in range(len(IMAGENET_CLASSES)):
        for i in range(per_class):
            write_image(ddir / "imagenetv2-matched-frequency-format-val" / str(label) / f"{i}.jpeg")
    return root


def _wnid_variant(image_dir: Path, wnids: list[str], per_class: int) -> None:
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            write_image(image_dir / wnid / f"{i}.jpg", seed=c * 10 + i)


def make_imagenet_sketch(root: Path, per_class: int = 2) -> Path:
    ddir = root / "imagenet-sketch"
    _classnames_txt(ddir / "classnames.txt")
    _wnid_variant(ddir / "images", [w for w, _ in IMAGENET_CLASSES], per_class)
    return root


A_R_WNIDS = ["n01443537", "n01491361"]  # a 2-class subset: ImageNet labels 1 and 3


def make_imagenet_a(root: Path, per_class: int = 2) -> Path:
    ddir = root / "imagenet-adversarial"
    _classnames_txt(ddir / "classnames.txt")
    _wnid_variant(ddir / "imagenet-a", A_R_WNIDS, per_class)
    write_text(ddir / "imagenet-a" / "README.txt", ["ImageNet-A"])
    return root


def make_imagenet_r(root: Path, per_class: int = 2) -> Path:
    ddir = root / "imagenet-rendition"
    _classnames_txt(ddir / "classnames.txt")
    _wnid_variant(ddir / "imagenet-r", A_R_WNIDS, per_class)
    write_text(ddir / "imagenet-r" / "README.txt", ["ImageNet-R"])
    return root


BUILDERS = {
    "caltech101": make_caltech101,
    "dtd": make_dtd,
    "food101": make_food101,
    "eurosat": make_eurosat,
    "oxford_pets": make_oxford_pets,
    "oxford_flowers": make_oxford_flowers,
    "stanford_cars": make_stanford_cars,
    "sun397": make_sun397,
    "ucf101": make_ucf101,
    "fgvc_aircraft": make_fgvc_aircraft,
    "imagenet": make_imagenet,
    "imagenetv2": make_imagenetv2,
    "imagenet_sketch": make_imagenet_sketch,
    "imagenet_a": make_imagenet_a,
    "imagenet_r": make_imagenet_r,
}

# name -> (class names, (n_train, n_val, n_test)) of the full data set built above
EXPECTED = {
    "caltech101": (["face", "accordion", "airplane"], (15, 6, 9)),
    "dtd": (["banded", "blotchy", "braided"], (15, 6, 9)),
    "food101": (["apple pie", "baby back ribs", "baklava"], (15, 6, 9)),
    "eurosat": (["Annual Crop Land", "Forest", "Sea or Lake"], (15, 6, 9)),
    "oxford_pets": (["abyssinian", "american bulldog", "bengal"], (12, 3, 9)),
    "oxford_flowers": (
        ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"],
        (15, 6, 9),
    ),
    "stanford_cars": (["2000 AM General Hummer SUV", "2012 Acura RL Sedan"], (8, 2, 6)),
    "sun397": (["abbey", "outdoor apartment building", "shop bakery"], (12, 3, 9)),
    "ucf101": (["Apply Eye Makeup", "Archery", "Yo Yo"], (12, 3, 9)),
    "fgvc_aircraft": (["707-320", "A300B4", "F-16A/B"], (12, 6, 9)),
    "imagenet": (["tench", "goldfish", "great white shark", "tiger shark"], (24, 8, 8)),
    "imagenetv2": (["tench", "goldfish", "great white shark", "tiger shark"], (0, 0, 8)),
    "imagenet_sketch": (["tench", "goldfish", "great white shark", "tiger shark"], (0, 0, 8)),
    "imagenet_a": (["goldfish", "tiger shark"], (0, 0, 4)),
    "imagenet_r": (["goldfish", "tiger shark"], (0, 0, 4)),
}


def split_paths(items) -> list[str]:
    return [d.path for d in items]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_benchmark_layout_loads_with_coop_class_names_and_split_sizes(tmp_path, name):
    root = BUILDERS[name](tmp_path)
    full = load_full(name, root)
    classnames, sizes = EXPECTED[name]
    assert full.name == name
    assert full.classnames == classnames
    assert (len(full.train), len(full.val), len(full.test)) == sizes
    for split in (full.train, full.val, full.test):
        for d in split:
            assert Path(d.path).is_file()
            assert full.classnames[d.label] == d.classname
    # every class is represented in the test set
    assert {d.label for d in full.test} == set(range(len(classnames)))


@pytest.mark.parametrize("name", ["caltech101", "dtd", "oxford_pets", "stanford_cars", "ucf101"])
def test_missing_split_file_is_generated_as_json_and_read_back_identically(tmp_path, name):
    root = BUILDERS[name](tmp_path)
    info_dir = {"caltech101": "caltech-101", "stanford_cars": "stanford_cars"}.get(name, name)
    split_file = next(iter((root / info_dir).glob("split_zhou_*.json")), None)
    assert split_file is None
    first = load_full(name, root)
    split_file = next((root / info_dir).glob("split_zhou_*.json"))
    data = json.loads(split_file.read_text())
    assert sorted(data) == ["test", "train", "val"]
    rel, label, cname = data["train"][0]
    assert not Path(rel).is_absolute() and isinstance(label, int) and isinstance(cname, str)
    second = load_full(name, root)  # now read from the file
    assert second.train == first.train and second.val == first.val and second.test == first.test


def test_generated_split_is_deterministic_across_fresh_trees(tmp_path):
    a = load_full("dtd", make_dtd(tmp_path / "a"))
    b = load_full("dtd", make_dtd(tmp_path / "b"))
    rel = lambda splits, root: [Path(d.path).relative_to(root) for d in splits.train]  # noqa: E731
    assert rel(a, tmp_path / "a") == rel(b, tmp_path / "b")


def test_split_50_20_30_per_class_like_coop_read_and_split_data(tmp_path):
    full = load_full("food101", make_food101(tmp_path, per_class=7))
    # n=7: train round(3.5)=4 (banker's rounding as Python's round), val round(1.4)=1, test 2
    for y in range(3):
        counts = [sum(d.label == y for d in s) for s in (full.train, full.val, full.test)]
        assert counts == [round(7 * 0.5), round(7 * 0.2), 7 - round(7 * 0.5) - round(7 * 0.2)]


def test_existing_split_file_is_used_with_underscores_as_spaces(tmp_path):
    root = make_dtd(tmp_path)
    ddir = root / "dtd"
    files = sorted((ddir / "images" / "banded").iterdir())
    split = {
        "train": [[f"banded/{files[0].name}", 0, "banded_x"]],
        "val": [[f"banded/{files[1].name}", 0, "banded_x"]],
        "test": [[f"banded/{files[2].name}", 0, "banded_x"]],
    }
    (ddir / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    full = load_full("dtd", root)
    assert full.classnames == ["banded x"]
    assert split_paths(full.train) == [str(files[0])]


def test_imagenet_a_and_r_expose_their_imagenet_class_indices(tmp_path):
    make_imagenet(tmp_path)
    imagenet = load_full("imagenet", tmp_path)
    for name, builder in (("imagenet_a", make_imagenet_a), ("imagenet_r", make_imagenet_r)):
        builder(tmp_path)
        variant = load_full(name, tmp_path)
        indices = variant.extra["imagenet_class_indices"]
        assert indices == [1, 3]
        assert [imagenet.classnames[i] for i in indices] == variant.classnames
        assert variant.extra["variant_of"] == "imagenet"
        # labels are 0..199-style local labels (CoOp), mapped to ImageNet through the indices
        assert {d.label for d in variant.test} == {0, 1}


def test_imagenet_variants_fall_back_to_imagenet_classnames_txt(tmp_path):
    make_imagenet(tmp_path)
    make_imagenet_a(tmp_path)
    (tmp_path / "imagenet-adversarial" / "classnames.txt").unlink()
    assert load_full("imagenet_a", tmp_path).classnames == ["goldfish", "tiger shark"]


def test_imagenet_val_is_test_and_templates_are_the_7_ensemble(tmp_path):
    splits = build_dataset("imagenet", make_imagenet(tmp_path), shots=2, seed=1)
    assert len(splits.train) == 8  # 2 per class, 4 classes
    assert splits.val == splits.test and len(splits.test) == 8  # CoOp: val is not sampled
    assert len(splits.templates) == 7 and splits.template == "a photo of a {}."
    assert list((tmp_path / "imagenet" / "split_fewshot").glob("*.json"))  # JSON, not pickle
    assert not list((tmp_path / "imagenet").rglob("*.pkl"))


def test_imagenetv2_label_is_the_folder_number(tmp_path):
    splits = load_full("imagenetv2", make_imagenetv2(tmp_path))
    for d in splits.test:
        assert d.label == int(Path(d.path).parent.name)
    assert splits.extra["imagenet_class_indices"] == [0, 1, 2, 3]
