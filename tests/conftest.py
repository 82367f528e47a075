"""Shared fixtures: tiny random CLIPs built through open_clip (no download)."""

from __future__ import annotations

import pytest
import torch

from vlprompt.backbone import load_clip, register_model_config

TINY_VIT = "vlprompt-test-tiny-vit"
TINY_RN = "vlprompt-test-tiny-rn"


def tiny_vit_config(
    width: int = 64,
    layers: int = 2,
    heads: int = 4,
    image_size: int = 32,
    patch_size: int = 8,
    text_width: int = 64,
    text_layers: int = 2,
    text_heads: int = 4,
    embed_dim: int = 32,
    context_length: int = 77,
) -> dict:
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": width,
            "patch_size": patch_size,
            "head_width": width // heads,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": text_width,
            "heads": text_heads,
            "layers": text_layers,
        },
    }


register_model_config(TINY_VIT, tiny_vit_config())
register_model_config(
    TINY_RN,
    {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 4,
            "layers": 2,  # TCP injects its class-aware tokens at a text block after the first
        },
    },
)

# Tiny ViTs whose widths, heads (head dims 16, 16, 6/12, 8), patch sizes, resolutions and context
# lengths all vary; "b" has a context of 16, so long class names push RPO's prompts past it.
VIT_SHAPES = {  # overrides of tiny_vit_config's defaults (= shape "a")
    "vlprompt-test-vit-a": {},
    "vlprompt-test-vit-b": dict(width=48, heads=3, patch_size=4, image_size=16, text_width=32,
                                text_heads=2, embed_dim=24, context_length=16),
    "vlprompt-test-vit-c": dict(width=36, layers=1, heads=6, patch_size=16, image_size=48,
                                text_width=48, text_heads=4, text_layers=1, embed_dim=16,
                                context_length=32),
    "vlprompt-test-vit-d": dict(width=40, heads=5, patch_size=6, image_size=30, text_width=40,
                                text_heads=5, text_layers=3, embed_dim=20, context_length=20),
}  # fmt: skip
for _name, _overrides in VIT_SHAPES.items():
    register_model_config(_name, tiny_vit_config(**_overrides))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_clip():
    torch.manual_seed(0)
    return load_clip(TINY_VIT)


@pytest.fixture
def tiny_rn_clip():
    torch.manual_seed(0)
    return load_clip(TINY_RN)


def sgd_losses(method, images, labels, steps: int = 8, lr: float = 2e-3) -> list[float]:
    """Training losses of `steps` SGD steps (momentum 0.9) through `method.backward_step`."""
    opt = torch.optim.SGD(method.trainable_parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        losses.append(method.backward_step(images, labels).loss.item())
        opt.step()
    return losses


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny image folder and a tiny CLIP checkpoint for engine, CLI and protocol tests."""
    from test_engine_helpers import make_imagefolder, save_tiny_checkpoint

    root = tmp_path_factory.mktemp("world")
    return {
        "data": make_imagefolder(root / "data"),
        "ckpt": save_tiny_checkpoint(root / "tiny.safetensors"),
    }


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """Few-shot and feature caches go under a per-test HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
