"""The precision paths on a GPU: every method trained a few steps in fp32, fp16 and bf16, checked
and timed against its reference implementation.

    python benchmarks/gpu_check.py                       # CUDA: ViT-B/16 shape + the mini world
    python benchmarks/gpu_check.py --device cpu --quick  # a tiny model: checks the script itself

Why: on CUDA the engine trains under fp16 autocast with a GradScaler (the papers' setting) or
bf16 autocast, and the test suite runs only where no GPU is (bf16 CPU autocast,
tests/test_precision.py). This script runs the CUDA code for every method (and RPO with
ProGrad's rule), on two backbones: open_clip's ViT-B-16 architecture with random weights (no
download; the papers' shapes, 100 classes per step, run.py's batch sizes) and the mini world (its
shipped tiny CLIP, real mini_objects images and class names). For each method and precision:

1. one untimed step without loss scaling or update (the comparison below; it also builds RPO's
   per-class-list text cache), then `--steps` timed steps of the engine's training step
   (`vlprompt.precision.autocast_for` + `method.backward_step` + a GradScaler for fp16, as
   `engine.fit` does), for the reference implementation (the paper's computation) and the fast
   one (vlprompt's default), on the same batch from the same initial prompts. Reported: median
   ms per step, the speed-up, CUDA's peak memory, the steps the GradScaler skipped;
2. checks (a failed one makes the exit status 1): every loss and every learned value finite;
   fast = reference on the untimed step: in fp32 to float tolerance (max |logit difference| <=
   1e-4 * logit_scale and gradient relative error <= 1e-3: TF32 is switched off, so this is
   fp32's rounding over 12 layers, not a 10-bit format), in fp16/bf16 not broken (gradient
   cosine >= 0.9; their rounding gives > 0.99 on the tests' tiny models, a lost mask or a wrong
   dtype gives far less);
3. on the mini world, one epoch of the real `engine.fit` (its own GradScaler, loader, divergence
   checks) per method and precision.

Without CUDA it refuses in one line, unless `--device cpu`: then fp32 and bf16 run (the engine
refuses fp16 on a CPU) and `--quick` swaps ViT-B/16 for a tiny random ViT.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BATCH, classnames  # noqa: E402  (run.py: the speed benchmark's batch sizes)

from vlprompt import load_clip  # noqa: E402
from vlprompt.backbone import register_model_config  # noqa: E402
from vlprompt.config import EngineSettings  # noqa: E402
from vlprompt.engine import fit  # noqa: E402
from vlprompt.methods import create_method, get_method_class, list_methods  # noqa: E402
from vlprompt.precision import autocast_for  # noqa: E402

TINY = "gpu-check-tiny-vit"  # --quick's backbone (the tests' tiny ViT shape)
register_model_config(TINY, {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
})  # fmt: skip
PRECISIONS = ("fp32", "fp16", "bf16")
FP32_LOGIT_TOL, FP32_GRAD_REL, LOW_GRAD_COS = 1e-4, 1e-3, 0.9


def methods() -> list[tuple[str, dict]]:
    """Every registered vlprompt method that trains, and RPO with ProGrad's rule."""
    own = [n for n in list_methods() if get_method_class(n).__module__.startswith("vlprompt.")]
    trained = [n for n in own if get_method_class(n).needs_training]
    return [(n, _deterministic(n)) for n in trained] + [("rpo", {"gradient_rule": "prograd"})]


def _deterministic(name: str) -> dict:
    """Settings that make a step deterministic (CLIP-LoRA's dropout off): fast and reference
    are compared step for step, and dropout masks would differ between them."""
    names = {f.name for f in fields(get_method_class(name).config_class)}
    return {"dropout": 0.0} if "dropout" in names else {}


def has_implementations(name: str) -> bool:
    """Whether the method has a fast and a reference implementation (`implementation`)."""
    return any(f.name == "implementation" for f in fields(get_method_class(name).config_class))


def method_label(name: str, settings: dict) -> str:
    return name + "".join(
        f" + {v}" if k == "gradient_rule" else f" ({k}={v})" for k, v in settings.items()
    )


