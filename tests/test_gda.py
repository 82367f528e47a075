"""GDA: the fitted classifier and the logits equal a plain reference written from the paper's
formulation (class means, the shrunk shared covariance, the Gaussian discriminant) on two ViT
shapes; so do the base-to-new classifier of the classes it did not fit (the Gaussians synthesised
from the stored training features) and the class_mean covariance; the alpha search is a
brute-force loop's; the image path pools the normalised views; save -> load is exact, new classes
included; bad settings and bad data fail clearly. (The comparison with the official
code is in the module docstring: it runs outside this repository.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt.data.types import Datum
from vlprompt.errors import MethodError
from vlprompt.methods import create_method, get_method_class
from vlprompt.methods.gda import ALPHA_GRID
from vlprompt.methods.tip_adapter import augmented_view_features

CLASSES = ["dog", "cat", "red_car", "oak tree"]
NEW = ["ship", "pine_cone", "zebra"]
SHAPES = ["vlprompt-test-vit-a", "vlprompt-test-vit-b"]


@pytest.fixture(scope="module", params=SHAPES)
def clip(request):
    return _clip(request.param)


def _features(clip, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised features near one random centre per class (labels cycle over the classes)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(CLASSES), clip.embed_dim, generator=torch.Generator().manual_seed(9))
    labels = torch.arange(n) % len(CLASSES)
    return F.normalize(
        centres[labels] + 0.8 * torch.randn(n, clip.embed_dim, generator=g), dim=-1
    ), labels


def reference_text(clip, templates) -> torch.Tensor:
    """Each template's normalised text features, averaged, renormalised [C, E]."""
    return reference_text_of(clip, CLASSES, templates)


def reference_text_of(clip, classes, templates) -> torch.Tensor:
    per_template = []
    for template in templates:
        tokens = clip.tokenize([template.format(c.replace("_", " ")) for c in classes])
        per_template.append(F.normalize(clip.encode_text(tokens).double(), dim=-1))
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


def reference_gda(feats: torch.Tensor, labels: torch.Tensor, n_cls: int):
    """The paper's Gaussian discriminant in float64, by plain loops: mu_c, the scatter of the
    class-centred features summed sample by sample, its trace-shrunk inverse, then
    w_c = Sigma^-1 mu_c and b_c = log(1/C) - mu_c^T Sigma^-1 mu_c / 2."""
    x = feats.double()
    n, dim = x.shape
    means = [x[labels == c].sum(dim=0) / int((labels == c).sum()) for c in range(n_cls)]
    scatter = torch.zeros(dim, dim, dtype=torch.float64)
    for i in range(n):
        d = x[i] - means[int(labels[i])]
        scatter += torch.outer(d, d)
    cov = scatter / (n - 1)  # the centred rows have mean 0: the sample covariance
    precision = dim * torch.linalg.inv(scatter + torch.trace(cov) * torch.eye(dim, dtype=x.dtype))
    w = torch.stack([precision @ m for m in means])
    b = torch.tensor([math.log(1 / n_cls) - float(m @ precision @ m) / 2 for m in means])
    return w, b.double()


@torch.no_grad()
def test_logits_equal_the_paper_formulation(clip):
    train, labels = _features(clip, 48, seed=1)  # 12 per class: the scatter has full rank
    method = create_method("gda", clip, CLASSES, alpha=0.3)
    method.fit_features(train, labels)  # no validation features: alpha = 0.3
    test, _ = _features(clip, 10, seed=3)
    w, b = reference_gda(train, labels, len(CLASSES))
    text = reference_text(clip, [method.config.template])
    expected = float(clip.logit_scale) * test.double() @ text.T + 0.3 * (test.double() @ w.T + b)
    assert expected.abs().max() > 1  # the GDA part is not negligible
    torch.testing.assert_close(method.logits_from_features(test).double(), expected, atol=1e-5,
                               rtol=1e-5)  # fmt: skip


