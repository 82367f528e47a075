"""Bad values a user can give or leave on disk: non-finite or mistyped settings, templates, seeds
and devices, NaN prompts, damaged saved prompts, checkpoints and CLIP weight files, an empty
evaluation split. Each one is a VlpromptError with a message naming the value or file."""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlprompt
from conftest import TINY_VIT, tiny_vit_config
from test_engine_helpers import TinyMethod
from vlprompt import engine, run_status, schedule, seeding, train_state
from vlprompt.backbone import load_clip, register_model_config
from vlprompt.clip_weights import read_checkpoint
from vlprompt.config import (
    ConfigError,
    EngineSettings,
    RunConfig,
    RunError,
    TrainingDivergedError,
)
from vlprompt.errors import CheckpointError, DataError, MethodError
from vlprompt.evaluation import evaluate_items
from vlprompt.methods import create_method, get_method_class, make_config
from vlprompt.methods.saving import load_learned, read_method_info

BUILT_IN = ("coop", "cocoop", "kgcoop", "prograd", "rpo", "zsclip", "linear_probe")
PROMPT_METHODS = ("coop", "cocoop", "kgcoop", "prograd", "rpo", "zsclip")
NAMES = ["dog", "cat", "red_car"]
NON_FINITE = [math.nan, math.inf, -math.inf]
WIDE_VIT = "vlprompt-test-bad-input-w32"
register_model_config(WIDE_VIT, tiny_vit_config(text_width=32))


def _float_settings() -> list[tuple[str, str]]:
    """(method, setting) for every float-typed setting of every built-in method's config."""
    return [
        (name, f.name)
        for name in BUILT_IN
        for f in fields(get_method_class(name).config_class)
        if str(f.type) == "float"
    ]


# ---- 1. settings: finite numbers of the right kind, in range ------------------------------------
def test_every_method_has_float_settings_to_check():
    found = dict.fromkeys(BUILT_IN, 0)
    for name, _ in _float_settings():
        found[name] += 1
    assert all(count >= 6 for count in found.values()), found  # the recipe's floats at least
    assert ("kgcoop", "w") in _float_settings() and ("linear_probe", "default_c") in (
        _float_settings()
    )


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("method,setting", _float_settings())
def test_non_finite_float_settings_are_refused(method, setting, value):
    with pytest.raises(MethodError, match=rf"^{setting} must be a finite number, got {value!r}$"):
        make_config(method, **{setting: value})


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_non_finite_entries_of_the_c_grid_are_refused(value):
    with pytest.raises(MethodError, match=r"^c_grid\[1\] must be a finite number"):
        make_config("linear_probe", c_grid=(1.0, value))


def test_an_int_too_large_for_a_float_is_not_a_finite_setting():
    with pytest.raises(MethodError, match=r"^lr must be a finite number, got 1000"):
        make_config("coop", lr=10**400)


def test_a_non_finite_setting_through_the_api_is_a_run_error():
    from vlprompt.api import resolve_config  # a submodule: not loaded by `import vlprompt`

    with pytest.raises(RunError, match=r"method 'coop': lr must be a finite number, got nan"):
        resolve_config("coop", "imagefolder", overrides={"lr": float("nan")})


@pytest.mark.parametrize(
    "method,setting,value,message",
    [
        ("coop", "lr", True, r"lr must be a number, got True \(a true/false value\)"),
        ("coop", "lr", "0.01", r"lr must be a number, got the text '0\.01'; write the number "),
        ("coop", "lr", "fast", r"lr must be a number, got the text 'fast'$"),
        ("rpo", "lr", None, r"lr must be a number, got None \(NoneType\)"),
        ("kgcoop", "w", False, r"w must be a number, got False"),
        ("coop", "epochs", True, r"epochs must be a whole number, got True"),
        ("coop", "epochs", 2.5, r"epochs must be a whole number, got 2\.5 \(float\)"),
        ("coop", "epochs", "10", r"epochs must be a whole number, got the text '10'"),
        ("coop", "n_ctx", True, r"n_ctx must be a whole number, got True"),
        ("rpo", "K", True, r"K must be a whole number, got True"),
        ("cocoop", "meta_net_reduction", 16.0, r"meta_net_reduction must be a whole number"),
        ("linear_probe", "max_iter", "1000", r"max_iter must be a whole number"),
        ("coop", "csc", "yes", r"csc must be true or false, got the text 'yes'"),
        ("prograd", "pad_ctx_init", 1, r"pad_ctx_init must be true or false, got 1 \(int\)"),
        ("coop", "template", 3, r"template must be text, got 3 \(int\)"),
        ("coop", "optimizer", None, r"optimizer must be text, got None"),
        ("zsclip", "templates", "a {}", r"templates must be a list, got the text 'a \{\}'"),
        ("linear_probe", "c_grid", (1.0, True), r"c_grid\[1\] must be a number, got True"),
    ],
)
def test_settings_of_the_wrong_kind_are_refused_by_name(method, setting, value, message):
    with pytest.raises(MethodError, match=f"^{message}"):
        make_config(method, **{setting: value})


