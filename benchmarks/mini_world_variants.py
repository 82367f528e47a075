"""Measure a variant of the mini world before adopting it: zero-shot vs CoOp on a replica.

    python benchmarks/mini_world_variants.py [--style cartoon | --styles photo,cartoon,...]
        [--coop lr=0.01,epochs=40]
        [--look '{"color": "white", "background": "night"}'] [--seed-offset 1000]
        [--model NAME --model-config JSON --pretrained CKPT] [--datasets mini_shapes,...]
        [--seeds 1,2,3] [--output-dir runs/variants/NAME] [--records FILE.jsonl]

Every data set is redrawn as a *replica*: the same classes and distribution with its image seed
moved by 1000, so no image of the real train/val/test splits is used and the test split stays
unseen by design choices. `--style` draws every image in one fixed style (default: each data
set's own); `--styles` draws item i of every class in the i-th style of the list, cycling (as
mini_scenes is drawn). `--look` replaces each data set's look (the shape, colour, pattern, size
and background fixed for all its images, except those that define its classes); `--look '{}'`
draws them from the whole world. `--seed-offset` moves the image seed by another amount (a
fresh replica). `--coop` overrides CoOp's mini-world settings (e.g. the official base-to-new init:
`"ctx_init=a photo of a"`). `--model-config` registers another open_clip config (e.g. a deeper
text tower) for `--model` / `--pretrained` weights from `vlprompt mini pretrain`.

Prints, per data set: zero-shot base accuracy with the bare class name as the prompt (next to
the template's, it shows how much the text tower listens to the words around the class name,
which are all that a learned context can change), then base-to-new accuracy of zero-shot CLIP
and CoOp (mean over seeds). The quickstart settings (`MINI_SETTINGS`, no crop) are used throughout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from pathlib import Path

REPLICA_SEED_OFFSET = 1000


def look_arg(text: str) -> dict:
    """Parse `--look`: a JSON object of attribute -> value."""
    try:
        look = json.loads(text)
    except ValueError:
        look = None
    if not isinstance(look, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object such as \'{{"color": "white"}}\', got {text!r}'
        )
    return look


def _settings(text: str) -> dict:
    """Parse `lr=0.01,epochs=40` into {"lr": 0.01, "epochs": 40} (numbers as numbers, else text)."""
    values = {}
    for part in filter(None, text.split(",")):
        key, _, raw = part.partition("=")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw
    return values


LOOK_ATTRIBUTES = ("shape", "color", "pattern", "size", "background")


def _look_values() -> dict[str, tuple]:
    from vlprompt.mini import world

    return {"shape": world.SHAPES, "color": tuple(world.COLORS), "pattern": world.PATTERNS,
            "size": world.SIZES, "background": world.SCENES}  # fmt: skip


def check_look(look: dict) -> dict:
    """`look` as given, or ValueError naming the attribute or value that is not the world's."""
    known = _look_values()
    for key, value in look.items():
        if key not in known:
            raise ValueError(f"look attribute {key!r} unknown; a look fixes {', '.join(known)}")
        if value not in known[key]:
            raise ValueError(
                f"look {key} {value!r} unknown; known: {', '.join(map(str, known[key]))}"
            )
    return look


