"""CoOp's text side at 100 classes (forward + backward) with and without the shared-prefix
encoding (`vlprompt.methods.text_encoding.encode_shared_prefix`), same numbers either way.

    python benchmarks/prefix_share.py [--threads 1] [--repeats 3]

ViT-B/16-shaped random CLIP on the CPU; the two are timed in interleaved rounds (median).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vlprompt import load_clip
from vlprompt.methods import create_method
from vlprompt.methods import text_encoding as te


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clip = load_clip("ViT-B-16")
    torch.manual_seed(0)
    names = [f"object number {i}" for i in range(args.classes)]
    method = create_method("coop", clip, names)

    def text_side() -> None:
        method.zero_grad(set_to_none=True)
        method.text_features().float().pow(2).sum().backward()

    shared = te.can_share_prefix
    switch = {"shared prefix": shared, "no shared prefix": lambda *a: False}
    times: dict[str, list[float]] = {k: [] for k in switch}
    text_side()  # warm-up
    try:
        for _ in range(args.repeats):
            for label, rule in switch.items():
                te.can_share_prefix = rule
                start = time.perf_counter()
                text_side()
                times[label].append(time.perf_counter() - start)
    finally:
        te.can_share_prefix = shared
    for label, values in times.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"{label}: median {statistics.median(values):.2f} s ({rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
