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


def zeroshot_report(clip: ClipBackbone, per_class: int | None = None) -> str:
    """A Markdown table: zero-shot accuracy (%) on every mini data set's base, new and all test
    classes (chance in brackets), then on every style variant (all classes)."""
    from vlprompt.mini.datasets import MINI_DATASETS

    lines = [
        "| data set | classes | base (chance) | new (chance) | all |",
        "|---|---|---|---|---|",
    ]
    for name, spec in MINI_DATASETS.items():
        n = len(spec.classnames)
        m = math.ceil(n / 2)
        base = zeroshot_accuracy(clip, name, "base", per_class=per_class)
        new = zeroshot_accuracy(clip, name, "new", per_class=per_class)
        everything = (base * m + new * (n - m)) / n
        lines.append(
            f"| {name} | {n} | {base:.1f} ({100 / m:.0f}) | {new:.1f} ({100 / (n - m):.0f}) "
            f"| {everything:.1f} |"
        )
    lines += ["", "| style variant | all classes | source, same images |", "|---|---|---|"]
    for name, spec in MINI_DATASETS.items():
        source = zeroshot_accuracy(clip, name, "all", per_class=per_class)
        for style in spec.variants:
            shifted = zeroshot_accuracy(clip, name, "all", per_class=per_class, style=style)
            lines.append(f"| {name}_{style} | {shifted:.1f} | {source:.1f} |")
    return "\n".join(lines)
