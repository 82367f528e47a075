"""Zero-shot CLIP (Radford et al., 2021; CoOp's `trainers/zsclip.py`): no training.

One hand-crafted template (`config.template`, e.g. "a photo of a {}.") or an ensemble
(`config.templates`, e.g. ImageNet's 7 templates): each template's text features are normalised,
averaged over the templates and renormalised (official `ZeroshotCLIP2`). Class names: `_` -> space.
The reference is CoOp's `trainers/zsclip.py` (KaiyangZhou/CoOp).

Departures from the official code, on purpose:
- Precision: the official code runs CLIP in fp16 with no precision setting: `ZeroshotCLIP`
  reads no PREC key and loads CLIP with `trainers/coop.py` `load_clip_to_cpu`, whose
  `clip/model.py` `build_model` halves the weights (`convert_weights`), so the text features,
  the image passes and the logits are fp16. Here CLIP's weights, the text features and the
  logits are fp32 under any `--precision`, and the image features are encoded in fp32 outside
  autocast (`vlprompt.evaluation`: the feature cache serves every precision).
- No other departure: one template, or the ensemble normalised, averaged and renormalised, and
  `logit_scale * cos(image, text)`, as `ZeroshotCLIP` / `ZeroshotCLIP2` compute them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from vlprompt.backbone import ClipBackbone
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import (
    FrozenImageMixin,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    clip_logits,
    features_key,
    full_precision,
)
from vlprompt.methods.registry import register_method


@dataclass
class ZeroShotConfig(MethodConfig):
    """Zero-shot CLIP. `template` (inherited) is used when `templates` is empty."""

    templates: tuple[str, ...] = field(
        default=(), metadata={"help": "an ensemble of templates; empty = the single template"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # checks `template` and every entry of `templates`
        self.templates = tuple(self.templates)


def ensemble_text_features(
    clip: ClipBackbone, classnames: list[str], templates: list[str] | tuple[str, ...]
) -> torch.Tensor:
    """Mean over templates of normalised text features, renormalised [C, E]."""
    total = None
    for template in templates:
        texts = [template.format(te.clean_classname(c)) for c in classnames]
        tokens = te.tokenize_checked(clip, texts, "prompt", te.TEMPLATE_HINT)
        feats = clip.encode_text(tokens, normalize=True).float()
        total = feats if total is None else total + feats
    return te.normalize(total / len(templates))


def cached_ensemble_features(
    clip: ClipBackbone, classnames: list[str], templates: tuple[str, ...], cache: KeyedCache
) -> torch.Tensor:
    """`ensemble_text_features` in fp32 (under autocast too: frozen, so nothing to gain from a
    lower precision after the first call), computed once per class list and templates."""

    def compute() -> torch.Tensor:
        with full_precision(clip.device):
            return ensemble_text_features(clip, classnames, templates)

    return cache.get(features_key(clip, classnames, templates, fp32=True), compute)


class TemplateEnsembleMixin:
    """`text_features()`: the normalised features of `config.templates` (or the single
    `config.template`) averaged per class, in fp32, computed once per class list and kept in
    `self._text_cache` (a KeyedCache the method makes in its __init__). Zero-shot CLIP and the
    methods that add a head to it (Tip-Adapter, GDA, LP++) share it."""

    def templates(self) -> tuple[str, ...]:
        return self.config.templates or (self.config.template,)

    @torch.no_grad()
    def text_features(self) -> torch.Tensor:
        return cached_ensemble_features(
            self.clip, self.classnames, self.templates(), self._text_cache
        )


@register_method
class ZeroShotCLIP(TemplateEnsembleMixin, FrozenImageMixin, PromptMethod):
    """CLIP with hand-crafted prompts; nothing is learned or saved but the config."""

    name: ClassVar[str] = "zsclip"
    config_class: ClassVar[type[MethodConfig]] = ZeroShotConfig
    needs_training: ClassVar[bool] = False
    config: ZeroShotConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: ZeroShotConfig) -> None:
        super().__init__(clip, classnames, config)
        self._text_cache = KeyedCache()

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        return clip_logits(self.clip, image_features, self.class_side())
