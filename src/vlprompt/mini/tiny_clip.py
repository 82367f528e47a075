"""The shipped tiny CLIP of the mini world: its name, its weights and how to load it (a module
of its own, so that the engine can name the tiny CLIP without importing the mini world's
pre-training and quickstart)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from vlprompt.backbone import ClipBackbone, load_clip
from vlprompt.mini.settings import TINY_CLIP_NAME

MODEL_NAME = TINY_CLIP_NAME
_ASSETS = resources.files("vlprompt") / "assets"
# the architecture itself is registered by vlprompt.backbone (assets/vlprompt-mini-vit.json)


def checkpoint_path() -> Path:
    """The shipped pre-trained weights (safetensors, fp16 storage; loading casts to fp32)."""
    return Path(str(_ASSETS / f"{MODEL_NAME}.safetensors"))


def load_mini_clip(device: str = "cpu", pretrained: str | Path | None = None) -> ClipBackbone:
    """The pre-trained tiny CLIP through the normal `load_clip` path (shipped weights unless
    `pretrained` names another checkpoint, e.g. one rebuilt by `vlprompt mini pretrain`)."""
    path = Path(pretrained) if pretrained is not None else checkpoint_path()
    return load_clip(MODEL_NAME, pretrained=path, device=device)
