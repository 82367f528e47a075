"""The training engine and the Python API: schedule, optimizer, checkpoints, resume, NaN, run
folders, evaluation. Tiny CLIP (conftest), a tiny registered method and tiny generated images."""

from __future__ import annotations

import dataclasses
import inspect
import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vlprompt
from test_engine_helpers import (
    TINY_VIT,
    TinyMethod,
)
from vlprompt import api, distributed, engine, run_status, schedule, train_state
from vlprompt.config import RunError, TrainingDivergedError
from vlprompt.errors import MethodError
from vlprompt.evaluation import accuracy, macro_accuracy, per_class_accuracy
from vlprompt.report import harmonic_mean

pytestmark = pytest.mark.usefixtures("isolated_home")


def _train(world, out, **kw):
    kw.setdefault("shots", 4)
    kw.setdefault("deterministic", True)
    return vlprompt.train(
        "test_tiny", "imagefolder", root=world["data"], backbone=TINY_VIT,
        pretrained=world["ckpt"], output_dir=out, progress=False, **kw,
    )  # fmt: skip


# ---- schedule / optimizer ----------------------------------------------------------------------
@pytest.mark.parametrize("warmup,epochs", [(1, 15), (2, 5), (0, 4), (1, 1)])
def test_lr_schedule_matches_dassl_constant_warmup_then_cosine(warmup, epochs):
    """Oracle: torch's CosineAnnealingLR(T_max=epochs) driven as Dassl's ConstantWarmupScheduler
    drives it (WARMUP_RECOUNT=True): warm-up epochs at cons_lr, the successor starts counting
    after warm-up and is stepped once per later epoch."""
    base, cons = 0.01, 1e-5
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(epochs))
    expected = []
    for e in range(epochs):
        expected.append(cons if e < warmup else cosine.get_last_lr()[0])
        if e >= warmup:
            opt.step()  # (no gradients: a no-op that keeps torch's call-order check quiet)
            cosine.step()
    ours = [
        schedule.lr_at_epoch(e, lr=base, warmup_lr=cons, warmup_epochs=warmup, epochs=epochs)
        for e in range(epochs)
    ]
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_train_takes_every_engine_setting_as_a_keyword_with_its_default():
    """api.train lists the engine settings in its signature (for help() and editors); they must
    be exactly EngineSettings' fields, with the same defaults."""
    params = inspect.signature(api.train).parameters
    for f in dataclasses.fields(api.EngineSettings):
        assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[f.name].default == f.default


def test_build_optimizer_follows_the_method_config(tiny_clip):
    method = TinyMethod(tiny_clip, ["a", "b"], TinyMethod.config_class(lr=0.3, momentum=0.8))
    sgd = schedule.build_optimizer(method.trainable_parameters(), method.config)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.3, 0.8, 5e-4)
    method.config.optimizer = "adamw"
    adamw = schedule.build_optimizer(method.trainable_parameters(), method.config)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 5e-4
    assert adamw.param_groups[0]["eps"] == 1e-8


def test_adam_adds_the_weight_decay_to_the_gradient_with_the_configs_eps(tiny_clip):
    """optimizer="adam" (TCP's: Dassl's Adam, eps 1e-3): one step equals Adam's update of the
    gradient plus weight_decay * p (L2, not AdamW's decoupled decay), written out by hand."""
    config = TinyMethod.config_class(optimizer="adam", lr=0.1, weight_decay=0.5, adam_eps=1e-3)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = schedule.build_optimizer([p], config)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["eps"] == 1e-3
    grad = torch.tensor([0.3, 0.0, -1e-4])
    p.grad = grad.clone()
    start = p.detach().clone()
    opt.step()
    g = grad + 0.5 * start  # L2 decay in the gradient
    m_hat, v_hat = g, g * g  # first step: bias corrections cancel (1 - beta) factors
    expected = start - 0.1 * m_hat / (v_hat.sqrt() + 1e-3)
    torch.testing.assert_close(p.detach(), expected)
    with pytest.raises(MethodError, match="adam_eps"):
        TinyMethod.config_class(optimizer="adam", adam_eps=0.0)
    with pytest.raises(MethodError, match="optimizer must be one of sgd, adam, adamw"):
        TinyMethod.config_class(optimizer="lamb")


