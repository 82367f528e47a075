"""A disk cache of frozen CLIP image features, for methods whose image tower never changes.

Zero-shot CLIP, CoOp, KgCoOp, ProGrad and the linear probe evaluate on image features that depend
only on the frozen backbone, the (deterministic) test transform and the image files. Encoding
them once and reading them back makes every later evaluation of the same images nearly free.

An entry is keyed by sha256 of: the backbone name and precision, `clip.weights_id` (a hash of
every weight), a description of the transform, and the ordered image list with each file's size
and modification time. Change any of them and the features are recomputed. Entries are single
safetensors files written atomically; an unreadable entry is recomputed with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from vlprompt.errors import DataError
from vlprompt.io import atomic_save_tensors

if TYPE_CHECKING:
    from vlprompt.backbone import ClipBackbone
    from vlprompt.data.types import Datum

FORMAT_VERSION = 1  # bump when what an entry holds changes; old entries are then ignored
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def transform_id(transform: Any) -> str:
    """A deterministic description of a (torchvision) transform: its repr, which lists every
    step with its parameters. Refused when the repr is not stable across runs (it shows a memory
    address, e.g. a lambda) or when the transform is random (cached features would freeze one
    random draw): pass your own description string to `FeatureCache` in the first case.
    """
    text = repr(transform)
    # a memory address changes between runs; torchvision's Lambda() hides its function, so two
    # different lambdas would share one description
    if _ADDRESS.search(text) or "Lambda(" in text:
        raise ValueError(
            f"transform {text!r} has no stable description (its repr shows a memory address "
            "or hides a function); pass an explicit transform id string instead"
        )
    if "Random" in text:
        raise ValueError(
            f"transform {text!r} is random; frozen features can only be cached for a "
            "deterministic (test) transform"
        )
    return text


def _file_stamps(paths: Sequence[str]) -> list[list]:
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from exc
        stamps.append([str(path), st.st_size, st.st_mtime_ns])
    return stamps


class FeatureCache:
    """Image features on disk under `cache_dir`, one safetensors file per key."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir).expanduser()

    def key(self, clip: ClipBackbone, transform_id: str, paths: Sequence[str]) -> str:
        """sha256 of everything the features depend on (see the module docstring)."""
        description = {
            "version": FORMAT_VERSION,
            "backbone": clip.name,
            "precision": clip.precision,
            "weights": clip.weights_id,
            "transform": transform_id,
            "images": _file_stamps(paths),
        }
        blob = json.dumps(description, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def path_for(self, key: str) -> Path:
        return self.cache_dir / f"image-features-{key}.safetensors"

    def get_or_compute(
        self,
        clip: ClipBackbone,
        transform_id: str,
        paths: Sequence[str],
        compute_fn: Callable[[], torch.Tensor],
    ) -> torch.Tensor:
        """The cached features [len(paths), D] for this key, or `compute_fn()` stored under it."""
        key = self.key(clip, transform_id, paths)
        path = self.path_for(key)
        if path.is_file():
            cached = self._read(path, key, len(paths))
            if cached is not None:
                return cached
        features = compute_fn()
        if features.ndim != 2 or features.shape[0] != len(paths):
            raise ValueError(
                f"compute_fn returned features of shape {tuple(features.shape)}; expected "
                f"[{len(paths)}, embed_dim] for {len(paths)} images"
            )
        features = features.detach().to("cpu", torch.float32).contiguous()
        atomic_save_tensors(path, {"features": features}, metadata={"key": key})
        return features

    def _read(self, path: Path, key: str, n: int) -> torch.Tensor | None:
        """The entry's features, or None (with a warning) when it is unreadable or inconsistent."""
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") != key:
                    raise ValueError("its key does not match its file name")
                features = f.get_tensor("features")
            if features.ndim != 2 or features.shape[0] != n:
                raise ValueError(f"it holds {tuple(features.shape)} features for {n} images")
        except Exception as exc:  # a truncated/garbled file raises many kinds; recompute it
            warnings.warn(
                f"feature cache entry {path} is unreadable ({type(exc).__name__}: {exc}); "
                "recomputing it",
                stacklevel=3,
            )
            return None
        return features


def encode_images(
    clip: ClipBackbone,
    items: Sequence[Datum],
    transform: Callable,
    batch_size: int = 64,
    num_workers: int = 0,
) -> torch.Tensor:
    """L2-normalised frozen image features [N, embed_dim] (float32, CPU), in `items` order."""
    from torch.utils.data import DataLoader

    from vlprompt.data.dataset import ImageListDataset

    loader = DataLoader(
        ImageListDataset(list(items), transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    chunks = []
    with torch.no_grad():
        for images, _ in loader:
            chunks.append(clip.encode_image(images, normalize=True).float().cpu())
    if not chunks:
        return torch.zeros(0, clip.embed_dim)
    return torch.cat(chunks)


def encode_images_cached(
    clip: ClipBackbone,
    items: Sequence[Datum],
    transform: Callable,
    cache: FeatureCache | None,
    batch_size: int = 64,
    num_workers: int = 0,
    transform_description: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`encode_images` through `cache` (None: no cache) and the labels: (features [N, D]
    L2-normalised float32, labels [N] int64). `transform` must be deterministic (a test
    transform); `transform_description` replaces `transform_id(transform)` when given."""
    labels = torch.tensor([d.label for d in items], dtype=torch.long)

    def compute() -> torch.Tensor:
        return encode_images(clip, items, transform, batch_size, num_workers)

    if cache is None:
        return compute(), labels
    tid = transform_description or transform_id(transform)
    return cache.get_or_compute(clip, tid, [d.path for d in items], compute), labels
