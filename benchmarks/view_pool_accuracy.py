"""Accuracy and training time with and without the view pool, on the mini world (base-to-new).

    python benchmarks/view_pool_accuracy.py [--views 8] [--datasets mini_shapes,mini_objects]
        [--methods coop,rpo] [--seeds 1,2,3] [--output-dir runs/view_pool_accuracy]

Runs `vlprompt.protocols.run_bench("base2new", ...)` twice with the mini world's settings
(`vlprompt.quickstart.MINI_SETTINGS`, the shipped tiny CLIP): once as the papers train (fresh
augmentations every epoch) and once with `view_pool=N` (N stored views per image). Prints a
Markdown table of base / new / H accuracy (mean ± std over seeds) and the mean training wall time
per run (which includes the one-off pool build). Resumable: finished runs are reused.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from vlprompt.protocols import read_records, run_bench
from vlprompt.report import harmonic_mean


def sweep(views: int, args) -> Path:
    from vlprompt.mini import MODEL_NAME, checkpoint_path
    from vlprompt.quickstart import MINI_CROP_MIN_SCALE, MINI_SETTINGS

    out = Path(args.output_dir) / (f"pool{views}" if views else "no_pool")
    run_bench(
        "base2new",
        args.methods,
        args.datasets,
        seeds=args.seeds,
        backbone=MODEL_NAME,
        pretrained=str(args.pretrained or checkpoint_path()),
        output_dir=out,
        method_overrides={m: dict(MINI_SETTINGS.get(m, {})) for m in args.methods},
        train_kwargs={"view_pool": views, "progress": False, "crop_min_scale": MINI_CROP_MIN_SCALE},
        plots=False,
    )
    return out


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def summarise(folders: dict[str, Path], args) -> str:
    lines = [
        "| method | data set | augmentation | base | new | H | train s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in args.methods:
        for dataset in args.datasets:
            for label, folder in folders.items():
                records = read_records(folder / "results.jsonl")
                acc: dict[tuple[int, str], float] = {}
                wall: dict[int, float] = {}
                for r in records:
                    if r.get("method") == method and r.get("source") == dataset:
                        acc[(r["seed"], r["subsample"])] = r["accuracy"]
                        if r.get("wall_s") is not None:
                            wall[r["seed"]] = r["wall_s"]
                seeds = [s for s in args.seeds if (s, "base") in acc and (s, "new") in acc]
                if not seeds:
                    continue
                base = [acc[(s, "base")] for s in seeds]
                new = [acc[(s, "new")] for s in seeds]
                h = [harmonic_mean(b, n) for b, n in zip(base, new)]
                secs = statistics.mean(wall[s] for s in seeds if s in wall) if wall else None
                lines.append(
                    f"| {method} | {dataset} | {label} | {mean_std(base)} | {mean_std(new)} | "
                    f"{mean_std(h)} | {'-' if secs is None else f'{secs:.1f}'} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=8, help="views per image in the pool")
    parser.add_argument("--methods", default="coop,rpo")
    parser.add_argument("--datasets", default="mini_shapes,mini_objects")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument(
        "--pretrained", default=None, help="tiny CLIP checkpoint (default: shipped)"
    )
    parser.add_argument("--output-dir", default="runs/view_pool_accuracy")
    args = parser.parse_args(argv)
    args.methods = args.methods.split(",")
    args.datasets = args.datasets.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    folders = {}
    for views in (0, args.views):
        label = f"view pool, {views} views" if views else "fresh every epoch"
        folders[label] = sweep(views, args)
    print(summarise(folders, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
