"""Contrastive pre-training of the tiny CLIP on mini-world images and captions.

A pool of images is drawn once from the world's distribution (seeded); every step draws a batch
from the pool and a *fresh* caption for each image, so the text side never repeats exactly. The
loss is open_clip's `ClipLoss` (symmetric cross-entropy over the batch). The text tower runs only
up to the longest caption in the batch: with the causal mask the pooled EOT feature is identical
(tests check this against open_clip's own `encode_text`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.io import atomic_save_tensors, atomic_write_json
from vlprompt.mini import world


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides the pre-trained weights (with the world's own code)."""

    seed: int = 0  # seeds the pool, the captions, the batches and the initial weights
    steps: int = 15000  # optimizer steps
    batch_size: int = 128  # image-caption pairs per step (the contrastive negatives)
    pool_size: int = 16384  # images drawn once (in pairs); captions are re-drawn every time
    lr: float = 2e-3  # AdamW peak learning rate
    warmup: int = 50  # linear warm-up steps, then cosine decay to 0
    weight_decay: float = 0.1  # on matrices only (not gains, biases, embeddings, logit scale)
    model: str = "vlprompt-mini-vit"  # an open_clip model name (registered config)
    storage: str = "fp16"  # dtype of the saved weights ("fp16" or "fp32"); loading casts

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.pool_size < self.batch_size:
            raise ValueError(
                f"need steps >= 1, batch_size >= 2, pool_size >= batch_size; got {self}"
            )
        if self.batch_size % 2 or self.pool_size % 2:
            raise ValueError(f"batch_size and pool_size must be even (pairs); got {self}")
        if self.storage not in ("fp16", "fp32"):
            raise ValueError(f"storage must be 'fp16' or 'fp32', got {self.storage!r}")


