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
            "layers": 1,
        },
    },
)


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
