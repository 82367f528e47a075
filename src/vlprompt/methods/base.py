"""The contract every method follows: a config dataclass + an nn.Module mapping images to logits.

The engine calls only what is defined here, so a new method is one file that subclasses
`MethodConfig` and `PromptMethod` and registers itself with `@register_method`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError


@dataclass
class MethodConfig:
    """Settings shared by all methods. Subclasses add theirs, each with a comment."""

    template: str = "a photo of a {}."  # hand-crafted prompt, used by zero-shot parts and init
    # training recipe defaults (the engine reads them unless the user overrides)
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.002  # peak learning rate after warm-up
    weight_decay: float = 5e-4  # optimizer weight decay
    momentum: float = 0.9  # SGD momentum
    epochs: int = 10  # training epochs (the last one is evaluated)
    batch_size: int = 32  # images per step
    warmup_epochs: int = 1  # epochs at constant `warmup_lr` before the cosine schedule
    warmup_lr: float = 1e-5  # learning rate during warm-up
    # gradient rule: "none" (plain loss gradient) or "prograd" (project the loss gradient when it
    # conflicts with the gradient of the KL towards zero-shot CLIP; any method can use it)
    gradient_rule: str = "none"
    prograd_lambda: float = 1.0  # ProGrad's lambda (0.8 for 8/16-shot Flowers, DTD, EuroSAT)
    prograd_temperature: float = 1.0  # temperature T of ProGrad's KL

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.gradient_rule not in ("none", "prograd"):
            raise ValueError(
                f"gradient_rule must be 'none' or 'prograd', got {self.gradient_rule!r}"
            )
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainOutput:
    """A training forward: the logits and, when the method has them for free, the frozen CLIP
    image features (L2-normalised) that ProGrad's zero-shot teacher reuses."""

    logits: torch.Tensor  # [batch, classes]
    image_features: torch.Tensor | None = None  # [batch, embed_dim], normalised, no grad


@dataclass
class StepOutput:
    """What one training step returns to the engine (after gradients are in `.grad`)."""

    loss: torch.Tensor  # detached scalar, the loss that was minimised
    logits: torch.Tensor  # detached [batch, classes], for running accuracy


GradScale = Callable[[torch.Tensor], torch.Tensor]  # e.g. GradScaler.scale; identity on CPU


class PromptMethod(nn.Module):
    """Base class of every method. The frozen CLIP lives in `self.clip`; learned parts are modules
    or parameters of the subclass and are the only things `save` writes."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    needs_training: ClassVar[bool] = True  # False for zsclip; linear_probe trains with `fit`

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: MethodConfig) -> None:
        super().__init__()
        self.clip = clip  # frozen; never saved with the method
        self.config = config
        self.classnames = validate_classnames(classnames)

    # ---- what a method implements -------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] (already transformed) -> class logits [B, len(classnames)]."""
        raise NotImplementedError

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        """The training forward. Default: `forward`, no image features. Methods that compute the
        frozen CLIP image features anyway return them so ProGrad's teacher costs no image pass."""
        return TrainOutput(self(images))

    def loss(self, out: TrainOutput, labels: torch.Tensor) -> torch.Tensor:
        """The method's training loss. Default: cross-entropy (KgCoOp adds its regulariser)."""
        return nn.functional.cross_entropy(out.logits, labels)

    def backward_step(
        self, images: torch.Tensor, labels: torch.Tensor, scale: GradScale = lambda t: t
    ) -> StepOutput:
        """Compute the loss and leave its gradient in `.grad` of the trainable parameters (after
        the gradient rule, if any); the engine then steps the optimizer."""
        from vlprompt.methods.gradient_rules import prograd_backward

        out = self.forward_train(images)
        loss = self.loss(out, labels)
        if self.config.gradient_rule == "prograd":
            teacher = self.zeroshot_logits(images, out.image_features)
            prograd_backward(
                self.trainable_parameters(),
                loss,
                out.logits,
                teacher,
                lam=self.config.prograd_lambda,
                temperature=self.config.prograd_temperature,
                scale=scale,
            )
        else:
            scale(loss).backward()
        return StepOutput(loss.detach(), out.logits.detach())

    # ---- zero-shot CLIP (ProGrad's teacher, KgCoOp's anchor, zsclip) ----------------------
    @torch.no_grad()
    def zeroshot_text_features(self) -> torch.Tensor:
        """Normalised text features of `config.template` for the current class names, cached."""
        key = (tuple(self.classnames), self.config.template)
        cached = getattr(self, "_zs_cache", None)
        if cached is None or cached[0] != key:
            texts = [self.config.template.format(c.replace("_", " ")) for c in self.classnames]
            feats = self.clip.encode_text(self.clip.tokenize(texts), normalize=True)
            self._zs_cache = (key, feats)
        return self._zs_cache[1]

    @torch.no_grad()
    def zeroshot_logits(
        self, images: torch.Tensor, image_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Zero-shot CLIP logits; reuses `image_features` (normalised) when given."""
        if image_features is None:
            image_features = self.clip.encode_image(images, normalize=True)
        text = self.zeroshot_text_features().to(image_features.dtype)
        return self.clip.logit_scale * image_features @ text.t()

    def set_classnames(self, classnames: list[str]) -> None:
        """Point the method at another class list (e.g. the new classes of base-to-new)."""
        self.classnames = validate_classnames(classnames)

    # ---- shared helpers --------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything learned, nothing of the frozen backbone."""
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if not k.startswith("clip.")
        }

    def save(self, directory: str | Path) -> None:
        """Write `prompts.safetensors` + `method.json` (method name, config, backbone facts)."""
        from vlprompt.io import save_learned  # local import: io depends on this module's types

        save_learned(self, directory)

    @classmethod
    def load(
        cls, directory: str | Path, clip: ClipBackbone, classnames: list[str] | None = None
    ) -> PromptMethod:
        from vlprompt.io import load_learned

        return load_learned(directory, clip, classnames, expected=cls)


def validate_classnames(classnames: list[str]) -> list[str]:
    names = list(classnames)
    if not names:
        raise MethodError("the class list is empty: a method needs at least one class name")
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if dupes:
        raise MethodError(f"the class list has duplicate names: {sorted(set(dupes))}")
    return names


def config_to_json(config: MethodConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
