"""2SFS (two_stage): both stages and selective inference equal a plain reference written from the
paper's formulation on open_clip's own towers (logits and gradients, two tiny ViT shapes, both
implementations); the engine's stages (spans, fresh cosines, the head's start, the frozen part of
each stage, resume); save/load; the frozen backbone left as it was; bad settings."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from conftest import TINY_VIT
from test_rpo import _clip, _images
from vlprompt import distributed, engine, schedule
from vlprompt.api import EngineSettings
from vlprompt.errors import MethodError, RunError
from vlprompt.methods import create_method
from vlprompt.methods.two_stage import TwoStage, stage1_steps

BASE = ["cat", "dog", "red_car", "oak tree"]
NEW = ["blue bird", "green_apple"]
SHAPE_B = "vlprompt-test-vit-b"  # vision width 48 != text width 32, 3 heads, context 16
SHAPES = [TINY_VIT, SHAPE_B]
IMPLEMENTATIONS = ["fast", "reference"]


def _method(clip, classnames=BASE, **config) -> TwoStage:
    method = create_method("two_stage", clip, classnames, **config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # LayerNorms far from the backbone's: a missed swap shows
        for p in method.norms.values():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return method


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % len(BASE)


# ---- the plain reference: open_clip's own towers with the tuned LayerNorm values ----------------
class Reference:
    """The paper's formulation on a copy of open_clip's model: its ln_1/ln_2 of every block set to
    the method's values (as leaf tensors, for their gradients), all 77 token positions,
    `logit_scale.exp() * cos`."""

    def __init__(self, method: TwoStage) -> None:
        self.model = copy.deepcopy(method.clip.model)
        self.tokenizer = method.clip.tokenizer
        self.template = method.config.template
        self.norms: dict[str, torch.nn.Parameter] = {}
        for key, value in method.norms.items():
            tower, block, norm, kind = _parse(key)
            owner = self.model.transformer if tower == "text" else self.model.visual.transformer
            module = getattr(owner.resblocks[block], norm)
            param = torch.nn.Parameter(value.detach().clone())
            setattr(module, kind, param)
            self.norms[key] = param

    def text(self, classnames: list[str]) -> torch.Tensor:
        texts = [self.template.format(c.replace("_", " ")) for c in classnames]
        return F.normalize(self.model.encode_text(self.tokenizer(texts)), dim=-1)

    def image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(images), dim=-1)

    def logits(self, image: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.model.logit_scale.exp() * image @ rows.t()


def _parse(key: str) -> tuple[str, int, str, str]:
    tower, block, ln, number, kind = key.split("_")
    return tower, int(block), f"{ln}_{number}", kind


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", SHAPES)
def test_stage_one_equals_the_reference_in_logits_and_layernorm_gradients(name, implementation):
    clip = _clip(name)
    method = _method(clip, implementation=implementation).train()
    ref = Reference(method)
    images, labels = _images(clip, 6), _labels(6)
    out = method.backward_step(images, labels)
    want = ref.logits(ref.image(images), ref.text(BASE))
    F.cross_entropy(want, labels).backward()
    torch.testing.assert_close(out.logits, want.detach(), atol=1e-5, rtol=0)
    assert method.head.grad is None  # the head learns in stage 2 only
    for key, param in method.norms.items():
        torch.testing.assert_close(param.grad, ref.norms[key].grad, atol=1e-5, rtol=0)
    assert max(p.grad.abs().max() for p in method.norms.values()) > 1e-3  # gradients flow


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", SHAPES)
def test_stage_two_starts_from_the_tuned_text_and_equals_the_reference(name, implementation):
    clip = _clip(name)
    method = _method(clip, implementation=implementation).train()
    ref = Reference(method)
    method.on_train_step(3, 5)  # int(5 * 0.6) = 3: the first step of stage 2
    assert int(method.stage) == 1 and method.head_classnames == BASE
    with torch.no_grad():
        torch.testing.assert_close(method.head, ref.text(BASE), atol=1e-5, rtol=0)
        method.head.add_(0.2 * torch.randn_like(method.head))  # a head that has learned
    head = method.head.detach().clone().requires_grad_(True)
    images, labels = _images(clip, 6), _labels(6)
    out = method.backward_step(images, labels)
    with torch.no_grad():
        image = ref.image(images)
    want = ref.logits(image, F.normalize(head, dim=-1))
    F.cross_entropy(want, labels).backward()
    torch.testing.assert_close(out.logits, want.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(method.head.grad, head.grad, atol=1e-5, rtol=0)
    assert all(p.grad is None for p in method.norms.values())  # frozen in stage 2


@pytest.mark.parametrize("name", SHAPES)
def test_selective_inference_reads_the_head_for_base_and_the_tuned_text_for_new(name):
    clip = _clip(name)
    method = _method(clip)
    method.on_train_step(0, 1)  # stage1_fraction 0.6 of 1 step: straight to the head
    with torch.no_grad():
        method.head.add_(0.2 * torch.randn_like(method.head))
    ref = Reference(method)
    classes = [BASE[2], NEW[0], BASE[0], NEW[1]]
    images = _images(clip, 5)
    method.set_classnames(classes)
    with method.classifier():
        got = method(images)
    with torch.no_grad():
        new = ref.text(NEW)
        rows = torch.stack([method.head[2], new[0], method.head[0], new[1]])
        want = ref.logits(ref.image(images), F.normalize(rows, dim=-1))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # a base row is the head's, not the text's: the two differ here
    assert (F.normalize(method.head[2], dim=-1) - ref.text([BASE[2]])[0]).abs().max() > 1e-2


def test_the_backbone_is_frozen_clip_outside_the_passes(tiny_clip):
    before = {k: v.clone() for k, v in tiny_clip.model.state_dict().items()}
    method = _method(tiny_clip)
    images = _images(tiny_clip)
    zero_shot = method.zeroshot_logits(images)
    method.train().backward_step(images, _labels(2))
    after = tiny_clip.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny_clip.model.parameters())
    torch.testing.assert_close(method.zeroshot_logits(images), zero_shot, atol=0, rtol=0)
    with torch.no_grad():
        assert (method.eval()(images) - zero_shot).abs().max() > 1e-2  # the tuned norms act


def test_untouched_layernorms_give_zero_shot_clip(tiny_clip):
    method = create_method("two_stage", tiny_clip, BASE)
    images = _images(tiny_clip)
    with torch.no_grad():
        torch.testing.assert_close(
            method.eval()(images), method.zeroshot_logits(images), atol=1e-5, rtol=0
        )


# ---- the engine's stages ---------------------------------------------------------------------
def _fit(clip, run_dir=None, resume=False, on_epoch_end=None, iterations=5, fraction=0.6):
    torch.manual_seed(3)
    method = _method(clip, iterations=iterations, stage1_fraction=fraction, batch_size=4)
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32, generator=g), _labels(8))
    seen: list[tuple[list[float], int, torch.Tensor, torch.Tensor]] = []

    def record(opt, *_):
        norms = torch.cat([p.detach().flatten() for p in method.norms.values()])
        seen.append(([gr["lr"] for gr in opt.param_groups], int(method.stage), norms,
                     method.head.detach().clone()))  # fmt: skip

    hook = register_optimizer_step_pre_hook(record)
    try:
        result = engine.fit(
            method, data, settings=EngineSettings(deterministic=True), seed=3,
            run_dir=run_dir, resume=resume, progress=False, ctx=distributed.Dist(),
            on_epoch_end=on_epoch_end,
        )  # fmt: skip
    finally:
        hook.remove()
    return method, result, seen


def test_each_stage_has_its_own_cosine_and_learns_only_its_part(tiny_clip):
    """5 steps, 0.6: 3 LayerNorm steps, then 2 head steps, each a fresh CosineAnnealingLR."""
    method, result, seen = _fit(tiny_clip)
    assert result.epochs == 3 and len(seen) == 5
    switch = stage1_steps(5, 0.6)
    assert switch == 3
    want = []
    for steps in (switch, 5 - switch):  # torch's own schedulers, one per stage
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-6)
        for _ in range(steps):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    got_norms = [lrs[0] for lrs, *_ in seen]
    got_head = [lrs[1] for lrs, *_ in seen]
    assert got_norms == pytest.approx(want[:switch] + [0.0, 0.0], rel=1e-10, abs=0)
    assert got_head == pytest.approx([0.0] * switch + want[switch:], rel=1e-10, abs=0)
    assert [stage for _, stage, *_ in seen] == [0, 0, 0, 1, 1]
    norms = [n for _, _, n, _ in seen]
    heads = [h for *_, h in seen]
    assert not torch.equal(norms[0], norms[1])  # stage 1 moves the LayerNorms ...
    assert torch.equal(heads[0], heads[2]) and not heads[0].any()  # ... and not the head
    final_norms = torch.cat([p.detach().flatten() for p in method.norms.values()])
    assert torch.equal(norms[3], norms[4]) and torch.equal(norms[4], final_norms)
    assert not torch.equal(heads[3], heads[4])  # stage 2 moves the head
    with torch.no_grad():  # the head started as the tuned text features at the switch
        norms_at_switch = norms[3]
        check = _method(tiny_clip, iterations=5)
        offset = 0
        for p in check.norms.values():
            p.copy_(norms_at_switch[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        torch.testing.assert_close(heads[3], check.tuned_text_features(BASE), atol=1e-6, rtol=0)


@pytest.mark.parametrize("killed_after", [1, 2])  # 2 steps an epoch, the switch at step 3
def test_a_resume_before_or_after_the_switch_ends_with_the_same_state(
    tiny_clip, tmp_path, killed_after
):
    full, _, _ = _fit(tiny_clip, tmp_path / "full", iterations=6, fraction=0.5)

    def kill(stats):
        if stats.epoch == killed_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_clip, tmp_path / "cut", on_epoch_end=kill, iterations=6, fraction=0.5)
    resumed, result, seen = _fit(tiny_clip, tmp_path / "cut", resume=True, iterations=6,
                                 fraction=0.5)  # fmt: skip
    assert result.start_epoch == killed_after and len(seen) == 6 - 2 * killed_after
    assert [stage for _, stage, *_ in seen][-1] == 1
    for name, value in full.learned_state_dict().items():
        assert torch.equal(resumed.learned_state_dict()[name], value), name


def test_staged_lrs_is_zero_outside_each_span():
    spans = [(0, 3), (3, 5)]
    rates = [schedule.staged_lrs(s, lr=1.0, min_lr=0.0, spans=spans) for s in range(5)]
    assert [r[0] > 0 for r in rates] == [True, True, True, False, False]
    assert [r[1] > 0 for r in rates] == [False, False, False, True, True]
    assert rates[0] == [1.0, 0.0] and rates[3] == [0.0, 1.0]
    two_groups = torch.optim.AdamW(
        [{"params": [torch.nn.Parameter(torch.zeros(1))]},
         {"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 2.0}]
    )  # fmt: skip
    schedule.set_lr(two_groups, [0.5, 0.25])
    assert [g["lr"] for g in two_groups.param_groups] == [0.5, 0.5]  # times lr_scale
    with pytest.raises(RunError, match="1 learning rates for 2 parameter groups"):
        schedule.set_lr(two_groups, [0.5])


# ---- save / load, counts, settings ---------------------------------------------------------
def test_save_then_load_gives_identical_logits_on_base_and_new(tiny_clip, tmp_path):
    method = _method(tiny_clip)
    method.on_train_step(0, 1)
    with torch.no_grad():
        method.head.add_(0.2 * torch.randn_like(method.head))
    method.save(tmp_path)
    images = _images(tiny_clip, 3)
    for classes in (BASE, [NEW[0], BASE[1]]):
        loaded = TwoStage.load(tmp_path, tiny_clip, classes)
        method.set_classnames(classes)
        with torch.no_grad():
            assert torch.equal(loaded.eval()(images), method.eval()(images))
    assert int(loaded.stage) == 1 and loaded.head_classnames == BASE
    with pytest.raises(MethodError, match="head_classnames"):
        method.save(tmp_path / "other")  # it points at other classes than its head's


def test_only_the_layernorms_and_the_head_are_saved(tiny_clip):
    method = create_method("two_stage", tiny_clip, BASE)
    keys = set(method.learned_state_dict())
    assert keys == {"head", "stage"} | {f"norms.{k}" for k in method.norms}
    text = sum(4 * tiny_clip.text_width for _ in tiny_clip.text_blocks)
    vision = sum(4 * tiny_clip.vision_width for _ in tiny_clip.vision_blocks)
    assert method.num_trainable_parameters() == text + vision + len(BASE) * tiny_clip.embed_dim
    only_text = create_method("two_stage", tiny_clip, BASE, towers="text")
    assert only_text.num_trainable_parameters() == text + len(BASE) * tiny_clip.embed_dim


def test_prograd_rule_composes(tiny_clip):
    method = _method(tiny_clip, gradient_rule="prograd")
    out = method.train().backward_step(_images(tiny_clip), torch.tensor([0, 1]))
    assert out.gradients_synced and torch.isfinite(out.loss)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in method.norms.values())


def test_text_only_tuning_runs_on_a_resnet_clip(tiny_rn_clip):
    method = create_method("two_stage", tiny_rn_clip, BASE, towers="text")
    out = method.train().backward_step(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert torch.isfinite(out.loss)
    with pytest.raises(MethodError, match="towers 'both' .* needs a ViT"):
        create_method("two_stage", tiny_rn_clip, BASE)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"stage1_fraction": 1.5}, "stage1_fraction must be in"),
        ({"towers": "all"}, "towers must be one of"),
        ({"lr_schedule": "epoch"}, "needs lr_schedule 'step'"),
        ({"implementation": "quick"}, "implementation must be one of"),
    ],
)
def test_a_bad_setting_is_one_clear_error(tiny_clip, bad, fragment):
    with pytest.raises(MethodError, match=fragment):
        create_method("two_stage", tiny_clip, BASE, **bad)
