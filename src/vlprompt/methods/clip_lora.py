"""CLIP-LoRA — low-rank adaptation of both CLIP towers (Zanella & Ben Ayed, CVPRW 2024; official
code MaxZanella/CLIP-LoRA at 358f0d7361f59e66c0b2d0b672a3dafb143a759b: `main.py`, `lora.py`,
`loralib/layers.py`, `loralib/utils.py`, `run_utils.py`, `utils.py`, `datasets/*.py`).

Each selected attention block's query, key and value projections (`--params q,k,v`; "o" adds the
output projection) get a trainable low-rank update: `W x + b + scaling * B A dropout(x)`, with
A [r, in] Kaiming-uniform (a = sqrt(5)), B [out, r] zero, scaling = alpha / sqrt(r) (the official
`LoRALayer`; not loralib's alpha / r) and dropout on the LoRA input only, a separate dropout per
projection, in training only. Every step recomputes the text features of "a photo of a {}." (the
template of every data set in the official `datasets/*.py`) for all classes; logits are
`100 * cos(image, text)` (the official fixed `logit_scale = 100`), the loss cross-entropy.

Official defaults (`run_utils.py`, `lora.py`): rank 2, alpha 1, dropout 0.25, q/k/v, every block
(`--position all`) of both towers (`--encoder both`), AdamW lr 2e-4, weight decay 1e-2, betas
(0.9, 0.999), batch 32, 500 x shots iterations (8000 at the default 16 shots) with
CosineAnnealingLR(T_max = iterations, eta_min = 1e-6) stepped once per iteration, fp16 autocast
with a GradScaler. Trainable parameters: blocks x projections x r x (in + out); on ViT-B/16
12 x 3 x 2 x (512 + 512) + 12 x 3 x 2 x (768 + 768) = 184,320.

The LoRA module is written here, not taken from `peft`: peft is not installed, and its LoRA of
an nn.MultiheadAttention adapts the packed `in_proj_weight` as one matrix (one A, B pair), not
as three pairs for q, k and v with alpha / sqrt(r) and a dropout per projection. The blocks stay
open_clip's: while the method runs its towers, `LoRAAttention` stands in for a selected block's
nn.MultiheadAttention (`block.attn`), reading that module's frozen weights; the backbone's own
`encode_text` / `encode_image` run them, and the backbone is restored afterwards (ProGrad's
zero-shot teacher sees frozen CLIP). In eval mode the update is merged into the weights (cached
until A or B change), so evaluation costs what frozen CLIP costs; merged == unmerged to 1e-6
relative (4e-6 on the tests' logits).

Training runs the unmerged update packed (`LoRAAttention.packed`, on by default; off with
`implementation="reference"`, the official per-projection computation): q, k and v come from
one product with the packed frozen weight, their updates from one thin pair, `x [A_q; A_k;
A_v]^T` then one in-place addmm with the B's placed block-wise; dropout draws one boolean mask
per projection and keeps only the masks for backward (`_DroppedLowRank`), not a dropped copy of
the input per projection; with dropout 0 no mask is drawn and nothing is copied.
tests/test_clip_lora_packed.py checks packed == per-projection in logits and in the gradient of
every A and B (1e-5), with dropout 0 and, replaying the packed path's masks, with dropout 0.25.

Checked against the official code (in /tmp, never in this repo; tests/test_clip_lora.py does not
import it): their `clip/model.py` CLIP (QuickGELU) loaded with the state dict of a tiny open_clip
ViT (vision width 128, 2 heads; text width 64, 4 heads; weights perturbed), `apply_lora` with the
official arguments, the same random nonzero A and B copied into both, fp32 on CPU, their `lora.py`
training step line by line. Dropout off (p = 0), worst differences for q, k, v / q, k, v, o:
logits 1.4e-5 / 2.3e-5 (logits up to 31), loss 6.7e-6 / 7.6e-6, LoRA gradients 6.7e-6 / 5.7e-6
(of up to 7.6). The same random dropout masks on both sides (q, k, v, o): logits 2.3e-5, loss
2.9e-6, gradients 1.1e-5 (of up to 12.7). Their eval (B A merged by `.eval()`) vs our merged
eval: logits 1.7e-5. The frozen towers alone already differ by 1.6e-5 (their sequence-first
layout). Their AdamW + CosineAnnealingLR(8000, eta_min=1e-6) learning rates vs
`schedule.lr_at_step`: worst relative difference 1.6e-14.

Departures from the official code, on purpose:
- Precision: the official code has no precision setting: `main.py` loads CLIP with
  `clip.load(args.backbone)`, which keeps OpenAI's fp16 weights on CUDA; `loralib/layers.py`
  (`PlainMultiheadAttentionLoRA`, `LinearLoRA`) rebuilds the adapted attention projections as
  fp32 `nn.Linear`s with fp32 A and B, and `lora.py` `run_lora` runs every pass under fp16
  autocast with a GradScaler. Here the backbone, A and B are fp32 and the engine's precision
  applies (`--precision`: fp32 on the CPU; on CUDA fp16 autocast with a GradScaler by default,
  as the official); logits and the loss are computed in fp32 from the (autocast) features, the
  official multiplies fp16 features; `encoder="vision"` uses the frozen text features of the
  same template in fp32 (official: the same, cast to fp16).
- The training length and per-step cosine are the engine's `iterations` and
  `lr_schedule="step"` settings (presets give iterations = 500 x shots).
- The engine's loader drops the last incomplete batch (Dassl), the official keeps it.
- The low-rank update is computed as `(x A^T) B^T` (rank-2 products), the official forms `B A`
  first.
- Dropout keeps each element of each projection's input with probability 1 - p, independently
  per projection, as the official, but the random draws differ: the masks of q, k and v come
  from one draw (random bytes where 256 p is whole, the official 0.25; else uniform floats), not
  from three nn.Dropout calls, so the same seed gives other masks than the official code.
- Positions other than "all" are defined for any depth by fractions of the tower (bottom / mid /
  up: thirds, half-bottom / half-up: halves, top3: the last 3), which equal the official
  12-block tables.
- `logit_scale=0` uses the backbone's learned scale instead of 100.
- The prompts are encoded up to their longest EOT, not all 77 positions (the same numbers: the
  mask is causal; ~7x less text activation memory; `implementation="reference"` encodes all 77,
  tests/test_clip_lora.py checks both agree in logits and gradients).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.base import (
    IMPLEMENTATIONS,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    features_key,
    full_precision,
)
from vlprompt.methods.registry import register_method
from vlprompt.methods.text_encoding import TEMPLATE_HINT, tokenize_checked

ENCODERS = ("text", "vision", "both")
PROJECTIONS = ("q", "k", "v", "o")
POSITIONS = ("all", "bottom", "mid", "up", "half-bottom", "half-up", "top3")  # official choices


@dataclass
class CLIPLoRAConfig(MethodConfig):
    """CLIP-LoRA (defaults: the official `run_utils.py` and `lora.py`, 16 shots)."""

    template: str = field(
        default="a photo of a {}.",
        metadata={"help": "the prompt of every class (official: this one for every data set)"},
    )
    optimizer: str = field(default="adamw", metadata={"help": "'sgd', 'adam' or 'adamw'"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=32, metadata={"help": "images per step"})
    warmup_epochs: int = field(
        default=0, metadata={"help": "warm-up epochs: none officially (0 with lr_schedule 'step')"}
    )
    lr_schedule: str = field(
        default="step",
        metadata={
            "help": "'step' (official): cosine annealing set at every optimizer step; 'epoch': "
            "set once per epoch"
        },
    )
    min_lr: float = field(default=1e-6, metadata={"help": "eta_min of the 'step' cosine"})
    iterations: int = field(
        default=8000,
        metadata={
            "help": "optimizer steps: 500 x shots officially (8000 for 16 shots); 0: `epochs`"
        },
    )
    rank: int = field(default=2, metadata={"help": "rank r of each low-rank update"})
    alpha: float = field(
        default=1.0, metadata={"help": "LoRA alpha; the update is scaled by alpha / sqrt(rank)"}
    )
    dropout: float = field(
        default=0.25, metadata={"help": "dropout on the input of each low-rank update"}
    )
    encoder: str = field(
        default="both", metadata={"help": "towers with LoRA: 'text', 'vision' or 'both'"}
    )
    position: str = field(
        default="all",
        metadata={
            "help": "blocks with LoRA: all, bottom, mid, up (thirds), half-bottom, half-up, top3"
        },
    )
    params: tuple[str, ...] = field(
        default=("q", "k", "v"),
        metadata={"help": "projections with LoRA: any of q, k, v, o (o: the output projection)"},
    )
    implementation: str = field(
        default="fast",
        metadata={
            "help": "'fast' (the prompts encoded up to their longest EOT; q, k, v and their "
            "updates packed) or 'reference' (all 77 positions, each projection on its own, as "
            "the official code)"
        },
    )
    logit_scale: float = field(
        default=100.0,
        metadata={"help": "fixed logit scale (official 100); 0: the backbone's learned one"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.params = tuple(self.params)
        if self.rank < 1:
            raise MethodError(f"rank must be >= 1 (official 2), got {self.rank}")
        if self.alpha <= 0:
            raise MethodError(f"alpha must be > 0 (official 1), got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise MethodError(f"dropout must be in [0, 1) (official 0.25), got {self.dropout}")
        if self.encoder not in ENCODERS:
            raise MethodError(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.position not in POSITIONS:
            raise MethodError(
                f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}"
            )
        if not self.params or not set(self.params) <= set(PROJECTIONS):
            raise MethodError(
                f"params must be a non-empty list of q, k, v, o, got {list(self.params)}"
            )
        if self.implementation not in IMPLEMENTATIONS:
            raise MethodError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )
        if len(set(self.params)) != len(self.params):
            raise MethodError(f"params must not repeat a projection, got {list(self.params)}")
        if self.logit_scale < 0:
            raise MethodError(
                f"logit_scale must be > 0 (official 100) or 0 (the backbone's), got "
                f"{self.logit_scale}"
            )


def blocks_at(position: str, depth: int) -> list[int]:
    """The block indices of `position` in a tower of `depth` blocks (the official tables for 12)."""
    third, half = depth // 3, depth // 2
    spans = {
        "all": (0, depth),
        "bottom": (0, third),
        "mid": (third, 2 * third),
        "up": (2 * third, depth),
        "half-bottom": (0, half),
        "half-up": (half, depth),
        "top3": (max(depth - 3, 0), depth),
    }
    start, stop = spans[position]
    return list(range(start, stop))


class LowRankUpdate(nn.Module):
    """`scaling * B A dropout(x)` of one projection [out, in]: A Kaiming-uniform, B zero."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float,
        device: torch.device,
    ) -> None:  # fmt: skip
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / math.sqrt(rank)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(self.dropout(x), self.lora_A.to(x.dtype))
        return F.linear(low, self.lora_B.to(x.dtype)) * self.scaling

    def weight(self) -> torch.Tensor:
        """The update as a weight [out, in], merged into the frozen one in eval mode."""
        return (self.lora_B @ self.lora_A) * self.scaling


