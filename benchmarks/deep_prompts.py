"""What makes deep prompts cheaper, part by part: a training step (`backward_step`: the method's
whole loss) of IVLP, MaPLe or PromptSRC on a ViT-B/16-shaped CLIP (random weights, CPU, fp32),
each exact speed-up added in turn.

    python benchmarks/deep_prompts.py [--method ivlp] [--classes 100] [--batch 4] [--repeats 3]

Variants (same inputs, same initial prompts; the logits agree to float noise):
1. reference: full 77-token text prompts, every row of every block (the paper's computation);
2. + text truncated at the longest EOS (exact under the causal mask; IVLP only);
3. + only the pooled row at each tower's last block (CLS; each text's EOS): the default.

A deep prompt is read by every frozen token, so RPO's trick (frozen rows computed once without
autograd) does not apply; these two are what stays exact. Steps are timed interleaved (one of
each variant per round, so machine load hits all alike); the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vlprompt.backbone import load_clip
from vlprompt.deep_prompts import deep_image_features, deep_text_features
from vlprompt.methods import create_method
from vlprompt.methods.ivlp import IVLP


class TruncatedOnly(IVLP):
    """IVLP's fast text layout, but every row computed at the last blocks."""

    def text_features(self) -> torch.Tensor:
        feats = deep_text_features(
            self.clip, self.prompt_embeddings(), self.eot_index, list(self.deep_text),
            pooled_only=False,
        )  # fmt: skip
        return F.normalize(feats, dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return deep_image_features(
            self.clip, images, self.vision_prompt, list(self.deep_vision), pooled_only=False
        )


def step_seconds(method, images, labels) -> tuple[float, torch.Tensor]:
    method.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out = method.backward_step(images, labels)
    return time.perf_counter() - start, out.logits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="ivlp", choices=("ivlp", "maple", "promptsrc"))
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4, help="IVLP's official batch: 4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="ViT-B-16")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clip = load_clip(args.model)  # random weights: time does not depend on them
    names = [f"class name {i}" for i in range(args.classes)]
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, clip.image_size, clip.image_size)
    labels = torch.arange(args.batch) % args.classes
    variants = {}
    for label, implementation, cls in [
        ("reference (full length, every row)", "reference", None),
        *(
            [("+ text truncated at the longest EOS", "fast", TruncatedOnly)]
            * (args.method == "ivlp")
        ),
        ("+ pooled rows only at the last blocks (default)", "fast", None),
    ]:
        torch.manual_seed(1)
        method = create_method(args.method, clip, names, implementation=implementation)
        if cls is not None:
            method.__class__ = cls
        variants[label] = method
    times: dict[str, list[float]] = {k: [] for k in variants}
    logits: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats + 1):  # the first round warms up and is not timed
        for label, method in variants.items():
            seconds, logits[label] = step_seconds(method, images, labels)
            times[label].append(seconds)
    ref_label = next(iter(variants))
    ref = statistics.median(times[ref_label][1:])
    print(f"{args.method} training step on {args.model} shapes, {args.classes} classes, batch "
          f"{args.batch}, {args.threads} thread(s), median of {args.repeats}:")  # fmt: skip
    print("| variant | step s | speed-up vs reference | max abs logit diff vs reference |")
    print("|---|---|---|---|")
    for label in variants:
        median = statistics.median(times[label][1:])
        diff = (logits[label] - logits[ref_label]).abs().max().item()
        print(f"| {label} | {median:.2f} | {ref / median:.2f}x | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
