"""MaPLe — Multi-modal Prompt Learning (Khattak et al., CVPR 2023; official code
muzairkhattak/multimodal-prompt-learning at 69bce21ae8eda80ad6187534b2dce09cf6c59e17:
`trainers/maple.py` (`MultiModalPromptLearner`, `TextEncoder`, `CustomCLIP`), `clip/model.py`
(`ResidualAttentionBlock_MaPLe`, `VisionTransformer_MaPLe`), configs
`configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml` (base-to-new) and
`vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml` (cross-data set / domain generalisation)).

Deep prompts in both towers, the vision ones coupled to the text ones (one depth J for both):
- Text: the prompt of class c is the tokenised `"{ctx_init} {name_c}."`; its first n_ctx tokens
  after SOS are the learned context `ctx` ([n, text width], initialised from those tokens' word
  embeddings: "a photo" with the defaults, while "of a" stays fixed text). The context gets the
  positional embedding like every token. At the input of text blocks 1..J-1, positions 1..n are
  replaced by that block's `compound_prompts_text` tensor ([n, text width], N(0, 0.02^2), no
  positional embedding). Features at EOS.
- Vision: `proj(ctx)` (a Linear text width -> vision width) is appended after CLS + patches,
  after the positional embedding and before `ln_pre` (which applies to it too). At the input of
  vision blocks 1..J-1 the last n tokens are replaced by `compound_prompt_projections[j](
  compound_prompts_text[j])`, a separate Linear per block (all J-1 start as copies of one Linear,
  drawn independently of `proj`; PyTorch's default Linear init), no ln_pre. No dropout or layer
  norm applies to the prompts otherwise. Features: ln_post + projection of the CLS output.
- Logits: CLIP's `logit_scale * cos(image, text)`; loss: cross-entropy.
Trainable parameters: J * (n * Dt + Dt * Dv + Dv); 3,555,072 on ViT-B/16 (Dt 512, Dv 768, J 9,
n 2).

Defaults = the official base-to-new config: n_ctx 2 from "a photo of a", depth 9, SGD lr 0.0035
(momentum 0.9, wd 5e-4: Dassl's defaults), 5 epochs, batch 4, cosine after 1 warm-up epoch at
constant 1e-5. Cross-data set / DG config: depth 3, lr 0.0026, 2 epochs (the rest the same).

Checked against the official code side by side (/tmp/maple_official/compare.py, not shipped:
their `CustomCLIP` with Dassl stubbed and their CLIP built by their `build_model` from the same
open_clip state dict, reloaded in fp32): random ViT-B/16 weights (quick GELU, every weight
perturbed) at depth 9, and a 4 + 4-block model with widths 512/768 at depths 1, 3 (also with
ctx_init "" and n_ctx 3) and 4 (reference path); same learned values, 3 images, 5 classes. Worst
absolute differences with their fp16 casts of the prompts turned into no-ops: logits 1.8e-06,
loss 7.2e-07, gradients 4.9e-07 (ViT-B/16: 1.0e-06, 0, 2.8e-07; logits ~1, gradients ~0.1);
both count 3,555,072 parameters on ViT-B/16, and the same seed gives the same initial values (up
to their fp16 rounding of `proj`, 1.5e-05). With their casts kept: logits 1.6e-04, loss 1.4e-05,
gradients 3.4e-05.

Departures from the official code, on purpose:
- Precision: the official configs set PREC "fp16"
  (`configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml` and `..._cross_datasets.yaml`;
  `train.py` default `TRAINER.MAPLE.PREC`): CLIP, the context `ctx` (made in CLIP's dtype) and
  `proj` are fp16 and take their SGD updates in fp16, with no loss scaling (the deep text
  prompts and their projections are fp32 parameters). The official code rounds `proj(ctx)`,
  every deep vision prompt and every deep text prompt to fp16 (`.half()`) whatever
  TRAINER.MAPLE.PREC says, and its `self.proj.half()` makes PREC "fp32" fail ("mat1 and mat2
  must have the same dtype"); here the prompts keep the tower's dtype (fp32 unless the backbone
  or autocast says otherwise), the logits are computed in fp32 under any autocast, and the
  engine's precision applies to the passes (`--precision`: fp32 on the CPU; on CUDA fp16
  autocast with a GradScaler by default).
- Widths are read from the backbone (official: 512 and 768, hard-coded).
- The depth must fit both towers: depth < 1 or deeper than either tower is an error (official:
  prompts beyond the last block are created and never used). By default the depth is 9, or every
  block of the shallower tower.
- n_ctx larger than the tokens of ctx_init is an error (official: up to 4 it takes the EOS and
  padding embeddings after ctx_init's last token as context; above 4 it silently ignores
  ctx_init and draws N(0, 0.02^2) behind "X" placeholders, which is ctx_init "" here).
- The fast path runs the text tower only up to the longest EOS (exact under the causal mask),
  encodes the positions before the class names (SOS, the context, "of a": the same in every
  class, deep prompts included) once instead of once per class (exact under the causal mask)
  and the last block of each tower on its pooled rows only (EOS, CLS: the rows the heads read);
  `implementation="reference"` runs every row at the full context length, as the official code.
"""

