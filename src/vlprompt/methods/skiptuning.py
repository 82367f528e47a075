"""Skip Tuning — full fine-tuning with layer-wise and class-wise skipping (Wu et al., CVPR 2025;
official code Koorye/SkipTuning at 8c4636edc39cffacccbdb8db4c360088d39ee8a1:
`trainers/skip_tuning.py`, `trainers/baselines/ft_clip.py`, `trainers/_base_/{base,optim,
lr_scheduler}.py`, `train.py` (TRAINER.SKIP defaults), `configs.py`, configs
`configs/trainers/SkipTuning/*.yaml`).

No new module: the learned part is CLIP's own upper layers. From block `start_layer` on, both
towers' blocks, the final LayerNorms and the projections are trained (copies of the frozen
backbone's, which stays untouched); everything below (token/patch/positional embeddings, ln_pre,
blocks 0 .. start_layer-1) stays frozen.

- Layer-wise skipping (LSkip): the frozen lower blocks are run without autograd; the text states
  at block `start_layer` of every class are computed once per class list and reused by every step
  (the official code extracts them once per epoch from frozen layers: the same values);
- Class-wise skipping (CSkip): a step trains on some classes only. The classes are ranked by
  their highest cosine, over the batch, between the step's (tuned) image features and the frozen
  CLIP text features of the template (the "class prototypes"), each label's class first (its
  similarity set to 1e4); the first `num_tops` = min(ceil(top_ratio * C), max_top) ranks are
  always kept (top_ratio > 1: min(top_ratio, C) classes), rank `num_tops + j` of the remaining
  R = C - num_tops is kept when u_j < r_j, r = the exponential pdf of scale `skip_lambda` on
  linspace(0, 5, R) min-max normalised to [1, 0], u ~ U(0, 1) drawn once per training (the
  official `reserve_mask`). Only the kept classes' text runs through the tuned blocks; the loss
  is cross-entropy over them, logits = logit_scale * cos (CLIP's frozen scale);
- evaluation: every class through the tuned blocks, image through all blocks.

Official base-to-new config (`vit_b16_bs4.yaml` + `train.py`, the defaults here): start layer 6,
top ratio 0.5, max top 50, lambda 0.3; SGD (Dassl's momentum 0.9, weight decay 5e-4), staged
learning rates (OPTIM.STAGED_LR, NEW_LAYERS ['image_encoder']): text side lr 2e-5, image side
5e-6 (NEW_LR), 20 epochs (5 for ImageNet, SUN397, Food-101: `SkipTuning.__init__` divides
MAX_EPOCH by 4), batch 4, 1 warm-up epoch at the constant 1e-6 (every group), cosine; the prompt
of each data set from `ft_clip.py`'s `_CUSTOM_TEMPLATES` (`SKIP_TEMPLATES`). Cross-data-set
(`vit_b16_bs4_cross_datasets.yaml`): lr 1e-5, image 1e-6, warm-up 1e-8. Few-shot
(`vit_b16_bs4_few_shot.yaml`): lr 1e-5 for both sides (no STAGED_LR), 40 epochs, no warm-up.
Learned values on ViT-B/16 (start layer 6): 6 x 7,087,872 (vision blocks) + 6 x 3,152,384 (text
blocks) + 1,536 + 393,216 (ln_post, proj) + 1,024 + 262,144 (ln_final, text projection) =
62,099,456; `save` writes them alone (about 248 MB in fp32), never the frozen lower layers.

Published (README's `examples/base_to_new.png`, 11 data sets, 16 shots): base 85.04, new 77.53,
H 81.11; training cost 239 s / 404 MB beside PromptSRC's 1,735 s / 2,041 MB (same figure);
domain generalisation (`examples/domain_generalization.png`): ImageNet 72.77, 4 variants 61.20.
Cost here (BENCHMARKS.md, `benchmarks/skiptuning_cost.py`, CPU, ViT-B/16 shapes, 100 classes,
batch 4): 18.0 s and 355 MB per step, against 48.0 s / 1,036 MB for the plain reference, 33.7 s
/ 915 MB for full fine-tuning and 34.3 s / 507 MB for PromptSRC's step.

Agreement with the official code (harness outside the repo, fp32 on CPU): its
`SkipCustomCLIP` (Dassl stubbed, `.cuda()` made a no-op) built by its own `clip/model.py` CLIP
(QuickGELU) from the state dict of the same tiny open_clip ViT (two shapes: widths 64/64, 4
heads; vision 48 with 3 heads, text 32 with 2 heads, context 16; weights perturbed), start layer
0 and 1, top ratio 0.5 and 0.25, the same reserve mask, the same images and labels, one training
forward/backward as its `before_train` + `forward_backward` do: the same kept classes; worst
|difference| of the kept classes' logits 3.0e-6 (|logits| <= 5.6), loss 2.1e-6, gradients of
every tuned tensor 5.7e-6 (|grad| <= 6.1), evaluation logits (all classes) 3.8e-6; its
`build_optimizer` + `build_lr_scheduler` (Dassl's ConstantWarmupScheduler) vs the engine's
per-group learning rates over 20 epochs: relative 2.9e-16; after one SGD step of each side
(epoch 4's staged rates, momentum, weight decay) evaluation logits 3.8e-6. `reserve_ratios` vs
its scipy `expon.pdf` normalisation: 6e-8 (float32 rounding) over C in 3..1000, top ratio
0.1..7, lambda 0.01..1.

Departures from the official code, on purpose:
- Precision: the official trains pure fp16 (TRAINER.PREC 'fp16', fp16 weights updated by SGD);
  here the tuned copies are fp32 and the run's precision is autocast (as every vlprompt method).
- Batches: for 4 or more shots the official `FeatureLoader` ('batch_random') fills each batch
  with images of one class; the engine's batches are drawn over all classes (as every method)
  unless the run asks for the official kind with the engine setting `batches="one_class"`
  (`--batches one_class`; vlprompt.batching), which no preset sets.
- Every class with a label in the batch is kept by CSkip: the official keeps the first
  `num_tops` ranks, which hold the labels' classes whenever the batch has at most `num_tops`
  distinct labels (always, with its one-class batches); beyond that the official would remap a
  dropped label to class 0 of the kept ones.
- The reserve mask is drawn from a generator seeded once, at construction, from the global RNG
  (the official: `torch.rand_like` on the first step); with R = 1 remaining class the official's
  normalisation divides 0 by 0 and never keeps it: here its ratio is 0 (the same).
- Token dropping (TRAINER.SKIP.DROP_RATIO) is 0 in every official config, a no-op, and is not
  implemented.
- The kept classes are ranked with a stable sort (ties only among the labels' classes, all kept).
- The text is encoded up to the longest end-of-text position of the classes in the pass, not all
  77 positions (the same numbers: the mask is causal); `implementation="reference"` runs the
  paper's plain formulation (every block with autograd, 77 positions) as the tests' oracle.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.base import (
    IMPLEMENTATIONS,
    GradScale,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    StepOutput,
    TrainOutput,
    features_key,
    full_precision,
)
from vlprompt.methods.method_config import check_at_most
from vlprompt.methods.registry import register_method
from vlprompt.methods.text_encoding import TEMPLATE_HINT, tokenize_checked

# The official prompt of each data set (trainers/baselines/ft_clip.py `_CUSTOM_TEMPLATES`).
SKIP_TEMPLATES: dict[str, str] = {
    "imagenet": "a photo of a {}.",
    "imagenetv2": "a photo of a {}.",
    "imagenet_sketch": "a sketch of a {}.",
    "imagenet_a": "a bad photo of a {}.",
    "imagenet_r": "a rendition of a {}.",
    "caltech101": "itap of a {}.",
    "dtd": "itap of a {}.",
    "eurosat": "a centered satellite photo of {}.",
    "fgvc_aircraft": "a bright photo of a {}, a type of aircraft.",
    "food101": "a photo of the nice {}.",
    "oxford_flowers": "a close-up photo of a {}.",
    "oxford_pets": "a bad photo of a {}, a type of pet.",
    "sun397": "a photo of a {}.",
    "stanford_cars": "a photo of the {}, a type of car.",
    "ucf101": "a photo of a {}, a type of sport.",
}
LABEL_SIMILARITY = 1e4  # the official: each label's class ranks first


@dataclass
class SkipTuningConfig(MethodConfig):
    """Skip Tuning (defaults: the official base-to-new `vit_b16_bs4.yaml` and `train.py`)."""

    template: str = field(
        default="a photo of a {}.",
        metadata={"help": "the prompt of every class (official: one per data set, SKIP_TEMPLATES)"},
    )
    lr: float = field(default=2e-5, metadata={"help": "learning rate of the text side"})
    image_lr: float = field(
        default=5e-6,
        metadata={"help": "learning rate of the image side (official staged NEW_LR)"},
    )
    epochs: int = field(default=20, metadata={"help": "training epochs (ImageNet/SUN/Food: 5)"})
    batch_size: int = field(default=4, metadata={"help": "images per step"})
    warmup_lr: float = field(
        default=1e-6, metadata={"help": "constant warm-up learning rate of every group"}
    )
    start_layer: int = field(
        default=6,
        metadata={"help": "first tuned block of both towers; the blocks below stay frozen"},
    )
    top_ratio: float = field(
        default=0.5,
        metadata={"help": "classes always kept per step: this fraction (> 1: this many)"},
    )
    max_top: int = field(default=50, metadata={"help": "at most this many classes always kept"})
    skip_lambda: float = field(
        default=0.3,
        metadata={"help": "scale of the exponential keep-ratio of the other classes"},
    )
    implementation: str = field(
        default="fast",
        metadata={
            "help": "'fast' (frozen layers without autograd, cached text states) or "
            "'reference' (the plain formulation, the tests' oracle)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_lr < 0:
            raise MethodError(f"image_lr must be >= 0 (official 5e-6), got {self.image_lr}")
        if self.start_layer < 0:
            raise MethodError(f"start_layer must be >= 0 (official 6), got {self.start_layer}")
        if self.top_ratio <= 0:
            raise MethodError(f"top_ratio must be > 0 (official 0.5), got {self.top_ratio}")
        if self.max_top < 1:
            raise MethodError(f"max_top must be >= 1 (official 50), got {self.max_top}")
        check_at_most("max_top", self.max_top, 1_000_000,
                      "classes always kept; official 50, ImageNet has 1000")  # fmt: skip
        if self.skip_lambda <= 0:
            raise MethodError(f"skip_lambda must be > 0 (official 0.3), got {self.skip_lambda}")
        if self.implementation not in IMPLEMENTATIONS:
            raise MethodError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )


def num_tops(top_ratio: float, max_top: int, n_classes: int) -> int:
    """Classes always kept (the official `select_classes`)."""
    n = math.ceil(top_ratio * n_classes) if top_ratio <= 1 else math.ceil(min(top_ratio, n_classes))
    return min(n, max_top)


def reserve_ratios(n_classes: int, tops: int, skip_lambda: float) -> torch.Tensor:
    """Keep probability of each rank [C]: 1 for the first `tops`, then the exponential pdf of
    scale `skip_lambda` on linspace(0, 5, C - tops), min-max normalised (1 down to 0)."""
    rest = n_classes - tops
    x = torch.linspace(0.0, 5.0, rest, dtype=torch.float64)
    pdf = torch.exp(-x / skip_lambda) / skip_lambda
    spread = pdf.max() - pdf.min() if rest else torch.tensor(0.0, dtype=torch.float64)
    tail = (pdf - pdf.min()) / spread if rest > 1 else torch.zeros(rest, dtype=torch.float64)
    return torch.cat([torch.ones(tops, dtype=torch.float64), tail]).float()


def kept_classes(
    image_features: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    reserve: torch.Tensor,
) -> torch.Tensor:
    """Sorted indices of the classes a step trains on: ranks by the batch's highest cosine
    (labels first), the ranks where `reserve` [C] is True, and every label's class."""
    sim = F.normalize(image_features.float(), dim=-1) @ prototypes.float().t()
    sim[torch.arange(len(labels), device=sim.device), labels] = LABEL_SIMILARITY
    ranked = sim.max(dim=0).values.sort(descending=True, stable=True).indices
    keep = torch.zeros(sim.shape[1], dtype=torch.bool, device=sim.device)
    keep[ranked[reserve.to(sim.device)]] = True
    keep[labels] = True
    return keep.nonzero().flatten()


