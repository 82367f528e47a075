"""Shared helpers of the engine/CLI/API tests: a tiny registered method, tiny image folders and a
tiny CLIP checkpoint on disk (no test here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from vlprompt.backbone import load_clip
from vlprompt.methods import MethodConfig, PromptMethod, register_method
from vlprompt.methods.registry import _METHODS

TINY_VIT = "vlprompt-test-tiny-vit"  # registered by conftest
COLORS = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 40)]


@dataclass
class TinyConfig(MethodConfig):
    """A shift of the image feature, learned; the recipe is small so tests are fast."""

    lr: float = 0.5
    epochs: int = 3
    batch_size: int = 4
    warmup_epochs: int = 1
    warmup_lr: float = 0.05
    optimizer: str = "sgd"


class TinyMethod(PromptMethod):
    name = "test_tiny"
    config_class = TinyConfig
    frozen_image_encoder = True

    def __init__(self, clip, classnames, config):
        super().__init__(clip, classnames, config)
        self.shift = nn.Parameter(0.01 * torch.randn(clip.embed_dim))

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(image_features.float() + self.shift, dim=-1)
        text = self.zeroshot_text_features().float()
        return self.clip.logit_scale * feats @ text.t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.clip.encode_image(images, normalize=True))


if "test_tiny" not in _METHODS:
    register_method(TinyMethod)


def make_imagefolder(root: Path, n_classes: int = 3, per_class: int = 8, size: int = 32) -> Path:
    """ROOT/{train,val,test}/<class>/*.png: solid colours with a little noise per class."""
    g = torch.Generator().manual_seed(0)
    names = ["red_thing", "green_thing", "blue_thing", "yellow_thing"][:n_classes]
    for split, count in (("train", per_class), ("val", 2), ("test", 4)):
        for c, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = torch.tensor(COLORS[c], dtype=torch.float32).view(3, 1, 1)
                noise = torch.randint(-30, 31, (3, size, size), generator=g).float()
                pixels = (base + noise).clamp(0, 255).byte().permute(1, 2, 0).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def save_tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    clip = load_clip(TINY_VIT)
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(path))
    return path
