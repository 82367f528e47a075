"""A method from one new file in another package: found through the `vlprompt.methods` entry
point, with no vlprompt file edited. It registers, trains, saves and loads, runs in `bench` and
shows in `vlprompt methods`."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

import vlprompt
from test_engine_helpers import TINY_VIT
from vlprompt.cli import main
from vlprompt.errors import MethodError
from vlprompt.methods import get_method_class, list_methods, registry

pytestmark = pytest.mark.usefixtures("isolated_home")

TOY_METHOD = '''
"""A bias-only prompt: one learned vector added to every class's frozen text feature."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.methods import MethodConfig, PromptMethod, register_method


@dataclass
class BiasOnlyConfig(MethodConfig):
    epochs: int = 2
    batch_size: int = 4
    lr: float = 0.5


@register_method
class BiasOnly(PromptMethod):
    """A learned shift of the text features."""

    name = "bias_only"
    config_class = BiasOnlyConfig
    frozen_image_encoder = True

    def __init__(self, clip, classnames, config):
        super().__init__(clip, classnames, config)
        self.bias = nn.Parameter(torch.zeros(clip.embed_dim))

    def logits_from_features(self, image_features):
        text = F.normalize(self.zeroshot_text_features().float() + self.bias, dim=-1)
        return self.clip.logit_scale * image_features.float() @ text.t()

    def forward(self, images):
        return self.logits_from_features(self.clip.encode_image(images, normalize=True))
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """A package `toy_bias_plugin` on sys.path whose metadata declares the entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_bias_plugin.py").write_text(textwrap.dedent(TOY_METHOD))
    info = site / "toy_bias_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-bias-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vlprompt.methods]\nbias_only = toy_bias_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))  # dropped afterwards
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.delitem(__import__("sys").modules, "toy_bias_plugin", raising=False)
    return site


def _common(world):
    return ["--root", str(world["data"]), "--backbone", TINY_VIT,
            "--pretrained", str(world["ckpt"]), "--deterministic", "-q"]  # fmt: skip


def test_a_plugin_method_registers_trains_saves_loads_and_benches(
    toy_plugin, world, tmp_path, capsys
):
    assert "bias_only" in list_methods()
    assert get_method_class("bias_only").__module__ == "toy_bias_plugin"

    run_dir = tmp_path / "run"
    argv = ["train", "--method", "bias_only", "--dataset", "imagefolder", "--shots", "4"]
    assert main([*argv, *_common(world), "-o", str(run_dir)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "bias_only" and config["method_config"]["epochs"] == 2

    run = vlprompt.load_run(run_dir)
    assert run.method.bias.abs().sum() > 0  # it learned something
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        again = vlprompt.load_run(run_dir).method
        assert torch.equal(run.method(images), again(images))

    bench = tmp_path / "bench"
    argv = [
        "bench",
        "base2new",
        "--methods",
        "bias_only,test_tiny",
        "--datasets",
        "imagefolder",
        "--seeds",
        "1",
        "--shots",
        "4",
        "--set",
        "epochs=1",
        "--no-report",
        "-o",
        str(bench),
    ]
    assert main([*argv, *_common(world)[:-2], "-q"]) == 0  # fmt: skip
    records = [json.loads(x) for x in (bench / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["subsample"]) for r in records) == [
        ("bias_only", "base"), ("bias_only", "new"), ("test_tiny", "base"), ("test_tiny", "new")
    ]  # fmt: skip

    capsys.readouterr()
    assert main(["methods"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("bias_only"))
    assert "A learned shift of the text features." in line


def test_a_plugin_that_fails_to_import_is_one_clear_error(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "broken_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "broken_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n"
    )
    (site / "broken_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[vlprompt.methods]\nbroken = broken_plugin_missing_module\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.raises(MethodError, match=r"plugin 'broken' .*failed to import.*ModuleNotFound"):
        list_methods()
    monkeypatch.setattr(registry, "_plugins_loaded", True)
