"""CoOp family, fast path: the shared SOS + context prefix is encoded once for all classes
(`text_encoding.encode_shared_prefix`) and gives the reference's logits and gradients."""

from __future__ import annotations

import pytest
import torch

from vlprompt.methods import create_method
from vlprompt.methods import text_encoding as te

CLASSES = ["cat", "golden retriever", "red sports car", "a tree", "x"]


def _logits_and_grads(method, images):
    """Logits and gradients of a cross-entropy step."""
    method.zero_grad(set_to_none=True)
    logits = method.forward_train(images).logits
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3, 4])).backward()
    return logits.detach(), [p.grad.clone() for p in method.trainable_parameters()]


@pytest.mark.parametrize(
    "name,settings,prefix",
    [
        ("coop", {"n_ctx": 4}, 5),
        ("coop", {"n_ctx": 6, "class_token_position": "middle"}, 4),
        ("coop", {"n_ctx": 4, "text_chunk_size": 2, "text_checkpoint": "always"}, 5),
        ("prograd", {"n_ctx": 8}, 9),
        ("kgcoop", {}, 5),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shared_prefix_fast_path_equals_the_reference(tiny_clip, monkeypatch, name, settings,
                                                      prefix, dtype):  # fmt: skip
    """fp32: equal to rounding (atol 1e-5 on logits and on gradients divided by their largest
    entry: ProGrad's context gradient reaches ~10, where the truncated path without the shared
    prefix already differs from the reference by 1.5e-5). fp64: 1e-10, i.e. the same math."""
    tiny_clip.model.to(dtype)
    images = torch.randn(3, 3, 32, 32, dtype=dtype)
    torch.manual_seed(1)
    fast = create_method(name, tiny_clip, CLASSES, **settings).to(dtype)
    torch.manual_seed(1)
    ref = create_method(name, tiny_clip, CLASSES, implementation="reference", **settings).to(dtype)
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    assert fast.shared_prefix_length() == prefix
    calls = []
    original = te.encode_shared_prefix
    monkeypatch.setattr(te, "encode_shared_prefix", lambda *a: calls.append(a[3]) or original(*a))
    got_logits, got_grads = _logits_and_grads(fast, images)
    assert calls and set(calls) == {prefix}  # the shared-prefix path ran
    want_logits, want_grads = _logits_and_grads(ref, images)
    torch.testing.assert_close(got_logits, want_logits, atol=atol, rtol=0)
    for got, want in zip(got_grads, want_grads):
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got / scale, want / scale, atol=atol, rtol=0)


def test_no_shared_prefix_for_class_specific_or_front_contexts(tiny_clip):
    csc = create_method("coop", tiny_clip, CLASSES, n_ctx=4, csc=True)
    front = create_method("coop", tiny_clip, CLASSES, n_ctx=4, class_token_position="front")
    assert csc.shared_prefix_length() == 1 and front.shared_prefix_length() == 1
    eot = torch.tensor([6, 7])
    assert not te.can_share_prefix(tiny_clip, 1, eot)
    assert not te.can_share_prefix(tiny_clip, 7, eot)  # a prefix must end before every EOS
    assert te.can_share_prefix(tiny_clip, 6, eot)
