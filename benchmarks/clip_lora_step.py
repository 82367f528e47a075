"""CLIP-LoRA's training step by part, against its floor, with the per-projection attention
("old", `LoRAAttention.packed = False`: the unmerged forward as it was before the packed path)
and the packed one ("new", the default) in one run:

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/clip_lora_step.py [--rounds 3]

ViT-B/16 shapes (open_clip "ViT-B-16", random weights), fp32, CPU, 1 thread, 100 classes,
batch 32 and the official settings (rank 2, alpha 1, dropout 0.25, q, k, v in every block of
both towers; AdamW). One untimed step per path and one untimed floor, then `--rounds` rounds, each timing in turn for
old and new: the step (`backward_step`: forward, loss, backward), the AdamW step, the image side
alone (forward + backward of the LoRA image features) and the text side alone (the same for the
text features of all classes); then the floor: the frozen image tower's forward and backward to
its token activations (no weight gradients; the LoRA of every block needs the gradient down to
block 0) plus the frozen text tower's forward and backward to its token embeddings, prompts cut
after their longest EOT as the fast path does, each block's attention as the packed path
without updates (the least work of a frozen block); and, for comparison, the image floor through
torch's nn.MultiheadAttention (open_clip's own block). Medians are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbone import load_clip
from vlprompt.methods import create_method
from vlprompt.methods.clip_lora import CLIPLoRAConfig, LoRAAttention
from vlprompt.methods.text_encoding import TEMPLATE_HINT, tokenize_checked


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def frozen_packed_attention(blocks: nn.ModuleList) -> Iterator[None]:
    """Every block's attention as the method's packed path with no low-rank update (one packed
    q, k, v product, scaled dot-product attention, the output projection): the frozen block's
    least work. Without it, torch's nn.MultiheadAttention runs the block."""
    config = CLIPLoRAConfig()
    modules = []
    for block in blocks:
        module = LoRAAttention(block.attn, config, "floor").train()
        module.updates = nn.ModuleDict()
        modules.append(module)
        block._modules["attn"] = module
    try:
        yield
    finally:
        for block, module in zip(blocks, modules, strict=True):
            block._modules["attn"] = module.base


def image_floor(clip, images: torch.Tensor, packed: bool = True) -> None:
    """The frozen image tower, forward and backward to the token activations."""
    with torch.no_grad():
        tokens = clip.vision_ln_pre(clip.vision_embed(images))
    tokens.requires_grad_(True)
    with frozen_packed_attention(clip.vision_blocks) if packed else nullcontext():
        feats = clip.vision_head(clip.run_vision_layers(tokens)[:, 0])
    F.normalize(feats, dim=-1).sum().backward()


def text_floor(clip, names: list[str]) -> None:
    """The frozen text tower on every class's prompt (up to the longest EOT), forward and
    backward to the token embeddings."""
    tokens = tokenize_checked(clip, [f"a photo of a {c}." for c in names], "prompt", TEMPLATE_HINT)
    eot = tokens.argmax(dim=-1)
    embeddings = clip.token_embedding(tokens[:, : int(eot.max()) + 1]).requires_grad_(True)
    with frozen_packed_attention(clip.text_blocks):
        feats = clip.encode_text_embeddings(embeddings, eot)
    F.normalize(feats, dim=-1).sum().backward()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32, help="the official batch: 32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="ViT-B-16")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    clip = load_clip(args.model)  # random weights: time does not depend on them
    for p in clip.model.parameters():
        p.requires_grad_(False)
    names = [f"class name {i}" for i in range(args.classes)]
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, clip.image_size, clip.image_size)
    labels = torch.arange(args.batch) % args.classes
    runs = {}
    for path in ("old", "new"):
        torch.manual_seed(1)
        method = create_method("clip_lora", clip, names).train()
        for module in method.modules():
            if isinstance(module, LoRAAttention):
                module.packed = path == "new"
        opt = torch.optim.AdamW(method.trainable_parameters(), lr=2e-4, weight_decay=1e-2)
        runs[path] = (method, opt)
        method.backward_step(images, labels)  # warm-up, untimed
        print(f"{path}: warm-up step done ({time.time() - start:.0f} s)", file=sys.stderr)
    image_floor(clip, images)  # warm-up, untimed
    text_floor(clip, names)
    parts = ("step", "optimizer", "image", "text")
    times = {(path, part): [] for path in runs for part in parts}
    floors: dict[str, list[float]] = {"image": [], "text": [], "image_mha": []}
    for round_ in range(1, args.rounds + 1):
        for path, (method, opt) in runs.items():
            method.zero_grad(set_to_none=True)
            measured = {"step": _timed(lambda m=method: m.backward_step(images, labels))}
            measured["optimizer"] = _timed(opt.step)
            method.zero_grad(set_to_none=True)
            measured["image"] = _timed(
                lambda m=method: m.lora_image_features(images).sum().backward()
            )
            method.zero_grad(set_to_none=True)
            measured["text"] = _timed(lambda m=method: m.text_features().sum().backward())
            for part, value in measured.items():
                times[path, part].append(value)
            print(f"round {round_} {path}: {measured}", file=sys.stderr, flush=True)
        floors["image"].append(_timed(lambda: image_floor(clip, images)))
        floors["text"].append(_timed(lambda: text_floor(clip, names)))
        floors["image_mha"].append(_timed(lambda: image_floor(clip, images, packed=False)))
        print(f"round {round_} floor: image {floors['image'][-1]:.2f} s, text "
              f"{floors['text'][-1]:.2f} s, image with torch's MHA "
              f"{floors['image_mha'][-1]:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}
    floor_image, floor_text, mha = (statistics.median(floors[k]) for k in floors)
    floor = floor_image + floor_text
    print(f"CLIP-LoRA step on {args.model} shapes, {args.classes} classes, batch {args.batch}, "
          f"{torch.get_num_threads()} thread(s), fp32, CPU, official settings; medians of "
          f"{args.rounds} interleaved rounds (s); floor: image {floor_image:.2f} + text "
          f"{floor_text:.2f} = {floor:.2f} (the image tower through torch's "
          f"nn.MultiheadAttention: {mha:.2f}); wall {time.time() - start:.0f} s")  # fmt: skip
    print("| path | step | optimizer | image side | text side | loss + rest | (step + optimizer)"
          " / floor | image side / image floor | text side / text floor |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for path in runs:
        step, opt, image, text = (med[path, part] for part in parts)
        print(f"| {path} | {step:.2f} | {opt:.4f} | {image:.2f} | {text:.2f} | "
              f"{step - image - text:.2f} | {(step + opt) / floor:.2f} | "
              f"{image / floor_image:.2f} | {text / floor_text:.2f} |")  # fmt: skip
    old, new = med["old", "step"], med["new", "step"]
    ratios = [o / n for o, n in zip(times["old", "step"], times["new", "step"], strict=True)]
    print(f"step old/new: {old / new:.2f}x (per round: {', '.join(f'{r:.2f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