class LoRAAttention(nn.Module):
    """An open_clip block's nn.MultiheadAttention with low-rank updates of its projections.

    Training (unmerged): q, k, v = the frozen packed projections + their updates, then scaled
    dot-product attention and the output projection (+ its update), as the official
    `PlainMultiheadAttentionLoRA`. Eval: the frozen module itself with merged weights."""

    def __init__(self, base: nn.MultiheadAttention, config: CLIPLoRAConfig, where: str) -> None:
        super().__init__()
        if not isinstance(base, nn.MultiheadAttention) or not base._qkv_same_embed_dim:
            raise MethodError(
                f"CLIP-LoRA needs torch's nn.MultiheadAttention in every {where} block, found "
                f"{type(base).__name__}; use an open_clip CLIP with standard attention"
            )
        self._frozen = (base,)  # a tuple: not registered, never saved with the method
        width, device = base.embed_dim, base.in_proj_weight.device
        self.updates = nn.ModuleDict(
            {
                p: LowRankUpdate(width, width, config.rank, config.alpha, config.dropout, device)
                for p in config.params
            }
        )
        self._merged = KeyedCache()
        # the packed path (below); False: the per-projection path of the official code
        self.packed = config.implementation == "fast"

    @property
    def base(self) -> nn.MultiheadAttention:
        return self._frozen[0]

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        need_weights: bool = False, attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:  # fmt: skip
        if need_weights or key_padding_mask is not None:
            raise MethodError("CLIP-LoRA attention supports attn_mask only (open_clip's call)")
        if not self.training:
            return self._merged_forward(query, key, value, attn_mask)
        return self._lora_forward(query, key, value, attn_mask), None

    def _lora_forward(self, query, key, value, attn_mask) -> torch.Tensor:
        if self.packed and query is key and key is value:  # self-attention: open_clip's call
            return self._packed_forward(query, attn_mask)
        base = self.base
        weights = base.in_proj_weight.chunk(3)
        biases = base.in_proj_bias.chunk(3) if base.in_proj_bias is not None else (None,) * 3
        q, k, v = (
            self._project(name, x, w, b)
            for name, x, w, b in zip("qkv", (query, key, value), weights, biases, strict=True)
        )
        if not base.batch_first:  # [L, N, E] -> [N, L, E]
            q, k, v = (t.transpose(0, 1) for t in (q, k, v))
        out = _heads_attention(q, k, v, base.num_heads, attn_mask)
        out = self._project("o", out, base.out_proj.weight, base.out_proj.bias)
        return out if base.batch_first else out.transpose(0, 1)

    def _project(self, name: str, x, weight, bias) -> torch.Tensor:
        y = F.linear(x, weight, bias)
        return y + self.updates[name](x) if name in self.updates else y

    def _packed_forward(self, x: torch.Tensor, attn_mask) -> torch.Tensor:
        """The same computation as the per-projection path with q, k and v from one packed
        product and their low-rank updates from one thin matmul pair (`_add_updates`)."""
        base = self.base
        qkv = self._add_updates(F.linear(x, base.in_proj_weight, base.in_proj_bias), x, "qkv")
        q, k, v = qkv.chunk(3, dim=-1)
        if not base.batch_first:  # [L, N, E] -> [N, L, E]
            q, k, v = (t.transpose(0, 1) for t in (q, k, v))
        attended = _heads_attention(q, k, v, base.num_heads, attn_mask)
        out = F.linear(attended, base.out_proj.weight, base.out_proj.bias)
        out = self._add_updates(out, attended, "o")
        return out if base.batch_first else out.transpose(0, 1)

    def _add_updates(self, y: torch.Tensor, x: torch.Tensor, slots: str) -> torch.Tensor:
        """`y` [..., len(slots) * E] plus the updates of the projections in `slots` that have
        one: `low = dropout(x) [A_1; A_2; ...]^T` (one [M, n r] product; dropout: one
        independent mask per projection, `_DroppedLowRank`), then `y += scaling * low B^T` with
        B the [len(slots) * E, n r] matrix holding each B_i at its projection's rows and its
        columns of `low` (zero elsewhere), one in-place addmm."""
        names = [s for s in slots if s in self.updates]
        if not names:
            return y
        ups = [self.updates[s] for s in names]
        width = x.shape[-1]
        flat = x.reshape(-1, width)
        out = y.reshape(-1, y.shape[-1])
        a = torch.cat([u.lora_A for u in ups]).to(out.dtype)
        b = torch.block_diag(
            *(
                self.updates[s].lora_B if s in self.updates else ups[0].lora_B.new_zeros(width, 0)
                for s in slots
            )
        ).to(out.dtype)
        p = ups[0].dropout.p  # the same in every projection (the config's dropout)
        if self.training and p > 0:
            keep = keep_masks(len(ups), flat, p)
            low = _DroppedLowRank.apply(flat.to(out.dtype), a, keep, 1 / (1 - p))
        else:
            low = F.linear(flat.to(out.dtype), a)
        return out.addmm_(low, b.t(), alpha=ups[0].scaling).view(y.shape)

    def merged_weights(self) -> dict[str, torch.Tensor]:
        """The frozen module's weights with the updates added (nn.MultiheadAttention names)."""
        base, ups = self.base, self.updates
        deltas = [
            ups[p].weight() if p in ups else torch.zeros_like(w)
            for p, w in zip("qkv", base.in_proj_weight.chunk(3), strict=True)
        ]
        merged = {"in_proj_weight": base.in_proj_weight + torch.cat(deltas).to(base.in_proj_weight)}
        if "o" in ups:
            w = base.out_proj.weight
            merged["out_proj.weight"] = w + ups["o"].weight().to(w)
        return merged

    def _merged_forward(self, query, key, value, attn_mask) -> tuple[torch.Tensor, None]:
        if torch.is_grad_enabled():  # differentiable, so not cached
            merged = self.merged_weights()
        else:
            merged = self._merged.get(self._merge_key(), self.merged_weights)
        out = torch.func.functional_call(
            self.base, merged, (query, key, value),
            {"need_weights": False, "attn_mask": attn_mask},
        )  # fmt: skip
        return out[0], None

    def _merge_key(self) -> tuple:
        tensors = [*self.parameters(), self.base.in_proj_weight, self.base.out_proj.weight]
        return tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)

    def train(self, mode: bool = True) -> LoRAAttention:
        self._merged.clear()
        return super().train(mode)


