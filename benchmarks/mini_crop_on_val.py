"""Choose the mini world's training crop on the validation split (never on test).

    python benchmarks/mini_crop_on_val.py [--crops 0.08,0.5,1] [--method coop]
        [--datasets mini_shapes,...] [--seeds 1,2] [--pretrained CKPT] [--output-dir runs/crop_val]

The papers' crop (RandomResizedCrop, area 8%-100%) was made for photos whose object fills the
frame; in the mini world's 64-px scenes an 8% crop often holds no object or turns a small one into
a large one. This trains `--method` (the `mini` preset, 16 shots, base classes) with each
`crop_min_scale` and scores it on *every* validation image of its base classes (8 per class),
with zero-shot CLIP on the same images for reference, and prints the table (mean over seeds).
Resumable: finished runs are reused. `benchmarks/mini_docs.py run mini-crop-check` stores the
records (`check`) that `docs_tables.py` renders (`kind=crop_check`, `render`).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

import vlprompt

CROPS = (0.08, 0.5, 1.0)
SEEDS = (1, 2)


def val_base_record(method: str, dataset: str, seed: int, crop: float, runs_dir: Path,
                    pretrained: str | None = None) -> dict:  # fmt: skip
    """Train `method` on the base classes with the training crop `crop`; its record on every
    validation image of the base classes."""
    from vlprompt.mini import MODEL_NAME, checkpoint_path

    out = Path(runs_dir) / dataset / method / f"crop{crop:g}_seed{seed}"
    run = vlprompt.train(
        method, dataset, output_dir=out, backbone=MODEL_NAME,
        pretrained=str(pretrained or checkpoint_path()), shots=16, seed=seed,
        subsample="base", crop_min_scale=crop, evaluate=False, calibrate=False, progress=False,
        echo=False,
    )  # fmt: skip
    record = dict(vlprompt.evaluate(run, split="val", subsample="base", whole_split=True))
    keep = ("accuracy", "dataset", "method", "seed", "n_images", "wall_s", "vlprompt_version")
    return {**{k: record.get(k) for k in keep}, "crop_min_scale": crop}


def check(datasets: Sequence[str], seeds: Sequence[int] = SEEDS, crops: Sequence[float] = CROPS,
          method: str = "coop", runs_dir: Path = Path("runs/crop_val"),
          pretrained: str | None = None) -> list[dict]:  # fmt: skip
    """Zero-shot (seed 1) and `method` at every crop and seed, on every data set."""
    records = []
    for dataset in datasets:
        records.append(val_base_record("zsclip", dataset, seeds[0], 1.0, runs_dir, pretrained))
        for crop in crops:
            for seed in seeds:
                records.append(val_base_record(method, dataset, seed, crop, runs_dir, pretrained))
        print(dataset, " ".join(f"{r['accuracy']:.1f}" for r in records[-len(crops) * len(seeds):]),
              flush=True)  # fmt: skip
    return records


def render(records: Sequence[dict]) -> str:
    """One row per data set: zero-shot, then the trained method's mean over seeds per crop."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    method = next(r["method"] for r in records if r["method"] != "zsclip")
    crops = sorted({r["crop_min_scale"] for r in records if r["method"] != "zsclip"})
    seeds = sorted({r["seed"] for r in records if r["method"] != "zsclip"})
    head = ["zero-shot"] + [f"{method}, crop {c:g}" + (" (papers)" if c == 0.08 else "")
                            + (" (none)" if c == 1 else "") for c in crops]  # fmt: skip
    lines = [f"Validation split, every image of the base classes; {method} mean over seeds "
             f"{', '.join(map(str, seeds))}.", "",
             "| data set | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]  # fmt: skip
    columns = []
    for dataset in datasets:
        mine = [r for r in records if r["dataset"] == dataset]
        row = [next(r["accuracy"] for r in mine if r["method"] == "zsclip")]
        row += [statistics.mean(r["accuracy"] for r in mine
                                if r["method"] != "zsclip" and r["crop_min_scale"] == c)
                for c in crops]  # fmt: skip
        columns.append(row)
        lines.append(f"| {dataset} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    means = [statistics.mean(col) for col in zip(*columns)]
    lines.append("| **mean** | " + " | ".join(f"**{v:.1f}**" for v in means) + " |")
    return "\n".join(lines) + "\n"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    from vlprompt.quickstart import ALL_MINI_DATASETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=_floats, default=list(CROPS))
    parser.add_argument("--method", default="coop")
    parser.add_argument("--datasets", default=",".join(ALL_MINI_DATASETS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--output-dir", default="runs/crop_val")
    args = parser.parse_args()
    records = check(args.datasets.split(","), [int(s) for s in args.seeds.split(",")],
                    args.crops, args.method, Path(args.output_dir), args.pretrained)  # fmt: skip
    print("\n" + render(records))


if __name__ == "__main__":
    main()
