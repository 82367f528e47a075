"""`build_dataset`: load a registered data set, few-shot sample it (cached), split base/new."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from vlprompt.data.dataset import drop_bad_images
from vlprompt.data.fewshot import (
    SUBSAMPLE_CHOICES,
    cached_sample,
    check_shots,
    default_cache_dir,
    subsample_classes,
)
from vlprompt.data.registry import DatasetInfo, get_dataset_info
from vlprompt.data.splits import require_two_classes
from vlprompt.data.templates import DEFAULT_TEMPLATE, check_template
from vlprompt.data.types import DatasetSplits
from vlprompt.errors import DataError


def load_full(name: str, root: str | Path | None = None, **loader_kwargs) -> DatasetSplits:
    """The whole registered data set (all train/val/test items), its template filled in.

    It is returned as its files describe it, even with a single class (e.g. to inspect it);
    `build_dataset` is where a data set must have the two classes a classifier needs.
    """
    info = get_dataset_info(name)
    full = info.load(root, **loader_kwargs)
    if not isinstance(full, DatasetSplits):
        raise DataError(
            f"the loader of data set {name!r} returned {type(full).__name__}; a loader passed "
            "to register_dataset must return a DatasetSplits"
        )
    full.name = name
    if full.template == DEFAULT_TEMPLATE:
        full.template = info.template
    if info.variant_of:
        full.extra = {**full.extra, "variant_of": info.variant_of}
    return full


def _user_key(root, loader_kwargs: dict) -> str:
    """A short hash naming a user data source and the loader options that shape its split."""
    source = str(Path(root).expanduser().resolve()) if root is not None else ""
    blob = json.dumps([source, loader_kwargs], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _cache_dir(info: DatasetInfo, full: DatasetSplits, root, cache_dir, loader_kwargs):
    """Where the few-shot sample of this data set lives (None: not cached)."""
    if cache_dir is False:
        return None
    user_key = _user_key(root, loader_kwargs) if info.user_format else None
    if cache_dir is not None:
        sub = f"{info.name}-{user_key}" if user_key else info.name
        return Path(cache_dir).expanduser() / sub
    if info.dataset_dir is None and not info.user_format:
        return None  # generated data sets (e.g. mini_*): sampling is cheap and deterministic
    return default_cache_dir(full, user_key)


def build_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    shots: int = 0,
    seed: int = 1,
    subsample: str = "all",
    cache_dir: str | Path | None | bool = None,
    skip_bad_images: bool = False,
    whole_val: bool = False,
    template: str | None = None,
    templates: list[str] | None = None,
    **loader_kwargs,
) -> DatasetSplits:
    """A data set ready for training: few-shot train/val, then the base/new class split.

    shots: images per class in train (val gets min(shots, 4)); 0 keeps everything.
    seed: the few-shot sampling seed (CoOp's 1, 2, 3).
    subsample: "all", "base" (first ceil(n/2) classes) or "new" (the rest), relabelled from 0.
    cache_dir: folder for the JSON few-shot cache; default `<root>/<dataset_dir>/split_fewshot`
        (as CoOp) or `~/.cache/vlprompt/fewshot` when that is not writable or for user data;
        False disables the cache.
    skip_bad_images: open every selected image now and leave out unreadable ones (with a
        warning giving the count) instead of failing later.
    whole_val: every image of the val split instead of its few-shot sample (what the official
        Tip-Adapter and GDA code search on; the train split stays sampled).
    template / templates: your own prompt template(s), overriding the data set's.
    loader_kwargs: passed to the loader, e.g. split=(0.5, 0.2, 0.3) or classnames_file for
        `imagefolder` / `csv`.
    """
    info = get_dataset_info(name)
    check_shots(shots)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed={seed!r} must be an integer")
    if subsample not in SUBSAMPLE_CHOICES:
        raise DataError(f"subsample={subsample!r} must be one of {', '.join(SUBSAMPLE_CHOICES)}")
    if template is not None:
        check_template(template)
    for t in templates or []:
        check_template(t)

    full = load_full(name, root, **loader_kwargs)
    require_two_classes(full, full.extra.get("source") or full.extra.get("dataset_dir") or root)
    where = _cache_dir(info, full, root, cache_dir, loader_kwargs)
    splits = cached_sample(full, shots, seed, where)
    if whole_val:
        splits = replace(splits, val=full.val)
    splits = subsample_classes(splits, subsample)
    if skip_bad_images:
        splits = drop_bad_images(splits)
    extra = {**splits.extra, "shots": shots, "seed": seed, "subsample": subsample}
    return replace(
        splits,
        template=template if template is not None else splits.template,
        templates=list(templates) if templates is not None else list(splits.templates),
        extra=extra,
    )
