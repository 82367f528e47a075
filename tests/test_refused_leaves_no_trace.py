"""A command refused before training leaves the output folder as it found it: no marker,
config, lock or log behind, so the corrected command is not told the folder "holds a run with
another config"."""

from __future__ import annotations

import pytest

from test_engine_helpers import TINY_VIT
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


def _argv(world, out, *extra, root=None):
    return ["train", "--method", "ivlp", "--dataset", "imagefolder", "--root",
            str(root or world["data"]), "--backbone", TINY_VIT, "--pretrained",
            str(world["ckpt"]), "--shots", "2", "--epochs", "1", "-q", "-o", str(out),
            *extra]  # fmt: skip


@pytest.mark.parametrize("bad", [("--depth-text", "99"), ("--n-ctx-vision", "0")])
def test_a_refused_setting_leaves_no_folder_and_the_fix_runs(bad, world, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(world, out, *bad)) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()
    assert main(_argv(world, out)) == 0  # the corrected command, same folder


def test_missing_data_leaves_an_empty_folder_empty(world, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    assert main(_argv(world, out, root=tmp_path / "no-such-data")) == 2
    assert list(out.iterdir()) == []


def test_a_failure_after_a_saved_epoch_keeps_the_run(world, tmp_path, monkeypatch):
    """Once an epoch is saved the folder holds a run to resume: nothing is removed."""
    from vlprompt import api

    def fail_after_training(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "_calibrate", fail_after_training)
    out = tmp_path / "run"
    assert main(_argv(world, out)) == 130  # interrupted
    assert (out / "config.json").is_file() and any((out / "checkpoints").iterdir())
