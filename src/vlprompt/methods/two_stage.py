"""2SFS — Two-Stage Few-Shot adaptation (Farina, Mancini, Iacca & Ricci, CVPR 2025; official code
FarinaMatteo/rethinking_fewshot_vlms at 64ac143c7d22803bfeeaadfe42f570220ab29b06: `main.py`,
`fs/twostage.py`, `fs/utils/model_utils.py`, `fs/utils/eval_utils.py`, `datasets/*.py`).

A fixed budget of `iterations` optimizer steps is split in two. Stage 1 (the first
`int(iterations * stage1_fraction)` steps) tunes LayerNorms of both towers: the logits are
`logit_scale * cos(image, text)` of the tuned image tower and the tuned text features of the
template for every class, the loss cross-entropy. Stage 2 (the rest) freezes them and trains a
linear head [C, E] initialised from the tuned text features (normalised): the logits are
`logit_scale * cos(image, head row)` of the tuned image tower, run without autograd. Each stage
has its own AdamW (the head's starts with fresh moments) and its own CosineAnnealingLR to 1e-6
over its steps: the engine's `lr_spans` (one optimizer whose two groups learn in turn; a group
without gradients is left untouched by AdamW, so this equals two optimizers).

Selective inference (the official `SingleStreamClassifier.infer`): a class of the head (a base
class) is classified by its head row, any other class (a new class of base-to-new) by the tuned
text encoder's features of the template; rows are normalised, the image tower is the tuned one.
So base-to-new's new-class accuracy comes from another head than the base accuracy
(`new_classes_note`, printed under every base-to-new table).

Official values (`main.py` defaults, used for every data set, backbone and shot count): AdamW lr
2e-4, weight decay 1e-2, betas (0.9, 0.999), batch 32, `--n_iters 300` (iterations = 300 x shots,
4800 at 16 shots), `--n_iters_frac 0.6`, `--peft ln`, `--ln_modality both`, the template
"a photo of a {}." of every `datasets/*.py` (the CoOp templates are commented out), CLIP's own
logit scale (`clip_model.logit_scale.exp()`; main.py's `logit_scale = 100` is not passed on), fp16
autocast with a GradScaler, training augmentation random resized crop (0.08-1) + flip.

Which LayerNorms: `trainable_norm_params` marks every nn.LayerNorm of the selected towers, but its
`named_modules_with_index` yields ln_pre, ln_post and ln_final twice, the second time with block
index -1, which switches them back to requires_grad False: they are in the optimizer's list but
never get a gradient. What the official code trains is ln_1 and ln_2 of every residual block (run
in /tmp on their `clip/model.py` at ViT-B/16 shapes: 65,536 parameters listed, 61,440 with
requires_grad). vlprompt trains those: 24 blocks x 2 norms x 2 x width = 12 x 4 x 768 +
12 x 4 x 512 = 61,440 parameters on ViT-B/16, plus the head's 512 x classes (which learns in
stage 2 only).

Agreement with the official code (in /tmp, never in this repository; tests/test_two_stage.py does
not import it): their `clip/model.py` CLIP built by their `build_model` from the state dict of a
tiny open_clip ViT (QuickGELU, weights perturbed and rounded to fp16 as `build_model` does; two
shapes: vision width 128 / 2 blocks with text width 64 / 2 blocks, and vision 192 / 3 blocks with
text 128 / 3 blocks, 64-wide heads as `build_model` derives them), the same perturbed LayerNorm
values on both sides, their `trainable_norm_params` and the computations of their `train_epoch`,
`SingleStreamClassifier` (init, forward with `no_grad_backbone`) and `infer` run line by line,
fp32 on CPU, 6 images, 5 base and 2 new classes, both implementations. Worst absolute
differences: stage 1 logits 2.2e-5 (logits up to 36), loss 6.7e-6, LayerNorm gradients 6.7e-6
(of up to 5.8); the head's initialisation 2.4e-7; stage 2 (the same perturbed head on both
sides) logits 2.4e-5, loss 5.7e-6, head gradient 4.6e-5 (of up to 31); selective inference on
2 base + 2 new classes 1.7e-5. Their ln_pre, ln_post and ln_final got no gradient. Their two
CosineAnnealingLR(eta_min=1e-6) runs (2880 then 1920 steps) vs `schedule.staged_lrs`: worst
relative difference 8.2e-15.

Departures from the official code, on purpose:
- Precision: the official one (fp32 weights, `model.float()`, under fp16 autocast with a
  GradScaler on CUDA), but logits and the loss are computed in fp32 from the (autocast) features,
  where the official multiplies fp16 features, and the head is initialised from fp32 text
  features (official: fp16 autocast, cast to fp32).
- The official counts an iteration only when the GradScaler did not skip the step (fp16
  overflow); vlprompt counts every step.
- The engine's loader drops the last incomplete batch (Dassl); the official keeps it.
- The prompts are encoded up to their longest EOT, not all 77 positions (the same numbers: the
  mask is causal; `implementation="reference"` encodes all 77, tests/test_two_stage.py checks
  both against a plain open_clip reference in logits and gradients).
- The official `--peft lora` / `bitfit` first stages and `--ln_*_start` are not offered (the
  paper's 2SFS is the LayerNorm one, the defaults).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.base import (
    IMPLEMENTATIONS,
    MethodConfig,
    PromptMethod,
    TrainOutput,
    clip_logits,
    full_precision,
    validate_classnames,
)
from vlprompt.methods.registry import register_method
from vlprompt.methods.saving import OwnClassesMixin
from vlprompt.methods.text_encoding import TEMPLATE_HINT, tokenize_checked

TOWERS = ("both", "text", "vision")
NORMS = ("ln_1", "ln_2")  # the LayerNorms of a residual block (what the official code trains)


@dataclass
class TwoStageConfig(MethodConfig):
    """2SFS (defaults: the official `main.py`, 16 shots; the same for every data set)."""

    template: str = field(
        default="a photo of a {}.",
        metadata={"help": "the prompt of every class (official: this one for every data set)"},
    )
    optimizer: str = field(default="adamw", metadata={"help": "'sgd', 'adam' or 'adamw'"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate of each stage"})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=32, metadata={"help": "images per step"})
    warmup_epochs: int = field(default=0, metadata={"help": "no warm-up (official)"})
    lr_schedule: str = field(
        default="step",
        metadata={"help": "'step' (required): a cosine per stage, set at every optimizer step"},
    )
    min_lr: float = field(default=1e-6, metadata={"help": "eta_min of each stage's cosine"})
    iterations: int = field(
        default=4800,
        metadata={
            "help": "optimizer steps of both stages: 300 x shots officially (4800 for 16 shots); "
            "0: `epochs` epochs"
        },
    )
    stage1_fraction: float = field(
        default=0.6,
        metadata={
            "help": "share of the steps that tune the LayerNorms (official alpha 0.6); the rest "
            "trains the linear head"
        },
    )
    towers: str = field(
        default="both",
        metadata={"help": "towers whose LayerNorms are tuned: 'both', 'text' or 'vision'"},
    )
    implementation: str = field(
        default="fast",
        metadata={
            "help": "'fast' (the prompts encoded up to their longest EOT) or 'reference' (all "
            "77 positions, as the official code)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr_schedule != "step":
            raise MethodError(
                f"two_stage needs lr_schedule 'step' (each stage has its own per-step cosine), "
                f"got {self.lr_schedule!r}"
            )
        if not 0.0 <= self.stage1_fraction <= 1.0:
            raise MethodError(
                f"stage1_fraction must be in [0, 1] (official 0.6), got {self.stage1_fraction}"
            )
        if self.towers not in TOWERS:
            raise MethodError(f"towers must be one of {', '.join(TOWERS)}, got {self.towers!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise MethodError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )


def stage1_steps(total_steps: int, fraction: float) -> int:
    """The LayerNorm stage's steps: `int(total * fraction)`, as the official `cosine_iters`."""
    return int(total_steps * fraction)


