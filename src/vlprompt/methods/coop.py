"""CoOp — Context Optimization (Zhou et al., IJCV 2022, "Learning to Prompt for Vision-Language
Models"; official code KaiyangZhou/CoOp `trainers/coop.py`).

A context of `n_ctx` learned word vectors replaces the hand-crafted template: the prompt of class c
is `SOS ctx_1..ctx_n name_c . EOS` (class token at the end; "middle" splits the context in halves
around the name, "front" puts the name first), encoded by the frozen text encoder and pooled at
EOS. The context is shared by all classes, or class-specific (`csc`). Logits are CLIP's
`logit_scale * cos(image, text)`.

Defaults are CoOp's few-shot recipe for 16 shots: 16 context vectors drawn from N(0, 0.02^2),
shared, class token at the end; SGD lr 0.002 (momentum 0.9, weight decay 5e-4), batch 32,
200 epochs (the official configs use 50 epochs for 1 shot and 100 for 2-4 shots), cosine schedule
after 1 warm-up epoch at constant lr 1e-5. The CoCoOp paper's base-to-new CoOp runs use 4 context
vectors initialised from "a photo of a".

Departures from the official code, on purpose:
- Precision: the official default is PREC "fp16" (`train.py`: `TRAINER.COOP.PREC`; no CoOp
  config sets another): CLIP, the context and its SGD updates are fp16, with no loss scaling.
  Here the context is fp32 and the engine's precision applies to the passes (`--precision`:
  fp32 on the CPU; on CUDA fp16 autocast with a GradScaler by default).
- `ctx_init` sets n_ctx to the number of BPE tokens of the init text (official: the number of
  space-separated words, which silently misaligns the prompt when a word splits into several
  tokens; the two agree for "a photo of a").
- `csc=True` with `ctx_init` gives every class its own copy of the initial words (the official
  code silently falls back to one shared context in that case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import (
    FrozenImageMixin,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    clip_logits,
    features_key,
    validate_classnames,
)
from vlprompt.methods.prompt_context import (
    ContextConfig,
    PromptLayoutMixin,
    initial_context,
    n_ctx_of,
)
from vlprompt.methods.registry import register_method


@dataclass
class CoOpConfig(ContextConfig):
    """CoOp (defaults: the official 16-shot recipe, see the module docstring)."""

    epochs: int = field(
        default=200,
        metadata={"help": "training epochs (official: 50 for 1 shot, 100 for 2-4, 200 for 8-16)"},
    )
    csc: bool = field(
        default=False,
        metadata={"help": "class-specific context (one context per class) instead of a shared one"},
    )
    class_token_position: str = field(
        default="end", metadata={"help": "where the class name goes: 'end', 'middle' or 'front'"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.class_token_position not in te.CLASS_TOKEN_POSITIONS:
            raise MethodError(
                f"class_token_position must be one of {te.CLASS_TOKEN_POSITIONS}, "
                f"got {self.class_token_position!r}"
            )


@register_method
class CoOp(PromptLayoutMixin, FrozenImageMixin, PromptMethod):
    """A learned context shared by all classes (or one per class) in front of the class name."""

    name: ClassVar[str] = "coop"
    config_class: ClassVar[type[MethodConfig]] = CoOpConfig
    config: CoOpConfig
    feature_rules: ClassVar[tuple[str, ...]] = ("dept",)

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: CoOpConfig) -> None:
        super().__init__(clip, classnames, config)
        self.n_ctx = n_ctx_of(clip, config)
        n_classes = len(self.classnames) if config.csc else None
        self.ctx = nn.Parameter(self.initial_context(n_classes))
        self._text_cache = KeyedCache()
        self._build_layout()

    def initial_context(self, n_classes: int | None) -> torch.Tensor:
        """The context before training (`initial_context` of the config); subclasses may lay
        it out otherwise (ProGrad's template init)."""
        return initial_context(self.clip, self.config, n_classes)

    def fixed_text(self) -> str:
        """Text that stays fixed between the learned context and each class name ("" here)."""
        return ""

    # ---- class names -------------------------------------------------------------------------
    def layout_names(self) -> list[str]:
        fixed = self.fixed_text()
        return [f"{fixed} {name}" for name in self.classnames] if fixed else self.classnames

    def _build_layout(self) -> None:
        """Tokenise the class prompts and index their positions for the class token position."""
        super()._build_layout()
        layout = self.layout
        index = te.position_index(layout, self.config.class_token_position, layout.max_length)
        self.register_buffer("position_index", index, persistent=False)
        self._text_cache.clear()

    def set_classnames(self, classnames: list[str]) -> None:
        names = validate_classnames(classnames)
        if self.config.csc and names != self.classnames:
            raise MethodError(
                "a class-specific context (csc=True) is learned for its own class list and cannot "
                "classify other classes; use a shared context (csc=False) for base-to-new"
            )
        super().set_classnames(names)

    # ---- text side ---------------------------------------------------------------------------
    def context(self) -> torch.Tensor:
        """The context per class [C, n, D] in the text encoder's dtype."""
        ctx = self.ctx.to(self.clip.dtype)
        return ctx if ctx.dim() == 3 else ctx[None].expand(len(self.classnames), -1, -1)

    def prompt_embeddings(self) -> torch.Tensor:
        """The class prompts' token embeddings (full length on the reference path)."""
        layout = self.layout
        if self.config.implementation == "reference":
            return te.assemble_reference(layout, self.context(), self.config.class_token_position)
        return te.assemble_fast(layout, self.context(), self.position_index, layout.max_length)

    def encode_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        eot = self.eot_index
        if self.config.implementation == "reference":
            return te.encode_reference(self.clip, prompts, eot)
        cfg = self.config
        return te.encode_fast(
            self.clip, prompts, eot, cfg.text_chunk_size, cfg.text_checkpoint,
            shared_prefix=self.shared_prefix_length(),
        )  # fmt: skip

    def shared_prefix_length(self) -> int:
        """Leading prompt positions equal for every class: SOS and, with a shared context, the
        context before the class name (all of it at "end", the first half at "middle")."""
        if self.ctx.dim() == 3:  # class-specific contexts
            return 1
        position = self.config.class_token_position
        return 1 + {"end": self.n_ctx, "middle": self.n_ctx // 2}.get(position, 0)

    def raw_text_features(self) -> torch.Tensor:
        """The learned prompts' text features before normalisation [C, E] (DePT's head)."""
        return self.encode_prompts(self.prompt_embeddings())

    def text_features(self) -> torch.Tensor:
        """Normalised text features of the learned prompts [C, E]. Without autograd (evaluation)
        they are cached until the context changes (an optimizer step or a load bumps its
        version), the class list does or the autocast dtype does."""
        if torch.is_grad_enabled():
            return te.normalize(self.encode_prompts(self.prompt_embeddings()))
        ctx = self.ctx
        key = features_key(
            self.clip, self.classnames, self.config.implementation, ctx._version, ctx.data_ptr()
        )
        return self._text_cache.get(
            key, lambda: te.normalize(self.encode_prompts(self.prompt_embeddings()))
        )

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits from normalised frozen image features [B, E] (no image-encoder pass)."""
        return clip_logits(self.clip, image_features, self.class_side())
