"""`bench --executor ray` on a local Ray instance (2 CPUs, no network) on the mini world at tiny
scale: the same records as the local executor, nothing repeated, a killed worker's run retried
and resumed to the same prompts, a failing run alone, and the driver as the only writer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kill_helpers import KillOnce
from vlprompt.protocols import BenchError, _append_record, run_bench
from vlprompt.run_folder import claim_folder

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("isolated_home")]

TESTS = Path(__file__).parent
SWEEP = dict(
    methods=["zsclip", "coop"], datasets=["mini_colors"], seeds=[1, 2], shots=2,
    method_overrides={"coop": {"epochs": 2}},
    train_kwargs={"deterministic": True, "num_workers": 0},
)  # fmt: skip


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    home = tmp_path_factory.mktemp("rayhome")
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    # a loopback-only instance of this test: no token (workers get their own HOME, where
    # Ray's token file is not)
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
        runtime_env={"env_vars": {"PYTHONPATH": path, "HOME": str(home), "OMP_NUM_THREADS": "1"}},
    )  # fmt: skip
    yield home
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


def _records(sweep: Path) -> dict[str, float]:
    lines = (sweep / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len({r["key"] for r in records}) == len(records)  # no key twice
    return {r["key"]: r["accuracy"] for r in records}


def test_a_ray_sweep_writes_the_local_sweeps_records_and_repeats_nothing(local_ray, tmp_path):
    root = tmp_path / "mini"
    torch.set_num_threads(1)
    local = run_bench("fewshot", root=root, output_dir=tmp_path / "local", **SWEEP)
    on_ray = run_bench("fewshot", root=root, output_dir=tmp_path / "ray", executor="ray", **SWEEP)
    assert local.ok and on_ray.ok and sorted(on_ray.trained) == sorted(local.trained)
    assert len(on_ray.trained) == 4
    assert _records(tmp_path / "ray") == _records(tmp_path / "local")
    again = run_bench("fewshot", root=root, output_dir=tmp_path / "ray", executor="ray", **SWEEP)
    assert again.trained == [] and sorted(again.skipped) == sorted(on_ray.trained)
    assert len((tmp_path / "ray" / "results.jsonl").read_text().splitlines()) == 4


def test_a_killed_worker_is_retried_and_resumes_to_the_uninterrupted_prompts(local_ray, tmp_path):
    root = tmp_path / "mini"
    common = dict(
        methods=["coop"], datasets=["mini_colors"], seeds=[1], shots=2, root=root,
        method_overrides={"coop": {"epochs": 3}},
    )  # fmt: skip
    plain = {"deterministic": True, "num_workers": 0}
    torch.set_num_threads(1)
    run_bench("fewshot", output_dir=tmp_path / "whole", train_kwargs=plain, **common)
    flag = tmp_path / "killed"
    cut = {**plain, "on_epoch_end": KillOnce(flag, epoch=2)}
    result = run_bench(
        "fewshot", output_dir=tmp_path / "cut", executor="ray", train_kwargs=cut, **common
    )
    assert flag.is_file()  # a worker really died after epoch 2
    assert result.ok and len(result.trained) == 1
    run = "fewshot/mini_colors/coop/shots2_seed1"
    log = (tmp_path / "cut" / run / "log.txt").read_text()
    assert "resumed from" in log and "after epoch 2/3" in log
    whole = load_file(str(tmp_path / "whole" / run / "prompts.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / run / "prompts.safetensors"))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert _records(tmp_path / "cut") == _records(tmp_path / "whole")


def test_a_run_with_bad_data_fails_alone_and_the_rest_lands(local_ray, tmp_path):
    root = tmp_path / "mini"
    run_bench("fewshot", methods=["zsclip"], datasets=["mini_shapes"], seeds=[1], shots=1,
              root=root, output_dir=tmp_path / "render", report=False)  # fmt: skip
    (train,) = root.glob("mini/*/mini_shapes/train")
    for image in sorted(train.rglob("*.png")):
        image.write_bytes(b"not a png")  # every training image of mini_shapes is unreadable
    result = run_bench(
        "fewshot", methods=["coop"], datasets=["mini_colors", "mini_shapes"], seeds=[1], shots=1,
        root=root, output_dir=tmp_path / "sweep", executor="ray",
        method_overrides={"coop": {"epochs": 1}},
    )  # fmt: skip
    assert list(result.failed) == ["fewshot/mini_shapes/coop/shots1_seed1"]
    assert "cannot read image" in result.failed["fewshot/mini_shapes/coop/shots1_seed1"]
    assert result.trained == ["fewshot/mini_colors/coop/shots1_seed1"]
    assert list(_records(tmp_path / "sweep")) == [
        "fewshot/mini_colors/coop/shots1_seed1|mini_colors:all:test"
    ]


def test_only_the_lock_holder_writes_the_sweeps_results(tmp_path):
    sweep = claim_folder(tmp_path / "sweep", "sweep")
    with pytest.raises(BenchError, match="written only by the sweep's driver"):
        _append_record(sweep / "results.jsonl", {"key": "x", "accuracy": 1.0})
    assert not (sweep / "results.jsonl").exists()
