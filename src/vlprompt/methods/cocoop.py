"""CoCoOp — Conditional Context Optimization (Zhou et al., CVPR 2022; official code
KaiyangZhou/CoOp `trainers/cocoop.py`).

CoOp's shared context plus a per-image shift: a small meta-net
`Linear(d, d // 16) -> ReLU -> Linear(d // 16, text_width)` maps the normalised frozen image
feature (d = CLIP's embedding dim, the official `vis_dim = visual.output_dim`) to one vector that
is added to every context vector. Each image therefore has its own prompts for all classes, and
the text encoder runs batch x classes sequences (the official code loops over the images).

Defaults are the paper's base-to-new recipe: 4 context vectors initialised from "a photo of a",
SGD lr 0.002, batch 1, 10 epochs, 1 warm-up epoch at 1e-5. Class token at the end (the only
layout CoCoOp defines). On ViT-B/16 shapes (d = 512, width 512) it learns
4*512 + (512*32 + 32) + (32*512 + 512) = 35,360 parameters. DePT's head composes with it
(`feature_rule="dept"`, official `trainers/elp_cocoop.py`): each image's label feature for the
head comes from that image's own class features (`image_class_features`, [B, C, E]).

Departures from the official code, on purpose:
- Precision: the official configs set PREC "fp16" (`configs/trainers/CoCoOp/*.yaml`), which
  also halves the meta-net (`trainers/cocoop.py`: `self.meta_net.half()`): CLIP, the context,
  the meta-net and the SGD updates are fp16, with no loss scaling. Here the context and the
  meta-net are fp32, the logits are computed in fp32 under any autocast, and the engine's
  precision applies to the passes (`--precision`: fp32 on the CPU; on CUDA fp16 autocast with
  a GradScaler by default).
- The official code loops over the images of a batch, one text pass of all classes per image;
  here one pass takes the batch x classes prompts (the same numbers), in chunks that bound its
  memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import FrozenImageMixin, MethodConfig, PromptMethod, full_precision
from vlprompt.methods.method_config import check_at_most
from vlprompt.methods.prompt_context import (
    ContextConfig,
    PromptLayoutMixin,
    initial_context,
    n_ctx_of,
)
from vlprompt.methods.registry import register_method
from vlprompt.methods.training_step import TrainOutput


@dataclass
class CoCoOpConfig(ContextConfig):
    """CoCoOp (defaults: the paper's base-to-new recipe)."""

    n_ctx: int = field(
        default=4, metadata={"help": "context vectors (set by ctx_init when it is given)"}
    )
    ctx_init: str = field(
        default="a photo of a",
        metadata={"help": "words initialising the context ('' = N(0, 0.02^2))"},
    )
    epochs: int = field(default=10, metadata={"help": "training epochs"})
    batch_size: int = field(
        default=1,
        metadata={"help": "images per step (each image has its own prompts, so this is costly)"},
    )
    meta_net_reduction: int = field(
        default=16, metadata={"help": "hidden width of the meta-net = embed_dim // this"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.meta_net_reduction < 1:
            raise MethodError(f"meta_net_reduction must be >= 1, got {self.meta_net_reduction}")


@register_method
class CoCoOp(PromptLayoutMixin, FrozenImageMixin, PromptMethod):
    """A shared context shifted per image by a meta-net on the image feature."""

    name: ClassVar[str] = "cocoop"
    config_class: ClassVar[type[MethodConfig]] = CoCoOpConfig
    config: CoCoOpConfig
    # each image's meta-net shift enters the prompts of every class: no constant class side
    text_depends_on_image: ClassVar[bool] = True
    feature_rules: ClassVar[tuple[str, ...]] = ("dept",)

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: CoCoOpConfig) -> None:
        super().__init__(clip, classnames, config)
        self.n_ctx = n_ctx_of(clip, config)
        check_at_most("meta_net_reduction", config.meta_net_reduction, clip.embed_dim,
                      f"the meta-net's hidden width is {clip.name}'s embedding width "
                      f"{clip.embed_dim} divided by it, at least 1")  # fmt: skip
        self.ctx = nn.Parameter(initial_context(clip, config, None))
        vis_dim, hidden = clip.embed_dim, max(1, clip.embed_dim // config.meta_net_reduction)
        self.meta_net = nn.Sequential(
            OrderedDict(
                [
                    ("linear1", nn.Linear(vis_dim, hidden)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("linear2", nn.Linear(hidden, clip.text_width)),
                ]
            )
        ).to(clip.device)
        self._build_layout()

    def shifted_context(self, image_features: torch.Tensor) -> torch.Tensor:
        """[B, n, D]: the context plus the meta-net's shift of each normalised image feature."""
        bias = self.meta_net(image_features.float())  # [B, D]
        return self.ctx[None] + bias[:, None]

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] from normalised frozen image features [B, E]."""
        return self.cosine_logits(image_features, self.image_class_features(image_features))

    def image_class_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """The class features of each image's own prompts before normalisation [B, C, E], with
        autograd, from normalised frozen image features [B, E]."""
        ctx = self.shifted_context(image_features).to(self.clip.dtype)  # [B, n, D]
        n_cls, layout = len(self.classnames), self.layout
        if self.config.implementation == "reference":  # the official per-image loop, 77 tokens
            return torch.stack([
                te.encode_reference(
                    self.clip, te.assemble_reference(layout, ctx_i[None].expand(n_cls, -1, -1)),
                    self.eot_index,
                )
                for ctx_i in ctx
            ])  # fmt: skip
        batch = ctx.shape[0]
        ctx = ctx[:, None].expand(-1, n_cls, -1, -1)  # [B, C, n, D]
        prompts = te.assemble_fast(layout, ctx, None, layout.max_length)  # [B, C, L', D]
        prompts = prompts.reshape(batch * n_cls, *prompts.shape[2:])
        eot = self.eot_index.repeat(batch)
        cfg = self.config
        text = te.encode_fast(self.clip, prompts, eot, cfg.text_chunk_size, cfg.text_checkpoint)
        return text.view(batch, n_cls, -1)

    def cosine_logits(self, image_features: torch.Tensor, raw_text: torch.Tensor) -> torch.Tensor:
        """CLIP's logits [B, C] of normalised image features [B, E] with each image's own
        unnormalised class features [B, C, E], in fp32 under autocast too."""
        scale = self.clip.logit_scale.float()
        img, text = image_features.float(), te.normalize(raw_text).float()
        with full_precision(img.device):
            if self.config.implementation == "reference":  # image by image, as the official
                return torch.stack([scale * i @ t.t() for i, t in zip(img, text)])
            return scale * torch.einsum("be,bce->bc", img, text)

    def prompted_train_output(self, raw_image: torch.Tensor) -> TrainOutput:
        """Under feature_rule "dept": the logits and both unnormalised features, the class side
        per image [B, C, E] (official `elp_cocoop.py`: each image's label feature is taken from
        its own prompts' class features)."""
        image = nn.functional.normalize(raw_image, dim=-1)
        raw_text = self.image_class_features(image)
        logits = self.cosine_logits(image, raw_text)
        return TrainOutput(logits, raw_image_features=raw_image, raw_text_features=raw_text)
