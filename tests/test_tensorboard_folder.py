"""A `--tensorboard` log folder that cannot be written (read-only, a file, under a file) is
refused with one line before the run folder changes (vlprompt.tracking.writable_log_folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_run_folder_symlinks import _train_argv  # a tiny --tensorboard run
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """A finished run with its tensorboard/ folder."""
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    try:
        run = tmp_path_factory.mktemp("trained") / "run"
        assert main(_train_argv(world, run)) == 0
    finally:
        if old is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old
    assert (run / "tensorboard").is_dir()
    return run


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (
            p.read_bytes() if p.is_file() else b"<dir>",
            p.stat().st_mtime_ns,
        )
        for p in sorted(root.rglob("*"))
    }


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "b'" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlprompt: error: "), err
    return lines[0]


def _read_only(folder: Path):
    """Make `folder` unwritable (chattr +i as root); return the undo command, or skip."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr is not available")
        return ["chattr", "-i", str(folder)]
    folder.chmod(0o555)
    return ["chmod", "755", str(folder)]


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
@pytest.mark.parametrize("kind", ["read-only", "a file"])
def test_an_unwritable_tensorboard_folder_is_one_line_and_nothing_changes(
    world, trained, tmp_path, capsys, kind, flag
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    board = run / "tensorboard"
    undo = None
    if kind == "a file":
        shutil.rmtree(board)
        board.write_text("my notes, not a log folder\n")
    else:
        undo = _read_only(board)
    before = _snapshot(tmp_path)
    try:
        assert main(_train_argv(world, run, flag)) == 2
        line = _one_error_line(capsys)
        assert str(board) in line and "without --tensorboard" in line, line
        assert "nothing was changed" in line
        expected = "is a file" if kind == "a file" else "not writable"
        assert expected in line, line
        assert _snapshot(tmp_path) == before
    finally:
        if undo:
            subprocess.run(undo, check=True)


def test_a_tensorboard_folder_under_a_file_is_one_line_and_nothing_changes(world, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    before = _snapshot(tmp_path)
    assert main(_train_argv(world, notes / "run")) == 2
    line = _one_error_line(capsys)
    assert str(notes) in line, line
    assert _snapshot(tmp_path) == before


def test_the_check_refuses_what_the_writer_could_not_write(tmp_path):
    from vlprompt.run_folder import FolderError
    from vlprompt.tracking import writable_log_folder

    assert writable_log_folder(tmp_path) == tmp_path / "tensorboard"  # not created
    assert not (tmp_path / "tensorboard").exists()
    (tmp_path / "tensorboard").write_text("x")
    with pytest.raises(FolderError, match="is a file"):
        writable_log_folder(tmp_path)
    with pytest.raises(FolderError, match="is not a folder"):
        writable_log_folder(tmp_path / "tensorboard")