@pytest.mark.parametrize(
    "method,overrides,message",
    [
        ("coop", {"warmup_epochs": -1}, r"warmup_epochs must be >= 0 \(0 = no warm-up\), got -1"),
        ("coop", {"momentum": -0.1}, r"momentum must be in \[0, 1\) .*got -0\.1"),
        ("coop", {"momentum": 1.0}, r"momentum must be in \[0, 1\) .*got 1\.0"),
        ("rpo", {"weight_decay": -1e-4}, r"weight_decay must be >= 0, got -0\.0001"),
        ("coop", {"warmup_lr": 0.0}, r"warmup_lr must be > 0 when warmup_epochs is 1, got 0\.0"),
        ("coop", {"warmup_lr": -1e-5, "warmup_epochs": 2}, r"warmup_lr must be > 0 when"),
        ("prograd", {"prograd_temperature": 0.0}, r"prograd_temperature must be > 0"),
        ("prograd", {"prograd_temperature": -1.0}, r"prograd_temperature must be > 0"),
        ("prograd", {"prograd_lambda": -0.5}, r"prograd_lambda must be >= 0 .*got -0\.5"),
        ("coop", {"lr": 0}, r"lr must be > 0, got 0"),
        ("coop", {"text_chunk_size": 0}, r"text_chunk_size must be >= 1, got 0"),
        ("cocoop", {"meta_net_reduction": 0}, r"meta_net_reduction must be >= 1, got 0"),
        ("kgcoop", {"w": -1.0}, r"w must be >= 0, got -1\.0"),
        ("rpo", {"K": 0}, r"RPO needs K >= 1 prompt pairs, got K=0"),
        ("linear_probe", {"max_iter": 0}, r"max_iter must be >= 1 .*got 0"),
        ("linear_probe", {"default_c": 0.0}, r"default_c must be > 0 .*got 0\.0"),
        ("linear_probe", {"c_grid": ()}, r"c_grid must hold positive values"),
        ("linear_probe", {"c_grid": (1.0, -1.0)}, r"c_grid must hold positive values"),
        ("zsclip", {"epochs": 0}, r"epochs must be >= 1, got 0"),
    ],
)
def test_settings_out_of_range_are_refused(method, overrides, message):
    with pytest.raises(MethodError, match=f"^{message}"):
        make_config(method, **overrides)


def test_the_config_refuses_what_torch_would_refuse_with_a_raw_error(tiny_clip):
    """torch.optim.SGD raises a bare ValueError for a negative momentum or weight decay: the
    config refuses them first, as MethodError (a ValueError, so resolve_config wraps it)."""
    for bad in ({"momentum": -0.5}, {"weight_decay": -1.0}):
        with pytest.raises(ValueError, match="Invalid"):
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, **bad)
        with pytest.raises(MethodError) as info:
            make_config("coop", **bad)
        assert isinstance(info.value, ValueError) and next(iter(bad)) in str(info.value)


def test_an_unused_warmup_lr_may_be_zero_and_ints_are_numbers():
    config = make_config("coop", warmup_epochs=0, warmup_lr=0.0, lr=1)
    assert (config.warmup_epochs, config.warmup_lr, config.lr) == (0, 0.0, 1)
    assert schedule.lr_at_epoch(0, lr=1, warmup_lr=0.0, warmup_epochs=0, epochs=200) == 1.0
    assert make_config("kgcoop", w=0).w == 0
    assert make_config("linear_probe", c_grid=[1, 10]).c_grid == (1.0, 10.0)


# ---- 2. templates ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,overrides,message",
    [
        ("coop", {"template": "no placeholder"}, r"^template 'no placeholder' .*exactly one"),
        ("rpo", {"template": "a {} and a {}"}, r"^template 'a \{\} and a \{\}' .*exactly one"),
        ("kgcoop", {"template": "a {name} photo of {}."}, r"^template 'a \{name\} photo"),
        ("prograd", {"template": "a photo of {} }"}, r"^template 'a photo of \{\} \}'"),
        ("zsclip", {"templates": ("a {}.", "bad")}, r"^templates\[1\]: template 'bad'"),
        ("zsclip", {"templates": ("a {}.", 7)}, r"^templates\[1\] must be text, got 7"),
        ("linear_probe", {"template": "{0} {}"}, r"^template '\{0\} \{\}'"),
    ],
)
def test_bad_templates_are_refused(method, overrides, message):
    with pytest.raises(MethodError, match=message):
        make_config(method, **overrides)


