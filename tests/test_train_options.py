"""The train options are declared once (vlprompt.config.TrainOptions and EngineSettings): the
API's keywords, the CLI's flags, a sweep's per-run settings and the run identity all follow
from those fields, so a field added in one place only fails here."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from dataclasses import fields

import pytest

from vlprompt import api, cli
from vlprompt.config import (
    EngineSettings,
    RunConfig,
    TrainOptions,
    config_differences,
    non_identity_keys,
    split_train_kwargs,
    train_options,
)

OPTIONS = train_options()
NAMES = [o.name for o in OPTIONS]


def _flag(option) -> str:
    return (option.metadata.get("flags") or ("--" + option.name.replace("_", "-"),))[-1]


def test_every_option_is_declared_once_with_help():
    assert len(NAMES) == len(set(NAMES)) == len(fields(TrainOptions)) + len(fields(EngineSettings))
    for option in OPTIONS:
        assert option.metadata.get("help"), option.name
        assert option.owner in ("run", "engine", "call")


def test_train_takes_every_option_as_a_keyword_with_its_declared_default():
    params = inspect.signature(api.train).parameters
    keywords = {n: p for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert set(keywords) == set(NAMES)
    for option in OPTIONS:
        if option.name != "output_dir":  # required by train
            assert keywords[option.name].default == option.default, option.name


def test_train_config_takes_exactly_the_call_options():
    params = inspect.signature(api.train_config).parameters
    calls = {o.name for o in OPTIONS if o.owner == "call"}
    assert set(params) - {"wanted"} == calls


def test_the_run_options_are_the_run_configs_own_fields():
    own = {f.name for f in fields(RunConfig)} - {
        "method", "dataset", "method_config", "engine", "vlprompt_version"
    }  # fmt: skip
    assert own == {o.name for o in OPTIONS if o.owner == "run"}
    resolve = inspect.signature(api.resolve_config).parameters
    assert own <= set(resolve)


def test_split_train_kwargs_sends_the_rest_to_the_method():
    run, engine, call, method = split_train_kwargs(
        {"shots": 4, "view_pool": 2, "resume": True, "lr": 0.1, "K": 4}
    )
    assert (run, engine, call, method) == (
        {"shots": 4}, {"view_pool": 2}, {"resume": True}, {"lr": 0.1, "K": 4}
    )  # fmt: skip


@pytest.mark.parametrize("verb", ["train", "bench", "quickstart"])
def test_each_verb_lists_its_options_once_with_their_help(verb, capsys):
    argv = [verb, "--help"]
    with pytest.raises(SystemExit):
        cli.build_parser(argv).parse_args(argv)
    text = " ".join(capsys.readouterr().out.split())
    offered = [o for o in OPTIONS if verb in o.verbs]
    assert offered
    for option in offered:
        flag = _flag(option)
        assert text.count(f"{flag} ") + text.count(f"{flag},") >= 1, flag
        assert text.count(f"[{flag}") <= 1, flag  # once in the usage line
        first_words = " ".join(option.metadata["help"].split()[:3])
        assert first_words in text, (flag, first_words)


def _cli_value(option) -> list[str]:
    """A flag and a value for it that differs from the default."""
    flag = _flag(option)
    if cli._flag_type(option.annotation) is bool:
        return [flag]
    choices = option.metadata.get("choices")
    if choices:
        return [flag, next(c for c in choices if c != option.default)]
    if option.name in ("root", "backbone", "pretrained", "device", "split", "classnames_file"):
        return [flag, {"device": "cuda:1", "split": "0.6,0.2,0.2"}.get(option.name, "x")]
    return [flag, "0.5" if cli._flag_type(option.annotation) is float else "3"]


def test_every_bench_option_reaches_the_sweeps_runs(monkeypatch, tmp_path):
    seen = {}

    def fake_run_bench(protocol, methods, datasets, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("vlprompt.protocols.run_bench", fake_run_bench)
    argv = ["bench", "fewshot", "--methods", "coop", "--datasets", "mini_shapes", "-o",
            str(tmp_path / "s")]  # fmt: skip
    offered = [o for o in OPTIONS if "bench" in o.verbs]
    for option in offered:
        argv += _cli_value(option)
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert set(seen["train_kwargs"]) == {o.name for o in offered}
    for option in offered:
        assert seen["train_kwargs"][option.name] != option.default, option.name


def test_every_train_flag_reaches_the_train_call(monkeypatch, tmp_path):
    seen = {}

    def fake_train(method, dataset, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("vlprompt.api.train", fake_train)
    argv = ["train", "--method", "coop", "--dataset", "mini_shapes"]
    offered = [o for o in OPTIONS if "train" in o.verbs]
    for option in offered:
        argv += _cli_value(option)
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert {o.name for o in offered} <= set(seen)


def _changed(option):
    special = {"root": "/elsewhere", "preset": "coop", "backbone": "RN50", "pretrained": None,
               "device": "cuda:1", "subsample": "base", "precision": "bf16",
               "split": "0.6,0.2,0.2", "classnames_file": "/names.json",
               "select_on": "val", "batches": "one_class"}  # fmt: skip
    if option.name in special:
        return special[option.name]
    if isinstance(option.default, bool):
        return not option.default
    if option.default is None:
        return 3
    return (option.default * 2 or 3) if option.name != "crop_min_scale" else 0.5


def test_config_differences_compare_exactly_the_identity_options():
    saved = RunConfig(method="coop", dataset="mini_shapes", method_config={"lr": 0.002})
    for option in OPTIONS:
        if option.owner == "call":
            continue
        if option.owner == "engine":
            wanted = RunConfig(**{**saved.__dict__, "engine": EngineSettings(
                **{**saved.engine.__dict__, option.name: _changed(option)})})  # fmt: skip
            key = f"engine.{option.name}"
        else:
            wanted = RunConfig(**{**saved.__dict__, option.name: _changed(option)})
            key = option.name
        diffs = config_differences(saved, wanted)
        assert bool(diffs) == option.identity, (option.name, diffs)
        assert (key in non_identity_keys()) == (not option.identity)


def test_help_imports_neither_torch_nor_open_clip():
    code = (
        "import sys, contextlib, io\n"
        "from vlprompt.cli import main\n"
        "for argv in (['--help'], ['eval', '--help'], ['bench', '--help'], ['predict', '--help'],\n"
        "             ['export', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "print(json.dumps(['torch' in sys.modules, 'open_clip' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert json.loads(out.stdout) == [False, False]


def test_import_vlprompt_loads_no_torch_until_a_name_is_used():
    code = "import sys, vlprompt; print('torch' in sys.modules); vlprompt.train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