def use_replicas(
    datasets: list[str],
    style: str | None,
    styles: tuple[str, ...] = (),
    look: dict | None = None,
    seed_offset: int = REPLICA_SEED_OFFSET,
) -> None:
    """Swap each data set's spec for its replica (the registry reads MINI_DATASETS at load time).

    `look`, when given, replaces the data set's look: its fixed shape, colour, pattern, size and
    background become these (attributes that define its classes are skipped); `{}` draws them
    from the whole world, as the data sets were drawn before they had looks."""
    from vlprompt.mini import datasets as mini_datasets
    from vlprompt.mini.world import STYLES

    unknown = [s for s in (style, *styles) if s is not None and s not in STYLES]
    if unknown:
        raise ValueError(f"unknown style(s) {', '.join(unknown)}; known: {', '.join(STYLES)}")
    if look is not None:
        check_look(look)
    for name in datasets:
        spec = mini_datasets.MINI_DATASETS[name]
        fixed = dict(spec.fixed)
        if look is not None:
            class_keys = {key for attrs in spec.class_attributes for key in attrs}
            fixed = {k: v for k, v in fixed.items() if k not in LOOK_ATTRIBUTES}
            fixed.update({k: v for k, v in look.items() if k not in class_keys})
        if style:
            fixed["style"] = style
        mini_datasets.MINI_DATASETS[name] = dataclasses.replace(
            spec,
            seed=spec.seed + seed_offset,
            fixed=fixed,
            variants=(),
            styles=() if style else (styles or spec.styles),
        )


def bare_name_accuracy(clip, name: str) -> float:
    """Zero-shot base accuracy (%) with the bare class name as the prompt (no template words)."""
    from vlprompt.mini import datasets as mini_datasets
    from vlprompt.mini.probe import zeroshot_accuracy

    spec = mini_datasets.MINI_DATASETS[name]
    mini_datasets.MINI_DATASETS[name] = dataclasses.replace(spec, template="{}")
    try:
        return zeroshot_accuracy(clip, name, "base")
    finally:
        mini_datasets.MINI_DATASETS[name] = spec


