"""Deep prompts: learned tokens at the input of the first J blocks of a frozen tower (IVLP,
PromptSRC, MaPLe), with every size read from the backbone.

The method places block 0's prompts in the tower's input itself:
- text: the context vectors sit in the prompt embeddings (e.g. positions 1..n after SOS) and get
  the positional embedding like every token;
- vision: the prompts are appended after CLS + patches, after the positional embedding and
  before `ln_pre` (which applies to them too).

At the input of blocks 1..J-1 the same positions are *replaced* by that block's learned tokens
(no positional embedding, no ln_pre); blocks J.. carry what block J-1 returned. This is what the
official codes' `ResidualAttentionBlock_IVLP` / `ResidualAttentionBlock_MaPLe`
(muzairkhattak/PromptSRC and multimodal-prompt-learning, `clip/model.py`) do; here it is one
`ReplaceTokens` hook on open_clip's own blocks. The text tower still runs only up to the longest
EOS (exact under the causal mask: no position before an EOS reads a later one).

Why there is no RPO-style row trick: a deep prompt is read by every frozen token, so every
token's state changes at every block and the whole sequence must be recomputed and
differentiated. What is exact and cheaper: the text runs only up to the longest EOS; the last
block of each tower computes only the row its head reads (CLS, or each text's EOS: every row
still gives its key and value, but the other rows' queries, attention and MLP are skipped,
`pooled_rows_forward`); the text positions before the class names (SOS, the context and fixed
words such as MaPLe's "of a") read only earlier positions under the causal mask and hold the same
tokens and the same deep prompts in every class, so their states are the same for every class at
every block: they go through each block once per chunk (`SharedPrefixDeepHook`) and only the
class-specific positions once per class; and, for PromptSRC, the frozen features its regulariser
and teacher need come from the frozen pass (cached).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlprompt.attention import (
    block_forward_with_kv,
    block_keys_values,
    check_block,
    pooled_rows_forward,
    prefixed_rows_forward,
)
from vlprompt.backbone import ClipBackbone, ReplaceTokens, run_layers
from vlprompt.chunking import encode_in_chunks
from vlprompt.errors import MethodError

# The official depth of IVLP, PromptSRC and MaPLe on ViT-B/16 (12 blocks per tower).
OFFICIAL_DEPTH = 9


def resolve_depth(depth: int | None, n_blocks: int, setting: str) -> int:
    """The prompt depth of a tower of `n_blocks` blocks: `depth`, or by default the official 9
    (every block of a tower with fewer, e.g. the mini world's tiny CLIP). One clear error for a
    depth below 1 or deeper than the tower."""
    if depth is None:
        return min(OFFICIAL_DEPTH, n_blocks)
    if depth < 1:
        raise MethodError(f"{setting} must be >= 1 (block 0 always holds the prompts), got {depth}")
    if depth > n_blocks:
        raise MethodError(
            f"{setting} {depth} is deeper than the tower ({n_blocks} blocks); "
            f"use {setting} <= {n_blocks}"
        )
    return depth


def normal_tokens(
    n: int, width: int, device: torch.device | str, std: float = 0.02
) -> nn.Parameter:
    """A learned [n, width] tensor initialised N(0, std^2) (the official deep-prompt init)."""
    t = torch.empty(n, width, device=device)
    nn.init.normal_(t, std=std)
    return nn.Parameter(t)


@dataclass
class DeepPromptHook:
    """Per-layer hook: `replace` puts each deep block's prompts in place; with `pooled_only`,
    the last block computes only the pooled row of each sequence (`rows`: its index per
    sequence, None = CLS), exactly what the tower's head reads (`pooled_rows_forward`)."""

    replace: ReplaceTokens
    last_block: int
    pooled_only: bool
    rows: torch.Tensor | None = None

    def __call__(
        self, i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        first = self.replace.first_block
        if first <= i < first + len(self.replace.tokens):
            x = self.replace.edit(i, x)
        if self.pooled_only and i == self.last_block:
            return pooled_rows_forward(block, x, self.rows, mask)
        return block(x, attn_mask=mask)


def _pooled_only(blocks: nn.ModuleList, wanted: bool) -> bool:
    return wanted and check_block(blocks[-1]) is None


@dataclass
class SharedPrefixDeepHook:
    """Per-layer hook: the loop's tokens are the positions after a `prefix` [1, P, D] that every
    sequence shares (its state after the blocks run so far). At each block the prefix takes that
    block's deep prompts (`replace`, positions inside the prefix), goes through alone under
    `prefix_mask` [P, P], and the rows attend to its keys/values and their own under the loop's
    mask [S, P + S] (`prefixed_rows_forward`). At `last_block` (None: none) only the row `rows[b]`
    of each sequence is computed, and of the prefix only its keys and values."""

    prefix: torch.Tensor
    prefix_mask: torch.Tensor
    replace: ReplaceTokens | None = None
    last_block: int | None = None
    rows: torch.Tensor | None = None

    def __call__(
        self, i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        replace = self.replace
        if replace is not None and 0 <= i - replace.first_block < len(replace.tokens):
            self.prefix = replace.edit(i, self.prefix)
        if i == self.last_block:
            kv = block_keys_values(block, self.prefix)
            return pooled_rows_forward(block, x, self.rows, mask, prefix_kv=kv)
        self.prefix, kv = block_forward_with_kv(block, self.prefix, self.prefix_mask)
        return prefixed_rows_forward(block, x, kv, mask)


def shared_prefix_length(layout) -> int:
    """Leading positions of a `PromptLayout`'s class prompts whose block-0 input is the same in
    every class: SOS, the (shared) context and the fixed embeddings after it up to the first
    position where two classes differ (compared by embedding: equal inputs give equal states),
    ending before every EOS."""
    suffix = layout.suffix
    same = (suffix == suffix[:1]).flatten(2).all(dim=-1).all(dim=0)
    fixed = int(same.long().cumprod(dim=0).sum())
    return min(1 + layout.n_ctx + fixed, int(layout.eot_index.min()))


def can_share_prefix(
    clip: ClipBackbone,
    prefix_len: int,
    eot_index: torch.Tensor,
    deep: Sequence[torch.Tensor],
    start: int = 1,
) -> bool:
    """Whether the shared-prefix path applies: 2+ shared positions before every EOS that hold
    every deep prompt (each one tensor for all classes, at start..start+k-1), plain open_clip
    text blocks (`vlprompt.attention.check_block`)."""
    if prefix_len < 2 or int(eot_index.min()) < prefix_len:
        return False
    if any(d.dim() != 2 or start + d.shape[0] > prefix_len for d in deep):
        return False
    return all(check_block(block) is None for block in clip.text_blocks)


def deep_text_features(
    clip: ClipBackbone,
    prompts: torch.Tensor,
    eot_index: torch.Tensor,
    deep: Sequence[torch.Tensor],
    start: int = 1,
    pooled_only: bool = True,
    shared_prefix: int = 0,
) -> torch.Tensor:
    """Text features (ln_final + projection at EOS, not normalised) [N, E] of prompt embeddings
    [N, L, D] that hold block 0's context at positions start..start+n-1; `deep[j]` ([n, D] or
    [N, n, D]) replaces those positions at the input of block j + 1. `pooled_only`: the last
    block computes the EOS rows only (exact; False = every row, the plain path).
    `shared_prefix` = P > 0: the first P positions are the same in every sequence and hold every
    deep prompt (`can_share_prefix`); they then go through the tower once (same numbers)."""
    blocks = clip.text_blocks
    n = prompts.shape[1]
    x = prompts + clip.text_positional_embedding[:n].to(prompts.dtype)
    mask = clip.text_causal_mask(n)
    replace = ReplaceTokens(list(deep), start=start, first_block=1)
    pooled = _pooled_only(blocks, pooled_only)
    p = shared_prefix
    if p > 0:
        hook = SharedPrefixDeepHook(
            x[:1, :p], mask[:p, :p], replace, len(blocks) - 1 if pooled else None, eot_index - p
        )
        x = clip.run_text_layers(x[:, p:], mask[p:], hook)
    else:
        hook = DeepPromptHook(replace, len(blocks) - 1, pooled, eot_index)
        x = clip.run_text_layers(x, mask, hook)
    rows = x[:, 0] if pooled else x[torch.arange(x.shape[0]), eot_index - p]
    return clip.text_head(rows)


def chunked_deep_text_features(
    clip: ClipBackbone,
    prompts: torch.Tensor,
    eot_index: torch.Tensor,
    deep: Sequence[torch.Tensor],
    chunk_size: int,
    checkpoint_mode: str = "auto",
    shared_prefix: int = 0,
) -> torch.Tensor:
    """`deep_text_features` (pooled rows only) of `chunk_size` classes at a time, each chunk
    cut at its own longest EOS: the same numbers (the classes do not interact and the mask is
    causal). Chunks and checkpointing: `vlprompt.chunking.encode_in_chunks`. `shared_prefix`:
    as `deep_text_features`, used where `can_share_prefix` allows (the prefix once per chunk)."""
    if not can_share_prefix(clip, shared_prefix, eot_index, deep):
        shared_prefix = 0

    def encode(rows: slice) -> torch.Tensor:
        eot = eot_index[rows]
        chunk = prompts[rows, : int(eot.max()) + 1]
        parts = [d[rows] if d.dim() == 3 else d for d in deep]  # per-class deep prompts: sliced
        return deep_text_features(
            clip, chunk, eot, parts, pooled_only=True, shared_prefix=shared_prefix
        )

    return encode_in_chunks(encode, prompts.shape[0], chunk_size, checkpoint_mode)


def injected_text_features(
    clip: ClipBackbone,
    prompts: torch.Tensor,
    eot_index: torch.Tensor,
    tokens: torch.Tensor,
    layer: int,
    shared_prefix: int,
) -> torch.Tensor:
    """Text features [N, E] (not normalised) of prompt embeddings [N, L, D] whose positions
    1..k take the per-sequence `tokens` [N, k, D] at the input of block `layer` (TCP), with the
    first `shared_prefix` positions (the same in every sequence, `can_share_prefix`) encoded once
    by the blocks before `layer`; from `layer` on every position runs per sequence, and the last
    block computes the EOS rows only. Same numbers as the plain pass (`ReplaceTokens` at
    `layer`)."""
    blocks, p = clip.text_blocks, shared_prefix
    n = prompts.shape[1]
    x = prompts + clip.text_positional_embedding[:n].to(prompts.dtype)
    mask = clip.text_causal_mask(n)
    shared = SharedPrefixDeepHook(x[:1, :p], mask[:p, :p])
    rows = run_layers(blocks[:layer], x[:, p:], mask[p:], shared)
    x = torch.cat([shared.prefix.expand(rows.shape[0], -1, -1), rows], dim=1)
    rest = blocks[layer:]
    hook = DeepPromptHook(
        ReplaceTokens([tokens], start=1), len(rest) - 1, _pooled_only(blocks, True), eot_index
    )
    x = run_layers(rest, x, mask, hook)
    pooled = x[:, 0] if hook.pooled_only else x[torch.arange(x.shape[0]), eot_index]
    return clip.text_head(pooled)


class DeepTextFeaturesMixin:
    """`text_features` of a method whose class prompts carry deep text prompts (IVLP, PromptSRC,
    MaPLe): the fast path (`chunked_deep_text_features`) or the plain reference (full length,
    every row), by `self.fast`. The method gives `prompt_embeddings()`, `eot_index`,
    `deep_text_prompts()` and a config with `text_chunk_size` and `text_checkpoint`, and a
    `layout` (`PromptLayoutMixin`); the positions its class prompts share are encoded once
    (`share_text_prefix`; False: every position per class, as before)."""

    share_text_prefix: bool = True

    def deep_text_prompts(self) -> list[torch.Tensor]:
        """The tensors that replace the context at the input of text blocks 1.. (in order)."""
        raise NotImplementedError

    def text_features(self) -> torch.Tensor:
        """Normalised text features [C, E] of the prompted class prompts."""
        return nn.functional.normalize(self.raw_text_features(), dim=-1)

    def raw_text_features(self) -> torch.Tensor:
        """The prompted class prompts' text features before normalisation [C, E]."""
        prompts, deep = self.prompt_embeddings(), self.deep_text_prompts()
        if self.fast:
            cfg = self.config
            shared = shared_prefix_length(self.layout) if self.share_text_prefix else 0
            feats = chunked_deep_text_features(
                self.clip, prompts, self.eot_index, deep, cfg.text_chunk_size,
                cfg.text_checkpoint, shared,
            )  # fmt: skip
        else:
            feats = deep_text_features(self.clip, prompts, self.eot_index, deep, pooled_only=False)
        return feats


def deep_image_features(
    clip: ClipBackbone,
    images: torch.Tensor,
    prompts: torch.Tensor,
    deep: Sequence[torch.Tensor],
    pooled_only: bool = True,
) -> torch.Tensor:
    """Image features (ln_post + projection of CLS, not normalised) [B, E]: `prompts` ([k, Dv]
    or [B, k, Dv]) appended after CLS + patches before ln_pre; `deep[j]` replaces the last k
    tokens at the input of block j + 1. `pooled_only`: the last block computes the CLS row
    only (exact; False = every row, the plain path)."""
    x = clip.vision_embed(images.to(clip.device))
    p = prompts.to(x.dtype)
    p = p.expand(x.shape[0], -1, -1) if p.dim() == 2 else p
    # ln_pre is per token: applied to the frozen tokens and the prompts apart, autograd records
    # it for the prompts only (the backward stops at the first prompted block)
    x = torch.cat([clip.vision_ln_pre(x), clip.vision_ln_pre(p)], dim=1)
    blocks = clip.vision_blocks
    hook = DeepPromptHook(
        ReplaceTokens(list(deep), start=None, first_block=1),
        len(blocks) - 1,
        _pooled_only(blocks, pooled_only),
    )
    x = clip.run_vision_layers(x, hook=hook)
    return clip.vision_head(x[:, 0])
