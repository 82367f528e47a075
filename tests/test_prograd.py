"""ProGrad's gradient rule against its formula and the official `prograd_backward_and_update`
(BeierZhu/Prompt-align, Dassl.ProGrad.pytorch/dassl/engine/trainer.py), and its use by methods."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import sgd_losses
from vlprompt.methods import create_method
from vlprompt.methods.gradient_rules import prograd_backward, prograd_kl, project_conflicting

NAMES = ["dog", "cat", "red_car"]


def test_projection_matches_the_formula_on_a_conflict():
    g = torch.tensor([1.0, 0.0])
    k = torch.tensor([-1.0, 1.0])  # cos(g, k) = -1/sqrt(2) < 0
    k_hat = k / k.norm()
    for lam in (1.0, 0.8, 0.5):
        expected = g - lam * torch.dot(g, k_hat) * k_hat
        torch.testing.assert_close(project_conflicting(g, k, lam), expected)
    # lambda = 1: the result is orthogonal to the KL gradient ([0.5, 0.5])
    torch.testing.assert_close(project_conflicting(g, k, 1.0), torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize(
    "kl_grad",
    [[[1.0, 1.0], [2.0, 1.0]], [[0.0, 3.0], [1.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]],
    ids=["aligned", "orthogonal", "zero-kl-gradient"],
)
def test_without_conflict_the_loss_gradient_passes_unchanged(kl_grad):
    g = torch.tensor([[1.0, 0.0], [2.0, -1.0]])
    k = torch.tensor(kl_grad)
    assert torch.dot(g.flatten(), k.flatten()) >= 0
    assert torch.equal(project_conflicting(g, k, 1.0), g)


def test_kl_matches_a_hand_computation():
    student = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.tensor([[0.0, 0.0]])
    # T = 1: teacher uniform, student softmax = [1/4, 3/4]
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert prograd_kl(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # T = 2: logits / 2 -> student softmax [1/(1+sqrt3), sqrt3/(1+sqrt3)], times T^2 = 4
    p0 = 1 / (1 + math.sqrt(3))
    expected_t2 = 4 * -(0.5 * math.log(p0) + 0.5 * math.log(1 - p0))
    assert prograd_kl(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)
    # batch mean of per-sample sums
    two = prograd_kl(torch.cat([student, teacher]), torch.cat([teacher, teacher]))
    assert two.item() == pytest.approx((expected + math.log(2)) / 2, rel=1e-6)


def _toy(p_values):
    p = torch.nn.Parameter(torch.tensor(p_values))
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    student = features @ p  # [3, 2]
    return p, student


def test_the_kl_gradient_is_never_added():
    p, student = _toy([[1.0, -1.0], [0.5, 2.0]])
    teacher = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [0.0, 3.0]])
    zero_loss = (student * 0).sum()  # the loss gradient is zero, the KL's is not
    prograd_backward([p], zero_loss, student, teacher)
    assert torch.equal(p.grad, torch.zeros_like(p))


def _official_rule(params, loss_a, loss_b, lam):
    """The official update, written out as an oracle (loss_a = CE, loss_b = KL)."""
    b_grads = torch.autograd.grad(loss_b, params, retain_graph=True)
    a_grads = torch.autograd.grad(loss_a, params)
    out = []
    for a, b in zip(a_grads, b_grads):
        b_hat = b / torch.linalg.norm(b)
        a_hat = a / torch.linalg.norm(a)
        if torch.dot(a_hat.flatten(), b_hat.flatten()) < 0:
            a = a - lam * torch.dot(a.flatten(), b_hat.flatten()) * b_hat
        out.append(a)
    return out


@pytest.mark.parametrize("lam", [1.0, 0.8])
def test_prograd_backward_equals_the_official_update_per_parameter_tensor(lam, tiny_clip):
    """CoCoOp has several parameter tensors (context, meta-net weights and biases): each is
    projected on its own, as the official loop over `parameters()` does."""
    torch.manual_seed(0)
    method = create_method("cocoop", tiny_clip, NAMES, n_ctx=2, ctx_init="")
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    params = method.trainable_parameters()

    def losses():
        out = method.forward_train(images)
        teacher = method.zeroshot_logits(images, out.image_features)
        return method.loss(out, labels), out.logits, teacher

    ce, logits, teacher = losses()
    expected = _official_rule(params, ce, prograd_kl(logits, teacher), lam)
    ce, logits, teacher = losses()
    prograd_backward(params, ce, logits, teacher, lam=lam)
    assert len(params) == 5
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, atol=1e-6, rtol=1e-5)


def test_teacher_reusing_student_features_equals_a_separate_image_pass(tiny_clip):
    method = create_method("prograd", tiny_clip, NAMES, n_ctx=4)
    images = torch.randn(4, 3, 32, 32)
    out = method.forward_train(images)
    reused = method.zeroshot_logits(images, out.image_features)
    separate = method.zeroshot_logits(images)  # runs encode_image itself
    torch.testing.assert_close(reused, separate, atol=1e-6, rtol=1e-6)
    texts = [method.config.template.format(n.replace("_", " ")) for n in NAMES]
    zs = tiny_clip.encode_text(tiny_clip.tokenize(texts), normalize=True)
    feats = tiny_clip.encode_image(images, normalize=True)
    torch.testing.assert_close(reused, tiny_clip.logit_scale * feats @ zs.t())


def test_a_prograd_step_runs_the_image_encoder_once(tiny_clip, monkeypatch):
    method = create_method("prograd", tiny_clip, NAMES, n_ctx=4)
    calls = []
    original = tiny_clip.encode_image
    monkeypatch.setattr(
        tiny_clip, "encode_image", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    method.backward_step(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert len(calls) == 1
    assert method.ctx.grad is not None and method.ctx.grad.abs().sum() > 0


def test_prograd_step_equals_coop_with_the_rule_written_out(tiny_clip):
    """`prograd` = CoOp + the rule: its .grad equals the official update computed by hand."""
    torch.manual_seed(0)
    method = create_method("prograd", tiny_clip, NAMES, n_ctx=4, ctx_init="")
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    out = method.forward_train(images)
    teacher = method.zeroshot_logits(images, out.image_features)
    ce = F.cross_entropy(out.logits, labels)
    (expected,) = _official_rule([method.ctx], ce, prograd_kl(out.logits, teacher), 1.0)
    method.backward_step(images, labels)
    torch.testing.assert_close(method.ctx.grad, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["prograd", "kgcoop"])
def test_the_rule_composes_and_trains(name, tiny_clip):
    """`prograd` trains; any method can take the rule (here KgCoOp + ProGrad)."""
    method = create_method(name, tiny_clip, NAMES, n_ctx=4, ctx_init="", gradient_rule="prograd")
    torch.manual_seed(1)
    images, labels = torch.randn(6, 3, 32, 32), torch.arange(6) % 3
    losses = sgd_losses(method, images, labels)
    assert losses[-1] < losses[0], losses
