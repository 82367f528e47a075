"""Few-shot sampling (Dassl's generate_fewshot_dataset), its JSON cache and the base/new split.

Sampling matches Dassl exactly: one `random.Random(seed)` stream (what `random.seed(seed)` gives
Dassl's global generator) samples train, then val; per label, in order of first appearance,
`rng.sample(items, shots)`, or all items when a label has fewer. Given the same split file this
selects the same images as CoOp.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import warnings
from dataclasses import replace
from pathlib import Path

from vlprompt.data.splits import group_by_label, short_repr
from vlprompt.data.types import DatasetSplits, Datum
from vlprompt.errors import DataError
from vlprompt.io import atomic_write_json

SUBSAMPLE_CHOICES = ("all", "base", "new")
CACHE_VERSION = 1


def check_shots(shots: object) -> int:
    """`shots` must be an int >= 1, or 0 for all training images."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise DataError(
            f"shots={shots!r} is not valid: use an integer >= 1 (images per class), or 0 for "
            "the full training set"
        )
    return shots


def few_shot_sample(
    items: list[Datum], shots: int, seed: int | random.Random = 1, *, what: str = "train"
) -> list[Datum]:
    """`shots` items per label: `rng.sample(items_of_label, shots)`, labels in first-seen order.

    A label with fewer than `shots` items keeps all of them (one warning lists those labels).
    `shots=0` returns all items. Pass a `random.Random` to continue one stream (train then val).
    """
    check_shots(shots)
    if shots == 0:
        return list(items)
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    out: list[Datum] = []
    short: list[str] = []
    for label_items in group_by_label(items).values():
        if len(label_items) >= shots:
            out += rng.sample(label_items, shots)
        else:
            out += label_items
            short.append(f"{label_items[0].classname!r} ({len(label_items)})")
    if short:
        warnings.warn(
            f"{len(short)} class(es) have fewer than {shots} {what} images, so all of their "
            f"images are used: {', '.join(short[:10])}{' ...' if len(short) > 10 else ''}",
            stacklevel=2,
        )
    return out


def sample_splits(splits: DatasetSplits, shots: int, seed: int) -> DatasetSplits:
    """Few-shot train (`shots` per label) and val (`min(shots, 4)`), one seeded stream.

    As in CoOp, ImageNet's val (which is its test set) is not sampled.
    """
    if check_shots(shots) == 0:
        return splits
    rng = random.Random(seed)
    train = few_shot_sample(splits.train, shots, rng)
    val = splits.val
    if not splits.extra.get("val_is_test"):
        val = few_shot_sample(splits.val, min(shots, 4), rng, what="val")
    return replace(splits, train=train, val=val)


# --- the JSON cache ---------------------------------------------------------------------------


def cache_file(cache_dir: Path, shots: int, seed: int) -> Path:
    return Path(cache_dir) / f"shot_{shots}-seed_{seed}.json"


def default_cache_dir(splits: DatasetSplits, user_key: str | None = None) -> Path:
    """`<dataset_dir>/split_fewshot` (CoOp) if writable, else `~/.cache/vlprompt/fewshot/...`.

    `user_key` (for user data sets, whose folder we never write into) names a sub-folder of the
    home cache that is unique to the data source and its loader options.
    """
    ddir = splits.extra.get("dataset_dir")
    if ddir and user_key is None:
        here = Path(ddir) / "split_fewshot"
        if _writable(here):
            return here
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlprompt"
    key = user_key or hashlib.sha1(str(ddir).encode()).hexdigest()[:12]
    return base / "fewshot" / f"{splits.name}-{key}"


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)


def _encode(items: list[Datum], prefix: str) -> list[list]:
    return [[os.path.relpath(d.path, prefix), d.label, d.classname] for d in items]


def _decode(rows: object, prefix: str) -> list[Datum]:
    """Cache rows back to `Datum`s; a row of the wrong shape or types -> ValueError."""
    if not isinstance(rows, list):
        raise ValueError(f"train/val hold {type(rows).__name__}, not lists")
    out = []
    for row in rows:
        if not (
            isinstance(row, list)
            and len(row) == 3
            and isinstance(row[0], str)
            and type(row[1]) is int  # not bool, not float
            and isinstance(row[2], str)
        ):
            raise ValueError(f"entry {short_repr(row)} is not [relpath, label, classname]")
        rel, label, classname = row
        out.append(Datum(os.path.normpath(os.path.join(prefix, rel)), label, classname))
    return out