def test_templates_are_checked_with_the_data_sets_check_template(monkeypatch):
    import vlprompt.data.templates as templates

    seen = []

    def refuse(template):
        seen.append(template)
        if template.startswith("x"):
            raise DataError(f"template {template!r} refused by check_template")
        return template

    monkeypatch.setattr(templates, "check_template", refuse)
    with pytest.raises(MethodError, match=r"^template 'x \{\}\.' refused by check_template$"):
        make_config("coop", template="x {}.")
    with pytest.raises(MethodError, match=r"^templates\[1\]: template 'x \{\}' refused"):
        make_config("zsclip", template="a {}.", templates=("b {}", "x {}"))
    assert seen == ["x {}.", "a {}.", "b {}", "x {}"]


def test_literal_braces_in_a_template_are_fine(tiny_clip):
    method = create_method("zsclip", tiny_clip, NAMES, template="a {{logo}} of a {}.")
    assert method.config.template == "a {{logo}} of a {}."
    assert method.text_features().shape == (3, tiny_clip.embed_dim)


# ---- 3. seed, device, engine and run settings ------------------------------------------------
def _run(**kw) -> RunConfig:
    return RunConfig(method="coop", dataset="imagefolder", method_config={}, **kw)


@pytest.mark.parametrize(
    "seed,message",
    [
        (2**32, r"seed must be in 0\.\.4294967295 \(2\*\*32 - 1, numpy's limit\), got 4294967296"),
        (-1, r"seed must be in 0\.\.4294967295 .*got -1"),
        (True, r"seed must be a whole number, got True"),
        (1.5, r"seed must be a whole number, got 1\.5"),
    ],
)
def test_seeds_outside_numpys_range_are_refused(seed, message):
    with pytest.raises(ConfigError, match=message):
        _run(seed=seed)


def test_the_largest_seed_is_accepted_and_seeds_everything():
    assert _run(seed=2**32 - 1).seed == 2**32 - 1 and _run(seed=0).seed == 0
    seeding.seed_everything(2**32 - 1)  # numpy, torch and python accept it


@pytest.mark.parametrize("device", ["gpu0", "cuda:abc", "CPU", "", "cuda:-1"])
def test_devices_torch_does_not_understand_are_refused_with_examples(device):
    with pytest.raises(ConfigError, match=rf"device {device!r} is not a device name torch "):
        EngineSettings(device=device)
    with pytest.raises(ConfigError, match=r"such as cpu, cuda, cuda:1, mps"):
        EngineSettings(device=device)


def test_device_names_torch_understands_are_accepted():
    for device in ("cpu", "cuda", "cuda:1", "mps"):
        assert EngineSettings(device=device).device == device
    assert EngineSettings(device=torch.device("cpu")).device == "cpu"
    with pytest.raises(ConfigError, match=r"device must be a device name such as cpu"):
        EngineSettings(device=0)


@pytest.mark.parametrize(
    "setting,value,message",
    [
        ("num_workers", True, r"num_workers must be a whole number, got True"),
        ("num_workers", "4", r"num_workers must be a whole number, got '4'"),
        ("eval_batch_size", True, r"eval_batch_size must be a whole number, got True"),
        ("eval_batch_size", 10.0, r"eval_batch_size must be a whole number, got 10\.0"),
        ("keep_checkpoints", False, r"keep_checkpoints must be a whole number, got False"),
        ("view_pool", True, r"view_pool must be a whole number >= 0, got True"),
        ("deterministic", "yes", r"deterministic must be true or false, got 'yes'"),
        ("crop_min_scale", math.nan, r"crop_min_scale must be a number in \(0, 1\]"),
        ("crop_min_scale", math.inf, r"crop_min_scale must be a number in \(0, 1\]"),
        ("crop_min_scale", True, r"crop_min_scale must be a number in \(0, 1\]"),
    ],
)
def test_engine_settings_of_the_wrong_kind_are_refused(setting, value, message):
    with pytest.raises(ConfigError, match=message):
        EngineSettings(**{setting: value})


def test_a_run_config_needs_mappings_for_its_nested_settings():
    with pytest.raises(ConfigError, match=r"engine must be a mapping of engine settings"):
        _run(engine=["cpu"])
    with pytest.raises(ConfigError, match=r"method_config must be a mapping"):
        RunConfig(method="coop", dataset="imagefolder", method_config=[1])
    with pytest.raises(ConfigError, match=r"device 'gpu0' is not a device name"):
        RunConfig.from_dict(
            {"method": "coop", "dataset": "x", "method_config": {}, "engine": {"device": "gpu0"}}
        )