from __future__ import annotations

import copy
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
from vlprompt.methods.base import (
    IMPLEMENTATIONS,
    RUNTIME,
    MethodConfig,
    PromptMethod,
    TrainOutput,
)
from vlprompt.methods.prompt_context import (
    PromptLayoutMixin,
    check_fits_context,
    check_text_chunking,
)
from vlprompt.methods.registry import register_method


@dataclass
class MaPLeConfig(MethodConfig):
    """MaPLe (defaults: the official base-to-new config, see the module docstring)."""

    n_ctx: int = field(
        default=2,
        metadata={
            "help": "learned prompt tokens per block: the first n_ctx tokens of ctx_init (the "
            "rest of it stays fixed text), or N(0, 0.02^2) when ctx_init is ''"
        },
    )
    ctx_init: str = field(
        default="a photo of a",
        metadata={"help": "text in front of each class name; its first n_ctx tokens are learned"},
    )
    depth: int | None = field(
        default=None,
        metadata={
            "help": "blocks of BOTH towers whose input holds prompts (official: 9 base-to-new, 3 "
            "cross-data set, on ViT-B/16's 12 blocks; default 9 or every block of the shallower "
            "tower)"
        },
    )
    implementation: str = field(
        default="fast",
        metadata={
            "help": "'fast' (text up to the longest EOS, pooled rows only at the last blocks) "
            "or 'reference' (every row, full length)"
        },
    )
    text_chunk_size: int = field(
        default=256,
        metadata={"help": "classes per text chunk (fast path; speed and memory only)", **RUNTIME},
    )
    text_checkpoint: str = field(
        default="auto",
        metadata={
            "help": "checkpoint text chunks while training: 'auto' (only with more than one "
            "chunk), 'always', 'never'; exact either way",
            **RUNTIME,
        },
    )
    lr: float = field(default=0.0035, metadata={"help": "peak learning rate after warm-up"})
    epochs: int = field(default=5, metadata={"help": "training epochs"})
    batch_size: int = field(default=4, metadata={"help": "images per step"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_ctx < 1:
            raise MethodError(f"n_ctx must be >= 1, got {self.n_ctx}")
        if self.depth is not None and self.depth < 1:
            raise MethodError(
                f"depth must be >= 1 (block 0 always holds the prompts), got {self.depth}"
            )
        if self.implementation not in IMPLEMENTATIONS:
            raise MethodError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )
        check_text_chunking(self)


def coupled_depth(depth: int | None, n_text: int, n_vision: int) -> int:
    """The one prompt depth of both towers (official PROMPT_DEPTH): `depth`, or by default 9 or
    every block of the shallower tower. One clear error when it is deeper than either tower."""
    for tower, n_blocks in (("text", n_text), ("vision", n_vision)):
        if depth is not None and depth > n_blocks:
            raise MethodError(
                f"depth {depth} is deeper than the {tower} tower ({n_blocks} blocks); MaPLe "
                f"prompts both towers to the same depth: use depth <= {min(n_text, n_vision)}"
            )
    return resolve_depth(depth, min(n_text, n_vision), "depth")


def init_words(clip: ClipBackbone, config: MaPLeConfig) -> str:
    """The text in front of each class name: ctx_init, or n_ctx placeholders when it is ''."""
    check_fits_context(clip, "n_ctx", config.n_ctx)
    init = te.clean_classname(config.ctx_init.strip())
    if not init:
        return " ".join([te.PLACEHOLDER] * config.n_ctx)
    n_tokens = len(te.text_token_ids(clip, init))
    if config.n_ctx > n_tokens:
        raise MethodError(
            f"n_ctx {config.n_ctx} is more than the {n_tokens} tokens of ctx_init "
            f"{config.ctx_init!r} (its first n_ctx tokens are learned); use n_ctx <= {n_tokens} "
            "or ctx_init '' (random context)"
        )
    return init


def initial_context(clip: ClipBackbone, config: MaPLeConfig) -> torch.Tensor:
    """[n_ctx, text width] fp32: the word embeddings of ctx_init's first n_ctx tokens, or
    N(0, 0.02^2) without ctx_init."""
    init = te.clean_classname(config.ctx_init.strip())
    if not init:
        return normal_tokens(config.n_ctx, clip.text_width, clip.device).data
    ids = te.text_token_ids(clip, init)[: config.n_ctx]
    with torch.no_grad():
        return clip.token_embedding(ids[None])[0].float().clone()


def build_layout(clip: ClipBackbone, classnames: list[str], words: str, n_ctx: int):
    """The tokenised `"{words} {name}."` of each class (the official prompts): SOS as prefix,
    everything after the first n_ctx tokens of `words` as suffix."""
    names = [te.clean_classname(c) for c in classnames]
    tokens = te.tokenize_checked(clip, [f"{words} {name}." for name in names], "class prompt")
    word_ids = te.text_token_ids(clip, words)[:n_ctx]
    if not bool((tokens[:, 1 : 1 + n_ctx] == word_ids).all()):
        raise MethodError(f"the tokenizer splits {words!r} differently in front of a class name")
    eot = tokens.argmax(dim=-1)
    with torch.no_grad():
        emb = clip.token_embedding(tokens)
    return te.PromptLayout(
        eot_index=eot,
        name_lens=[int(n) for n in (eot - 2 - n_ctx).tolist()],  # fixed words + name tokens
        prefix=emb[:, :1].clone(),
        suffix=emb[:, 1 + n_ctx :].clone(),
        n_ctx=n_ctx,
    )


@register_method
class MaPLe(DeepTextFeaturesMixin, PromptLayoutMixin, PromptMethod):
    """Deep text prompts and, coupled to them by a Linear per block, deep vision prompts in a
    frozen open_clip ViT."""

    name: ClassVar[str] = "maple"
    # random tokens inside the towers from the first step (see the contract)
    changes_clip_at_init: ClassVar[bool] = True
    feature_rules: ClassVar[tuple[str, ...]] = ("dept",)
    config_class: ClassVar[type[MethodConfig]] = MaPLeConfig
    config: MaPLeConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: MaPLeConfig) -> None:
        super().__init__(clip, classnames, config)
        if not clip.is_vit:
            raise MethodError(
                f"{self.name} needs a ViT image tower (its vision prompts follow the patch "
                f"tokens); {clip.name} has a ResNet one"
            )
        self.depth = coupled_depth(config.depth, len(clip.text_blocks), len(clip.vision_blocks))
        self.words = init_words(clip, config)
        self.n_ctx = config.n_ctx
        dev, width = clip.device, clip.text_width
        # the official order of creation (same seed, same initial values)
        self.ctx = nn.Parameter(initial_context(clip, config))
        self.proj = nn.Linear(width, clip.vision_width, device=dev)
        self.compound_prompts_text = nn.ParameterList(
            [normal_tokens(self.n_ctx, width, dev) for _ in range(self.depth - 1)]
        )
        coupling = nn.Linear(width, clip.vision_width, device=dev)
        self.compound_prompt_projections = nn.ModuleList(
            [copy.deepcopy(coupling) for _ in range(self.depth - 1)]
        )
        self._build_layout()

    def _build_layout(self) -> None:
        layout = build_layout(self.clip, self.classnames, self.words, self.n_ctx)
        self.name_lens = layout.name_lens
        self.register_buffer("token_prefix", layout.prefix, persistent=False)
        self.register_buffer("token_suffix", layout.suffix, persistent=False)
        self.register_buffer("eot_index", layout.eot_index, persistent=False)

    # ---- prompts -----------------------------------------------------------------------------
    def prompt_embeddings(self) -> torch.Tensor:
        """Block 0's text input [C, L, D]: SOS, the context, the fixed words, each class name,
        '.', EOS (no positional embedding yet), L = the longest EOS + 1 on the fast path."""
        layout = self.layout
        ctx = self.ctx.to(self.clip.dtype)[None].expand(len(self.classnames), -1, -1)
        if not self.fast:
            return te.assemble_reference(layout, ctx, "end")
        return te.assemble_fast(layout, ctx, None, layout.max_length)

    def vision_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Block 0's vision prompts `proj(ctx)` [n, Dv] and the deep ones, one per block 1..J-1:
        that block's coupling Linear of that block's text prompts."""
        deep = [
            project(prompts)
            for project, prompts in zip(
                self.compound_prompt_projections, self.compound_prompts_text, strict=True
            )
        ]
        return self.proj(self.ctx), deep

    # ---- towers ------------------------------------------------------------------------------
    def deep_text_prompts(self) -> list[torch.Tensor]:
        return list(self.compound_prompts_text)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (ln_post + projection of CLS, not normalised) [B, E]."""
        first, deep = self.vision_prompts()
        return deep_image_features(self.clip, images, first, deep, pooled_only=self.fast)

    @property
    def fast(self) -> bool:
        """The fast path (text up to the longest EOS, pooled rows only at the last blocks)."""
        return self.config.implementation != "reference"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.prompted_logits(self.encode_image(images))

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        return self.prompted_train_output(self.encode_image(images))
