"""Settings that change only speed or memory (field metadata RUNTIME) are not part of a run's
identity: a resume may change them, and the numbers stay the same."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import vlprompt
from test_engine_helpers import TINY_VIT
from vlprompt.config import config_differences
from vlprompt.methods import get_method_class
from vlprompt.methods.base import runtime_settings

pytestmark = pytest.mark.usefixtures("isolated_home")


def _coop(world, out, **kw):
    return vlprompt.train(
        "coop", "imagefolder", root=world["data"], backbone=TINY_VIT, pretrained=world["ckpt"],
        shots=4, output_dir=out, progress=False, deterministic=True, epochs=2, batch_size=4,
        n_ctx=4, evaluate=False, **kw,
    )  # fmt: skip


def test_the_speed_settings_are_marked_runtime():
    for name in ("coop", "cocoop", "kgcoop", "prograd"):
        assert runtime_settings(get_method_class(name).config_class) == {
            "text_chunk_size", "text_checkpoint",
        }  # fmt: skip
    assert runtime_settings(get_method_class("rpo").config_class) == {"text_chunk_size"}


def test_config_differences_leave_runtime_settings_out():
    from vlprompt.api import resolve_config

    a = resolve_config("coop", "imagefolder", backbone=TINY_VIT, pretrained=None)
    b = resolve_config("coop", "imagefolder", backbone=TINY_VIT, pretrained=None,
                       overrides={"text_chunk_size": 1, "text_checkpoint": "always"})  # fmt: skip
    c = resolve_config("coop", "imagefolder", backbone=TINY_VIT, pretrained=None,
                       overrides={"n_ctx": 2})  # fmt: skip
    assert config_differences(a, b) == []
    assert config_differences(a, c) == ["method_config.n_ctx: 16 -> 2"]


def test_a_resume_may_change_the_chunk_size_and_ends_with_the_same_prompts(world, tmp_path):
    _coop(world, tmp_path / "whole")

    def stop(stats):
        if stats.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _coop(world, tmp_path / "cut", on_epoch_end=stop)
    resumed = _coop(world, tmp_path / "cut", resume=True, text_chunk_size=1,
                    text_checkpoint="always")  # fmt: skip
    assert resumed.config.method_config["text_chunk_size"] == 1  # this call's value is used
    assert "resumed from" in (tmp_path / "cut" / "log.txt").read_text()
    a = load_file(str(tmp_path / "whole" / "prompts.safetensors"))
    b = load_file(str(tmp_path / "cut" / "prompts.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


def test_a_sweep_rerun_with_another_chunk_size_is_accepted(world, tmp_path):
    from vlprompt.protocols import run_bench

    common = dict(
        root=world["data"], backbone=TINY_VIT, pretrained=str(world["ckpt"]), seeds=[1], shots=2,
        output_dir=tmp_path / "sweep", report=False,
        config_overrides={"epochs": 1, "n_ctx": 4},
    )  # fmt: skip
    first = run_bench("fewshot", ["coop"], ["imagefolder"], **common)
    assert first.ok and len(first.trained) == 1
    common["config_overrides"] = {**common["config_overrides"], "text_chunk_size": 1}
    again = run_bench("fewshot", ["coop"], ["imagefolder"], **common)
    assert again.ok and again.skipped == first.trained  # same run: nothing repeated
    common["config_overrides"] = {**common["config_overrides"], "n_ctx": 2}
    with pytest.raises(vlprompt.protocols.BenchError, match="method_config.n_ctx: 4 -> 2"):
        run_bench("fewshot", ["coop"], ["imagefolder"], **common)