@torch.no_grad()
def test_a_template_ensemble_is_averaged_like_zero_shot_clip(clip):
    templates = ("a photo of a {}.", "art of the {}.")
    train, labels = _features(clip, 48, seed=1)
    method = create_method("gda", clip, CLASSES, templates=templates, alpha=0.0)
    method.fit_features(train, labels)
    test, _ = _features(clip, 6, seed=4)
    expected = float(clip.logit_scale) * test.double() @ reference_text(clip, templates).T
    torch.testing.assert_close(method.logits_from_features(test).double(), expected, atol=1e-5,
                               rtol=1e-5)  # fmt: skip


@torch.no_grad()
def test_alpha_is_the_first_strict_best_of_the_grid(clip):
    train, labels = _features(clip, 48, seed=1)
    val, val_labels = _features(clip, 40, seed=2)
    method = create_method("gda", clip, CLASSES)
    info = method.fit_features(train, labels, val, val_labels)
    w, b = reference_gda(train, labels, len(CLASSES))
    zero_shot = (
        float(clip.logit_scale) * val.double() @ reference_text(clip, [method.config.template]).T
    )
    best, best_acc = 0.1, 0.0  # the official start
    for alpha in ALPHA_GRID:
        pred = (zero_shot + alpha * (val.double() @ w.T + b)).argmax(-1)
        acc = 100.0 * int((pred == val_labels).sum()) / len(val_labels)
        if acc > best_acc:
            best, best_acc = alpha, acc
    assert (info["alpha"], info["val_accuracy"]) == (best, best_acc)
    assert float(method.alpha) == best


def test_the_image_path_pools_the_normalised_augmented_views(tmp_path):
    clip = _clip(SHAPES[0])
    items = []
    for i in range(8):
        pixels = torch.randint(0, 256, (40, 40, 3), generator=torch.Generator().manual_seed(i))
        Image.fromarray(pixels.to(torch.uint8).numpy()).save(tmp_path / f"{i}.png")
        items.append(Datum(str(tmp_path / f"{i}.png"), i % 4, CLASSES[i % 4]))
    torch.manual_seed(7)  # the run's seed: the views' seed
    method = create_method("gda", clip, CLASSES, augment_epoch=3, alpha=1.0)
    method.fit(items, [])
    from vlprompt.data import transform_for

    transform = transform_for(clip, train=True, crop_min_scale=0.5)
    views = augmented_view_features(clip, items, transform, 3, 7)
    expected = create_method("gda", clip, CLASSES, augment_epoch=3, alpha=1.0)
    labels = torch.tensor([d.label for d in items]).repeat(3)
    expected.fit_features(F.normalize(views, dim=-1).reshape(-1, clip.embed_dim), labels)
    assert torch.equal(method.weight, expected.weight) and torch.equal(method.bias, expected.bias)


def test_save_then_load_gives_identical_logits(clip, tmp_path):
    train, labels = _features(clip, 24, seed=1)
    val, val_labels = _features(clip, 16, seed=2)
    method = create_method("gda", clip, CLASSES)
    method.fit_features(train, labels, val, val_labels)
    method.save(tmp_path)
    loaded = get_method_class("gda").load(tmp_path, clip)
    test, _ = _features(clip, 5, seed=3)
    with torch.no_grad():
        assert torch.equal(method.logits_from_features(test), loaded.logits_from_features(test))
    assert float(loaded.alpha) == float(method.alpha)
    assert torch.equal(loaded.train_features, method.train_features)


def test_save_then_load_gives_identical_logits_on_new_classes(clip, tmp_path):
    train, labels = _features(clip, 24, seed=1)
    method = create_method("gda", clip, CLASSES, alpha=1.0, new_class_topk=10)
    method.fit_features(train, labels)
    method.save(tmp_path)
    loaded = get_method_class("gda").load(tmp_path, clip, NEW)
    assert loaded.classnames == NEW and loaded.fitted_classnames == CLASSES
    method.set_classnames(NEW)
    test, _ = _features(clip, 5, seed=3)
    with torch.no_grad():
        assert torch.equal(method.logits_from_features(test), loaded.logits_from_features(test))
    with pytest.raises(MethodError, match="points at the classes it was fitted on"):
        method.save(tmp_path / "again")