def test_train_loader_drops_the_last_batch_like_dassl():
    """Dassl: drop_last = is_train and len(data_source) >= batch_size."""
    ds = torch.utils.data.TensorDataset(torch.zeros(10, 1), torch.zeros(10, dtype=torch.long))
    settings = vlprompt.api.EngineSettings()
    big, *_ = engine.train_loader(ds, batch_size=4, seed=1, settings=settings,
                                  ctx=distributed.Dist(), device=torch.device("cpu"))  # fmt: skip
    small, *_ = engine.train_loader(ds, batch_size=16, seed=1, settings=settings,
                                    ctx=distributed.Dist(), device=torch.device("cpu"))  # fmt: skip
    assert [len(b[0]) for b in big] == [4, 4]
    assert [len(b[0]) for b in small] == [10]


def test_checkpoint_round_trip_restores_learned_optimizer_and_rng(tiny_clip, tmp_path):
    method = TinyMethod(tiny_clip, ["a", "b"], TinyMethod.config_class(optimizer="adamw"))
    opt = schedule.build_optimizer(method.trainable_parameters(), method.config)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    for _ in range(2):
        opt.zero_grad()
        method.backward_step(images, labels)
        opt.step()
    train_state.save_checkpoint(tmp_path, 2, method, opt, None, {"loss": 1.0})
    want = (torch.rand(3), np.random.rand(3), random.random())
    saved_shift = method.shift.detach().clone()
    saved_opt = {k: v.clone() for k, v in opt.state[method.shift].items()}

    other = TinyMethod(tiny_clip, ["a", "b"], TinyMethod.config_class(optimizer="adamw"))
    other_opt = schedule.build_optimizer(other.trainable_parameters(), other.config)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    meta = train_state.load_checkpoint(
        train_state.latest_checkpoint(tmp_path), other, other_opt, None
    )
    assert meta["epoch"] == 2 and meta["loss"] == 1.0
    assert torch.equal(other.shift, saved_shift)
    for key, value in saved_opt.items():
        assert torch.equal(other_opt.state[other.shift][key], value)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    # no pickle anywhere: safetensors + JSON only
    names = sorted(p.name for p in (tmp_path / "checkpoints").rglob("*") if p.is_file())
    assert names == ["latest.json", "state.json", "state.safetensors"]


def test_metrics():
    preds, labels = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
    assert accuracy(preds, labels) == 75.0
    per = per_class_accuracy(preds, labels, ["a", "b", "c", "d"])
    assert per == {"a": 100.0, "b": 100.0, "c": 50.0}  # "d" has no image
    assert macro_accuracy(per) == pytest.approx(250 / 3)
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0


# ---- the API end to end -------------------------------------------------------------------------
def test_train_writes_the_run_folder_and_a_correct_result(world, tmp_path):
    run = _train(world, tmp_path / "run", epochs=2)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == [
        ".vlprompt-folder", ".vlprompt-lock", "calibration.json", "checkpoints", "config.json",
        "log.txt", "method.json", "prompts.safetensors", "results.jsonl", "splits.json",
        "status.json",
    ]  # fmt: skip
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"] == "test_tiny" and config["method_config"]["epochs"] == 2
    assert config["backbone"] == TINY_VIT and config["pretrained"] == str(world["ckpt"])
    assert "epoch 2/2" in (tmp_path / "run" / "log.txt").read_text()
    (record,) = [
        json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    ]
    for key in ("method", "dataset", "backbone", "shots", "seed", "subsample", "split",
                "accuracy", "n_images", "epochs", "wall_s"):  # fmt: skip
        assert key in record
    assert (record["split"], record["n_images"], record["epochs"]) == ("test", 12, 2)
    # the accuracy equals a recomputation from predictions of the reloaded run
    loaded = vlprompt.load_run(tmp_path / "run")
    tests = sorted((world["data"] / "test").rglob("*.png"))
    top1 = [p[0][0] for p in loaded.predict(tests, topk=1)]
    truth = [path.parent.name.replace("_", " ") for path in tests]
    recomputed = 100.0 * sum(a == b for a, b in zip(top1, truth)) / len(tests)
    assert record["accuracy"] == pytest.approx(recomputed, abs=1e-9)
    assert torch.equal(loaded.method.shift, run.method.shift)


