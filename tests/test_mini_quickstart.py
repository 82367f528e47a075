"""The quickstart wiring: the mini backbone, the shipped weights and the mini settings."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import vlprompt.protocols
from vlprompt.mini import MODEL_NAME, checkpoint_path

qs = importlib.import_module("vlprompt.quickstart")


def test_quickstart_runs_base2new_with_the_tiny_clip_and_prints_the_table(
    monkeypatch, tmp_path, capsys
):
    calls = []
    summary = tmp_path / "summary.md"
    summary.write_text("| method | base | new |\n")

    def fake_run_bench(protocol, methods, datasets, **kwargs):
        calls.append((protocol, methods, datasets, kwargs))
        files = SimpleNamespace(
            markdown=summary, csv=tmp_path / "s.csv", plots=[tmp_path / "p.png"]
        )
        return SimpleNamespace(summary=files, failed={})

    monkeypatch.setattr(vlprompt.protocols, "run_bench", fake_run_bench)
    qs.quickstart(tmp_path / "out", quick=True)
    protocol, methods, datasets, kwargs = calls[0]
    assert protocol == "base2new"
    assert methods == list(qs.QUICKSTART_METHODS)
    assert datasets == [qs.QUICKSTART_DATASETS[0]] and kwargs["seeds"] == [1]
    assert kwargs["backbone"] == MODEL_NAME and kwargs["pretrained"] == str(checkpoint_path())
    # the mini preset: MINI_SETTINGS and the mini world's one departure from the papers, no
    # random crop (MINI_CROP_MIN_SCALE) for every method
    assert kwargs["preset"] == "mini" and kwargs["method_overrides"] is None
    assert kwargs["train_kwargs"] == {}
    out = capsys.readouterr().out
    assert "| method | base | new |" in out and "plot: " in out


def test_mini_bench_settings_override_one_method_only(monkeypatch, tmp_path):
    seen = {}

    def fake_run_bench(protocol, methods, datasets, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(summary=None, failed={})

    monkeypatch.setattr(vlprompt.protocols, "run_bench", fake_run_bench)
    qs.mini_bench("fewshot", tmp_path, methods=["coop", "rpo"], settings={"rpo": {"epochs": 2}})
    assert seen["method_overrides"] == {"rpo": {"epochs": 2}}  # over the mini preset's
    assert seen["preset"] == "mini"
    assert qs.MINI_SETTINGS["rpo"]["epochs"] != 2  # the module's settings are not mutated
    qs.mini_bench("fewshot", tmp_path, methods=["coop"], crop_min_scale=0.08)
    assert seen["train_kwargs"] == {"crop_min_scale": 0.08}  # the papers' crop, when asked


def test_cli_quickstart_takes_the_methods_to_compare(monkeypatch, tmp_path):
    from vlprompt.cli import main

    seen = {}

    def fake_quickstart(output_dir, methods=qs.QUICKSTART_METHODS, **kwargs):
        seen.update(output_dir=output_dir, methods=methods)

    monkeypatch.setattr(qs, "quickstart", fake_quickstart)
    assert main(["quickstart", "-o", str(tmp_path / "q"), "--methods", "rpo, ivlp"]) == 0
    assert seen["methods"] == ["rpo", "ivlp"]
    seen.clear()
    assert main(["quickstart", "-o", str(tmp_path / "q")]) == 0
    assert seen["methods"] == qs.QUICKSTART_METHODS  # the default table


class _Resolver:
    """A bench backend that resolves each run's config as the engine would (no training)."""

    def __init__(self):
        self.configs = {}

    def backend(self):
        return vlprompt.protocols.Backend(
            train=self.train, evaluate=lambda run, **k: {"accuracy": 50.0},
            load_run=lambda d, **k: None, is_finished=lambda d: False,
        )  # fmt: skip

    def train(self, method, dataset, **kwargs):
        from vlprompt.api import resolve_config
        from vlprompt.config import EngineSettings, split_train_kwargs

        run, engine, _, overrides = split_train_kwargs(kwargs)
        config = resolve_config(method, dataset, engine=EngineSettings(**engine),
                                overrides=overrides, **run)  # fmt: skip
        self.configs[(method, dataset, config.seed)] = config
        return config


def _identity(config):
    """What makes the numbers: the config less provenance (the preset's name) and runtime."""
    from vlprompt.config import RUNTIME_ENGINE_KEYS

    engine = {k: v for k, v in vars(config.engine).items() if k not in RUNTIME_ENGINE_KEYS}
    return (config.method_config, engine, config.backbone, config.pretrained, config.shots,
            config.seed, config.subsample)  # fmt: skip


