"""The quickstart: the base-to-new protocol on the mini world, every method, three seeds.

`quickstart()` is what `vlprompt quickstart` and `make demo` run. It is the real pipeline
(`vlprompt.protocols.run_bench` -> `vlprompt.train` / `vlprompt.evaluate` on PNG files through the
normal data path) with the shipped tiny CLIP and per-method settings scaled to the mini world
(the preset `mini`, vlprompt.mini.settings' `MINI_SETTINGS`): same optimizers, schedules,
context sizes and losses as the papers, fewer epochs because a mini data set has 16 shots x 5-8
base classes and the tiny CLIP trains fast. `mini_bench()` runs any protocol (base2new, fewshot,
xd, dg) with the same settings; it makes the tables of docs/mini-world.md. One departure from
the papers, for every method alike: no random crop (`MINI_CROP_MIN_SCALE`), chosen on the
validation split. `vlprompt train` and `bench` on a mini data set use the same preset by
default (`--preset paper`: the papers' recipes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vlprompt.mini.settings import MINI_CROP_MIN_SCALE, MINI_SETTINGS
from vlprompt.mini.tiny_clip import MODEL_NAME, checkpoint_path

__all__ = [
    "ALL_MINI_DATASETS", "MINI_CROP_MIN_SCALE", "MINI_SETTINGS", "QUICKSTART_DATASETS",
    "QUICKSTART_METHODS", "base2new_methods", "first_table", "mini_bench", "quickstart",
]  # fmt: skip


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
    crop_min_scale: float | None = None,
    **bench_kwargs: Any,
) -> Any:
    """`vlprompt.protocols.run_bench` on the mini world with the tiny CLIP and the `mini` preset
    (vlprompt.presets: `MINI_SETTINGS` and `MINI_CROP_MIN_SCALE`; override per method with
    `settings`), the same runs as `vlprompt bench PROTOCOL --methods ... --datasets mini_...`.
    `crop_min_scale`: the training crop (default: the preset's, none; 0.08 = the papers').
    `bench_kwargs` go to `run_bench` as they are (e.g. `executor="ray"`, `verbose=True`,
    `preset="paper"`). Resumable: finished evaluations are not repeated."""
    from vlprompt.presets import MINI_PRESET
    from vlprompt.protocols import run_bench

    train_kwargs = dict(bench_kwargs.pop("train_kwargs", None) or {})
    if crop_min_scale is not None:
        train_kwargs = {"crop_min_scale": crop_min_scale, **train_kwargs}
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
        method_overrides={m: dict(v) for m, v in (settings or {}).items()} or None,
        device=device,
        plots=plots,
        preset=bench_kwargs.pop("preset", MINI_PRESET),
        train_kwargs=train_kwargs,
        **bench_kwargs,
    )


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
