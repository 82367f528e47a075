"""LP++: the training (every epoch's loss and gradients, the alpha steps with their summed
gradient, the kept epoch) and the logits equal a plain reference written from the paper's
formulation, with hand-derived gradients and hand-written momentum SGD, on two ViT shapes; the
data-driven step sizes and initial alpha equal their formulas; save -> load is exact; bad
settings and bad data fail clearly. (The comparison with the official code is in the module
docstring: it runs outside this repository.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from test_gda import SHAPES, _features, reference_text
from test_rpo import _clip
from vlprompt.errors import MethodError
from vlprompt.methods import create_method, get_method_class
from vlprompt.methods.lp_plus_plus import LPPlusPlusConfig, train_lp

CLASSES = ["dog", "cat", "red_car", "oak tree"]


@pytest.fixture(scope="module", params=SHAPES)
def clip(request):
    return _clip(request.param)


def reference_lp(x, y, t, bias, epochs, every, val):
    """LP++ by hand in float64: logits f.w_c + b_c + alpha_c f.t_c, the cross-entropy gradients
    derived by hand (G = (softmax - onehot) / N: dW = G^T F, db = sum_n G, dalpha_c =
    sum_n G_nc f_n.t_c), momentum-0.9 SGD on (W, b) at lr 4N / lambda_max(F^T F), alpha moved
    every `every` epochs by N / (4 max_c sum_n (f_n.t_c)^2) times its gradient summed since the
    start; the classifier of the last epoch with the best validation accuracy. Returns the
    per-epoch (loss, dW, db, dalpha) and the kept (W, b, alpha, epoch)."""
    x, t = x.double(), t.double()
    n, n_cls = len(x), len(t)
    onehot = F.one_hot(y, n_cls).double()
    text = x @ t.T  # [N, C]
    w = onehot.T @ x  # class sums
    b = bias.double().clone()
    own = (onehot * text).sum(0) / onehot.sum(0)
    alpha = torch.full((n_cls,), 250.0 * float(own.mean()), dtype=torch.float64)
    lr_w = 4 * n / float(torch.linalg.eigvalsh(x.T @ x).max())
    lr_a = n / (4 * float((text**2).sum(0).max()))
    vw, vb, summed = torch.zeros_like(w), torch.zeros_like(b), torch.zeros_like(alpha)
    steps, best, best_acc = [], None, -1.0
    for epoch in range(epochs):
        logits = x @ w.T + b + alpha * text
        p = logits.softmax(-1)
        loss = -(p[torch.arange(n), y]).log().mean()
        g = (p - onehot) / n
        dw, db, da = g.T @ x, g.sum(0), (g * text).sum(0)
        steps.append((float(loss), dw, db, da))
        vw, vb = 0.9 * vw + dw if epoch else dw, 0.9 * vb + db if epoch else db
        w, b = w - lr_w * vw, b - lr_w * vb
        summed = summed + da
        if (epoch + 1) % every == 0:
            alpha = alpha - lr_a * summed
        acc = 0.0  # without validation features: the last epoch
        if val is not None:
            vx, vy = val
            pred = (vx.double() @ w.T + b + alpha * (vx.double() @ t.T)).argmax(-1)
            acc = int((pred == vy).sum()) / len(vy)
        if acc >= best_acc:
            best, best_acc = (w, b, alpha, epoch + 1), acc
    return steps, best


def test_training_and_logits_equal_the_paper_formulation(clip):
    x, y = _features(clip, 24, seed=1)
    val = _features(clip, 40, seed=2)
    text = reference_text(clip, ["a photo of a {}."]).float()
    bias = torch.empty(len(CLASSES)).uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(3))
    seen = []

    def record(epoch, loss, w, b, a):
        seen.append((loss, w.grad.clone(), b.grad.clone(), a.grad.clone()))

    config = LPPlusPlusConfig(epochs=35, alpha_every=10)
    fitted = train_lp(x, y, text, bias, config, val, on_epoch=record)
    steps, kept_ref = reference_lp(x, y, text, bias, 35, 10, val)
    assert len(seen) == len(steps) == 35
    for (loss, dw, db, _), (rloss, rdw, rdb, _) in zip(seen, steps):
        assert abs(loss - rloss) < 1e-5
        for got, want in ((dw, rdw), (db, rdb)):
            torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    # alpha's .grad holds the gradient summed over the epochs so far (never zeroed)
    torch.testing.assert_close(seen[-1][3].double(), sum(s[3] for s in steps), atol=1e-5, rtol=1e-5)
    assert fitted.epoch == kept_ref[3]
    test, _ = _features(clip, 10, seed=4)
    last_ref = reference_lp(x, y, text, bias, 35, 10, None)[1]
    for kept, (w, b, alpha, _) in (
        (fitted, kept_ref),
        (train_lp(x, y, text, bias, config, None), last_ref),
    ):
        expected = test.double() @ w.T + b + alpha * (test.double() @ text.double().T)
        got = test @ kept.weight.T + kept.bias + kept.alpha * (test @ text.T)
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    last = train_lp(x, y, text, bias, config, None)
    assert last.epoch == 35 and float(last.alpha.std()) > 0  # alpha moved class by class


@torch.no_grad()
def test_the_method_classifies_with_the_fitted_tensors_and_its_text(clip):
    x, y = _features(clip, 24, seed=1)
    method = create_method("lp_plus_plus", clip, CLASSES, epochs=12)
    info = method.fit_features(x, y, *_features(clip, 16, seed=2))
    assert 1 <= info["epoch"] <= 12 and float(method.fitted_epoch) == info["epoch"]
    assert info["lr_w"] == pytest.approx(4 * 24 / float(torch.linalg.eigvalsh(x.T @ x).max()))
    test, _ = _features(clip, 6, seed=4)
    text = reference_text(clip, [method.config.template])
    expected = test.double() @ method.weight.double().T + method.bias.double()
    expected += method.alpha.double() * (test.double() @ text.T)
    torch.testing.assert_close(method.logits_from_features(test).double(), expected, atol=1e-5,
                               rtol=1e-5)  # fmt: skip


def test_the_initial_bias_is_torch_linear_s_range_from_the_run_seed(clip):
    x, y = _features(clip, 12, seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        method = create_method("lp_plus_plus", clip, CLASSES, epochs=1)
        method.fit_features(x, y)  # no validation: the last (only) epoch
        runs.append(method.bias.clone())
    assert torch.equal(runs[0], runs[1])
    assert float(method.fitted_epoch) == 1
    assert math.isfinite(float(runs[0].abs().max()))


def test_save_then_load_gives_identical_logits(clip, tmp_path):
    x, y = _features(clip, 24, seed=1)
    method = create_method("lp_plus_plus", clip, CLASSES, epochs=15)
    method.fit_features(x, y, *_features(clip, 16, seed=2))
    method.save(tmp_path)
    loaded = get_method_class("lp_plus_plus").load(tmp_path, clip)
    test, _ = _features(clip, 5, seed=3)
    with torch.no_grad():
        assert torch.equal(method.logits_from_features(test), loaded.logits_from_features(test))


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"alpha_every": 0}, "alpha_every must be >= 1"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"cache_crop_min_scale": 1.5}, "cache_crop_min_scale must be in"),
        ({"gradient_rule": "kd"}, "gradient_rule must be 'none'"),
    ],
)
def test_bad_settings_are_one_clear_error(clip, settings, fragment):
    with pytest.raises(MethodError, match=fragment):
        create_method("lp_plus_plus", clip, CLASSES, **settings)


def test_bad_data_and_use_before_fitting_are_clear_errors(clip):
    method = create_method("lp_plus_plus", clip, CLASSES, epochs=2)
    x, y = _features(clip, 8, seed=1)
    with pytest.raises(MethodError, match="not fitted"):
        method.logits_from_features(x)
    with pytest.raises(MethodError, match="every class needs training features"):
        method.fit_features(x[y != 1], y[y != 1])
    method.fit_features(x, y)
    with pytest.raises(MethodError, match="classifies only the classes it was fitted on"):
        method.set_classnames(list(reversed(CLASSES)))
