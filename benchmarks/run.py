"""Speed and memory of vlprompt's fast paths against the methods' reference implementations.

    python benchmarks/run.py [--quick] [--threads N] [--repeats R] [--out BENCHMARKS.md]

A ViT-B/16-shaped CLIP with random weights (open_clip "ViT-B-16", no download) runs on the CPU,
fp32. Numbers do not depend on the weights, only on shapes. What is measured:

1. Train step, per method: one `backward_step` (forward, loss, gradient rule, backward) plus an
   SGD step, on identical inputs and identical initial prompts, for each variant:
   "reference" (the paper's computation: full sequences under autograd, the method config's
   `implementation="reference"`), "fast" (vlprompt's default) and, for RPO and CoOp, "fast + view
   pool" (`vlprompt.view_pool`: the batch's frozen image side comes from a pre-built pool; the
   one-off pool build is timed separately and reported per stored view). Batches: RPO 4 (its
   official batch size), CoOp/KgCoOp/ProGrad 32, CoCoOp 1 (official; its prompts depend on the
   image), IVLP 4 (official; its reference runs the text prompts at full length); 100 classes. The first step of every variant is profiled for memory (and is the
   warm-up); then `--repeats` rounds time one step of every variant in turn (interleaved, so a
   change in machine load hits all variants alike). Reported: the median step time.
   For RPO the fast step is also split into its parts (each timed alone, median): the frozen
   image pass (what the view pool removes) and the text side (forward + backward of the text
   features of all classes, needed by every step whatever the image side does).
2. Step peak memory: the peak of torch's live CPU tensor bytes during the profiled step, above
   the bytes live when it starts, from the allocation/free events of the torch profiler
   (`profile_memory=True`) summed in time order: every tensor torch allocates (activations kept
   for backward, temporaries, gradients), no Python objects, no allocator slack. The process RSS
   is not used (glibc keeps freed pages, so RSS shows history, not a step's need). Frozen caches
   built once per class list (RPO's text keys/values) are built before and not counted.
3. Text side at many classes (ImageNet's 1000): the same peak for computing the training text
   features of all classes and back-propagating a scalar through them, per text-side layout
   (RPO; CoOp with 16 context vectors, which ProGrad shares; KgCoOp with 4). Ours is measured at
   `--text-classes` (1000). The reference at 1000 classes needs ~19 GB and ~15 minutes per
   method, beyond this machine, so it is measured at `--ref-text-classes` (default 50, 100) and
   extrapolated linearly (least squares) to 1000: labelled "extrapolated" in the report (every
   activation of the reference text side is per class, so its memory is linear in classes).
4. Evaluation: the class side once per call. For IVLP, MaPLe and PromptSRC (prompted text
   towers) at `--eval-classes` (1000, ImageNet's count), `--eval-images` random images in
   batches of `--eval-batch`, without autograd, timed once each: "per batch" calls the method
   on every batch (each forward runs the prompted text tower for all classes again: the
   evaluation before the class side entered the method contract) and "once per call" runs the
   same batches inside `method.classifier()` (`vlprompt.evaluation.compute_logits` and
   `Run.predict` do this: the text side once, then only the image tower per batch); with the
   max abs logit difference between the two.
5. Evaluation from a warm feature cache: for each frozen-image method, evaluating 4 PNG images
   twice through `vlprompt.evaluation.compute_logits` with a `FeatureCache`, counting calls of
   the visual tower (a forward hook on `clip.visual`), `clip.encode_image` and
   `clip.vision_embed`: the second evaluation must make none and give the same logits.

The report keeps any hand-written text between the lines `<!-- analysis -->` and
`<!-- /analysis -->` of the file it replaces.

`--quick` shrinks everything (a few minutes; numbers then only show that the tool works).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch.utils.data import Dataset

import vlprompt
from vlprompt import load_clip
from vlprompt.io import atomic_write_text
from vlprompt.methods import create_method, get_method_class

BATCH = {
    "rpo": 4,
    "coop": 32,
    "kgcoop": 32,
    "prograd": 32,
    "cocoop": 1,
    "ivlp": 4,
    "clip_adapter": 32,
    "tcp": 32,
    "maple": 4,
    "promptsrc": 4,
    "mmrl": 4,
    "clip_lora": 32,
    "two_stage": 32,
    "skiptuning": 4,
}
POOLED = ("rpo", "coop", "clip_adapter")  # methods also measured with the view pool
SPLIT = ("rpo",)  # methods whose fast step is split into image and text parts
# text-side layouts (prograd's is coop's): label -> (method, settings of ours)
TEXT_SIDE = {
    "rpo (default: chunks of 256 classes above 256)": ("rpo", {}),
    "rpo, text_chunk_size=0 (never chunked)": ("rpo", {"text_chunk_size": 0}),
    "coop (16 ctx; prograd's is the same)": ("coop", {}),
    "kgcoop (4 ctx)": ("kgcoop", {}),
    "tcp (4 ctx, 4 class-aware tokens at text block 8)": ("tcp", {}),
    "ivlp (deep prompts in 9 blocks; default: chunks of 256 classes, checkpointed)": ("ivlp", {}),
    "ivlp, text_chunk_size=1000 (one chunk, not checkpointed)": (
        "ivlp",
        {"text_chunk_size": 1000},
    ),
    "maple (coupled deep prompts; default chunks)": ("maple", {}),
}
CLASS_SIDE = ("ivlp", "maple", "promptsrc")  # text side once per evaluation call vs per batch
FROZEN_IMAGE = (
    "coop",
    "kgcoop",
    "prograd",
    "cocoop",
    "clip_adapter",
    "tcp",
)  # evaluated from cached features
POOL_VIEWS = 2
MB = 1024 * 1024


def batch_size(method: str, args: argparse.Namespace) -> int:
    """The method's batch: `--batch METHOD=N` if given, else BATCH (at most 4 with --quick)."""
    if method in args.batch:
        return args.batch[method]
    return BATCH[method] if not args.quick else min(BATCH[method], 4)


