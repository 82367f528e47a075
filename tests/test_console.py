"""The Python API shows a run's lines in scripts and notebooks with no logging configured,
exactly once; a program that configures logging keeps control."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from test_engine_helpers import TINY_VIT

pytestmark = pytest.mark.usefixtures("isolated_home")

SCRIPT = """
import logging, sys
sys.path.insert(0, {tests!r})
import conftest, test_engine_helpers  # register the tiny CLIP and the tiny test method
{setup}
import vlprompt
vlprompt.train("test_tiny", "imagefolder", root={data!r}, backbone={vit!r},
               pretrained={ckpt!r}, shots=2, epochs=1, output_dir={out!r})
"""


def _run(world, tmp_path, setup: str) -> subprocess.CompletedProcess:
    import os
    from pathlib import Path

    code = SCRIPT.format(tests=str(Path(__file__).parent), setup=setup, data=str(world["data"]),
                         vit=TINY_VIT, ckpt=str(world["ckpt"]), out=str(tmp_path / "run"))  # fmt: skip
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env={**os.environ}, check=True)  # fmt: skip


def test_train_prints_its_lines_once_with_no_logging_configured(world, tmp_path):
    err = _run(world, tmp_path, "").stderr
    assert err.count("saved the learned prompts to") == 1, err
    assert err.count("test accuracy on imagefolder") == 1, err
    assert "INFO:vlprompt" not in err


def test_a_program_that_configures_logging_gets_the_lines_through_its_own_handler(world, tmp_path):
    err = _run(world, tmp_path, "logging.basicConfig(level=logging.WARNING)").stderr
    assert "saved the learned prompts" not in err  # its choice: warnings only
