"""CLIP-LoRA's packed attention (q, k, v from one product, their low-rank updates from one thin
matmul pair, dropout masks saved as booleans) against the per-projection path of the official
code (`LoRAAttention.packed = False`): the same logits and gradients of every A and B."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_VIT
from test_clip_lora import CLASSES, SHAPE_B, _logits_and_grads, _lora, _randomise
from test_rpo import _clip, _images
from vlprompt.methods import clip_lora
from vlprompt.methods.clip_lora import LoRAAttention, LowRankUpdate, _DroppedLowRank, keep_masks

PARAMS = [("q", "k", "v"), ("q", "v", "o"), ("k",)]


def _set_packed(method, packed: bool) -> None:
    attentions = [m for m in method.modules() if isinstance(m, LoRAAttention)]
    assert attentions
    for module in attentions:
        module.packed = packed


def _both_paths(method, images, labels):
    out = {}
    for packed in (True, False):
        _set_packed(method, packed)
        out[packed] = _logits_and_grads(method, images, labels)
    return out[True], out[False]


def _assert_same(packed, plain) -> None:
    (logits, grads), (want_logits, want_grads) = packed, plain
    assert (logits - want_logits).abs().max() <= 1e-5
    assert len(grads) == len(want_grads) > 0
    for got, want in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("name", [TINY_VIT, SHAPE_B])
def test_packed_equals_per_projection_without_dropout(name, params):
    clip = _clip(name)
    method = _lora(clip, params=params, dropout=0.0)
    _randomise(method)
    images = _images(clip)
    labels = torch.arange(len(images)) % len(CLASSES)
    with pytest.MonkeyPatch.context() as mp:  # p = 0: no mask, no dropped copy of the input
        mp.setattr(clip_lora, "keep_masks", _no_call)
        packed, plain = _both_paths(method.train(), images, labels)
    _assert_same(packed, plain)
    assert packed[1][0].abs().max() > 1e-3  # the gradients are not trivially zero


def _no_call(*args):
    raise AssertionError("a dropout mask was drawn with dropout 0")


class _Replay(torch.nn.Module):
    """Dropout with masks taken in order from `queue` (those the packed path drew)."""

    def __init__(self, queue: list[torch.Tensor], p: float) -> None:
        super().__init__()
        self.queue, self.p = queue, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.queue.pop(0).reshape(x.shape) / (1 - self.p)


@pytest.mark.parametrize("params", PARAMS[:2])
@pytest.mark.parametrize("name", [TINY_VIT, SHAPE_B])
def test_packed_dropout_equals_per_projection_dropout_with_the_same_masks(name, params):
    """Training with dropout 0.25: the packed path's masks, replayed in the per-projection
    path's nn.Dropout slots (q, k, v, o of each block in turn), give the same logits and
    gradients, so the packed path is dropout on each projection's input, as the official."""
    clip = _clip(name)
    method = _lora(clip, params=params, dropout=0.25)
    _randomise(method)
    images = _images(clip)
    labels = torch.arange(len(images)) % len(CLASSES)
    drawn: list[torch.Tensor] = []

    def recording(n, x, p):
        masks = keep_masks(n, x, p)
        drawn.extend(masks)
        return masks

    method.train()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clip_lora, "keep_masks", recording)
        _set_packed(method, True)
        packed = _logits_and_grads(method, images, labels)
    n_masks = len(params) * sum(len(blocks) for blocks in (clip.text_blocks, clip.vision_blocks))
    assert len(drawn) == n_masks
    queue = list(drawn)
    for update in (m for m in method.modules() if isinstance(m, LowRankUpdate)):
        update.dropout = _Replay(queue, 0.25)
    _set_packed(method, False)
    plain = _logits_and_grads(method, images, labels)
    assert not queue  # every mask used once
    _assert_same(packed, plain)
    _set_packed(method, True)  # fresh masks: other logits (the dropout is live)
    for update in (m for m in method.modules() if isinstance(m, LowRankUpdate)):
        update.dropout = torch.nn.Dropout(0.25)
    assert (_logits_and_grads(method, images, labels)[0] - packed[0]).abs().max() > 1e-4


@pytest.mark.parametrize("name", [TINY_VIT, SHAPE_B])
def test_packed_equals_per_projection_in_eval_with_dropout(name):
    clip = _clip(name)
    method = _lora(clip, params=("q", "k", "v", "o"), dropout=0.25)
    _randomise(method)
    images = _images(clip)
    method.eval()
    out = {}
    for packed in (True, False):
        _set_packed(method, packed)
        with torch.no_grad():
            out[packed] = method(images)
    assert torch.equal(out[True], out[False])
    method.train()  # eval is the merged frozen module: equal to the unmerged training path
    _set_packed(method, True)
    for module in method.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        torch.testing.assert_close(method(images), out[True], atol=1e-5, rtol=0)


@pytest.mark.parametrize("p", [0.25, 0.3, 1 / 256])  # random bytes, floats, bytes
def test_keep_masks_are_independent_per_projection_at_the_dropout_rate(p):
    torch.manual_seed(0)
    masks = keep_masks(3, torch.zeros(400, 250), p)
    assert masks.shape == (3, 400, 250) and masks.dtype == torch.bool
    rates = masks.float().mean(dim=(1, 2))
    assert rates.sub(1 - p).abs().max() < 4 * (p * (1 - p) / 1e5) ** 0.5 + 1e-4
    agree = (masks[0] == masks[1]).float().mean()  # independent: (1 - p)^2 + p^2
    assert abs(agree - (1 - p) ** 2 - p**2) < 0.005


def test_dropped_low_rank_gradients_are_those_of_its_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    keep = torch.rand(3, 7, 5, generator=g) >= 0.3
    assert torch.autograd.gradcheck(lambda x, a: _DroppedLowRank.apply(x, a, keep, 1 / 0.7), (x, a))
    want = torch.cat([(x * k / 0.7) @ a_i.t() for k, a_i in zip(keep, a.chunk(3), strict=True)], 1)
    torch.testing.assert_close(_DroppedLowRank.apply(x, a, keep, 1 / 0.7), want)


def test_reference_implementation_keeps_the_per_projection_path(tiny_clip):
    method = _lora(tiny_clip, implementation="reference")
    assert not any(m.packed for m in method.modules() if isinstance(m, LoRAAttention))
    assert all(m.packed for m in _lora(tiny_clip).modules() if isinstance(m, LoRAAttention))
