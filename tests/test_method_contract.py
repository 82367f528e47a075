"""The method contract of `vlprompt.methods.base.PromptMethod`: every capability the engine,
evaluation and the view pool use is declared there with a default, every setting has a help
text, and the engine uses the declared parameter groups and end-of-epoch step."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from torch.utils.data import TensorDataset

import vlprompt
from test_engine_helpers import TINY_VIT, TinyMethod
from vlprompt import engine
from vlprompt.cli import main
from vlprompt.config import EngineSettings
from vlprompt.methods import PromptMethod, create_method, get_method_class, list_methods
from vlprompt.methods.base import KeyedCache, features_key
from vlprompt.schedule import build_optimizer, set_lr
from vlprompt.view_pool import pool_kind

OWN = [n for n in list_methods() if get_method_class(n).__module__.startswith("vlprompt.")]
CLASSNAMES = ["dog", "cat", "red_car"]


@pytest.mark.parametrize("name", OWN)
def test_every_setting_has_a_help_text(name):
    missing = [
        f.name for f in fields(get_method_class(name).config_class) if not f.metadata.get("help")
    ]
    assert missing == []


def test_train_help_shows_what_each_setting_means(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--method", "coop", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "default: False; class-specific context" in out
    assert "default: 0.002; peak learning rate after warm-up" in out


def test_the_base_class_declares_every_capability_with_its_default(tiny_clip):
    method = TinyMethod(tiny_clip, CLASSNAMES, TinyMethod.config_class())
    assert PromptMethod.frozen_image_encoder is False
    assert PromptMethod.needs_training is True
    assert method.has_frozen_image_state is False
    assert method.fit_features(torch.zeros(2, 4), torch.zeros(2)) == {}
    method.on_epoch_end(1)  # a no-op
    assert [g["params"] for g in method.param_groups()] == [method.trainable_parameters()]
    with pytest.raises(NotImplementedError):
        PromptMethod.frozen_image_state(method, torch.zeros(1, 3, 32, 32))
    with pytest.raises(NotImplementedError):
        PromptMethod.logits_from_features(method, torch.zeros(1, 4))


def test_capabilities_of_the_built_in_methods(tiny_clip):
    rpo = create_method("rpo", tiny_clip, CLASSNAMES, K=2)
    assert rpo.has_frozen_image_state and pool_kind(rpo) == "frozen_state"
    unmasked = create_method("rpo", tiny_clip, CLASSNAMES, K=2, mask="none")
    assert not unmasked.has_frozen_image_state and pool_kind(unmasked) == "images"
    coop = create_method("coop", tiny_clip, CLASSNAMES, n_ctx=2)
    assert coop.frozen_image_encoder and pool_kind(coop) == "features"
    assert get_method_class("linear_probe").needs_training is False


def test_a_group_lr_scale_scales_the_schedules_learning_rate():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    config = vlprompt.methods.make_config("coop")
    optimizer = build_optimizer([{"params": [a]}, {"params": [b], "lr_scale": 10.0}], config)
    set_lr(optimizer, 0.002)
    assert [g["lr"] for g in optimizer.param_groups] == [0.002, 0.002 * 10.0]


class _GroupedTiny(TinyMethod):
    """TinyMethod with its shift in a group of its own and a record of the engine's calls."""

    def __init__(self, clip, classnames, config):
        super().__init__(clip, classnames, config)
        self.epochs_ended: list[int] = []

    def param_groups(self):
        return [{"params": [self.shift], "lr_scale": 0.5}]

    def on_epoch_end(self, epoch: int) -> None:
        self.epochs_ended.append(epoch)


def test_the_engine_uses_param_groups_and_calls_on_epoch_end(tiny_clip, monkeypatch):
    built = []

    def recording_build(params, config):
        optimizer = build_optimizer(params, config)
        built.append(optimizer)
        return optimizer

    monkeypatch.setattr(engine, "build_optimizer", recording_build)
    torch.manual_seed(0)
    method = _GroupedTiny(tiny_clip, CLASSNAMES, TinyMethod.config_class(epochs=2))
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.arange(8) % 3)
    result = engine.fit(method, data, settings=EngineSettings(), seed=0, progress=False)
    assert method.epochs_ended == [1, 2]
    assert [stats.lr for stats in result.history] == [method.config.warmup_lr, method.config.lr]
    (group,) = built[0].param_groups
    assert group["lr_scale"] == 0.5 and group["lr"] == 0.5 * method.config.lr


def test_the_constant_warmup_lr_is_every_groups_unscaled(tiny_clip, monkeypatch):
    """Dassl's ConstantWarmupScheduler gives WARMUP_CONS_LR to every group (Skip Tuning's
    staged groups included); `lr_scale` applies from the cosine epochs on."""
    seen = []

    def recording_set_lr(optimizer, lr, warmup=False):
        set_lr(optimizer, lr, warmup)
        seen.append([g["lr"] for g in optimizer.param_groups])

    monkeypatch.setattr(engine, "set_lr", recording_set_lr)
    torch.manual_seed(0)
    method = _GroupedTiny(tiny_clip, CLASSNAMES, TinyMethod.config_class(epochs=2))
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.arange(8) % 3)
    engine.fit(method, data, settings=EngineSettings(), seed=0, progress=False)
    assert seen == [[method.config.warmup_lr], [0.5 * method.config.lr]]


@pytest.mark.usefixtures("isolated_home")
def test_the_linear_probe_is_fitted_by_its_own_fit(world, tmp_path):
    run = vlprompt.train(
        "linear_probe", "imagefolder", root=world["data"], backbone=TINY_VIT,
        pretrained=world["ckpt"], output_dir=tmp_path / "lp", shots=4, progress=False,
        deterministic=True, c_grid=(1.0, 100.0), search_steps=1, evaluate=False,
    )  # fmt: skip
    assert float(run.method.c_value) > 0  # 0 = not fitted
    assert run.status["epochs"] == 0


def test_a_keyed_cache_recomputes_when_its_key_changes(tiny_clip):
    cache, calls = KeyedCache(), []
    key = features_key(tiny_clip, CLASSNAMES, "a photo of a {}.")
    assert key[-3:] == (tiny_clip.device, tiny_clip.dtype, None)
    cache.get(key, lambda: calls.append(1) or torch.zeros(1))
    cache.get(key, lambda: calls.append(1) or torch.zeros(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        other = features_key(tiny_clip, CLASSNAMES, "a photo of a {}.")
        assert features_key(tiny_clip, CLASSNAMES, "a photo of a {}.", fp32=True) == key
    assert other != key
    cache.get(other, lambda: calls.append(1) or torch.zeros(1))
    assert len(calls) == 2


def test_base2new_refuses_a_closed_set_method_before_any_work(tmp_path):
    from vlprompt.protocols import BenchError, run_bench
    from vlprompt.quickstart import QUICKSTART_METHODS, base2new_methods

    assert not get_method_class("linear_probe").classifies_new_classes
    assert "linear_probe" not in base2new_methods()
    assert set(QUICKSTART_METHODS) <= set(base2new_methods())
    assert {"zsclip", "coop", "prograd", "rpo", "ivlp"} <= set(base2new_methods())
    with pytest.raises(BenchError, match="'linear_probe' classifies only the classes it was"):
        run_bench("base2new", ["coop", "linear_probe"], ["mini_objects"], output_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()