def _block_norms(blocks: nn.ModuleList, tower: str) -> dict[str, tuple[nn.Module, str]]:
    """name -> (LayerNorm module, 'weight' | 'bias') of ln_1 and ln_2 of every block."""
    found: dict[str, tuple[nn.Module, str]] = {}
    for i, block in enumerate(blocks):
        for norm in NORMS:
            module = getattr(block, norm, None)
            if not isinstance(module, nn.LayerNorm) or not module.elementwise_affine:
                raise MethodError(
                    f"two_stage tunes the affine LayerNorms {', '.join(NORMS)} of every {tower} "
                    f"block; block {i} has {type(module).__name__} as {norm}: use an open_clip "
                    "CLIP with standard residual blocks"
                )
            for kind in ("weight", "bias"):
                found[f"{tower}_{i}_{norm}_{kind}"] = (module, kind)
    return found


@register_method
class TwoStage(OwnClassesMixin, PromptMethod):
    """LayerNorm tuning, then a linear head on the tuned features; new classes by the tuned text."""

    name: ClassVar[str] = "two_stage"
    own_classes_attr: ClassVar[str] = "head_classnames"
    own_classes_text: ClassVar[str] = "the classes of its head rows"
    config_class: ClassVar[type[MethodConfig]] = TwoStageConfig
    uses_dataset_template: ClassVar[bool] = False  # "a photo of a {}." everywhere (official)
    new_classes_note: ClassVar[str | None] = (
        "its new-class rows come from another head than its base rows: the LayerNorm-tuned text "
        "encoder's features of the template (2SFS's selective inference), while base classes are "
        "classified by the linear head trained on them"
    )
    config: TwoStageConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: TwoStageConfig) -> None:
        super().__init__(clip, classnames, config)
        towers = {"both": ("text", "vision"), "text": ("text",), "vision": ("vision",)}
        if "vision" in towers[config.towers] and not clip.is_vit:
            raise MethodError(
                f"towers {config.towers!r} tunes the image tower's LayerNorms, which needs a ViT; "
                f"{clip.name} has none (use towers 'text')"
            )
        self._targets: dict[str, dict[str, tuple[nn.Module, str]]] = {}
        self.norms = nn.ParameterDict()
        for tower in towers[config.towers]:
            blocks = clip.text_blocks if tower == "text" else clip.vision_blocks
            self._targets[tower] = _block_norms(blocks, tower)
            for key, (module, kind) in self._targets[tower].items():
                self.norms[key] = nn.Parameter(getattr(module, kind).detach().float().clone())
        self.head_classnames = list(self.classnames)  # the classes of the head's rows
        self.head = nn.Parameter(
            torch.zeros(len(self.classnames), clip.embed_dim, device=clip.device)
        )
        # 0: LayerNorm stage (the class side is the tuned text features); 1: the head's
        self.register_buffer("stage", torch.zeros((), dtype=torch.long, device=clip.device))

    # ---- the tuned towers ------------------------------------------------------------------
    @contextmanager
    def _tuned(self, tower: str) -> Iterator[None]:
        """The learned LayerNorm weights in place of the frozen ones of `tower`, restored after
        (the frozen backbone stays frozen CLIP outside the method's passes)."""
        saved = []
        try:
            for key, (module, kind) in self._targets.get(tower, {}).items():
                frozen = module._parameters[kind]
                saved.append((module, kind, frozen))
                module._parameters[kind] = self.norms[key].to(frozen.dtype)
            yield
        finally:
            for module, kind, frozen in reversed(saved):
                module._parameters[kind] = frozen

    def tuned_text_features(self, classnames: list[str]) -> torch.Tensor:
        """Normalised features [C, E] of the template for `classnames`, through the tuned text
        LayerNorms (the official `clip_model.encode_text` after stage 1)."""
        texts = [self.config.template.format(c.replace("_", " ")) for c in classnames]
        tokens = tokenize_checked(self.clip, texts, "prompt", TEMPLATE_HINT)
        eot = tokens.argmax(dim=-1)
        # the causal mask: no EOT output depends on the positions after it, so the prompts are
        # encoded up to the longest EOT only (the official encodes all 77 positions)
        if self.config.implementation == "fast":
            tokens = tokens[:, : int(eot.max()) + 1]
        with self._tuned("text"):
            feats = self.clip.encode_text_embeddings(self.clip.token_embedding(tokens), eot)
        return F.normalize(feats, dim=-1)

    def tuned_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features [B, E] through the tuned image LayerNorms."""
        with self._tuned("vision"):
            return self.clip.encode_image(images, normalize=True)

    # ---- stages ------------------------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        """Stage 1's LayerNorms, then stage 2's head (`lr_spans` gives their steps)."""
        return [{"params": list(self.norms.values())}, {"params": [self.head]}]

    def lr_spans(self, total_steps: int) -> list[tuple[int, int]]:
        switch = stage1_steps(total_steps, self.config.stage1_fraction)
        return [(0, switch), (switch, total_steps)]

    def on_train_step(self, step: int, total_steps: int) -> None:
        """At the first step of stage 2: the head starts as the tuned text features of the
        classes (normalised, fp32), and the method switches to it."""
        switch = stage1_steps(total_steps, self.config.stage1_fraction)
        if step < switch:
            self.stage.fill_(0)
        elif step == switch:
            self.start_head()

    @torch.no_grad()
    def start_head(self) -> None:
        """Stage 2's start: head = the tuned text features of the current classes."""
        if len(self.classnames) != self.head.shape[0]:
            raise MethodError(
                f"two_stage's head has {self.head.shape[0]} rows but the method points at "
                f"{len(self.classnames)} classes; train it on the classes it was built for"
            )
        with full_precision(self.clip.device):
            self.head.copy_(self.tuned_text_features(self.classnames).float())
        self.head_classnames = list(self.classnames)
        self.stage.fill_(1)

    # ---- classifying ---------------------------------------------------------------------
    def text_features(self) -> torch.Tensor:
        """The class side [C, E], normalised. Stage 1: the tuned text features of every class.
        Stage 2 (selective inference): a head class's row of the head, any other class's tuned
        text features."""
        if int(self.stage) == 0:
            return self.tuned_text_features(self.classnames)
        rows = {name: i for i, name in enumerate(self.head_classnames)}
        missing = [c for c in self.classnames if c not in rows]
        if not missing:
            index = torch.tensor([rows[c] for c in self.classnames], device=self.head.device)
            return F.normalize(self.head[index], dim=-1)
        new = self.tuned_text_features(missing)
        new_row = {name: i for i, name in enumerate(missing)}
        parts = [
            self.head[rows[c]] if c in rows else new[new_row[c]].to(self.head.dtype)
            for c in self.classnames
        ]
        return F.normalize(torch.stack(parts), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        text = self.class_side()
        if int(self.stage) == 1:  # the image tower is frozen in stage 2 (official no_grad)
            with torch.no_grad():
                image = self.tuned_image_features(images)
        else:
            image = self.tuned_image_features(images)
        return clip_logits(self.clip, image, text)

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        return TrainOutput(self(images))

    # ---- classes, saving ---------------------------------------------------------------------
    def set_classnames(self, classnames: list[str]) -> None:
        """Point the method at `classnames`: a class of the head keeps its row, any other is
        classified by the tuned text features (selective inference)."""
        self.classnames = validate_classnames(classnames)
        self._held_class_side.clear()