# ---- 4. NaN / inf learned prompts never pass silently ----------------------------------------
def _non_finite_files(folder: Path) -> list[str]:
    """Every safetensors file under `folder` that holds a NaN/inf float tensor."""
    bad = []
    for path in sorted(folder.rglob("*.safetensors")):
        tensors = load_file(str(path))
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in tensors.values()):
            bad.append(str(path.relative_to(folder)))
    return bad


def _train(world, out, **kw):
    kw.setdefault("shots", 4)
    kw.setdefault("deterministic", True)
    return vlprompt.train(
        "test_tiny", "imagefolder", root=world["data"], backbone=TINY_VIT,
        pretrained=world["ckpt"], output_dir=out, progress=False, **kw,
    )  # fmt: skip


@pytest.mark.usefixtures("isolated_home")
def test_a_huge_learning_rate_stops_training_and_leaves_no_nan_file(world, tmp_path):
    """Epoch 1 is the warm-up (lr 0.05); epoch 2 runs at lr 1e30 and overflows."""
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"epoch 2/3.*epoch-0001 is kept"):
        _train(world, out, epochs=3, lr=1e30)
    assert json.loads((out / "checkpoints/latest.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-0001", "latest.json"]
    assert not (out / "prompts.safetensors").exists() and not run_status.is_run_finished(out)
    assert list(out.rglob("*.safetensors")) and _non_finite_files(out) == []


@pytest.mark.usefixtures("isolated_home")
def test_nan_parameters_after_a_finite_last_loss_are_caught_before_the_checkpoint(
    world, tmp_path, monkeypatch
):
    """The last step of the last epoch has a finite loss but a NaN gradient, so the update
    makes the parameters NaN: no later loss would show it, the end-of-epoch check does."""
    calls = {"n": 0}
    original = TinyMethod.backward_step

    def nan_gradient_at_the_end(self, images, labels, scale=lambda t: t):
        calls["n"] += 1
        out = original(self, images, labels, scale)
        if calls["n"] == 9:  # 3 steps per epoch: epoch 3, step 3
            self.shift.grad.fill_(float("nan"))
        return out

    monkeypatch.setattr(TinyMethod, "backward_step", nan_gradient_at_the_end)
    out = tmp_path / "run"
    with pytest.raises(
        TrainingDivergedError,
        match=r"parameters hold NaN or infinite values after epoch 3/3 .*although every "
        r"training loss was finite.*epoch-0002 is kept",
    ):
        _train(world, out, epochs=3)
    assert calls["n"] == 9
    assert json.loads((out / "checkpoints/latest.json").read_text())["epoch"] == 2
    assert not (out / "checkpoints/epoch-0003").exists()
    assert not (out / "prompts.safetensors").exists()
    assert _non_finite_files(out) == []


def test_fit_without_a_run_folder_reports_the_nan_parameters_too(tiny_clip, monkeypatch):
    method = TinyMethod(tiny_clip, ["a", "b"], TinyMethod.config_class(epochs=1))
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
    original = TinyMethod.backward_step

    def nan_gradient(self, images, labels, scale=lambda t: t):
        out = original(self, images, labels, scale)
        self.shift.grad.fill_(float("inf"))
        return out

    monkeypatch.setattr(TinyMethod, "backward_step", nan_gradient)
    with pytest.raises(TrainingDivergedError, match=r"after epoch 1/1 .*no epoch had finished"):
        engine.fit(method, data, settings=EngineSettings(), seed=1)


def test_saving_nan_prompts_is_refused_and_writes_nothing(tiny_clip, tmp_path):
    method = create_method("coop", tiny_clip, NAMES, n_ctx=2)
    with torch.no_grad():
        method.ctx[0, 0] = float("nan")
    with pytest.raises(MethodError, match=r"refusing to save coop's .*'ctx' hold NaN"):
        method.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_loading_prompts_with_non_finite_values_is_refused(tiny_clip, tmp_path, value):
    create_method("coop", tiny_clip, NAMES, n_ctx=2).save(tmp_path)
    path = tmp_path / "prompts.safetensors"
    tensors = load_file(str(path))
    tensors["ctx"][1, 3] = value
    save_file(tensors, str(path))
    with pytest.raises(
        MethodError,
        match=r"prompts\.safetensors: tensor\(s\) 'ctx' hold NaN or infinite values.*train the "
        r"run again",
    ):
        load_learned(tmp_path, tiny_clip)


def _checkpoint(tiny_clip, folder: Path):
    """A TinyMethod checkpoint after one SGD step, and a fresh method + optimizer to load it."""
    method = TinyMethod(tiny_clip, ["a", "b"], TinyMethod.config_class())
    opt = schedule.build_optimizer(method.trainable_parameters(), method.config)
    method.backward_step(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    opt.step()
    ckpt = train_state.save_checkpoint(folder, 1, method, opt, None, {"loss": 1.0})
    other = TinyMethod(tiny_clip, ["a", "b"], TinyMethod.config_class())
    return ckpt, other, schedule.build_optimizer(other.trainable_parameters(), other.config)


def test_loading_a_checkpoint_with_nan_learned_tensors_is_refused(tiny_clip, tmp_path):
    ckpt, other, opt = _checkpoint(tiny_clip, tmp_path)
    tensors = load_file(str(ckpt / "state.safetensors"))
    tensors["learned.shift"][0] = float("nan")
    save_file(tensors, str(ckpt / "state.safetensors"))
    before = other.shift.detach().clone()
    with pytest.raises(
        RunError,
        match=r"state\.safetensors: learned tensor\(s\) 'shift' hold NaN or infinity; the "
        r"checkpoint is damaged\. Use --overwrite to restart, or delete .*checkpoints/",
    ):
        train_state.load_checkpoint(ckpt, other, opt, None)
    assert torch.equal(other.shift, before)


# ---- 5. saved prompts that do not fit --------------------------------------------------------
@pytest.fixture
def saved(tiny_clip, tmp_path):
    """A saved coop method (n_ctx 2) in tmp_path/coop."""
    folder = tmp_path / "coop"
    create_method("coop", tiny_clip, NAMES, n_ctx=2).save(folder)
    return folder


def _edit_info(folder: Path, **changes) -> None:
    path = folder / "method.json"
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info))


