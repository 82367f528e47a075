"""A user's files are sacred: vlprompt writes only into folders it marked, removes only its own
files there, and one process writes a folder at a time (vlprompt.run_folder)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_engine_helpers import TINY_VIT
from vlprompt.cli import main
from vlprompt.run_folder import (
    LOCK_FILE,
    MARKER_FILE,
    FolderError,
    claim_folder,
    folder_kind,
    folder_lock,
)

pytestmark = pytest.mark.usefixtures("isolated_home")

# user files that share the names of a run's layout
LAYOUT_NAMES = {
    "config.json": b'{"my": "own settings"}\n',
    "log.txt": b"my lab notebook\n",
    "results.jsonl": b'{"my": "results"}\n',
    "status.json": b'{"finished": true}\n',
    "method.json": b"{}\n",
    "prompts.safetensors": b"not ours",
    "checkpoints/latest.json": b'{"epoch": 1, "path": "epoch-0001"}\n',
    "checkpoints/epoch-0001/state.json": b"{}\n",
}


def _train_argv(world, out, *extra):
    return [
        "train", "--method", "test_tiny", "--dataset", "imagefolder",
        "--root", str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
        "--shots", "4", "--epochs", "1", "--deterministic", "-q", "-o", str(out), *extra,
    ]  # fmt: skip


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("vlprompt: error: "), err
    assert sum(line.startswith("vlprompt: error: ") for line in lines) == 1, err
    return lines[-1]


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_a_folder_of_user_files_with_the_run_layouts_names_is_refused_untouched(
    world, tmp_path, capsys, overwrite
):
    mine = tmp_path / "mine"
    _write_files(mine, LAYOUT_NAMES)
    before = _snapshot(tmp_path)
    flags = ["--overwrite"] if overwrite else []
    assert main(_train_argv(world, mine, *flags)) == 2
    line = _error_line(capsys)
    assert str(mine) in line and "holds no run" in line and "nothing was changed" in line
    assert _snapshot(tmp_path) == before  # every byte, in and outside the folder
    assert sorted(p.name for p in mine.iterdir()) == ["checkpoints", *sorted(
        n for n in LAYOUT_NAMES if "/" not in n)]  # fmt: skip


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_user_folder_is_never_appended_to(world, tmp_path, capsys, command):
    mine = tmp_path / "mine"
    _write_files(mine, {"log.txt": b"mine\n", "results.jsonl": b'{"a": 1}\n'})
    before = _snapshot(tmp_path)
    if command == "eval":
        argv = ["eval", str(mine)]
    else:
        argv = ["train", "--resume", "-o", str(mine)]
    assert main(argv) == 2
    assert str(mine) in _error_line(capsys)
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_the_run_and_keeps_the_users_file_in_it(world, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_argv(world, run)) == 0
    notes = b"why I ran this: \xe2\x9c\x93 see page 3\n"
    (run / "notes.md").write_bytes(notes)
    old_results = (run / "results.jsonl").read_bytes()
    assert main(_train_argv(world, run, "--overwrite", "--lr", "0.05")) == 0
    capsys.readouterr()
    assert (run / "notes.md").read_bytes() == notes
    assert json.loads((run / "config.json").read_text())["method_config"]["lr"] == 0.05
    assert (run / "results.jsonl").read_bytes() != old_results  # the run's own file, replaced
    assert len((run / "results.jsonl").read_text().splitlines()) == 1


def test_the_marker_is_a_valid_file_of_ours_not_just_a_name(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / MARKER_FILE).write_text("I named a file like vlprompt's marker\n")
    (fake / "config.json").write_text("{}")
    assert folder_kind(fake) is None
    with pytest.raises(FolderError, match="holds no run"):
        claim_folder(fake, "run")
    assert (fake / MARKER_FILE).read_text() == "I named a file like vlprompt's marker\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_folder(empty, "run") == empty and folder_kind(empty) == "run"
    assert claim_folder(empty, "run") == empty  # ours: claimed again as it is
    with pytest.raises(FolderError, match="holds a vlprompt run, not a sweep"):
        claim_folder(empty, "sweep")


def test_a_run_inside_a_sweep_folder_and_a_sweep_inside_a_run_folder_are_refused(
    world, tmp_path, capsys
):
    run = tmp_path / "run"
    assert main(_train_argv(world, run)) == 0
    capsys.readouterr()
    before = _snapshot(run)
    argv = ["bench", "fewshot", "--methods", "zsclip", "--datasets", "imagefolder", "--root",
            str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
            "--seeds", "1", "--shots", "1", "-q", "-o", str(run)]  # fmt: skip
    assert main(argv) == 2
    assert "holds a vlprompt run, not a sweep" in _error_line(capsys)
    assert _snapshot(run) == before


# ---- the lock -----------------------------------------------------------------------------------
HOLD_LOCK = """
import sys, time
from vlprompt.run_folder import claim_folder, folder_lock
claim_folder(sys.argv[1], sys.argv[2])
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(300)
"""


def _holder(folder: Path, kind: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder), kind], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_second_train_into_a_locked_run_folder_fails_at_once_with_the_pid(
    world, tmp_path, capsys
):
    run = tmp_path / "run"
    holder = _holder(run, "run")
    try:
        assert main(_train_argv(world, run)) == 2
        line = _error_line(capsys)
        assert f"in use by PID {holder.pid}" in line and str(run) in line
        assert not (run / "config.json").exists()  # the second process wrote nothing
    finally:
        _kill9(holder)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid  # stale lock file
    assert main(_train_argv(world, run)) == 0  # a killed holder's lock is taken over
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_second_sweep_into_a_locked_sweep_folder_fails_at_once_with_the_pid(
    world, tmp_path, capsys
):
    sweep = tmp_path / "sweep"
    argv = ["bench", "fewshot", "--methods", "zsclip", "--datasets", "imagefolder", "--root",
            str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
            "--seeds", "1", "--shots", "1", "-q", "--no-report", "-o", str(sweep)]  # fmt: skip
    holder = _holder(sweep, "sweep")
    try:
        assert main(argv) == 2
        assert f"in use by PID {holder.pid}" in _error_line(capsys)
        assert not (sweep / "results.jsonl").exists()
    finally:
        _kill9(holder)
    assert main(argv) == 0
    assert len((sweep / "results.jsonl").read_text().splitlines()) == 1


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    folder = claim_folder(tmp_path / "f", "run")
    with folder_lock(folder), folder_lock(folder):  # e.g. a sweep evaluating its own run
        pass
    holder = _holder(folder, "run")
    try:
        with pytest.raises(FolderError, match=f"in use by PID {holder.pid}"):
            with folder_lock(folder):
                pass
    finally:
        _kill9(holder)
    with folder_lock(folder):
        pass


# ---- folders that cannot be written -------------------------------------------------------------
@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write into, also as root (chattr +i), or skip."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    else:
        folder.chmod(0o555)
        made = True
    try:
        (folder / "probe").write_text("x")
        writable = True
    except OSError:
        writable = False
    if not made or writable:
        pytest.skip("cannot make a read-only folder on this machine")
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_a_read_only_output_folder_is_one_clear_line(world, tmp_path, capsys, read_only_folder):
    assert main(_train_argv(world, read_only_folder / "run")) == 2
    line = _error_line(capsys)
    assert str(read_only_folder / "run") in line and "choose a folder you can write to" in line
    argv = ["bench", "fewshot", "--methods", "zsclip", "--datasets", "imagefolder", "--root",
            str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
            "--seeds", "1", "--shots", "1", "-q", "-o", str(read_only_folder / "sweep")]  # fmt: skip
    assert main(argv) == 2
    assert "choose a folder you can write to" in _error_line(capsys)


def test_eval_of_a_run_that_cannot_be_written_is_one_clear_line(world, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_argv(world, run)) == 0
    capsys.readouterr()
    files = [str(run / "results.jsonl"), str(run / "log.txt")]
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", *files], capture_output=True).returncode:
            pytest.skip("chattr is not available")
        undo = ["chattr", "-i", *files]
    else:
        for name in files:
            os.chmod(name, 0o444)
        undo = ["chmod", "644", *files]
    before = _snapshot(run)
    try:
        assert main(["eval", str(run), "--split", "val"]) == 2
        line = _error_line(capsys)
        assert str(run) in line and "choose a folder you can write to" in line
        assert main(["eval", str(run), "--split", "val", "--no-record"]) == 0
        assert _snapshot(run) == before
    finally:
        subprocess.run(undo, check=True)


# ---- temp files of a killed write ---------------------------------------------------------------
def _summary_records() -> str:
    lines = []
    for seed in (1, 2):
        for subsample, accuracy in (("base", 70.0 + seed), ("new", 60.0 - seed)):
            lines.append(json.dumps({
                "protocol": "base2new", "method": "coop", "source": "d", "dataset": "d",
                "subsample": subsample, "seed": seed, "accuracy": accuracy, "shots": 16,
                "split": "test", "backbone": "ViT-B-16",
            }))  # fmt: skip
    return "\n".join(lines) + "\n"


def test_the_next_summary_write_removes_the_temp_files_of_a_killed_one_and_nothing_else(tmp_path):
    import tempfile

    from vlprompt.report import write_summary

    sweep = claim_folder(tmp_path / "sweep", "sweep")
    (sweep / "results.jsonl").write_text(_summary_records())
    # named exactly as vlprompt.io's atomic writes name their temp files (what a kill leaves)
    stale = []
    for name in ("summary.csv", "summary.md", "summary.csv"):
        fd, tmp = tempfile.mkstemp(dir=sweep, prefix=f".{name}.", suffix=".tmp")
        os.write(fd, b"half a table")
        os.close(fd)
        stale.append(Path(tmp))
    (sweep / "plots").mkdir()
    plot = sweep / "plots" / "base2new_shots16.png"
    fd, plot_tmp = tempfile.mkstemp(dir=plot.parent, prefix=f".{plot.name}.", suffix=".tmp")
    os.close(fd)
    stale.append(Path(plot_tmp))
    others = {
        ".summary.csv.tmp": b"no random part",
        ".summary.csv.abc.tmp": b"too short to be ours",
        ".summary.csv.abcdefghi.tmp": b"too long to be ours",
        "summary.csv.abcdefgh.tmp": b"no leading dot",
        ".summary.csv.ABCDEFGH.tmp": b"mkstemp writes lower case",
        ".summary.csv.abcdefgh.tmp.bak": b"another suffix",
        ".results.jsonl.abcdefgh.tmp": b"another file's",
        "notes.md": b"the user's",
    }
    for name, data in others.items():
        (sweep / name).write_bytes(data)
    linked = tmp_path / "linked.txt"
    linked.write_text("mine\n")
    os.symlink(linked, sweep / ".summary.md.zzzzzzzz.tmp")  # named like ours, but a link

    write_summary(sweep)  # without the lock: another process may be writing; nothing removed
    assert all(p.exists() for p in stale)
    with folder_lock(sweep):
        files = write_summary(sweep)
    assert files.csv.is_file() and plot in files.plots
    assert not any(p.exists() for p in stale)
    assert {n: (sweep / n).read_bytes() for n in others} == others
    assert (sweep / ".summary.md.zzzzzzzz.tmp").is_symlink() and linked.read_text() == "mine\n"


def test_a_run_folders_stale_temp_files_and_checkpoint_folders_go_when_its_lock_is_taken(
    world, tmp_path, capsys
):
    run = claim_folder(tmp_path / "run", "run")
    (run / "checkpoints").mkdir()
    stale = [run / ".prompts.safetensors.a1b2c3d4.tmp", run / ".status.json.zz_99xyz.tmp",
             run / "checkpoints" / ".latest.json.abcdefgh.tmp"]  # fmt: skip
    for path in stale:
        path.write_bytes(b"cut short")
    stale_checkpoint = run / "checkpoints" / ".epoch-0003.k2m4n6p8.tmp"
    stale_checkpoint.mkdir()
    (stale_checkpoint / "state.json").write_text("{")
    kept = [run / ".notes.md.abcdefgh.tmp", run / "checkpoints" / ".epoch-3.abcdefgh.tmp",
            run / "checkpoints" / "epoch-0003.abcdefgh.tmp"]  # fmt: skip
    for path in kept:
        path.write_bytes(b"not ours")
    assert main(_train_argv(world, run)) == 0
    capsys.readouterr()
    assert not any(p.exists() for p in [*stale, stale_checkpoint])
    assert all(p.read_bytes() == b"not ours" for p in kept)
