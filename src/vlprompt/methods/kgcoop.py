"""KgCoOp — Knowledge-guided Context Optimization (Yao et al., CVPR 2023; official code
htyao89/KgCoOp `trainers/kgcoop.py`).

CoOp whose loss adds `w * (1 - mean_c cos(t_c, t0_c))`: t_c is the learned prompt's normalised text
feature of class c, t0_c the frozen CLIP feature of the hand-crafted prompt (`config.template`),
and the cosine uses eps 1e-7 as the official `nn.CosineSimilarity(dim=1, eps=1e-07)`; the mean is
over the classes of the current class list.

Defaults follow the official ViT-B/16 base-to-new recipe (`vit_b16_ep100_ctxv1.yaml` with the
`base2new_train.sh` settings): 4 context vectors initialised from "a photo of a", class token at
the end, w = 8, SGD lr 0.002, batch 128, 100 epochs, 1 warm-up epoch at 1e-5.

Departures from the official code, on purpose:
- Precision: the official default is PREC "fp16" (`KgCoOp/train.py`: `TRAINER.COOP.PREC`):
  CLIP, the context, the hand-crafted features t0 and the SGD updates are fp16, with no loss
  scaling. Here the context and t0 are fp32 and the engine's precision applies to the passes
  (`--precision`: fp32 on the CPU; on CUDA fp16 autocast with a GradScaler by default).
- The hand-crafted template is the data set's CoOp template that the caller puts in
  `config.template` (KgCoOp's own table differs for DTD only: "a photo of a {}, a type of
  texture.").
- The official PromptLearner also builds an unused meta-net and bias vector; they are never
  trained or used in the loss, so they are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from vlprompt.errors import MethodError
from vlprompt.methods.base import MethodConfig, TrainOutput, clip_logits
from vlprompt.methods.coop import CoOp, CoOpConfig
from vlprompt.methods.registry import register_method


@dataclass
class KgCoOpConfig(CoOpConfig):
    """KgCoOp (defaults: the official ViT-B/16 base-to-new recipe)."""

    n_ctx: int = field(
        default=4, metadata={"help": "context vectors (set by ctx_init when it is given)"}
    )
    ctx_init: str = field(
        default="a photo of a", metadata={"help": "words initialising the context"}
    )
    epochs: int = field(default=100, metadata={"help": "training epochs"})
    batch_size: int = field(default=128, metadata={"help": "images per step"})
    w: float = field(
        default=8.0, metadata={"help": "weight of the knowledge-guided cosine regulariser"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.w < 0:
            raise MethodError(f"w must be >= 0, got {self.w}")


@dataclass
class KgCoOpTrainOutput(TrainOutput):
    """The training forward plus the learned text features the regulariser needs."""

    text_features: torch.Tensor | None = None  # [classes, embed_dim], normalised, with grad


def knowledge_guided_score(learned: torch.Tensor, handcrafted: torch.Tensor) -> torch.Tensor:
    """1 - mean over classes of cos(learned_c, handcrafted_c) (official: eps 1e-7)."""
    cos = F.cosine_similarity(learned.float(), handcrafted.float(), dim=1, eps=1e-7)
    return 1.0 - cos.mean()


@register_method
class KgCoOp(CoOp):
    """CoOp kept close to the hand-crafted prompt's text features."""

    name: ClassVar[str] = "kgcoop"
    config_class: ClassVar[type[MethodConfig]] = KgCoOpConfig
    config: KgCoOpConfig

    def forward_train(self, images: torch.Tensor) -> KgCoOpTrainOutput:
        if self.dept is not None:
            out = super().forward_train(images)
            text = F.normalize(out.raw_text_features, dim=-1)  # type: ignore[arg-type]
            return KgCoOpTrainOutput(
                out.logits, out.image_features, text, raw_image_features=out.raw_image_features,
                raw_text_features=out.raw_text_features,
            )  # fmt: skip
        feats = self.image_features(images)
        text = self.text_features()
        return KgCoOpTrainOutput(clip_logits(self.clip, feats, text), feats, text)

    def loss(self, out: TrainOutput, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(out.logits, labels)
        text = getattr(out, "text_features", None)
        if text is None:  # a forward that did not keep the text features: compute them
            text = self.text_features()
        score = knowledge_guided_score(text, self.zeroshot_text_features().to(text.device))
        return ce + self.config.w * score