def keep_masks(n: int, x: torch.Tensor, p: float) -> torch.Tensor:
    """n independent dropout keep masks [n, *x.shape] (bool, True with probability 1 - p).
    Where 256 p is a whole number (the official 0.25) one random byte per element gives that
    probability exactly, at under half the cost of a float draw."""
    shape = (n, *x.shape)
    if (256 * p).is_integer():
        return torch.empty(shape, dtype=torch.uint8, device=x.device).random_() >= int(256 * p)
    return torch.rand(shape, device=x.device) >= p


class _DroppedLowRank(torch.autograd.Function):
    """`low[:, i r:(i + 1) r] = scale * (x * keep[i]) A_i^T` for the n row blocks A_i of `a`
    [n r, E]: dropout then the A product of n projections, saving `x` once and the boolean
    masks for backward (not n dropped copies of `x`, as nn.Dropout followed by F.linear)."""

    @staticmethod
    def forward(ctx, x, a, keep, scale):  # x [M, E], a [n r, E], keep [n, M, E] bool
        ctx.save_for_backward(x, a, keep)
        ctx.scale = scale
        lows = [(x * k) @ a_i.t() for k, a_i in zip(keep, a.chunk(len(keep)), strict=True)]
        return torch.cat(lows, dim=1).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        x, a, keep = ctx.saved_tensors
        pairs = list(zip(keep, a.chunk(len(keep)), grad.chunk(len(keep), dim=1), strict=True))
        grad_x = grad_a = None
        if ctx.needs_input_grad[0]:
            grad_x = sum((g @ a_i) * k for k, a_i, g in pairs) * ctx.scale
        if ctx.needs_input_grad[1]:
            grad_a = torch.cat([g.t() @ (x * k) for k, _, g in pairs]) * ctx.scale
        return grad_x, grad_a, None, None


