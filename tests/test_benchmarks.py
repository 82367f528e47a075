"""The benchmark's memory measure counts live torch CPU tensor bytes exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from run import peak_bytes  # noqa: E402


def test_peak_bytes_is_the_live_tensor_peak():
    def step():
        a = torch.ones(1000, 1000)  # 4 MB
        b = a * 2  # 4 MB more: 8 MB live
        del a  # back to 4 MB
        c = torch.ones(500, 1000)  # 2 MB: 6 MB live, below the peak
        return float(b.sum() + c.sum())

    peak = peak_bytes(step)
    assert 8_000_000 <= peak < 8_000_000 + 4096  # + scalar temporaries


def test_linear_extrapolation_and_the_kept_analysis(tmp_path):
    from run import ANALYSIS, linear_fit, with_analysis

    assert abs(linear_fit([(50, 1000.0), (100, 1950.0)], 1000) - 19050.0) < 1e-6
    old = tmp_path / "B.md"
    old.write_text(f"# B\n\n{ANALYSIS[0]}\nwhy it is so\n{ANALYSIS[1]}\n\nold numbers\n")
    new = with_analysis("# B\n\nnew numbers\n", old)
    assert new == f"# B\n\n{ANALYSIS[0]}\nwhy it is so\n{ANALYSIS[1]}\n\nnew numbers\n"
    assert with_analysis("# B\n\nx\n", tmp_path / "missing.md") == "# B\n\nx\n"


def test_batch_override_per_method():
    import argparse

    import pytest
    from run import BATCH, batch_size, parse_batches

    args = argparse.Namespace(batch=parse_batches("rpo=32"), quick=False)
    assert batch_size("rpo", args) == 32 and batch_size("coop", args) == BATCH["coop"]
    assert batch_size("coop", argparse.Namespace(batch={}, quick=True)) == 4
    for bad in ("rpo", "rpo=0", "nosuch=4"):
        with pytest.raises(SystemExit, match="--batch: expected METHOD=N"):
            parse_batches(bad)
