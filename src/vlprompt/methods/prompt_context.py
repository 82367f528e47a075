"""The learned context of the CoOp family (CoOp, CoCoOp, KgCoOp, ProGrad): its settings, its
initial value and the tokenised class prompts around it (`vlprompt.methods.text_encoding` builds
and encodes them).

A context is `n_ctx` learned word vectors; the prompt of class c is `SOS ctx_1..ctx_n name_c . EOS`
(official CoOp `PromptLearner`). The context starts from the embeddings of words (`ctx_init`, e.g.
"a photo of a") or from N(0, 0.02^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.chunking import CHECKPOINT_MODES
from vlprompt.errors import MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import IMPLEMENTATIONS, RUNTIME, MethodConfig, validate_classnames
from vlprompt.methods.method_config import check_at_most

MAX_CHUNK = 65_536  # class prompts per text chunk
CHUNK_WHY = "more class prompts than any data set has classes: ImageNet-21k has 21,841"


@dataclass
class ContextConfig(MethodConfig):
    """Settings of every method with a learned CoOp-style context."""

    n_ctx: int = field(
        default=16,
        metadata={
            "help": "learned context vectors (ignored when ctx_init sets them, see pad_ctx_init)"
        },
    )
    ctx_init: str = field(
        default="",
        metadata={"help": "words initialising the context, e.g. 'a photo of a'; '' = N(0, 0.02^2)"},
    )
    pad_ctx_init: bool = field(
        default=False,
        metadata={
            "help": "ProGrad's layout: keep n_ctx vectors, the init words fill the LAST "
            "positions, zeros before (false = CoOp's: the context is exactly the init words)"
        },
    )
    implementation: str = field(
        default="fast",
        metadata={"help": "'fast' (truncated, chunked encoder) or 'reference' (the paper's)"},
    )
    text_chunk_size: int = field(
        default=256,
        metadata={"help": "sequences per text chunk (fast path; speed and memory only)", **RUNTIME},
    )
    text_checkpoint: str = field(
        default="auto",
        metadata={
            "help": "checkpoint text chunks while training: 'auto' (only with more than one "
            "chunk), 'always', 'never'; exact either way, trades a recomputed forward for "
            "bounded activation memory",
            **RUNTIME,
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_ctx < 1:
            raise MethodError(f"n_ctx must be >= 1, got {self.n_ctx}")
        if self.implementation not in IMPLEMENTATIONS:
            raise MethodError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )
        check_text_chunking(self)


def check_text_chunking(config: MethodConfig) -> None:
    """One clear error for a bad `text_chunk_size` or `text_checkpoint` (the fast text path's
    class chunks, shared by the context methods and MaPLe)."""
    if config.text_chunk_size < 1:
        raise MethodError(f"text_chunk_size must be >= 1, got {config.text_chunk_size}")
    check_at_most("text_chunk_size", config.text_chunk_size, MAX_CHUNK, CHUNK_WHY)
    if config.text_checkpoint not in CHECKPOINT_MODES:
        raise MethodError(
            f"text_checkpoint must be one of {CHECKPOINT_MODES}, got {config.text_checkpoint!r}"
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


def check_fits_context(clip: ClipBackbone, name: str, n_tokens: int, spare: int = 3) -> None:
    """MethodError, before anything is allocated, when `n_tokens` learned text tokens leave less
    than `spare` positions of the backbone's text context (SOS, a class name and EOS)."""
    room = clip.context_length - spare
    check_at_most(name, n_tokens, room, f"the {clip.context_length}-token text context of "
                  f"{clip.name} also holds SOS, a class name and EOS")  # fmt: skip


def n_ctx_of(clip: ClipBackbone, config: ContextConfig) -> int:
    """The number of context vectors: the BPE tokens of `ctx_init` (unless padded), else n_ctx
    (bounded by the text context before any allocation)."""
    check_fits_context(clip, "n_ctx", config.n_ctx)
    init = te.clean_classname(config.ctx_init.strip())
    if init and not config.pad_ctx_init:
        return len(te.text_token_ids(clip, init))
    return config.n_ctx


class PromptLayoutMixin:
    """The tokenised class prompts around a context of `self.n_ctx` vectors, for the current
    class names: their fixed embeddings as non-persistent buffers (never saved, recomputed from
    the class names; the official load_model drops them too). Mix in before `PromptMethod`; the
    method calls `_build_layout()` once its `n_ctx` is set."""

    clip: ClipBackbone
    classnames: list[str]
    n_ctx: int

    def layout_names(self) -> list[str]:
        """The text each class prompt holds after the context (default: the class name)."""
        return self.classnames

    def _build_layout(self) -> None:
        layout = te.build_layout(self.clip, self.layout_names(), self.n_ctx)
        self.name_lens = layout.name_lens
        self.register_buffer("token_prefix", layout.prefix, persistent=False)
        self.register_buffer("token_suffix", layout.suffix, persistent=False)
        self.register_buffer("eot_index", layout.eot_index, persistent=False)

    @property
    def layout(self) -> te.PromptLayout:
        return te.PromptLayout(
            self.eot_index, self.name_lens, self.token_prefix, self.token_suffix, self.n_ctx
        )

    def set_classnames(self, classnames: list[str]) -> None:
        saved, self.classnames = self.classnames, validate_classnames(classnames)
        try:
            self._build_layout()
        except MethodError:  # e.g. a class prompt too long: keep the working class list
            self.classnames = saved
            raise
