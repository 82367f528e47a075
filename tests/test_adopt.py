"""Run and sweep folders of an earlier release (no .vlprompt-folder marker) and folders with a
damaged marker: refused with one line that says what they are and how to carry them forward,
`vlprompt adopt` marks them, and then they work again."""

from __future__ import annotations

import json

import pytest

from test_engine_helpers import TINY_VIT
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture
def old_run(world, tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--method", "test_tiny", "--dataset", "imagefolder", "--root",
            str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
            "--shots", "2", "--epochs", "1", "-q", "-o", str(run)]  # fmt: skip
    assert main(argv) == 0
    (run / ".vlprompt-folder").unlink()  # as an earlier release left it
    (run / ".vlprompt-lock").unlink()
    return run


def test_an_unmarked_run_of_an_earlier_release_is_named_and_adopted(old_run, capsys):
    before = {p.name: p.read_bytes() for p in old_run.iterdir() if p.is_file()}
    assert main(["eval", str(old_run), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "a vlprompt run of an earlier release" in err and f"vlprompt adopt {old_run}" in err
    assert {p.name: p.read_bytes() for p in old_run.iterdir() if p.is_file()} == before
    assert main(["adopt", str(old_run)]) == 0
    assert json.loads((old_run / ".vlprompt-folder").read_text())["kind"] == "run"
    assert main(["eval", str(old_run), "--split", "val"]) == 0


def test_a_damaged_marker_is_called_damaged(old_run, capsys):
    (old_run / ".vlprompt-folder").write_text("{not json")
    assert main(["eval", str(old_run), "--split", "val"]) == 2
    assert "marker is damaged" in capsys.readouterr().err
    assert main(["adopt", str(old_run)]) == 0  # its files are a run: marked anew


def test_a_users_folder_is_not_adopted(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["adopt", str(tmp_path)]) == 2
    assert "neither a vlprompt run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
