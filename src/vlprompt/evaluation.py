"""Accuracy, per-class accuracy, and evaluating a method on a list of images (the harmonic
mean of base and new accuracy is `vlprompt.report.harmonic_mean`).

(Named `evaluation`, not `evaluate`, so that the module never shadows `vlprompt.evaluate()`.)

Methods whose image encoder is frozen (`frozen_image_encoder = True`: zero-shot CLIP, CoOp,
KgCoOp, ProGrad, linear probe) are evaluated from image features: encoded once through
`vlprompt.feature_cache` and read back on later evaluations, so a warm cache means no image-encoder
pass at all. Other methods (e.g. RPO, whose prompts enter the image encoder) run on the images.
Either way the method runs as `method.classifier()`: a method whose class side does not depend on
the image (all but CoCoOp) computes it once per call, not once per batch.
Under DDP every process evaluates a strided shard and the logits are gathered on every process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vlprompt.distributed import Dist
from vlprompt.errors import DataError
from vlprompt.precision import autocast_for


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent (0 for an empty set)."""
    if labels.numel() == 0:
        return 0.0
    return 100.0 * (predictions == labels).double().mean().item()


def per_class_accuracy(
    predictions: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str]
) -> dict[str, float]:
    """Accuracy (percent) of each class that has at least one image."""
    out = {}
    for label, name in enumerate(classnames):
        mask = labels == label
        if mask.any():
            out[name] = 100.0 * (predictions[mask] == label).double().mean().item()
    return out


def macro_accuracy(per_class: dict[str, float]) -> float:
    """Mean of the per-class accuracies (percent)."""
    return sum(per_class.values()) / len(per_class) if per_class else 0.0


@dataclass
class EvalResult:
    accuracy: float  # percent
    macro_accuracy: float  # percent, mean over classes
    per_class: dict[str, float]  # class name -> percent
    n_images: int
    wall_s: float
    predictions: torch.Tensor = field(repr=False)  # [N] predicted labels
    labels: torch.Tensor = field(repr=False)  # [N]
    used_features: bool = False  # evaluated from (possibly cached) frozen image features
    logits: torch.Tensor | None = field(default=None, repr=False)  # [N, C] with keep_logits


def _shard(n: int, ctx: Dist) -> list[int]:
    return list(range(ctx.rank, n, ctx.world_size))


def _gather_rows(
    local: torch.Tensor, n_total: int, ctx: Dist, device: torch.device
) -> torch.Tensor:
    """Inverse of `_shard`: rows of every process back in their original order."""
    if not ctx.enabled:
        return local
    per = math.ceil(n_total / ctx.world_size)
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.zeros_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    out = torch.empty((n_total, *local.shape[1:]), dtype=local.dtype)
    for rank, part in enumerate(parts):
        count = len(range(rank, n_total, ctx.world_size))
        out[rank :: ctx.world_size] = part[:count].cpu()
    return out


def default_feature_cache_dir() -> Path:
    return Path("~/.cache/vlprompt/features").expanduser()


@torch.no_grad()
def compute_logits(
    method: Any,
    items: Sequence[Any],
    *,
    transform: Any = None,
    batch_size: int = 100,
    num_workers: int = 0,
    precision: str = "auto",
    ctx: Dist | None = None,
    feature_cache: Any = None,
    use_features: bool | None = None,
) -> tuple[torch.Tensor, bool]:
    """Logits [N, C] (float32, CPU) of `method` on `items` (Datums), in order; and whether
    they were computed from frozen image features. `feature_cache`: a FeatureCache (or None).
    `precision` as in training (`vlprompt.precision.effective_precision`: CPU bf16 runs under
    autocast, CUDA `auto` under fp16 autocast). The method runs as `method.classifier()`: its
    class side (e.g. prompted text features) is computed once for all batches."""
    from vlprompt.data import transform_for

    ctx = ctx or Dist()
    clip = method.clip
    device = clip.device
    transform = transform or transform_for(clip, train=False)
    if use_features is None:
        use_features = method.frozen_image_encoder
    mine = [items[i] for i in _shard(len(items), ctx)]
    with method.classifier():  # the class side once for all batches, not once per batch
        chunks = _logit_chunks(
            method, mine, transform, batch_size, num_workers, precision, ctx, feature_cache,
            use_features,
        )  # fmt: skip
    n_classes = len(method.classnames)
    local = torch.cat(chunks) if chunks else torch.zeros(0, n_classes)
    return _gather_rows(local, len(items), ctx, _comm_device(device, ctx)), use_features


def _logit_chunks(
    method: Any, mine: Sequence[Any], transform: Any, batch_size: int, num_workers: int,
    precision: str, ctx: Dist, feature_cache: Any, use_features: bool,
) -> list[torch.Tensor]:  # fmt: skip
    """The logits (float32, CPU) of this process's items, batch by batch."""
    from torch.utils.data import DataLoader

    from vlprompt.data import ImageListDataset

    clip = method.clip
    device = clip.device
    autocast = autocast_for(device, precision)  # the training steps' autocast (engine.fit)
    chunks = []
    if use_features:
        from vlprompt.feature_cache import encode_images_cached

        # the frozen image features are encoded in fp32, outside autocast: the on-disk cache
        # serves every run of the backbone, whatever its precision
        cache = feature_cache if not ctx.enabled else None  # one shard per process: no cache
        feats, _ = encode_images_cached(clip, mine, transform, cache, batch_size, num_workers)
        for start in range(0, feats.shape[0], batch_size):
            batch = feats[start : start + batch_size].to(device)
            with autocast:
                chunks.append(method.logits_from_features(batch).float().cpu())
    else:
        loader = DataLoader(
            ImageListDataset(mine, transform),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
        )
        for images, _ in loader:
            with autocast:
                chunks.append(method(images.to(device)).float().cpu())
    return chunks


def _comm_device(device: torch.device, ctx: Dist) -> torch.device:
    if ctx.enabled and dist.get_backend() == "nccl":
        return device
    return torch.device("cpu")


def evaluate_items(
    method: Any,
    items: Sequence[Any],
    *,
    transform: Any = None,
    batch_size: int = 100,
    num_workers: int = 0,
    precision: str = "auto",
    ctx: Dist | None = None,
    feature_cache: Any = None,
    split: str = "evaluation",
    dataset: str | None = None,
    keep_logits: bool = False,
) -> EvalResult:
    """Accuracy of `method` on `items`, whose labels index `method.classnames`. `split` and
    `dataset` only name the images in errors: an empty list raises DataError."""
    if not items:
        where = f"the {split} split of {dataset}" if dataset else f"the {split} split"
        raise DataError(
            f"{where} has no images; nothing to evaluate (check that the data set's {split} "
            "folder or list holds images of the evaluated classes)"
        )
    started = time.perf_counter()
    logits, used = compute_logits(
        method,
        items,
        transform=transform,
        batch_size=batch_size,
        num_workers=num_workers,
        precision=precision,
        ctx=ctx,
        feature_cache=feature_cache,
    )
    labels = torch.tensor([d.label for d in items], dtype=torch.long)
    predictions = logits.argmax(dim=-1)
    per_class = per_class_accuracy(predictions, labels, method.classnames)
    return EvalResult(
        accuracy=accuracy(predictions, labels),
        macro_accuracy=macro_accuracy(per_class),
        per_class=per_class,
        n_images=len(items),
        wall_s=time.perf_counter() - started,
        predictions=predictions,
        labels=labels,
        used_features=used,
        logits=logits if keep_logits else None,
    )
