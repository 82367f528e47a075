"""CLIP-Adapter (Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature Adapters",
IJCV 2024, arXiv 2110.04544; official code gaopengcuhk/CLIP-Adapter `clip_adapter.py` at commit
08d07f8b2ecafc6f1479fe636b26d464d7a5574e, the only code file of that repository).

A bottleneck `Linear(E, E/r, bias=False) -> ReLU -> Linear(E/r, E, bias=False) -> ReLU` on the
frozen CLIP image feature x [B, E] is blended into it with the residual ratio:
`x' = ratio * adapter(x) + (1 - ratio) * x`. The logits are CLIP's `logit_scale * cos(x', t_c)`
with t_c the frozen text feature of the hand-crafted prompt of class c (`config.template`: the
data set's CoOp template, which is the official `CUSTOM_TEMPLATES` table word for word). Only the
adapter learns (the visual adapter, the paper's default variant; the text adapter is not in the
official code). Loss: cross-entropy.

Official defaults: ratio 0.2 and reduction 4 (hard-coded in `CustomCLIP`); PyTorch's default
`nn.Linear` init; fp32 (`clip_model.float()`). The repository ships no config or script: its
README says to run it with CoOp's commands, so the recipe is CoOp's few-shot one
(KaiyangZhou/CoOp `configs/trainers/CoOp/rn50.yaml`): SGD lr 0.002 (momentum 0.9, weight decay
5e-4), batch 32, 200 epochs, cosine schedule after 1 warm-up epoch at constant lr 1e-5
(`rn50_ep50.yaml`, 50 epochs, for ImageNet; CoOp uses 50 epochs for 1 shot, 100 for 2-4 shots).

Checked against the official code (/tmp, never in this repository): their `Adapter` and
`CustomCLIP.forward` (Dassl and their CLIP package stubbed; their hard-coded `Adapter(1024, 4)`
rebuilt at the tiny width) on the same open_clip models (the tiny ViTs of every test shape and
the tiny ResNet, every weight perturbed, and the shipped pre-trained mini CLIP), the same adapter
weights (copied from ours), the same images and labels, at their ratio 0.2: worst |difference|
3.8e-6 in logits (logits up to 18), 7.2e-7 in the cross-entropy loss and 1.5e-7 in the adapter
gradients (fp32 rounding only).

Departures from the official code, on purpose:
- Precision: the official code runs fp32 only (`clip_adapter.py`, `CLIP_Adapter.build_model`:
  `clip_model.float()`; it reads no PREC key). The adapter always computes in fp32, also under
  bf16/fp16 autocast (official: fp32 runs only); the logits are computed in fp32 too. The
  engine's precision applies to the frozen image passes of training (`--precision`: fp32 on the
  CPU; on CUDA fp16 autocast with a GradScaler by default); evaluation encodes the images in fp32
  (outside autocast, through the feature cache).
- The adapter reads the normalised frozen feature (so evaluation and the view pool serve cached
  features); the official code feeds it the unnormalised one. The numbers are the same: a
  bias-free Linear/ReLU stack is positively homogeneous, so the blend of `c * x` is `c` times the
  blend of `x` and the normalised result does not depend on `c`.
- The adapter's width is the backbone's embedding width (official: 1024, RN50's, hard-coded, so
  any other backbone fails there); `reduction` must divide it (official: floor division).
- The official code builds the text features again in every forward; here they are computed once
  per class list (frozen, same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.base import (
    FrozenImageMixin,
    MethodConfig,
    PromptMethod,
    clip_logits,
    full_precision,
)
from vlprompt.methods.registry import register_method


@dataclass
class CLIPAdapterConfig(MethodConfig):
    """CLIP-Adapter (defaults: the official code with CoOp's few-shot recipe)."""

    template: str = field(
        default="a photo of a {}.",
        metadata={"help": "hand-crafted prompt of the frozen text classifier (a run on a data set "
                  "gets its CoOp template, the official CUSTOM_TEMPLATES)"},
    )  # fmt: skip
    residual_ratio: float = field(
        default=0.2,
        metadata={
            "help": "weight of the adapted feature in the blend ratio * adapter(x) + "
            "(1 - ratio) * x, in [0, 1] (official `ratio`, 0.2; 0 = zero-shot CLIP)"
        },
    )
    reduction: int = field(
        default=4,
        metadata={"help": "bottleneck reduction: hidden width = embedding width / reduction"},
    )
    epochs: int = field(
        default=200,
        metadata={"help": "training epochs (CoOp's recipe: 50 for 1 shot and ImageNet, 100 for "
                  "2-4 shots, 200 for 8-16)"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.residual_ratio <= 1:
            raise MethodError(
                f"residual_ratio must be in [0, 1] (official 0.2), got {self.residual_ratio}"
            )
        if self.reduction < 1:
            raise MethodError(f"reduction must be >= 1 (official 4), got {self.reduction}")


class Adapter(nn.Module):
    """Linear(E, E/r) -> ReLU -> Linear(E/r, E) -> ReLU, bias-free (the official layout: its
    state dict keys are `fc.0.weight` and `fc.2.weight`)."""

    def __init__(self, width: int, reduction: int) -> None:
        super().__init__()
        hidden = width // reduction
        self.fc = nn.Sequential(
            nn.Linear(width, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, width, bias=False),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def check_reduction(width: int, reduction: int) -> None:
    if width % reduction:
        raise MethodError(
            f"reduction must divide the embedding width {width} (hidden width = width / "
            f"reduction), got {reduction}"
        )


@register_method
class CLIPAdapter(FrozenImageMixin, PromptMethod):
    """A residual bottleneck adapter on the frozen CLIP image features."""

    name: ClassVar[str] = "clip_adapter"
    config_class: ClassVar[type[MethodConfig]] = CLIPAdapterConfig
    config: CLIPAdapterConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: CLIPAdapterConfig):
        super().__init__(clip, classnames, config)
        check_reduction(clip.embed_dim, config.reduction)
        self.adapter = Adapter(clip.embed_dim, config.reduction).to(clip.device)

    def adapted_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """`ratio * adapter(x) + (1 - ratio) * x`, normalised, in fp32 [B, E]."""
        ratio = self.config.residual_ratio
        with full_precision(image_features.device):
            x = image_features.float()
            mixed = ratio * self.adapter(x) + (1 - ratio) * x
            return mixed / mixed.norm(dim=-1, keepdim=True)

    def class_features(self) -> torch.Tensor:
        """The frozen text features of the hand-crafted prompt [C, E] (fp32)."""
        return self.zeroshot_text_features()

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] from normalised frozen image features [B, E]."""
        text = self.class_side().to(image_features.device)
        return clip_logits(self.clip, self.adapted_features(image_features), text)
