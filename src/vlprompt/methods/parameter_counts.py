"""Trainable-parameter counts of the methods on ViT-B/16's shapes (what papers tabulate), without
its weights: the architecture is built with uninitialised memory (`to_empty`), since a count
depends only on the shapes. `vlprompt methods` prints them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import open_clip
import torch

from vlprompt.backbone import ClipBackbone, quiet_random_init
from vlprompt.errors import MethodError
from vlprompt.methods.registry import create_method

COUNT_MODEL = "ViT-B-16"
# Two class lists: a count that differs between them grows with the number of classes.
_FEW = [f"class {i}" for i in range(10)]
_MORE = [f"class {i}" for i in range(20)]


@dataclass(frozen=True)
class ParameterCount:
    """`fixed + per_class * C` trainable parameters for C classes (per_class 0 for most)."""

    fixed: int
    per_class: int

    def describe(self) -> str:
        if self.per_class == 0:
            return f"{self.fixed:,}"
        fixed = f"{self.fixed:,} + " if self.fixed else ""
        return f"{fixed}{self.per_class:,} x classes"


def shapes_only_backbone(model_name: str = COUNT_MODEL) -> ClipBackbone:
    """`model_name`'s architecture with uninitialised weights: for counting, never for numbers."""
    with quiet_random_init():
        model = open_clip.create_model(model_name, pretrained=None, device="meta")
    model = model.to_empty(device="cpu")
    return ClipBackbone(model, open_clip.get_tokenizer(model_name), model_name, None, True)


def parameter_count(name: str, clip: ClipBackbone, **settings: Any) -> ParameterCount | None:
    """The trainable-parameter count of method `name` on `clip` (its default settings updated
    by `settings`), or None when the method cannot be built on it (e.g. a ViT-only method on a
    ResNet)."""
    try:
        few = create_method(name, clip, _FEW, **settings).num_trainable_parameters()
        more = create_method(name, clip, _MORE, **settings).num_trainable_parameters()
    except MethodError:
        return None
    per_class = (more - few) // (len(_MORE) - len(_FEW))
    return ParameterCount(few - per_class * len(_FEW), per_class)


def feature_rule_count(clip: ClipBackbone, rule: str = "dept") -> ParameterCount:
    """What `feature_rule=rule` adds to any method that supports it (DePT's head: two
    channel-wise affine maps of the embedding width and a linear classifier over the training
    classes: 4 E + (E + 1) x classes), measured on CoOp."""
    with_rule = parameter_count("coop", clip, feature_rule=rule)
    plain = parameter_count("coop", clip)
    assert with_rule is not None and plain is not None
    return ParameterCount(with_rule.fixed - plain.fixed, with_rule.per_class - plain.per_class)


def parameter_counts(
    names: list[str], model_name: str = COUNT_MODEL
) -> dict[str, ParameterCount | None]:
    """`parameter_count` of each method on `model_name`'s shapes (ViT-B/16 by default)."""
    with torch.no_grad():
        clip = shapes_only_backbone(model_name)
        return {name: parameter_count(name, clip) for name in names}
