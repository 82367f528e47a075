"""A user's own data: an image folder (one sub-folder per class) or a CSV file listing images.

`imagefolder`: `root/<class>/*.jpg`, or `root/{train,val,test}/<class>/*.jpg` when the data are
already split. Without train/val/test folders each class is shuffled (seeded) and cut by
`split=(train, val, test)` ratios. Class names are the folder names with `_` -> space, unless a
`classnames_file` maps folder -> name (JSON object, or text lines "folder class name").

`csv`: a UTF-8 file (a byte-order mark, as Excel writes, is fine) with header
`path,label[,classname][,split]`; paths are absolute or relative to the CSV's folder. `label` is
an integer (0..n-1) or, when not a number, the class name itself.

Either source must yield at least two classes for `build_dataset` (a classifier needs two).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from vlprompt.data.registry import register_dataset
from vlprompt.data.splits import (
    SPLIT_NAMES,
    SPLIT_SEED,
    check_items_exist,
    check_ratios,
    class_folder_items,
    folder_classes,
    group_by_label,
    human_classname,
    items_from_class_folders,
    make_splits,
    read_json_file,
    read_text_file,
    require_dir,
    require_file,
    split_per_class,
    split_trainval,
)
from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError

DEFAULT_RATIOS = (0.5, 0.2, 0.3)


def _need_root(root: Path | None, what: str) -> Path:
    if root is None:
        raise DataError(f"the {what} data set needs root=PATH (or --root PATH): {what} to read")
    return Path(root).expanduser()


def read_classnames_file(path: str | Path) -> dict[str, str]:
    """folder -> class name from a JSON object or text lines 'folder class name'."""
    path = require_file(Path(path).expanduser(), "class-name file", "")
    if path.suffix.lower() == ".json":
        data = read_json_file(path, "class-name file")
        bad = (
            [k for k, v in data.items() if not isinstance(v, str)] if isinstance(data, dict) else []
        )
        if not isinstance(data, dict) or bad:
            where = f" (the name of {bad[0]!r} is not a string)" if bad else ""
            raise DataError(
                f"{path} must be a JSON object mapping folder name -> class name{where}, e.g. "
                '{"golden_retriever": "golden retriever"}'
            )
        return {str(k): v for k, v in data.items()}
    out = {}
    for n, line in enumerate(read_text_file(path, "class-name file").splitlines(), 1):
        if line.strip():
            folder, _, name = line.strip().partition(" ")
            if not name.strip():
                raise DataError(f"{path} line {n}: {line!r} should be 'folder class name'")
            out[folder] = name.strip()
    return out


def _names_for(classes: list[str], classnames_file) -> dict[str, str] | None:
    if classnames_file is None:
        return None
    names = read_classnames_file(classnames_file)
    missing = [c for c in classes if c not in names]
    if missing:
        raise DataError(
            f"class-name file {classnames_file} has no name for {len(missing)} class folder(s), "
            f"first: {missing[0]!r}"
        )
    return {c: names[c] for c in classes}


@register_dataset(
    "imagefolder",
    description="your images: ROOT/<class>/*.jpg or ROOT/{train,val,test}/<class>/*.jpg",
    hint="pass root=FOLDER holding one sub-folder of images per class",
    user_format=True,
)
def load_imagefolder(
    root: Path | None,
    *,
    split: tuple[float, float, float] | list[float] = DEFAULT_RATIOS,
    split_seed: int = SPLIT_SEED,
    classnames_file: str | Path | None = None,
    **_,
) -> DatasetSplits:
    split = check_ratios(split)
    root = require_dir(_need_root(root, "imagefolder"), "image folder", "")
    split_dirs = {s: root / s for s in SPLIT_NAMES if (root / s).is_dir()}
    if split_dirs:
        return _presplit_folder(root, split_dirs, split_seed, classnames_file)
    classes = folder_classes(root)
    if not classes:
        raise DataError(
            f"image folder {root} holds no class sub-folders; expected {root}/<class>/*.jpg"
        )
    groups = items_from_class_folders(root, classes, _names_for(classes, classnames_file))
    parts = split_per_class(groups, tuple(split), split_seed, where=f" in {root}")
    return make_splits("imagefolder", parts, source=str(root), extra={"dataset_dir": str(root)})


def _presplit_folder(root: Path, split_dirs: dict, split_seed: int, classnames_file):
    if "train" not in split_dirs or "test" not in split_dirs:
        raise DataError(
            f"{root} has {'/'.join(split_dirs)} but a pre-split image folder needs both train/ "
            "and test/ (val/ is optional: 20% of train per class is held out without it)"
        )
    classes = sorted({c for d in split_dirs.values() for c in folder_classes(d)})
    names = _names_for(classes, classnames_file) or {c: human_classname(c) for c in classes}
    parts: dict[str, list[Datum]] = {}
    for split, folder in split_dirs.items():
        parts[split] = [
            d
            for label, c in enumerate(classes)
            if (folder / c).is_dir()
            for d in class_folder_items(folder / c, label, names[c])
        ]
    if "val" not in parts:
        parts["train"], parts["val"] = split_trainval(parts["train"], 0.2, split_seed)
    return make_splits("imagefolder", parts, classnames=[names[c] for c in classes],
                       source=str(root), extra={"dataset_dir": str(root)})  # fmt: skip


@register_dataset(
    "csv",
    description="your images listed in a CSV file: path,label[,classname][,split]",
    hint="pass root=FILE.csv with header path,label[,classname][,split]",
    user_format=True,
)
def load_csv(
    root: Path | None,
    *,
    split: tuple[float, float, float] | list[float] = DEFAULT_RATIOS,
    split_seed: int = SPLIT_SEED,
    classnames_file: str | Path | None = None,
    **_,
) -> DatasetSplits:
    split = check_ratios(split)
    path = require_file(_need_root(root, "csv"), "CSV file", "")
    rows, lines = _read_rows(path)
    base = path.parent
    labels = [r["label"].strip() for r in rows]
    _require_values(path, "label", labels, lines)
    if all(_is_int(y) for y in labels):
        ints = _int_labels(path, labels, lines)
        names = _csv_int_names(path, rows, lines, ints, classnames_file)
    else:  # labels are class names: number them in sorted order
        classes = sorted(set(labels))
        index = {c: i for i, c in enumerate(classes)}
        ints = [index[y] for y in labels]
        names = {i: human_classname(c) for i, c in enumerate(classes)}
    # absolute paths stay as they are (pathlib), relative ones are joined to the CSV's folder
    items = [
        Datum(os.path.normpath(base / r["path"].strip()), y, names[y]) for r, y in zip(rows, ints)
    ]
    if "split" in rows[0]:
        parts: dict[str, list[Datum]] = {s: [] for s in SPLIT_NAMES}
        for n, r, d in zip(lines, rows, items):
            s = r["split"].strip().lower()
            if s not in parts:
                raise DataError(f"{path} line {n}: split {s!r} must be train, val or test")
            parts[s].append(d)
    else:
        parts = split_per_class(
            group_by_label(items), tuple(split), split_seed, where=f" in {path}"
        )
    check_items_exist(parts, path)
    n = max(names) + 1
    return make_splits("csv", parts, classnames=[names[y] for y in range(n)], source=str(path),
                       extra={"dataset_dir": str(base)})  # fmt: skip


def _require_values(path: Path, column: str, values: list[str], lines: list[int]) -> None:
    empty = next((line for value, line in zip(values, lines) if not value.strip()), None)
    if empty is not None:
        raise DataError(f"CSV file {path} line {empty}: the {column} is empty; fill it in")


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _read_rows(path: Path) -> tuple[list[dict[str, str]], list[int]]:
    """The CSV's rows and the line number of each (where it ends, for a value quoted across
    lines); a row with fewer or more fields than the header is a DataError naming its line."""
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
            reader = csv.DictReader(f)
            fields = [h.strip() for h in reader.fieldnames or []]
            reader.fieldnames = fields
            for row in reader:
                line = reader.line_num
                if None in row:  # more fields than the header: DictReader keeps them under None
                    raise DataError(
                        f"CSV file {path} line {line}: {len(fields) + len(row[None])} fields but "
                        f"the header has {len(fields)} ({','.join(fields)}); quote a value that "
                        'holds a comma ("a,b.jpg") or fix the row'
                    )
                if any(v is None for v in row.values()):  # fewer fields: DictReader fills None
                    given = sum(v is not None for v in row.values())
                    raise DataError(
                        f"CSV file {path} line {line}: {given} field(s) but the header has "
                        f"{len(fields)} ({','.join(fields)}); fill in the missing values"
                    )
                rows.append(row)
                lines.append(line)
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read CSV file {path}: {e}; save it as UTF-8") from e
    except (OSError, csv.Error) as e:
        raise DataError(f"cannot read CSV file {path}: {e}") from e
    if "path" not in fields or "label" not in fields:
        raise DataError(
            f"CSV file {path} must have a header with columns path,label[,classname][,split]; "
            f"found {fields}"
        )
    if not rows:
        raise DataError(f"CSV file {path} lists no images")
    return rows, lines


def _int_labels(path: Path, labels: list[str], lines: list[int]) -> list[int]:
    """Integer labels, each checked against the row count before anything is sized by them:
    N rows hold at most N classes, so a label outside 0..N-1 (or a negative one) is an error
    naming its line."""
    n_rows = len(labels)
    ints: list[int] = []
    for text, line in zip(labels, lines):
        y = int(text)
        if y < 0:
            raise DataError(
                f"CSV file {path} line {line}: label {y} is negative; integer labels run "
                "0..n-1 (or use class names as labels)"
            )
        if y >= n_rows:
            raise DataError(
                f"CSV file {path}: integer labels must run 0..{y} without gaps, but line "
                f"{line} has label {y} and {n_rows} row(s) hold at most {n_rows} classes; "
                "number the classes 0..n-1 (or use class names as labels)"
            )
        ints.append(y)
    return ints


def _csv_int_names(path, rows, lines, ints, classnames_file) -> dict[int, str]:
    n = max(ints) + 1  # <= len(rows): _int_labels checked every label
    gaps = sorted(set(range(n)) - set(ints))
    if gaps:
        raise DataError(
            f"CSV file {path}: integer labels must run 0..{n - 1} without gaps; missing {gaps[:5]}"
        )
    if "classname" in rows[0]:
        _require_values(path, "classname", [r["classname"] for r in rows], lines)
        names: dict[int, str] = {}
        for line, r, y in zip(lines, rows, ints):
            cname = human_classname(r["classname"])
            if names.setdefault(y, cname) != cname:
                raise DataError(
                    f"{path} line {line}: label {y} is named {cname!r} here but {names[y]!r} before"
                )
        return names
    if classnames_file is not None:
        mapping = read_classnames_file(classnames_file)
        missing = [y for y in range(n) if str(y) not in mapping]
        if missing:
            raise DataError(f"class-name file {classnames_file} has no name for label {missing[0]}")
        return {y: human_classname(mapping[str(y)]) for y in range(n)}
    raise DataError(
        f"CSV file {path} has integer labels but no class names: add a classname column or pass "
        "classnames_file (lines 'label class name'); CLIP needs names to build prompts"
    )
