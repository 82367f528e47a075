"""Self-attention as onnxruntime's fused `Attention` operator in an exported ONNX graph.

The TorchScript-based ONNX exporter writes a `nn.MultiheadAttention` call as its parts: the
packed q/k/v projection, a split with reshapes and transposes, two MatMuls around a Softmax, a
transpose back. onnxruntime runs them one by one, and on one CPU thread at batch 32 a ViT-B/16
took 1.13x torch's time that way (`benchmarks/export_speed.py`), most of the excess in those
transposes, splits and bias additions. onnxruntime's contrib operator `com.microsoft.Attention`
(CPU and CUDA providers, in every onnxruntime build) does the projection with its bias, the
heads, the scaled softmax and the merge back to [B, S, D] in one kernel. onnxruntime's
transformer optimizer would insert it, but its patterns do not match this exporter's graph, so
the export writes it directly: inside `fused_attention(model)` every self-attention call of a
`nn.MultiheadAttention` of the model without a mask (an image tower's blocks) goes through
`PackedSelfAttention`, whose torch forward computes that attention (what the tracer runs, so
the traced values are the module's) and whose ONNX form is the one operator. Any other call (a
mask, cross-attention, attention weights asked for) runs the module's own forward, unfused.
`vlprompt.attention.block_forward_with_kv` (RPO's frozen tokens, which also hand their keys and
values to the prompt rows) asks `fusing()` and then uses `self_attention_with_kv`: the same
operator, whose `present` output holds those keys and values.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DOMAIN = "com.microsoft"
DOMAIN_VERSION = 1
_FUSING = contextvars.ContextVar("vlprompt_fusing_attention", default=False)


def fusing() -> bool:
    """True inside `fused_attention`: functions that compute a block's attention themselves
    may use `self_attention_with_kv`."""
    return _FUSING.get()


def _packed_attention(
    x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attention output [B, S, D] (heads merged), keys and values [B, H, S, D/H]."""
    b, s, d = x.shape
    q, k, v = (x @ weight_t + bias).reshape(b, s, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, d), k, v


class PackedSelfAttention(torch.autograd.Function):
    """x [B, S, D] -> softmax(q k^T / sqrt(D/H)) v with the heads merged back, [B, S, D], where
    q, k, v = x @ weight_t + bias split in three (`weight_t` [D, 3D]: the transposed
    `in_proj_weight`). The output projection is not included (as in `com.microsoft.Attention`)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor,
                heads: int) -> torch.Tensor:  # fmt: skip
        return _packed_attention(x, weight_t, bias, heads)[0]

    @staticmethod
    def symbolic(g: Any, x: Any, weight_t: Any, bias: Any, heads: int) -> Any:
        out = g.op(f"{DOMAIN}::Attention", x, weight_t, bias, num_heads_i=heads)
        out.setType(x.type())
        return out


class PackedSelfAttentionWithKV(torch.autograd.Function):
    """`PackedSelfAttention` that also returns the keys and values split into heads,
    [B, H, S, D/H] each: in ONNX, the `present` output of the same operator ([2, B, H, S, D/H])."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor,
                heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        return _packed_attention(x, weight_t, bias, heads)

    @staticmethod
    def symbolic(g: Any, x: Any, weight_t: Any, bias: Any, heads: int) -> Any:
        out, present = g.op(f"{DOMAIN}::Attention", x, weight_t, bias, num_heads_i=heads, outputs=2)
        out.setType(x.type())
        present.setType(x.type().with_sizes([2, None, heads, None, None]))
        k, v = (
            g.op("Gather", present, g.op("Constant", value_t=torch.tensor(i)), axis_i=0)
            for i in (0, 1)
        )
        for t in (k, v):
            t.setType(x.type().with_sizes([None, heads, None, None]))
        return out, k, v


def self_attention_with_kv(
    x: torch.Tensor, attn: nn.MultiheadAttention
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attention of the (normalised) tokens `x` [B, S, D] through `attn` before its output
    projection, [B, S, D], and their keys and values [B, H, S, D/H]; one fused operator in ONNX.
    `attn` must be `fusable`."""
    return PackedSelfAttentionWithKV.apply(x, attn.in_proj_weight.t(), attn.in_proj_bias,
                                           attn.num_heads)  # fmt: skip


def fusable(attn: nn.MultiheadAttention) -> bool:
    """A batch-first attention with one packed, biased q/k/v projection and nothing added to
    keys: the layout `com.microsoft.Attention` takes (open_clip's blocks)."""
    return (
        attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.in_proj_weight is not None
        and attn.in_proj_bias is not None
        and attn.bias_k is None
        and not attn.add_zero_attn
        and attn.embed_dim % attn.num_heads == 0
    )


def _fused_forward(self: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                   need_weights: bool = True, attn_mask: torch.Tensor | None = None,
                   average_attn_weights: bool = True, is_causal: bool = False) -> Any:  # fmt: skip
    """`nn.MultiheadAttention.forward`, through `PackedSelfAttention` for a plain self-attention
    call (eval mode, the same tensor as query, key and value, no mask, no weights)."""
    plain = key_padding_mask is None and attn_mask is None and not is_causal and not need_weights
    if plain and query is key and key is value and query.dim() == 3 and not self.training:
        out = PackedSelfAttention.apply(
            query, self.in_proj_weight.t(), self.in_proj_bias, self.num_heads
        )
        return F.linear(out, self.out_proj.weight, self.out_proj.bias), None
    return nn.MultiheadAttention.forward(
        self, query, key, value, key_padding_mask, need_weights, attn_mask,
        average_attn_weights, is_causal,
    )  # fmt: skip


@contextlib.contextmanager
def fused_attention(model: nn.Module) -> Iterator[int]:
    """Inside: every fusable `nn.MultiheadAttention` of `model` exports its plain
    self-attention calls as `com.microsoft.Attention`, and `fusing()` is True; yields how many
    modules were switched. The modules are restored on exit."""
    switched = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention) and fusable(m)]
    for module in switched:
        module.forward = types.MethodType(_fused_forward, module)  # type: ignore[method-assign]
    token = _FUSING.set(True)
    try:
        yield len(switched)
    finally:
        _FUSING.reset(token)
        for module in switched:
            del module.forward