def test_prompts_of_another_method_are_refused(tiny_clip, tmp_path, saved):
    create_method("rpo", tiny_clip, NAMES, K=2).save(tmp_path / "rpo")
    shutil.copy(tmp_path / "rpo/prompts.safetensors", saved / "prompts.safetensors")
    with pytest.raises(
        MethodError,
        match=r"prompts\.safetensors holds tensor\(s\) \['text_prompt', 'vision_prompt'\] that "
        r"coop does not learn \(coop learns \['ctx'\]\), although method\.json says 'coop'.*"
        r"train the run again",
    ):
        load_learned(saved, tiny_clip)


def test_prompts_missing_a_tensor_are_refused(tiny_clip, tmp_path):
    create_method("rpo", tiny_clip, NAMES, K=2).save(tmp_path)
    tensors = load_file(str(tmp_path / "prompts.safetensors"))
    del tensors["vision_prompt"]
    save_file(tensors, str(tmp_path / "prompts.safetensors"))
    with pytest.raises(MethodError, match=r"lacks tensors \['vision_prompt'\] needed by rpo"):
        load_learned(tmp_path, tiny_clip)


def test_prompts_of_another_backbone_width_name_that_backbone(saved):
    other = load_clip(WIDE_VIT)
    with pytest.raises(
        MethodError,
        match=rf"tensor 'ctx' has shape \(2, 64\) but this backbone \({WIDE_VIT}\) needs "
        rf"\(2, 32\); the prompts were saved for {TINY_VIT} — load them on that backbone",
    ):
        load_learned(saved, other)


def test_prompts_that_do_not_fit_their_own_settings_are_refused(tiny_clip, saved):
    info = json.loads((saved / "method.json").read_text())
    _edit_info(saved, config={**info["config"], "n_ctx": 3})
    with pytest.raises(
        MethodError,
        match=r"tensor 'ctx' has shape \(2, 64\) .* needs \(3, 64\); the prompts were saved for "
        r"this backbone, so prompts\.safetensors does not fit the settings in method\.json",
    ):
        load_learned(saved, tiny_clip)


def test_an_unknown_method_in_method_json_is_refused(tiny_clip, saved):
    _edit_info(saved, method="coop_v9")
    with pytest.raises(
        MethodError, match=r"method\.json names the method 'coop_v9', which this vlprompt "
    ):
        load_learned(saved, tiny_clip)


def test_saved_settings_that_are_not_valid_are_refused(tiny_clip, saved):
    info = json.loads((saved / "method.json").read_text())
    _edit_info(saved, config={**info["config"], "lr": float("nan")})
    with pytest.raises(
        MethodError, match=r"method\.json: the saved coop settings are not valid \(lr must be"
    ):
        load_learned(saved, tiny_clip)
    _edit_info(saved, config={**info["config"], "from_the_future": 1})
    with pytest.raises(MethodError, match=r"not valid \(method 'coop' has no setting"):
        load_learned(saved, tiny_clip)


