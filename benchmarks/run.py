"""Speed and memory of vlprompt's fast paths against the methods' reference implementations.

    python benchmarks/run.py [--quick] [--threads N] [--out BENCHMARKS.md]

A ViT-B/16-shaped CLIP with random weights (open_clip "ViT-B-16", no download) runs on the CPU.
For each method and each implementation ("fast" = ours, "reference" = the paper's computation,
selected by the method config's `implementation` field) it measures, on identical inputs and
identical initial prompts:

- train-step time: one `backward_step` (forward, loss, gradient rule, backward) plus an SGD step;
  one warm-up step, then the median over `--repeats` steps (wall clock, `time.perf_counter`);
- step peak memory: the peak of torch's live CPU tensor bytes during one warm step, above the
  bytes live when the step starts. It is read from the allocation/free events the torch profiler
  records (`profile_memory=True`), summed in time order. This counts every tensor torch allocates
  on the CPU (activations saved for backward, temporaries, gradients) and nothing else (no Python
  objects, no allocator slack), which is what the fast paths change. The process RSS is not used:
  glibc keeps freed pages, so RSS shows history, not a step's need;
- text-side memory at many classes: the same peak for computing the training text features of
  `--text-classes` classes and back-propagating a scalar through them (what a step costs on the
  text side when every class is in the batch, e.g. ImageNet's 1000 classes);
- a check that both implementations give the same logits (max abs difference is reported).

Batches: RPO 4 (its official batch size), CoOp/KgCoOp/ProGrad 32, CoCoOp 1 (its official batch
size: its prompts depend on each image, so a batch of 32 is 32 text passes); 100 classes; text
side at 1000 classes. `--quick` shrinks everything so the script runs in a few minutes on a laptop
(the numbers then only say that the tool works). The full run needs ~20 GB of memory for the
reference text side at 1000 classes (it grows linearly: about 1 GB per 50 classes).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import vlprompt
from vlprompt import load_clip
from vlprompt.io import atomic_write_text
from vlprompt.methods import create_method

BATCH = {"rpo": 4, "coop": 32, "kgcoop": 32, "prograd": 32, "cocoop": 1}
TEXT_SIDE = ("rpo", "coop", "kgcoop", "prograd")  # methods whose text side has no image input
IMPLEMENTATIONS = ("fast", "reference")
MB = 1024 * 1024


@dataclass
class Result:
    method: str
    implementation: str
    batch: int
    classes: int
    step_ms: float  # median
    step_peak_mb: float
    text_peak_mb: float | None


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak live torch CPU tensor bytes during `fn()`, above the level when it starts. The
    profiler cannot size frees of tensors allocated before it started (it warns "Memory block of
    unknown size"), so those are not subtracted: the number can overstate, never understate."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def classnames(n: int) -> list[str]:
    words = ["red", "small", "striped", "wooden", "metal", "round", "tall", "green", "old"]
    return [f"{words[i % len(words)]} object number {i}" for i in range(n)]


def build(method: str, clip, names: list[str], implementation: str):
    torch.manual_seed(0)  # same initial prompts for both implementations
    return create_method(method, clip, names, implementation=implementation)


def train_step(model, images: torch.Tensor, labels: torch.Tensor, opt) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    out = model.backward_step(images, labels)
    opt.step()
    return out.logits


def measure(method: str, implementation: str, clip, args) -> tuple[Result, torch.Tensor]:
    names = classnames(args.classes)
    batch = BATCH[method] if not args.quick else min(BATCH[method], args.quick_batch)
    model = build(method, clip, names, implementation)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, clip.image_size, clip.image_size, generator=gen)
    labels = torch.randint(0, len(names), (batch,), generator=gen)
    with torch.no_grad():
        logits = model(images)  # before any step: compared across implementations
    train_step(model, images, labels, opt)  # warm-up (also fills the fast paths' caches)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        train_step(model, images, labels, opt)
        times.append(time.perf_counter() - start)
    step_peak = peak_bytes(lambda: train_step(model, images, labels, opt))

    text_peak = None
    if method in TEXT_SIDE and args.text_classes:
        text_model = build(method, clip, classnames(args.text_classes), implementation)

        def text_side() -> None:
            text_model.zero_grad(set_to_none=True)
            text_model.text_features().float().pow(2).sum().backward()

        text_side()  # warm-up: frozen caches of the fast paths are not part of a step
        text_peak = peak_bytes(text_side) / MB
        del text_model
    result = Result(
        method,
        implementation,
        batch,
        len(names),
        1000 * statistics.median(times),
        step_peak / MB,
        text_peak,
    )
    return result, logits


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def ratio(ours: float | None, ref: float | None) -> str:
    if ours is None or ref is None or ours <= 0:
        return "-"
    return f"{ref / ours:.1f}x"


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def render(results: list[Result], diffs: dict[str, float], skipped: dict[str, str], args) -> str:
    by = {(r.method, r.implementation): r for r in results}
    mode = "quick (`--quick`: numbers only show the tool works)" if args.quick else "full"
    lines = [
        "# Benchmarks",
        "",
        "Written by `python benchmarks/run.py" + (" --quick" if args.quick else "") + "`; "
        "see the script's docstring for what is measured and how.",
        "",
        f"- mode: {mode}",
        f"- machine: {machine()}",
        f"- backbone: open_clip {args.model} shape, random weights, fp32, CPU",
        f"- classes: {args.classes} per step; text side at {args.text_classes} classes; "
        f"median of {args.repeats} steps after 1 warm-up",
        '- "reference" = the paper\'s computation (full sequences, full autograd); "fast" = '
        "vlprompt's default; speed-up and memory ratio are reference / fast",
        "",
        "| method | batch | step ms (fast) | step ms (ref) | speed-up | step peak MB (fast) | "
        "step peak MB (ref) | ratio | text-side peak MB (fast) | text-side peak MB (ref) | "
        "ratio | max abs logit diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in BATCH:
        fast, ref = by.get((method, "fast")), by.get((method, "reference"))
        if fast is None or ref is None:
            continue
        lines.append(
            f"| {method} | {fast.batch} | {fmt(fast.step_ms, 0)} | {fmt(ref.step_ms, 0)} | "
            f"{ratio(fast.step_ms, ref.step_ms)} | {fmt(fast.step_peak_mb)} | "
            f"{fmt(ref.step_peak_mb)} | {ratio(fast.step_peak_mb, ref.step_peak_mb)} | "
            f"{fmt(fast.text_peak_mb)} | {fmt(ref.text_peak_mb)} | "
            f"{ratio(fast.text_peak_mb, ref.text_peak_mb)} | {diffs[method]:.1e} |"
        )
    if args.note:
        lines += ["", f"Note: {args.note}"]
    if skipped:
        lines += ["", "Not measured:", ""]
        lines += [f"- {m}: {why}" for m, why in skipped.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--methods", default=",".join(BATCH), help="comma-separated")
    parser.add_argument("--out", default="BENCHMARKS.md", help="Markdown report to write")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture")
    parser.add_argument("--note", default="", help="a line about the run, added to the report")
    args = parser.parse_args(argv)
    args.classes, args.text_classes, args.repeats = (10, 50, 2) if args.quick else (100, 1000, 5)
    args.quick_batch = 8
    if args.threads:
        torch.set_num_threads(args.threads)

    clip = load_clip(args.model)  # random weights: speed and memory do not depend on them
    results: list[Result] = []
    diffs: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for method in args.methods.split(","):
        try:
            importlib.import_module(f"vlprompt.methods.{method}")
        except ImportError as exc:
            skipped[method] = f"not available ({exc})"
            continue
        logits = {}
        for impl in IMPLEMENTATIONS:
            print(f"{method} [{impl}] ...", file=sys.stderr, flush=True)
            result, logits[impl] = measure(method, impl, clip, args)
            results.append(result)
            print(f"  {result}", file=sys.stderr, flush=True)
        diffs[method] = float((logits["fast"] - logits["reference"]).abs().max())
    report = render(results, diffs, skipped, args)
    atomic_write_text(args.out, report)
    print(report)
    print(f"vlprompt {vlprompt.__version__}: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
