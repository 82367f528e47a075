"""Skip Tuning's train step against its plain reference, full fine-tuning and PromptSRC's step.

    python benchmarks/skiptuning_cost.py [--classes 100] [--repeats 2] [--threads 1]

The Skip Tuning paper compares the cost of training (time and GPU memory) with PromptSRC's;
this measures the same thing per optimizer step on the CPU: a ViT-B/16-shaped CLIP with random
weights (numbers depend only on shapes), fp32, batch 4 (both methods' official batch), one
`backward_step` plus an SGD step on the same images and labels. Variants:

- skiptuning, reference: the plain formulation (every block under autograd, 77 text positions);
- skiptuning, fast (the default): frozen lower blocks without autograd, cached text states;
- full fine-tuning: the same code with start_layer 0 and top_ratio 1 (every block of both towers
  tuned, every class in every step: the paper's FT baseline);
- promptsrc, fast (its default): one template for its frozen text target (computed once per
  class list before timing, as its cache is; the step's cost does not depend on the count).

Memory is `benchmarks/run.py`'s `peak_bytes` (torch's live CPU tensor bytes during the first
step, above the level at its start); time is the median over `--repeats` interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import MB, classnames, peak_bytes, timed  # noqa: E402

from vlprompt import load_clip  # noqa: E402
from vlprompt.methods import create_method  # noqa: E402

VARIANTS = {
    "skiptuning, reference (plain formulation)": ("skiptuning", {"implementation": "reference"}),
    "skiptuning, fast (default)": ("skiptuning", {}),
    "full fine-tuning (start_layer 0, top_ratio 1)": (
        "skiptuning",
        {"start_layer": 0, "top_ratio": 1.0},
    ),
    "promptsrc, fast (default)": ("promptsrc", {"templates": ("a photo of a {}.",)}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = load_clip("ViT-B-16")
    names = classnames(args.classes)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, clip.image_size, clip.image_size, generator=gen)
    labels = torch.randint(0, args.classes, (args.batch,), generator=gen)
    runs, peaks, times, params = {}, {}, {}, {}
    for label, (method, settings) in VARIANTS.items():
        torch.manual_seed(0)
        model = create_method(method, clip, names, **settings)
        model.train()
        for cache in ("text_start_states", "frozen_text_features", "zeroshot_text_features"):
            if hasattr(model, cache) and settings.get("implementation") != "reference":
                getattr(model, cache)()  # built once per class list, not per step
        opt = torch.optim.SGD(model.trainable_parameters(), lr=1e-6)

        def run(model=model, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            model.backward_step(images, labels)
            opt.step()

        runs[label], params[label], times[label] = run, model.num_trainable_parameters(), []
        peaks[label] = peak_bytes(run) / MB
        print(f"{label}: first step profiled, peak {peaks[label]:,.1f} MB", flush=True)
    for r in range(args.repeats):
        for label, run in runs.items():
            times[label].append(timed(run))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
              flush=True)  # fmt: skip
    print("\n| variant | trainable parameters | step s (median) | step peak MB |")
    print("|---|---|---|---|")
    for label in runs:
        print(f"| {label} | {params[label]:,} | {statistics.median(times[label]):.2f} | "
              f"{peaks[label]:,.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
