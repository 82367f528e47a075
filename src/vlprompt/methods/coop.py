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
    RUNTIME,
    MethodConfig,
    PromptMethod,
    TrainOutput,
    autocast_dtype,
    full_precision,
    validate_classnames,
)
from vlprompt.methods.registry import register_method


@dataclass
class ContextConfig(MethodConfig):
    """Settings of every method with a learned CoOp-style context."""

    n_ctx: int = 16  # learned context vectors (ignored when ctx_init sets them, see pad_ctx_init)
    ctx_init: str = ""  # words initialising the context, e.g. "a photo of a"; "" = N(0, 0.02^2)
    # ProGrad's layout: keep n_ctx vectors, the init words fill the LAST positions, zeros before
    # (False = CoOp's: the context is exactly the init words)
    pad_ctx_init: bool = False
    implementation: str = "fast"  # "fast" (truncated, chunked encoder) or "reference" (paper's)
    text_chunk_size: int = field(
        default=256, metadata=RUNTIME
    )  # sequences per text chunk (fast path)
    # checkpoint text chunks while training: "auto" (only with more than one chunk), "always",
    # "never" — exact either way; trades a recomputed forward for bounded activation memory
    text_checkpoint: str = field(default="auto", metadata=RUNTIME)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_ctx < 1:
            raise MethodError(f"n_ctx must be >= 1, got {self.n_ctx}")
        te.check_implementation(self.implementation)
        if self.text_chunk_size < 1:
            raise MethodError(f"text_chunk_size must be >= 1, got {self.text_chunk_size}")
        if self.text_checkpoint not in te.CHECKPOINT_MODES:
            raise MethodError(
                f"text_checkpoint must be one of {te.CHECKPOINT_MODES}, got {self.text_checkpoint!r}"
            )


@dataclass
class CoOpConfig(ContextConfig):
    """CoOp (defaults: the official 16-shot recipe, see the module docstring)."""

    epochs: int = 200  # 16 shots (official: 50 for 1 shot, 100 for 2-4 shots, 200 for 8-16)
    csc: bool = False  # class-specific context (one context per class) instead of a shared one
    class_token_position: str = "end"  # "end", "middle" or "front"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.class_token_position not in te.CLASS_TOKEN_POSITIONS:
            raise MethodError(
                f"class_token_position must be one of {te.CLASS_TOKEN_POSITIONS}, "
                f"got {self.class_token_position!r}"
            )


def initial_context(
    clip: ClipBackbone, config: ContextConfig, n_classes: int | None
) -> torch.Tensor:
    """The initial context [n, D] (or [n_classes, n, D] when `n_classes` is given: CSC), fp32."""
    width = clip.text_width
    init = te.clean_classname(config.ctx_init.strip())
    if init:
        ids = te.text_token_ids(clip, init)
        with torch.no_grad():
            words = clip.token_embedding(ids[None])[0].float()
        if config.pad_ctx_init:
            if config.n_ctx < len(ids):
                raise MethodError(
                    f"ctx_init {config.ctx_init!r} has {len(ids)} tokens but n_ctx is "
                    f"{config.n_ctx}; use n_ctx >= {len(ids)} or a shorter ctx_init"
                )
            pad = torch.zeros(config.n_ctx - len(ids), width, device=words.device)
            ctx = torch.cat([pad, words], dim=0)
        else:
            ctx = words
        if n_classes is not None:
            ctx = ctx[None].repeat(n_classes, 1, 1)
        return ctx.clone()
    shape = (config.n_ctx, width) if n_classes is None else (n_classes, config.n_ctx, width)
    ctx = torch.empty(shape, device=clip.device)
    nn.init.normal_(ctx, std=0.02)
    return ctx


def n_ctx_of(clip: ClipBackbone, config: ContextConfig) -> int:
    init = te.clean_classname(config.ctx_init.strip())
    if init and not config.pad_ctx_init:
        return len(te.text_token_ids(clip, init))
    return config.n_ctx


