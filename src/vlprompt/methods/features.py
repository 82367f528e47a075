"""Feature helpers shared by the methods: the fp32 logit product under autocast, the key and the
store of caches of computed features, and `FrozenImageMixin` for methods whose image side is
frozen CLIP (evaluation then classifies cached features).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from vlprompt.backbone import ClipBackbone
from vlprompt.methods.dept import fused_logits
from vlprompt.methods.training_step import TrainOutput


# ---- mixed precision ---------------------------------------------------------------------------
def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast computes in on `device`'s type now, or None when autocast is off. It is
    part of the key of every cache of computed features, so that features computed under bf16 or
    fp16 autocast never serve an fp32 pass (nor the other way round)."""
    kind = torch.device(device).type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off on `device`'s type. Logits are computed in fp32 from the (possibly bf16/fp16)
    features: the product is small ([B, E] x [E, C]) and bf16 keeps 8 significant bits, so logits
    near 30 would be rounded in steps of 0.125 before the loss; frozen zero-shot text features
    (computed once per class list) are computed in fp32 too."""
    return torch.autocast(torch.device(device).type, enabled=False)


def clip_logits(
    clip: ClipBackbone, image_features: torch.Tensor, text_features: torch.Tensor
) -> torch.Tensor:
    """logit_scale * image_f @ text_f.T in fp32 (both already normalised), under autocast too."""
    with full_precision(image_features.device):
        return clip.logit_scale.float() * image_features.float() @ text_features.float().t()


# ---- caches of computed features ---------------------------------------------------------------
def features_key(
    clip: ClipBackbone, classnames: Sequence[str], *identity: Any, fp32: bool = False
) -> tuple:
    """The key of a cache of features computed for `classnames`: the class names, `identity`
    (what else the features depend on: a template, or a learned tensor's `_version` and
    `data_ptr()`), the backbone's device and dtype, and the autocast dtype of the call (None for
    features computed in fp32 whatever autocast says: `fp32=True`)."""
    precision = None if fp32 else autocast_dtype(clip.device)
    return (tuple(classnames), *identity, clip.device, clip.dtype, precision)


class KeyedCache:
    """One computed value (e.g. the text features of a class list), kept until its key
    (`features_key`) changes; the old value is dropped before the new one is computed."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Any = None

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if self.value is None or self.key != key:
            self.clear()
            self.value, self.key = compute(), key
        return self.value

    def clear(self) -> None:
        self.key = self.value = None


class FrozenImageMixin:
    """Methods whose image side is frozen CLIP (`frozen_image_encoder`): images reach the
    classifier only as `image_features`, training returns them (ProGrad's teacher reuses them)
    and `logits_from_features` classifies cached features. Mix in before `PromptMethod`."""

    frozen_image_encoder: ClassVar[bool] = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.dept is None:  # type: ignore[attr-defined]
            return self.logits_from_features(self.image_features(images))
        raw = self.raw_image_features(images)
        logits = self.logits_from_features(torch.nn.functional.normalize(raw, dim=-1))
        return fused_logits(self, logits, raw)  # type: ignore[arg-type]

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        if self.dept is None:  # type: ignore[attr-defined]
            feats = self.image_features(images)
            return TrainOutput(self.logits_from_features(feats), feats)
        raw = self.raw_image_features(images)
        out = self.prompted_train_output(raw)  # type: ignore[attr-defined]
        out.image_features = torch.nn.functional.normalize(raw, dim=-1)
        return out

    def raw_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen CLIP image features before normalisation [B, E], without autograd (DePT)."""
        with torch.no_grad():
            return self.clip.encode_image(images)  # type: ignore[attr-defined]
