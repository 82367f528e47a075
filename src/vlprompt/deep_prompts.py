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
`pooled_rows_forward`); and, for PromptSRC, the frozen features its regulariser and teacher
need come from the frozen pass (cached).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlprompt.attention import check_block, pooled_rows_forward
from vlprompt.backbone import ClipBackbone, ReplaceTokens
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


def deep_text_features(
    clip: ClipBackbone,
    prompts: torch.Tensor,
    eot_index: torch.Tensor,
    deep: Sequence[torch.Tensor],
    start: int = 1,
    pooled_only: bool = True,
) -> torch.Tensor:
    """Text features (ln_final + projection at EOS, not normalised) [N, E] of prompt embeddings
    [N, L, D] that hold block 0's context at positions start..start+n-1; `deep[j]` ([n, D] or
    [N, n, D]) replaces those positions at the input of block j + 1. `pooled_only`: the last
    block computes the EOS rows only (exact; False = every row, the plain path)."""
    blocks = clip.text_blocks
    n = prompts.shape[1]
    x = prompts + clip.text_positional_embedding[:n].to(prompts.dtype)
    hook = DeepPromptHook(
        ReplaceTokens(list(deep), start=start, first_block=1),
        len(blocks) - 1,
        _pooled_only(blocks, pooled_only),
        eot_index,
    )
    x = clip.run_text_layers(x, clip.text_causal_mask(n), hook)
    pooled = x[:, 0] if hook.pooled_only else x[torch.arange(x.shape[0]), eot_index]
    return clip.text_head(pooled)


def chunked_deep_text_features(
    clip: ClipBackbone,
    prompts: torch.Tensor,
    eot_index: torch.Tensor,
    deep: Sequence[torch.Tensor],
    chunk_size: int,
    checkpoint_mode: str = "auto",
) -> torch.Tensor:
    """`deep_text_features` (pooled rows only) of `chunk_size` classes at a time, each chunk
    cut at its own longest EOS: the same numbers (the classes do not interact and the mask is
    causal). Chunks and checkpointing: `vlprompt.chunking.encode_in_chunks`."""

    def encode(rows: slice) -> torch.Tensor:
        eot = eot_index[rows]
        chunk = prompts[rows, : int(eot.max()) + 1]
        parts = [d[rows] if d.dim() == 3 else d for d in deep]  # per-class deep prompts: sliced
        return deep_text_features(clip, chunk, eot, parts, pooled_only=True)

    return encode_in_chunks(encode, prompts.shape[0], chunk_size, checkpoint_mode)


class DeepTextFeaturesMixin:
    """`text_features` of a method whose class prompts carry deep text prompts (IVLP, PromptSRC,
    MaPLe): the fast path (`chunked_deep_text_features`) or the plain reference (full length,
    every row), by `self.fast`. The method gives `prompt_embeddings()`, `eot_index`,
    `deep_text_prompts()` and a config with `text_chunk_size` and `text_checkpoint`."""

    def deep_text_prompts(self) -> list[torch.Tensor]:
        """The tensors that replace the context at the input of text blocks 1.. (in order)."""
        raise NotImplementedError

    def text_features(self) -> torch.Tensor:
        """Normalised text features [C, E] of the prompted class prompts."""
        prompts, deep = self.prompt_embeddings(), self.deep_text_prompts()
        if self.fast:
            cfg = self.config
            feats = chunked_deep_text_features(
                self.clip, prompts, self.eot_index, deep, cfg.text_chunk_size, cfg.text_checkpoint
            )
        else:
            feats = deep_text_features(self.clip, prompts, self.eot_index, deep, pooled_only=False)
        return nn.functional.normalize(feats, dim=-1)


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
    x = clip.vision_ln_pre(torch.cat([x, p], dim=1))
    blocks = clip.vision_blocks
    hook = DeepPromptHook(
        ReplaceTokens(list(deep), start=None, first_block=1),
        len(blocks) - 1,
        _pooled_only(blocks, pooled_only),
    )
    x = clip.run_vision_layers(x, hook=hook)
    return clip.vision_head(x[:, 0])
