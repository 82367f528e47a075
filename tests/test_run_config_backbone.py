"""A backbone named in a run's config.json is checked like one named on the command line: an
`hf-hub:` or `local-dir:` model (open_clip fetches or reads those weights itself) loads only with
an explicit `allow_remote_weights` / `--allow-remote-weights`, never by a silent download, and a
`local-dir:` holding a pickle of more than tensors is one clear line."""

from __future__ import annotations

import argparse
import json
import os
import shutil

import open_clip
import pytest
import torch
from safetensors.torch import save_file

import vlprompt
from conftest import tiny_vit_config
from test_engine_helpers import TINY_VIT
from vlprompt.backbone import load_clip
from vlprompt.cli import main
from vlprompt.config import RunError
from vlprompt.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("remote") / "run"
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(out.parent / "home")
    try:
        vlprompt.train(
            "test_tiny", "imagefolder", root=world["data"], backbone=TINY_VIT,
            pretrained=world["ckpt"], output_dir=out, shots=4, epochs=1, deterministic=True,
            progress=False, evaluate=False,
        )  # fmt: skip
    finally:
        if old is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old
    return out


def _shared_run(trained, tmp_path, backbone, pretrained=None):
    """A copy of the run whose config.json names `backbone` (as a shared run folder might)."""
    run = tmp_path / "shared"
    shutil.copytree(trained, run)
    config = json.loads((run / "config.json").read_text())
    config.update(backbone=backbone, pretrained=pretrained)
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.fixture
def no_network(monkeypatch):
    """open_clip must not be asked for a schema model: that would be the download."""

    def guard(real):
        def call(name, *args, **kwargs):
            if str(name).startswith(("hf-hub:", "local-dir:")):
                raise AssertionError(f"open_clip was asked for {name}")
            return real(name, *args, **kwargs)

        return call

    monkeypatch.setattr(open_clip, "create_model", guard(open_clip.create_model))
    monkeypatch.setattr(open_clip, "get_tokenizer", guard(open_clip.get_tokenizer))


def _local_dir(folder, weights: str):
    """An open_clip local-dir folder of the tiny CLIP, its weights as `weights`."""
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": tiny_vit_config(), "preprocess_cfg": {}})
    )
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in load_clip(TINY_VIT).model.state_dict().items()}
    if weights == "safetensors":
        save_file(state, str(folder / "open_clip_model.safetensors"))
    else:  # a pickle holding an object besides the tensors
        torch.save(
            {**state, "extra": argparse.Namespace(x=1)}, folder / "open_clip_pytorch_model.bin"
        )
    return folder


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("vlprompt: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("backbone", ["hf-hub:someone/their-clip", "local-dir:/somewhere/clip"])
def test_a_schema_backbone_in_a_runs_config_needs_the_flag(
    trained, world, tmp_path, capsys, no_network, backbone
):
    run = _shared_run(trained, tmp_path, backbone)
    with pytest.raises(RunError, match="allow_remote_weights=True") as info:
        vlprompt.load_run(run)
    assert str(run / "config.json") in str(info.value) and backbone in str(info.value)
    with pytest.raises(RunError, match="--allow-remote-weights"):
        vlprompt.evaluate(run, record=False)
    image = sorted((world["data"] / "test").rglob("*.png"))[0]
    for argv in (["eval", str(run), "--no-record"], ["eval", str(run)],
                 ["predict", str(run), str(image)]):  # fmt: skip
        assert main(argv) == 2, argv
        line = _error_line(capsys)
        assert backbone in line and "pass --allow-remote-weights" in line, (argv, line)
    # `train --resume` without --method trains the saved config: its backbone must be named
    assert main(["train", "--resume", "-o", str(run), "-q"]) == 2
    assert f"name it yourself: --backbone {backbone}" in _error_line(capsys)


def test_resuming_a_run_whose_config_names_another_schema_backbone_is_refused(
    world, trained, tmp_path, no_network
):
    run = _shared_run(trained, tmp_path, "hf-hub:someone/their-clip")
    with pytest.raises(RunError, match="name it yourself: --backbone hf-hub:someone/their-clip"):
        vlprompt.train(
            "test_tiny", "imagefolder", root=world["data"], backbone=TINY_VIT,
            pretrained=world["ckpt"], output_dir=run, shots=4, epochs=1, deterministic=True,
            progress=False, resume=True,
        )  # fmt: skip


def test_with_the_flag_a_local_dir_backbone_loads_and_predicts_as_the_run_did(
    trained, world, tmp_path
):
    folder = _local_dir(tmp_path / "clip", "safetensors")
    run = _shared_run(trained, tmp_path, f"local-dir:{folder}")
    images = sorted((world["data"] / "test").rglob("*.png"))[:4]
    expected = vlprompt.load_run(trained).predict(images)
    assert vlprompt.load_run(run, allow_remote_weights=True).predict(images) == expected


def test_a_local_dir_holding_a_pickle_is_one_clear_line(trained, world, tmp_path, capsys):
    folder = _local_dir(tmp_path / "clip", "pickle")
    with pytest.raises(CheckpointError, match=r"cannot load 'local-dir:.*UnpicklingError"):
        load_clip(f"local-dir:{folder}")
    run = _shared_run(trained, tmp_path, f"local-dir:{folder}")
    image = sorted((world["data"] / "test").rglob("*.png"))[0]
    assert main(["predict", str(run), str(image), "--allow-remote-weights"]) == 2
    line = _error_line(capsys)
    assert "UnpicklingError" in line and str(folder) in line and ".safetensors" in line
