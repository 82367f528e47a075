"""ImageNet and its four test-only domain-shift variants (CoOp layout).

`classnames.txt` holds one "wnid class name" line per class, in ImageNet label order (sorted
wnids). ImageNet labels follow the sorted wnid folders of `images/train` (as CoOp); `test` is
the official val set and, as in CoOp, `val` is that same set (it is not few-shot sampled).
Every variant records in `extra["imagenet_class_indices"]` the ImageNet label of each of its
labels: ImageNet-A and -R cover 200 of the 1000 classes, so a model trained on ImageNet must be
evaluated on that subset.
"""

from __future__ import annotations

from pathlib import Path

from vlprompt.data.coop_datasets import dataset_root
from vlprompt.data.registry import COOP_DATASETS_MD, register_dataset
from vlprompt.data.splits import (
    class_folder_items,
    folder_classes,
    human_classname,
    items_from_class_folders,
    list_images,
    make_splits,
    read_text_file,
    require_dir,
    require_file,
)
from vlprompt.data.templates import IMAGENET_TEMPLATES, TEMPLATES
from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError

IGNORED = ("README.txt",)


def _hint(anchor: str) -> str:
    return f"Download and lay it out as in {COOP_DATASETS_MD}#{anchor}."


def read_classnames(path: Path, hint: str = "") -> dict[str, str]:
    """wnid -> class name from a CoOp `classnames.txt`, in file order."""
    require_file(path, "class-name file", hint or _hint("imagenet"))
    out: dict[str, str] = {}
    for n, line in enumerate(read_text_file(path, "class-name file").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name:
            raise DataError(f"{path} line {n}: {line!r} should be 'wnid class name'")
        out[wnid] = human_classname(name)
    return out


def _classnames_for(ddir: Path, root: Path, hint: str) -> tuple[dict[str, str], Path]:
    """A variant's own classnames.txt (CoOp ships a copy with each), else imagenet's."""
    for path in (ddir / "classnames.txt", root / "imagenet" / "classnames.txt"):
        if path.is_file():
            return read_classnames(path, hint), path
    raise DataError(
        f"class-name file not found: neither {ddir / 'classnames.txt'} nor "
        f"{root / 'imagenet' / 'classnames.txt'} exists. Copy CoOp's imagenet classnames.txt "
        f"there. {hint}"
    )


def _named(wnids: list[str], names: dict[str, str], source: Path) -> dict[str, str]:
    missing = [w for w in wnids if w not in names]
    if missing:
        raise DataError(
            f"{len(missing)} class folder(s) are not in {source}, first: {missing[0]}; use "
            "CoOp's ImageNet classnames.txt (one 'wnid class name' line per class)"
        )
    return {w: names[w] for w in wnids}


@register_dataset(
    "imagenet",
    template=TEMPLATES["imagenet"],
    description="ImageNet-1k (test = the official val set, used as val too)",
    dataset_dir="imagenet",
    hint=_hint("imagenet"),
)
def load_imagenet(root: Path | None, **_) -> DatasetSplits:
    hint = _hint("imagenet")
    ddir = dataset_root(root, "imagenet", hint)
    names = read_classnames(ddir / "classnames.txt", hint)
    train_dir = require_dir(ddir / "images" / "train", "image folder", hint)
    val_dir = require_dir(ddir / "images" / "val", "image folder", hint)
    wnids = folder_classes(train_dir)
    named = _named(wnids, names, ddir / "classnames.txt")
    train = items_from_class_folders(train_dir, wnids, named)
    label_of = {w: i for i, w in enumerate(wnids)}
    test: list[Datum] = []
    for wnid in folder_classes(val_dir):
        if wnid not in label_of:
            raise DataError(f"{val_dir / wnid} is a class with no folder in {train_dir}")
        test += class_folder_items(val_dir / wnid, label_of[wnid], named[wnid])
    return make_splits(
        "imagenet",
        {"train": [d for items in train.values() for d in items], "val": test, "test": test},
        classnames=[named[w] for w in wnids],
        source=str(train_dir),
        templates=list(IMAGENET_TEMPLATES),
        extra={"dataset_dir": str(ddir), "val_is_test": True, "wnids": wnids},
    )


def _test_only(name: str, ddir: Path, items: list[Datum], classnames, indices, **extra):
    return make_splits(
        name,
        {"train": [], "val": [], "test": items},
        classnames=classnames,
        source=str(ddir),
        templates=list(IMAGENET_TEMPLATES),
        extra={
            "dataset_dir": str(ddir),
            "test_only": True,
            "imagenet_class_indices": indices,
            **extra,
        },
    )


def _wnid_variant(name: str, root: Path | None, dataset_dir: str, image_subdir: str, anchor: str):
    """Variants stored as <image_dir>/<wnid>/*: labels follow the sorted wnid folders (CoOp)."""
    hint = _hint(anchor)
    ddir = dataset_root(root, dataset_dir, hint)
    image_dir = require_dir(ddir / image_subdir, "image folder", hint)
    names, names_path = _classnames_for(ddir, Path(root), hint)
    wnids = folder_classes(image_dir, IGNORED)
    if not wnids:
        raise DataError(f"image folder {image_dir} holds no class folders. {hint}")
    named = _named(wnids, names, names_path)
    groups = items_from_class_folders(image_dir, wnids, named)
    order = {w: i for i, w in enumerate(names)}
    return _test_only(
        name, ddir, [d for items in groups.values() for d in items],
        [named[w] for w in wnids], [order[w] for w in wnids], wnids=wnids,
    )  # fmt: skip


@register_dataset(
    "imagenet_sketch",
    template=TEMPLATES["imagenet_sketch"],
    variant_of="imagenet",
    description="ImageNet-Sketch: sketches of the 1000 ImageNet classes (test only)",
    dataset_dir="imagenet-sketch",
    hint=_hint("imagenet-sketch"),
)
def load_imagenet_sketch(root: Path | None, **_) -> DatasetSplits:
    return _wnid_variant("imagenet_sketch", root, "imagenet-sketch", "images", "imagenet-sketch")


@register_dataset(
    "imagenet_a",
    template=TEMPLATES["imagenet_a"],
    variant_of="imagenet",
    description="ImageNet-A: natural adversarial examples of 200 ImageNet classes (test only)",
    dataset_dir="imagenet-adversarial",
    hint=_hint("imagenet-a"),
)
def load_imagenet_a(root: Path | None, **_) -> DatasetSplits:
    return _wnid_variant("imagenet_a", root, "imagenet-adversarial", "imagenet-a", "imagenet-a")


@register_dataset(
    "imagenet_r",
    template=TEMPLATES["imagenet_r"],
    variant_of="imagenet",
    description="ImageNet-R: renditions (art, cartoons, ...) of 200 ImageNet classes (test only)",
    dataset_dir="imagenet-rendition",
    hint=_hint("imagenet-r"),
)
def load_imagenet_r(root: Path | None, **_) -> DatasetSplits:
    return _wnid_variant("imagenet_r", root, "imagenet-rendition", "imagenet-r", "imagenet-r")


def _is_label(folder: str, n: int) -> bool:
    """`folder` is a plain decimal 0..n-1 (ASCII digits only: '²'.isdigit() is True too)."""
    return folder.isascii() and folder.isdigit() and len(folder) <= len(str(n)) and int(folder) < n


@register_dataset(
    "imagenetv2",
    template=TEMPLATES["imagenetv2"],
    variant_of="imagenet",
    description="ImageNetV2 matched-frequency: a new test set of the 1000 classes (test only)",
    dataset_dir="imagenetv2",
    hint=_hint("imagenetv2"),
)
def load_imagenetv2(root: Path | None, **_) -> DatasetSplits:
    """Folders are named by ImageNet label (0..999) and the label is that number (CoOp)."""
    hint = _hint("imagenetv2")
    ddir = dataset_root(root, "imagenetv2", hint)
    image_dir = require_dir(ddir / "imagenetv2-matched-frequency-format-val", "image folder", hint)
    names, names_path = _classnames_for(ddir, Path(root), hint)
    classnames = list(names.values())
    folders = folder_classes(image_dir)
    bad = [f for f in folders if not _is_label(f, len(classnames))]
    if bad:
        raise DataError(
            f"{image_dir / bad[0]}: ImageNetV2 folders must be labels 0..{len(classnames) - 1} "
            f"(the classes of {names_path})"
        )
    items: list[Datum] = []
    for folder in sorted(folders, key=int):
        y = int(folder)
        files = list_images(image_dir / folder)
        if not files:
            raise DataError(f"class folder {image_dir / folder} holds no images")
        items += [Datum(str(image_dir / folder / f), y, classnames[y]) for f in files]
    return _test_only(
        "imagenetv2", ddir, items, classnames, list(range(len(classnames))), wnids=list(names)
    )