@pytest.mark.parametrize(
    "text,message",
    [
        ("{not json", r"method\.json is not readable JSON"),
        ("", r"method\.json is not readable JSON"),
        ("[1, 2]", r"method\.json holds list, not a JSON object with the keys method"),
        ('"coop"', r"method\.json holds str, not a JSON object"),
        ('{"method": "coop", "config": {}}', r"method\.json lacks the key\(s\) classnames"),
        ("{}", r"method\.json lacks the key\(s\) method, config, classnames"),
        (
            '{"method": 3, "config": {}, "classnames": ["a"]}',
            r"method\.json: its 'method' is 3, not a method name",
        ),
        (
            '{"method": "coop", "config": [], "classnames": ["a"]}',
            r"method\.json: its 'config' is \[\], not an object of settings",
        ),
        (
            '{"method": "coop", "config": {}, "classnames": "a,b"}',
            r"method\.json: its 'classnames' is 'a,b', not a list of class names",
        ),
        (
            '{"method": "coop", "config": {}, "classnames": ["a"], "backbone": "x"}',
            r"method\.json: its 'backbone' is 'x', not an object",
        ),
    ],
)
def test_a_damaged_method_json_is_refused(tiny_clip, saved, text, message):
    (saved / "method.json").write_text(text)
    with pytest.raises(MethodError, match=message + r".*train the run again or restore"):
        read_method_info(saved)
    with pytest.raises(MethodError, match=message):
        load_learned(saved, tiny_clip)


def test_a_folder_without_method_json_is_a_method_error_not_file_not_found(tmp_path):
    with pytest.raises(MethodError, match=r"holds no saved method: method\.json is missing") as e:
        read_method_info(tmp_path)
    assert not isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_a_damaged_prompts_file_is_refused(tiny_clip, saved, damage):
    path = saved / "prompts.safetensors"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01 not safetensors at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    what = "is missing" if damage == "missing" else "is not a readable safetensors file"
    with pytest.raises(
        MethodError, match=rf"prompts\.safetensors {what}.*train the run again or restore"
    ):
        load_learned(saved, tiny_clip)


def test_loading_another_method_class_is_a_method_error(tiny_clip, saved):
    with pytest.raises(MethodError, match=r"holds a 'coop' method, not 'rpo'"):
        get_method_class("rpo").load(saved, tiny_clip)


# ---- 5b. training checkpoints that do not fit ------------------------------------------------
HOW_TO = r"Use --overwrite to restart, or delete .*checkpoints/"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_tensor_file_is_a_run_error(tiny_clip, tmp_path, damage):
    ckpt, other, opt = _checkpoint(tiny_clip, tmp_path)
    path = ckpt / "state.safetensors"
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"PK\x03\x04" * 50, "empty": b""}[damage]
    )
    with pytest.raises(
        RunError, match=rf"epoch-0001/state\.safetensors: not a readable safetensors.*{HOW_TO}"
    ):
        train_state.load_checkpoint(ckpt, other, opt, None)


def _state_json_variants() -> list[tuple[str, object, str]]:
    return [
        ("not json", "{oops", r"not readable JSON"),
        ("a list", [1], r"holds list, not a JSON object"),
        ("no epoch", {"drop": "epoch"}, r"lacks the key\(s\) epoch"),
        ("no optimizer", {"drop": "optimizer"}, r"lacks the key\(s\) optimizer"),
        ("no rng", {"drop": "rng"}, r"lacks the key\(s\) rng"),
        ("text epoch", {"set": {"epoch": "1"}}, r"'epoch' is '1', not a whole number >= 1"),
        ("zero epoch", {"set": {"epoch": 0}}, r"'epoch' is 0, not a whole number >= 1"),
        ("list optimizer", {"set": {"optimizer": []}}, r"'optimizer' is not an object with"),
        ("empty rng", {"set": {"rng": {}}}, r"'rng' is not an object with the numpy and python"),
        ("bad scaler", {"set": {"scaler": 3}}, r"'scaler' is 3, not an object"),
        (
            "bad numpy state",
            {"set_rng_numpy": {"kind": "MT19937", "pos": "x", "has_gauss": 0, "gauss": 0.0}},
            r"its optimizer, grad-scaler or RNG state cannot be restored \(TypeError",
        ),
        (
            "other optimizer groups",
            {"set_groups": []},
            r"its optimizer, grad-scaler or RNG state cannot be restored \(ValueError",
        ),
    ]


@pytest.mark.parametrize(
    "change,message",
    [v[1:] for v in _state_json_variants()],
    ids=[v[0] for v in _state_json_variants()],
)
def test_a_malformed_state_json_is_a_run_error(tiny_clip, tmp_path, change, message):
    ckpt, other, opt = _checkpoint(tiny_clip, tmp_path)
    path = ckpt / "state.json"
    if isinstance(change, str):
        path.write_text(change)
    else:
        meta = json.loads(path.read_text())
        if isinstance(change, list):
            meta = change
        elif "drop" in change:
            del meta[change["drop"]]
        elif "set" in change:
            meta.update(change["set"])
        elif "set_rng_numpy" in change:
            meta["rng"]["numpy"] = change["set_rng_numpy"]
        else:
            meta["optimizer"]["param_groups"] = change["set_groups"]
        path.write_text(json.dumps(meta))
    with pytest.raises(RunError, match=rf"epoch-0001/state\.json: {message}.*{HOW_TO}"):
        train_state.load_checkpoint(ckpt, other, opt, None)