def _tuned_copy(module: nn.Module) -> nn.Module:
    copied = copy.deepcopy(module).float()
    return copied.requires_grad_(True)


def _projection(proj: Any) -> nn.Module | nn.Parameter | None:
    if proj is None:
        return None
    if isinstance(proj, nn.Parameter):
        return nn.Parameter(proj.detach().clone().float())
    return _tuned_copy(proj)


def _head(ln: nn.Module, proj: Any, x: torch.Tensor) -> torch.Tensor:
    x = ln(x)
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Module) else x @ proj


class _Tuned(nn.Module):
    """One tower's learned part: its blocks from `start_layer` on, final LayerNorm, projection."""

    def __init__(self, blocks: nn.ModuleList, start: int, ln: nn.Module, proj: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_tuned_copy(b) for b in blocks[start:])
        self.ln = _tuned_copy(ln)
        proj = _projection(proj)
        if isinstance(proj, nn.Parameter):
            self.proj = proj
        else:
            self.proj_module = proj

    @property
    def projection(self) -> Any:
        return self.proj if "proj" in self._parameters else self._modules.get("proj_module")

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return _head(self.ln, self.projection, pooled)


@register_method
class SkipTuning(PromptMethod):
    """CLIP's upper layers fine-tuned on a subset of classes per step; nothing new is added."""

    name: ClassVar[str] = "skiptuning"
    config_class: ClassVar[type[MethodConfig]] = SkipTuningConfig
    uses_dataset_template: ClassVar[bool] = False
    config: SkipTuningConfig

    @classmethod
    def template_for(cls, dataset: str, dataset_template: str) -> str | None:
        """The official prompt of `dataset` (`SKIP_TEMPLATES`), else the data set's own."""
        return SKIP_TEMPLATES.get(dataset, dataset_template)

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: SkipTuningConfig) -> None:
        super().__init__(clip, classnames, config)
        if not clip.is_vit or not hasattr(clip.visual, "ln_post"):
            raise MethodError(
                f"Skip Tuning tunes the upper blocks of a ViT image tower; {clip.name} has none "
                "(use a ViT backbone such as ViT-B-16)"
            )
        depth = min(len(clip.text_blocks), len(clip.vision_blocks))
        if config.start_layer >= depth:
            raise MethodError(
                f"start_layer={config.start_layer} leaves no block to tune in {clip.name}'s "
                f"{depth}-block tower (official 6 of 12); use at most {depth - 1}"
            )
        s = config.start_layer
        self.text_tuned = _Tuned(clip.text_blocks, s, clip.model.ln_final,
                                 clip.model.text_projection)  # fmt: skip
        self.vision_tuned = _Tuned(clip.vision_blocks, s, clip.visual.ln_post, clip.visual.proj)
        # the official reserve mask is one draw per training: seeded once, from the run's RNG
        self._reserve_seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self._reserve = KeyedCache()
        self._text_states = KeyedCache()
        self._labels: torch.Tensor | None = None
        self._kept: torch.Tensor | None = None

    # ---- the towers ------------------------------------------------------------------------
    def _tokens(self, classnames: list[str]) -> torch.Tensor:
        texts = [self.config.template.format(c.replace("_", " ")) for c in classnames]
        return tokenize_checked(self.clip, texts, "prompt", TEMPLATE_HINT)

    def text_start_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Text states [C, L, D] of every class at the input of block `start_layer` (frozen, no
        autograd, L = the longest end-of-text + 1) and the end-of-text positions [C]; cached."""

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            tokens = self._tokens(self.classnames)
            eot = tokens.argmax(dim=-1)
            tokens = tokens[:, : int(eot.max()) + 1]
            clip, n = self.clip, tokens.shape[1]
            with torch.no_grad():
                x = clip.token_embedding(tokens) + clip.text_positional_embedding[:n].to(clip.dtype)
                lower = self._hook(self.text_tuned, lower=True, upper=False)
                return clip.run_text_layers(x, clip.text_causal_mask(n), lower), eot

        key = features_key(self.clip, self.classnames, self.config.template,
                           self.config.start_layer)  # fmt: skip
        return self._text_states.get(key, compute)

    def _text_features(self, kept: torch.Tensor | None) -> torch.Tensor:
        """Normalised text features of the `kept` classes (None: all) through the tuned blocks."""
        if self.config.implementation == "reference":
            return self._text_features_reference(kept)
        states, eot = self.text_start_states()
        if kept is not None:
            states, eot = states[kept.to(states.device)], eot[kept.to(eot.device)]
        n = int(eot.max()) + 1
        upper = self._hook(self.text_tuned, lower=False, upper=True)
        x = self.clip.run_text_layers(states[:, :n], self.clip.text_causal_mask(n), upper)
        pooled = x[torch.arange(len(x), device=x.device), eot]
        return F.normalize(self.text_tuned.head(pooled), dim=-1)

    def _text_features_reference(self, kept: torch.Tensor | None) -> torch.Tensor:
        """Every text block with autograd, all context positions: frozen below, tuned above."""
        names = self.classnames if kept is None else [self.classnames[i] for i in kept.tolist()]
        tokens = self._tokens(names)
        clip = self.clip
        x = clip.token_embedding(tokens) + clip.text_positional_embedding.to(clip.dtype)
        x = clip.run_text_layers(x, clip.text_causal_mask(), self._hook(self.text_tuned))
        pooled = x[torch.arange(len(x), device=x.device), tokens.argmax(dim=-1)]
        return F.normalize(self.text_tuned.head(pooled), dim=-1)

    def _hook(self, tuned: _Tuned, lower: bool = True, upper: bool = True):
        """A layer hook of the backbone's loop: the frozen blocks below `start_layer` (or the
        tokens passed on unchanged, `lower=False`), the tuned copies from there on (or the
        tokens returned as they are, `upper=False`)."""
        start = self.config.start_layer

        def hook(i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None):
            if i < start:
                return block(x, attn_mask=mask) if lower else x
            if not upper:
                return x
            return tuned.blocks[i - start](x.float() if i == start else x, attn_mask=mask)

        return hook

    def tuned_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features [B, E] through the frozen lower and the tuned upper blocks."""
        clip, tuned = self.clip, self.vision_tuned
        images = images.to(clip.device)
        if self.config.implementation == "reference":
            x = clip.vision_ln_pre(clip.vision_embed(images))
            x = clip.run_vision_layers(x, hook=self._hook(tuned))
        else:
            with torch.no_grad():
                x = clip.vision_ln_pre(clip.vision_embed(images))
                x = clip.run_vision_layers(x, hook=self._hook(tuned, upper=False))
            x = clip.run_vision_layers(x, hook=self._hook(tuned, lower=False))
        return F.normalize(self.vision_tuned.head(x[:, 0]), dim=-1)

    def _logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        with full_precision(image.device):
            return self.clip.logit_scale.float() * image.float() @ text.float().t()

    # ---- the class side and the forwards ---------------------------------------------------
    def text_features(self) -> torch.Tensor:
        """Normalised tuned text features [C, E] of every class."""
        return self._text_features(None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        text = self.class_side()
        return self._logits(self.tuned_image_features(images), text)

    def reserve_mask(self) -> torch.Tensor:
        """Which ranks of the class list CSkip keeps, drawn once per class list [C] (bool)."""
        c = len(self.classnames)

        def draw() -> torch.Tensor:
            g = torch.Generator().manual_seed(self._reserve_seed)
            tops = num_tops(self.config.top_ratio, self.config.max_top, c)
            return torch.rand(c, generator=g) < reserve_ratios(c, tops, self.config.skip_lambda)

        return self._reserve.get((tuple(self.classnames), self._reserve_seed), draw)

    def skipped_classes_apply(self) -> bool:
        c = len(self.classnames)
        tops = num_tops(self.config.top_ratio, self.config.max_top, c)
        return not (self.config.top_ratio == 1.0 or tops == c)

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        labels = self._labels
        if labels is None or not self.skipped_classes_apply():
            return TrainOutput(self(images))
        image = self.tuned_image_features(images)
        with torch.no_grad():
            prototypes = self.zeroshot_text_features()  # frozen CLIP's, fixed for the training
            kept = kept_classes(image.detach(), prototypes, labels.to(image.device),
                                self.reserve_mask())  # fmt: skip
        self._kept = kept
        return TrainOutput(self._logits(image, self._text_features(kept)))

    def loss(self, out: TrainOutput, labels: torch.Tensor) -> torch.Tensor:
        if self._kept is not None:  # labels as positions among the kept classes
            labels = torch.searchsorted(self._kept, labels.to(self._kept.device))
        return F.cross_entropy(out.logits, labels)

    @torch.no_grad()
    def zeroshot_logits(
        self, images: torch.Tensor, image_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Zero-shot CLIP logits; inside a step with class-wise skipping, of the kept classes."""
        logits = super().zeroshot_logits(images, image_features)
        return logits if self._kept is None else logits[:, self._kept.to(logits.device)]

    def backward_step(
        self, images: torch.Tensor, labels: torch.Tensor, scale: GradScale = lambda t: t
    ) -> StepOutput:
        """The step on the kept classes; the logits it returns cover every class (the lowest
        finite value for the skipped ones), so running accuracy reads them as any method's."""
        self._labels = labels
        try:
            step = super().backward_step(images, labels, scale)
            kept = self._kept
        finally:
            self._labels = self._kept = None
        if kept is None:
            return step
        lowest = torch.finfo(step.logits.dtype).min
        full = step.logits.new_full((len(labels), len(self.classnames)), lowest)
        full[:, kept.to(full.device)] = step.logits
        return replace(step, logits=full)

    def param_groups(self) -> list[dict[str, Any]]:
        """The official staged learning rates: the text side at `lr`, the image side at
        `image_lr` (a group `lr_scale`; the warm-up's constant lr is every group's)."""
        text = [p for p in self.text_tuned.parameters() if p.requires_grad]
        vision = [p for p in self.vision_tuned.parameters() if p.requires_grad]
        return [
            {"params": text},
            {"params": vision, "lr_scale": self.config.image_lr / self.config.lr},
        ]
