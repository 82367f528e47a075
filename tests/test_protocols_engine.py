"""`run_bench` end to end on the real engine: tiny CLIP, a tiny image folder, two methods."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import vlprompt
from test_engine_helpers import TINY_VIT
from vlprompt.protocols import BenchError, default_backend, read_records, run_bench
from vlprompt.report import harmonic_mean

pytestmark = pytest.mark.usefixtures("isolated_home")

METHODS = ["test_tiny", "zsclip"]


def bench(world, out, backend=None, **kw):
    kw.setdefault("method_overrides", {"test_tiny": {"epochs": 1}})
    return run_bench(
        "base2new", METHODS, ["imagefolder"], seeds=(1, 2), shots=2, root=world["data"],
        backbone=TINY_VIT, pretrained=str(world["ckpt"]), output_dir=out, plots=False,
        train_kwargs={"deterministic": True, "progress": False}, backend=backend, **kw,
    )  # fmt: skip


@pytest.mark.slow  # ~3 s: eight real trainings/evaluations on the tiny CLIP
def test_base2new_sweep_on_the_real_engine_killed_and_resumed(world, tmp_path):
    out = tmp_path / "bench"
    backend = default_backend()
    real_train, calls = backend.train, []

    def train(*args, **kwargs):
        calls.append(kwargs["output_dir"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    backend.train = train
    with pytest.raises(KeyboardInterrupt):
        bench(world, out, backend)
    assert len(read_records(out / "results.jsonl")) == 2

    result = bench(world, out)
    assert result.ok and len(result.trained) == 3 and len(result.skipped) == 1
    records = read_records(out / "results.jsonl")
    assert len(records) == 8 and len({r["key"] for r in records}) == 8
    for run_key in {r["run"] for r in records}:
        log = (out / run_key / "log.txt").read_text()
        assert log.count("saved the learned prompts") == 1, run_key  # trained exactly once

    # the recorded numbers are the engine's: recompute one from the saved run
    rec = next(r for r in records if r["method"] == "test_tiny" and r["subsample"] == "new")
    again = vlprompt.evaluate(out / rec["run"], subsample="new", record=False, reuse=False)
    assert again["accuracy"] == rec["accuracy"] and rec["n_images"] == 4
    # zero-shot CLIP does not train: its test accuracy cannot depend on the seed
    zs = [r["accuracy"] for r in records if r["method"] == "zsclip" and r["subsample"] == "base"]
    assert len(zs) == 2 and zs[0] == zs[1]

    with open(out / "summary.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["dataset"] == "imagefolder"]
    for method in METHODS:
        base = [
            r["accuracy"] for r in records if r["method"] == method and r["subsample"] == "base"
        ]
        new = [r["accuracy"] for r in records if r["method"] == method and r["subsample"] == "new"]
        (h,) = [r for r in rows if r["method"] == method and r["metric"] == "H"]
        assert float(h["mean"]) == pytest.approx(harmonic_mean(np.mean(base), np.mean(new)))

    # a finished sweep re-run trains nothing; a re-run with other settings is refused
    assert len(bench(world, out).skipped) == 4
    with pytest.raises(BenchError, match=r"holds a run with another config .*epochs: 1 -> 2"):
        bench(world, out, method_overrides={"test_tiny": {"epochs": 2}})
