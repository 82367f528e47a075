"""The RPO and ProGrad papers' own experiments, on the mini world (docs/mini-world.md).

    python benchmarks/mini_seed_papers.py {variance,extreme,ablations,kd,all}
        [--output-dir runs/seed-papers] [--seeds 1,...,10] [--datasets mini_objects,...]

- variance: base-to-new at 16 shots over 10 seeds for CoOp, CoCoOp, KgCoOp, ProGrad and RPO (RPO's
  claim: a lower seed variance than CoOp and CoCoOp). The summary's spread table gives std, min
  and max per method; plots/seeds_base2new.png shows every seed with a box plot.
- extreme: RPO's extreme few-shot setting: base-to-new at 1, 2, 4, 8 and 16 shots over 10 seeds,
  RPO with K = 4 prompts beside CoOp and CoCoOp; plots/base2new_by_shots_*.png draws base, new
  and H against shots with a band of one std.
- ablations: RPO against its two ablations, mask="none" (the prompts join ordinary attention,
  the paper's "without masked attention") and init="random" (instead of the special-token init),
  over the 7 mini data sets and 3 seeds.
- kd: ProGrad against distillation (the ProGrad paper's KD: the same model and loss plus
  lambda * KL towards zero-shot, plainly added) and plain CoOp, 7 data sets, 3 seeds.

Every arm is one resumable sweep (`vlprompt.quickstart.mini_bench`, the mini settings of the
quickstart) in `<output-dir>/<experiment>/<arm>/`; arms of one experiment are then put side by
side in `<output-dir>/<experiment>/combined/` (summary.md, summary.csv, plots/), the records
relabelled by arm. A second call skips what is done.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vlprompt.io import atomic_write_jsonl
from vlprompt.quickstart import ALL_MINI_DATASETS, mini_bench
from vlprompt.report import load_results, write_summary
from vlprompt.run_folder import RESULTS_FILE


@dataclass(frozen=True)
class Arm:
    label: str  # the name in the combined tables
    method: str
    settings: dict[str, Any] = field(default_factory=dict)  # on top of the mini settings


@dataclass(frozen=True)
class Experiment:
    arms: tuple[Arm, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    shots: tuple[int, ...] = (16,)


TEN_SEEDS = tuple(range(1, 11))
EXPERIMENTS = {
    "variance": Experiment(
        tuple(Arm(m, m) for m in ("coop", "cocoop", "kgcoop", "prograd", "rpo")),
        ("mini_objects", "mini_shapes"),
        TEN_SEEDS,
    ),
    "extreme": Experiment(
        (Arm("coop", "coop"), Arm("cocoop", "cocoop"), Arm("rpo_K4", "rpo", {"K": 4})),
        ("mini_objects",),  # 150 runs; one data set keeps it under half an hour
        TEN_SEEDS,
        (1, 2, 4, 8, 16),
    ),
    "ablations": Experiment(
        (
            Arm("rpo", "rpo"),
            Arm("rpo_mask_none", "rpo", {"mask": "none"}),
            Arm("rpo_init_random", "rpo", {"init": "random"}),
        ),
        ALL_MINI_DATASETS,
        (1, 2, 3),
    ),
    "kd": Experiment(
        (
            Arm("coop", "coop"),
            Arm("prograd", "prograd"),
            Arm("kd", "prograd", {"gradient_rule": "kd"}),
        ),
        ALL_MINI_DATASETS,
        (1, 2, 3),
    ),
}


def run_experiment(name: str, output_dir: Path, experiment: Experiment) -> Path:
    """Run every arm (resumable), then write the side-by-side summary; return its folder."""
    folder = output_dir / name
    records = []
    for arm in experiment.arms:
        arm_dir = folder / arm.label
        mini_bench(
            "base2new", arm_dir, methods=[arm.method], datasets=list(experiment.datasets),
            seeds=list(experiment.seeds), shots=list(experiment.shots),
            settings={arm.method: arm.settings}, plots=False, progress=False,
        )  # fmt: skip
        for record in load_results(arm_dir / RESULTS_FILE):
            records.append({**record, "method": arm.label, "key": f"{arm.label}:{record['key']}"})
    combined = folder / "combined"
    combined.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(combined / RESULTS_FILE, records)
    files = write_summary(combined)
    print(f"{name}: {files.markdown}")
    return combined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--output-dir", type=Path, default=Path("runs/seed-papers"))
    parser.add_argument("--seeds", help="comma-separated, instead of the experiment's")
    parser.add_argument("--datasets", help="comma-separated, instead of the experiment's")
    args = parser.parse_args()
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    for name in names:
        experiment = EXPERIMENTS[name]
        if args.seeds:
            experiment = replace(experiment, seeds=tuple(int(s) for s in args.seeds.split(",")))
        if args.datasets:
            experiment = replace(experiment, datasets=tuple(args.datasets.split(",")))
        run_experiment(name, args.output_dir, experiment)


if __name__ == "__main__":
    main()
