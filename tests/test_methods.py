"""Every method with a frozen image encoder, generated from the registry (peft/timm style): it
classifies cached features like images, works on a ResNet CLIP, and rejects bad class lists
(training and save/load of every method: tests/test_method_matrix.py)."""

from __future__ import annotations

import pytest
import torch

from vlprompt.errors import MethodError, VlpromptError
from vlprompt.methods import create_method, get_method_class, list_methods

# vlprompt's own methods only: other test modules register tiny test methods in the registry
FROZEN_IMAGE_METHODS = [
    n
    for n in list_methods()
    if get_method_class(n).frozen_image_encoder
    and get_method_class(n).__module__.startswith("vlprompt.")
]
TRAINED = [n for n in FROZEN_IMAGE_METHODS if get_method_class(n).needs_training]
CLASSNAMES = ["dog", "cat", "red_car", "oak tree"]
# small settings so each test stays well under a second on the tiny models
FAST = {
    "coop": {"n_ctx": 4},
    "prograd": {"n_ctx": 4},
    "linear_probe": {"c_grid": (1.0, 100.0), "search_steps": 1},
}


def test_the_registry_holds_the_coop_family():
    assert {"zsclip", "linear_probe", "coop", "cocoop", "kgcoop", "prograd"} <= set(
        FROZEN_IMAGE_METHODS
    )
    assert {"coop", "cocoop", "kgcoop", "prograd", "tcp", "clip_adapter"} <= set(TRAINED)


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % len(CLASSNAMES)


def _ready(name: str, clip) -> torch.nn.Module:
    """The method, fitted when it is a linear probe."""
    method = create_method(name, clip, CLASSNAMES, **FAST.get(name, {}))
    if not method.needs_training:  # the linear probe: fitted on features
        images, labels = _batch(16)
        feats = clip.encode_image(images, normalize=True)
        method.fit_features(feats, labels, feats, labels)
    return method


def test_linear_probe_fits_above_chance(tiny_clip):
    # (the tiny random ResNet maps all images to nearly one feature, so only the ViT is useful)
    clip = tiny_clip
    method = create_method("linear_probe", clip, CLASSNAMES, c_grid=(1e-2, 1.0, 1e2))
    images, labels = _batch(32)
    feats = clip.encode_image(images, normalize=True)
    info = method.fit_features(feats, labels, feats[:8], labels[:8])
    accuracy = (method(images).argmax(-1) == labels).float().mean().item()
    assert accuracy > 1 / len(CLASSNAMES) + 0.25, info
    assert info["c"] > 0


@pytest.mark.parametrize("name", FROZEN_IMAGE_METHODS)
@pytest.mark.parametrize("backbone", ["tiny_clip", "tiny_rn_clip"])
def test_logits_from_features_equals_forward_and_train_returns_the_features(
    name, backbone, request
):
    clip = request.getfixturevalue(backbone)
    method = _ready(name, clip)
    images, _ = _batch(4)
    with torch.no_grad():
        feats = clip.encode_image(images, normalize=True)
        logits = method(images)
        assert logits.shape == (4, len(CLASSNAMES))
        torch.testing.assert_close(method.logits_from_features(feats), logits, atol=1e-5, rtol=1e-5)
        out = method.forward_train(images)
    torch.testing.assert_close(out.image_features, feats)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FROZEN_IMAGE_METHODS)
@pytest.mark.parametrize("classnames", [[], ["dog", "cat", "dog"]], ids=["empty", "duplicates"])
def test_bad_class_lists_are_refused(name, classnames, tiny_clip):
    with pytest.raises(VlpromptError, match="empty|duplicate"):
        create_method(name, tiny_clip, classnames)


def test_zeroshot_template_and_ensemble_match_clip(tiny_clip):
    names = ["golden_retriever", "cat"]
    templates = ("a photo of a {}.", "art of the {}.", "a {} in a video game.")
    single = create_method("zsclip", tiny_clip, names, template="itap of a {}.")
    ensemble = create_method("zsclip", tiny_clip, names, templates=templates)
    feats = [
        tiny_clip.encode_text(
            tiny_clip.tokenize([t.format(n.replace("_", " ")) for n in names]), normalize=True
        )
        for t in templates
    ]
    mean = torch.stack(feats).mean(0)
    expected = mean / mean.norm(dim=-1, keepdim=True)  # CoOp's ZeroshotCLIP2 ensemble
    torch.testing.assert_close(ensemble.text_features(), expected)
    one = tiny_clip.encode_text(
        tiny_clip.tokenize(["itap of a golden retriever.", "itap of a cat."]), normalize=True
    )
    torch.testing.assert_close(single.text_features(), one)
    with pytest.raises(ValueError, match="exactly one"):
        create_method("zsclip", tiny_clip, names, templates=("no placeholder",))


def test_linear_probe_refuses_classes_it_has_not_seen(tiny_clip, tmp_path):
    method = _ready("linear_probe", tiny_clip)
    with pytest.raises(MethodError, match="only the classes it was fitted on"):
        method.set_classnames(["zebra", "lion"])
    method.save(tmp_path)
    with pytest.raises(MethodError, match="cannot classify the given class list"):
        get_method_class("linear_probe").load(tmp_path, tiny_clip, ["zebra", "lion"])
    unfitted = create_method("linear_probe", tiny_clip, CLASSNAMES)
    with pytest.raises(ValueError, match="not fitted"):
        unfitted(_batch(2)[0])


def test_linear_probe_needs_every_class_in_training(tiny_clip):
    method = create_method("linear_probe", tiny_clip, CLASSNAMES)
    feats = torch.randn(6, tiny_clip.embed_dim)
    with pytest.raises(ValueError, match="classes without examples: \\['oak tree'\\]"):
        method.fit_features(feats, torch.tensor([0, 1, 2, 0, 1, 2]))
