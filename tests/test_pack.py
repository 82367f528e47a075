"""A run shared as one file: `vlprompt pack` writes no CLIP weights and no path of the training
machine; on "another machine" (the weights at another path) the bundle predicts identically,
wrong weights are refused by their sha256, and a run folder whose weights moved says how to
point at them."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

import vlprompt
from test_engine_helpers import TINY_VIT
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture
def trained(world, tmp_path):
    weights = tmp_path / "machine-a" / "tiny.safetensors"
    weights.parent.mkdir()
    shutil.copy(world["ckpt"], weights)
    run = tmp_path / "run"
    argv = ["train", "--method", "coop", "--dataset", "imagefolder", "--root", str(world["data"]),
            "--backbone", TINY_VIT, "--pretrained", str(weights), "--shots", "2", "--epochs", "1",
            "--n-ctx", "2", "-q", "-o", str(run)]  # fmt: skip
    assert main(argv) == 0
    images = sorted((world["data"] / "test").rglob("*.png"))[:5]
    return run, weights, images


def test_a_packed_run_predicts_identically_with_the_weights_elsewhere(trained, tmp_path):
    run, weights, images = trained
    expected = vlprompt.load_run(run).predict(images, topk=3)
    bundle = tmp_path / "mine.vlprompt"
    assert main(["pack", str(run), "-o", str(bundle)]) == 0
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
        config = json.loads(z.read("config.json"))
    assert "prompts.safetensors" in names and "calibration.json" in names
    assert not any(n.endswith(".safetensors") and n != "prompts.safetensors" for n in names)
    assert config["pretrained"] == "tiny.safetensors"  # by name, not by this machine's path
    elsewhere = tmp_path / "machine-b" / "clip-weights.safetensors"
    elsewhere.parent.mkdir()
    weights.rename(elsewhere)
    shutil.rmtree(run)
    got = vlprompt.load_run(bundle, pretrained=elsewhere).predict(images, topk=3)
    assert [[c for c, _ in row] for row in got] == [[c for c, _ in row] for row in expected]
    for a, b in zip(got, expected):
        assert [p for _, p in a] == pytest.approx([p for _, p in b], abs=1e-6)


def test_a_bundle_needs_the_right_weights(trained, tmp_path, world, capsys):
    run, weights, images = trained
    bundle = tmp_path / "mine.vlprompt"
    assert main(["pack", str(run), "-o", str(bundle)]) == 0
    capsys.readouterr()
    assert main(["predict", str(bundle), str(images[0])]) == 2
    assert "--pretrained PATH" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    other.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert main(["predict", str(bundle), str(images[0]), "--pretrained", str(other)]) == 2
    assert "not the weight file the run was trained on" in capsys.readouterr().err
    assert main(["predict", str(bundle), str(images[0]), "--pretrained", str(weights)]) == 0


def test_an_existing_file_is_never_overwritten_by_pack(trained, tmp_path, capsys):
    run, _, _ = trained
    mine = tmp_path / "notes.vlprompt"
    mine.write_text("my notes")
    assert main(["pack", str(run), "-o", str(mine)]) == 2
    assert mine.read_text() == "my notes"


def test_a_run_folder_whose_weights_moved_says_how_to_point_at_them(trained, tmp_path, capsys):
    run, weights, images = trained
    moved = tmp_path / "moved.safetensors"
    weights.rename(moved)
    assert main(["predict", str(run), str(images[0])]) == 2
    assert "--pretrained PATH" in capsys.readouterr().err
    assert main(["predict", str(run), str(images[0]), "--pretrained", str(moved)]) == 0