def reference_new_classes(train: torch.Tensor, text: torch.Tensor, k: int, copies: int,
                          n_prior: int):  # fmt: skip
    """main_base2new.py's synthesis written from its formulation, float64, by plain loops: per
    new class, its k training features of largest dot product with its text feature t (a full
    sort), mu = (their sum + copies * t) / (k + copies), S = sum (x - t)(x - t)^T / (k - 1), the
    precision D * inv((k - 1) S + trace(S) I) averaged over the classes; then the discriminant
    with the uniform prior log(1 / n_prior)."""
    x, t = train.double(), text.double()
    dim = x.shape[1]
    means, precision = [], torch.zeros(dim, dim, dtype=torch.float64)
    for row in t:
        order = sorted(range(len(x)), key=lambda i: -float(x[i] @ row))[:k]
        means.append((sum(x[i] for i in order) + copies * row) / (k + copies))
        scatter = sum(torch.outer(x[i] - row, x[i] - row) for i in order)
        cov = scatter / (k - 1)
        eye = torch.eye(dim, dtype=torch.float64)
        precision += dim * torch.linalg.inv((k - 1) * cov + torch.trace(cov) * eye)
    precision /= len(t)
    w = torch.stack([precision @ m for m in means])
    b = torch.tensor([math.log(1 / n_prior) - float(m @ precision @ m) / 2 for m in means])
    return w, b.double()


@pytest.mark.parametrize(("k", "copies"), [(64, 16), (9, 3)])
@torch.no_grad()
def test_new_classes_equal_the_official_formulation(clip, k, copies):
    train, labels = _features(clip, 96, seed=1)  # 96 stored features: the official k = 64 fits
    val, val_labels = _features(clip, 40, seed=2)
    method = create_method("gda", clip, CLASSES, new_class_topk=k, new_class_text_copies=copies)
    method.fit_features(train, labels, val, val_labels)  # alpha searched on the base classes
    base_logits = method.logits_from_features(val)
    method.set_classnames(NEW)
    test, _ = _features(clip, 10, seed=3)
    text = reference_text_of(clip, NEW, [method.config.template])
    w, b = reference_new_classes(train, text, k, copies, len(NEW))
    alpha = float(method.alpha)  # the base classes' alpha
    expected = float(clip.logit_scale) * test.double() @ text.T + alpha * (test.double() @ w.T + b)
    gda_part = alpha * (test.double() @ w.T + b)
    assert gda_part.abs().max() > 1e-2 and gda_part.std(dim=-1).max() > 1e-3  # it matters
    torch.testing.assert_close(method.logits_from_features(test).double(), expected, atol=1e-5,
                               rtol=1e-5)  # fmt: skip
    method.set_classnames(CLASSES)  # back on the fitted classes: their logits, bit-equal
    assert torch.equal(method.logits_from_features(val), base_logits)


@torch.no_grad()
def test_a_list_mixing_fitted_and_new_classes_keeps_the_fitted_rows(clip):
    """Fitted classes: their fitted rows; the others: the synthesis over the list's unfitted
    classes; every row with the uniform prior over the whole list."""
    train, labels = _features(clip, 48, seed=1)
    method = create_method("gda", clip, CLASSES, alpha=1.0, new_class_topk=12)
    method.fit_features(train, labels)
    mixed = ["zebra", "cat", "ship", "dog"]
    method.set_classnames(mixed)
    test, _ = _features(clip, 8, seed=3)
    w_fit, b_fit = reference_gda(train, labels, len(CLASSES))
    text = reference_text_of(clip, mixed, [method.config.template])
    w_new, b_new = reference_new_classes(train, text[[0, 2]], 12, 16, len(mixed))
    prior = math.log(1 / len(mixed)) - math.log(1 / len(CLASSES))
    w = torch.stack([w_new[0], w_fit[1], w_new[1], w_fit[0]])
    b = torch.stack([b_new[0], b_fit[1] + prior, b_new[1], b_fit[0] + prior])
    expected = float(clip.logit_scale) * test.double() @ text.T + test.double() @ w.T + b
    torch.testing.assert_close(method.logits_from_features(test).double(), expected, atol=1e-5,
                               rtol=1e-5)  # fmt: skip


