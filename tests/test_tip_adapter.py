"""Tip-Adapter and Tip-Adapter-F: the cache formulas against hand computations, the alpha/beta
search against a brute-force loop, zero-shot CLIP where the cache has no say (alpha 0, new
classes), -F training (the loss falls, only the keys move), the image path through the feature
cache, save/load, and bad settings. (The comparison with the official code is in the module
docstring: it runs outside this repository.)"""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlprompt.data.types import Datum
from vlprompt.errors import MethodError
from vlprompt.feature_cache import FeatureCache
from vlprompt.methods import create_method, get_method_class
from vlprompt.methods.tip_adapter import (
    augmented_view_features,
    build_cache,
    cache_logits,
    search_alpha_beta,
    search_grid,
    tip_logits,
)
from vlprompt.view_pool import augmented_views

BASE = ["dog", "cat", "red_car", "oak tree"]
NEW = ["ship", "golden_retriever"]
SMALL = {"search_step": (6, 5)}


def _features(clip, n: int, seed: int, noise: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised features near one random centre per class (labels cycle over BASE)."""
    centres = torch.randn(len(BASE), clip.embed_dim, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(n) % len(BASE)
    noise = noise * torch.randn(n, clip.embed_dim, generator=torch.Generator().manual_seed(seed))
    return F.normalize(F.normalize(centres, dim=-1)[labels] + noise, dim=-1), labels


def _fitted(name, clip, classnames=BASE, **settings):
    method = create_method(name, clip, classnames, **{**SMALL, **settings})
    train, labels = _features(clip, 16, seed=1)
    val, val_labels = _features(clip, 24, seed=2)
    method.fit_features(train, labels, val, val_labels)
    return method


# ---- the formulas ---------------------------------------------------------------------------
def test_cache_keys_average_the_unnormalised_views_then_normalise():
    views = torch.tensor([[[3.0, 0.0]], [[0.0, 1.0]]])  # 2 views of one image, norms 3 and 1
    keys, values = build_cache(views, torch.tensor([1]), 3)
    expected = torch.tensor([[1.5, 0.5]]) / math.sqrt(1.5**2 + 0.5**2)  # not mean of normalised
    assert torch.allclose(keys, expected, atol=1e-7)
    assert torch.equal(values, torch.tensor([[0.0, 1.0, 0.0]]))


def test_the_affinity_term_equals_a_hand_computation():
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    beta, alpha = 2.0, 0.5
    # affinities: row 0 (1, 0, 0.8), row 1 (0.6, 0.8, 0.96); exp(-beta * (1 - a)) per key
    e = lambda a: math.exp(-beta * (1 - a))  # noqa: E731
    expected = torch.tensor([[e(1.0), e(0.0) + e(0.8)], [e(0.6), e(0.8) + e(0.96)]])
    got = cache_logits(f, keys, values, beta)
    assert torch.allclose(got, expected, atol=1e-6)
    zero_shot = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    assert torch.allclose(tip_logits(zero_shot, got, alpha), zero_shot + alpha * expected)


def test_the_grid_is_the_official_one_from_0_1_short_of_the_scale():
    assert search_grid(1.1, 2) == [0.1, 0.6]
    grid = search_grid(7.0, 200)
    assert len(grid) == 200 and grid[0] == 0.1 and abs(grid[-1] - (7.0 - 6.9 / 200)) < 1e-12


def _brute_force(zero_shot, feats, labels, keys, values, betas, alphas):
    """The validation accuracy of every grid point, written out; the first best wins."""
    best = (0.0, 0.0, 0)
    for beta in betas:
        for alpha in alphas:
            correct = 0
            for i in range(len(labels)):
                scores = [
                    float(zero_shot[i, c])
                    + alpha
                    * sum(
                        math.exp(-beta * (1 - float(feats[i] @ keys[j]))) * float(values[j, c])
                        for j in range(len(keys))
                    )  # fmt: skip
                    for c in range(values.shape[1])
                ]
                correct += int(max(range(len(scores)), key=scores.__getitem__) == int(labels[i]))
            if correct > best[2]:
                best = (beta, alpha, correct)
    return best


def test_the_search_picks_the_brute_force_validation_optimum(tiny_clip):
    method = create_method("tip_adapter", tiny_clip, BASE, search_scale=(3.0, 2.0), **SMALL)
    train, labels = _features(tiny_clip, 12, seed=1)
    val, val_labels = _features(tiny_clip, 16, seed=2, noise=0.9)
    keys, values = build_cache(train[None], labels, len(BASE))
    zero_shot = method.zero_shot_of(val)
    betas, alphas = search_grid(3.0, 6), search_grid(2.0, 5)
    expected = _brute_force(zero_shot, val, val_labels, keys, values, betas, alphas)
    got = search_alpha_beta(zero_shot, val, val_labels, keys, values, betas, alphas)
    assert got[0] == pytest.approx(expected[0]) and got[1] == pytest.approx(expected[1])
    assert got[2] == expected[2] > int((zero_shot.argmax(-1) == val_labels).sum())  # cache helps
    info = method.fit_features(train, labels, val, val_labels)
    assert (info["beta"], info["alpha"]) == (
        pytest.approx(expected[0]), pytest.approx(expected[1]),
    )  # fmt: skip
    assert info["val_accuracy"] == pytest.approx(100 * expected[2] / len(val_labels))


# ---- zero-shot CLIP where the cache has no say ------------------------------------------------
@pytest.mark.parametrize("templates", [(), ("itap of a {}.", "a photo of the small {}.")])
def test_alpha_zero_gives_the_zero_shot_logits(tiny_clip, templates):
    method = _fitted("tip_adapter", tiny_clip, init_alpha=0.0, search_hp=False, templates=templates)
    zsclip = create_method("zsclip", tiny_clip, BASE, templates=templates)
    feats, _ = _features(tiny_clip, 8, seed=5)
    with torch.no_grad():
        assert torch.equal(method.logits_from_features(feats), zsclip.logits_from_features(feats))
        assert not torch.equal(
            _fitted("tip_adapter", tiny_clip, templates=templates).logits_from_features(feats),
            zsclip.logits_from_features(feats),
        )  # with the searched alpha the cache does change the logits


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_new_classes_get_zero_shot_logits_and_are_reported(name, tiny_clip, caplog):
    method = _fitted(name, tiny_clip, epochs=2)
    feats, _ = _features(tiny_clip, 8, seed=5)
    with torch.no_grad():
        base = method.logits_from_features(feats)
        with caplog.at_level(logging.WARNING, logger="vlprompt.methods.tip_adapter"):
            method.set_classnames(NEW)
        assert method.uncached_classes == NEW and "no images of 2 of the 2 classes" in caplog.text

        def zsclip(names):
            return create_method("zsclip", tiny_clip, names).logits_from_features(feats)

        assert torch.equal(method.logits_from_features(feats), zsclip(NEW))
        method.set_classnames(["cat", *NEW, "dog"])  # a mixed list: cache columns for cat, dog
        mixed, zero_shot = method.logits_from_features(feats), zsclip(["cat", *NEW, "dog"])
        assert torch.equal(mixed[:, 1:3], zero_shot[:, 1:3])
        assert torch.allclose(mixed[:, [0, 3]], base[:, [1, 0]], atol=1e-5)
        method.set_classnames(BASE)
        assert method.uncached_classes == [] and torch.equal(
            method.logits_from_features(feats), base
        )


# ---- Tip-Adapter-F ----------------------------------------------------------------------------
def _training_loss(method, keys, train, labels) -> float:
    cfg = method.config
    cache = cache_logits(train, keys, F.one_hot(labels, len(BASE)).float(), cfg.init_beta)
    return F.cross_entropy(
        tip_logits(method.zero_shot_of(train), cache, cfg.init_alpha), labels
    ).item()


def test_fine_tuning_lowers_the_loss_and_only_the_keys_learn(tiny_clip):
    method = create_method("tip_adapter_f", tiny_clip, BASE, search_hp=False, epochs=5, lr=0.01)
    frozen = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    text = method.text_features().clone()
    train, labels = _features(tiny_clip, 16, seed=1, noise=1.2)
    val, val_labels = _features(tiny_clip, 24, seed=2)
    info = method.fit_features(train, labels, val, val_labels)
    initial_keys, values = build_cache(train[None], labels, len(BASE))
    assert _training_loss(method, method.cache_keys, train, labels) < _training_loss(
        method, initial_keys, train, labels
    )
    assert info["loss_epoch_5"] < info["loss_epoch_1"] and 1 <= info["best_epoch"] <= 5
    assert not torch.allclose(method.cache_keys, initial_keys)
    assert torch.equal(method.cache_values, values)
    assert (float(method.alpha), float(method.beta)) == (pytest.approx(1.17), 1.0)
    assert torch.equal(method.text_features(), text)
    assert all(torch.equal(v, frozen[k]) for k, v in tiny_clip.state_dict().items())
    assert method.num_trainable_parameters() == 0  # the keys are a buffer outside fitting


# ---- from images, through the feature cache ----------------------------------------------------
@pytest.fixture
def images(tmp_path):
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(8):
        blocks = torch.randint(0, 256, (4, 4, 3), generator=g, dtype=torch.uint8)
        Image.fromarray(blocks.repeat_interleave(12, 0).repeat_interleave(12, 1).numpy()).save(
            tmp_path / f"{i}.png"
        )
        items.append(Datum(str(tmp_path / f"{i}.png"), i % len(BASE), BASE[i % len(BASE)]))
    return items


def test_fit_from_images_averages_augmented_views_and_encodes_them_once(
    tiny_clip, images, tmp_path, monkeypatch
):
    from vlprompt.data import ImageListDataset, transform_for

    settings = dict(augment_epoch=3, epochs=2, search_step=(3, 2))
    cache = FeatureCache(tmp_path / "cache")
    method = create_method("tip_adapter_f", tiny_clip, BASE, **settings)
    method.fit(images[:4], images[4:], feature_cache=cache, batch_size=3)
    # the views, recomputed plainly: unnormalised features of augmented_views' seeded views
    transform = transform_for(tiny_clip, train=True, crop_min_scale=0.5)
    views = torch.zeros(3, 4, tiny_clip.embed_dim)
    seed = torch.initial_seed() % 2**31
    dataset = ImageListDataset(images[:4], transform)
    for view, start, batch in augmented_views(dataset, 3, seed=seed, batch_size=3):
        with torch.no_grad():
            views[view, start : start + len(batch)] = tiny_clip.encode_image(batch)
    stored = augmented_view_features(tiny_clip, images[:4], transform, 3, seed, cache, 3)
    assert torch.equal(stored, views)
    plain = create_method("tip_adapter", tiny_clip, BASE, **settings)
    monkeypatch.setattr(tiny_clip, "encode_image", lambda *a, **k: pytest.fail("encoded again"))
    plain.fit(images[:4], images[4:], feature_cache=cache, batch_size=3)  # every view cached
    assert torch.allclose(plain.cache_keys, build_cache(views, torch.arange(4), 4)[0], atol=1e-6)


# ---- saving -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_save_then_load_gives_identical_logits(name, tiny_clip, tmp_path):
    method = _fitted(name, tiny_clip, epochs=2)
    method.save(tmp_path)
    loaded = get_method_class(name).load(tmp_path, tiny_clip)
    feats, _ = _features(tiny_clip, 8, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded.logits_from_features(feats), method.logits_from_features(feats))
        on_new = get_method_class(name).load(tmp_path, tiny_clip, classnames=NEW)
        zsclip = create_method("zsclip", tiny_clip, NEW)
        assert torch.equal(on_new.logits_from_features(feats), zsclip.logits_from_features(feats))
    with pytest.raises(MethodError, match="while it points at the classes it was fitted on"):
        on_new.save(tmp_path / "again")


# ---- errors -----------------------------------------------------------------------------------
BAD = [
    ("tip_adapter", {"search_scale": (-1.0, 3.0)}, "search_scale must be two numbers"),
    ("tip_adapter", {"search_scale": (7.0,)}, "search_scale must be two numbers"),
    ("tip_adapter", {"search_step": (200, 0)}, "search_step must be two whole numbers"),
    ("tip_adapter", {"init_alpha": -1.0}, "init_alpha must be >= 0"),
    ("tip_adapter", {"init_beta": -0.5}, "init_beta must be >= 0"),
    ("tip_adapter", {"augment_epoch": 0}, "augment_epoch must be >= 1"),
    ("tip_adapter", {"cache_crop_min_scale": 0.0}, r"cache_crop_min_scale must be in \(0, 1\]"),
    ("tip_adapter", {"gradient_rule": "prograd"}, "gradient_rule must be 'none'"),
    ("tip_adapter_f", {"optimizer": "sgd"}, "optimizer must be 'adamw'"),
    ("tip_adapter_f", {"lr_schedule": "epoch"}, "lr_schedule must be 'step'"),
    ("tip_adapter_f", {"adam_eps": 0.0}, "adam_eps must be > 0"),
]


@pytest.mark.parametrize(("name", "bad", "message"), BAD, ids=[str(b) for _, b, _ in BAD])
def test_a_bad_setting_is_one_clear_error(name, bad, message, tiny_clip):
    with pytest.raises(MethodError, match=message):
        create_method(name, tiny_clip, BASE, **bad)


def test_unfitted_or_mislabelled_is_a_clear_error(tiny_clip):
    method = create_method("tip_adapter", tiny_clip, BASE)
    feats, labels = _features(tiny_clip, 4, seed=0)
    with pytest.raises(MethodError, match="tip_adapter is not fitted"):
        method.logits_from_features(feats)
    with pytest.raises(MethodError, match=r"training labels must lie in 0..3, got 0..4"):
        method.fit_features(feats, torch.tensor([0, 1, 2, 4]))