@dataclass
class Run:
    """One implementation's steps: times, peak memory, first-step logits/gradients, problems."""

    times: list[float] = field(default_factory=list)
    skipped: int = 0  # steps the GradScaler skipped (an fp16 overflow; it then lowers its scale)
    peak_mb: float | None = None
    logits: torch.Tensor | None = None
    grads: torch.Tensor | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return 1000 * statistics.median(self.times) if self.times else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(method, images, labels, precision: str, device: torch.device, steps: int) -> Run:
    """First an untimed step without loss scaling and without an update: its logits and
    gradients are the fast-vs-reference comparison (a GradScaler may skip its first steps on an
    overflow, which says nothing about the implementation), and it builds RPO's per-class-list
    text cache. Then `steps` timed steps as `engine._run_epoch` runs them: autocast,
    `backward_step` with the GradScaler's `scale` (fp16 only), scaler step and update."""
    run = Run()
    params = method.trainable_parameters()
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with autocast_for(device, precision):
        out = method.backward_step(images, labels)
    run.logits = out.logits.detach().float().cpu()
    run.grads = torch.cat([p.grad.detach().float().flatten().cpu() for p in params])
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        sync(device)
        start = time.perf_counter()
        with autocast_for(device, precision):
            out = method.backward_step(images, labels, scaler.scale)
        scaler.step(opt)
        scaler.update()
        sync(device)
        run.times.append(time.perf_counter() - start)
        run.skipped += int(scaler.is_enabled() and scaler.get_scale() < scale)
        if not torch.isfinite(out.loss):
            run.problems.append(f"loss {out.loss.item()} at step {step + 1}")
    if not all(torch.isfinite(p.detach()).all() for p in params):
        run.problems.append("learned values not finite after the steps")
    if device.type == "cuda":
        run.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return run


def compare(fast: Run, ref: Run, precision: str, logit_scale: float) -> tuple[str, list[str]]:
    """Fast vs reference on the untimed step: the table's text and the failed checks."""
    dlogit = float((fast.logits - ref.logits).abs().max()) / logit_scale
    rel = float((fast.grads - ref.grads).norm() / ref.grads.norm().clamp_min(1e-30))
    cos = float(F.cosine_similarity(fast.grads, ref.grads, dim=0))
    text = f"{dlogit:.1e} / {rel:.1e} / {cos:.5f}"
    if not (torch.isfinite(fast.grads).all() and torch.isfinite(ref.grads).all()):
        return text, ["first-step gradients not finite"]
    failed = []
    if precision == "fp32" and not (dlogit <= FP32_LOGIT_TOL and rel <= FP32_GRAD_REL):
        failed.append(f"fp32 fast != reference (logit {dlogit:.1e}, gradient {rel:.1e})")
    if precision != "fp32" and cos < LOW_GRAD_COS:
        failed.append(f"{precision} fast vs reference gradient cosine {cos:.3f}")
    return text, failed


def engine_epoch(name, settings, clip, names, images, labels, precision, device, batch) -> str:
    """One epoch of `engine.fit` (fast path) on at most 4 batches; "" when it went well."""
    torch.manual_seed(0)
    method = create_method(name, clip, names, epochs=1, warmup_epochs=0, batch_size=batch,
                           **settings)  # fmt: skip
    data = list(zip(images[: 4 * batch].cpu(), labels[: 4 * batch].tolist()))
    engine = EngineSettings(device=str(device), precision=precision, num_workers=0)
    try:
        result = fit(method, data, settings=engine, seed=0, progress=False, logger=lambda _: None)
    except Exception as exc:  # a failed check, reported in the table
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    loss = result.history[-1].loss
    return "" if torch.isfinite(torch.tensor(loss)) else f"epoch loss {loss}"


def backbones(args, device: torch.device) -> list[tuple]:
    """(label, clip, class names, images, labels) of the random ViT and of the mini world."""
    from vlprompt.data.transforms import transform_for
    from vlprompt.mini import load_mini_clip
    from vlprompt.mini.datasets import get_spec

    out = []
    model = TINY if args.quick else "ViT-B-16"
    torch.manual_seed(0)
    clip = load_clip(model, device=str(device))  # random weights: no download
    n_classes = 10 if args.quick else 100
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(32, 3, clip.image_size, clip.image_size, generator=gen)
    labels = torch.randint(0, n_classes, (32,), generator=gen)
    out.append((f"{model}, random weights", clip, classnames(n_classes), images, labels))
    mini = load_mini_clip(device=str(device))
    spec = get_spec("mini_objects")
    transform = transform_for(mini, train=False)
    pairs = [(label, i) for i in range(2) for label in range(len(spec.classnames))]
    images = torch.stack([transform(spec.item("train", label, i)) for label, i in pairs])
    labels = torch.tensor([label for label, _ in pairs])
    out.append(("mini world (mini_objects)", mini, list(spec.classnames), images, labels))
    return out


