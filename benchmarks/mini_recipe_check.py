"""Do the mini recipes, not the methods, decide the ranking? Each method's learning rate x0.1 and
x10 and its budget x3, beside its mini recipe, scored on the validation split (never on test).

    python benchmarks/mini_recipe_check.py run [--methods coop,rpo,...] [--datasets ...]
        [--seeds 1] [--runs-dir runs/recipe-check]
    python benchmarks/mini_recipe_check.py collect [--runs-dir runs/recipe-check]
        [--output benchmarks/results/mini-recipe-check] --command "..."

`run` trains each method on the base classes of each data set (16 shots, the `mini` preset) four
times: its mini recipe, its learning rate x0.1 and x10 (Skip Tuning's image-side rate scales
with it), and x3 its optimizer steps (`iterations` x3 where the recipe counts steps, else
`epochs` x3: the same schedule, stretched). Each run is scored on *every* validation image of its
base classes (8 per class, 40-64 per data set: `vlprompt.evaluate(..., whole_split=True)`), not
on the 4 per class its own searches see, so that the check can decide. Zero-shot CLIP is scored
on the same images. Resumable (finished runs are reused); several `run` processes may share one
`--runs-dir` when each has its own methods. `collect` gathers every scored run into
OUTPUT/records.jsonl (one record per run, with its vlprompt version), which
`benchmarks/docs_tables.py` renders (`kind=recipe_check`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import vlprompt
from vlprompt.io import atomic_write_jsonl, atomic_write_text

VARIANTS = ("mini", "lr x0.1", "lr x10", "steps x3")
DEFAULT_METHODS = ("coop", "cocoop", "kgcoop", "prograd", "rpo", "ivlp", "maple", "promptsrc",
                   "tcp", "clip_adapter", "clip_lora", "tip_adapter_f", "mmrl", "skiptuning",
                   "two_stage")  # fmt: skip
DEFAULT_DATASETS = ("mini_objects", "mini_patterns", "mini_counts")
SECOND_RATES = {"skiptuning": ("image_lr",)}  # rates that scale with `lr` in the lr variants
# a variant wins over the mini recipe when its mean over the data sets is at least MARGIN points
# higher and it is higher on more than half of them (one validation image is 1.6-2.5 points of a
# mini data set's 40-64, about 0.7 of the mean over three)
MARGIN = 2.0


def variant_overrides(variant: str, method: str, recipe: dict) -> dict:
    """The settings that turn the mini recipe (`recipe`, a resolved method config) into
    `variant`."""
    if variant == "mini":
        return {}
    if variant.startswith("lr x"):
        factor = float(variant[len("lr x") :])
        names = ("lr", *SECOND_RATES.get(method, ()))
        return {name: recipe[name] * factor for name in names}
    if variant == "steps x3":
        if recipe.get("iterations", 0) > 0:
            return {"iterations": recipe["iterations"] * 3}
        return {"epochs": recipe["epochs"] * 3}
    raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def folder_name(variant: str, seed: int) -> str:
    return f"{variant.replace(' ', '_').replace('.', '')}_seed{seed}"


def check_one(method: str, dataset: str, seed: int, variant: str, runs_dir: Path) -> dict:
    """Train one variant and score it on every validation image of the base classes."""
    from vlprompt.api import resolve_config

    recipe = resolve_config(method, dataset, seed=seed, subsample="base").method_config
    overrides = variant_overrides(variant, method, recipe)
    out = runs_dir / method / dataset / folder_name(variant, seed)
    run = vlprompt.train(method, dataset, output_dir=out, shots=16, seed=seed, subsample="base",
                         evaluate=False, calibrate=False, progress=False, echo=False,
                         **overrides)  # fmt: skip
    record = dict(vlprompt.evaluate(run, split="val", whole_split=True))
    return {**record, **recipe_fields(variant, run.config.method_config)}


def recipe_fields(variant: str, method_config: dict) -> dict:
    """What a check record says of its run's recipe: the variant, its rate and its budget."""
    return {"variant": variant, "lr": method_config.get("lr"),
            "epochs_setting": method_config.get("epochs"),
            "iterations": method_config.get("iterations", 0)}  # fmt: skip


def run_checks(args: argparse.Namespace) -> None:
    runs_dir = Path(args.runs_dir)
    for dataset in args.datasets:
        for seed in args.seeds:
            check_one("zsclip", dataset, seed, "mini", runs_dir)
    for method in args.methods:
        for dataset in args.datasets:
            for seed in args.seeds:
                for variant in VARIANTS:
                    rec = check_one(method, dataset, seed, variant, runs_dir)
                    print(
                        f"{method} {dataset} seed {seed} {variant}: val {rec['accuracy']:.2f} "
                        f"(lr {rec['lr']:g}, train {rec['wall_s'] or 0:.0f} s)",
                        flush=True,
                    )


