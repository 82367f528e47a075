"""MMRL — Multi-Modal Representation Learning (Guo & Gu, CVPR 2025; official code
yunncheng/MMRL at 27d8821f6ac135a1d0c8e4c5ed78af14df0cd82e: `trainers/mmrl.py`,
`clip/model_mmrl.py`, `trainers/config.py`, configs `configs/trainers/MMRL/*.yaml`).

A shared representation space feeds both towers of a frozen CLIP in their upper blocks:
- K learned representation tokens R [K, rep_dim] (N(0, 0.02^2)); for each representation block
  j (the official `REP_LAYERS`, 1-based block numbers, 6..12 of 12) a linear map to the text width
  and one to the vision width (`r2t[j]`, `r2v[j]`: nn.Linear with bias, all copies of one
  initial layer, as the official `_get_clones`).
- Vision: at the input of the first representation block, r2v[0](R) is inserted after CLS
  (positions 1..K; no positional embedding, no ln_pre); at each later representation block those
  positions are replaced by r2v[j](R). Two image features: the CLS output through ln_post and
  CLIP's projection (class-token feature), and the mean over the K token outputs of ln_post,
  times a new learned projection `proj_rep` [width, E] (init width^-0.5 * N(0, 1), the
  official `VisionTransformer.proj_rep`) (representation feature).
- Text: the hand-crafted prompt of each class (the data set's template, the official
  CUSTOM_TEMPLATES = CoOp's table); r2t[j](R) inserted after SOS at the first representation
  block and replaced at the later ones, under the causal mask of the grown sequence; features at
  EOS (shifted by K) through ln_final and the projection. The text features are shared by both
  image features.
- Logits 100 * cos (the official constant, not CLIP's logit_scale): class-token logits L_c and
  representation logits L_r; fusion alpha * L_c + (1 - alpha) * L_r.
- Loss: alpha * CE(L_c) + (1 - alpha) * CE(L_r) + reg_weight * (1 - mean cos(v, v0))
  + reg_weight * (1 - mean cos(t, t0)), v the class-token image feature, v0 frozen CLIP's image
  feature, t the prompted text features, t0 frozen CLIP's of the same template.
- Inference (`inference`, official `MMRL.test`): the fusion on the classes it was trained on
  (base classes, few-shot, the source data set), the class-token logits alone on any other class
  list (new classes, other data sets): "auto". `fusion` / `class_token` force one.

Official defaults (`vit_b16.yaml`, base-to-new, the defaults here): 5 tokens, rep_dim 512,
blocks 6..12, alpha 0.7, reg_weight 1.0, AdamW lr 1e-3 (Dassl's weight decay 5e-4, betas 0.9,
0.999), 10 epochs, batch 4, 1 constant warm-up epoch at 1e-5, cosine. ImageNet
(`vit_b16_imagenet.yaml`, base-to-new and few-shot): 5 epochs, batch 32. Few-shot
(`vit_b16_few_shot.yaml`): 50 epochs, batch 32, reg_weight 0.5. Cross-data-set
(`vit_b16_cross_datasets.yaml` + `scripts/mmrl/cross_datasets_train.sh`): 1 epoch, no warm-up,
batch 32, reg_weight 0.2. `trainers/config.py` then overrides, per data set and for every task,
reg_weight (Cars 7.0, Aircraft 6.0, SUN397 6.0, DTD 6.0, Food101 5.0, Flowers 4.0, UCF101 3.0,
ImageNet 0.5, Caltech101 0.5, Pets 0.2, EuroSAT 0.01) and rep_dim (EuroSAT 2048), with no stated
validation protocol: the presets ship them as per-data-set constants. 4,992,256 learned values
on ViT-B/16 (rep_dim 512; 18,762,496 with 2048), the paper's 4.99M.

Agreement with the official code (harness outside the repo): its `trainers/mmrl.py`
`CustomCLIP`, `MMRL_Loss`, `TextEncoder_CLIP` and `_get_text_base_features_zero_shot` (Dassl
stubbed, `.cuda()` made a no-op) on its own `clip.build_model_MMRL` built from the state dict of
the same tiny open_clip ViTs (two shapes: widths 128/128 and vision 192 / text 64, head width 64
as its `width // 64` heads need, QuickGELU, 3 and 4 blocks), weights fp16-representable (its
build stores them in fp16) then `.float()` (its PREC fp32 branch), representation blocks
(2, 3), (1, 2, 3), (3) and (2, 3, 4), (1, 3) (a gap: tokens carried through block 2), K 5,
rep_dim 32, alpha 0.7, reg_weight 2, the learned tensors random and copied across, 4 images,
one `forward_backward` (fp32 branch) and its `test()` on base and new classes; both
implementations here. Worst |difference|: fusion logits 2.1e-5, class-token logits 3.1e-5,
representation logits 2.5e-5 (|logit| <= 15.4 at scale 100), loss 1.0e-5 (|loss| ~ 11),
gradients of every learned tensor 7.3e-6 (|g| <= 5.7), frozen image features 2.0e-7, frozen
text features 2.8e-7; evaluation on the trained classes (fusion) 2.2e-5, on new classes
(class-token logits) 3.3e-5. MMRL++ (`trainers/mmrlpp.py`: shared-residual LoRA projections,
progressive composition with beta) is not implemented: a separate method file if wanted.

Departures from the official code, on purpose:
- Precision: the official configs run PREC "amp" (fp16 autocast over CLIP's fp32 weights);
  here the run's precision setting applies (fp32 by default), the logits are computed in fp32.
- The official crop is RandomResizedCrop with scale (0.5, 1) (INPUT.RRCROP_SCALE); vlprompt's
  crop is an engine setting (`--crop-min-scale 0.5`), which a method preset does not set.
- "auto" inference reads the class list, not the data set's name: on ImageNet-V2 and
  ImageNet-Sketch (ImageNet's classes) it gives the fusion where the official `CD` task gives the
  class-token logits (force it with inference="class_token").
- The frozen parts are computed once where they cannot change: the text tower's blocks before
  the first representation block (no learned input) once per class list, and the image tower's
  blocks before it once per batch for both the prompted and the frozen image features (the
  official runs a second, frozen CLIP); the text runs up to the longest EOS and the last block of
  each tower computes only the rows its heads read (all exact; `implementation="reference"` runs
  the official computation).
- Representation blocks are numbered 1..depth of the shallower tower; by default (`rep_layers`
  unset) blocks 6..12 on 12-block towers and, on shallower ones, the same upper 7/12 (the last
  round(7 * depth / 12) blocks: the mini world's tiny CLIP, 2 text blocks, gets block 2).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.attention import (
    block_keys_values,
    check_block,
    pooled_rows_forward,
    readonly_rows_forward,
)
from vlprompt.backbone import ClipBackbone
from vlprompt.chunking import CHECKPOINT_MODES, encode_in_chunks
from vlprompt.errors import MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import (
    KeyedCache,
    MethodConfig,
    PromptMethod,
    TrainOutput,
    features_key,
    full_precision,
)
from vlprompt.methods.method_config import IMPLEMENTATIONS, RUNTIME, check_at_most
from vlprompt.methods.prompt_context import CHUNK_WHY, MAX_CHUNK
from vlprompt.methods.registry import register_method
from vlprompt.methods.saving import load_learned, read_method_info, save_learned

LOGIT_SCALE = 100.0  # the official `100. * image_features @ text_features.t()`
OFFICIAL_REP_LAYERS = (6, 7, 8, 9, 10, 11, 12)  # of ViT-B/16's 12 blocks per tower
INFERENCE = ("auto", "fusion", "class_token")


def default_rep_layers(depth: int) -> tuple[int, ...]:
    """The official blocks 6..12 of 12 (the upper 7/12), scaled: the last round(7 * depth / 12)
    blocks, at least one (a 2-block tower: its last block; the first block is never one)."""
    n = max(1, int(7 * depth / 12 + 0.5))
    return tuple(range(depth - n + 1, depth + 1))


@dataclass
class MMRLConfig(MethodConfig):
    """MMRL (defaults: the official base-to-new config, see the module docstring)."""

    n_rep_tokens: int = field(default=5, metadata={"help": "representation tokens K"})
    rep_dim: int = field(
        default=512,
        metadata={"help": "width of the shared representation space (official: 2048 EuroSAT)"},
    )
    rep_layers: tuple[int, ...] | None = field(
        default=None,
        metadata={
            "help": "1-based blocks of both towers whose input holds the representation tokens "
            "(inserted at the first, replaced at the others; default 6..12 on 12 blocks, the "
            "upper 7/12 of a shallower tower)"
        },
    )
    alpha: float = field(
        default=0.7,
        metadata={"help": "weight of the class-token logits and loss (1 - alpha: representation)"},
    )
    reg_weight: float = field(
        default=1.0,
        metadata={
            "help": "weight of each cosine regulariser towards frozen CLIP (official: per data "
            "set, 0.01-7.0)"
        },
    )
    inference: str = field(
        default="auto",
        metadata={
            "help": "'auto' (fusion on the trained classes, class-token logits on others: the "
            "official base/new rule), 'fusion' or 'class_token'"
        },
    )
    implementation: str = field(
        default="fast",
        metadata={"help": "'fast' (frozen parts once, pooled rows) or 'reference' (the official)"},
    )
    text_chunk_size: int = field(
        default=256,
        metadata={"help": "classes per text chunk (fast path; speed and memory only)", **RUNTIME},
    )
    text_checkpoint: str = field(
        default="auto",
        metadata={
            "help": "checkpoint text chunks while training: 'auto', 'always', 'never'",
            **RUNTIME,
        },
    )
    optimizer: str = field(default="adamw", metadata={"help": "'sgd', 'adam' or 'adamw'"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate after warm-up"})
    epochs: int = field(default=10, metadata={"help": "training epochs"})
    batch_size: int = field(default=4, metadata={"help": "images per step"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_rep_tokens < 1:
            raise MethodError(
                f"n_rep_tokens must be >= 1 (the official value is 5), got {self.n_rep_tokens}"
            )
        if self.rep_dim < 1:
            raise MethodError(f"rep_dim must be >= 1 (official: 512, 2048), got {self.rep_dim}")
        check_at_most("n_rep_tokens", self.n_rep_tokens, 74,
                      "the 77-token text context also holds SOS, a class name and EOS; official 5")  # fmt: skip
        check_at_most("rep_dim", self.rep_dim, 65536,
                      "the width of the shared representation space; official 512, EuroSAT 2048")  # fmt: skip
        if self.rep_layers is not None:
            self.rep_layers = tuple(self.rep_layers)
            layers = self.rep_layers
            check_at_most("rep_layers", max(layers, default=0), 1000,
                          "1-based block numbers of a tower; ViT-B/16's have 12")  # fmt: skip
            if not layers or min(layers) < 1 or list(layers) != sorted(set(layers)):
                raise MethodError(
                    f"rep_layers must be increasing 1-based block numbers, e.g. (6, ..., 12), "
                    f"got {layers!r}"
                )
        if not 0 <= self.alpha <= 1:
            raise MethodError(f"alpha must be in [0, 1] (official 0.7), got {self.alpha}")
        if self.reg_weight < 0:
            raise MethodError(f"reg_weight must be >= 0, got {self.reg_weight}")
        if self.inference not in INFERENCE:
            raise MethodError(
                f"inference must be one of {', '.join(INFERENCE)}, got {self.inference!r}"
            )
        if self.implementation not in IMPLEMENTATIONS:
            raise MethodError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )
        if self.text_chunk_size < 1:
            raise MethodError(f"text_chunk_size must be >= 1, got {self.text_chunk_size}")
        check_at_most("text_chunk_size", self.text_chunk_size, MAX_CHUNK, CHUNK_WHY)
        if self.text_checkpoint not in CHECKPOINT_MODES:
            raise MethodError(
                f"text_checkpoint must be one of {CHECKPOINT_MODES}, got {self.text_checkpoint!r}"
            )


@dataclass
class MMRLTrainOutput(TrainOutput):
    """The training forward: `logits` the fusion, `image_features` frozen CLIP's (normalised),
    and the two logits and prompted features the loss reads."""

    class_logits: torch.Tensor | None = None  # [B, C] class-token logits
    rep_logits: torch.Tensor | None = None  # [B, C] representation logits
    prompted_image_features: torch.Tensor | None = None  # [B, E] normalised class-token feature
    text_features: torch.Tensor | None = None  # [C, E] normalised


# ---- the towers -------------------------------------------------------------------------------
# Every pass goes through the backbone's layer loop (`run_text_layers` / `run_vision_layers`):
# `BlocksBefore` runs the blocks before the first representation block (frozen, no learned
# input), `RepresentationHook` the blocks from it on, on states that already went through the
# others (the blocks outside its range pass the tokens through untouched).
@dataclass
class BlocksBefore:
    """Per-layer hook: blocks i < `first` as usual, the others skipped."""

    first: int

    def __call__(
        self, i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        return block(x, attn_mask=mask) if i < self.first else x


@dataclass
class RepresentationHook:
    """Per-layer hook over the blocks from `first` on (blocks before it are skipped: the states
    come from `BlocksBefore`): `tokens[i - first]` ([K, D], or None) goes to positions 1..K at
    the input of block i, inserted at `first` and replacing them later; `mask` (None: full
    attention) is the mask of the grown sequence. At the last block (`last_rows` set) only the
    rows the heads read are computed: `last_rows(block, x, mask)`."""

    first: int
    tokens: list[torch.Tensor | None]
    mask: torch.Tensor | None = None
    last_rows: Callable[..., torch.Tensor] | None = None

    def __call__(
        self, i: int, block: nn.Module, x: torch.Tensor, _mask: torch.Tensor | None
    ) -> torch.Tensor:
        j = i - self.first
        if j < 0:
            return x
        t = self.tokens[j]
        if t is not None:
            t = t.to(x.dtype).expand(x.shape[0], -1, -1)
            rest = x[:, 1:] if j == 0 else x[:, 1 + t.shape[1] :]
            x = torch.cat([x[:, :1], t, rest], dim=1)
        if self.last_rows is not None and j == len(self.tokens) - 1:
            return self.last_rows(block, x, self.mask)
        return block(x, attn_mask=self.mask)


def _rows_only(blocks: nn.ModuleList, fast: bool) -> bool:
    return fast and check_block(blocks[-1]) is None


def vision_states(clip: ClipBackbone, images: torch.Tensor, first: int) -> torch.Tensor:
    """The image tower's states at the input of block `first` (no learned input before it)."""
    x = clip.vision_ln_pre(clip.vision_embed(images.to(clip.device)))
    return clip.run_vision_layers(x, hook=BlocksBefore(first))