def test_an_iterations_run_records_the_epochs_it_ran(world, tmp_path):
    """4 shots x 3 classes = 12 images, batch 4: 3 steps an epoch, so 7 iterations run 3 epochs
    (the last one step); status.json and the result record say 3, not the unused `epochs`."""
    _train(world, tmp_path / "run", epochs=50, iterations=7, warmup_epochs=0)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["epochs"], status["iterations"]) == (3, 7)
    (record,) = [
        json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    ]
    assert record["epochs"] == 3


def test_finished_run_is_reused_and_another_config_is_refused(world, tmp_path):
    out = tmp_path / "run"
    _train(world, out, epochs=1)
    stamp = (out / "prompts.safetensors").stat().st_mtime_ns
    again = _train(world, out, epochs=1)  # same config, finished: loaded, not retrained
    assert (out / "prompts.safetensors").stat().st_mtime_ns == stamp
    assert vlprompt.run_status.is_run_finished(out) and again.config.method_config["epochs"] == 1
    with pytest.raises(RunError, match=r"another config .*method_config\.epochs: 1 -> 2"):
        _train(world, out, epochs=2)
    with pytest.raises(RunError, match=r"another config .*seed: 1 -> 2"):
        _train(world, out, epochs=1, seed=2)
    replaced = _train(world, out, epochs=2, overwrite=True)
    assert replaced.config.method_config["epochs"] == 2
    assert len((out / "results.jsonl").read_text().splitlines()) == 1


