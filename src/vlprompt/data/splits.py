"""Reading, generating and saving CoOp split files (`split_zhou_<Name>.json`).

A split file is `{"train"|"val"|"test": [[relpath, label, classname], ...]}` with paths relative
to an image folder. When one is missing we generate it the way CoOp's loaders do (per-class
shuffles, `round()`ed proportions) with a fixed seed, and save it atomically so later runs
(and other tools reading the CoOp layout) see the same split.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError
from vlprompt.io import atomic_write_json

SPLIT_NAMES = ("train", "val", "test")
SPLIT_SEED = 1  # seed for generated splits (CoOp used the run's global seed; its files are shared)
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


def human_classname(name: str) -> str:
    """Class names as CoOp's prompt learners see them: `_` replaced by a space."""
    return name.replace("_", " ").strip()


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} not found: {path} is not a folder. {hint}".strip())
    return path


def require_file(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found: {path} does not exist. {hint}".strip())
    return path


def list_visible(folder: Path) -> list[str]:
    """Sorted names in `folder`, hidden ones (starting with '.') left out (Dassl's listdir_nohidden)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def list_images(folder: Path) -> list[str]:
    """Sorted image file names in `folder` (by extension, case-insensitive)."""
    return [
        n
        for n in list_visible(folder)
        if Path(n).suffix.lower() in IMAGE_EXTENSIONS and (folder / n).is_file()
    ]


def read_text_file(path: Path, what: str) -> str:
    """The text of a UTF-8 file (a byte-order mark, as Windows editors write, is dropped)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read {what} {path}: {e}; save it as UTF-8 text") from e
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e}") from e


def read_json_file(path: Path, what: str) -> object:
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except ValueError as e:  # not JSON, or an integer longer than Python converts (4300 digits)
        too_long = not isinstance(e, json.JSONDecodeError)
        problem = "it holds an integer too long to convert" if too_long else e
        raise DataError(f"cannot read {what} {path}: {problem}") from e
    except RecursionError as e:
        raise DataError(f"cannot read {what} {path}: it is nested too deeply") from e


