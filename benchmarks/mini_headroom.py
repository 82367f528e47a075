"""How much can 16 shots add to zero-shot CLIP on a mini data set's base classes, at most?

    python benchmarks/mini_headroom.py [--style cartoon | --styles photo,cartoon,...] [--lr 1e-4]
        [--steps 300] [--look JSON] [--seed-offset 1000] [--model NAME --model-config JSON --pretrained CKPT]
        [--datasets mini_shapes,...] [--seeds 1,2,3] [--records FILE.jsonl]

CoOp, KgCoOp and ProGrad classify frozen image features with one text feature per class; all a
prompt can do is move those class features. Here the class features themselves are the
parameters: initialised at the zero-shot text features, fitted by cross-entropy on CLIP's logits
(logit scale x cosine) on 16 training images per base class. That is more freedom than any
prompt gives, so the head bounds what prompt learning can gain over zero-shot with these shots.

Columns (base classes of a replica, see `mini_world_variants.py` for the replica options; mean
over seeds):
- **ZS**: zero-shot with the data set's template;
- **head, validation-chosen**: the snapshot (every 10 steps, the initial one included) that is
  best on the 4 validation images per class, the earliest on ties: an honest few-shot method;
- **head, best step on test**: the snapshot best on the test images themselves, an upper bound
  for any stopping rule;
- **head fitted on test**: the head trained on the test images (1000 steps), what the frozen
  image features can separate at all.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from mini_world_variants import add_replica_arguments, use_replicas

from vlprompt._version import code_version
from vlprompt.io import atomic_write_jsonl

SHOTS, VAL_PER_CLASS, SNAPSHOT_EVERY = 16, 4, 10
COLUMNS = ("ZS", "head, validation-chosen", "head, best step on test", "head fitted on test")


def accuracy(class_features: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of normalised image `features` against `class_features` [C, D]."""
    predictions = (features @ F.normalize(class_features, dim=-1).T).argmax(1)
    return 100.0 * float((predictions == labels).float().mean())


def fit_class_features(
    init: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    lr: float,
    steps: int,
    every: int = SNAPSHOT_EVERY,
) -> list[torch.Tensor]:
    """Adam on the class features [C, D] with cross-entropy on `scale * cos`; returns snapshots
    every `every` steps, the first being `init` itself."""
    weights = init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weights], lr=lr)
    snapshots = [init.clone()]
    for step in range(1, steps + 1):
        logits = scale * features @ F.normalize(weights, dim=-1).T
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0:
            snapshots.append(weights.detach().clone())
    return snapshots


def best_snapshot(
    snapshots: list[torch.Tensor], features: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The snapshot with the highest accuracy on (features, labels); the earliest on ties."""
    scores = [accuracy(s, features, labels) for s in snapshots]
    return snapshots[scores.index(max(scores))]


def shot_indices(n_train: int, n_classes: int, seed: int) -> list[list[int]]:
    """SHOTS distinct training images per class, drawn with numpy's generator for `seed`."""
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(n_train, SHOTS, replace=False).tolist()) for _ in range(n_classes)]


def _image_features(clip, spec, split: str, per_class: list) -> tuple[torch.Tensor, torch.Tensor]:
    from vlprompt.mini.probe import _to_tensor

    feats, labels = [], []
    with torch.no_grad():
        for label, indices in enumerate(per_class):
            images = [spec.item(split, label, i) for i in indices]
            feats.append(clip.encode_image(_to_tensor(images, clip), normalize=True))
            labels += [label] * len(indices)
    return torch.cat(feats), torch.tensor(labels)


def measure(clip, name: str, seeds: list[int], lr: float, steps: int) -> dict[str, float]:
    """The four columns for one data set (accuracy in %, base classes, test split)."""
    from vlprompt.mini.datasets import get_spec

    spec = get_spec(name)
    n_base = math.ceil(len(spec.classnames) / 2)
    prompts = [spec.template.format(c) for c in spec.classnames[:n_base]]
    with torch.no_grad():
        zeroshot = clip.encode_text(clip.tokenize(prompts), normalize=True)
    scale = float(clip.logit_scale)
    test = [range(spec.per_class["test"])] * n_base
    x_test, y_test = _image_features(clip, spec, "test", test)
    x_val, y_val = _image_features(clip, spec, "val", [range(VAL_PER_CLASS)] * n_base)
    chosen, best = [], []
    for seed in seeds:
        shots = shot_indices(spec.per_class["train"], n_base, seed)
        x_train, y_train = _image_features(clip, spec, "train", shots)
        torch.manual_seed(seed)
        snapshots = fit_class_features(zeroshot, x_train, y_train, scale, lr, steps)
        chosen.append(accuracy(best_snapshot(snapshots, x_val, y_val), x_test, y_test))
        best.append(accuracy(best_snapshot(snapshots, x_test, y_test), x_test, y_test))
    fitted_on_test = fit_class_features(zeroshot, x_test, y_test, scale, lr=1e-3, steps=1000)[-1]
    values = (accuracy(zeroshot, x_test, y_test), statistics.mean(chosen), statistics.mean(best),
              accuracy(fitted_on_test, x_test, y_test))  # fmt: skip
    return dict(zip(COLUMNS, values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_replica_arguments(parser)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    import open_clip

    from vlprompt.backbone import load_clip
    from vlprompt.mini import MODEL_NAME, checkpoint_path

    if args.style and args.styles:
        parser.error("give --style (one style) or --styles (a cycle), not both")
    if args.model_config:
        open_clip.add_model_config(args.model_config)
    datasets = args.datasets.split(",")
    try:
        styles = tuple(filter(None, args.styles.split(",")))
        use_replicas(datasets, args.style, styles, args.look, args.seed_offset)
    except ValueError as error:
        parser.error(str(error))
    model = args.model or MODEL_NAME
    clip = load_clip(model, pretrained=str(args.pretrained or checkpoint_path()))
    seeds = [int(s) for s in args.seeds.split(",")]

    look = "own" if args.look is None else json.dumps(args.look)
    print(f"replicas (seed +{args.seed_offset}), base classes, style {args.style or args.styles or 'own'}, "
          f"look {look}, model {model}, "
          f"{SHOTS} shots, lr {args.lr}, {args.steps} steps, seeds {args.seeds}\n")  # fmt: skip
    records = []
    for name in datasets:
        start = time.perf_counter()
        row = measure(clip, name, seeds, args.lr, args.steps)
        records.append({"dataset": name, "look": look, "seed_offset": args.seed_offset, **row,
                        "wall_s": time.perf_counter() - start,
                        "vlprompt_version": code_version()})  # fmt: skip
    print(render(records))
    if args.records:
        atomic_write_jsonl(args.records, records)


def render(records: list[dict]) -> str:
    """One row per data set, the four columns, then their means."""
    lines = ["| data set | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for r in records:
        lines.append(f"| {r['dataset']} | " + " | ".join(f"{r[c]:.1f}" for c in COLUMNS) + " |")
    means = [statistics.mean(r[c] for r in records) for c in COLUMNS]
    lines.append("| mean | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