@pytest.mark.parametrize(
    "text,message",
    [
        ("{}", r"expected \{\"epoch\": N, \"path\": \"epoch-NNNN\"\}, got \{\}"),
        ("[]", r"expected .* got \[\]"),
        ('"epoch-0001"', r"expected .* got \"epoch-0001\""),
        ('{"epoch": 1, "path": 7}', r"expected .* got \{\"epoch\": 1, \"path\": 7\}"),
        ('{"epoch": 1, "path": "../.."}', r"expected .* got"),
        ("not json", r"not readable JSON"),
        ('{"epoch": 9, "path": "epoch-0009"}', r"it points at .*epoch-0009, which is missing"),
    ],
)
def test_a_malformed_latest_json_is_a_run_error(tiny_clip, tmp_path, text, message):
    _checkpoint(tiny_clip, tmp_path)
    (tmp_path / "checkpoints/latest.json").write_text(text)
    with pytest.raises(RunError, match=rf"checkpoints/latest\.json: {message}.*{HOW_TO}"):
        train_state.latest_checkpoint(tmp_path)


@pytest.mark.usefixtures("isolated_home")
def test_resuming_from_a_damaged_pointer_is_a_run_error(world, tmp_path):
    def stop(stats):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(world, out, epochs=2, evaluate=False, on_epoch_end=stop)
    (out / "checkpoints/latest.json").write_text("{}")
    with pytest.raises(RunError, match=rf"latest\.json: expected .*{HOW_TO}"):
        _train(world, out, epochs=2, evaluate=False, resume=True)


# ---- 5c. CLIP weight files -------------------------------------------------------------------
def _tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in load_clip(TINY_VIT).model.state_dict().items()}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _openai_pt(path: Path) -> None:
    extras = {"input_resolution": torch.tensor(32), "context_length": torch.tensor(77)}
    torch.save({**_tiny_state(), **extras, "vocab_size": torch.tensor(49408)}, path)


@pytest.mark.parametrize(
    "name,write,damage,message",
    [
        ("openai.pt", _openai_pt, _truncate, r"openai\.pt: not a readable checkpoint"),
        ("openai.pt", _openai_pt, "empty", r"openai\.pt: not a readable checkpoint"),
        ("model.bin", lambda p: torch.save(_tiny_state(), p), _truncate, r"model\.bin: not a "),
        ("model.pth", None, "garbage", r"model\.pth: not a readable checkpoint"),
        (
            "w.safetensors",
            lambda p: save_file(_tiny_state(), str(p)),
            _truncate,
            r"w\.safetensors: not a readable safetensors file .*download it again",
        ),
        ("w.safetensors", None, "garbage", r"w\.safetensors: not a readable safetensors file"),
        ("w.safetensors", None, "empty", r"w\.safetensors: not a readable safetensors file"),
        ("zip.pt", None, "bad zip", r"zip\.pt: not a readable checkpoint"),
    ],
)
def test_damaged_clip_weight_files_are_checkpoint_errors(tmp_path, name, write, damage, message):
    path = tmp_path / name
    if write is not None:
        write(path)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"\x89garbage, not weights" * 20)
    elif damage == "bad zip":  # a zip's end record with nothing valid before it
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 40 + b"PK\x05\x06" + b"\x00" * 18)
    elif callable(damage):
        damage(path)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        load_clip(TINY_VIT, pretrained=path)


def test_a_damaged_torchscript_archive_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/constants.pkl", b"\x80not a pickle")
        archive.writestr("archive/code/__torch__.py", b"garbage")
    with pytest.raises(CheckpointError, match=r"TorchScript archive.*trust_torchscript=True"):
        read_checkpoint(path)
    with pytest.raises(
        CheckpointError, match=r"ViT-tiny\.pt: not a readable TorchScript archive .*download it"
    ):
        read_checkpoint(path, trust_torchscript=True)


def _hf_folder(folder: Path, config: str = '{"text_config": {"hidden_act": "quick_gelu"}}'):
    folder.mkdir()
    (folder / "config.json").write_text(config)
    return folder


