"""What makes deep prompts cheaper, part by part: a training step (`backward_step`: the method's
whole loss) of IVLP, MaPLe or PromptSRC on a ViT-B/16-shaped CLIP (random weights, CPU, fp32),
each exact speed-up added in turn.

    python benchmarks/deep_prompts.py [--method ivlp] [--classes 100] [--batch 4] [--repeats 3]
    python benchmarks/deep_prompts.py --breakdown [--methods ivlp,maple,promptsrc,tcp]

Variants (same inputs, same initial prompts; the logits agree to float noise):
1. reference: full 77-token text prompts, every row of every block (the paper's computation);
2. + text truncated at the longest EOS (exact under the causal mask; IVLP only);
3. + only the pooled row at each tower's last block (CLS; each text's EOS): the default.

A deep prompt is read by every frozen token, so RPO's trick (frozen rows computed once without
autograd) does not apply; these two are what stays exact. Steps are timed interleaved (one of
each variant per round, so machine load hits all alike); the median is reported.

`--breakdown`: where a default (fast) step's time goes, per method (IVLP, MaPLe, PromptSRC, TCP),
with the text positions every class shares encoded once ("new") or per class ("old",
`share_text_prefix = False`), in one run: the whole step (`backward_step`), the image side alone
(forward + backward of the prompted image features; PromptSRC adds its frozen image pass, TCP has
only that one, without autograd), the text side alone (forward + backward of all classes' text
features), the optimizer (an SGD step, momentum 0.9) and, as the rest of the step, the loss and
gradient rule. The floor is image side + new text side: what any exact step must do.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from vlprompt.backbone import load_clip
from vlprompt.deep_prompts import deep_image_features, deep_text_features
from vlprompt.methods import create_method
from vlprompt.methods.ivlp import IVLP

BREAKDOWN_METHODS = ("ivlp", "maple", "promptsrc", "tcp")


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


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def image_side(method, images) -> None:
    """Forward and backward of what the step computes from the images."""
    if method.frozen_image_encoder:  # TCP: frozen CLIP features, no autograd
        method.image_features(images)
        return
    feats = method.encode_image(images)
    if method.reads_frozen_image_features:  # PromptSRC's regulariser and teacher
        method.image_features(images)
    feats.sum().backward()


def text_side(method) -> None:
    """Forward and backward of the text features of every class."""
    method.text_features().sum().backward()


def breakdown(args) -> int:
    """Old (every text position per class) and new (shared positions once) in one run."""
    torch.set_num_threads(args.threads)
    clip = load_clip(args.model)
    names = [f"class name {i}" for i in range(args.classes)]
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, clip.image_size, clip.image_size)
    labels = torch.arange(args.batch) % args.classes
    methods = args.methods.split(",")
    runs = {}
    for name in methods:
        for path in ("old", "new"):
            torch.manual_seed(1)
            # PromptSRC's frozen text target (once per class list, cached, never in a step):
            # one template, not its 60, keeps the set-up short
            extra = {"templates": ("a photo of a {}.",)} if name == "promptsrc" else {}
            method = create_method(name, clip, names, **extra)
            method.share_text_prefix = path == "new"
            params = list(method.trainable_parameters())
            runs[name, path] = (method, torch.optim.SGD(params, lr=1e-6, momentum=0.9))
    parts = ("step", "text", "image", "optimizer")
    times: dict[tuple, list[float]] = {(*k, p): [] for k in runs for p in parts}
    logits = {}
    for method, _ in runs.values():  # warm-up (and the frozen caches): one step each, untimed
        step_seconds(method, images, labels)
    for round_ in range(1, args.repeats + 1):
        for (name, path), (method, opt) in runs.items():
            method.zero_grad(set_to_none=True)
            seconds, logits[name, path] = step_seconds(method, images, labels)
            measured = {"step": seconds, "optimizer": _timed(opt.step)}
            method.zero_grad(set_to_none=True)
            measured["text"] = _timed(lambda m=method: text_side(m))
            method.zero_grad(set_to_none=True)
            measured["image"] = _timed(lambda m=method: image_side(m, images))
            for part, value in measured.items():
                times[name, path, part].append(value)
            print(f"round {round_} {name} {path}: {measured}", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"Step breakdown on {args.model} shapes, {args.classes} classes, batch {args.batch}, "
          f"{args.threads} thread(s), fp32, CPU, median of {args.repeats} interleaved rounds "
          f"(seconds; old = every text position per class, new = shared positions once):")  # fmt: skip
    print(
        "| method | step old | step new | step old/new | text old | text new | text old/new "
        "| image | loss + rule (new) | optimizer | (step + optimizer) new / floor | max abs logit diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in methods:

        def old(part: str, name: str = name) -> float:
            return med[name, "old", part]

        def new(part: str, name: str = name) -> float:
            return med[name, "new", part]

        rest = new("step") - new("text") - new("image")
        floor = new("image") + new("text")
        diff = (logits[name, "old"] - logits[name, "new"]).abs().max().item()
        print(f"| {name} | {old('step'):.2f} | {new('step'):.2f} | "
              f"{old('step') / new('step'):.2f}x | {old('text'):.2f} | {new('text'):.2f} | "
              f"{old('text') / new('text'):.2f}x | {new('image'):.2f} | {rest:.2f} | "
              f"{new('optimizer'):.4f} | {(new('step') + new('optimizer')) / floor:.2f} | "
              f"{diff:.1e} |")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="ivlp", choices=("ivlp", "maple", "promptsrc"))
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4, help="IVLP's official batch: 4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--breakdown", action="store_true", help="old vs new text path, by part")
    parser.add_argument("--methods", default=",".join(BREAKDOWN_METHODS))
    args = parser.parse_args(argv)
    if args.breakdown:
        return breakdown(args)
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
