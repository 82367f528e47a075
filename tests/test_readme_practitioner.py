"""The README's "Your own images" commands, as written, on a generated folder of images: train,
eval --report, predict --coverage (paths are the only substitution)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from test_user_split import _flat_folder
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")
README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Your own images") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [line.split(" #", 1)[0].strip() for line in joined.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("vlprompt ")]


def test_the_readme_walk_through_runs_as_written(world, tmp_path, monkeypatch, capsys):
    commands = _commands()
    assert [c[0] for c in commands] == ["train", "eval", "predict"]
    photos = _flat_folder(world, tmp_path / "my_photos")
    (tmp_path / "names.txt").write_text("red_thing red\ngreen_thing green\nblue_thing blue\n")
    (tmp_path / "new_photo.jpg").write_bytes(next(photos.rglob("*.png")).read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/my_photos
    for argv in commands:
        assert main([str(Path(a).expanduser()) if a.startswith("~") else a for a in argv]) == 0
    out = capsys.readouterr().out
    assert "zero-shot" in out and "-> trained" in out
    assert "90% set" in out
    assert (tmp_path / "runs" / "mine" / "eval" / "imagefolder-all-test" / "errors.csv").is_file()
