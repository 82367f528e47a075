"""The quickstart: the base-to-new protocol on the mini world, every method, three seeds.

`quickstart()` is what `vlprompt quickstart` and `make demo` run. It is the real pipeline
(`vlprompt.protocols.run_bench` -> `vlprompt.train` / `vlprompt.evaluate` on PNG files through the
normal data path) with the shipped tiny CLIP and per-method settings scaled to the mini world
(`MINI_SETTINGS`): same optimizers, schedules, context sizes and losses as the papers, fewer
epochs because a mini data set has 16 shots x 5-8 base classes and the tiny CLIP trains fast.
`mini_bench()` runs any protocol (base2new, fewshot, xd, dg) with the same settings; it makes the
tables of docs/mini-world.md. One departure from the papers, for every method alike: no random
crop (`MINI_CROP_MIN_SCALE`), chosen on the validation split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vlprompt.mini.tiny_clip import MODEL_NAME, checkpoint_path


def base2new_methods() -> tuple[str, ...]:
    """vlprompt's own methods that can be tested on new classes, from the registry (a new
    method is here by being registered; give it MINI_SETTINGS to keep it fast)."""
    from vlprompt.methods import get_method_class, list_methods

    return tuple(
        name
        for name in list_methods()
        if get_method_class(name).__module__.startswith("vlprompt.")
        and get_method_class(name).classifies_new_classes
    )


# The quickstart's table: the two seed methods (RPO, ProGrad) and the baselines of their papers,
# in minutes. Any other method joins with `vlprompt quickstart --methods ...` (every one in
# `base2new_methods()` can); docs/mini-world.md has the peers' and the adapters' tables.
QUICKSTART_METHODS = ("zsclip", "coop", "cocoop", "kgcoop", "prograd", "rpo")
QUICKSTART_DATASETS = ("mini_objects", "mini_patterns", "mini_sizes")
ALL_MINI_DATASETS = (
    "mini_shapes",
    "mini_colors",
    "mini_objects",
    "mini_patterns",
    "mini_counts",
    "mini_sizes",
    "mini_scenes",
)

# Per-method settings on the mini world (the rest is each method's paper recipe). Epoch counts
# are scaled down from the papers' (CoOp 200, KgCoOp 100, ProGrad 200, CoCoOp 10, RPO 15): a
# mini data set's base half has only 80-128 training images.
MINI_SETTINGS: dict[str, dict[str, Any]] = {
    "coop": {"epochs": 40, "batch_size": 32},
    "cocoop": {"epochs": 5, "batch_size": 1},  # batch 1 as the paper, half its 10 epochs
    "kgcoop": {"epochs": 40, "batch_size": 32},
    "prograd": {"epochs": 40, "batch_size": 32},
    "rpo": {"epochs": 10, "batch_size": 4},  # batch 4 as the paper, 10 of its 15 epochs
    # the paper's recipe as it is: 20 epochs, batch 4; prompts in every block of the tiny CLIP
    # (2 text, 3 vision blocks; the paper's 9 of 12)
    "ivlp": {},
    # the paper's 50 epochs scaled down; class-aware tokens at text block 1 of the tiny CLIP's 2
    "tcp": {"epochs": 20, "batch_size": 32},
    # CoOp's recipe (CLIP-Adapter's README: "follow CoOp's command") at CoOp's mini epochs
    "clip_adapter": {"epochs": 40, "batch_size": 32},
    # the paper's recipe as it is (5 epochs, batch 4; depth: every block of the tiny CLIP's 2)
    "maple": {},
    # the paper's recipe as it is (20 epochs, batch 4, GPA mean 15 std 1)
    "promptsrc": {},
    # official: 500 iterations per shot (8000 at 16 shots); 480 here, i.e. 120-240 epochs of a
    # mini base half (80-128 images, 2-4 steps of 32)
    "clip_lora": {"iterations": 480},
    # the cache's augmented views without the random crop, as every mini-world training
    "tip_adapter": {"cache_crop_min_scale": 1.0},
    "tip_adapter_f": {"cache_crop_min_scale": 1.0},
    "linear_probe": {},
    "zsclip": {},
}


# The mini world trains without the papers' random crop (area 8-100%), which in its 64-px scenes
# often cuts the object out or turns a small one into a large one: chosen on the validation split
# (benchmarks/mini_crop_on_val.py; CoOp, 2 seeds, all 7 data sets: mean base accuracy 67.4 with
# crop 0.08, 76.0 with 0.5, 79.2 with 1 = no crop). Every method gets the same augmentation.
MINI_CROP_MIN_SCALE = 1.0


def mini_bench(
    protocol: str,
    output_dir: str | Path,
    *,
    methods: Sequence[str] = QUICKSTART_METHODS,
    datasets: Sequence[str] = QUICKSTART_DATASETS,
    seeds: Sequence[int] = (1, 2, 3),
    shots: Sequence[int] | int | None = None,
    targets: Sequence[str] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    pretrained: str | Path | None = None,
    device: str = "cpu",
    plots: bool = True,
    crop_min_scale: float = MINI_CROP_MIN_SCALE,
    **bench_kwargs: Any,
) -> Any:
    """`vlprompt.protocols.run_bench` on the mini world with the tiny CLIP and `MINI_SETTINGS`
    (override per method with `settings`). `crop_min_scale`: the training crop (default
    `MINI_CROP_MIN_SCALE`: none; 0.08 = the papers'). `bench_kwargs` go to `run_bench` as they
    are (e.g. `executor="ray"`, `verbose=True`). Resumable: finished evaluations are not
    repeated."""
    from vlprompt.protocols import run_bench

    overrides = {m: dict(MINI_SETTINGS.get(m, {})) for m in methods}
    for method, values in (settings or {}).items():
        overrides.setdefault(method, {}).update(values)
    return run_bench(
        protocol,
        list(methods),
        list(datasets),
        seeds=list(seeds),
        shots=shots,
        targets=list(targets) if targets else None,
        backbone=MODEL_NAME,
        pretrained=str(pretrained or checkpoint_path()),
        output_dir=output_dir,
        method_overrides=overrides,
        device=device,
        plots=plots,
        **{**bench_kwargs, "train_kwargs": {"crop_min_scale": crop_min_scale,
                                             **bench_kwargs.get("train_kwargs", {})}},
    )  # fmt: skip


def quickstart(
    output_dir: str | Path = "runs/quickstart",
    seeds: Sequence[int] = (1, 2, 3),
    methods: Sequence[str] = QUICKSTART_METHODS,
    datasets: Sequence[str] = QUICKSTART_DATASETS,
    quick: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    verbose: bool = False,
    progress: bool | None = None,
    executor: str = "local",
    **train_options: Any,
) -> Any:
    """Base-to-new on the mini world for `methods` over `seeds`; print the Markdown table and
    the plots' paths. `quick=True`: one seed and one data set (a smoke run of about a minute).
    The terminal shows a progress bar and a line per finished run (`verbose`: every run's
    per-epoch lines too). `train_options` are every run's train options (vlprompt.config.
    TrainOptions, e.g. ``tensorboard=True``). Returns the sweep's `BenchResult`."""
    if quick:
        seeds, datasets = tuple(seeds)[:1], tuple(datasets)[:1]
    start = time.time()
    log(
        f"vlprompt quickstart: base-to-new on the mini world ({', '.join(datasets)}), "
        f"{len(methods)} methods x {len(seeds)} seeds, tiny CLIP {MODEL_NAME}; "
        f"writing to {output_dir}"
    )
    result = mini_bench(
        "base2new",
        output_dir,
        methods=methods,
        datasets=datasets,
        seeds=seeds,
        shots=16,
        device=device,
        verbose=verbose,
        progress=progress,
        executor=executor,
        train_kwargs=train_options,
    )
    summary = result.summary
    log(f"quickstart finished in {time.time() - start:.0f}s")
    if summary is not None:
        for plot in summary.plots:
            if Path(plot).suffix != ".pdf":  # each PNG has a PDF beside it
                log(f"plot: {plot}")
        log(f"tables per data set: {summary.markdown} (CSV: {summary.csv})")
        log("")
        log(first_table(Path(summary.markdown).read_text()))
    return result


NOT_RESULTS = ("## Recipe", "## Published numbers")  # summary.md's parts before its results


def first_table(markdown: str) -> str:
    """The first Markdown table of a summary's results (the average over data sets) with its
    heading (the recipe and the published numbers are not results)."""
    lines = markdown.splitlines()
    sections = [""]
    for line in lines:
        sections.append(line if line.startswith("#") else sections[-1])
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith("|") and sections[i + 1] not in NOT_RESULTS
        ),
        None,
    )
    if start is None:
        start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    heading = next((line for line in reversed(lines[:start]) if line.startswith("#")), "")
    return "\n".join([heading, "", *lines[start:end]]).strip()
