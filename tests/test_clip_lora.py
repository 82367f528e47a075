"""CLIP-LoRA: frozen CLIP at B = 0, merged == unmerged, only A and B learned, the per-step cosine
of torch's CosineAnnealingLR, the `iterations` length (and its resume), save/load, bad settings."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from conftest import TINY_VIT
from test_rpo import _clip, _images
from vlprompt import distributed, engine, schedule
from vlprompt.api import EngineSettings
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.clip_lora import CLIPLoRA, LoRAAttention, blocks_at

CLASSES = ["cat", "dog", "red car", "sea_turtle"]
SHAPE_B = "vlprompt-test-vit-b"  # vision width 48 != text width 32, 3 heads, context 16


def _lora(clip, **config) -> CLIPLoRA:
    return create_method("clip_lora", clip, CLASSES, logit_scale=0.0, **config)


def _randomise(method: CLIPLoRA, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.copy_(std * torch.randn(p.shape, generator=g))


def _no_dropout(method: CLIPLoRA) -> None:
    for module in method.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


@pytest.mark.parametrize("name", [TINY_VIT, SHAPE_B])
def test_zero_B_gives_the_frozen_clip_logits(name):
    clip = _clip(name)
    method = _lora(clip, params=("q", "k", "v", "o"))
    images = _images(clip)
    with torch.no_grad():
        want = method.zeroshot_logits(images)
        unmerged = method.train()(images)  # dropout on, but B = 0
        merged = method.eval()(images)
    torch.testing.assert_close(unmerged, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged, want, atol=1e-5, rtol=0)
    with torch.no_grad():  # the backbone is restored: frozen CLIP outside the method's passes
        assert all(type(b.attn) is torch.nn.MultiheadAttention for b in clip.vision_blocks)
        torch.testing.assert_close(method.zeroshot_logits(images), want, atol=0, rtol=0)


@pytest.mark.parametrize("name", [TINY_VIT, SHAPE_B])
def test_merged_equals_unmerged_with_random_A_and_B(name):
    clip = _clip(name)
    method = _lora(clip, params=("q", "k", "v", "o"))
    _randomise(method)
    _no_dropout(method)
    images = _images(clip)
    unmerged = method.train()(images)
    with torch.no_grad():
        merged = method.eval()(images)
    assert (unmerged - method.zeroshot_logits(images)).abs().max() > 0.1  # LoRA changes them
    torch.testing.assert_close(merged, unmerged.detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [TINY_VIT, SHAPE_B])
def test_text_up_to_the_longest_eot_equals_all_77_positions(name):
    """The fast path (prompts cut after their longest EOT: exact under the causal mask) equals
    the reference (all 77 positions, the official computation) in training logits and in the
    gradients of every A and B."""
    clip = _clip(name)
    images = _images(clip)
    labels = torch.arange(len(images)) % len(CLASSES)
    out = {}
    for implementation in ("fast", "reference"):
        method = _lora(clip, implementation=implementation, params=("q", "k", "v", "o"))
        _randomise(method)
        _no_dropout(method)
        method.train()
        out[implementation] = _logits_and_grads(method, images, labels)
    (fast, fast_grads), (ref, ref_grads) = out["fast"], out["reference"]
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
    for got, want in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _logits_and_grads(method, images, labels):
    method.zero_grad(set_to_none=True)
    logits = method(images)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    return logits.detach(), [p.grad.clone() for p in method.trainable_parameters()]


def test_merged_weights_follow_updates_of_A_and_B(tiny_clip):
    method = _lora(tiny_clip).eval()
    images = _images(tiny_clip)
    with torch.no_grad():
        before = method(images)
        _randomise(method)
        after = method(images)
    assert (after - before).abs().max() > 1e-3  # the cached merge was refreshed


def _expected_count(clip, rank: int, n_params: int, position: str) -> int:
    text = len(blocks_at(position, len(clip.text_blocks))) * clip.text_width
    vision = len(blocks_at(position, len(clip.vision_blocks))) * clip.vision_width
    return n_params * rank * 2 * (text + vision)


@pytest.mark.parametrize(
    ("config", "n_params"),
    [({}, 3), ({"rank": 3, "params": ("q", "v", "o"), "position": "half-up"}, 3)],
)
def test_only_the_lora_tensors_get_gradients_and_their_count_is_the_formula(config, n_params):
    clip = _clip(SHAPE_B)
    method = _lora(clip, **config)
    method.train().backward_step(_images(clip), torch.tensor([0, 2]))
    assert method.num_trainable_parameters() == _expected_count(
        clip, config.get("rank", 2), n_params, config.get("position", "all")
    )
    assert all(p.grad is not None for p in method.trainable_parameters())
    assert all(p.grad is None for p in clip.parameters())
    assert set(method.learned_state_dict()) == {n for n, _ in method.named_parameters()
                                                if "lora_" in n}  # fmt: skip


def test_blocks_at_matches_the_official_tables():
    """loralib/utils.py INDEX_POSITIONS_TEXT (12 blocks) and ViT-L/14's halves (24 blocks)."""
    assert blocks_at("bottom", 12) == [0, 1, 2, 3]
    assert blocks_at("mid", 12) == [4, 5, 6, 7]
    assert blocks_at("up", 12) == [8, 9, 10, 11]
    assert blocks_at("half-bottom", 12) == [0, 1, 2, 3, 4, 5]
    assert blocks_at("half-up", 24) == list(range(12, 24))
    assert blocks_at("top3", 12) == [9, 10, 11]
    assert blocks_at("all", 24) == list(range(24))