def save_fewshot(path: Path, splits: DatasetSplits, shots: int, seed: int) -> bool:
    """Write the sampled train/val as JSON (paths relative to the data-set folder)."""
    prefix = splits.extra.get("dataset_dir") or "/"
    obj = {
        "version": CACHE_VERSION,
        "dataset": splits.name,
        "shots": shots,
        "seed": seed,
        "train": _encode(splits.train, prefix),
        "val": _encode(splits.val, prefix),
    }
    try:
        atomic_write_json(path, obj)
    except OSError as e:
        warnings.warn(f"could not write the few-shot cache {path} ({e}); continuing", stacklevel=3)
        return False
    return True


def load_fewshot(path: Path, full: DatasetSplits, shots: int, seed: int) -> DatasetSplits | None:
    """The cached sample, or None (with a warning) if the cache is unreadable or out of date.

    Out of date = an item not in the full train/val sets (the split file or images changed).
    """
    prefix = full.extra.get("dataset_dir") or "/"
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(obj, dict):
            raise ValueError(f"it holds a JSON {type(obj).__name__}, not an object")
        if obj.get("version") != CACHE_VERSION or (obj["shots"], obj["seed"]) != (shots, seed):
            raise ValueError("written for other settings")
        train, val = _decode(obj["train"], prefix), _decode(obj["val"], prefix)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        warnings.warn(f"ignoring few-shot cache {path}: {e}; sampling again", stacklevel=3)
        return None
    if not set(train) <= set(full.train) or not set(val) <= set(full.val):
        warnings.warn(
            f"ignoring few-shot cache {path}: it lists images that are not in the data set's "
            "current split; sampling again",
            stacklevel=3,
        )
        return None
    return replace(full, train=train, val=val)


def cached_sample(
    full: DatasetSplits, shots: int, seed: int, cache_dir: Path | None
) -> DatasetSplits:
    """Few-shot sample of `full`, read from / written to `cache_dir` when one is given."""
    if check_shots(shots) == 0:
        return full
    if cache_dir is None:
        return sample_splits(full, shots, seed)
    path = cache_file(cache_dir, shots, seed)
    if path.is_file():
        cached = load_fewshot(path, full, shots, seed)
        if cached is not None:
            cached.extra = {**cached.extra, "fewshot_cache": str(path)}
            return cached
    sampled = sample_splits(full, shots, seed)
    if save_fewshot(path, sampled, shots, seed):
        sampled.extra = {**sampled.extra, "fewshot_cache": str(path)}
    return sampled


# --- base / new -------------------------------------------------------------------------------


def subsample_classes(splits: DatasetSplits, which: str) -> DatasetSplits:
    """Keep the base (first ceil(n/2) labels) or new (the rest) classes, relabelled from 0.

    CoOp takes the sorted labels present in train; we take all labels of the data set, which is
    the same whenever every class has training images (true for every benchmark).
    `extra["class_indices"]` records the original label of each kept class.
    """
    if which not in SUBSAMPLE_CHOICES:
        raise DataError(f"subsample={which!r} must be one of {', '.join(SUBSAMPLE_CHOICES)}")
    if which == "all":
        return splits
    n = len(splits.classnames)
    m = math.ceil(n / 2)
    keep = list(range(m)) if which == "base" else list(range(m, n))
    new_label = {y: i for i, y in enumerate(keep)}

    def relabel(items: list[Datum]) -> list[Datum]:
        return [replace(d, label=new_label[d.label]) for d in items if d.label in new_label]

    extra = dict(splits.extra)
    old_indices = extra.get("class_indices", list(range(n)))
    extra["class_indices"] = [old_indices[y] for y in keep]
    if "imagenet_class_indices" in extra:
        extra["imagenet_class_indices"] = [extra["imagenet_class_indices"][y] for y in keep]
    extra["subsample"] = which
    return replace(
        splits,
        classnames=[splits.classnames[y] for y in keep],
        train=relabel(splits.train),
        val=relabel(splits.val),
        test=relabel(splits.test),
        extra=extra,
    )
