"""One-class training batches (`EngineSettings.batches = "one_class"`, opt-in).

Skip Tuning's official trainer (Koorye/SkipTuning `trainers/feature_loader.py`,
`FeatureLoader.generate_random_batch_idxs`, mode 'batch_random', which `skip_tuning.py` picks for
4 or more shots) fills each batch with images of one class: it draws a class uniformly among
those with images left, takes `batch_size` of its images at random without replacement, and
drops a class once fewer than `batch_size` of its images are left (they sit the epoch out).
`OneClassBatchSampler` draws an epoch's batches the same way, from Python's `random` seeded with
the run's seed and the epoch, so a resumed run and N processes walk the same batches (each
process takes its slice of every global batch). The default, "mixed", is every paper's shuffled
batches over all classes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from vlprompt.errors import RunError


def dataset_labels(dataset: Any) -> list[int]:
    """The label of each item of a training data set, without loading its images where the data
    set lists them (ImageListDataset's `items`, the view pool's `labels`)."""
    items = getattr(dataset, "items", None)
    if items is not None:
        return [int(item.label) for item in items]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return [int(x) for x in labels]
    with torch.random.fork_rng(devices=[]):  # an item's random transform must not move the RNG
        return [int(dataset[i][1]) for i in range(len(dataset))]


class OneClassBatchSampler(torch.utils.data.Sampler):
    """Batches of `batch_size` indices of one class each (this process's share of each)."""

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int, *,
                 world_size: int = 1, rank: int = 0) -> None:  # fmt: skip
        self.by_class: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            self.by_class.setdefault(int(label), []).append(index)
        short = {c: len(v) for c, v in self.by_class.items() if len(v) < batch_size}
        if short:
            label, count = min(short.items())
            raise RunError(
                f"batches=one_class fills each batch of {batch_size} with one class's images, "
                f"but class {label} has {count} training image(s) ({len(short)} class(es) have "
                f"fewer than {batch_size}); lower batch_size to {min(short.values())} or use "
                "batches=mixed"
            )
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.world_size, self.rank = world_size, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """The epoch's batches, whole (the official 'batch_random' loop)."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        left = {c: list(v) for c, v in sorted(self.by_class.items())}
        batches = []
        while left:
            label = rng.choice(list(left))
            chosen = rng.sample(left[label], self.batch_size)
            batches.append(chosen)
            left[label] = [i for i in left[label] if i not in chosen]
            if len(left[label]) < self.batch_size:
                del left[label]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch_size // self.world_size
        for batch in self.global_batches():
            yield batch[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        return sum(len(v) // self.batch_size for v in self.by_class.values())
