"""What a practitioner gets after training: `eval --report` files that add up, a calibrated
temperature fitted on the validation split, conformal prediction sets, and the record of the
run's splits."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import vlprompt
from test_engine_helpers import TINY_VIT
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


def _train_cli(world, run, *extra):
    argv = ["train", "--method", "test_tiny", "--dataset", "imagefolder", "--root",
            str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
            "--shots", "4", "--epochs", "1", "-q", "-o", str(run), *extra]  # fmt: skip
    assert main(argv) == 0


def test_eval_report_files_add_up_to_the_recorded_evaluation(world, tmp_path, capsys):
    run = tmp_path / "run"
    _train_cli(world, run)
    capsys.readouterr()
    assert main(["eval", str(run), "--report"]) == 0
    out = capsys.readouterr().out
    assert "zero-shot" in out and "-> trained" in out and "report:" in out
    record = json.loads((run / "results.jsonl").read_text().splitlines()[-1])
    folder = run / "eval" / "imagefolder-all-test"
    assert record["report_dir"] == str(folder)
    names = {p.name for p in folder.iterdir()}
    assert names == {"per_class.csv", "confusion.csv", "confusion.png", "errors.csv",
                     "mistakes.png", "summary.txt", "reliability.png"}  # fmt: skip
    with open(folder / "confusion.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    matrix = np.array([[int(x) for x in row[1:]] for row in rows[1:]])
    assert matrix.sum() == record["n_images"]
    correct = int(np.trace(matrix))
    assert 100.0 * correct / matrix.sum() == pytest.approx(record["accuracy"])
    with open(folder / "errors.csv", encoding="utf-8") as f:
        errors = list(csv.DictReader(f))
    assert len(errors) == record["n_images"] - correct
    assert all(e["true"] != e["predicted"] for e in errors)
    assert 0 <= record["zero_shot_accuracy"] <= 100


def test_eval_without_report_says_it_reused_the_record(world, tmp_path, capsys):
    run = tmp_path / "run"
    _train_cli(world, run)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "not recomputed" in capsys.readouterr().out
    assert vlprompt.evaluate(run).reused is True


def test_a_run_records_its_splits_and_its_calibration(world, tmp_path):
    run = tmp_path / "run"
    _train_cli(world, run)
    splits = json.loads((run / "splits.json").read_text())
    n_train = json.loads((run / "status.json").read_text())["n_train_images"]
    assert len(splits["train"]) == n_train and splits["test"]
    assert not any(path.startswith("/") for path, _ in splits["train"])  # relative to the root
    assert set(splits["read_for"]) == {"train", "val", "test"}
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["n_val"] == len(splits["val"]) and calibration["temperature"] > 0
    loaded = vlprompt.load_run(run)
    assert loaded.calibration == calibration


def test_no_calibrate_leaves_the_probabilities_the_models_own(world, tmp_path):
    run = tmp_path / "run"
    _train_cli(world, run, "--no-calibrate")
    assert not (run / "calibration.json").exists()
    loaded = vlprompt.load_run(run)
    assert loaded.temperature == 1.0
    with pytest.raises(vlprompt.VlpromptError, match="no calibration.json"):
        loaded.prediction_sets([str(next((world["data"] / "test").rglob("*.png")))])


def test_zero_shot_on_the_mini_world_calibrates_and_gives_sets(tmp_path, monkeypatch, capsys):
    """Zero-shot CLIP is over-confident: the temperature fitted on validation lowers its
    expected calibration error there, probabilities still sum to 1, and `predict --coverage`
    gives sets whose size grows with the coverage."""
    monkeypatch.setenv("VLPROMPT_MINI_ROOT", str(tmp_path / "mini"))
    run = vlprompt.train("zsclip", "mini_shapes", output_dir=tmp_path / "zs", progress=False)
    calibration = run.calibration
    assert calibration["ece_split"] == "val"
    assert calibration["ece_after"] <= calibration["ece_before"]
    images = sorted((tmp_path / "mini").rglob("test/*/*.png"))[:12]
    probs = run.predict(images, topk=len(run.classnames))
    assert all(sum(p for _, p in row) == pytest.approx(1.0, abs=1e-5) for row in probs)
    small = run.prediction_sets(images, coverage=0.9)
    large = run.prediction_sets(images, coverage=0.95)
    assert all(len(a) <= len(b) for a, b in zip(small, large))
    assert all(len(s) >= 1 for s in small)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "zs"), str(images[0]), "--coverage", "0.9"]) == 0
    assert "90% set" in capsys.readouterr().out
