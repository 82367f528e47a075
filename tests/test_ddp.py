"""DDP: 2 CPU processes (gloo) learn the same prompts as 1 process with the same global batch,
only rank 0 writes the run folder, and the gathered evaluation equals the single-process one."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import vlprompt
import vlprompt.data
from test_engine_helpers import TINY_VIT, make_imagefolder, save_tiny_checkpoint

EPOCHS, BATCH = 2, 4


def _no_augmentation(monkeypatch=None):
    """Random crops cannot match across process counts; the test transform is deterministic."""
    original = vlprompt.data.transform_for

    def eval_transform(clip, train):
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


def _worker(rank: int, world: int, init_file: str, data: str, ckpt: str, out: str, home: str):
    os.environ["HOME"] = home
    torch.set_num_threads(1)
    import conftest  # noqa: F401  (registers the tiny CLIP config in this process)

    _no_augmentation()
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