def gather(runs_dir: Path) -> list[dict]:
    """Every scored run under `runs_dir`: its last whole-split val record, without machine
    paths, with its recipe's fields."""
    records = []
    for results in sorted(runs_dir.glob("*/*/*/results.jsonl")):
        lines = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines() if x]
        val = [r for r in lines if r.get("split") == "val" and r.get("whole_split")]
        if not val:
            continue
        record = {k: v for k, v in val[-1].items() if k not in ("run_dir", "per_class_accuracy")}
        record["pretrained"] = Path(str(record.get("pretrained"))).name
        config = json.loads((results.parent / "config.json").read_text(encoding="utf-8"))
        variant = next(v for v in VARIANTS if folder_name(v, record["seed"]) == results.parent.name)
        records.append({**record, **recipe_fields(variant, config["method_config"])})
    return records


def collect(runs_dir: Path, output: Path, command: str) -> Path:
    """`gather(runs_dir)` into OUTPUT/records.jsonl, with OUTPUT/source.json."""
    records = gather(runs_dir)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(output / "records.jsonl", records)
    atomic_write_text(output / "source.json", json.dumps({"command": command}, indent=1) + "\n")
    return output


def winner(scores: dict[str, Sequence[float]]) -> str:
    """The variant the check chooses: `scores` maps each variant to its validation accuracies,
    one per data set in the same order; "mini" unless a variant wins by the rule of MARGIN."""
    base = scores["mini"]
    best, best_mean = "mini", statistics.mean(base)
    for variant, values in scores.items():
        higher = sum(v > b for v, b in zip(values, base))
        mean = statistics.mean(values)
        if (variant != "mini" and mean >= statistics.mean(base) + MARGIN
                and higher > len(base) / 2 and mean > best_mean):  # fmt: skip
            best, best_mean = variant, mean
    return best


def _recipe(record: dict) -> str:
    budget = (f"{record['iterations']} steps" if record.get("iterations")
              else f"{record['epochs_setting']} epochs")  # fmt: skip
    return f"lr {record['lr']:g}, {budget}"


def render(results_dir: Path, name: str) -> str:
    """The check's table (docs_tables.py, `kind=recipe_check`) from
    RESULTS_DIR/NAME/records.jsonl."""
    folder = results_dir / name
    lines = (folder / "records.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(x) for x in lines if x]
    source = json.loads((folder / "source.json").read_text(encoding="utf-8"))
    by = defaultdict(dict)  # (method, variant) -> {(dataset, seed): record}
    for r in records:
        by[r["method"], r["variant"]][r["dataset"], r["seed"]] = r
    keys = sorted(by["zsclip", "mini"])
    datasets = ", ".join(dict.fromkeys(d for d, _ in keys))
    seeds = ",".join(str(s) for s in sorted({s for _, s in keys}))
    versions = ", ".join(sorted({str(r.get("vlprompt_version")) for r in records}))
    out = [
        f"Generated by `python benchmarks/docs_tables.py` from `benchmarks/results/{name}/` "
        f"({len(records)} runs, vlprompt {versions}; made with `{source['command']}`). "
        f"Validation accuracy on every validation image of the base classes ({datasets}; seed "
        f"{seeds}; 16 shots): the mean over the data sets, then each data set's. A variant wins "
        f"when its mean is at least {MARGIN:g} points above the mini recipe's and it is above "
        "it on most data sets.",
        "",
        "| method | mini recipe | " + " | ".join(VARIANTS) + " | chosen on validation |",
        "|---" * (len(VARIANTS) + 3) + "|",
    ]
    zero = [by["zsclip", "mini"][k]["accuracy"] for k in keys]
    out.append(f"| zsclip | - | {_cell(zero)} |" + " |" * len(VARIANTS))
    methods = [m for m in dict.fromkeys(m for m, _ in by) if m != "zsclip"]
    for method in methods:
        if not all(set(by[method, v]) == set(keys) for v in VARIANTS):
            continue  # unfinished: no row until every variant has every data set
        scores = {v: [by[method, v][k]["accuracy"] for k in keys] for v in VARIANTS}
        recipe = _recipe(by[method, "mini"][keys[0]])
        cells = " | ".join(_cell(scores[v]) for v in VARIANTS)
        out.append(f"| {method} | {recipe} | {cells} | {winner(scores)} |")
    return "\n".join(out) + "\n"


def _cell(values: Sequence[float]) -> str:
    return f"**{statistics.mean(values):.1f}** ({' / '.join(f'{v:.1f}' for v in values)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="train and score the variants")
    run.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    run.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    run.add_argument("--seeds", default="1")
    run.add_argument("--runs-dir", default="runs/recipe-check")
    gather = sub.add_parser("collect", help="store the scored runs for the docs")
    gather.add_argument("--runs-dir", default="runs/recipe-check")
    gather.add_argument("--output", default="benchmarks/results/mini-recipe-check")
    gather.add_argument("--command", required=True, help="the run command(s) that made them")
    args = parser.parse_args(argv)
    if args.action == "collect":
        print(collect(Path(args.runs_dir), Path(args.output), args.command))
        return 0
    args.methods = [m for m in args.methods.split(",") if m]
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    run_checks(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