def add_replica_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by the replica scripts: which replicas, which model, which seeds."""
    parser.add_argument("--style", default=None)
    parser.add_argument("--styles", default="")
    parser.add_argument("--look", type=look_arg, default=None)
    parser.add_argument("--seed-offset", type=int, default=REPLICA_SEED_OFFSET)
    parser.add_argument("--model", default=None)
    parser.add_argument("--model-config", default=None)
    parser.add_argument("--pretrained", default=None)
    parser.add_argument(
        "--datasets",
        default="mini_shapes,mini_colors,mini_objects,mini_patterns,mini_counts,mini_sizes",
    )
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--records", default=None, help="also write the rows here (JSON lines)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_replica_arguments(parser)
    parser.add_argument("--coop", type=_settings, default={})
    parser.add_argument("--output-dir", default="runs/variants/default")
    args = parser.parse_args()
    out = Path(args.output_dir)
    # rendered replicas live apart from the real data sets (their folders would be re-rendered)
    os.environ["VLPROMPT_MINI_ROOT"] = str(out / "data")

    import open_clip

    from vlprompt._version import code_version
    from vlprompt.backbone import load_clip
    from vlprompt.io import atomic_write_jsonl
    from vlprompt.mini import MODEL_NAME, checkpoint_path
    from vlprompt.protocols import run_bench
    from vlprompt.quickstart import MINI_CROP_MIN_SCALE, MINI_SETTINGS

    if args.model_config:
        open_clip.add_model_config(args.model_config)
    model = args.model or MODEL_NAME
    pretrained = str(args.pretrained or checkpoint_path())
    datasets = args.datasets.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    if args.style and args.styles:
        parser.error("give --style (one style) or --styles (a cycle), not both")
    styles = tuple(filter(None, args.styles.split(",")))
    try:
        use_replicas(datasets, args.style, styles, args.look, args.seed_offset)
    except ValueError as error:
        parser.error(str(error))
    clip = load_clip(model, pretrained=pretrained)
    bare = {name: bare_name_accuracy(clip, name) for name in datasets}
    overrides = {"zsclip": {}, "coop": {**MINI_SETTINGS["coop"], **args.coop}}
    run_bench(
        "base2new", ["zsclip", "coop"], datasets, seeds=seeds, shots=16, backbone=model,
        pretrained=pretrained, output_dir=out, method_overrides=overrides, plots=False,
        train_kwargs={"crop_min_scale": MINI_CROP_MIN_SCALE},
    )  # fmt: skip
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

    def run_seconds(name: str) -> float:
        runs = {r["run"]: r.get("wall_s") or 0.0 for r in rows if r["dataset"] == name}
        return sum(runs.values())

    def mean(name: str, method: str, classes: str) -> float:
        return statistics.mean(
            r["accuracy"]
            for r in rows
            if r["dataset"] == name and r["method"] == method and r["subsample"] == classes
        )

    look = "own" if args.look is None else json.dumps(args.look, sort_keys=True)
    style = args.style or args.styles or "own"
    print(f"\nreplica data sets (seed +{args.seed_offset}), style {style}, look {look}, "
          f"model {model}, CoOp {overrides['coop']}, seeds {args.seeds}\n")  # fmt: skip
    records = [
        {"dataset": name, "look": look, "style": style, "seed_offset": args.seed_offset,
         "ZS base, bare name": bare[name], "ZS base": mean(name, "zsclip", "base"),
         "CoOp base": mean(name, "coop", "base"), "ZS new": mean(name, "zsclip", "new"),
         "CoOp new": mean(name, "coop", "new"), "wall_s": run_seconds(name),
         "vlprompt_version": code_version()}
        for name in datasets
    ]  # fmt: skip
    print(render(records))
    if args.records:
        atomic_write_jsonl(args.records, records)


def render(records: list[dict]) -> str:
    """CoOp against zero-shot on each replica: base accuracy with the bare class name and with
    the template, CoOp's base accuracy and its gain, then both on new classes."""
    lines = ["| data set | ZS base, bare name | ZS base | CoOp base | CoOp - ZS | ZS new | CoOp new |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in records:
        lines.append(
            f"| {r['dataset']} | {r['ZS base, bare name']:.1f} | {r['ZS base']:.1f} | "
            f"{r['CoOp base']:.1f} | {r['CoOp base'] - r['ZS base']:+.1f} | {r['ZS new']:.1f} | "
            f"{r['CoOp new']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def look_label(dataset: str, look: str, style: str) -> str:
    """A look's values in attribute order ("white, plain, night"), its style if not the
    data set's own, and "(kept)" for the data set's own look."""
    from vlprompt.mini.datasets import MINI_DATASETS

    spec = MINI_DATASETS[dataset]
    values = spec.fixed if look == "own" else json.loads(look)
    words = [str(values[a]) for a in LOOK_ATTRIBUTES if a in values]
    if style != "own":
        words.append(f"{style} style")
    classes = {key for attrs in spec.class_attributes for key in attrs}
    free = [a for a in LOOK_ATTRIBUTES if a not in values and a not in classes]
    if free:
        words[-1] += f" ({', '.join(free)} free)"
    return ", ".join(words) + (" (kept)" if look == "own" and style == "own" else "")


def render_looks(records: list[dict]) -> str:
    """Each look tried on a data set: CoOp - zero-shot on base classes and zero-shot on new
    classes, at every replica offset."""
    offsets = sorted({r["seed_offset"] for r in records})
    rows: dict[tuple, dict[int, dict]] = {}
    for r in records:
        rows.setdefault((r["dataset"], r["look"], r["style"]), {})[r["seed_offset"]] = r
    at = " / ".join(f"+{o}" for o in offsets)
    lines = [f"| data set | look tried (style photo; class attributes free) | CoOp - ZS, {at} "
             f"| ZS new, {at} |", "|---|---|---|---|"]  # fmt: skip
    for (dataset, look, style), by_offset in rows.items():
        gains = [f"{by_offset[o]['CoOp base'] - by_offset[o]['ZS base']:+.1f}"
                 if o in by_offset else "-" for o in offsets]  # fmt: skip
        new = [f"{by_offset[o]['ZS new']:.1f}" if o in by_offset else "-" for o in offsets]
        lines.append(f"| {dataset} | {look_label(dataset, look, style)} | {' / '.join(gains)} "
                     f"| {' / '.join(new)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
