"""DDP: 2 CPU processes (gloo) learn the same prompts as 1 process with the same global batch,
only rank 0 writes the run folder, and the gathered evaluation equals the single-process one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import vlprompt
import vlprompt.data
from test_engine_helpers import TINY_VIT, make_imagefolder, save_tiny_checkpoint
from vlprompt.config import RunError

EPOCHS, BATCH = 2, 4


def _no_augmentation(monkeypatch=None):
    """Random crops cannot match across process counts; the test transform is deterministic."""
    original = vlprompt.data.transform_for

    def eval_transform(clip, train, **_):
        return original(clip, train=False)

    if monkeypatch is not None:
        monkeypatch.setattr(vlprompt.data, "transform_for", eval_transform)
    else:
        vlprompt.data.transform_for = eval_transform


def _train(data, ckpt, out):
    return vlprompt.train(
        "test_tiny", "imagefolder", root=data, backbone=TINY_VIT, pretrained=ckpt, shots=4,
        output_dir=out, epochs=EPOCHS, batch_size=BATCH, progress=False,
    )  # fmt: skip


def _forbid_reading_the_run_folder():
    """Ranks other than 0 must not inspect the run folder: rank 0 may be writing it."""
    import vlprompt.api

    def refuse(*args, **kwargs):
        raise AssertionError("a rank other than 0 inspected the run folder")

    vlprompt.api._prepare_run_dir = refuse


def _worker(rank: int, world: int, init_file: str, data: str, ckpt: str, out: str, home: str):
    os.environ["HOME"] = home
    torch.set_num_threads(1)
    import conftest  # noqa: F401  (registers the tiny CLIP config in this process)

    _no_augmentation()
    if rank != 0:
        _forbid_reading_the_run_folder()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _train(data, ckpt, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_learn_the_same_prompts_as_one(tmp_path, monkeypatch):
    data = make_imagefolder(tmp_path / "data")
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    _no_augmentation(monkeypatch)
    _train(data, ckpt, tmp_path / "one")

    args = (2, str(tmp_path / "pg"), str(data), str(ckpt), str(tmp_path / "two"), str(home))
    mp.spawn(_worker, args=args, nprocs=2, join=True)

    a = load_file(str(tmp_path / "one" / "prompts.safetensors"))
    b = load_file(str(tmp_path / "two" / "prompts.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert not torch.equal(a[key], torch.zeros_like(a[key]))
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    # rank 0 alone wrote: one evaluation line, one log of each epoch
    (one,) = [json.loads(x) for x in (tmp_path / "one/results.jsonl").read_text().splitlines()]
    (two,) = [json.loads(x) for x in (tmp_path / "two/results.jsonl").read_text().splitlines()]
    assert two["n_images"] == one["n_images"] == 12
    assert two["accuracy"] == one["accuracy"]  # the sharded evaluation, gathered
    assert (tmp_path / "two/log.txt").read_text().count(f"epoch {EPOCHS}/{EPOCHS}") == 1


def _worker_expecting_error(rank, world, init_file, data, ckpt, out, home, report_dir):
    os.environ["HOME"] = home
    torch.set_num_threads(1)
    import conftest  # noqa: F401

    if rank != 0:
        _forbid_reading_the_run_folder()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _train(data, ckpt, out)
        message = "no error"
    except RunError as e:
        message = str(e)
    finally:
        dist.destroy_process_group()
    (Path(report_dir) / f"rank{rank}.txt").write_text(message)


@pytest.mark.slow
def test_every_rank_gets_rank_zeros_verdict_on_the_output_folder(tmp_path):
    """Only rank 0 inspects and prepares the run folder (others would race with its writes);
    when it refuses the folder, every rank raises the same error instead of hanging."""
    data = make_imagefolder(tmp_path / "data")
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    reports = tmp_path / "reports"
    reports.mkdir()
    args = (2, str(tmp_path / "pg"), str(data), str(ckpt), str(out), str(tmp_path / "home"),
            str(reports))  # fmt: skip
    mp.spawn(_worker_expecting_error, args=args, nprocs=2, join=True)

    messages = [(reports / f"rank{r}.txt").read_text() for r in range(2)]
    assert messages[0] == messages[1]
    assert "is not empty and holds no run" in messages[0] and "notes.txt" in messages[0]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def _train_method(data, ckpt, out, method, settings):
    return vlprompt.train(
        method, "imagefolder", root=data, backbone=TINY_VIT, pretrained=ckpt, shots=4,
        output_dir=out, epochs=EPOCHS, batch_size=BATCH, progress=False, evaluate=False,
        **settings,
    )  # fmt: skip


def _worker_method(rank, world, init_file, data, ckpt, out, home, method, settings):
    os.environ["HOME"] = home
    torch.set_num_threads(1)
    import conftest  # noqa: F401  (registers the tiny CLIP config in this process)

    _no_augmentation()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _train_method(data, ckpt, out, method, json.loads(settings))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "settings"),
    [("prograd", {}), ("rpo", {"gradient_rule": "prograd", "K": 2, "lr": 0.05})],
    ids=["prograd", "rpo+prograd"],
)
def test_prograds_rule_acts_on_the_global_batch_under_ddp(tmp_path, monkeypatch, method, settings):
    """The loss and KL gradients are averaged over the processes before the projection, so two
    processes with half the batch each learn the prompts of one process with the whole batch
    (projecting per process and averaging would not)."""
    data = make_imagefolder(tmp_path / "data")
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    _no_augmentation(monkeypatch)
    _train_method(data, ckpt, tmp_path / "one", method, settings)

    args = (2, str(tmp_path / "pg"), str(data), str(ckpt), str(tmp_path / "two"), str(home),
            method, json.dumps(settings))  # fmt: skip
    mp.spawn(_worker_method, args=args, nprocs=2, join=True)
    a = load_file(str(tmp_path / "one" / "prompts.safetensors"))
    b = load_file(str(tmp_path / "two" / "prompts.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def _grads_worker(rank: int, world: int, init_file: str, report_dir: str):
    torch.set_num_threads(1)
    from vlprompt.distributed import Dist, all_reduce_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        learning, waiting = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
        learning.grad = torch.full((3,), float(rank + 1))  # 1 and 2: their mean is 1.5
        all_reduce_gradients([waiting, learning], Dist(rank=rank, world_size=world))
        report = {"learning": learning.grad.tolist(), "waiting": waiting.grad is None}
    finally:
        dist.destroy_process_group()
    (Path(report_dir) / f"rank{rank}.json").write_text(json.dumps(report))


@pytest.mark.slow
def test_a_parameter_no_process_computed_a_gradient_for_keeps_none(tmp_path):
    """Averaged gradients, and none for a part that learns in a later stage (two_stage's head):
    the optimizer leaves it and its state untouched, as in one process."""
    mp.spawn(_grads_worker, args=(2, str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report == {"learning": [1.5, 1.5, 1.5], "waiting": True}