@torch.no_grad()
def test_the_class_mean_covariance_is_the_official_base_to_new_estimator(clip):
    """covariance='class_mean': the pinv of the mean of the per-class sample covariances."""
    train, labels = _features(clip, 96, seed=1)
    method = create_method("gda", clip, CLASSES, alpha=1.0, covariance="class_mean")
    method.fit_features(train, labels)
    x, dim = train.double(), clip.embed_dim
    covs, means = torch.zeros(dim, dim, dtype=torch.float64), []
    for c in range(len(CLASSES)):
        rows = x[labels == c]
        means.append(rows.mean(dim=0))
        covs += sum(torch.outer(r - means[-1], r - means[-1]) for r in rows) / (len(rows) - 1)
    precision = torch.linalg.inv(covs / len(CLASSES))  # 24 features a class: full rank
    w = torch.stack([precision @ m for m in means])
    b = torch.tensor([math.log(1 / len(CLASSES)) - float(m @ precision @ m) / 2 for m in means])
    test, _ = _features(clip, 10, seed=3)
    text = reference_text(clip, [method.config.template])
    expected = float(clip.logit_scale) * test.double() @ text.T + (test.double() @ w.T + b)
    torch.testing.assert_close(method.logits_from_features(test).double(), expected, atol=1e-4,
                               rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"augment_epoch": 0}, "augment_epoch must be >= 1"),
        ({"cache_crop_min_scale": 0.0}, "cache_crop_min_scale must be in"),
        ({"alpha": -1.0}, "alpha and alpha_grid must be >= 0"),
        ({"gradient_rule": "prograd"}, "gradient_rule must be 'none'"),
        ({"covariance": "ledoit_wolf"}, "covariance must be one of ks, class_mean"),
        ({"new_class_topk": 1}, "new_class_topk must be >= 2"),
        ({"new_class_text_copies": -1}, "new_class_text_copies must be >= 0"),
    ],
)
def test_bad_settings_are_one_clear_error(clip, settings, fragment):
    with pytest.raises(MethodError, match=fragment):
        create_method("gda", clip, CLASSES, **settings)


def test_bad_data_and_use_before_fitting_are_clear_errors(clip):
    method = create_method("gda", clip, CLASSES)
    train, labels = _features(clip, 8, seed=1)
    with pytest.raises(MethodError, match="not fitted"):
        method.logits_from_features(train)
    with pytest.raises(
        MethodError, match=r"every class needs training features; none for \['oak tree'\]"
    ):
        method.fit_features(train[labels < 3], labels[labels < 3])
    with pytest.raises(MethodError, match="8 training features but 7 labels"):
        method.fit_features(train, labels[:7])
    with pytest.raises(MethodError, match="labels must lie in 0..3"):
        method.fit_features(train, labels + 1)
    method.fit_features(train, labels)  # 8 stored features: fewer than the top-64
    with pytest.raises(MethodError, match="new_class_topk 64 exceeds the 8 stored training"):
        method.set_classnames(NEW)
    single = create_method("gda", clip, CLASSES, covariance="class_mean")
    with pytest.raises(MethodError, match=r"needs >= 2 training features per class.*'oak tree'"):
        single.fit_features(train[:7], labels[:7])


def test_bench_base2new_runs_gda_on_the_mini_world(tmp_path, capsys):
    """`vlprompt bench base2new --methods gda`: base from the fitted classifier, new from the
    synthesised one, and the harmonic mean in the printed table."""
    import json

    from vlprompt.cli import main

    out = tmp_path / "bench"
    argv = ["bench", "base2new", "--methods", "gda", "--datasets", "mini_colors", "--seeds", "1",
            "--shots", "4", "--root", str(tmp_path / "mini"), "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| method | data sets | base | new | H (of avg) |" in printed
    assert "1 run(s) trained or evaluated, 0 already done, 0 failed" in printed
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["subsample"] for r in records} == {"base", "new"}
    assert all(r["method"] == "gda" and 0 <= r["accuracy"] <= 100 for r in records)
