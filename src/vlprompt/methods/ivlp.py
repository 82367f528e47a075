"""IVLP — Independent Vision-Language Prompting (the base of PromptSRC, Khattak et al., ICCV 2023;
the "IVLP" row of its paper; official code muzairkhattak/PromptSRC `trainers/independentVL.py`,
`clip/model.py` (`ResidualAttentionBlock_IVLP`, `VisionTransformer`), config
`configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml`).

Deep prompts in both towers, learned independently (no coupling):
- Text: the prompt of class c is `SOS ctx_1..ctx_n name_c . EOS` (CoOp's layout, context initialised
  from "a photo of a"); the context gets the positional embedding like every token. At the input of
  text blocks 1..depth_text-1, positions 1..n (after SOS) are replaced by a fresh learned tensor of
  that layer ([n, width], N(0, 0.02^2), no positional embedding). Features at EOS.
- Vision: n_ctx_vision learned tokens (N(0, 0.02^2)) appended after the patch tokens, after the
  positional embedding and before `ln_pre` (which applies to them too). At the input of vision
  blocks 1..depth_vision-1, the last n_ctx_vision tokens are replaced by that layer's fresh tensor
  (no ln_pre). Features: ln_post + projection of the CLS output.
- Logits: CLIP's `logit_scale * cos(image, text)`; loss: cross-entropy.

Defaults = the official base-to-new config: 4 + 4 tokens, depth 9 in both towers, ctx init
"a photo of a", SGD lr 0.0025 (momentum 0.9, wd 5e-4), 20 epochs, batch 4, cosine after 1 warm-up
epoch at constant 1e-5. Checked against the official `trainers/independentVL.py` `CustomCLIP`
side by side (Dassl stubbed, its `clip.build_model` on the same tiny random open_clip ViTs, 2
shapes, full and partial depth, same learned values): worst absolute differences logits 4.4e-6,
cross-entropy 1.7e-6, its gradients 3.2e-6 (fp32, the official `.half()` casts of the prompts
turned into no-ops); with the casts kept, logits 4.3e-4 and gradients 5.4e-4. The forward is
tested against an independent plain reference built by explicit concatenation over open_clip's
blocks.

Departures from the official code, on purpose:
- Precision: the official config sets PREC "fp16"
  (`configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml`; `train.py` default
  `TRAINER.IVLP.PREC`): CLIP and the text context (made in CLIP's dtype) are fp16 and take
  their SGD updates in fp16, with no loss scaling, and the code rounds the vision and deep
  prompts to fp16 (`.half()`) even in an fp32 run. Here the prompts (fp32 parameters) keep the
  tower's dtype, the logits are computed in fp32 under any autocast, and the engine's precision
  applies to the passes (`--precision`: fp32 on the CPU; on CUDA fp16 autocast with a GradScaler
  by default).
- The number of text context vectors is the number of BPE tokens of `ctx_init` (as in
  vlprompt's CoOp; official: N_CTX_TEXT tokens of it, equal for "a photo of a" and 4).
- The official code allows vision depth 0 (no vision prompts); here both depths must be >= 1
  (the depth of a tower with fewer than 9 blocks defaults to all of them).
- The text encoder runs only up to the longest EOS and encodes the positions before the class
  names (SOS and the context, the same in every class) once, not once per class (both exact
  under the causal mask; `vlprompt.deep_prompts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.deep_prompts import (
    DeepTextFeaturesMixin,
    deep_image_features,
    normal_tokens,
    resolve_depth,
)
from vlprompt.errors import MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import MethodConfig, PromptMethod, TrainOutput
from vlprompt.methods.prompt_context import (
    ContextConfig,
    PromptLayoutMixin,
    initial_context,
    n_ctx_of,
)
from vlprompt.methods.registry import register_method


@dataclass
class IVLPConfig(ContextConfig):
    """IVLP (defaults: the official base-to-new config, see the module docstring)."""

    n_ctx: int = field(default=4, metadata={"help": "text prompt tokens (ignored with ctx_init)"})
    ctx_init: str = field(
        default="a photo of a",
        metadata={"help": "words initialising the text prompts; '' = N(0, 0.02^2)"},
    )
    n_ctx_vision: int = field(default=4, metadata={"help": "vision prompt tokens"})
    depth_text: int | None = field(
        default=None,
        metadata={
            "help": "text blocks whose input holds learned prompts (default: 9, the official "
            "value on ViT-B/16's 12 blocks, or every block of a shallower tower)"
        },
    )
    depth_vision: int | None = field(
        default=None,
        metadata={
            "help": "vision blocks whose input holds learned prompts (default: 9, or every "
            "block of a shallower tower)"
        },
    )
    lr: float = field(default=0.0025, metadata={"help": "peak learning rate after warm-up"})
    epochs: int = field(default=20, metadata={"help": "training epochs"})
    batch_size: int = field(default=4, metadata={"help": "images per step"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_ctx_vision < 1:
            raise MethodError(f"n_ctx_vision must be >= 1, got {self.n_ctx_vision}")
        for name in ("depth_text", "depth_vision"):
            depth = getattr(self, name)
            if depth is not None and depth < 1:
                raise MethodError(
                    f"{name} must be >= 1 (block 0 always holds the prompts), got {depth}"
                )


@register_method
class IVLP(DeepTextFeaturesMixin, PromptLayoutMixin, PromptMethod):
    """Independent deep prompts in the text and the vision tower of a frozen open_clip ViT."""

    name: ClassVar[str] = "ivlp"
    # random tokens inside the towers from the first step (see the contract)
    changes_clip_at_init: ClassVar[bool] = True
    feature_rules: ClassVar[tuple[str, ...]] = ("dept",)
    config_class: ClassVar[type[MethodConfig]] = IVLPConfig
    config: IVLPConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: IVLPConfig) -> None:
        super().__init__(clip, classnames, config)
        if not clip.is_vit:
            raise MethodError(
                f"{self.name} needs a ViT image tower (vision prompts follow the patch tokens)"
            )
        self.depth_text = resolve_depth(config.depth_text, len(clip.text_blocks), "depth_text")
        self.depth_vision = resolve_depth(
            config.depth_vision, len(clip.vision_blocks), "depth_vision"
        )
        self.n_ctx = n_ctx_of(clip, config)
        self.ctx = nn.Parameter(initial_context(clip, config, None))
        dev = clip.device
        self.deep_text = nn.ParameterList(
            [normal_tokens(self.n_ctx, clip.text_width, dev) for _ in range(self.depth_text - 1)]
        )
        image_tokens = int(clip.model.visual.positional_embedding.shape[0])  # CLS + patches
        if config.n_ctx_vision > image_tokens:
            raise MethodError(
                f"n_ctx_vision={config.n_ctx_vision} vision prompt tokens is more than the "
                f"{image_tokens} image tokens of {clip.name} (the papers use 4); use at most "
                f"{image_tokens}"
            )
        self.vision_prompt = normal_tokens(config.n_ctx_vision, clip.vision_width, dev)
        self.deep_vision = nn.ParameterList(
            [
                normal_tokens(config.n_ctx_vision, clip.vision_width, dev)
                for _ in range(self.depth_vision - 1)
            ]
        )
        self._build_layout()

    def _build_layout(self) -> None:
        super()._build_layout()
        layout = self.layout
        index = te.position_index(layout, "end", layout.max_length)
        self.register_buffer("position_index", index, persistent=False)

    # ---- towers ------------------------------------------------------------------------------
    def prompt_embeddings(self) -> torch.Tensor:
        """Block 0's text input [C, L, D]: SOS, the context, each class name, '.', EOS (no
        positional embedding yet), L = the longest EOS + 1 on the fast path."""
        layout = self.layout
        ctx = self.ctx.to(self.clip.dtype)[None].expand(len(self.classnames), -1, -1)
        if not self.fast:
            return te.assemble_reference(layout, ctx, "end")
        return te.assemble_fast(layout, ctx, self.position_index, layout.max_length)

    def deep_text_prompts(self) -> list[torch.Tensor]:
        return list(self.deep_text)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (ln_post + projection of CLS, not normalised) [B, E]."""
        return deep_image_features(
            self.clip, images, self.vision_prompt, list(self.deep_vision), pooled_only=self.fast
        )

    @property
    def fast(self) -> bool:
        """The fast path (text up to the longest EOS, pooled rows only at the last blocks)."""
        return self.config.implementation != "reference"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.prompted_logits(self.encode_image(images))

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        return self.prompted_train_output(self.encode_image(images))
