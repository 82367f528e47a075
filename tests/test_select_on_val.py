"""`--select-on val`: the run keeps the weights of its best epoch on the validation split
(earliest on ties), never reading the test split; the default stays the papers' last epoch."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import vlprompt
from test_engine_helpers import TINY_VIT

pytestmark = pytest.mark.usefixtures("isolated_home")


def _train(world, out, root=None, **kw):
    return vlprompt.train(
        "test_tiny", "imagefolder", root=root or world["data"], backbone=TINY_VIT,
        pretrained=world["ckpt"], shots=4, epochs=3, output_dir=out, progress=False, **kw,
    )  # fmt: skip


def test_the_run_keeps_its_best_validation_epoch(world, tmp_path):
    run = _train(world, tmp_path / "run", select_on="val", lr=2.0)
    log = (tmp_path / "run" / "log.txt").read_text()
    accs = [float(a) for a in re.findall(r"validation accuracy ([\d.]+)%", log)]
    assert len(accs) == 3
    best = accs.index(max(accs)) + 1  # earliest of the best
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["selected_epoch"] == best
    assert f"selected epoch {best} on the validation split" in log
    assert vlprompt.evaluate(run, split="val", record=False)["accuracy"] == pytest.approx(
        max(accs), abs=0.01
    )  # the log rounds to 2 decimals
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["engine"]["select_on"] == "val"


def test_the_default_keeps_the_last_epoch(world, tmp_path):
    _train(world, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["selected_epoch"] is None
    assert "validation accuracy" not in (tmp_path / "run" / "log.txt").read_text()


def test_selection_never_reads_the_test_split(world, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(world["data"], root)
    for image in (root / "test").rglob("*.png"):
        image.write_bytes(b"poison")
    _train(world, tmp_path / "run", root=root, select_on="val", evaluate=False)
    assert json.loads((tmp_path / "run" / "status.json").read_text())["selected_epoch"] >= 1