def clip_logits(
    clip: ClipBackbone, image_features: torch.Tensor, text_features: torch.Tensor
) -> torch.Tensor:
    """logit_scale * image_f @ text_f.T in fp32 (both already normalised), under autocast too."""
    with full_precision(image_features.device):
        return clip.logit_scale.float() * image_features.float() @ text_features.float().t()


class FrozenImageMixin:
    """Methods whose image side is frozen CLIP: training returns the normalised image features
    (ProGrad's teacher reuses them) and `forward_features` classifies cached features."""

    frozen_image_encoder: ClassVar[bool] = True
    clip: ClipBackbone

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.clip.encode_image(images, normalize=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.image_features(images))

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        feats = self.image_features(images)
        return TrainOutput(self.forward_features(feats), feats)

    def forward_features(self, image_features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_method
class CoOp(FrozenImageMixin, PromptMethod):
    """A learned context shared by all classes (or one per class) in front of the class name."""

    name: ClassVar[str] = "coop"
    config_class: ClassVar[type[MethodConfig]] = CoOpConfig
    config: CoOpConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: CoOpConfig) -> None:
        super().__init__(clip, classnames, config)
        self.n_ctx = n_ctx_of(clip, config)
        n_classes = len(self.classnames) if config.csc else None
        self.ctx = nn.Parameter(self.initial_context(n_classes))
        self._text_cache: tuple | None = None
        self._build_layout()

    def initial_context(self, n_classes: int | None) -> torch.Tensor:
        """The context before training (`initial_context` of the config); subclasses may lay
        it out otherwise (ProGrad's template init)."""
        return initial_context(self.clip, self.config, n_classes)

    def fixed_text(self) -> str:
        """Text that stays fixed between the learned context and each class name ("" here)."""
        return ""

    # ---- class names -------------------------------------------------------------------------
    def _build_layout(self) -> None:
        """Tokenise the class prompts. The fixed embeddings are non-persistent buffers: never
        saved, recomputed from the class names (the official load_model drops them too)."""
        fixed = self.fixed_text()
        names = [f"{fixed} {name}" for name in self.classnames] if fixed else self.classnames
        layout = te.build_layout(self.clip, names, self.n_ctx)
        self.name_lens = layout.name_lens
        self.register_buffer("token_prefix", layout.prefix, persistent=False)
        self.register_buffer("token_suffix", layout.suffix, persistent=False)
        self.register_buffer("eot_index", layout.eot_index, persistent=False)
        index = te.position_index(layout, self.config.class_token_position, layout.max_length)
        self.register_buffer("position_index", index, persistent=False)
        self._text_cache = None

    @property
    def layout(self) -> te.PromptLayout:
        return te.PromptLayout(
            self.eot_index, self.name_lens, self.token_prefix, self.token_suffix, self.n_ctx
        )

    def set_classnames(self, classnames: list[str]) -> None:
        names = validate_classnames(classnames)
        if self.config.csc and names != self.classnames:
            raise MethodError(
                "a class-specific context (csc=True) is learned for its own class list and cannot "
                "classify other classes; use a shared context (csc=False) for base-to-new"
            )
        saved, self.classnames = self.classnames, names
        try:
            self._build_layout()
        except MethodError:  # e.g. a class prompt too long: keep the working class list
            self.classnames = saved
            raise

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

    def text_features(self) -> torch.Tensor:
        """Normalised text features of the learned prompts [C, E]. Without autograd (evaluation)
        they are cached until the context changes (an optimizer step or a load bumps its
        version), the class list does or the autocast dtype does."""
        if torch.is_grad_enabled():
            return te.normalize(self.encode_prompts(self.prompt_embeddings()))
        key = (
            self.ctx._version,
            self.ctx.data_ptr(),
            tuple(self.classnames),
            self.config.implementation,
            autocast_dtype(self.ctx.device),
        )
        if self._text_cache is None or self._text_cache[0] != key:
            feats = te.normalize(self.encode_prompts(self.prompt_embeddings()))
            self._text_cache = (key, feats)
        return self._text_cache[1]

    def forward_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits from normalised frozen image features [B, E] (no image-encoder pass)."""
        return clip_logits(self.clip, image_features, self.text_features())