def test_resume_after_a_kill_ends_with_the_same_prompts(world, tmp_path):
    """Deterministic mode on CPU: a run killed after epoch 2 of 4 and resumed equals an
    uninterrupted run exactly (random crops included: RNG states are checkpointed)."""
    full = _train(world, tmp_path / "full", epochs=4, evaluate=False)

    def kill(stats):
        if stats.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(world, tmp_path / "cut", epochs=4, evaluate=False, on_epoch_end=kill)
    assert not run_status.is_run_finished(tmp_path / "cut")
    assert json.loads((tmp_path / "cut/checkpoints/latest.json").read_text())["epoch"] == 2
    with pytest.raises(RunError, match="unfinished run .*--resume"):
        _train(world, tmp_path / "cut", epochs=4, evaluate=False)
    resumed = _train(world, tmp_path / "cut", epochs=4, evaluate=False, resume=True)
    assert "resumed from" in (tmp_path / "cut/log.txt").read_text()
    assert torch.equal(resumed.method.shift, full.method.shift)
    a = load_file(str(tmp_path / "full/prompts.safetensors"))
    b = load_file(str(tmp_path / "cut/prompts.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_says_where_and_keeps_the_last_good_checkpoint(world, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = TinyMethod.backward_step

    def poisoned(self, images, labels, scale=lambda t: t):
        calls["n"] += 1
        out = original(self, images, labels, scale)
        if calls["n"] == 5:  # 3 steps per epoch: epoch 2, step 2
            out.loss = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(TinyMethod, "backward_step", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2/3, step 2/3.*epoch-0001 is kept"):
        _train(world, tmp_path / "run", epochs=3)
    assert json.loads((tmp_path / "run/checkpoints/latest.json").read_text())["epoch"] == 1
    assert not run_status.is_run_finished(tmp_path / "run")
    assert not (tmp_path / "run" / "prompts.safetensors").exists()


def test_load_run_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    with pytest.raises(RunError, match="not a run folder: it has no config.json"):
        vlprompt.load_run(tmp_path)
    with pytest.raises(RunError, match="is not a folder"):
        vlprompt.load_run(tmp_path / "missing")


def test_base_trained_run_evaluates_on_new_classes(world, tmp_path):
    run = _train(world, tmp_path / "run", epochs=1, subsample="base")
    assert run.classnames == ["blue thing", "green thing"]  # base = first ceil(3/2) labels
    new = vlprompt.evaluate(run, subsample="new")
    assert (new["subsample"], new["n_classes"], new["n_images"]) == ("new", 1, 4)
    assert new["accuracy"] == 100.0  # one class: always right
    assert run.classnames == ["blue thing", "green thing"]  # restored after evaluation
    again = vlprompt.evaluate(tmp_path / "run", subsample="new")  # recorded: reused
    assert again == new
    assert len(run.results()) == 2


def test_a_closed_set_method_refuses_other_classes_at_evaluation(world, tmp_path, monkeypatch):
    """`classifies_new_classes = False` is the contract, whatever the method's set_classnames
    does: evaluating such a run on other classes is one clear error, not a number."""
    run = _train(world, tmp_path / "run", epochs=1, subsample="base")
    monkeypatch.setattr(TinyMethod, "classifies_new_classes", False)
    with pytest.raises(RunError, match="classifies only the 2 classes it was trained on"):
        vlprompt.evaluate(run, subsample="new")
    assert len(run.results()) == 1  # nothing recorded
    assert vlprompt.evaluate(run, subsample="base")["n_classes"] == 2  # its own classes: fine


def test_unknown_names_fail_with_the_choices(world, tmp_path):
    with pytest.raises(RunError, match="unknown method 'nope'.*Choices:.*test_tiny"):
        vlprompt.train("nope", "imagefolder", output_dir=tmp_path / "r")
    with pytest.raises(vlprompt.VlpromptError, match="unknown data set 'nope'.*imagefolder"):
        vlprompt.train("test_tiny", "nope", output_dir=tmp_path / "r")
    with pytest.raises(RunError, match="has no setting 'bogus'"):
        vlprompt.train("test_tiny", "imagefolder", output_dir=tmp_path / "r", bogus=1)


def test_vlprompt_evaluate_is_the_function_even_after_the_evaluation_module_loads():
    import vlprompt.evaluation  # noqa: F401

    assert vlprompt.evaluate is api.evaluate and vlprompt.train is api.train


def test_warm_feature_cache_means_no_image_encoder_pass(world, tmp_path, monkeypatch):
    """Frozen-image-encoder methods evaluate from cached features: once the cache is warm
    (training's own evaluation filled it), evaluating again never runs the image encoder."""
    run = _train(world, tmp_path / "run", epochs=1)
    first = run.results()[0]
    assert first["from_features"] is True

    def no_image_pass(*args, **kwargs):
        raise AssertionError("the image encoder ran although the feature cache is warm")

    monkeypatch.setattr(run.method.clip, "encode_image", no_image_pass)
    again = vlprompt.evaluate(run, reuse=False, record=False)
    assert again["accuracy"] == first["accuracy"] and again["n_images"] == first["n_images"]


def test_a_run_on_random_weights_reloads_the_same_backbone(world, tmp_path):
    run = vlprompt.train(
        "test_tiny", "imagefolder", root=world["data"], backbone=TINY_VIT, pretrained=None,
        shots=4, epochs=1, output_dir=tmp_path / "run", progress=False, evaluate=False,
    )  # fmt: skip
    image = sorted((world["data"] / "test").rglob("*.png"))[0]
    assert vlprompt.load_run(tmp_path / "run").predict([image]) == run.predict([image])