def parse_batches(text: str) -> dict[str, int]:
    """ "rpo=32,coop=8" -> {"rpo": 32, "coop": 8}."""
    out = {}
    for pair in filter(None, text.split(",")):
        method, _, n = pair.partition("=")
        if method not in BATCH or not n.isdigit() or int(n) < 1:
            raise SystemExit(
                f"--batch: expected METHOD=N with METHOD in {sorted(BATCH)}, got {pair!r}"
            )
        out[method] = int(n)
    return out


# ---- measuring ----------------------------------------------------------------------------------
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


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def classnames(n: int) -> list[str]:
    words = ["red", "small", "striped", "wooden", "metal", "round", "tall", "green", "old"]
    return [f"{words[i % len(words)]} object number {i}" for i in range(n)]


def has_reference(method: str) -> bool:
    """Whether the method has a plain reference implementation (`implementation="reference"`);
    the adapters have one computation only (CLIP-Adapter's fast variant is the view pool's)."""
    return any(f.name == "implementation" for f in fields(get_method_class(method).config_class))


def build(method: str, clip, names: list[str], implementation: str, **settings):
    torch.manual_seed(0)  # same initial prompts for every variant
    if has_reference(method):
        settings["implementation"] = implementation
    return create_method(method, clip, names, **settings)


