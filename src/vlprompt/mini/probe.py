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


def zeroshot_rows(clip: ClipBackbone, per_class: int | None = None) -> list[dict]:
    """Zero-shot accuracy (%) on every mini data set's base, new and all test classes, and on
    every style variant (all classes): one row each, `style` None for the data set's own."""
    from vlprompt.mini.datasets import MINI_DATASETS

    rows = []
    for name, spec in MINI_DATASETS.items():
        for classes in ("base", "new", "all"):
            accuracy = zeroshot_accuracy(clip, name, classes, per_class=per_class)
            rows.append({"dataset": name, "n_classes": len(spec.classnames), "classes": classes,
                         "style": None, "accuracy": accuracy})  # fmt: skip
        for style in spec.variants:
            accuracy = zeroshot_accuracy(clip, name, "all", per_class=per_class, style=style)
            rows.append({"dataset": name, "n_classes": len(spec.classnames), "classes": "all",
                         "style": style, "accuracy": accuracy})  # fmt: skip
    return rows


def render_zeroshot(rows: list[dict]) -> str:
    """`zeroshot_rows` as two Markdown tables: base, new (chance in brackets) and all classes of
    every data set, where "all" weighs base and new by their class counts (each half scored
    among its own classes); then every style variant beside its source's photos, all classes."""
    own = {(r["dataset"], r["classes"]): r for r in rows if r["style"] is None}
    lines = [
        "| data set | classes | base (chance) | new (chance) | all |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        n = own[name, "base"]["n_classes"]
        m = math.ceil(n / 2)
        base, new = own[name, "base"]["accuracy"], own[name, "new"]["accuracy"]
        everything = (base * m + new * (n - m)) / n
        lines.append(f"| {name} | {n} | {base:.1f} ({100 / m:.0f}) | {new:.1f} "
                     f"({100 / (n - m):.0f}) | {everything:.1f} |")  # fmt: skip
    lines += ["", "| style variant | all classes | source, same images |", "|---|---|---|"]
    for r in rows:
        if r["style"] is not None:
            source = own[r["dataset"], "all"]["accuracy"]
            lines.append(f"| {r['dataset']}_{r['style']} | {r['accuracy']:.1f} | {source:.1f} |")
    return "\n".join(lines)


def zeroshot_report(clip: ClipBackbone, per_class: int | None = None) -> str:
    """A Markdown table: zero-shot accuracy (%) on every mini data set's base, new and all test
    classes (chance in brackets), then on every style variant (all classes)."""
    return render_zeroshot(zeroshot_rows(clip, per_class))