def _heads_attention(q, k, v, heads: int, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """Multi-head scaled dot-product attention of [N, L, E] projections with an additive (or
    boolean, True = masked) `attn_mask` [L, S] or [N * heads, L, S], as nn.MultiheadAttention."""
    n, length, width = q.shape
    q, k, v = (t.reshape(n, -1, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, -math.inf)
        attn_mask = attn_mask.to(q.dtype)
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.reshape(n, heads, length, -1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return out.transpose(1, 2).reshape(n, length, width)


def _lora_modules(blocks: nn.ModuleList, config: CLIPLoRAConfig, where: str) -> nn.ModuleDict:
    indices = blocks_at(config.position, len(blocks))
    if not indices:
        raise MethodError(
            f"position {config.position!r} selects no block of the {len(blocks)}-block {where} "
            "tower; use position 'all'"
        )
    return nn.ModuleDict({str(i): LoRAAttention(blocks[i].attn, config, where) for i in indices})


@register_method
class CLIPLoRA(PromptMethod):
    """CLIP with low-rank updates of its attention projections; only A and B are learned."""

    name: ClassVar[str] = "clip_lora"
    config_class: ClassVar[type[MethodConfig]] = CLIPLoRAConfig
    uses_dataset_template: ClassVar[bool] = False  # "a photo of a {}." everywhere (official)
    config: CLIPLoRAConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: CLIPLoRAConfig) -> None:
        super().__init__(clip, classnames, config)
        widths = {"text": [clip.text_width], "vision": [clip.vision_width],
                  "both": [clip.text_width, clip.vision_width]}[config.encoder]  # fmt: skip
        if config.rank > min(widths):
            raise MethodError(
                f"rank={config.rank} is above the attention width {min(widths)} of {clip.name}: "
                f"such an update is no longer low-rank (official rank 2); use at most {min(widths)}"
            )
        # text first, then vision: the official order of the LoRA modules (and of their init)
        self.lora_text = (
            _lora_modules(clip.text_blocks, config, "text")
            if config.encoder in ("text", "both")
            else nn.ModuleDict()
        )
        if config.encoder in ("vision", "both") and not clip.is_vit:
            raise MethodError(
                f"encoder {config.encoder!r} puts LoRA in the image tower, which needs a ViT; "
                f"{clip.name} has none (use encoder 'text')"
            )
        self.lora_vision = (
            _lora_modules(clip.vision_blocks, config, "vision")
            if config.encoder in ("vision", "both")
            else nn.ModuleDict()
        )
        self._text_cache = KeyedCache()

    @contextmanager
    def _lora_in_blocks(self, blocks: nn.ModuleList, lora: nn.ModuleDict) -> Iterator[None]:
        """The LoRA attention in place of the selected blocks' attention, restored after."""
        try:
            for i, module in lora.items():
                blocks[int(i)]._modules["attn"] = module
            yield
        finally:
            for i, module in lora.items():
                blocks[int(i)]._modules["attn"] = module.base

    def text_features(self) -> torch.Tensor:
        """Normalised features [C, E] of the template for every class, through the text LoRA:
        recomputed at every training step (official), cached in eval mode without autograd."""
        if not self.lora_text:
            return self.zeroshot_text_features()
        if self.training or torch.is_grad_enabled():
            return self._encode_template()
        versions = [(p._version, p.data_ptr()) for p in self.lora_text.parameters()]
        key = features_key(self.clip, self.classnames, self.config.template, *versions)
        return self._text_cache.get(key, self._encode_template)

    def _encode_template(self) -> torch.Tensor:
        texts = [self.config.template.format(c.replace("_", " ")) for c in self.classnames]
        tokens = tokenize_checked(self.clip, texts, "prompt", TEMPLATE_HINT)
        eot = tokens.argmax(dim=-1)
        # the causal mask: no EOT output depends on the positions after it, so the prompts are
        # encoded up to the longest EOT only (the official encodes all 77 positions)
        if self.config.implementation == "fast":
            tokens = tokens[:, : int(eot.max()) + 1]
        embeddings = self.clip.token_embedding(tokens)
        with self._lora_in_blocks(self.clip.text_blocks, self.lora_text):
            return F.normalize(self.clip.encode_text_embeddings(embeddings, eot), dim=-1)

    def lora_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features [B, E] through the vision LoRA (frozen without it)."""
        if not self.lora_vision:
            return self.image_features(images)
        with self._lora_in_blocks(self.clip.vision_blocks, self.lora_vision):
            return self.clip.encode_image(images, normalize=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        text = self.class_side()
        image = self.lora_image_features(images)
        with full_precision(image.device):
            scale = self.config.logit_scale or self.clip.logit_scale.float()
            return scale * image.float() @ text.float().t()

    def train(self, mode: bool = True) -> CLIPLoRA:
        self._text_cache.clear()
        return super().train(mode)