def test_lora_is_init_kaiming_A_zero_B_with_alpha_over_sqrt_rank(tiny_clip):
    method = _lora(tiny_clip, rank=4, alpha=3.0)
    update = next(m for m in method.modules() if isinstance(m, LoRAAttention)).updates["q"]
    assert torch.equal(update.lora_B, torch.zeros_like(update.lora_B))
    bound = 1 / update.lora_A.shape[1] ** 0.5  # kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(in))
    assert 0 < update.lora_A.abs().max() <= bound
    assert update.scaling == pytest.approx(3.0 / 2.0)


def test_step_schedule_equals_torch_cosine_annealing():
    lr, eta_min, steps = 2e-4, 1e-6, 60
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=eta_min)
    torch_lrs = []
    for _ in range(steps):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [schedule.lr_at_step(s, lr=lr, min_lr=eta_min, total_steps=steps) for s in range(steps)]
    assert ours == pytest.approx(torch_lrs, rel=1e-10, abs=0)


def _fit(clip, run_dir=None, resume=False, on_epoch_end=None, seed=3):
    torch.manual_seed(seed)
    method = _lora(clip, iterations=5, batch_size=4)
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(
        torch.randn(8, 3, 32, 32, generator=g), torch.arange(8) % len(CLASSES)
    )
    lrs: list[float] = []
    hook = register_optimizer_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    try:
        result = engine.fit(
            method, data, settings=EngineSettings(deterministic=True), seed=seed,
            run_dir=run_dir, resume=resume, progress=False, ctx=distributed.Dist(),
            on_epoch_end=on_epoch_end,
        )  # fmt: skip
    finally:
        hook.remove()
    return method, result, lrs


def test_iterations_train_that_many_steps_on_the_per_step_cosine(tiny_clip):
    """8 images in batches of 4: 2 steps an epoch, so 5 iterations are 3 epochs, the last of 1."""
    _, result, lrs = _fit(tiny_clip)
    assert result.epochs == 3 and [s.images for s in result.history] == [8, 8, 4]
    assert lrs == pytest.approx(
        [schedule.lr_at_step(s, lr=2e-4, min_lr=1e-6, total_steps=5) for s in range(5)],
        rel=1e-12,
    )


def test_iterations_resume_after_a_kill_ends_with_the_same_lora(tiny_clip, tmp_path):
    full, _, _ = _fit(tiny_clip, tmp_path / "full")

    def kill(stats):
        if stats.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_clip, tmp_path / "cut", on_epoch_end=kill)
    resumed, result, lrs = _fit(tiny_clip, tmp_path / "cut", resume=True)
    assert result.start_epoch == 1 and len(lrs) == 3
    for name, value in full.learned_state_dict().items():
        assert torch.equal(resumed.learned_state_dict()[name], value), name


def test_save_then_load_gives_identical_logits(tiny_clip, tmp_path):
    method = _lora(tiny_clip)
    _randomise(method)
    images = _images(tiny_clip)
    method.eval().save(tmp_path)
    loaded = CLIPLoRA.load(tmp_path, tiny_clip).eval()
    with torch.no_grad():
        assert torch.equal(method(images), loaded(images))


def test_prograd_rule_composes(tiny_clip):
    method = _lora(tiny_clip, gradient_rule="prograd")
    _randomise(method)
    out = method.train().backward_step(_images(tiny_clip), torch.tensor([0, 1]))
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in method.trainable_parameters())


def test_text_only_lora_runs_on_a_resnet_clip(tiny_rn_clip):
    method = _lora(tiny_rn_clip, encoder="text")
    assert not method.lora_vision and method.num_trainable_parameters() > 0
    with pytest.raises(MethodError, match="encoder 'both' .* needs a ViT"):
        _lora(tiny_rn_clip)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"rank": 0}, "rank must be >= 1"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"alpha": -1.0}, "alpha must be > 0"),
        ({"position": "middle"}, "position must be one of"),
        ({"encoder": "image"}, "encoder must be one of"),
        ({"params": ("q", "x")}, "params must be a non-empty list"),
        ({"logit_scale": -1.0}, "logit_scale must be > 0"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ({"iterations": -1}, "iterations must be >= 0"),
        ({"lr_schedule": "step", "warmup_epochs": 1}, "warmup_epochs must be 0"),
    ],
)
def test_a_bad_setting_is_one_clear_error(tiny_clip, bad, fragment):
    with pytest.raises(MethodError, match=fragment):
        create_method("clip_lora", tiny_clip, CLASSES, **bad)


def test_a_position_with_no_block_is_a_clear_error(tiny_clip):
    with pytest.raises(MethodError, match="position 'bottom' selects no block of the 2-block"):
        create_method("clip_lora", tiny_clip, CLASSES, position="bottom")
