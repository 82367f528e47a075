"""Options the README and the error messages promise: --trust-torchscript, the mini world's
default backbone, and errors raised inside DataLoader workers reaching the user as one line."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch

from test_clip_weights import _OpenAIArchive, _source
from test_engine_helpers import TINY_VIT
from vlprompt.api import resolve_config
from vlprompt.cli import build_parser, main
from vlprompt.config import PRECISION_CHOICES, EngineSettings
from vlprompt.mini import MODEL_NAME, checkpoint_path

pytestmark = pytest.mark.usefixtures("isolated_home")


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("vlprompt: error: "), err
    return err.splitlines()[-1]


def test_trust_torchscript_flag_exists_where_pretrained_weights_are_loaded(world, tmp_path, capsys):
    archive = torch.jit.trace(_OpenAIArchive(_source(True).model), (torch.randn(1, 3, 32, 32),))
    path = tmp_path / "tiny-openai.pt"
    archive.save(str(path))
    train = ["train", "--method", "zsclip", "--dataset", "imagefolder", "--root",
             str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(path), "--shots",
             "1", "-q", "-o", str(tmp_path / "run")]  # fmt: skip
    assert main(train) == 2
    assert "--trust-torchscript" in _last_error(capsys)

    assert main([*train, "--trust-torchscript"]) == 0
    capsys.readouterr()
    run = str(tmp_path / "run")
    image = str(world["data"] / "test" / "red_thing" / "0.png")
    for argv in (["eval", run, "--no-record"], ["predict", run, image]):
        assert main(argv) == 2  # loading the run loads the archive again: trust is asked again
        assert "--trust-torchscript" in _last_error(capsys)
        assert main([*argv, "--trust-torchscript"]) == 0
    bench = ["bench", "fewshot", "--methods", "zsclip", "--datasets", "imagefolder", "--root",
             str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(path), "--seeds",
             "1", "--shots", "1", "-q", "--no-report", "-o", str(tmp_path / "sweep")]  # fmt: skip
    assert main(bench) == 2
    assert "--trust-torchscript" in _last_error(capsys)
    assert main([*bench, "--trust-torchscript"]) == 0


def test_train_has_one_flag_per_engine_setting_with_its_help():
    """The engine flags are made from EngineSettings' fields: each field is a flag, with help."""
    train = build_parser(["train"])._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train._actions}
    for f in fields(EngineSettings):
        assert "--" + f.name.replace("_", "-") in flags[f.name].option_strings
        assert flags[f.name].help == f.metadata["help"]
    assert flags["precision"].choices == PRECISION_CHOICES


@pytest.mark.parametrize(
    ("dataset", "backbone", "pretrained", "expected"),
    [
        ("mini_objects", None, "openai", (MODEL_NAME, str(checkpoint_path()))),
        ("imagefolder", MODEL_NAME, "openai", (MODEL_NAME, str(checkpoint_path()))),
        ("imagefolder", None, "openai", ("ViT-B-16", "openai")),
        ("mini_objects", TINY_VIT, None, (TINY_VIT, None)),  # named: as asked
        ("mini_objects", MODEL_NAME, None, (MODEL_NAME, None)),  # random weights, as asked
    ],
)
def test_the_default_backbone_of_a_mini_data_set_is_the_shipped_tiny_clip(
    dataset, backbone, pretrained, expected
):
    config = resolve_config("zsclip", dataset, backbone=backbone, pretrained=pretrained)
    assert (config.backbone, config.pretrained) == expected


def test_train_on_a_mini_data_set_without_a_backbone_uses_the_tiny_clip(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--method", "zsclip", "--dataset", "mini_colors", "--root",
            str(tmp_path / "mini"), "--shots", "1", "-q", "--no-eval", "-o", str(run)]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == MODEL_NAME
    assert config["pretrained"] == str(checkpoint_path())


def test_an_error_in_a_dataloader_worker_is_the_original_one_line(world, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    broken = data / "train" / "red_thing" / "0.png"
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated PNG
    argv = ["train", "--method", "test_tiny", "--dataset", "imagefolder", "--root", str(data),
            "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]), "--shots", "8",
            "--epochs", "1", "--num-workers", "1", "-q", "-o", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    line = _last_error(capsys)
    assert line.startswith(f"vlprompt: error: cannot read image {broken}")
    assert "DataLoader worker" not in line and "Original" not in line


@pytest.mark.parametrize("form", [["--params", "q,v"], ["--set", "params=q,v"],
                                  ["--params", '["q", "v"]']])  # fmt: skip
def test_a_list_setting_takes_the_comma_form(form, monkeypatch, tmp_path):
    """CLIP-LoRA's help spells its list `q,v`: the flag and --set accept that form (and JSON)."""
    import vlprompt.api
    from vlprompt.cli import main

    seen = {}

    def fake_train(method, dataset, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(vlprompt.api, "train", fake_train)
    with pytest.raises(SystemExit):
        main(["train", "--method", "clip_lora", "--dataset", "mini_shapes", "-o",
              str(tmp_path / "r"), *form])  # fmt: skip
    assert list(seen["params"]) == ["q", "v"]