class FixedImages(Dataset):
    """The benchmark batch as a data set without augmentation: every pooled view of an image is
    that image, so a pooled step sees exactly the inputs of the other variants."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


@dataclass
class Variant:
    method: str
    label: str  # "reference", "fast", "fast + view pool", or a part of the fast step
    run: Callable[[], torch.Tensor | None]  # one timed unit
    times: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    logits: torch.Tensor | None = None  # of the first (profiled) step
    pool_build_s_per_view: float | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def step_variants(method: str, clip, n_classes: int, batch: int) -> list[Variant]:
    """The variants of `method`'s train step on one shared batch (plus the fast step's parts)."""
    names = classnames(n_classes)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, clip.image_size, clip.image_size, generator=gen)
    labels = torch.randint(0, n_classes, (batch,), generator=gen)
    plans = [("reference", "reference", False)] * has_reference(method) + [("fast", "fast", False)]
    if method in POOLED:
        plans.append(("fast + view pool", "fast", True))
    variants = []
    for label, impl, pooled in plans:
        model = build(method, clip, names, impl)
        if hasattr(model, "frozen_text_features") and impl == "fast":
            model.frozen_text_features()  # RPO's per-class-list cache: built once, not a step
        if hasattr(model, "text_start_states") and impl == "fast":
            model.text_start_states()  # Skip Tuning's frozen text states: once per class list
        opt = torch.optim.SGD(model.trainable_parameters(), lr=1e-3)
        pool = rows = None
        build_s = None
        if pooled:
            from vlprompt.view_pool import build_view_pool

            pool = build_view_pool(model, FixedImages(images, labels), POOL_VIEWS, seed=0,
                                   batch_size=batch, say=lambda _: None)  # fmt: skip
            rows = pool.rows(torch.arange(batch), epoch=0)
            build_s = pool.build_s / (batch * POOL_VIEWS)

        def run(model=model, opt=opt, pool=pool, rows=rows) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            feed = pool.feed(model, rows) if pool is not None else contextlib.nullcontext(images)
            with feed as inputs:
                out = model.backward_step(inputs, labels)
            opt.step()
            return out.logits

        variants.append(Variant(method, label, run, pool_build_s_per_view=build_s))
    if method in SPLIT:
        model = build(method, clip, names, "fast")
        if method == "rpo":
            model.frozen_text_features()
            image_part = lambda: model.frozen_image_state(images)  # noqa: E731
        else:
            image_part = lambda: model.image_features(images)  # noqa: E731

        def text_part(model=model) -> None:
            model.zero_grad(set_to_none=True)
            model.text_features().float().pow(2).sum().backward()

        variants.append(Variant(method, "fast: frozen image pass alone", image_part))
        variants.append(Variant(method, "fast: text side fwd+bwd alone", text_part))
    return variants


def measure_steps(methods: list[str], clip, args) -> list[Variant]:
    """Profile every variant once (memory, warm-up), then interleave `args.repeats` rounds."""
    out = []
    for method in methods:
        batch = batch_size(method, args)
        variants = step_variants(method, clip, args.classes, batch)
        for v in variants:
            if v.label.startswith("fast:"):  # a part of the step: warm-up only
                v.run()
                continue
            say(f"{method} [{v.label}]: profiled first step ...")
            holder: list = []
            v.peak_mb = peak_bytes(lambda v=v, h=holder: h.append(v.run())) / MB
            v.logits = holder[0].detach().clone()
        for r in range(args.repeats):
            for v in variants:
                v.times.append(timed(v.run))
            say(f"{method} round {r + 1}: " + ", ".join(f"{v.label} {v.times[-1]:.2f}s"
                                                         for v in variants))  # fmt: skip
        out.extend(variants)
    return out


@dataclass
class TextSide:
    layout: str
    ours_classes: int
    ours_mb: float | None
    ours_s: float | None
    ref_points: list[tuple[int, float]]  # (classes, MB) measured
    ref_at_target_mb: float | None  # extrapolated linearly to ours_classes


def text_peak(method: str, clip, n_classes: int, impl: str, **settings) -> tuple[float, float]:
    model = build(method, clip, classnames(n_classes), impl, **settings)
    if hasattr(model, "frozen_text_features") and impl == "fast":
        model.frozen_text_features()  # built once per class list, not part of a step

    def text_side() -> None:
        model.zero_grad(set_to_none=True)
        model.text_features().float().pow(2).sum().backward()

    start = time.perf_counter()
    peak = peak_bytes(text_side) / MB
    return peak, time.perf_counter() - start


def linear_fit(points: list[tuple[int, float]], x: float) -> float:
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    slope = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0
    return my + slope * (x - mx)


def measure_text_side(methods: list[str], clip, args) -> list[TextSide]:
    out = []
    references: dict[str, list[tuple[int, float]]] = {}  # per method: one reference layout
    for label, (method, settings) in TEXT_SIDE.items():
        if method not in methods:
            continue
        if method not in references:
            references[method] = []
            for n in args.ref_text_classes:
                say(f"{method} text side [reference] at {n} classes ...")
                mb, s = text_peak(method, clip, n, "reference")
                references[method].append((n, mb))
                say(f"  {mb:,.0f} MB in {s:.0f}s")
        points = references[method]
        ours = ours_s = None
        if args.text_classes:
            say(f"{label} text side [fast] at {args.text_classes} classes ...")
            ours, ours_s = text_peak(method, clip, args.text_classes, "fast", **settings)
            say(f"  {ours:,.0f} MB in {ours_s:.0f}s")
        target = linear_fit(points, args.text_classes) if len(points) >= 2 else None
        out.append(TextSide(label, args.text_classes, ours, ours_s, points, target))
    return out


@dataclass
class ClassSideEval:
    method: str
    batches: int
    per_batch_s: float  # every batch's forward runs the text side
    once_s: float  # inside `method.classifier()`: the text side once
    max_diff: float


def measure_class_side(methods: list[str], clip, args) -> list[ClassSideEval]:
    """Evaluation time of the text-prompted methods, per batch vs once per call (same batches,
    same logits), at `args.eval_classes` classes."""
    gen = torch.Generator().manual_seed(3)
    size = clip.image_size
    images = torch.randn(args.eval_images, 3, size, size, generator=gen)
    batches = images.split(args.eval_batch)
    out = []
    for method in [m for m in CLASS_SIDE if m in methods]:
        model = build(method, clip, classnames(args.eval_classes), "fast").eval()

        def per_batch(model=model) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([model(b) for b in batches])

        def once(model=model) -> torch.Tensor:
            with model.classifier():
                return torch.cat([model(b) for b in batches])

        say(f"{method} evaluation at {args.eval_classes} classes, {len(batches)} batches ...")
        start = time.perf_counter()
        old = per_batch()
        old_s = time.perf_counter() - start
        start = time.perf_counter()
        new = once()
        new_s = time.perf_counter() - start
        diff = float((old - new).abs().max())
        out.append(ClassSideEval(method, len(batches), old_s, new_s, diff))
        say(f"  per batch {old_s:.1f}s, once per call {new_s:.1f}s ({old_s / new_s:.1f}x)")
    return out


def check_warm_cache_eval(methods: list[str], clip, args) -> list[tuple[str, int, int, float]]:
    """(method, image-tower calls cold, calls warm, max |logit diff| cold vs warm)."""
    from PIL import Image

    from vlprompt.data.types import Datum
    from vlprompt.evaluation import compute_logits
    from vlprompt.feature_cache import FeatureCache

    calls = {"n": 0}
    clip.visual.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    encode = clip.encode_image

    def counted_encode(*a, **k):
        calls["n"] += 1
        return encode(*a, **k)

    clip.encode_image = counted_encode
    embed = clip.vision_embed

    def counted_embed(*a, **k):
        calls["n"] += 1
        return embed(*a, **k)

    clip.vision_embed = counted_embed
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        items = []
        gen = torch.Generator().manual_seed(2)
        for i in range(4):
            pixels = torch.randint(0, 256, (48, 64, 3), generator=gen, dtype=torch.uint8)
            path = Path(tmp) / f"img{i}.png"
            Image.fromarray(pixels.numpy()).save(path)
            items.append(Datum(str(path), i % 2, f"class {i % 2}"))
        for method in [m for m in FROZEN_IMAGE if m in methods]:
            model = build(method, clip, classnames(10), "fast")
            cache = FeatureCache(Path(tmp) / f"cache-{method}")
            counts, logits = [], []
            for _ in range(2):  # cold, then warm
                calls["n"] = 0
                lg, used = compute_logits(model, items, feature_cache=cache, batch_size=4)
                assert used, f"{method} was not evaluated from features"
                counts.append(calls["n"])
                logits.append(lg)
            diff = float((logits[0] - logits[1]).abs().max())
            out.append((method, counts[0], counts[1], diff))
            say(f"{method} eval: image-tower calls cold {counts[0]}, warm {counts[1]}")
    del clip.encode_image, clip.vision_embed
    return out


# ---- the report -----------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def ratio(ours: float | None, ref: float | None) -> float | None:
    if ours is None or ref is None or ours <= 0:
        return None
    return ref / ours


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def render(steps, texts, evals, info, args, class_side=()) -> str:
    by = {(v.method, v.label): v for v in steps}
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{info['command']}` (see `benchmarks/run.py`'s docstring for what is "
        "measured and how).",
        "",
        f"- mode: {'quick (numbers only show that the tool works)' if args.quick else 'full'}",
        f"- machine: {info['cpu']}, {info['cores']} logical cores, torch {info['torch']} with "
        f"{info['threads']} thread(s), Python {info['python']}, {info['os']}",
        f"- load average (1 min) at start / end of the run: {info['load_start']:.2f} / "
        f"{info['load_end']:.2f}; wall time of the run: {info['wall_min']:.1f} min",
        f"- backbone: open_clip {args.model} shape, random weights, fp32, CPU; {args.classes} "
        f"classes per step; medians of {args.repeats} interleaved rounds after 1 profiled step",
        '- "reference" = the paper\'s computation (full sequences, full autograd); "fast" = '
        "vlprompt's default; speed-up and memory ratio = reference / variant (for a method "
        'without a reference, the adapters, = its "fast" step / variant)',
        "",
        "## Train step",
        "",
        "| method | batch | variant | step s (median) | speed-up vs reference | step peak MB | "
        "memory ratio | max abs logit diff vs reference (1st step) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in BATCH:
        # a method with one computation (the adapters): ratios against its own step
        ref = by.get((method, "reference")) or by.get((method, "fast"))
        if ref is None:
            continue
        for label in ("reference", "fast", "fast + view pool"):
            v = by.get((method, label))
            if v is None:
                continue
            diff = "-"
            if label != "reference" and v.logits is not None and ref.logits is not None:
                diff = f"{float((v.logits - ref.logits).abs().max()):.1e}"
            lines.append(
                f"| {method} | {batch_size(method, args)} | "
                f"{label} | {v.median_s:.2f} | {fmt(ratio(v.median_s, ref.median_s))}x | "
                f"{fmt(v.peak_mb)} | {fmt(ratio(v.peak_mb, ref.peak_mb))}x | {diff} |"
            )
    pooled = [by[(m, "fast + view pool")] for m in POOLED if (m, "fast + view pool") in by]
    if pooled:
        lines += ["", "One-off view-pool build (augment + encode every view once, not in the "
                  "step times): " + "; ".join(f"{v.method} {1000 * v.pool_build_s_per_view:.0f} "
                                              "ms per stored view" for v in pooled) + "."]  # fmt: skip
    split_lines = []
    for method in SPLIT:
        fast = by.get((method, "fast"))
        img = by.get((method, "fast: frozen image pass alone"))
        txt = by.get((method, "fast: text side fwd+bwd alone"))
        ref = by.get((method, "reference"))
        if not (fast and img and txt and ref):
            continue
        bound = ratio(max(fast.median_s - img.median_s, 1e-9), ref.median_s)
        split_lines.append(
            f"| {method} | {fast.median_s:.2f} | {img.median_s:.2f} "
            f"({100 * img.median_s / fast.median_s:.0f}%) | {txt.median_s:.2f} "
            f"({100 * txt.median_s / fast.median_s:.0f}%) | {fmt(bound)}x |"
        )
    if split_lines:
        lines += [
            "",
            "### Where the fast step's time goes",
            "",
            "Each part timed alone (median). The view pool removes the frozen image pass; the text "
            f"side (all {args.classes} classes' prompts, forward + backward) remains in every step.",
            "",
            "| method | fast step s | frozen image pass s (share) | text side s (share) | "
            "best speed-up without the image pass (reference / (fast - image)) |",
            "|---|---|---|---|---|",
            *split_lines,
        ]
    if texts:
        lines += [
            "",
            f"## Text side at {args.text_classes} classes (peak MB of text features + backward)",
            "",
            "| layout | ours, measured at "
            f"{args.text_classes} | reference, measured | reference at {args.text_classes}, "
            "**extrapolated** (linear fit) | memory ratio (extrapolated ref / ours) |",
            "|---|---|---|---|---|",
        ]
        for t in texts:
            measured = ", ".join(f"{n}: {mb:,.0f}" for n, mb in t.ref_points)
            lines.append(
                f"| {t.layout} | {fmt(t.ours_mb, 0)} | {measured} | "
                f"{fmt(t.ref_at_target_mb, 0)} | {fmt(ratio(t.ours_mb, t.ref_at_target_mb))}x |"
            )
    if class_side:
        lines += [
            "",
            f"## Evaluation at {args.eval_classes} classes: the class side once per call",
            "",
            f"{args.eval_images} images in batches of {args.eval_batch}, no autograd, timed "
            "once each.",
            "",
            "| method | batches | per batch s (text side every batch) | once per call s "
            "(`method.classifier()`) | speed-up | max abs logit diff |",
            "|---|---|---|---|---|---|",
        ]
        for c in class_side:
            lines.append(
                f"| {c.method} | {c.batches} | {c.per_batch_s:.1f} | {c.once_s:.1f} | "
                f"{fmt(ratio(c.once_s, c.per_batch_s))}x | {c.max_diff:.1e} |"
            )
    if evals:
        lines += ["", "## Evaluation from a warm feature cache", ""]
        for method, cold, warm, diff in evals:
            mark = "x" if warm == 0 and cold > 0 else " "
            lines.append(
                f"- [{mark}] {method}: image-tower calls cold {cold}, warm {warm}; "
                f"max abs logit diff cold vs warm {diff:.1e}"
            )
    lines += ["", "## Targets", ""] + targets(by, texts, evals)
    if args.note:
        lines += ["", f"Note: {args.note}"]
    return "\n".join(lines) + "\n"


def targets(by, texts, evals) -> list[str]:
    def speedup(method, label="fast"):
        ref, v = by.get((method, "reference")), by.get((method, label))
        return ratio(v.median_s, ref.median_s) if ref and v else None

    def line(name, value, goal):
        ok = None if value is None else value >= goal
        return f"- {name}: {fmt(value)}x (target >= {goal}x): {verdict(ok)}"

    out = [
        line("RPO train step", speedup("rpo"), 3),
        line("RPO train step with the view pool", speedup("rpo", "fast + view pool"), 10),
    ]
    out += [line(f"{m} train step", speedup(m), 2) for m in ("coop", "prograd", "kgcoop")]
    for t in texts:
        r = ratio(t.ours_mb, t.ref_at_target_mb)
        ok = None if r is None else r >= 4
        out.append(f"- {t.layout} text-side peak memory at {t.ours_classes} classes: ours / "
                   f"reference (extrapolated) = 1/{fmt(r)} (target <= 1/4): {verdict(ok)}")  # fmt: skip
    if evals:
        ok = all(warm == 0 and cold > 0 for _, cold, warm, _ in evals)
        out.append(f"- warm-cache evaluation runs no image-encoder pass: {verdict(ok)}")
    return out


ANALYSIS = ("<!-- analysis -->", "<!-- /analysis -->")


def with_analysis(report: str, old: Path) -> str:
    """`report` with the hand-written analysis block of the file it replaces (after the title)."""
    text = old.read_text(encoding="utf-8") if old.is_file() else ""
    start, end = text.find(ANALYSIS[0]), text.find(ANALYSIS[1])
    if start < 0 or end < start:
        return report
    block = text[start : end + len(ANALYSIS[1])]
    title, _, rest = report.partition("\n\n")
    return f"{title}\n\n{block}\n\n{rest}"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--methods", default=",".join(BATCH), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--text-classes", type=int, default=1000, help="ours, measured")
    parser.add_argument("--ref-text-classes", default="50,100",
                        help="reference text side, measured then extrapolated")  # fmt: skip
    parser.add_argument("--skip", default="",
                        help="parts to skip: steps,text,classside,eval")  # fmt: skip
    parser.add_argument("--eval-classes", type=int, default=1000,
                        help="classes of the class-side evaluation")  # fmt: skip
    parser.add_argument("--eval-images", type=int, default=8,
                        help="images of the class-side evaluation")  # fmt: skip
    parser.add_argument("--eval-batch", type=int, default=2,
                        help="batch of the class-side evaluation")  # fmt: skip
    parser.add_argument("--out", default="BENCHMARKS.md", help="Markdown report to write")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture")
    parser.add_argument("--note", default="", help="a line about the run, added to the report")
    parser.add_argument("--batch", default="", type=parse_batches,
                        help="batch per method instead of the official ones, e.g. rpo=32")  # fmt: skip
    args = parser.parse_args(argv)
    args.classes = 100
    args.ref_text_classes = [int(n) for n in args.ref_text_classes.split(",") if n]
    if args.quick:
        args.classes, args.text_classes, args.ref_text_classes = 10, 40, [10, 20]
        args.eval_classes = min(args.eval_classes, 40)
        args.repeats = min(args.repeats, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(args.skip.split(",")) - {""}
    methods = [m for m in args.methods.split(",") if m]
    info = machine()
    info["command"] = "python benchmarks/run.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])  # fmt: skip
    info["load_start"] = load_average()[0]
    started = time.perf_counter()

    clip = load_clip(args.model)  # random weights: speed and memory do not depend on them
    clip.requires_grad_(False)
    steps = measure_steps(methods, clip, args) if "steps" not in skip else []
    texts = measure_text_side(methods, clip, args) if "text" not in skip else []
    class_side = measure_class_side(methods, clip, args) if "classside" not in skip else []
    evals = check_warm_cache_eval(methods, clip, args) if "eval" not in skip else []
    info["load_end"] = load_average()[0]
    info["wall_min"] = (time.perf_counter() - started) / 60
    report = render(steps, texts, evals, info, args, class_side)
    report = with_analysis(report, Path(args.out))
    atomic_write_text(args.out, report)
    print(report)
    say(f"vlprompt {vlprompt.__version__}: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
