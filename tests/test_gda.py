"""GDA: the fitted classifier and the logits equal a plain reference written from the paper's
formulation (class means, the shrunk shared covariance, the Gaussian discriminant) on two ViT
shapes; the alpha search is a brute-force loop's; the image path pools the normalised views;
save -> load is exact; bad settings and bad data fail clearly. (The comparison with the official
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
    per_template = []
    for template in templates:
        tokens = clip.tokenize([template.format(c.replace("_", " ")) for c in CLASSES])
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
    with pytest.raises(MethodError, match="fitted on 4 other classes"):
        get_method_class("gda").load(tmp_path, clip, ["ship", "car"])


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"augment_epoch": 0}, "augment_epoch must be >= 1"),
        ({"cache_crop_min_scale": 0.0}, "cache_crop_min_scale must be in"),
        ({"alpha": -1.0}, "alpha and alpha_grid must be >= 0"),
        ({"gradient_rule": "prograd"}, "gradient_rule must be 'none'"),
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
    method.fit_features(train, labels)
    with pytest.raises(MethodError, match="classifies only the classes it was fitted on"):
        method.set_classnames(["ship", "car"])
