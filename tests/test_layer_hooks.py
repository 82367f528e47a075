"""The towers' layer-wise encoders (`ClipBackbone.run_text_layers` / `run_vision_layers`) and
their per-layer hooks: deep prompts (`ReplaceTokens`: inserted at layer 0, replaced at each of the
first J layers) at J=1 equal prompts concatenated at the input and carried by open_clip's own
blocks; deeper ones are in place at each block's input; the attention hooks match full blocks."""

from __future__ import annotations

import pytest
import torch

from conftest import VIT_SHAPES
from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt.attention import CollectKeyValues, ReadOnlyRows
from vlprompt.backbone import ReplaceTokens

K = 3


def _vision_input(clip, n: int = 2) -> torch.Tensor:
    images = torch.randn(n, 3, clip.image_size, clip.image_size)
    return clip.vision_ln_pre(clip.vision_embed(images))


def _block_inputs(blocks) -> tuple[list[torch.Tensor], list]:
    seen: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for b in blocks]
    return seen, hooks


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_deep_vision_prompts_at_depth_1_equal_prompts_concatenated_at_the_input(name):
    clip = _clip(name)
    x = _vision_input(clip)
    prompts = torch.randn(K, clip.vision_width)
    with torch.no_grad():
        ours = clip.run_vision_layers(x, hook=ReplaceTokens([prompts], insert=True))
        x_in = torch.cat([x, prompts.expand(x.shape[0], -1, -1)], dim=1)
        theirs = clip.model.visual.transformer(x_in)  # open_clip's own blocks
    assert ours.shape == (x.shape[0], x.shape[1] + K, clip.vision_width)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_deep_text_prompts_at_depth_1_equal_prompts_at_the_input(name):
    """Text deep prompts replace positions 1..K (after SOS) under CLIP's causal mask."""
    clip = _clip(name)
    tokens = clip.tokenize(["X X X a photo of a cat.", "X X X x"])
    x = clip.token_embedding(tokens) + clip.text_positional_embedding
    mask = clip.text_causal_mask()
    prompts = torch.randn(2, K, clip.text_width)  # per sequence ([B, k, D]) also works
    with torch.no_grad():
        ours = clip.run_text_layers(x, mask, ReplaceTokens([prompts], start=1))
        x_in = torch.cat([x[:, :1], prompts, x[:, 1 + K :]], dim=1)
        theirs = clip.model.transformer(x_in, attn_mask=mask)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_deeper_prompts_replace_the_previous_layers_prompt_outputs():
    """At depth J, block i < J sees layer i's prompts in the prompt positions and the previous
    block's output everywhere else; blocks from J on run on what came out."""
    clip = _clip("vlprompt-test-vit-d")  # 2 vision blocks, 3 text blocks
    x = _vision_input(clip)
    deep = [torch.randn(K, clip.vision_width) for _ in range(2)]
    seen, hooks = _block_inputs(clip.vision_blocks)
    with torch.no_grad():
        out = clip.run_vision_layers(x, hook=ReplaceTokens(deep, insert=True))
    for h in hooks:
        h.remove()
    n = x.shape[1]
    with torch.no_grad():
        after_0 = clip.vision_blocks[0](seen[0])
    torch.testing.assert_close(seen[0][:, n:], deep[0].expand(2, -1, -1), atol=0, rtol=0)
    torch.testing.assert_close(seen[1][:, n:], deep[1].expand(2, -1, -1), atol=0, rtol=0)
    torch.testing.assert_close(seen[1][:, :n], after_0[:, :n], atol=1e-6, rtol=0)
    torch.testing.assert_close(out, clip.vision_blocks[1](seen[1]), atol=1e-6, rtol=0)

    tokens = clip.tokenize(["X X X a photo of a cat."])
    t = clip.token_embedding(tokens) + clip.text_positional_embedding
    text_deep = [torch.randn(K, clip.text_width) for _ in range(2)]  # depth 2 of 3 blocks
    seen, hooks = _block_inputs(clip.text_blocks)
    with torch.no_grad():
        clip.run_text_layers(t, clip.text_causal_mask(), ReplaceTokens(text_deep, start=1))
    for h in hooks:
        h.remove()
    assert len(seen) == 3
    for i in range(2):
        torch.testing.assert_close(seen[i][0, 1 : 1 + K], text_deep[i], atol=0, rtol=0)
    assert not torch.equal(seen[2][0, 1 : 1 + K], text_deep[1])  # block 2 sees block 1's output


def test_deep_prompts_get_gradients_at_every_depth(tiny_clip):
    x = _vision_input(tiny_clip)
    deep = [torch.randn(K, tiny_clip.vision_width, requires_grad=True) for _ in range(2)]
    out = tiny_clip.run_vision_layers(x, hook=ReplaceTokens(deep, insert=True))
    tiny_clip.vision_head(out[:, 0]).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deep)


def test_replacing_outside_the_sequence_is_an_error(tiny_clip):
    x = _vision_input(tiny_clip)
    with pytest.raises(ValueError, match="outside"):
        tiny_clip.run_vision_layers(x, hook=ReplaceTokens([torch.zeros(K, 64)], start=x.shape[1]))


def test_attention_hooks_equal_the_full_masked_forward(tiny_clip):
    """Frozen tokens through `CollectKeyValues`, then prompt rows through `ReadOnlyRows`, equal
    the rows of one full forward in which no row attends to a prompt (RPO's two paths)."""
    clip = tiny_clip
    x = _vision_input(clip)
    rows = torch.randn(K, clip.vision_width).expand(x.shape[0], -1, -1)
    with torch.no_grad():
        collect = CollectKeyValues()
        frozen = clip.run_vision_layers(x, None, collect)
        out = clip.run_vision_layers(rows, None, ReadOnlyRows(collect.kv))
        n = x.shape[1]
        mask = torch.zeros(n + K, n + K)
        mask[:, n:] = float("-inf")
        full = clip.run_vision_layers(torch.cat([x, rows], dim=1), mask)
    assert len(collect.kv) == len(clip.vision_blocks)
    torch.testing.assert_close(frozen, clip.model.visual.transformer(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, full[:, n:], atol=1e-5, rtol=0)
    torch.testing.assert_close(frozen, full[:, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_pooled_rows_equal_those_rows_of_the_full_block(name):
    """A tower's last block computed for its pooled row only (CLS, or each text's EOS) equals
    that row of the full block, in value and in the gradient reaching the block's input."""
    from vlprompt.attention import pooled_rows_forward

    clip = _clip(name)
    torch.manual_seed(0)
    block = clip.vision_blocks[-1]
    x = torch.randn(3, 7, clip.vision_width, requires_grad=True)
    ours = pooled_rows_forward(block, x, None)[:, 0]
    theirs = block(x)[:, 0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_theirs,) = torch.autograd.grad(theirs.square().sum(), x)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-5, rtol=0)

    block, mask = clip.text_blocks[-1], clip.text_causal_mask(9)
    t = torch.randn(3, 9, clip.text_width)
    rows = torch.tensor([8, 2, 5])
    ours = pooled_rows_forward(block, t, rows, mask)[:, 0]
    theirs = block(t, attn_mask=mask)[torch.arange(3), rows]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
