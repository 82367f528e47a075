"""A practitioner's own folder of class sub-folders, split as they say, named as they say,
with an unreadable file skipped and listed: through the CLI, as the README shows it."""

from __future__ import annotations

import json
import shutil

import pytest

from test_engine_helpers import TINY_VIT
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


def _flat_folder(world, root):
    """root/<class>/*.png with every image of the world's three splits, plus a broken file."""
    for image in sorted(world["data"].rglob("*.png")):
        split, name = image.parent.parent.name, image.parent.name
        target = root / name / f"{split}-{image.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    (root / "red_thing" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_split_classnames_file_and_skip_bad_images_through_the_cli(world, tmp_path, capsys):
    root = _flat_folder(world, tmp_path / "photos")
    names = tmp_path / "names.txt"
    names.write_text("red_thing scarlet blob\ngreen_thing leafy blob\nblue_thing sky blob\n")
    run = tmp_path / "run"
    argv = ["train", "--method", "test_tiny", "--dataset", "imagefolder", "--root", str(root),
            "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]), "--shots", "0",
            "--epochs", "1", "--split", "0.6,0.2,0.2", "--classnames-file", str(names),
            "--skip-bad-images", "-o", str(run)]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "images: train" in err and "per class" in err
    assert "skipped 1 unreadable image" in err and "broken.png" in err
    config = json.loads((run / "config.json").read_text())
    assert config["split"] == "0.6,0.2,0.2" and config["skip_bad_images"] is True
    assert config["classnames_file"] == str(names.resolve())
    splits = json.loads((run / "splits.json").read_text())
    assert splits["classnames"] == ["sky blob", "leafy blob", "scarlet blob"]  # folder order
    assert splits["skipped_images"] == ["red_thing/broken.png"]
    per_class = 14  # 8 + 2 + 4 images of each class, the broken one left out
    counts = {part: len(splits[part]) for part in ("train", "val", "test")}
    assert sum(counts.values()) == 3 * per_class
    assert counts["train"] == pytest.approx(0.6 * 3 * per_class, abs=3)


def test_a_bad_split_is_one_clear_line(world, tmp_path, capsys):
    argv = ["train", "--method", "test_tiny", "--dataset", "imagefolder", "--root",
            str(world["data"]), "--split", "0.5,0.5,0.5", "-o", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "split must be three fractions" in err and "0.5,0.5,0.5" in err
    assert not (tmp_path / "run").exists()
