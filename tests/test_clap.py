"""CLAP: the zero-shot prototypes, the class-adaptive multipliers, every step's loss and gradient
and the logits equal a plain reference written from the paper's formulation (autograd of a
per-class loop, hand-written momentum SGD and Dassl's schedule) on two ViT shapes; the steps per
epoch follow Dassl's image loader; ZS-LP drops the penalty; save -> load is exact; bad settings
and bad data fail clearly. (The comparison with the official code is in the module docstring:
it runs outside this repository.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from test_gda import SHAPES, _features
from test_rpo import _clip
from vlprompt.errors import MethodError
from vlprompt.methods import create_method, get_method_class
from vlprompt.methods.clap import CLAPConfig, batches_per_epoch, train_clap

CLASSES = ["dog", "cat", "red_car", "oak tree"]


@pytest.fixture(scope="module", params=SHAPES)
def clip(request):
    return _clip(request.param)


def reference_prototypes(clip, templates) -> torch.Tensor:
    """t_c: the unnormalised text embedding of class c, averaged over the templates."""
    embeddings = []
    for template in templates:
        tokens = clip.tokenize([template.format(c.replace("_", " ")) for c in CLASSES])
        embeddings.append(clip.encode_text(tokens).double())
    return torch.stack(embeddings).mean(dim=0)


def reference_loss(x, y, p, t, lam, scale, constrained):
    """The paper's objective, sample by sample and class by class: mean_n CE(scale cos(x_n, p)),
    plus (1 / C) sum_c lambda_c ||p_c - t_c||^2."""
    terms = []
    for xn, yn in zip(x, y):
        logits = torch.stack([scale * F.cosine_similarity(xn, pc, dim=0) for pc in p])
        terms.append(-torch.log_softmax(logits, dim=0)[yn])
    loss = torch.stack(terms).mean()
    if constrained:
        loss = loss + sum(lam[c] * ((p[c] - t[c]) ** 2).sum() for c in range(len(p))) / len(p)
    return loss


def reference_clap(x, y, t, scale, config, n_images, orders):
    """CLAP in float64 by hand: lambda_c = class c's mean zero-shot probability of class c;
    SGD with momentum, per-epoch lr (1 warm-up epoch at warmup_lr, then cosine from lr over the
    epochs); `batches_per_epoch` batches of each epoch's order. (loss, gradient) per step and
    the final prototypes."""
    x, t = x.double(), t.double()
    zs = scale * F.normalize(x, dim=-1) @ F.normalize(t, dim=-1).T
    prob = zs.softmax(-1)
    lam = torch.stack([prob[y == c, c].mean() for c in range(len(t))])
    p, velocity, steps = t.clone(), None, []
    n_batches = n_images // config.batch_size if n_images >= config.batch_size else 1
    for epoch in range(config.epochs):
        if epoch < config.warmup_epochs:
            lr = config.warmup_lr
        else:
            e = epoch - config.warmup_epochs
            lr = 0.5 * config.lr * (1 + math.cos(math.pi * e / config.epochs))
        for b in range(n_batches):
            rows = orders[epoch][b * config.batch_size : (b + 1) * config.batch_size]
            q = p.clone().requires_grad_(True)
            loss = reference_loss(x[rows], y[rows], q, t, lam, scale, config.constraint == "l2")
            (grad,) = torch.autograd.grad(loss, q)
            steps.append((float(loss.detach()), grad))
            velocity = grad if velocity is None else 0.9 * velocity + grad
            p = p - lr * velocity
    return steps, p, lam


@pytest.mark.parametrize("constraint", ["l2", "none"])
def test_training_and_logits_equal_the_paper_formulation(clip, constraint):
    views, n_images = 3, 20
    x, y = _features(clip, views * n_images, seed=1)
    x = 2.5 * x  # the features' scale does not matter: the logits are cosines
    y = y[:n_images].repeat(views)
    method = create_method("clap", clip, CLASSES)
    t = method.zero_shot_prototypes()
    torch.testing.assert_close(t.double(), reference_prototypes(clip, [method.config.template]))
    config = CLAPConfig(epochs=4, batch_size=8, constraint=constraint, lr=0.05)
    g = torch.Generator().manual_seed(0)
    orders = [torch.randperm(len(y), generator=g) for _ in range(config.epochs)]
    seen = []
    scale = clip.logit_scale.detach().float()
    got = train_clap(x, y, t, scale, config, n_images, lambda e: orders[e],
                     on_step=lambda loss, p: seen.append((loss, p.grad.clone())))  # fmt: skip
    steps, p, lam = reference_clap(x, y, t, float(scale), config, n_images, orders)
    assert len(seen) == len(steps) == 4 * 2  # 20 images, batches of 8: 2 steps per epoch
    for (loss, grad), (rloss, rgrad) in zip(seen, steps):
        assert abs(loss - rloss) < 1e-5
        torch.testing.assert_close(grad.double(), rgrad, atol=1e-5, rtol=1e-5)
    test, _ = _features(clip, 10, seed=4)
    expected = float(scale) * F.normalize(test.double(), dim=-1) @ F.normalize(p, dim=-1).T
    method.prototypes.copy_(got)
    with torch.no_grad():
        torch.testing.assert_close(method.logits_from_features(test).double(), expected, atol=1e-5,
                                   rtol=1e-5)  # fmt: skip
    assert 0 < float(lam.min()) and float(lam.max()) < 1


def test_an_ensemble_averages_the_unnormalised_embeddings(clip):
    templates = ("a photo of a {}.", "art of the {}.")
    method = create_method("clap", clip, CLASSES, templates=templates)
    expected = reference_prototypes(clip, templates)
    torch.testing.assert_close(method.zero_shot_prototypes().double(), expected)
    assert not torch.allclose(expected.norm(dim=-1), torch.ones(len(CLASSES), dtype=torch.float64))


def test_the_steps_per_epoch_are_dassl_s_image_loader_s():
    assert [batches_per_epoch(n, 256) for n in (10, 255, 256, 511, 512, 1600)] == [1, 1, 1, 1, 2, 6]


def test_the_penalty_holds_the_prototypes_nearer_the_zero_shot_ones(clip):
    x, y = _features(clip, 24, seed=1)
    moved = {}
    for constraint in ("l2", "none"):
        torch.manual_seed(3)
        method = create_method("clap", clip, CLASSES, epochs=30, constraint=constraint)
        method.fit_features(x, y)
        moved[constraint] = float((method.prototypes - method.zero_shot_prototypes()).norm())
    assert 0 < moved["l2"] < moved["none"]


def test_save_then_load_gives_identical_logits(clip, tmp_path):
    x, y = _features(clip, 24, seed=1)
    method = create_method("clap", clip, CLASSES, epochs=5)
    method.fit_features(x, y)
    method.save(tmp_path)
    loaded = get_method_class("clap").load(tmp_path, clip)
    test, _ = _features(clip, 5, seed=3)
    with torch.no_grad():
        assert torch.equal(method.logits_from_features(test), loaded.logits_from_features(test))


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"constraint": "cosine"}, "constraint must be one of l2, none"),
        ({"augment_epoch": 0}, "augment_epoch must be >= 1"),
        ({"optimizer": "adamw"}, "CLAP trains with SGD"),
        ({"iterations": 10}, "CLAP trains with SGD"),
        ({"gradient_rule": "prograd"}, "gradient_rule must be 'none'"),
    ],
)
def test_bad_settings_are_one_clear_error(clip, settings, fragment):
    with pytest.raises(MethodError, match=fragment):
        create_method("clap", clip, CLASSES, **settings)


def test_bad_data_and_use_before_fitting_are_clear_errors(clip):
    method = create_method("clap", clip, CLASSES, epochs=2)
    x, y = _features(clip, 8, seed=1)
    with pytest.raises(MethodError, match="not fitted"):
        method.logits_from_features(x)
    with pytest.raises(MethodError, match="every class needs training features"):
        method.fit_features(x[y != 0], y[y != 0])
    method.fit_features(x, y)
    with pytest.raises(MethodError, match="classifies only the classes it was fitted on"):
        method.set_classnames(["ship"])
