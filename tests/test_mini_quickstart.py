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
    assert kwargs["method_overrides"]["coop"] == qs.MINI_SETTINGS["coop"]
    assert (
        kwargs["train_kwargs"]
        == {"crop_min_scale": qs.MINI_CROP_MIN_SCALE}
        == {"crop_min_scale": 1.0}
    )  # the mini world's one departure from the papers: no random crop
    out = capsys.readouterr().out
    assert "| method | base | new |" in out and "plot: " in out


def test_mini_bench_settings_override_one_method_only(monkeypatch, tmp_path):
    seen = {}

    def fake_run_bench(protocol, methods, datasets, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace(summary=None, failed={})

    monkeypatch.setattr(vlprompt.protocols, "run_bench", fake_run_bench)
    qs.mini_bench("fewshot", tmp_path, methods=["coop", "rpo"], settings={"rpo": {"epochs": 2}})
    assert seen["method_overrides"]["rpo"] == {**qs.MINI_SETTINGS["rpo"], "epochs": 2}
    assert seen["method_overrides"]["coop"] == qs.MINI_SETTINGS["coop"]
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
