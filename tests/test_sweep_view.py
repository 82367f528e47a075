"""What a sweep shows: one line per finished run and the tables, per-epoch lines only in each
run's log.txt (live with -v); and TensorBoard logs of a run's epochs and evaluations."""

from __future__ import annotations

import json

import pytest

from test_engine_helpers import TINY_VIT
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


def _bench(world, out, *extra):
    return [
        "bench", "fewshot", "--methods", "zsclip,test_tiny", "--datasets", "imagefolder",
        "--root", str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
        "--seeds", "1,2", "--shots", "2", "--set", "epochs=2", "-o", str(out), *extra,
    ]  # fmt: skip


def test_a_sweep_prints_a_line_per_run_and_keeps_epochs_in_the_run_logs(world, tmp_path, capsys):
    assert main(_bench(world, tmp_path / "sweep")) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    run_lines = [line for line in text.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in run_lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert all("all " in line and line.endswith(" s)") for line in run_lines), run_lines
    assert "epoch 1/2" not in text and "| method |" in captured.out
    log = (tmp_path / "sweep/fewshot/imagefolder/test_tiny/shots2_seed1/log.txt").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log
    assert len(text.splitlines()) < 40

    assert main(_bench(world, tmp_path / "loud", "-v")) == 0
    assert "epoch 1/2" in capsys.readouterr().err


def test_tensorboard_logs_the_epochs_and_the_evaluations(world, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(_bench(world, tmp_path / "sweep", "--tensorboard", "--seeds", "1")) == 0
    capsys.readouterr()
    run = tmp_path / "sweep/fewshot/imagefolder/test_tiny/shots2_seed1"
    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    tags = board.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/accuracy"} <= set(tags)
    losses = [e.value for e in board.Scalars("train/loss")]
    assert [e.step for e in board.Scalars("train/loss")] == [1, 2]
    log = (run / "log.txt").read_text()
    for epoch, loss in enumerate(losses, start=1):
        assert f"epoch {epoch}/2" in log and f"loss {loss:.4f}" in log
    record = json.loads((tmp_path / "sweep/results.jsonl").read_text().splitlines()[-1])
    (event,) = board.Scalars("eval/imagefolder/all/test")
    assert event.value == pytest.approx(record["accuracy"], abs=1e-4) and event.step == 2


def test_executor_ray_without_ray_says_how_to_install_it(world, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    assert main(_bench(world, tmp_path / "sweep", "--executor", "ray")) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("vlprompt: error: --executor ray needs Ray") and "pip install" in line
    assert not (tmp_path / "sweep").exists()  # refused before anything was written