def frozen_image_from_states(
    clip: ClipBackbone, x: torch.Tensor, first: int, fast: bool
) -> torch.Tensor:
    """Frozen CLIP's image features (not normalised) from the states at block `first`."""
    blocks = clip.vision_blocks
    last = len(blocks) - 1
    rows_only = _rows_only(blocks, fast)

    def hook(i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None):
        if i < first:
            return x
        return pooled_rows_forward(block, x, None) if rows_only and i == last else block(x)

    return clip.vision_head(clip.run_vision_layers(x, hook=hook)[:, 0])


def mmrl_image_from_states(
    clip: ClipBackbone,
    x: torch.Tensor,
    first: int,
    tokens: list[torch.Tensor | None],
    proj_rep: torch.Tensor,
    fast: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(class-token feature, representation feature), not normalised, from the states at block
    `first`; `tokens` per block from `first` on (None: no representation tokens there)."""
    k = next(t for t in tokens if t is not None).shape[0]

    def last_rows(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return readonly_rows_forward(block, x[:, : 1 + k], block_keys_values(block, x))

    rows_only = _rows_only(clip.vision_blocks, fast)
    x = clip.run_vision_layers(
        x, hook=RepresentationHook(first, tokens, None, last_rows if rows_only else None)
    )
    cls = clip.vision_head(x[:, 0])
    rep = clip.model.visual.ln_post(x[:, 1 : 1 + k]).mean(dim=1)
    return cls, rep @ proj_rep.to(rep.dtype)


def text_states(clip: ClipBackbone, tokens: torch.Tensor, first: int, length: int) -> torch.Tensor:
    """Text states [C, length, D] at the input of block `first`: token embeddings + positional
    embedding through the blocks before it (causal mask)."""
    x = clip.token_embedding(tokens[:, :length])
    x = x + clip.text_positional_embedding[:length].to(x.dtype)
    return clip.run_text_layers(x, clip.text_causal_mask(length), BlocksBefore(first))


def mmrl_text_from_states(
    clip: ClipBackbone,
    x: torch.Tensor,
    eot_index: torch.Tensor,
    first: int,
    tokens: list[torch.Tensor | None],
    fast: bool,
) -> torch.Tensor:
    """Text features [C, E] (not normalised) from the states at block `first`: the
    representation tokens after SOS, the sequence grown by K under a causal mask, EOS at
    `eot_index` + K."""
    k = next(t for t in tokens if t is not None).shape[0]
    n = x.shape[1] + k
    mask = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
    rows = eot_index + k

    def last_rows(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return pooled_rows_forward(block, x, rows, mask)

    rows_only = _rows_only(clip.text_blocks, fast)
    hook = RepresentationHook(first, tokens, mask, last_rows if rows_only else None)
    x = clip.run_text_layers(x, None, hook)
    pooled = x[:, 0] if rows_only else x[torch.arange(x.shape[0]), rows]
    return clip.text_head(pooled)


# ---- the method -------------------------------------------------------------------------------
@register_method
class MMRL(PromptMethod):
    """Representation tokens from one shared space in the upper blocks of both towers, a
    representation head beside CLIP's class-token head, cosine regularisers to frozen CLIP."""

    name: ClassVar[str] = "mmrl"
    # random tokens inside the towers from the first step (see the contract)
    changes_clip_at_init: ClassVar[bool] = True
    config_class: ClassVar[type[MethodConfig]] = MMRLConfig
    config: MMRLConfig
    new_classes_note: ClassVar[str | None] = (
        "MMRL classifies classes it was not trained on with its class-token logits alone "
        "(the official rule; the representation head serves the trained classes)"
    )

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: MMRLConfig) -> None:
        super().__init__(clip, classnames, config)
        if not clip.is_vit:
            raise MethodError(
                f"{self.name} needs a ViT image tower (representation tokens follow CLS)"
            )
        depth = min(len(clip.text_blocks), len(clip.vision_blocks))
        layers = config.rep_layers or default_rep_layers(depth)
        if max(layers) > depth:
            raise MethodError(
                f"rep_layers {layers} reach block {max(layers)}, but {clip.name}'s shallower "
                f"tower has {depth} blocks; use block numbers 1..{depth}"
            )
        self.rep_layers = tuple(layers)
        self.trained_classnames = list(self.classnames)
        dev = clip.device
        tokens = torch.empty(config.n_rep_tokens, config.rep_dim, device=dev)
        nn.init.normal_(tokens, std=0.02)
        self.rep_tokens = nn.Parameter(tokens)
        n = len(layers)
        self.r2v = _clones(nn.Linear(config.rep_dim, clip.vision_width, device=dev), n)
        self.r2t = _clones(nn.Linear(config.rep_dim, clip.text_width, device=dev), n)
        width = clip.vision_width
        proj = torch.randn(width, clip.embed_dim, device=dev) * width**-0.5
        self.proj_rep = nn.Parameter(proj)
        self._text_states = KeyedCache()

    # ---- the representation tokens of each block ---------------------------------------------
    @property
    def first_block(self) -> int:
        return self.rep_layers[0] - 1

    def _per_block(self, maps: nn.ModuleList, n_blocks: int) -> list[torch.Tensor | None]:
        """The mapped tokens at each block from the first representation block to `n_blocks`."""
        by_block = {b - 1: maps[j](self.rep_tokens) for j, b in enumerate(self.rep_layers)}
        return [by_block.get(i) for i in range(self.first_block, n_blocks)]

    @property
    def fast(self) -> bool:
        return self.config.implementation == "fast"

    # ---- text side ---------------------------------------------------------------------------
    def _tokens(self) -> torch.Tensor:
        texts = [self.config.template.format(te.clean_classname(c)) for c in self.classnames]
        return te.tokenize_checked(self.clip, texts, "hand-crafted prompt", te.TEMPLATE_HINT)

    def _frozen_text_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(states at the first representation block [C, L, D], EOS index [C]) of the class
        prompts, L = the longest EOS + 1; no autograd, once per class list and precision."""

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            tokens = self._tokens()
            eot = tokens.argmax(dim=-1)
            with torch.no_grad():
                return text_states(self.clip, tokens, self.first_block, int(eot.max()) + 1), eot

        key = features_key(self.clip, self.classnames, self.config.template)
        return self._text_states.get(key, compute)

    def text_features(self) -> torch.Tensor:
        """Normalised prompted text features [C, E]."""
        tokens = self._per_block(self.r2t, len(self.clip.text_blocks))
        first = self.first_block
        if not self.fast:
            ids = self._tokens()
            states = text_states(self.clip, ids, first, ids.shape[1])
            feats = mmrl_text_from_states(
                self.clip, states, ids.argmax(dim=-1), first, tokens, False
            )
            return F.normalize(feats, dim=-1)
        states, eot = self._frozen_text_states()

        def encode(rows: slice) -> torch.Tensor:
            e = eot[rows]
            x = states[rows, : int(e.max()) + 1]
            return mmrl_text_from_states(self.clip, x, e, first, tokens, True)

        cfg = self.config
        feats = encode_in_chunks(encode, states.shape[0], cfg.text_chunk_size, cfg.text_checkpoint)
        return F.normalize(feats, dim=-1)

    # ---- image side --------------------------------------------------------------------------
    def _image_pair(
        self, images: torch.Tensor, with_frozen: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(normalised class-token, normalised representation feature, normalised frozen CLIP
        features or None)."""
        first = self.first_block
        tokens = self._per_block(self.r2v, len(self.clip.vision_blocks))
        if self.fast:
            with torch.no_grad():
                states = vision_states(self.clip, images, first)
                frozen = (
                    frozen_image_from_states(self.clip, states, first, True)
                    if with_frozen else None
                )  # fmt: skip
        else:
            states = vision_states(self.clip, images, first)
            frozen = self.clip.encode_image(images).detach() if with_frozen else None
        cls, rep = mmrl_image_from_states(
            self.clip, states, first, tokens, self.proj_rep, self.fast
        )
        frozen = F.normalize(frozen, dim=-1) if frozen is not None else None
        return F.normalize(cls, dim=-1), F.normalize(rep, dim=-1), frozen

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised (class-token, representation) image features [B, 2, E]."""
        cls, rep, _ = self._image_pair(images, with_frozen=False)
        return torch.stack([cls, rep], dim=1)

    # ---- logits ------------------------------------------------------------------------------
    def uses_fusion(self) -> bool:
        """Whether the logits are the fusion (trained classes under "auto") or class-token."""
        mode = self.config.inference
        if mode == "auto":
            return self.classnames == self.trained_classnames
        return mode == "fusion"

    def pair_logits(self, pair: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The logits of normalised image features [B, 2, E] (`encode_image`) against `text`."""
        with full_precision(pair.device):
            logits = LOGIT_SCALE * pair.float() @ text.float().t()  # [B, 2, C]
            if not self.uses_fusion():
                return logits[:, 0]
            a = self.config.alpha
            return a * logits[:, 0] + (1 - a) * logits[:, 1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pair_logits(self.encode_image(images), self.class_side())

    def forward_train(self, images: torch.Tensor) -> MMRLTrainOutput:
        cls, rep, frozen = self._image_pair(images, with_frozen=True)
        text = self.class_side()
        with full_precision(cls.device):
            t = text.float().t()
            class_logits = LOGIT_SCALE * cls.float() @ t
            rep_logits = LOGIT_SCALE * rep.float() @ t
            a = self.config.alpha
            fusion = a * class_logits + (1 - a) * rep_logits
        return MMRLTrainOutput(fusion, frozen, class_logits, rep_logits, cls, text)

    def loss(self, out: MMRLTrainOutput, labels: torch.Tensor) -> torch.Tensor:
        return mmrl_loss(out, labels, self.zeroshot_text_features(), self.config)

    # ---- saving: the trained class list decides the inference head ---------------------------
    def save(self, directory: str | Path) -> None:
        """The learned tensors and the class list it was trained on (`method.json`)."""
        current = self.classnames
        self.classnames = self.trained_classnames
        try:
            save_learned(self, directory)
        finally:
            self.classnames = current

    @classmethod
    def load(
        cls, directory: str | Path, clip: ClipBackbone, classnames: list[str] | None = None
    ) -> PromptMethod:
        method = load_learned(directory, clip, classnames, expected=cls)
        method.trained_classnames = list(read_method_info(directory)["classnames"])
        return method


def mmrl_loss(
    out: MMRLTrainOutput, labels: torch.Tensor, frozen_text: torch.Tensor, cfg: MMRLConfig
) -> torch.Tensor:
    """The official `MMRL_Loss`, in fp32."""
    with full_precision(labels.device):
        a = cfg.alpha
        ce = a * F.cross_entropy(out.class_logits.float(), labels)
        ce = ce + (1 - a) * F.cross_entropy(out.rep_logits.float(), labels)
        image = (
            1
            - F.cosine_similarity(
                out.prompted_image_features.float(), out.image_features.float(), dim=1
            ).mean()
        )
        text = 1 - F.cosine_similarity(out.text_features.float(), frozen_text.float(), dim=1).mean()
        return ce + cfg.reg_weight * image + cfg.reg_weight * text


def _clones(layer: nn.Linear, n: int) -> nn.ModuleList:
    """`n` copies of one initial layer (the official `_get_clones`: all start equal)."""
    return nn.ModuleList([copy.deepcopy(layer) for _ in range(n)])
