"""RPO's ablations as settings: `mask="none"` lets the frozen tokens read the prompts (the
paper's "without masked attention"), the default never does; `init="random"` replaces ST-init."""

from __future__ import annotations

import pytest
import torch

from vlprompt.methods import create_method
from vlprompt.methods.rpo import RPOError

NAMES = ["cat", "dog", "bird"]


def _image_token_states(method, images):
    """The last vision block's output rows of the CLS and patch tokens (prompts excluded)."""
    seen = {}
    block = method.clip.vision_blocks[-1]
    handle = block.register_forward_hook(lambda m, i, out: seen.__setitem__("x", out))
    try:
        with torch.no_grad():
            method(images)
    finally:
        handle.remove()
    return seen["x"][:, : -method.config.K]


@pytest.mark.parametrize(("mask", "tokens_read_prompts"), [("readonly", False), ("none", True)])
def test_only_the_unmasked_ablation_lets_image_tokens_read_the_prompts(
    tiny_clip, mask, tokens_read_prompts
):
    torch.manual_seed(0)
    method = create_method("rpo", tiny_clip, NAMES, K=3, mask=mask, implementation="reference")
    images = torch.randn(2, 3, 32, 32)
    before = _image_token_states(method, images)
    with torch.no_grad():
        method.vision_prompt.add_(torch.randn_like(method.vision_prompt))
    after = _image_token_states(method, images)
    assert torch.equal(before, after) is not tokens_read_prompts
    if tokens_read_prompts:
        assert (before - after).abs().max() > 1e-3


def test_the_unmasked_ablation_runs_the_full_forward_and_keeps_a_frozen_teacher(tiny_clip):
    torch.manual_seed(0)
    unmasked = create_method("rpo", tiny_clip, NAMES, K=3, mask="none")  # fast asked: full runs
    images = torch.randn(2, 3, 32, 32)
    out = unmasked.forward_train(images)
    frozen = tiny_clip.encode_image(images, normalize=True)
    torch.testing.assert_close(out.image_features, frozen, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    masked = create_method("rpo", tiny_clip, NAMES, K=3)
    assert masked.text_prompt.shape == unmasked.text_prompt.shape
    assert torch.equal(masked.text_prompt, unmasked.text_prompt)  # same init, same draws
    assert not torch.allclose(masked(images), unmasked(images))
    unmasked.backward_step(images, torch.tensor([0, 1]))
    assert unmasked.vision_prompt.grad.abs().sum() > 0


def test_random_init_is_small_gaussian_and_st_init_is_near_the_special_tokens(tiny_clip):
    torch.manual_seed(0)
    st = create_method("rpo", tiny_clip, NAMES, K=8)
    torch.manual_seed(0)
    rand = create_method("rpo", tiny_clip, NAMES, K=8, init="random")
    eot = tiny_clip.token_embedding(torch.tensor([tiny_clip.eot_token_id]))[0].detach()
    distance = (st.text_prompt.detach() - eot).norm(dim=-1)
    torch.testing.assert_close(distance, torch.full((8,), 0.1), atol=1e-5, rtol=0)
    for prompt in (rand.text_prompt, rand.vision_prompt):
        assert prompt.detach().mean().abs() < 0.01 and 0.015 < prompt.detach().std() < 0.025
    assert (rand.text_prompt.detach() - eot).norm(dim=-1).min() > 0.15  # not ST-init's 0.1


@pytest.mark.parametrize(("key", "value"), [("mask", "partial"), ("init", "zeros")])
def test_unknown_ablation_values_are_refused(tiny_clip, key, value):
    with pytest.raises(RPOError, match=f"RPO {key} must be one of"):
        create_method("rpo", tiny_clip, NAMES, **{key: value})
