"""vlprompt.attention: frozen blocks run piece by piece equal open_clip's own block forward."""

from __future__ import annotations

import torch
from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock

from vlprompt.attention import block_forward_with_kv, check_block, readonly_rows_forward


def _block(width: int = 24, heads: int = 3) -> ResidualAttentionBlock:
    block = ResidualAttentionBlock(width, heads).eval()
    with torch.no_grad():  # LayerNorms start at 1/0: perturb every weight
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


def test_block_forward_with_kv_equals_block_and_returns_its_keys_values():
    block = _block()
    x = torch.randn(2, 7, 24)
    causal = torch.full((7, 7), float("-inf")).triu(1)
    out, kv = block_forward_with_kv(block, x, causal)
    torch.testing.assert_close(out, block(x, attn_mask=causal), atol=1e-5, rtol=0)
    _, k, v = torch.nn.functional.linear(
        block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias
    ).chunk(3, dim=-1)
    torch.testing.assert_close(kv.k, k.reshape(2, 7, 3, 8).transpose(1, 2))
    torch.testing.assert_close(kv.v, v.reshape(2, 7, 3, 8).transpose(1, 2))


def test_readonly_rows_equal_their_rows_in_a_full_masked_forward():
    """Rows appended after the sequence, seeing every original column but no appended one
    (themselves included), equal the same rows of a full forward with that mask."""
    block = _block()
    x, rows = torch.randn(2, 6, 24), torch.randn(2, 4, 24)
    _, kv = block_forward_with_kv(block, x)
    full_mask = torch.zeros(10, 10)
    full_mask[:, 6:] = float("-inf")
    full = block(torch.cat([x, rows], dim=1), attn_mask=full_mask)
    torch.testing.assert_close(
        readonly_rows_forward(block, rows, kv), full[:, 6:], atol=1e-5, rtol=0
    )
    # with a key mask hiding the last two columns of the second sequence only
    key_mask = torch.zeros(2, 1, 1, 6)
    key_mask[1, ..., 4:] = float("-inf")
    full_mask = full_mask.repeat(2, 1, 1)
    full_mask[1, :, 4:6] = float("-inf")
    full_mask = full_mask.repeat_interleave(3, dim=0)  # [B*heads, L, L], batch-major
    full = block(torch.cat([x, rows], dim=1), attn_mask=full_mask)
    torch.testing.assert_close(
        readonly_rows_forward(block, rows, kv, key_mask), full[:, 6:], atol=1e-5, rtol=0
    )


def test_check_block_accepts_open_clip_default_and_names_other_blocks():
    assert check_block(_block()) is None
    reason = check_block(CustomResidualAttentionBlock(16, 2))
    assert reason is not None and "MultiheadAttention" in reason


def test_the_fused_export_path_computes_the_same_block_and_keys_values(monkeypatch):
    """Inside `fused_attention` (ONNX export), an unmasked `block_forward_with_kv` takes the
    fused operator's torch code (once, only there): the same output and keys/values."""
    from vlprompt import onnx_attention

    calls = []
    apply = onnx_attention.PackedSelfAttentionWithKV.apply
    monkeypatch.setattr(
        onnx_attention.PackedSelfAttentionWithKV, "apply", lambda *a: calls.append(1) or apply(*a)
    )
    block = _block()
    x = torch.randn(2, 7, 24)
    with torch.no_grad():
        out, kv = block_forward_with_kv(block, x)
        assert calls == []
        with onnx_attention.fused_attention(block):
            fused_out, fused_kv = block_forward_with_kv(block, x)
    assert calls == [1]
    torch.testing.assert_close(fused_out, out, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused_kv.k, kv.k, atol=1e-6, rtol=0)
    torch.testing.assert_close(fused_kv.v, kv.v, atol=1e-6, rtol=0)