def test_damaged_hugging_face_folders_are_checkpoint_errors(tmp_path):
    bad_config = _hf_folder(tmp_path / "a", "[1, 2]")
    with pytest.raises(CheckpointError, match=r"a/config\.json: holds list, not a Hugging Face"):
        read_checkpoint(bad_config)
    text_config = _hf_folder(tmp_path / "b", '{"text_config": "quick"}')
    with pytest.raises(CheckpointError, match=r"b/config\.json: 'text_config' is not a JSON"):
        read_checkpoint(text_config)
    not_json = _hf_folder(tmp_path / "c", "{oops")
    with pytest.raises(CheckpointError, match=r"c/config\.json: not a readable JSON config"):
        read_checkpoint(not_json)

    truncated = _hf_folder(tmp_path / "d")
    save_file({"text_model.x": torch.zeros(100)}, str(truncated / "model.safetensors"))
    _truncate(truncated / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"d/model\.safetensors: not a readable safetensors"):
        read_checkpoint(truncated)

    index = _hf_folder(tmp_path / "e")
    (index / "model.safetensors.index.json").write_text("{oops")
    with pytest.raises(CheckpointError, match=r"index\.json: not a readable JSON index"):
        read_checkpoint(index)
    (index / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    with pytest.raises(CheckpointError, match=r"index\.json: not a safetensors index"):
        read_checkpoint(index)
    (index / "model.safetensors.index.json").write_text('{"weight_map": {"w": "shard-1.st"}}')
    with pytest.raises(CheckpointError, match=r"shard-1\.st: not a readable safetensors file"):
        read_checkpoint(index)

    pickle_folder = _hf_folder(tmp_path / "f")
    (pickle_folder / "pytorch_model.bin").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: not a readable checkpoint"):
        read_checkpoint(pickle_folder)

    partial = _hf_folder(tmp_path / "g")
    layer = "text_model.encoder.layers.0.self_attn"
    save_file(
        {f"{layer}.q_proj.weight": torch.zeros(4, 4), f"{layer}.k_proj.weight": torch.zeros(4, 4)},
        str(partial / "model.safetensors"),
    )
    with pytest.raises(
        CheckpointError, match=r"g: Hugging Face weights lack 'self_attn\.v_proj\.weight'"
    ):
        read_checkpoint(partial)
    alone = tmp_path / "alone.safetensors"
    save_file({"text_model.encoder.layers.0": torch.zeros(2)}, str(alone))
    with pytest.raises(CheckpointError, match=r"alone\.safetensors: Hugging Face key .* has no"):
        read_checkpoint(alone)


# ---- 6. an empty evaluation split ------------------------------------------------------------
def test_evaluating_an_empty_split_names_it(tiny_clip):
    method = create_method("zsclip", tiny_clip, NAMES)
    with pytest.raises(
        DataError, match=r"^the test split of oxford_pets has no images; nothing to evaluate"
    ):
        evaluate_items(method, [], split="test", dataset="oxford_pets")
    with pytest.raises(DataError, match=r"^the evaluation split has no images; nothing to "):
        evaluate_items(method, [])


# ---- 7. class lists the methods cannot use ---------------------------------------------------
@pytest.mark.parametrize("name", PROMPT_METHODS)
@pytest.mark.parametrize(
    "classnames,message",
    [
        ([], r"the class list is empty"),
        (["dog", 3], r"class name #2 of the class list is 3, not text"),
        (["dog", "  "], r"class name #2 of the class list is empty"),
        (["dog", "dog"], r"duplicate names: \['dog'\]"),
    ],
    ids=["empty", "not-text", "blank", "duplicate"],
)
def test_set_classnames_refuses_unusable_class_lists(tiny_clip, name, classnames, message):
    overrides = {"K": 2} if name == "rpo" else {}
    method = create_method(name, tiny_clip, NAMES, **overrides)
    with pytest.raises(MethodError, match=message):
        method.set_classnames(classnames)
    assert method.classnames == NAMES
    with pytest.raises(MethodError, match=message):
        create_method(name, tiny_clip, classnames, **overrides)


LONG = "a " + "very " * 80 + "long class name"


@pytest.mark.parametrize("name", ["coop", "cocoop", "kgcoop", "prograd"])
def test_a_class_name_longer_than_the_context_is_refused_and_the_list_kept(tiny_clip, name):
    own_init = {"ctx_from_template": False} if name == "prograd" else {}  # 2 slots < 4 words
    method = create_method(name, tiny_clip, NAMES, n_ctx=2, ctx_init="", **own_init)
    with pytest.raises(MethodError, match=r"class prompt .*needs more than the text encoder's 77"):
        method.set_classnames(["dog", LONG])
    assert method.classnames == NAMES
    with torch.no_grad():  # the method still works on its class list
        assert method(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_a_hand_crafted_prompt_longer_than_the_context_is_refused(tiny_clip):
    zs = create_method("zsclip", tiny_clip, ["dog", LONG])
    with pytest.raises(MethodError, match=r"prompt 'a photo of a a very .*needs more than .*77"):
        zs.text_features()
    kg = create_method("kgcoop", tiny_clip, NAMES, template="a photo of a {}" + " x" * 80)
    with pytest.raises(MethodError, match=r"hand-crafted prompt .*use a shorter template"):
        kg.zeroshot_text_features()
