"""The view pool (vlprompt.view_pool): a step from the pool equals a step on the same augmented
image tensors without it (logits and gradients), runs no frozen image pass, and the views are
drawn deterministically. Tiny random CLIP (conftest), tiny tensor "images"."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from vlprompt.config import ConfigError, EngineSettings
from vlprompt.engine import fit
from vlprompt.methods import create_method
from vlprompt.view_pool import ViewPoolError, augmented_views, build_view_pool, pool_kind

CLASSES = ["cat", "dog", "red car", "tree"]


class NoisyImages(Dataset):
    """Fixed base images plus fresh random noise per access: a random 'augmentation' drawn from
    torch's global RNG, as torchvision's random transforms are."""

    def __init__(self, n: int = 6, size: int = 32) -> None:
        g = torch.Generator().manual_seed(5)
        self.base = torch.randn(n, 3, size, size, generator=g)
        self.labels = [i % len(CLASSES) for i in range(n)]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i] + 0.3 * torch.randn_like(self.base[i]), self.labels[i]


SETTINGS = {
    "coop": {"n_ctx": 4},
    "kgcoop": {},
    "prograd": {"n_ctx": 8},
    "cocoop": {},
    "rpo": {"K": 3},
}


def _all_views(dataset, n_views, seed):
    return torch.cat([images for _, _, images in augmented_views(dataset, n_views, seed=seed,
                                                                  batch_size=4)])  # fmt: skip


def _step(method, inputs, labels):
    method.zero_grad(set_to_none=True)
    out = method.backward_step(inputs, labels)
    return out.logits, [p.grad.clone() for p in method.trainable_parameters()]


class _Counter:
    """Counts calls of a backbone function by wrapping it on the instance."""

    def __init__(self, obj, name):
        self.calls = 0
        original = getattr(obj, name)

        def wrapped(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        setattr(obj, name, wrapped)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_pooled_step_equals_a_step_on_the_same_views(tiny_clip, name):
    method = create_method(name, tiny_clip, CLASSES, **SETTINGS[name])
    data = NoisyImages()
    pool = build_view_pool(method, data, 2, seed=3, batch_size=4)
    assert pool.kind == ("frozen_state" if name == "rpo" else "features")
    indices = torch.tensor([0, 2, 3, 5])
    rows = pool.rows(indices, epoch=1)
    labels = torch.tensor([data.labels[i] for i in indices])
    views = _all_views(data, 2, seed=3)[rows]  # the same augmented tensors, recomputed

    ref_logits, ref_grads = _step(method, views, labels)
    vision = _Counter(tiny_clip, "vision_embed")
    encode = _Counter(tiny_clip, "encode_image")
    with pool.feed(method, rows) as inputs:
        logits, grads = _step(method, inputs, labels)
    assert vision.calls == 0 and encode.calls == 0  # no frozen image pass at all
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert "image_features" not in vars(method) and "frozen_image_state" not in vars(method)


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("promptsrc", {"depth_text": 2, "depth_vision": 2, "templates": ("a photo of a {}.",)}),
        ("ivlp", {"depth_text": 2, "depth_vision": 2, "gradient_rule": "prograd"}),
        ("maple", {"depth": 2, "gradient_rule": "kd"}),
    ],
)
def test_a_prompted_image_tower_reads_its_frozen_features_from_the_pool(tiny_clip, name, settings):
    """PromptSRC's regulariser and the rules' zero-shot teacher read the frozen image features:
    the pool stores them beside the images, and a step runs only the prompted image tower
    (one image pass, not two) with the same logits and gradients."""
    torch.manual_seed(0)
    method = create_method(name, tiny_clip, CLASSES, **settings)
    data = NoisyImages()
    pool = build_view_pool(method, data, 2, seed=3, batch_size=4)
    assert pool.kind == "images_and_features"
    rows = pool.rows(torch.tensor([1, 2, 4, 5]), epoch=2)
    labels = torch.tensor([data.labels[i] for i in (1, 2, 4, 5)])
    every_view = _all_views(data, 2, seed=3)
    # every stored view is the seeded one (reading the labels draws no augmentation)
    assert torch.equal(pool.store["images"], every_view)
    views = every_view[rows]
    encode = _Counter(tiny_clip, "encode_image")
    ref_logits, ref_grads = _step(method, views, labels)
    frozen_passes = encode.calls
    with pool.feed(method, rows) as inputs:
        logits, grads = _step(method, inputs, labels)
    assert frozen_passes == 1 and encode.calls == frozen_passes  # none from the pool
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert "image_features" not in vars(method)
    assert pool_kind(
        create_method(name, tiny_clip, CLASSES, **{**settings, "gradient_rule": "none"})
    ) == ("images_and_features" if name == "promptsrc" else "images")


def test_a_pool_over_the_memory_limit_stores_images_and_says_so(tiny_clip):
    method = create_method("rpo", tiny_clip, CLASSES, K=2)
    data = NoisyImages()
    lines = []
    image_bytes = 3 * 32 * 32 * 4 * 2 * len(data)
    pool = build_view_pool(method, data, 2, seed=1, batch_size=4, max_bytes=image_bytes,
                           say=lines.append)  # fmt: skip
    assert pool.kind == "images" and pool.nbytes == image_bytes
    assert "storing the augmented images instead" in lines[0]
    rows = pool.rows(torch.tensor([1, 4]), epoch=0)
    labels = torch.tensor([1, 0])
    ref_logits, ref_grads = _step(method, _all_views(data, 2, seed=1)[rows], labels)
    with pool.feed(method, rows) as inputs:
        logits, grads = _step(method, inputs, labels)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    with pytest.raises(ViewPoolError, match="even as images"):
        build_view_pool(method, data, 2, seed=1, batch_size=4, max_bytes=image_bytes - 1)


def test_reference_rpo_pools_images(tiny_clip):
    method = create_method("rpo", tiny_clip, CLASSES, K=2, implementation="reference")
    assert pool_kind(method) == "images"


def test_views_are_seeded_and_each_epoch_draws_one_per_image(tiny_clip):
    method = create_method("coop", tiny_clip, CLASSES, n_ctx=2)
    data = NoisyImages()
    before = torch.get_rng_state()
    a = build_view_pool(method, data, 3, seed=7, batch_size=4)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    b = build_view_pool(method, data, 3, seed=7, batch_size=4)
    c = build_view_pool(method, data, 3, seed=8, batch_size=4)
    assert torch.equal(a.store["features"], b.store["features"])
    assert not torch.allclose(a.store["features"], c.store["features"])
    assert a.labels.tolist() == data.labels
    draws = torch.stack([a.views_of_epoch(e) for e in range(20)])
    assert torch.equal(draws, torch.stack([b.views_of_epoch(e) for e in range(20)]))
    assert draws.min() == 0 and draws.max() == 2  # every view gets used
    assert not all(torch.equal(draws[0], d) for d in draws[1:])  # epochs differ
    rows = a.rows(torch.arange(6), epoch=4)
    assert torch.equal(rows % 6, torch.arange(6)) and torch.equal(rows // 6, draws[4])
    with pytest.raises(ViewPoolError, match="at least 1 view"):
        build_view_pool(method, data, 0, seed=7)


def test_fit_with_a_view_pool_trains_from_the_pool(tiny_clip):
    data = NoisyImages(n=8)
    method = create_method("coop", tiny_clip, CLASSES, n_ctx=2, epochs=2, batch_size=4)
    vision = _Counter(tiny_clip, "encode_image")
    lines = []
    result = fit(method, data, settings=EngineSettings(view_pool=2), seed=1, logger=lines.append)
    assert vision.calls == 2  # the pool build only: 2 views x 1 batch (eval_batch_size 100)
    assert any("view pool: 2 views x 8 images" in line for line in lines)
    assert len(result.history) == 2 and result.history[-1].images == 8
    with pytest.raises(ConfigError, match="view_pool must be >= 0"):
        EngineSettings(view_pool=-1)


def _tiny_coop_settings(tmp_path, monkeypatch) -> dict:
    """`vlprompt.train` keyword arguments for a one-epoch CoOp run on a tiny image folder."""
    from test_engine_helpers import TINY_VIT, make_imagefolder, save_tiny_checkpoint

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = make_imagefolder(tmp_path / "data")
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    return dict(root=data, backbone=TINY_VIT, pretrained=ckpt, shots=4, progress=False,
                epochs=1, batch_size=4, n_ctx=2, evaluate=False)  # fmt: skip


def test_train_records_the_view_pool_as_part_of_the_run(tmp_path, monkeypatch):
    import json

    import vlprompt
    from vlprompt.config import RunError

    common = _tiny_coop_settings(tmp_path, monkeypatch)
    out = tmp_path / "run"
    vlprompt.train("coop", "imagefolder", output_dir=out, view_pool=2, **common)
    assert json.loads((out / "config.json").read_text())["engine"]["view_pool"] == 2
    assert "view pool: 2 views x 12 images of 'features'" in (out / "log.txt").read_text()
    with pytest.raises(RunError, match="engine.view_pool: 2 -> 0"):
        vlprompt.train("coop", "imagefolder", output_dir=out, **common)  # not the same run


def test_train_records_the_crop_and_trains_on_it(tmp_path, monkeypatch):
    """`crop_min_scale` reaches the training transform and is part of the run's identity."""
    import json

    import vlprompt
    import vlprompt.data.transforms as transforms
    from vlprompt.config import RunError

    asked = []
    original = transforms.build_transform
    monkeypatch.setattr(
        transforms, "build_transform",
        lambda *a, **k: asked.append((a[3], a[4] if len(a) > 4 else None)) or original(*a, **k),
    )  # fmt: skip
    common = _tiny_coop_settings(tmp_path, monkeypatch)
    out = tmp_path / "run"
    vlprompt.train("coop", "imagefolder", output_dir=out, crop_min_scale=0.5, **common)
    assert (True, 0.5) in asked
    assert json.loads((out / "config.json").read_text())["engine"]["crop_min_scale"] == 0.5
    with pytest.raises(RunError, match="engine.crop_min_scale: 0.5 -> 0.08"):
        vlprompt.train("coop", "imagefolder", output_dir=out, **common)
