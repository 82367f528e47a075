"""The validation images a run's searches score and an evaluation reads: the few-shot sample
(min(shots, 4) per class, CoOp's) or every image of the split (`val_split="whole"`, what the
official Tip-Adapter and GDA code search on; `evaluate(..., whole_split=True)`)."""

from __future__ import annotations

import json

import pytest

import vlprompt
from test_engine_helpers import TINY_VIT
from vlprompt.errors import MethodError
from vlprompt.methods import make_config

pytestmark = pytest.mark.usefixtures("isolated_home")

# the `world` image folder: 3 classes, 2 val images each; at 1 shot the few-shot val keeps 1
CLASSES, VAL_PER_CLASS = 3, 2


def _train(method, world, out, **kw):
    return vlprompt.train(
        method, "imagefolder", root=world["data"], backbone=TINY_VIT, pretrained=world["ckpt"],
        shots=1, output_dir=out, progress=False, evaluate=False, calibrate=False, **kw,
    )  # fmt: skip


def _val_count(run_dir) -> int:
    return len(json.loads((run_dir / "splits.json").read_text())["val"])


@pytest.mark.parametrize("method", ["tip_adapter", "gda"])
def test_the_official_searches_score_every_validation_image(method, world, tmp_path):
    _train(method, world, tmp_path / "whole")
    assert _val_count(tmp_path / "whole") == CLASSES * VAL_PER_CLASS
    log = (tmp_path / "whole" / "log.txt").read_text()
    assert f"val {CLASSES * VAL_PER_CLASS} (2-2 per class)" in log
    _train(method, world, tmp_path / "few", val_split="few-shot")
    assert _val_count(tmp_path / "few") == CLASSES  # min(1 shot, 4) per class


def test_other_methods_keep_the_few_shot_validation_sample(world, tmp_path):
    _train("linear_probe", world, tmp_path / "run")
    assert _val_count(tmp_path / "run") == CLASSES


def test_a_bad_val_split_is_one_clear_error():
    with pytest.raises(MethodError, match="val_split must be one of few-shot, whole, got 'all'"):
        make_config("tip_adapter_f", val_split="all")


def test_evaluate_on_the_whole_validation_split(world, tmp_path):
    run = _train("zsclip", world, tmp_path / "run")
    few = vlprompt.evaluate(run, split="val")
    whole = vlprompt.evaluate(run, split="val", whole_split=True)
    assert few["n_images"] == CLASSES and "whole_split" not in few
    assert whole["n_images"] == CLASSES * VAL_PER_CLASS and whole["whole_split"] is True
    # a recorded evaluation is reused only for the same images
    assert vlprompt.evaluate(run, split="val", whole_split=True).reused
    assert vlprompt.evaluate(run, split="val")["n_images"] == CLASSES
    # the test split is never sampled: the flag changes nothing there
    test = vlprompt.evaluate(run, split="test", whole_split=True)
    assert "whole_split" not in test and test["n_images"] == CLASSES * 4
