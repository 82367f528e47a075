"""The `kd` gradient rule (ProGrad paper's comparison: loss + lambda * KL towards zero-shot, the
KL gradient plainly added) against the `prograd` rule, which never adds the KL gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.gradient_rules import prograd_kl

NAMES = ["cat", "dog", "bird"]


def _grads(method, images, labels):
    """(g_ce, g_kl) of the context, by hand."""
    out = method.forward_train(images)
    teacher = method.zeroshot_logits(images, out.image_features)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(out.logits, labels), [method.ctx],
                                  retain_graph=True)  # fmt: skip
    (g_kl,) = torch.autograd.grad(prograd_kl(out.logits, teacher), [method.ctx])
    return g_ce, g_kl


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_kd_adds_lambda_times_the_kl_gradient(tiny_clip, lam):
    torch.manual_seed(0)
    method = create_method("coop", tiny_clip, NAMES, n_ctx=4, gradient_rule="kd",
                           prograd_lambda=lam)  # fmt: skip
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    g_ce, g_kl = _grads(method, images, labels)
    assert g_kl.abs().sum() > 0
    step = method.backward_step(images, labels)
    expected = g_ce + lam * g_kl  # float noise of one backward through a sum: 1e-5 of the scale
    scale = float(expected.abs().max())
    torch.testing.assert_close(method.ctx.grad, expected, atol=1e-5 * scale, rtol=0)
    assert (method.ctx.grad - g_ce).abs().max() > 100 * 1e-5 * scale  # the KL part is really in
    assert not step.gradients_synced  # a plain gradient: the engine averages it under DDP


def test_prograd_never_adds_the_kl_gradient(tiny_clip):
    """Where the two gradients agree (cos >= 0) ProGrad's update is the CE gradient alone; where
    they conflict it is the CE gradient minus its component along the KL gradient. KD's update
    differs from both by the KL gradient it adds."""
    torch.manual_seed(0)
    seen = set()
    for trial in range(12):
        kwargs = dict(n_ctx=4, ctx_init="", ctx_from_template=False)
        torch.manual_seed(trial)
        prograd = create_method("prograd", tiny_clip, NAMES, **kwargs)
        images = torch.randn(4, 3, 32, 32)
        labels = torch.randint(0, 3, (4,))
        g_ce, g_kl = _grads(prograd, images, labels)
        prograd.backward_step(images, labels)
        dot = torch.dot(g_ce.flatten(), g_kl.flatten())
        if dot >= 0:
            expected = g_ce
        else:
            expected = g_ce - dot / g_kl.pow(2).sum() * g_kl
        torch.testing.assert_close(prograd.ctx.grad, expected, atol=1e-6, rtol=1e-5)
        seen.add(bool(dot >= 0))
    assert seen == {True, False}  # both cases were met


def test_an_unknown_gradient_rule_lists_the_rules(tiny_clip):
    with pytest.raises(MethodError, match="gradient_rule must be one of none, prograd, kd"):
        create_method("coop", tiny_clip, NAMES, gradient_rule="distill")
