"""MMRL's train step against its reference and against PromptSRC's step (the comparison MMRL's
authors make), measured as `benchmarks/run.py` measures a step:

    OMP_NUM_THREADS=1 python benchmarks/mmrl_step.py [--rounds 5]

ViT-B/16 shapes (open_clip "ViT-B-16", random weights), fp32, CPU, 1 thread, 100 classes, batch 4
(both methods' official base-to-new batch). Each variant's first step is profiled for its peak
tensor memory (`run.peak_bytes`) and is the warm-up; then `--rounds` interleaved rounds time one
step (`backward_step` + an SGD step) of every variant; the median is printed. PromptSRC's frozen
text target (one template here: it is computed once per class list, before the steps) is built
before its first step, as `benchmarks/run.py` builds it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MB, build, classnames, peak_bytes, timed  # noqa: E402

from vlprompt import load_clip  # noqa: E402

PLANS = (
    ("mmrl", "reference", {}),
    ("mmrl", "fast", {}),
    ("promptsrc", "fast", {"templates": ("a photo of a {}.",)}),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    clip = load_clip("ViT-B-16")  # random weights: speed and memory do not depend on them
    names = classnames(100)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, clip.image_size, clip.image_size, generator=gen)
    labels = torch.randint(0, 100, (4,), generator=gen)
    variants = []
    for method, impl, extra in PLANS:
        model = build(method, clip, names, impl, **extra)
        if method == "promptsrc":
            model.frozen_text_features()  # once per class list, not part of a step
        opt = torch.optim.SGD(model.trainable_parameters(), lr=1e-3)

        def run(model=model, opt=opt) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            out = model.backward_step(images, labels)
            opt.step()
            return out.logits

        first: list[torch.Tensor] = []
        mb = peak_bytes(lambda run=run, first=first: first.append(run())) / MB
        variants.append((f"{method} {impl}", run, mb, [], first[0].detach().clone()))
        print(f"{method} {impl}: first step profiled, peak {mb:.1f} MB", flush=True)
    for r in range(args.rounds):
        for _, run, _, times, _ in variants:
            times.append(timed(run))
        print(f"round {r + 1}: " + ", ".join(f"{v[0]} {v[3][-1]:.2f}s" for v in variants))
    print("| variant | step s (median) | step peak MB |")
    for label, _, mb, times, _ in variants:
        print(f"| {label} | {statistics.median(times):.2f} | {mb:,.1f} |")
    diff = (variants[0][4] - variants[1][4]).abs().max().item()
    print(f"mmrl fast vs reference, max abs logit diff of the first step: {diff:.1e}")
    print(f"wall {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
