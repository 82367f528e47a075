"""PromptSRC: the three self-regulating terms equal hand-computed values; the frozen text target is
the normalised mean of unnormalised template features; GPA equals the Gaussian-weighted average
of the per-epoch prompts, also across a checkpoint resume (by hand and through engine.fit); bad
GPA settings are one clear error; save -> load is exact after GPA; ProGrad's projection equals a
hand oracle and reuses the one frozen image pass; 46,080 learned values on ViT-B/16."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt.config import EngineSettings
from vlprompt.engine import fit
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.parameter_counts import ParameterCount, parameter_count, shapes_only_backbone
from vlprompt.methods.promptsrc import (
    PROMPTSRC_TEMPLATES,
    PromptSRC,
    PromptSRCTrainOutput,
    self_regulating_losses,
)
from vlprompt.train_state import load_checkpoint, save_checkpoint

CLASSES = ["dog", "cat", "red_car"]
TWO_TEMPLATES = ("a photo of a {}.", "art of the {}.")


def _method(clip, **config) -> PromptSRC:
    torch.manual_seed(1)
    m = create_method("promptsrc", clip, CLASSES, templates=TWO_TEMPLATES, **config)
    with torch.no_grad():  # far from init
        for p in m.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _images(clip, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, clip.image_size, clip.image_size)


def _random_prompts(m: PromptSRC) -> dict[str, torch.Tensor]:
    return {n: torch.randn_like(p) for n, p in m.named_parameters() if p.requires_grad}


def _set_prompts(m: PromptSRC, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, value in state.items():
            m.get_parameter(name).copy_(value)


def test_the_three_terms_equal_hand_computed_values():
    out = PromptSRCTrainOutput(
        logits=torch.tensor([[0.0, 0.0]]),
        image_features=torch.tensor([[0.0, 1.0]]),  # frozen
        text_features=torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        prompted_image_features=torch.tensor([[1.0, 0.0]]),
    )
    frozen_text = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    zeroshot = torch.tensor([[math.log(3.0), 0.0]])  # p_zs = (3/4, 1/4); p = (1/2, 1/2)
    text, image, kl = self_regulating_losses(out, frozen_text, zeroshot)
    assert text.item() == pytest.approx((0.4 + 0.8 + 0.8 + 0.4) / 4)
    assert image.item() == pytest.approx(1.0)
    # KL(p_zs || p): the frozen side is the target; summed, divided by batch * classes
    assert kl.item() == pytest.approx((0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2)


def test_loss_is_ce_plus_the_weighted_terms_towards_frozen_clip():
    clip = _clip("vlprompt-test-vit-b")
    m = _method(clip, text_loss_weight=3.0, image_loss_weight=2.0)
    images, labels = _images(clip), torch.tensor([0, 2])
    out = m.forward_train(images)
    frozen_img = clip.encode_image(images, normalize=True)
    frozen_text = m.frozen_text_features()
    zs = clip.logit_scale * frozen_img @ frozen_text.t()
    img = F.normalize(m.encode_image(images), dim=-1)
    text = m.text_features()
    logits = clip.logit_scale * img @ text.t()
    kl = (F.softmax(zs, 1) * (F.log_softmax(zs, 1) - F.log_softmax(logits, 1))).sum() / zs.numel()
    expected = (
        F.cross_entropy(logits, labels)
        + 3.0 * (text - frozen_text).abs().mean()
        + 2.0 * (img - frozen_img).abs().mean()
        + kl
    )
    torch.testing.assert_close(out.image_features, frozen_img, atol=1e-6, rtol=0)
    torch.testing.assert_close(m.loss(out, labels), expected, atol=1e-5, rtol=0)


def test_frozen_text_target_is_the_normalised_mean_of_unnormalised_template_features():
    clip = _clip("vlprompt-test-vit-a")
    m = _method(clip)
    per_template = [
        clip.model.encode_text(clip.tokenize([t.format(c.replace("_", " ")) for c in CLASSES]))
        for t in TWO_TEMPLATES
    ]
    expected = F.normalize((per_template[0] + per_template[1]) / 2, dim=-1)
    torch.testing.assert_close(m.frozen_text_features(), expected, atol=1e-6, rtol=0)
    of_normalised = F.normalize(sum(F.normalize(f, dim=-1) for f in per_template), dim=-1)
    assert (m.frozen_text_features() - of_normalised).abs().max() > 1e-4  # the choice matters


def test_gpa_is_the_gaussian_weighted_average_of_the_per_epoch_prompts():
    clip = _clip("vlprompt-test-vit-b")
    m = _method(clip, epochs=5, gpa_mean=3.0, gpa_std=1.5)
    density = [math.exp(-((e - 3.0) ** 2) / (2 * 1.5**2)) for e in range(1, 6)]
    weights = [d / sum(density) for d in density]
    states = []
    for epoch in range(1, 6):
        states.append(_random_prompts(m))
        _set_prompts(m, states[-1])
        m.on_epoch_end(epoch)
        if epoch < 5:  # the running sum lives beside the prompts until the last epoch
            torch.testing.assert_close(m.ctx.detach(), states[-1]["ctx"], atol=0, rtol=0)
    for name, p in m.named_parameters():
        if p.requires_grad:
            expected = sum(w * s[name] for w, s in zip(weights, states, strict=True))
            torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)


def test_gpa_survives_a_resume_from_a_per_epoch_checkpoint(tmp_path):
    clip = _clip("vlprompt-test-vit-b")
    straight = _method(clip, epochs=4, gpa_mean=2.0, gpa_std=1.0)
    states = [_random_prompts(straight) for _ in range(4)]
    for epoch, state in enumerate(states, start=1):
        _set_prompts(straight, state)
        straight.on_epoch_end(epoch)

    first = _method(clip, epochs=4, gpa_mean=2.0, gpa_std=1.0)
    for epoch, state in enumerate(states[:2], start=1):
        _set_prompts(first, state)
        first.on_epoch_end(epoch)
    sgd = torch.optim.SGD(first.trainable_parameters(), lr=0.1)
    folder = save_checkpoint(tmp_path, 2, first, sgd, None, {})
    resumed = _method(clip, epochs=4, gpa_mean=2.0, gpa_std=1.0)
    load_checkpoint(folder, resumed, torch.optim.SGD(resumed.trainable_parameters(), lr=0.1), None)
    for epoch, state in enumerate(states[2:], start=3):
        _set_prompts(resumed, state)
        resumed.on_epoch_end(epoch)
    for a, b in zip(resumed.trainable_parameters(), straight.trainable_parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_a_run_killed_after_epoch_2_and_resumed_ends_with_the_same_gpa_prompts(tmp_path):
    clip = _clip("vlprompt-test-vit-b")
    torch.manual_seed(5)
    data = torch.utils.data.TensorDataset(_images(clip, 8), torch.arange(8) % len(CLASSES))
    config = {"epochs": 3, "gpa_mean": 2.0, "gpa_std": 1.0, "batch_size": 4}
    settings = EngineSettings()
    full = _method(clip, **config)
    fit(full, data, settings=settings, seed=0, run_dir=tmp_path / "full", progress=False)

    def kill(stats):
        if stats.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_method(clip, **config), data, settings=settings, seed=0, run_dir=tmp_path / "cut",
            progress=False, on_epoch_end=kill)  # fmt: skip
    resumed = _method(clip, **config)
    fit(resumed, data, settings=settings, seed=0, run_dir=tmp_path / "cut", resume=True,
        progress=False)  # fmt: skip
    for a, b in zip(resumed.trainable_parameters(), full.trainable_parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"gpa_std": 0.0}, "gpa_std must be > 0"),
        ({"gpa_std": -1.0}, "gpa_std must be > 0"),
        ({"gpa_mean": 500.0, "gpa_std": 1.0}, "gpa_mean 500.0 with gpa_std 1.0"),
        ({"text_loss_weight": -1.0}, "text_loss_weight"),
        ({"templates": ()}, "templates is empty"),
        ({"templates": ("no field",)}, "templates"),
    ],
)
def test_bad_settings_are_one_clear_error(bad, fragment):
    clip = _clip("vlprompt-test-vit-a")
    with pytest.raises(MethodError, match=fragment):
        create_method("promptsrc", clip, CLASSES, **bad)


def test_save_load_after_gpa_gives_identical_logits(tmp_path):
    clip = _clip("vlprompt-test-vit-b")
    m = _method(clip, epochs=2, gpa_mean=1.0, gpa_std=1.0)
    for epoch in (1, 2):
        _set_prompts(m, _random_prompts(m))
        m.on_epoch_end(epoch)
    images = _images(clip)
    m.save(tmp_path / "promptsrc")
    loaded = PromptSRC.load(tmp_path / "promptsrc", clip)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), m(images), atol=0, rtol=0)


def test_forward_is_ivlps_on_the_same_prompts():
    clip = _clip("vlprompt-test-vit-d")
    m = _method(clip)
    ivlp = create_method("ivlp", clip, CLASSES)
    ivlp.load_state_dict({k: v for k, v in m.state_dict().items() if "gpa_" not in k})
    images = _images(clip)
    with torch.no_grad():
        torch.testing.assert_close(m(images), ivlp(images), atol=0, rtol=0)


def test_prograd_composes_with_one_frozen_image_pass(monkeypatch):
    clip = _clip("vlprompt-test-vit-b")
    m = _method(clip, gradient_rule="prograd")
    images, labels = _images(clip, 4), torch.tensor([0, 1, 2, 0])
    # the oracle: per tensor, the loss gradient minus its component along the KL gradient
    # where the two conflict (ProGrad, lambda 1)
    out = m.forward_train(images)
    params = m.trainable_parameters()
    g_loss = torch.autograd.grad(m.loss(out, labels), params, retain_graph=True)
    teacher = F.softmax(clip.logit_scale * out.image_features @ m.zeroshot_text_features().t(), 1)
    kl = -(teacher * F.log_softmax(out.logits, 1)).sum(1).mean()
    g_kl = torch.autograd.grad(kl, params)
    dots = [(a * b).sum() for a, b in zip(g_loss, g_kl, strict=True)]
    assert any(d < 0 for d in dots)  # the rule has something to do
    expected = [
        a - d / b.pow(2).sum() * b if d < 0 else a
        for a, b, d in zip(g_loss, g_kl, dots, strict=True)
    ]
    calls = []
    frozen_pass = clip.encode_image
    monkeypatch.setattr(
        clip, "encode_image", lambda *a, **k: calls.append(1) or frozen_pass(*a, **k)
    )
    step = m.backward_step(images, labels)
    assert len(calls) == 1  # the loss's frozen features serve the ProGrad teacher too
    assert torch.isfinite(step.loss)
    for p, want in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, want, atol=1e-5, rtol=1e-4)


def test_official_defaults():
    cfg = PromptSRC.config_class()
    assert (cfg.text_loss_weight, cfg.image_loss_weight) == (25.0, 10.0)
    assert (cfg.gpa_mean, cfg.gpa_std) == (15.0, 1.0)
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (0.0025, 20, 4)
    assert (cfg.n_ctx, cfg.n_ctx_vision, cfg.ctx_init) == (4, 4, "a photo of a")
    assert len(cfg.templates) == 60 and cfg.templates == PROMPTSRC_TEMPLATES
    assert cfg.templates[0] == "a photo of a {}." and cfg.templates[-1] == "itap of the {}."


def test_46080_learned_values_on_vit_b16_shapes():
    # ctx 4 x 512 + 8 deep text 4 x 512, vision 4 x 768 + 8 deep vision 4 x 768 (the GPA sums
    # are buffers, not parameters)
    count = parameter_count("promptsrc", shapes_only_backbone("ViT-B-16"))
    assert count == ParameterCount(9 * 4 * 512 + 9 * 4 * 768, 0) == ParameterCount(46_080, 0)
