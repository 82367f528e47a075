"""Skip Tuning: the fast path (frozen layers without autograd, cached text states) against the
plain formulation, class-wise skipping against a rule written out here, frozen CLIP at init,
only the upper layers learned and saved, the staged learning rates, bad settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from test_rpo import _clip, _images
from vlprompt import schedule
from vlprompt.errors import MethodError
from vlprompt.methods import create_method, get_method_class
from vlprompt.methods.skiptuning import SKIP_TEMPLATES, SkipTuning, num_tops, reserve_ratios

CLASSES = ["cat", "dog", "red car", "sea_turtle", "oak tree", "tulip", "fire truck", "owl"]
SKIPPED = torch.finfo(torch.float32).min  # the step's logit of a skipped class
SHAPES = ["vlprompt-test-vit-a", "vlprompt-test-vit-b"]  # 64/64 wide; 48/32 wide, context 16


def _skip(clip, **config) -> SkipTuning:
    return create_method("skiptuning", clip, CLASSES, start_layer=1, **config)


def _perturb(method: SkipTuning, std: float = 0.05) -> None:
    """Move every tuned tensor away from the frozen copy (the same values for the same seed)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


def _pair(clip, **config) -> tuple[SkipTuning, SkipTuning]:
    fast = _skip(clip, **config)
    _perturb(fast)
    ref = _skip(clip, implementation="reference", **config)
    ref.load_state_dict(fast.state_dict())
    ref._reserve_seed = fast._reserve_seed
    return fast, ref


def _plain_kept(method: SkipTuning, images, labels) -> list[int]:
    """The paper's CSkip written out with Python lists: rank the classes by the batch's highest
    cosine to frozen CLIP's text features (labels first), keep ranks where the mask says so."""
    with torch.no_grad():
        image = F.normalize(method.tuned_image_features(images), dim=-1)
        protos = method.zeroshot_text_features()
    c = len(CLASSES)
    best = []
    for j in range(c):
        sims = [
            1e4 if int(labels[b]) == j else float(image[b] @ protos[j]) for b in range(len(labels))
        ]
        best.append(max(sims))
    order = sorted(range(c), key=lambda j: -best[j])
    mask = method.reserve_mask().tolist()
    return sorted({order[r] for r in range(c) if mask[r]} | {int(y) for y in labels})


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("top_ratio", [0.5, 1.0])
def test_fast_step_equals_the_plain_formulation(name, top_ratio):
    clip = _clip(name)
    fast, ref = _pair(clip, top_ratio=top_ratio)
    images, labels = _images(clip, 4), torch.tensor([1, 1, 5, 2])
    out_f, out_r = fast.backward_step(images, labels), ref.backward_step(images, labels)
    torch.testing.assert_close(out_f.logits, out_r.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_f.loss, out_r.loss, atol=1e-5, rtol=0)
    for p, q in zip(fast.trainable_parameters(), ref.trainable_parameters(), strict=True):
        assert p.grad is not None and p.grad.abs().max() > 0
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=0)
    kept = (out_f.logits[0] > SKIPPED).nonzero().flatten().tolist()
    if top_ratio == 1.0:
        assert kept == list(range(len(CLASSES)))
    else:
        assert kept == _plain_kept(fast, images, labels) and len(kept) < len(CLASSES)


@pytest.mark.parametrize("name", SHAPES)
def test_step_is_cross_entropy_over_the_kept_classes(name):
    clip = _clip(name)
    fast, _ = _pair(clip)
    images, labels = _images(clip, 4), torch.tensor([3, 0, 0, 6])
    out = fast.backward_step(images, labels)
    kept = (out.logits[0] > SKIPPED).nonzero().flatten()
    with torch.no_grad():
        image = fast.tuned_image_features(images)
        text = fast.text_features()[kept]
        logits = clip.logit_scale * image @ text.t()
    torch.testing.assert_close(out.logits[:, kept], logits, atol=1e-5, rtol=0)
    where = [kept.tolist().index(int(y)) for y in labels]
    want = F.cross_entropy(logits, torch.tensor(where))
    torch.testing.assert_close(out.loss, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", SHAPES)
def test_eval_fast_equals_reference_and_init_is_zero_shot(name):
    clip = _clip(name)
    images = _images(clip, 3)
    method = _skip(clip, template="a photo of the {}, a type of car.").eval()
    with torch.no_grad():
        torch.testing.assert_close(method(images), method.zeroshot_logits(images), atol=1e-5,
                                   rtol=0)  # fmt: skip
    fast, ref = _pair(clip)
    with torch.no_grad():
        got, want = fast.eval()(images), ref.eval()(images)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - fast.zeroshot_logits(images)).abs().max() > 1e-3  # the perturbation acts


