"""vlprompt never writes, truncates or deletes through a symbolic link inside a run or sweep
folder (vlprompt.run_folder): a linked entry is refused with one line naming it, and the link's
target keeps every byte (and, for a file, its modification time)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_engine_helpers import TINY_VIT
from vlprompt.cli import main
from vlprompt.run_folder import (
    CHECKPOINT_DIR,
    LOCK_FILE,
    LOG_FILE,
    MARKER_FILE,
    RESULTS_FILE,
    FolderError,
    append_result,
    claim_folder,
    clear_run,
    folder_lock,
    write_file,
)

pytestmark = pytest.mark.usefixtures("isolated_home")

FILE_ENTRIES = [LOCK_FILE, MARKER_FILE, "config.json", LOG_FILE, RESULTS_FILE]
FOLDER_ENTRIES = [CHECKPOINT_DIR, "tensorboard"]
COMMANDS = ["train", "overwrite", "eval"]


def _train_argv(world, out, *extra):
    return [
        "train", "--method", "test_tiny", "--dataset", "imagefolder",
        "--root", str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
        "--shots", "4", "--epochs", "1", "--deterministic", "-q", "--tensorboard",
        "-o", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """A finished run with every entry of the layout (lock, tensorboard/ and checkpoints/ too)."""
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        run = tmp_path_factory.mktemp("trained") / "run"
        assert main(_train_argv(world, run)) == 0
    finally:
        if old is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old
    names = {p.name for p in run.iterdir()}
    assert set(FILE_ENTRIES + FOLDER_ENTRIES) <= names, names
    return run


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """A file's bytes and mtime, or every file's under a folder (the listing, with bytes)."""
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    return {
        str(p.relative_to(path.parent)): (
            p.read_bytes() if p.is_file() else b"<dir>",
            p.stat().st_mtime_ns,
        )
        for p in files
    }


def _link_entry(run: Path, name: str, user: Path) -> Path:
    """Replace `run/name` with a link to a user's file or folder holding a copy of it (a valid
    marker, a real config: the most tempting targets); return the target."""
    entry = run / name
    target = user / f"my_{name.strip('.')}"
    if entry.is_dir():
        shutil.copytree(entry, target)
        (target / "my_notes.txt").write_text("my own file in my own folder\n")
        shutil.rmtree(entry)
    else:
        target.write_bytes(entry.read_bytes() + b"")
        entry.unlink()
    os.symlink(target, entry)
    return target


def _command(world, run: Path, command: str) -> list[str]:
    if command == "eval":
        return ["eval", str(run), "--split", "val"]
    return _train_argv(world, run, *(["--overwrite"] if command == "overwrite" else []))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("vlprompt: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", FILE_ENTRIES + FOLDER_ENTRIES)
def test_a_linked_entry_of_a_run_is_refused_and_its_target_is_untouched(
    world, trained, tmp_path, capsys, name, command
):
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    user = tmp_path / "user"
    user.mkdir()
    target = _link_entry(run, name, user)
    before = _snapshot(target)
    assert main(_command(world, run, command)) == 2
    line = _one_error_line(capsys)
    assert f"{run / name} is a symbolic link" in line and "nothing was changed" in line, line
    assert _snapshot(target) == before
    assert sorted(p.name for p in user.iterdir()) == [target.name]
    assert (run / name).is_symlink()  # the link itself is left as it was, too


def test_the_known_defects_the_lock_and_overwrite_through_links(world, trained, tmp_path, capsys):
    """The two reported cases, end to end: a linked lock is not truncated by a re-run, and
    --overwrite with a linked checkpoints/ neither deletes nor fills the user's folder."""
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("three years of lab notes\n")
    (run / LOCK_FILE).unlink()
    os.symlink(notes, run / LOCK_FILE)
    assert main(_train_argv(world, run)) == 2
    assert str(run / LOCK_FILE) in _one_error_line(capsys)
    assert notes.read_text() == "three years of lab notes\n"

    (run / LOCK_FILE).unlink()
    mine = tmp_path / "my_checkpoints"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine\n")
    shutil.rmtree(run / CHECKPOINT_DIR)
    os.symlink(mine, run / CHECKPOINT_DIR)
    assert main(_train_argv(world, run, "--overwrite")) == 2
    assert str(run / CHECKPOINT_DIR) in _one_error_line(capsys)
    assert sorted(p.name for p in mine.iterdir()) == ["keep.txt"]


# ---- each writer on its own (a link that appears after the up-front check) ----------------------
def test_the_lock_never_opens_a_link(tmp_path):
    folder = claim_folder(tmp_path / "run", "run")
    user = tmp_path / "user.txt"
    user.write_text("mine\n")
    os.symlink(user, folder / LOCK_FILE)
    with pytest.raises(FolderError, match="is a symbolic link"):
        with folder_lock(folder):
            pass
    assert user.read_text() == "mine\n"


@pytest.mark.parametrize("name", [RESULTS_FILE, "summary.csv"])
def test_appends_and_atomic_writes_never_go_through_a_link(tmp_path, name):
    folder = claim_folder(tmp_path / "sweep", "sweep")
    user = tmp_path / "user.txt"
    user.write_text("mine\n")
    os.symlink(user, folder / name)
    with pytest.raises(FolderError, match=f"{folder / name} is a symbolic link"):
        if name == RESULTS_FILE:
            append_result(folder, {"accuracy": 1.0})
        else:
            write_file(folder, name, "a,b\n")
    assert user.read_text() == "mine\n"


def test_clear_run_refuses_a_linked_checkpoints_folder_before_removing_anything(tmp_path):
    run = claim_folder(tmp_path / "run", "run")
    (run / "config.json").write_text("{}")
    mine = tmp_path / "mine"
    (mine / "epoch-0001").mkdir(parents=True)
    os.symlink(mine, run / CHECKPOINT_DIR)
    with pytest.raises(FolderError, match="checkpoints is a symbolic link"):
        clear_run(run)
    assert (run / "config.json").exists() and (mine / "epoch-0001").is_dir()


def test_a_linked_checkpoint_inside_checkpoints_is_refused(tmp_path):
    run = claim_folder(tmp_path / "run", "run")
    (run / CHECKPOINT_DIR).mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    os.symlink(mine, run / CHECKPOINT_DIR / "epoch-0001")
    with pytest.raises(FolderError, match="epoch-0001 is a symbolic link"):
        claim_folder(run, "run")


# ---- sweep folders ------------------------------------------------------------------------------
def _bench_argv(world, out):
    return ["bench", "fewshot", "--methods", "zsclip", "--datasets", "imagefolder", "--root",
            str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
            "--seeds", "1", "--shots", "1", "-q", "-o", str(out)]  # fmt: skip


@pytest.mark.parametrize("name", [RESULTS_FILE, "summary.md", "plots", "fewshot"])
def test_a_linked_entry_of_a_sweep_is_refused_and_its_target_is_untouched(
    world, tmp_path, capsys, name
):
    sweep = claim_folder(tmp_path / "sweep", "sweep")
    target = tmp_path / "user" / name
    if name in ("plots", "fewshot"):  # a folder (fewshot/: where the sweep's runs go)
        target.mkdir(parents=True)
        (target / "mine.png").write_bytes(b"my plot")
    else:
        target.parent.mkdir()
        target.write_text("my own table\n")
    os.symlink(target, sweep / name)
    before = _snapshot(target)
    assert main(_bench_argv(world, sweep)) == 2
    line = _one_error_line(capsys)
    assert f"{sweep / name} is a symbolic link" in line, line
    assert _snapshot(target) == before
