"""Leak-proof by construction: training, model selection (epochs, Tip-Adapter's alpha/beta,
GDA's alpha, LP++'s epoch) and calibration read the train and validation splits only. Every
method trains on a folder whose test images are poison (not images at all): nothing fails
until the final evaluation, which does read them."""

from __future__ import annotations

import shutil

import pytest

import vlprompt
from test_engine_helpers import TINY_VIT
from test_method_matrix import CASES, own_methods
from vlprompt.errors import VlpromptError

pytestmark = [pytest.mark.usefixtures("isolated_home"), pytest.mark.slow]

FAST = {"epochs": 1, "iterations": 2}


def _poisoned(world, root):
    shutil.copytree(world["data"], root)
    for image in (root / "test").rglob("*.png"):
        image.write_bytes(b"poison: the test split must not be read before the final evaluation")
    return root


@pytest.fixture(scope="module")
def poisoned_root(world, tmp_path_factory):
    return _poisoned(world, tmp_path_factory.mktemp("poisoned") / "data")


@pytest.mark.parametrize("name", own_methods())
def test_training_and_selection_never_read_the_test_split(name, world, poisoned_root, tmp_path):
    settings = dict(CASES[name][0])
    cls = vlprompt.methods.get_method_class(name) if hasattr(vlprompt, "methods") else None
    from vlprompt.methods import get_method_class

    config = get_method_class(name).config_class()
    for key, value in FAST.items():
        if hasattr(config, key) and (key != "iterations" or getattr(config, key) > 0):
            settings.setdefault(key, value)
    if getattr(config, "iterations", 0) > 0:
        settings.pop("epochs", None)  # a recipe in optimizer steps
    del cls
    run = vlprompt.train(
        name, "imagefolder", root=poisoned_root, backbone=TINY_VIT, pretrained=world["ckpt"],
        shots=2, output_dir=tmp_path / "run", evaluate=False, progress=False, **settings,
    )  # fmt: skip
    assert (tmp_path / "run" / "status.json").is_file()  # trained, selected, calibrated
    with pytest.raises(VlpromptError, match="test"):
        vlprompt.evaluate(run)  # the poison is real: the final evaluation reads it