def short_repr(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def leaves_folder(relpath: str) -> bool:
    """True if `relpath` is absolute or climbs out of the folder it is relative to.

    A lexical check (normpath, no file system access): a symlink inside the folder that points
    elsewhere is part of the user's own layout (e.g. images kept on another disk) and is allowed.
    """
    norm = os.path.normpath(relpath)
    return os.path.isabs(relpath) or norm == os.pardir or norm.startswith(os.pardir + os.sep)


def _split_entry(path: Path, image_dir: Path, split: str, i: int, entry: object):
    """Check one `[relpath, label, classname]` entry; return it as a tuple."""

    def bad(problem: str) -> DataError:
        return DataError(
            f"split file {path}: {split} entry {i} {short_repr(entry)} {problem}; expected "
            "[relpath, label, classname] with a relative path, an integer label and a name"
        )

    if not isinstance(entry, list) or len(entry) != 3:
        raise bad("is not a list of three values")
    rel, label, cname = entry
    if not isinstance(rel, str) or not rel.strip():
        raise bad("has a relpath that is not a non-empty string")
    if isinstance(label, bool) or not isinstance(label, int):
        raise bad(f"has label {short_repr(label, 40)}, not an integer")
    if not isinstance(cname, str) or not cname.strip():
        raise bad("has a classname that is not a non-empty string")
    if leaves_folder(rel):
        raise DataError(
            f"split file {path}: {split} entry {i} path {rel!r} leaves the image folder "
            f"{image_dir}; split files list paths relative to it"
        )
    return rel, label, cname


def read_split_file(path: Path, image_dir: Path) -> dict[str, list[Datum]]:
    """Read a CoOp split file; paths are joined to `image_dir`, `_` in class names -> space.

    Every entry is checked before anything is built from it: its types, that its path stays
    inside `image_dir`, and that labels run 0..(number of class names - 1), one name per label.
    """
    data = read_json_file(path, "split file")
    if not isinstance(data, dict) or not all(k in data for k in SPLIT_NAMES):
        raise DataError(
            f"split file {path} must be a JSON object with keys 'train', 'val' and 'test' "
            "holding [relpath, label, classname] lists (CoOp's split_zhou_*.json format)"
        )
    entries: dict[str, list[tuple[str, int, str]]] = {}
    for split in SPLIT_NAMES:
        part = data[split]
        if not isinstance(part, list):
            raise DataError(
                f"split file {path}: {split!r} holds {type(part).__name__} "
                f"{short_repr(part, 40)}; expected a list of [relpath, label, classname] entries"
            )
        entries[split] = [_split_entry(path, image_dir, split, i, e) for i, e in enumerate(part)]
    n_names = len({cname for part in entries.values() for _, _, cname in part})
    name_of: dict[int, str] = {}
    label_of: dict[str, int] = {}
    for split, part in entries.items():
        for i, (_, label, cname) in enumerate(part):
            where = f"split file {path}: {split} entry {i}"
            if not 0 <= label < n_names:
                raise DataError(
                    f"{where} has label {label}, but the file names {n_names} class(es), so "
                    f"labels run 0..{n_names - 1}; renumber the labels"
                )
            if name_of.setdefault(label, cname) != cname:
                raise DataError(
                    f"{where}: label {label} is named {cname!r} here but {name_of[label]!r} "
                    "before; each label needs one class name"
                )
            if label_of.setdefault(cname, label) != label:
                raise DataError(
                    f"{where}: class {cname!r} has label {label} here but {label_of[cname]} "
                    "before; each class name needs one label"
                )
    return {
        split: [
            Datum(str(image_dir / rel), label, human_classname(cname)) for rel, label, cname in part
        ]
        for split, part in entries.items()
    }


def write_split_file(path: Path, splits: dict[str, list[Datum]], prefix: Path) -> bool:
    """Save a split file (paths relative to `prefix`); warn and return False if not writable."""
    obj = {
        split: [[os.path.relpath(d.path, prefix), d.label, d.classname] for d in splits[split]]
        for split in SPLIT_NAMES
    }
    try:
        atomic_write_json(path, obj)
    except OSError as e:
        warnings.warn(
            f"could not save the generated split to {path} ({e}); using it in memory. It is "
            f"deterministic (seed {SPLIT_SEED}), so later runs regenerate the same split.",
            stacklevel=3,
        )
        return False
    return True


def group_by_label(items: Iterable[Datum]) -> dict[int, list[Datum]]:
    """Items per label, labels in order of first appearance (as Dassl's split_dataset_by_label)."""
    groups: dict[int, list[Datum]] = defaultdict(list)
    for item in items:
        groups[item.label].append(item)
    return groups


def check_ratios(ratios: tuple[float, float, float] | list[float]) -> tuple[float, float, float]:
    try:
        p_trn, p_val, p_tst = (float(r) for r in ratios)
    except (TypeError, ValueError) as e:
        raise DataError(f"split ratios {ratios!r} must be three numbers (train, val, test)") from e
    if min(p_trn, p_val, p_tst) < 0 or abs(p_trn + p_val + p_tst - 1.0) > 1e-6 or p_trn == 0:
        raise DataError(
            f"split ratios {ratios!r} must be non-negative, sum to 1 and give train a share, "
            "e.g. (0.5, 0.2, 0.3)"
        )
    return p_trn, p_val, p_tst


def split_per_class(
    groups: dict[int, list[Datum]],
    ratios: tuple[float, float, float] = (0.5, 0.2, 0.3),
    seed: int = SPLIT_SEED,
    where: str = "",
) -> dict[str, list[Datum]]:
    """Shuffle each class and cut it into train/val/test by `ratios` (CoOp's read_and_split_data).

    Per class: n_train = round(n * p_trn), n_val = round(n * p_val), test = the rest.
    """
    p_trn, p_val, p_tst = check_ratios(ratios)
    rng = random.Random(seed)
    out: dict[str, list[Datum]] = {s: [] for s in SPLIT_NAMES}
    for items in groups.values():
        items = list(items)
        rng.shuffle(items)
        n = len(items)
        n_train, n_val = round(n * p_trn), round(n * p_val)
        n_test = n - n_train - n_val
        if n_train < 1 or (p_val > 0 and n_val < 1) or (p_tst > 0 and n_test < 1):
            raise DataError(
                f"class {items[0].classname!r}{where} has {n} image(s): too few to split "
                f"{p_trn:g}/{p_val:g}/{p_tst:g} into train/val/test; add images, merge the "
                "class or pass other split ratios"
            )
        out["train"] += items[:n_train]
        out["val"] += items[n_train : n_train + n_val]
        out["test"] += items[n_train + n_val :]
    return out


def split_trainval(
    trainval: list[Datum], p_val: float = 0.2, seed: int = SPLIT_SEED
) -> tuple[list[Datum], list[Datum]]:
    """Carve round(n * p_val) items per class out of trainval as val (CoOp's split_trainval)."""
    rng = random.Random(seed)
    train, val = [], []
    for items in group_by_label(trainval).values():
        items = list(items)
        n_val = round(len(items) * p_val)
        if n_val < 1:
            raise DataError(
                f"class {items[0].classname!r} has {len(items)} train+val image(s): too few to "
                f"hold out {p_val:.0%} for validation"
            )
        rng.shuffle(items)
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def folder_classes(image_dir: Path, ignored: Iterable[str] = ()) -> list[str]:
    """Sorted class sub-folders of `image_dir` (hidden and `ignored` names left out)."""
    skip = set(ignored)
    return [n for n in list_visible(image_dir) if n not in skip and (image_dir / n).is_dir()]


def class_folder_items(folder: Path, label: int, classname: str) -> list[Datum]:
    """The images of one class folder; an empty class folder is an error."""
    files = list_images(folder)
    if not files:
        raise DataError(
            f"class folder {folder} holds no images (looked for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
        )
    return [Datum(str(folder / f), label, classname) for f in files]


def items_from_class_folders(
    image_dir: Path, classes: list[str], names: dict[str, str] | None = None
) -> dict[int, list[Datum]]:
    """Items of `image_dir/<class>/*` grouped by label = index in `classes`."""
    return {
        label: class_folder_items(
            image_dir / folder, label, (names or {}).get(folder, human_classname(folder))
        )
        for label, folder in enumerate(classes)
    }


def read_or_make_split(
    split_path: Path, image_dir: Path, make, *, write_split: bool = True
) -> dict[str, list[Datum]]:
    """Read `split_path` if it exists, else call `make()` and save its result next to the data."""
    if split_path.is_file():
        return read_split_file(split_path, image_dir)
    splits = make()
    if write_split:
        write_split_file(split_path, splits, image_dir)
    return splits


def check_items_exist(splits: dict[str, list[Datum]], source: Path) -> None:
    """Every listed image must exist: otherwise name the first missing one and the count."""
    missing = [d.path for s in SPLIT_NAMES for d in splits[s] if not os.path.isfile(d.path)]
    if missing:
        raise DataError(
            f"{source} lists {len(missing)} image(s) that do not exist, first: {missing[0]}. "
            "Check that the data set is complete and unpacked where the split file expects it "
            "(or delete a generated split file to regenerate it)"
        )


def first_missing(present: set[int], top: int, limit: int = 5) -> list[int]:
    """The first `limit` integers of 0..top not in `present`; at most len(present) + limit
    steps, so a huge `top` costs nothing."""
    out: list[int] = []
    y = 0
    while y <= top and len(out) < limit:
        if y not in present:
            out.append(y)
        y += 1
    return out


def make_splits(
    name: str,
    parts: dict[str, list[Datum]],
    *,
    classnames: list[str] | None = None,
    source: str = "",
    **fields,
) -> DatasetSplits:
    """DatasetSplits from train/val/test items; class names come from the items if not given.

    `source` (the file or folder the classes come from) is kept in `extra["source"]` for
    messages about the data set.
    """
    items = [d for s in SPLIT_NAMES for d in parts.get(s, [])]
    if classnames is None:
        by_label: dict[int, str] = {}
        for d in items:
            if by_label.setdefault(d.label, d.classname) != d.classname:
                raise DataError(
                    f"{source or name}: label {d.label} is named both {by_label[d.label]!r} and "
                    f"{d.classname!r}; each label needs one class name"
                )
        if min(by_label, default=0) < 0:
            raise DataError(
                f"{source or name}: label {min(by_label)} is negative; labels start at 0"
            )
        n = max(by_label, default=-1) + 1
        if n > len(by_label):  # some label of 0..n-1 has no item
            gaps = first_missing(set(by_label), n - 1)
            raise DataError(
                f"{source or name}: labels must run 0..{n - 1} without gaps, but label(s) "
                f"{gaps} have no item; renumber the labels"
            )
        classnames = [by_label[y] for y in range(n)]
    if source:
        fields["extra"] = {"source": str(source), **fields.get("extra", {})}
    return DatasetSplits(
        name=name,
        classnames=list(classnames),
        train=list(parts.get("train", [])),
        val=list(parts.get("val", [])),
        test=list(parts.get("test", [])),
        **fields,
    )


def require_two_classes(splits: DatasetSplits, source: str | Path) -> DatasetSplits:
    """A classifier needs at least two classes: fewer is a DataError naming the source."""
    names = splits.classnames
    if len(names) < 2:
        found = f"1: {names[0]!r}" if names else "none"
        raise DataError(
            f"data set {splits.name}: a classifier needs at least two classes; found {found} in "
            f"{source}. Add images of at least one more class"
        )
    return splits
