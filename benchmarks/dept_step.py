"""What DePT's feature rule (`feature_rule="dept"`) adds to a base method's training step.

    OMP_NUM_THREADS=1 python benchmarks/dept_step.py --threads 1 --methods coop,maple \
        --classes 10 --batch 4 --repeats 3

For each method: one training step (`backward_step`: forward, DePT's loss, backward) of the
method alone and of the method with DePT's head, on open_clip `--model` shapes with random
weights (fp32, CPU), `--classes` classes, `--batch` random images (DePT's recipe: batch 4). One
untimed step each, then `--repeats` rounds that time one step of every variant in turn
(interleaved, so that a slower machine slows all alike); the medians are printed as a Markdown
table with the ratio to the method alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import open_clip
import torch

from vlprompt.backbone import ClipBackbone, quiet_random_init
from vlprompt.methods import create_method

SETTINGS = {"coop": {"n_ctx": 16}, "kgcoop": {}, "maple": {}, "promptsrc": {}}


def backbone(model_name: str) -> ClipBackbone:
    torch.manual_seed(0)
    with quiet_random_init():
        model = open_clip.create_model(model_name, pretrained=None)
    return ClipBackbone(model, open_clip.get_tokenizer(model_name), model_name, None, True)


def step_seconds(method, images: torch.Tensor, labels: torch.Tensor) -> float:
    for p in method.trainable_parameters():
        p.grad = None
    start = time.perf_counter()
    method.backward_step(images, labels)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="coop,maple", help="comma-separated")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clip = backbone(args.model)
    names = [f"class {i}" for i in range(args.classes)]
    size = clip.image_size
    images = torch.randn(args.batch, 3, size, size)
    labels = torch.arange(args.batch) % args.classes
    variants = {}
    for name in args.methods.split(","):
        for rule in ("none", "dept"):
            method = create_method(name, clip, names, feature_rule=rule, **SETTINGS.get(name, {}))
            method.train()
            step_seconds(method, images, labels)  # untimed
            variants[(name, rule)] = (method, [])
    for _ in range(args.repeats):
        for method, times in variants.values():
            times.append(step_seconds(method, images, labels))
    print(f"{args.model} shapes, random weights, fp32, CPU, {torch.get_num_threads()} thread(s); "
          f"{args.classes} classes, batch {args.batch}; medians of {args.repeats} interleaved "
          "rounds")  # fmt: skip
    print("| method | alone (s/step) | + DePT (s/step) | ratio | DePT's parameters |")
    print("|---|---|---|---|---|")
    for name in args.methods.split(","):
        alone = statistics.median(variants[(name, "none")][1])
        dept_method, dept_times = variants[(name, "dept")]
        dept = statistics.median(dept_times)
        extra = sum(p.numel() for p in dept_method.dept.parameters())
        print(f"| {name} | {alone:.3f} | {dept:.3f} | {dept / alone:.3f} | {extra:,} |")


if __name__ == "__main__":
    main()
