"""Running frozen open_clip transformer blocks piece by piece: whole sequences that also hand back
their keys and values, and extra "read-only" rows that attend to those cached keys and values.
Each way comes as a function of one block and as a per-layer hook for the towers' loops
(`ClipBackbone.run_text_layers` / `run_vision_layers`): `CollectKeyValues`, `ReadOnlyRows`,
`SharedPrefixRows`.

Why: when extra tokens (RPO's prompts) read the frozen tokens but no frozen token reads them, the
frozen tokens' per-layer states are plain frozen CLIP. They can be computed once without autograd
(`block_forward_with_kv`), and the extra rows then go through each block alone, attending to the
cached keys/values (`readonly_rows_forward`), so backward touches only those rows.

Both functions use the block's own weights (`ln_1`, `attn.in_proj_*`, `attn.out_proj`, `ls_1`,
`ln_2`, `mlp`, `ls_2`) and compute what `ResidualAttentionBlock.forward` computes, to float
tolerance. They support open_clip's default block (`ResidualAttentionBlock` around a batch-first
`nn.MultiheadAttention`); `check_block` says when a block is of another kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt import onnx_attention


@dataclass
class KeyValues:
    """One layer's keys and values, split into heads: [batch, heads, tokens, head_dim]."""

    k: torch.Tensor
    v: torch.Tensor


def check_block(block: nn.Module) -> str | None:
    """None when `block` is a plain open_clip block these functions run exactly; otherwise why
    not (a one-line reason)."""
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention):
        return f"{type(block).__name__} has no nn.MultiheadAttention `attn`"
    if not attn.batch_first:
        return "its attention is not batch_first"
    if not attn._qkv_same_embed_dim or attn.in_proj_weight is None:
        return "its attention has separate q/k/v projections"
    if attn.bias_k is not None or attn.add_zero_attn:
        return "its attention adds bias_k/zero attention"
    if hasattr(block, "ln_1_kv"):
        return "it is a cross-attention block"
    for name in ("ln_1", "ln_2", "mlp", "ls_1", "ls_2"):
        if not hasattr(block, name):
            return f"it has no `{name}`"
    return None


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, D] -> [B, H, S, D/H]."""
    b, s, d = x.shape
    return x.reshape(b, s, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, H, S, hd] -> [B, S, H*hd]."""
    b, h, s, hd = x.shape
    return x.transpose(1, 2).reshape(b, s, h * hd)