def check(args) -> tuple[str, bool]:
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (cuDNN's default is TF32)
    torch.backends.cudnn.allow_tf32 = False
    precisions = [p for p in PRECISIONS if device.type == "cuda" or p != "fp16"]
    rows, failures = [], []
    started = time.perf_counter()
    for where, clip, names, images, labels in backbones(args, device):
        scale = float(clip.logit_scale)
        for name, settings in methods():
            batch = min(BATCH.get(name, 4), 4 if args.quick else 32, len(images))
            x, y = images[:batch].to(device), labels[:batch].to(device)
            for precision in precisions:
                runs = {}
                for impl in ("reference", "fast"):
                    torch.manual_seed(0)  # the same initial prompts for both
                    # a method with one computation (CLIP-Adapter) runs it as both
                    chosen = {"implementation": impl} if has_implementations(name) else {}
                    method = create_method(name, clip, names, **chosen, **settings)
                    runs[impl] = train_steps(method, x, y, precision, device, args.steps)
                    del method
                ref, fast = runs["reference"], runs["fast"]
                text, failed = compare(fast, ref, precision, scale)
                failed += [f"{impl}: {p}" for impl, r in runs.items() for p in r.problems]
                fitted = "not run"
                if where.startswith("mini"):
                    problem = engine_epoch(name, settings, clip, names, images, labels,
                                           precision, device, batch)  # fmt: skip
                    fitted = "ok" if not problem else "FAILED"
                    failed += [f"engine.fit: {problem}"] if problem else []
                peak = " / ".join(f"{r.peak_mb:,.0f}" if r.peak_mb else "n/a" for r in (ref, fast))
                skipped = " / ".join(str(r.skipped) for r in (ref, fast))
                rows.append(
                    f"| {where} | {method_label(name, settings)} | {batch} | {precision} | "
                    f"{ref.ms:.1f} | {fast.ms:.1f} | {ref.ms / fast.ms:.2f}x | {peak} | "
                    f"{skipped} | {text} | {fitted} | "
                    f"{'FAILED: ' + '; '.join(failed) if failed else 'ok'} |"
                )
                failures += [
                    f"{where}, {method_label(name, settings)}, {precision}: {f}" for f in failed
                ]
                print(rows[-1], file=sys.stderr, flush=True)  # progress
    info = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        "## GPU check (`benchmarks/gpu_check.py`)",
        "",
        f"- command: `{' '.join(['python benchmarks/gpu_check.py', *args.argv])}`",
        f"- device: {info}; torch {torch.__version__}; TF32 off; {args.steps} timed steps after "
        f"1 untimed comparison step; wall time {time.perf_counter() - started:.0f} s",
        "- ms/step: median of the engine's training step (autocast, backward_step, GradScaler "
        "for fp16, optimizer step); speed-up = reference / fast; scaler skips: timed steps the "
        "fp16 GradScaler skipped on an overflow (it starts at 65536 and halves)",
        "- fast vs ref: the untimed step's max |logit difference| / logit_scale, gradient relative "
        "error, gradient cosine (fp32 must be <= 1e-4 / <= 1e-3; fp16/bf16 cosine >= 0.9)",
        *(
            ["- fp16 not run: the engine refuses fp16 on a CPU (it needs CUDA)"]
            if device.type != "cuda"
            else []
        ),  # fmt: skip
        "",
        "| backbone | method | batch | precision | reference ms/step | fast ms/step | speed-up | "
        "peak MB ref / fast | scaler skips ref / fast | fast vs ref: logit / grad rel / grad cos "
        "| engine.fit 1 epoch | checks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"**{'FAILED' if failures else 'all checks passed'}**"
        + (f" ({len(failures)}):" if failures else ""),
        *[f"- {f}" for f in failures],
    ]
    return "\n".join(lines) + "\n", not failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny random ViT instead of ViT-B/16, batches of at most 4")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5; 2 quick)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.steps = args.steps or (2 if args.quick else 5)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a "
              "GPU machine, or check the script itself with --device cpu --quick")  # fmt: skip
        return 2
    report, ok = check(args)
    print(report, end="")
    if args.out is not None:
        args.out.write_text(report, encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
