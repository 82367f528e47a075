"""Zero-shot accuracy of a CLIP on a mini data set, straight from the world (no files)."""

from __future__ import annotations

import math

import numpy as np
import torch

from vlprompt.backbone import ClipBackbone
from vlprompt.mini.datasets import get_spec


def _to_tensor(images, clip: ClipBackbone) -> torch.Tensor:
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2)
    x = x.float().div(255)
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def zeroshot_accuracy(
    clip: ClipBackbone,
    dataset: str,
    classes: str = "new",
    split: str = "test",
    per_class: int | None = None,
    style: str | None = None,
) -> float:
    """Top-1 zero-shot accuracy (%) with the data set's template, on its `classes` ("base": the
    first ceil(n/2) labels, "new": the rest, "all"), over the first `per_class` images per class."""
    spec = get_spec(dataset)
    n = len(spec.classnames)
    m = math.ceil(n / 2)
    labels = {"base": range(m), "new": range(m, n), "all": range(n)}[classes]
    count = per_class or spec.per_class[split]
    names = [spec.classnames[c] for c in labels]
    text = clip.encode_text(clip.tokenize([spec.template.format(c) for c in names]), normalize=True)
    correct = total = 0
    for j, c in enumerate(labels):
        images = [spec.item(split, c, i, style=style) for i in range(count)]
        feats = clip.encode_image(_to_tensor(images, clip), normalize=True)
        correct += int(((feats @ text.T).argmax(1) == j).sum())
        total += count
    return 100.0 * correct / total
