"""One-class training batches (vlprompt.batching, `batches="one_class"`): Skip Tuning's official
'batch_random' loader, as an opt-in engine sampler; the default batches stay as they were."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from vlprompt.batching import OneClassBatchSampler, dataset_labels
from vlprompt.config import ConfigError, EngineSettings
from vlprompt.distributed import Dist
from vlprompt.engine import train_loader
from vlprompt.errors import RunError

LABELS = [0] * 9 + [1] * 8 + [2] * 4 + [3] * 6  # 9 // 4 + 8 // 4 + 4 // 4 + 6 // 4 = 6 batches


def test_each_batch_is_one_class_and_each_image_is_used_at_most_once_an_epoch():
    sampler = OneClassBatchSampler(LABELS, 4, seed=1)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 6
        assert all(len(b) == 4 and len({LABELS[i] for i in b}) == 1 for b in batches)
        used = [i for b in batches for i in b]
        assert len(used) == len(set(used))
        # every class gives floor(n / 4) batches; the rest of its images sit the epoch out
        assert Counter(LABELS[b[0]] for b in batches) == {0: 2, 1: 2, 2: 1, 3: 1}


def test_batches_depend_on_seed_and_epoch_only():
    a, b = OneClassBatchSampler(LABELS, 4, seed=1), OneClassBatchSampler(LABELS, 4, seed=1)
    orders = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)  # a resumed run walks the same batches
        orders.add(tuple(map(tuple, a)))
    assert len(orders) == 6  # a fresh draw each epoch
    c = OneClassBatchSampler(LABELS, 4, seed=2)
    assert list(c) != list(OneClassBatchSampler(LABELS, 4, seed=1))


def test_processes_take_their_slices_of_the_same_global_batches():
    whole = list(OneClassBatchSampler(LABELS, 4, seed=3))
    parts = [list(OneClassBatchSampler(LABELS, 4, seed=3, world_size=2, rank=r)) for r in (0, 1)]
    assert [p0 + p1 for p0, p1 in zip(*parts)] == whole


def test_a_class_too_small_for_a_batch_is_one_clear_error():
    with pytest.raises(RunError, match="class 2 has 4 training image") as info:
        OneClassBatchSampler(LABELS, 5, seed=1)
    assert "\n" not in str(info.value) and "batches=mixed" in str(info.value)


class _Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return len(LABELS)

    def __getitem__(self, i):
        return torch.full((2,), float(i)), LABELS[i]


def test_the_engines_loader_gives_one_class_batches_only_when_asked():
    kwargs = dict(batch_size=4, seed=1, ctx=Dist(), device=torch.device("cpu"))
    loader, sampler, _ = train_loader(_Pairs(), settings=EngineSettings(batches="one_class"),
                                      **kwargs)  # fmt: skip
    assert dataset_labels(_Pairs()) == LABELS and len(loader) == 6
    sampler.set_epoch(1)
    for images, labels in loader:
        assert labels.unique().numel() == 1
        assert [LABELS[int(x)] for x in images[:, 0]] == labels.tolist()
    loader, sampler, _ = train_loader(_Pairs(), settings=EngineSettings(), **kwargs)
    assert isinstance(sampler, torch.utils.data.DistributedSampler)  # the default: mixed
    assert any(labels.unique().numel() > 1 for _, labels in loader)


def test_a_bad_mode_is_one_clear_error():
    with pytest.raises(ConfigError, match="batches must be one of mixed, one_class"):
        EngineSettings(batches="per_class")


def test_a_run_with_one_class_batches_trains_on_them_and_records_the_mode(tmp_path, monkeypatch):
    import json

    import vlprompt
    from vlprompt.methods.coop import CoOp

    seen: list[list[int]] = []
    original = CoOp.backward_step

    def record(self, images, labels, *args, **kwargs):
        seen.append(labels.tolist())
        return original(self, images, labels, *args, **kwargs)

    monkeypatch.setattr(CoOp, "backward_step", record)
    run_dir = tmp_path / "run"
    vlprompt.train("coop", "mini_colors", output_dir=run_dir, root=tmp_path / "mini", shots=4,
                   epochs=1, batch_size=4, batches="one_class", evaluate=False,
                   progress=False)  # fmt: skip
    assert seen and all(len(set(labels)) == 1 for labels in seen)
    assert len({labels[0] for labels in seen}) == len(seen)  # 4 shots: one batch per class
    assert json.loads((run_dir / "config.json").read_text())["engine"]["batches"] == "one_class"