def _finish(block: nn.Module, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """Output projection, residuals and MLP of a block, given the attention output per head."""
    return _finish_merged(block, x, _merge(attended))


def _finish_merged(block: nn.Module, x: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
    """`_finish` given the attention output with the heads merged, [B, S, D]."""
    x = x + block.ls_1(block.attn.out_proj(merged))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def block_forward_with_kv(
    block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, KeyValues]:
    """`block(x, attn_mask=attn_mask)` for batch-first `x` [B, S, D], also returning the layer's
    keys and values (the ones every row of `x` attended to). `attn_mask` is additive,
    broadcastable to [B, H, S, S]."""
    attn = block.attn
    heads = attn.num_heads
    h = block.ln_1(x)
    if attn_mask is None and onnx_attention.fusing() and onnx_attention.fusable(attn):
        merged, k, v = onnx_attention.self_attention_with_kv(h, attn)  # one operator in ONNX
        return _finish_merged(block, x, merged), KeyValues(k, v)
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    mask = attn_mask.to(q.dtype) if attn_mask is not None else None
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return _finish(block, x, attended), KeyValues(k, v)


def readonly_rows_forward(
    block: nn.Module,
    rows: torch.Tensor,
    kv: KeyValues,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows [B, R, D] through `block`, attending only to the frozen keys/values `kv` (never to
    themselves or to each other). `key_mask` (additive, broadcastable to [B, H, R, S]) hides
    keys, e.g. a class's padding. Equal to those rows' outputs in a full-sequence forward whose
    mask gives them exactly these columns."""
    attn = block.attn
    d = rows.shape[-1]
    bias = attn.in_proj_bias[:d] if attn.in_proj_bias is not None else None
    q = _heads(F.linear(block.ln_1(rows), attn.in_proj_weight[:d], bias), attn.num_heads)
    mask = key_mask.to(q.dtype) if key_mask is not None else None
    attended = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=mask)
    return _finish(block, rows, attended)


def prefixed_rows_forward(
    block: nn.Module, rows: torch.Tensor, prefix_kv: KeyValues, attn_mask: torch.Tensor
) -> torch.Tensor:
    """Rows [B, S, D] through `block` as positions after a shared prefix: each row attends to the
    prefix's keys/values `prefix_kv` ([1 or B, H, P, head_dim], computed once for all rows) and to
    the rows' own keys/values as `attn_mask` ([S, P + S] additive, e.g. causal) allows. Equal to
    those rows' outputs in a full-sequence forward of `prefix + rows` with that mask (the prefix
    positions' outputs do not depend on the rows when the mask is causal)."""
    attn = block.attn
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(rows), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    batch = rows.shape[0]
    keys = torch.cat([prefix_kv.k.expand(batch, -1, -1, -1), k], dim=2)
    values = torch.cat([prefix_kv.v.expand(batch, -1, -1, -1), v], dim=2)
    attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask.to(q.dtype))
    return _finish(block, rows, attended)


def block_keys_values(block: nn.Module, x: torch.Tensor) -> KeyValues:
    """The keys and values of `x` [B, S, D] at `block` (ln_1 and the k/v projections only):
    what later rows read of positions whose own outputs are not needed."""
    attn = block.attn
    d = x.shape[-1]
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    kv = F.linear(block.ln_1(x), weight[d:], bias[d:] if bias is not None else None)
    k, v = (_heads(t, attn.num_heads) for t in kv.chunk(2, dim=-1))
    return KeyValues(k, v)


def pooled_rows_forward(
    block: nn.Module,
    x: torch.Tensor,
    rows: torch.Tensor | None,
    attn_mask: torch.Tensor | None = None,
    prefix_kv: KeyValues | None = None,
) -> torch.Tensor:
    """The output [B, 1, D] of one row per sequence of `block(x, attn_mask=attn_mask)`: row
    `rows[b]` of sequence b (None: row 0, the CLS token). At a tower's last block only the
    pooled row (CLS, or a text's EOS) is read, so the other rows' queries, attention outputs and
    MLP need not be computed; every row still gives its key and value. `attn_mask` [S, S]
    additive (its row `rows[b]` applies) or None. With `prefix_kv` ([1 or B, H, P, head_dim]: a
    shared prefix's keys/values, as `prefixed_rows_forward`), `x` holds the positions after the
    prefix and `attn_mask` is [S, P + S]."""
    attn = block.attn
    d = x.shape[-1]
    h = block.ln_1(x)
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    kv = F.linear(h, weight[d:], bias[d:] if bias is not None else None)
    k, v = (_heads(t, attn.num_heads) for t in kv.chunk(2, dim=-1))
    if prefix_kv is not None:
        k = torch.cat([prefix_kv.k.expand(x.shape[0], -1, -1, -1), k], dim=2)
        v = torch.cat([prefix_kv.v.expand(x.shape[0], -1, -1, -1), v], dim=2)
    if rows is None:  # the CLS token: a slice, not a gather (lighter in an exported graph)
        row_in, row_h = x[:, :1], h[:, :1]
        mask = None if attn_mask is None else attn_mask[:1][None, None]
    else:
        batch = torch.arange(x.shape[0], device=x.device)
        row_in, row_h = x[batch, rows][:, None], h[batch, rows][:, None]
        mask = None if attn_mask is None else attn_mask[rows][:, None, None, :]
    q = _heads(F.linear(row_h, weight[:d], bias[:d] if bias is not None else None), attn.num_heads)
    mask = None if mask is None else mask.to(q.dtype)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return _finish(block, row_in, attended)


# ---- the same, as per-layer hooks of `ClipBackbone.run_text_layers` / `run_vision_layers` -------
@dataclass
class CollectKeyValues:
    """Hook: each block as usual (`block_forward_with_kv`), keeping its keys/values in `kv`
    (one entry per layer, in order)."""

    kv: list[KeyValues] = field(default_factory=list)

    def __call__(
        self, i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        x, kv = block_forward_with_kv(block, x, mask)
        self.kv.append(kv)
        return x


@dataclass
class ReadOnlyRows:
    """Hook: the loop's tokens are read-only rows; at block i they attend only to the cached
    keys/values `kv[i]` (`readonly_rows_forward`), and the loop's mask is the key mask."""

    kv: list[KeyValues]

    def __call__(
        self, i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        return readonly_rows_forward(block, x, self.kv[i], mask)


@dataclass
class SharedPrefixRows:
    """Hook: the loop's tokens are positions after a `prefix` [1, P, D] that every sequence
    shares. At each block the prefix goes through alone, under `prefix_mask` [P, P], and the
    rows attend to its keys/values and their own (`prefixed_rows_forward`) under the loop's mask
    [S, P + S]. `prefix` holds the prefix's state after the blocks run so far."""

    prefix: torch.Tensor
    prefix_mask: torch.Tensor | None

    def __call__(
        self, i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        self.prefix, kv = block_forward_with_kv(block, self.prefix, self.prefix_mask)
        return prefixed_rows_forward(block, x, kv, mask)