def test_the_quickstart_resolves_to_the_same_runs_as_before_the_preset(tmp_path, monkeypatch):
    """The quickstart's runs under the mini preset are the runs it made before there was one:
    MINI_SETTINGS as method overrides and crop_min_scale 1 on the methods' own defaults."""
    import functools

    from vlprompt.api import resolve_config
    from vlprompt.config import EngineSettings

    engine = _Resolver()
    sweep = functools.partial(vlprompt.protocols.run_bench, backend=engine.backend(), report=False)
    monkeypatch.setattr(vlprompt.protocols, "run_bench", sweep)
    qs.quickstart(tmp_path / "q", seeds=(1, 2), log=lambda line: None)
    assert len(engine.configs) == len(qs.QUICKSTART_METHODS) * len(qs.QUICKSTART_DATASETS) * 2
    for (method, dataset, seed), config in engine.configs.items():
        before = resolve_config(
            method, dataset, backbone=MODEL_NAME, pretrained=str(checkpoint_path()), shots=16,
            seed=seed, subsample="base", preset="paper", overrides=qs.MINI_SETTINGS[method],
            engine=EngineSettings(crop_min_scale=qs.MINI_CROP_MIN_SCALE),
        )  # fmt: skip
        assert config.preset == "mini"
        assert _identity(config) == _identity(before), (method, dataset)


def test_cli_bench_on_mini_data_resolves_as_the_documented_mini_bench(tmp_path, monkeypatch,
                                                                     caplog):  # fmt: skip
    """README's `vlprompt bench base2new ... --datasets mini_...` and docs/mini-world.md's
    `mini_bench("base2new", ...)` make the same runs."""
    from vlprompt.cli import main

    engine = _Resolver()
    methods, datasets = ["zsclip", "coop", "rpo", "tip_adapter_f"], ["mini_shapes", "mini_sizes"]
    qs.mini_bench("base2new", tmp_path / "py", methods=methods, datasets=datasets, seeds=(1,),
                  backend=engine.backend(), report=False)  # fmt: skip
    python = dict(engine.configs)
    engine.configs.clear()
    monkeypatch.setattr(vlprompt.protocols, "default_backend", engine.backend)
    argv = ["bench", "base2new", "--methods", ",".join(methods), "--datasets", ",".join(datasets),
            "--seeds", "1", "--no-report", "-q", "-o", str(tmp_path / "cli")]  # fmt: skip
    caplog.set_level("INFO", logger="vlprompt")
    assert main(argv) == 0
    first = caplog.records[0].getMessage()  # the sweep says first which settings its runs get
    assert (
        first.startswith("preset mini (the default with the tiny CLIP)")
        and "--preset paper" in first
    )
    assert python.keys() == engine.configs.keys() and len(python) == 8
    for key, config in engine.configs.items():
        assert config.preset == python[key].preset == "mini", key
        assert config.to_dict() | {"root": None} == python[key].to_dict() | {"root": None}, key


def test_bench_with_the_papers_recipes_is_not_told_of_mini(tmp_path, caplog):
    engine = _Resolver()
    caplog.set_level("INFO", logger="vlprompt")
    vlprompt.protocols.run_bench("base2new", ["coop"], ["mini_shapes"], seeds=1, preset="paper",
                                 output_dir=tmp_path / "b", backend=engine.backend(),
                                 report=False)  # fmt: skip
    assert not any("preset mini" in r.getMessage() for r in caplog.records)
    (config,) = engine.configs.values()
    assert config.preset == "paper" and config.engine.crop_min_scale == 0.08
    assert config.method_config["epochs"] == 200  # CoOp's own


def test_deep_prompt_depth_is_the_papers_scaled_to_the_tiny_towers():
    """9 of 12 blocks per tower, floor-scaled, the last block prompt-free; the tiny CLIP's tower
    depths the rule reads are the shipped architecture's."""
    import json
    from importlib import resources

    from vlprompt.mini import settings

    assert [settings.scaled_prompt_depth(n) for n in (1, 2, 3, 4, 12, 24)] == [1, 1, 2, 3, 9, 18]
    shipped = json.loads(
        resources.files("vlprompt").joinpath("assets/vlprompt-mini-vit.json").read_text()
    )
    assert (settings.TINY_TEXT_BLOCKS, settings.TINY_VISION_BLOCKS) == (
        shipped["text_cfg"]["layers"],
        shipped["vision_cfg"]["layers"],
    )
    mini = settings.MINI_SETTINGS
    for method in ("ivlp", "promptsrc"):
        assert (mini[method]["depth_text"], mini[method]["depth_vision"]) == (1, 2)
    assert mini["maple"]["depth"] == 1