def encode_text_truncated(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's `encode_text` computed on the first max(EOT)+1 positions only (exact: the
    causal mask stops any position from reading a later one)."""
    eot = tokens.argmax(dim=-1)
    n = int(eot.max()) + 1
    x = model.token_embedding(tokens[:, :n]) + model.positional_embedding[:n]
    mask = model.attn_mask[:n, :n]
    for block in model.transformer.resblocks:
        x = block(x, attn_mask=mask)
    x = model.ln_final(x[torch.arange(x.shape[0]), eot])
    return x @ model.text_projection


# Pre-training images come in pairs that differ in exactly one of these attributes (weights):
# in-batch hard negatives that make the model look at shape, pattern, size and count, not only at
# the (easy) colour and background. Both captions of a pair mention the differing attribute.
PAIR_ATTRIBUTES = ("shape", "pattern", "size", "count")
PAIR_WEIGHTS = (0.4, 0.2, 0.2, 0.2)


def render_pool(seed: int, size: int) -> tuple[np.ndarray, list[world.Attributes], list[str]]:
    """`size` images [size, H, W, 3] uint8, their attributes and, per pair (2k, 2k+1), the one
    attribute in which the pair differs. Pair k comes from rng([seed, k])."""
    if size % 2:
        raise ValueError(f"pool_size must be even (images come in pairs), got {size}")
    images = np.empty((size, world.IMAGE_SIZE, world.IMAGE_SIZE, 3), np.uint8)
    attrs: list[world.Attributes] = []
    differs: list[str] = []
    for k in range(size // 2):
        rng = np.random.default_rng([seed, k])
        first = world.sample_attributes(rng)
        vary = world._pick(rng, PAIR_ATTRIBUTES, PAIR_WEIGHTS)
        keep = {n: v for n, v in first.to_dict().items() if n not in (vary, "position")}
        for _ in range(100):
            second = world.sample_attributes(rng, **keep)
            if getattr(second, vary) != getattr(first, vary):
                break
        for j, a in enumerate((first, second)):
            images[2 * k + j] = np.asarray(world.render(a, rng))
            attrs.append(a)
        differs.append(vary)
    return images, attrs, differs


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "ln" in name
        (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def pretrain(
    output: str | Path,
    seed: int = PretrainConfig.seed,
    steps: int = PretrainConfig.steps,
    batch_size: int = PretrainConfig.batch_size,
    pool_size: int = PretrainConfig.pool_size,
    lr: float = PretrainConfig.lr,
    storage: str = PretrainConfig.storage,
    model: str = PretrainConfig.model,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Pre-train the tiny CLIP on the mini world and save it to `output` (a .safetensors file,
    loadable by `vlprompt.load_clip("vlprompt-mini-vit", pretrained=output)`). A JSON record of
    the run (config, losses, wall time) is written next to it as `<output>.json` and returned.
    `model`: the architecture, any open_clip config name (default: the shipped tiny CLIP's;
    register another with `vlprompt.backbone.register_model_config`).

    Deterministic for a given seed and thread count on one machine; different BLAS builds may
    differ in the last bits.
    """
    cfg = PretrainConfig(
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        pool_size=pool_size,
        lr=lr,
        storage=storage,
        model=model,
    )
    if cfg.model not in open_clip.list_models():
        raise ValueError(
            f"unknown model config {cfg.model!r}; register it first "
            f"(vlprompt.backbone.register_model_config) or use {PretrainConfig.model!r}"
        )
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors path, got {output}")

    def say(msg: str) -> None:
        if log is not None:
            log(msg)
            sys.stdout.flush()

    start = time.time()

    torch.manual_seed(cfg.seed)
    model = open_clip.create_model(cfg.model, pretrained=None)
    model.train()
    tokenizer = open_clip.get_tokenizer(cfg.model)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)

    say(f"rendering a pool of {cfg.pool_size} images (seed {cfg.seed}) ...")
    pool, pool_attrs, pool_differs = render_pool(cfg.seed, cfg.pool_size)
    say(f"  done in {time.time() - start:.0f}s")

    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6
    )
    loss_fn = open_clip.ClipLoss()
    rng = np.random.default_rng([cfg.seed, 1 << 20])  # batches and captions
    losses: list[float] = []
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        pairs = rng.choice(cfg.pool_size // 2, size=cfg.batch_size // 2, replace=False)
        idx = np.stack([2 * pairs, 2 * pairs + 1], 1).reshape(-1)
        images = torch.from_numpy(pool[idx]).permute(0, 3, 1, 2).float().div_(255)
        images = (images - mean) / std
        texts = [world.caption(pool_attrs[i], rng, require=(pool_differs[i // 2],)) for i in idx]
        tokens = tokenizer(texts)

        img_f = F.normalize(model.encode_image(images), dim=-1)
        txt_f = F.normalize(encode_text_truncated(model, tokens), dim=-1)
        loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == cfg.steps - 1:
            recent = float(np.mean(losses[-50:]))
            say(
                f"step {step:5d}/{cfg.steps}  loss {recent:.3f}  "
                f"scale {model.logit_scale.exp().item():.1f}  {time.time() - start:.0f}s"
            )

    dtype = torch.float16 if cfg.storage == "fp16" else torch.float32
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    wall = time.time() - start
    record = {
        "config": asdict(cfg),
        "final_loss": float(np.mean(losses[-50:])),
        "losses_every_50": [
            round(float(np.mean(losses[i : i + 50])), 4) for i in range(0, len(losses), 50)
        ],
        "wall_s": round(wall, 1),
        "torch_threads": torch.get_num_threads(),
        "world_version": world.WORLD_VERSION,
    }
    meta = {"vlprompt_mini": json.dumps({k: record[k] for k in ("config", "final_loss")})}
    atomic_save_tensors(output, state, metadata=meta)
    atomic_write_json(output.with_name(output.name + ".json"), record)
    say(f"saved {output} ({output.stat().st_size / 1e6:.1f} MB) in {wall:.0f}s")
    return record