def test_only_the_upper_layers_learn_and_the_backbone_stays_frozen():
    clip = _clip("vlprompt-test-vit-b")
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    method = _skip(clip, lr=1e-2)
    opt = schedule.build_optimizer(method.param_groups(), method.config)
    images, labels = _images(clip, 4), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        method.backward_step(images, labels)
        opt.step()
    for k, v in clip.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    blocks = len(clip.text_blocks) - 1, len(clip.vision_blocks) - 1
    assert (len(method.text_tuned.blocks), len(method.vision_tuned.blocks)) == blocks
    learned = method.learned_state_dict()
    assert all(k.startswith(("text_tuned.", "vision_tuned.")) for k in learned)
    assert sum(v.numel() for v in learned.values()) == method.num_trainable_parameters()


def test_save_then_load_gives_identical_logits(tmp_path):
    clip = _clip("vlprompt-test-vit-a")
    method = _skip(clip)
    _perturb(method)
    method.save(tmp_path)
    loaded = get_method_class("skiptuning").load(tmp_path, clip)
    images = _images(clip, 3)
    with torch.no_grad():
        assert torch.equal(method.eval()(images), loaded.eval()(images))
    loaded.set_classnames(["tulip", "owl"])  # new classes: the tuned text tower
    with torch.no_grad():  # (their prompts are encoded to a shorter length: rounding only)
        torch.testing.assert_close(loaded(images), method(images)[:, [5, 7]], atol=1e-5, rtol=0)


def test_staged_learning_rates_and_the_warmup_of_every_group():
    method = _skip(_clip())
    c = method.config
    opt = schedule.build_optimizer(method.param_groups(), c)
    schedule.set_lr(opt, c.warmup_lr, warmup=True)
    assert [g["lr"] for g in opt.param_groups] == [1e-6, 1e-6]  # Dassl: WARMUP_CONS_LR for all
    lr = schedule.lr_at_epoch(1, lr=c.lr, warmup_lr=c.warmup_lr, warmup_epochs=1, epochs=20)
    schedule.set_lr(opt, lr)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-5, 5e-6])
    text = {id(p) for p in method.text_tuned.parameters()}
    assert {id(p) for p in opt.param_groups[0]["params"]} == text


def test_reserve_ratios_and_tops_follow_the_official_rule():
    assert num_tops(0.5, 50, 8) == 4 and num_tops(0.5, 50, 1000) == 50 and num_tops(3, 50, 2) == 2
    r = reserve_ratios(10, 4, 0.3)
    assert r[:4].tolist() == [1.0] * 4 and r[4] == 1.0 and r[-1] == 0.0
    x = torch.linspace(0, 5, 6, dtype=torch.float64)
    want = (torch.exp(-x / 0.3) - math.exp(-5 / 0.3)) / (1 - math.exp(-5 / 0.3))
    torch.testing.assert_close(r[4:], want.float())
    assert reserve_ratios(5, 4, 0.3).tolist() == [1.0] * 4 + [0.0]  # one left: never kept


def test_the_official_template_of_each_data_set():
    assert SkipTuning.template_for("oxford_pets", "x {}") == "a bad photo of a {}, a type of pet."
    assert SkipTuning.template_for("my_folder", "x {}") == "x {}"
    assert len(SKIP_TEMPLATES) == 15


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"start_layer": 2}, "start_layer=2 leaves no block"),
        ({"start_layer": -1}, "start_layer must be >= 0"),
        ({"top_ratio": 0.0}, "top_ratio must be > 0"),
        ({"max_top": 0}, "max_top must be >= 1"),
        ({"skip_lambda": 0.0}, "skip_lambda must be > 0"),
        ({"image_lr": -1.0}, "image_lr must be >= 0"),
        ({"implementation": "quick"}, "implementation must be one of"),
    ],
)
def test_bad_settings_are_one_clear_error(settings, fragment):
    with pytest.raises(MethodError, match=fragment):
        create_method("skiptuning", _clip(), CLASSES, **settings)


def test_a_resnet_is_refused(tiny_rn_clip):
    with pytest.raises(MethodError, match="ViT image tower"):
        create_method("skiptuning", tiny_rn_clip, CLASSES, start_layer=0)
