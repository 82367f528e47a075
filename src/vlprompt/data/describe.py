"""`vlprompt datasets --root DIR`: which benchmarks are found under a data root, with counts."""

from __future__ import annotations

from pathlib import Path

from vlprompt.data.registry import get_dataset_info, list_datasets
from vlprompt.errors import DataError


def describe_datasets(root: str | Path | None) -> list[dict]:
    """One row per registered data set: found or not under `root`, its counts or a hint.

    Nothing is written: missing split files are generated in memory only. User formats
    (imagefolder, csv) are left out: they have no place under a data root. Generated data sets
    (mini_*) are listed as found, without counts (they are not read from the root).
    """
    rows = []
    for name in list_datasets():
        info = get_dataset_info(name)
        if info.user_format:
            continue
        path = Path(root).expanduser() / info.dataset_dir if root and info.dataset_dir else None
        row = {
            "name": name,
            "found": False,
            "path": str(path) if path else "",
            "n_classes": None,
            "n_train": None,
            "n_val": None,
            "n_test": None,
            "hint": "",
        }
        if info.dataset_dir is None:  # generated on demand (mini_*): nothing to find
            row.update(found=True, path="(generated)")
        elif root is None or not path.is_dir():
            row["hint"] = info.hint
        else:
            try:
                splits = info.load(root, write_split=False)
            except DataError as e:
                row["hint"] = str(e)
            else:
                row.update(
                    found=True,
                    n_classes=len(splits.classnames),
                    n_train=len(splits.train),
                    n_val=len(splits.val),
                    n_test=len(splits.test),
                )
        rows.append(row)
    return rows


def format_datasets_table(rows: list[dict]) -> str:
    """A plain-text table of `describe_datasets` rows; missing ones list where to get them."""
    header = ("data set", "found", "classes", "train", "val", "test", "path")
    lines = [header]
    for r in rows:
        counts = [r[k] for k in ("n_classes", "n_train", "n_val", "n_test")]
        lines.append(
            (
                r["name"],
                "yes" if r["found"] else "no",
                *("-" if c is None else str(c) for c in counts),
                r["path"] or "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 3, 4, 5}
    out = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in lines
    ]
    missing = [r for r in rows if not r["found"] and r["hint"]]
    if missing:
        out.append("")
        out += [f"{r['name']}: {r['hint']}" for r in missing]
    return "\n".join(out)
