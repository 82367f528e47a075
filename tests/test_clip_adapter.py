"""CLIP-Adapter: the blend `ratio * adapter(x) + (1 - ratio) * x` equals a hand computation, ratio 0
is zero-shot CLIP, the feature's scale does not matter (why the normalised feature may stand in
for the official unnormalised one), only the adapter learns, save -> load is exact, bad settings
fail clearly, ProGrad's rule composes, and a ResNet CLIP works the same."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import sgd_losses
from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.clip_adapter import Adapter, CLIPAdapter

CLASSES = ["dog", "cat", "red_car", "oak tree"]


@pytest.fixture(scope="module")
def clip():
    return _clip()


def _method(clip, **config) -> CLIPAdapter:
    """The method with its adapter far from init (ReLU outputs of a fresh init are small)."""
    method = create_method("clip_adapter", clip, CLASSES, **config)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return method


def _batch(clip, n: int = 6, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, clip.image_size, clip.image_size, generator=g)
    return images, torch.arange(n) % len(CLASSES)


def test_adapter_is_the_bias_free_bottleneck_computed_by_hand():
    adapter = Adapter(4, 2)
    with torch.no_grad():
        adapter.fc[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0]]))
        adapter.fc[2].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [2, 0]]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # hidden relu([1, -2]) = [1, 0]; out relu([1, 0, -1, 2]) = [1, 0, 0, 2]
    assert torch.equal(adapter(x), torch.tensor([[1.0, 0.0, 0.0, 2.0]]))
    assert [n for n, _ in adapter.named_parameters()] == ["fc.0.weight", "fc.2.weight"]


@pytest.mark.parametrize("ratio", [0.2, 0.6, 1.0])
def test_logits_equal_the_formula_by_hand(clip, ratio):
    method = _method(clip, residual_ratio=ratio)
    images, _ = _batch(clip)
    x = clip.encode_image(images, normalize=True)
    w1, w2 = method.adapter.fc[0].weight, method.adapter.fc[2].weight
    blended = ratio * torch.relu(torch.relu(x @ w1.T) @ w2.T) + (1 - ratio) * x
    texts = [method.config.template.format(c.replace("_", " ")) for c in CLASSES]
    text = F.normalize(clip.encode_text(clip.tokenize(texts)), dim=-1)
    expected = clip.logit_scale * F.normalize(blended, dim=-1) @ text.T
    with torch.no_grad():
        torch.testing.assert_close(method(images), expected, atol=1e-5, rtol=0)


def test_ratio_zero_is_zero_shot_clip(clip):
    """Equal up to the rounding of renormalising the already normalised feature (~1e-7)."""
    method = _method(clip, residual_ratio=0.0)
    images, _ = _batch(clip)
    with torch.no_grad():
        torch.testing.assert_close(
            method(images), method.zeroshot_logits(images), atol=1e-5, rtol=0
        )


def test_the_scale_of_the_feature_does_not_change_the_logits(clip):
    """Official: the adapter reads the unnormalised feature; here the normalised one. A bias-free
    Linear/ReLU stack is positively homogeneous, so both give the same logits."""
    method = _method(clip)
    feats = clip.encode_image(_batch(clip)[0], normalize=False)
    with torch.no_grad():
        torch.testing.assert_close(
            method.logits_from_features(feats * 37.0),
            method.logits_from_features(F.normalize(feats, dim=-1)),
            atol=1e-5, rtol=0,
        )  # fmt: skip


def test_only_the_adapter_learns(clip):
    method = _method(clip)
    frozen = {k: v.clone() for k, v in clip.model.state_dict().items()}
    before = {k: v.clone() for k, v in method.learned_state_dict().items()}
    losses = sgd_losses(method, *_batch(clip), steps=6, lr=0.05)
    assert list(before) == ["adapter.fc.0.weight", "adapter.fc.2.weight"]
    assert [p.data_ptr() for p in method.trainable_parameters()] == [
        method.adapter.fc[0].weight.data_ptr(), method.adapter.fc[2].weight.data_ptr()
    ]  # fmt: skip
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[k], v) for k, v in method.learned_state_dict().items())
    assert all(torch.equal(frozen[k], v) for k, v in clip.model.state_dict().items())


def test_save_then_load_gives_identical_logits(clip, tmp_path):
    method = _method(clip, residual_ratio=0.4, reduction=2)
    images, _ = _batch(clip)
    method.save(tmp_path)
    loaded = CLIPAdapter.load(tmp_path, clip)
    assert loaded.config.residual_ratio == 0.4 and loaded.config.reduction == 2
    with torch.no_grad():
        assert torch.equal(loaded(images), method(images))


def test_other_class_lists_are_classified_with_the_same_adapter(clip):
    method = _method(clip)
    images, _ = _batch(clip)
    other = ["tulip", "bus", "river"]
    fresh = create_method("clip_adapter", clip, other)
    fresh.load_state_dict(method.state_dict())
    method.set_classnames(other)
    with torch.no_grad():
        assert torch.equal(method(images), fresh(images))
    assert method(images).shape == (len(images), 3)


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"residual_ratio": -0.1}, "residual_ratio must be in \\[0, 1\\]"),
        ({"residual_ratio": 1.5}, "residual_ratio must be in \\[0, 1\\]"),
        ({"reduction": 0}, "reduction must be >= 1"),
        ({"reduction": 3}, "reduction must divide the embedding width 32"),
        ({"reduction": 64}, "reduction must divide the embedding width 32"),
    ],
)
def test_bad_settings_fail_with_one_clear_error(clip, settings, fragment):
    with pytest.raises(MethodError, match=fragment):
        create_method("clip_adapter", clip, CLASSES, **settings)


def test_prograd_rule_composes(clip):
    method = _method(clip, gradient_rule="prograd")
    before = {k: v.clone() for k, v in method.learned_state_dict().items()}
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.05)
    step = method.backward_step(*_batch(clip))
    grads = [p.grad for p in method.trainable_parameters()]
    assert step.gradients_synced and torch.isfinite(step.loss)
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    opt.step()
    after = method.learned_state_dict()
    assert all(torch.isfinite(v).all() and not torch.equal(before[k], v) for k, v in after.items())


def test_resnet_clip(tiny_rn_clip):
    method = _method(tiny_rn_clip)
    images, labels = _batch(tiny_rn_clip)
    assert method.num_trainable_parameters() == 2 * tiny_rn_clip.embed_dim**2 // 4
    losses = sgd_losses(method, images, labels, steps=6, lr=0.05)
    assert losses[-1] < losses[0]
    method.config.residual_ratio = 0.0
    with torch.no_grad():
        torch.testing.assert_close(
            method(images), method.zeroshot_logits(images), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("width, count", [(512, 131_072), (1024, 524_288)])  # ViT-B/16, RN50
def test_parameter_count(width, count):
    assert sum(p.numel() for p in Adapter(width, 4).parameters()) == count
