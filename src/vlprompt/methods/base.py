"""The contract every method follows: a config dataclass + an nn.Module mapping images to logits.

The engine calls only what is defined here, so a new method is one file that subclasses
`MethodConfig` and `PromptMethod` and registers itself with `@register_method`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import DataError, MethodError

GRADIENT_RULES = ("none", "prograd", "kd")
# field metadata of a setting that changes only speed or memory, never a number (e.g. chunk
# sizes): it is not part of a run's identity, so a resume may change it
RUNTIME = {"runtime": True}


def runtime_settings(config_class: type) -> frozenset[str]:
    """The settings of a method config marked `RUNTIME`."""
    return frozenset(f.name for f in fields(config_class) if f.metadata.get("runtime"))


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
    # gradient rule: "none" (plain loss gradient), "prograd" (project the loss gradient when it
    # conflicts with the gradient of the KL towards zero-shot CLIP) or "kd" (knowledge
    # distillation, ProGrad paper's comparison: loss + lambda * that KL, plainly added); any
    # method can use either
    gradient_rule: str = "none"
    prograd_lambda: float = (
        1.0  # lambda of the rule (ProGrad: 0.8 for 8/16-shot Flowers, DTD, EuroSAT)
    )
    prograd_temperature: float = 1.0  # temperature T of the KL towards zero-shot CLIP

    def __post_init__(self) -> None:
        check_setting_types(self)
        check_templates(self)
        if self.lr <= 0:
            raise MethodError(f"lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise MethodError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise MethodError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.warmup_epochs < 0:
            raise MethodError(
                f"warmup_epochs must be >= 0 (0 = no warm-up), got {self.warmup_epochs}"
            )
        if self.warmup_epochs > 0 and self.warmup_lr <= 0:
            raise MethodError(
                f"warmup_lr must be > 0 when warmup_epochs is {self.warmup_epochs}, got "
                f"{self.warmup_lr}; set warmup_epochs=0 to train without warm-up"
            )
        if not 0 <= self.momentum < 1:
            raise MethodError(
                f"momentum must be in [0, 1) (SGD's default 0.9), got {self.momentum}"
            )
        if self.weight_decay < 0:
            raise MethodError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.gradient_rule not in GRADIENT_RULES:
            raise MethodError(
                f"gradient_rule must be one of {', '.join(GRADIENT_RULES)}, got "
                f"{self.gradient_rule!r}"
            )
        if self.prograd_lambda < 0:
            raise MethodError(
                f"prograd_lambda must be >= 0 (ProGrad uses 1.0 or 0.8), got {self.prograd_lambda}"
            )
        if self.prograd_temperature <= 0:
            raise MethodError(
                f"prograd_temperature must be > 0 (ProGrad uses 1.0), got "
                f"{self.prograd_temperature}"
            )
        if self.optimizer not in ("sgd", "adamw"):
            raise MethodError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")

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
    # the gradients are already the global batch's (averaged over DDP processes by the step
    # itself, as the ProGrad rule does), so the engine does not average them again
    gradients_synced: bool = False


GradScale = Callable[[torch.Tensor], torch.Tensor]  # e.g. GradScaler.scale; identity on CPU


# ---- mixed precision ---------------------------------------------------------------------------
def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast computes in on `device`'s type now, or None when autocast is off. It is
    part of the key of every cache of computed features, so that features computed under bf16 or
    fp16 autocast never serve an fp32 pass (nor the other way round)."""
    kind = torch.device(device).type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off on `device`'s type. Logits are computed in fp32 from the (possibly bf16/fp16)
    features: the product is small ([B, E] x [E, C]) and bf16 keeps 8 significant bits, so logits
    near 30 would be rounded in steps of 0.125 before the loss; frozen zero-shot text features
    (computed once per class list) are computed in fp32 too."""
    return torch.autocast(torch.device(device).type, enabled=False)


class PromptMethod(nn.Module):
    """Base class of every method. The frozen CLIP lives in `self.clip`; learned parts are modules
    or parameters of the subclass and are the only things `save` writes."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    needs_training: ClassVar[bool] = True  # False for zsclip; linear_probe trains with `fit`
    # the data set's hand-crafted template (CoOp's per-data-set table) becomes `template`
    uses_dataset_template: ClassVar[bool] = True

    @classmethod
    def template_for(cls, dataset: str, dataset_template: str) -> str | None:
        """The `template` a run of this method on `dataset` gets unless the user sets one: the
        data set's hand-crafted template, or None to keep the config's default."""
        return dataset_template if cls.uses_dataset_template else None

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
        from vlprompt.methods.gradient_rules import prograd_backward, prograd_kl

        out = self.forward_train(images)
        loss = self.loss(out, labels)
        if self.config.gradient_rule == "kd":
            teacher = self.zeroshot_logits(images, out.image_features)
            kl = prograd_kl(out.logits, teacher, self.config.prograd_temperature)
            loss = loss + self.config.prograd_lambda * kl
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
            return StepOutput(loss.detach(), out.logits.detach(), gradients_synced=True)
        scale(loss).backward()
        return StepOutput(loss.detach(), out.logits.detach())

    # ---- zero-shot CLIP (ProGrad's teacher, KgCoOp's anchor, zsclip) ----------------------
    @torch.no_grad()
    def zeroshot_text_features(self) -> torch.Tensor:
        """Normalised text features of `config.template` for the current class names, cached."""
        key = (tuple(self.classnames), self.config.template)
        cached = getattr(self, "_zs_cache", None)
        if cached is None or cached[0] != key:
            from vlprompt.methods.text_encoding import TEMPLATE_HINT, tokenize_checked

            texts = [self.config.template.format(c.replace("_", " ")) for c in self.classnames]
            tokens = tokenize_checked(self.clip, texts, "hand-crafted prompt", TEMPLATE_HINT)
            with full_precision(self.clip.device):  # once per class list: fp32 whatever autocast
                feats = self.clip.encode_text(tokens, normalize=True)
            self._zs_cache = (key, feats)
        return self._zs_cache[1]

    @torch.no_grad()
    def zeroshot_logits(
        self, images: torch.Tensor, image_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Zero-shot CLIP logits; reuses `image_features` (normalised) when given."""
        if image_features is None:
            image_features = self.clip.encode_image(images, normalize=True)
        text = self.zeroshot_text_features()
        with full_precision(image_features.device):
            return self.clip.logit_scale.float() * image_features.float() @ text.float().t()

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
    if isinstance(classnames, str):
        raise MethodError(
            f"the class list must be a list of class names, got the text {classnames!r}"
        )
    names = list(classnames)
    if not names:
        raise MethodError("the class list is empty: a method needs at least one class name")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise MethodError(
                f"class name #{i + 1} of the class list is {name!r}, not text; class names "
                "must be strings"
            )
        if not name.strip():
            raise MethodError(
                f"class name #{i + 1} of the class list is empty; every class needs a name"
            )
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if dupes:
        raise MethodError(f"the class list has duplicate names: {sorted(set(dupes))}")
    return names


# ---- settings checks ---------------------------------------------------------------------------
_SCALAR_KINDS = ("float", "int", "bool", "str")


def _setting_kind(annotation: Any) -> tuple[str | None, bool, bool]:
    """(scalar kind, is a sequence of it, None allowed) of a config field's annotation, read from
    its text ("float", "int | None", "tuple[float, ...]"); (None, ...) for any other type."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    parts = [p for p in text.replace(" ", "").split("|") if p]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    if len(parts) != 1:
        return None, False, optional
    part = parts[0]
    for kind in _SCALAR_KINDS:
        if part == kind:
            return kind, False, optional
        if part in (f"tuple[{kind},...]", f"list[{kind}]"):
            return kind, True, optional
    return None, False, optional


def _check_scalar(name: str, value: Any, kind: str) -> None:
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MethodError(f"{name} must be a number, got {_describe(value)}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise MethodError(f"{name} must be a finite number, got {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise MethodError(f"{name} must be a whole number, got {_describe(value)}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise MethodError(f"{name} must be true or false, got {_describe(value)}")
    elif kind == "str" and not isinstance(value, str):
        raise MethodError(f"{name} must be text, got {_describe(value)}")


def _describe(value: Any) -> str:
    """A value as an error message shows it, saying what kind of value it is where that helps."""
    if isinstance(value, bool):
        return f"{value!r} (a true/false value)"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f"the text {value!r}"
        return (
            f"the text {value!r}; write the number without quotes (YAML reads forms such as "
            "2e-3 as text: write 2.0e-3)"
        )
    return f"{value!r} ({type(value).__name__})"


def check_setting_types(config: MethodConfig) -> None:
    """Every field of a method config holds a value of its annotated kind: numbers for float
    fields (finite: no NaN or infinity; bools refused), whole numbers for int fields, true/false
    for bool fields, text for str fields, lists of them for tuple fields. Raises MethodError
    naming the setting."""
    for f in fields(config):
        kind, is_sequence, optional = _setting_kind(f.type)
        if kind is None:
            continue
        value = getattr(config, f.name)
        if value is None and optional:
            continue
        if not is_sequence:
            _check_scalar(f.name, value, kind)
            continue
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise MethodError(f"{f.name} must be a list, got {_describe(value)}")
        for i, item in enumerate(value):
            _check_scalar(f"{f.name}[{i}]", item, kind)


def _check_template(name: str, template: Any) -> None:
    from vlprompt.data.templates import check_template

    try:
        check_template(template)
    except DataError as exc:  # its message quotes the template; say which setting holds it
        raise MethodError(str(exc) if name == "template" else f"{name}: {exc}") from None


def check_templates(config: MethodConfig) -> None:
    """`template` and every entry of a template list (`templates`) is a usable template
    (`vlprompt.data.templates.check_template`). Raises MethodError naming the setting."""
    for f in fields(config):
        if f.name not in ("template", "templates"):
            continue
        value = getattr(config, f.name)
        if isinstance(value, (list, tuple)):
            for i, template in enumerate(value):
                _check_template(f"{f.name}[{i}]", template)
        else:
            _check_template(f.name, value)


def config_to_json(config: MethodConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
