"""PromptSRC — Prompting with Self-Regulating Constraints (Khattak et al., ICCV 2023; official code
muzairkhattak/PromptSRC at bb95c77b634d63488f2cad81ff4a72d53bdd06d5: `trainers/promptsrc.py`,
`trainers/imagenet_templates.py`, `clip/model.py`, configs `configs/trainers/PromptSRC/*.yaml`).

IVLP's deep prompts (`vlprompt.methods.ivlp`: 4 + 4 tokens, depth 9 in both towers, text init
"a photo of a", deep prompts N(0, 0.02^2)) trained with cross-entropy plus three self-regulating
terms towards frozen CLIP, and evaluated with the Gaussian-weighted average of the per-epoch prompts:

- text:   `text_loss_weight * L1(t, t0)` (mean over classes and dims): t the normalised prompted
  text features; t0 the mean over `templates` (the official 60 ImageNet templates, for every data
  set) of the *unnormalised* frozen CLIP text features, normalised (computed once per class list);
- image:  `image_loss_weight * L1(v, v0)`: v the normalised prompted image features, v0 the
  normalised frozen CLIP image features (one no-grad frozen pass per batch, also returned in
  `TrainOutput.image_features` for the ProGrad/KD teacher);
- logits: `kl_div(log_softmax(logits), log_softmax(zs), reduction="sum", log_target=True) /
  logits.numel()`, i.e. KL(p_zs || p) summed and divided by batch * classes, zs =
  logit_scale * v0 @ t0.T (the target is the frozen side);
- GPA: after epoch e of E the prompts p_e enter a running sum `sum_e w_e * p_e`, with
  w_e = N(e; gpa_mean, gpa_std) / sum_{e'=1..E} N(e'; gpa_mean, gpa_std); after epoch E the
  prompts are replaced by the sum, which evaluation and `save` then use. The running sum lives in
  persistent buffers (`gpa_*`), so each per-epoch checkpoint carries it and a resume continues it.

Official defaults: base-to-new (`vit_b16_c2_ep20_batch4_4+4ctx.yaml`, the defaults here): text
weight 25, image weight 10, GPA mean 15 std 1, SGD lr 0.0025, 20 epochs, batch 4, 1 constant
warm-up epoch at 1e-5, cosine. Cross-data-set (`..._cross_datasets.yaml`): depth 3 in both towers,
GPA mean 6 std 10, 20 epochs. Few-shot (`vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml`): 50 epochs,
GPA mean 30 std 30 (ImageNet, Caltech101, OxfordPets, Food101, UCF101, SUN397) or mean 45 std 5
(StanfordCars, Flowers102, FGVCAircraft, DTD, EuroSAT). 46,080 learned values on ViT-B/16.

Checked against the official code (harness outside the repo): its `trainers/promptsrc.py`
trainer (Dassl stubbed, CUDA calls made no-ops, its frozen image encoder cast to fp32) built by its
own `clip.build_model` from the state dict of the same tiny open_clip ViT (two shapes, vision
width != text width, QuickGELU, depth = all blocks and partial), prompts copied across, same
images and labels, fp32, one `forward_backward`; worst |difference|: logits 3.4e-6, CE 1.7e-6,
text term 4.8e-7, image term 3.0e-8, KL term 1.1e-7, total loss 1.9e-6, gradients of the total
2.8e-6 (|loss| ~ 5.8, |grad| <= 2.6), frozen text target 1.5e-7; GPA weights bit-equal for
(mean, std, epochs) = (15, 1, 20), (6, 10, 20), (30, 30, 50), (45, 5, 50); prompts after 20 and 6
epochs of GPA bit-equal, logits after GPA 6.0e-6. Measured with every `.half()` of the official
code removed (fp32 semantics); with `clip/model.py`'s prompt casts kept the logits differ by up
to 4.3e-4 and the gradients by 4.9e-4 (weights fp16-representable, as OpenAI's).

Departures from the official code, on purpose:
- Precision: the official configs set PREC "fp16" (`configs/trainers/PromptSRC/*.yaml`, all
  three; `train.py` default `TRAINER.PROMPTSRC.PREC`): CLIP and the text context are fp16 and
  take their SGD updates in fp16, with no loss scaling. The official code rounds the vision
  prompts and every deep prompt to fp16 (`.half()` in `VisionTransformer.forward` and
  `ResidualAttentionBlock_IVLP.forward`) even in fp32 runs, keeps its frozen image encoder in
  fp16 (with PREC fp32 it then gets fp32 images and fails with a dtype error: only the configs'
  PREC fp16 runs) and rounds t0 to fp16 in the zero-shot logits; here the prompts stay fp32,
  the frozen image features are computed in the run's precision, t0 and all logits in fp32, and
  the engine's precision applies to the passes (`--precision`: fp32 on the CPU; on CUDA fp16
  autocast with a GradScaler by default).
- GPA averages the learned tensors only; the official one averages the whole state dict, frozen
  CLIP included (identical every epoch, so equal up to rounding: sum_e w_e * W).
- The official amp mode is broken (the model returns a tuple as the loss); here every precision
  runs the same loss.
- The text features of the templates are summed per template then divided (the official stacks
  them and takes the mean); templates are filled with `str.format` (official: `replace("{}")`).
- What IVLP departs from (see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import (
    KeyedCache,
    MethodConfig,
    TrainOutput,
    clip_logits,
    features_key,
    full_precision,
)
from vlprompt.methods.ivlp import IVLP, IVLPConfig
from vlprompt.methods.registry import register_method

# The official `trainers/imagenet_templates.py` IMAGENET_TEMPLATES (60 of CLIP's 80 ImageNet
# templates), the frozen text target of every data set.
PROMPTSRC_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
)


def gpa_weights(epochs: int, mean: float, std: float) -> list[float]:
    """The official GPA weights: N(e; mean, std) for e = 1..epochs, divided by their sum
    (the official numpy float64 expression). One clear error when every weight underflows to 0."""
    if std <= 0:
        raise MethodError(f"gpa_std must be > 0 (the official values are 1, 5, 10, 30), got {std}")
    density = [
        (1 / (std * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((e - mean) / std) ** 2)
        for e in range(1, epochs + 1)
    ]
    total = sum(density)
    if total == 0:
        raise MethodError(
            f"gpa_mean {mean} with gpa_std {std} gives every epoch 1..{epochs} a Gaussian weight "
            f"of 0; put gpa_mean within the epochs 1..{epochs} or use a larger gpa_std"
        )
    return [float(d / total) for d in density]


@dataclass
class PromptSRCConfig(IVLPConfig):
    """PromptSRC (defaults: the official base-to-new config, see the module docstring)."""

    text_loss_weight: float = field(
        default=25.0,
        metadata={"help": "weight of L1(prompted text features, frozen template-mean features)"},
    )
    image_loss_weight: float = field(
        default=10.0,
        metadata={"help": "weight of L1(prompted image features, frozen image features)"},
    )
    gpa_mean: float = field(
        default=15.0,
        metadata={
            "help": "epoch at the centre of the Gaussian prompt aggregation (official: 15 "
            "base-to-new, 6 cross-data-set, 30 or 45 few-shot)"
        },
    )
    gpa_std: float = field(
        default=1.0,
        metadata={
            "help": "standard deviation, in epochs, of the Gaussian prompt aggregation (official: "
            "1 base-to-new, 10 cross-data-set, 30 or 5 few-shot)"
        },
    )
    templates: tuple[str, ...] = field(
        default=PROMPTSRC_TEMPLATES,
        metadata={
            "help": "templates whose mean frozen text features are the text and logit targets "
            "(default: the official 60 ImageNet templates, for every data set)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # also checks every entry of `templates`
        self.templates = tuple(self.templates)
        for name in ("text_loss_weight", "image_loss_weight"):
            if getattr(self, name) < 0:
                raise MethodError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.templates:
            raise MethodError(
                "templates is empty; PromptSRC's frozen text target needs at least one template"
            )
        gpa_weights(self.epochs, self.gpa_mean, self.gpa_std)


@dataclass
class PromptSRCTrainOutput(TrainOutput):
    """The training forward (`image_features`: the frozen ones) plus the prompted features."""

    text_features: torch.Tensor | None = None  # [classes, embed_dim], normalised, with grad
    prompted_image_features: torch.Tensor | None = None  # [batch, embed_dim], normalised


def template_mean_features(
    clip: ClipBackbone, classnames: list[str], templates: tuple[str, ...]
) -> torch.Tensor:
    """Mean over `templates` of the unnormalised frozen CLIP text features [C, E] (fp32)."""
    total = None
    for template in templates:
        texts = [template.format(te.clean_classname(c)) for c in classnames]
        tokens = te.tokenize_checked(clip, texts, "prompt", te.TEMPLATE_HINT)
        feats = clip.encode_text(tokens).float()
        total = feats if total is None else total + feats
    return total / len(templates)


def self_regulating_losses(
    out: PromptSRCTrainOutput,
    frozen_text: torch.Tensor,
    zeroshot_logits: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text L1, image L1, logit KL) of the official code, unweighted, in fp32."""
    text = F.l1_loss(out.text_features.float(), frozen_text.float())
    image = F.l1_loss(out.prompted_image_features.float(), out.image_features.float())
    logits = out.logits.float()
    kl = F.kl_div(
        F.log_softmax(logits, dim=1),
        F.log_softmax(zeroshot_logits.float(), dim=1),
        reduction="sum",
        log_target=True,
    )
    return text, image, kl / logits.numel()


def _buffer_name(parameter_name: str) -> str:
    return "gpa_" + parameter_name.replace(".", "_")


@register_method
class PromptSRC(IVLP):
    """IVLP trained with self-regulating losses towards frozen CLIP and evaluated with its
    Gaussian-weighted prompt average over epochs."""

    name: ClassVar[str] = "promptsrc"
    config_class: ClassVar[type[MethodConfig]] = PromptSRCConfig
    config: PromptSRCConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: PromptSRCConfig) -> None:
        super().__init__(clip, classnames, config)
        self.gpa_weights = gpa_weights(config.epochs, config.gpa_mean, config.gpa_std)
        for name, p in self.named_parameters():
            if p.requires_grad:
                self.register_buffer(_buffer_name(name), torch.zeros_like(p.detach()))
        self._frozen_text_cache = KeyedCache()

    # ---- frozen targets ----------------------------------------------------------------------
    @torch.no_grad()
    def frozen_text_features(self) -> torch.Tensor:
        """The normalised template-mean frozen text features [C, E] (fp32, once per class list)."""

        def compute() -> torch.Tensor:
            with full_precision(self.clip.device):
                mean = template_mean_features(self.clip, self.classnames, self.config.templates)
                return F.normalize(mean, dim=-1)

        key = features_key(self.clip, self.classnames, self.config.templates, fp32=True)
        return self._frozen_text_cache.get(key, compute)

    # ---- forward -----------------------------------------------------------------------------
    @property
    def reads_frozen_image_features(self) -> bool:
        return True  # the image regulariser's and the zero-shot teacher's frozen pass

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.prompted_logits(self.encode_image(images))

    def forward_train(self, images: torch.Tensor) -> PromptSRCTrainOutput:
        raw = self.encode_image(images)
        img = F.normalize(raw, dim=-1)
        if self.dept is None:
            raw_image = raw_text = None
            text = self.class_side()
        else:  # DePT's head reads the features before normalisation
            raw_image, raw_text = raw, self.raw_text_features()
            text = F.normalize(raw_text, dim=-1)
        return PromptSRCTrainOutput(
            clip_logits(self.clip, img, text), self.image_features(images), text, img,
            raw_image_features=raw_image, raw_text_features=raw_text,
        )  # fmt: skip

    def loss(self, out: PromptSRCTrainOutput, labels: torch.Tensor) -> torch.Tensor:
        frozen_text = self.frozen_text_features()
        zeroshot = clip_logits(self.clip, out.image_features, frozen_text)
        text, image, kl = self_regulating_losses(out, frozen_text, zeroshot)
        ce = F.cross_entropy(out.logits, labels)
        cfg = self.config
        return ce + (kl + cfg.text_loss_weight * text + cfg.image_loss_weight * image)

    # ---- Gaussian prompt aggregation ---------------------------------------------------------
    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        """Add w_epoch * the prompts to the running sum; after the last epoch, load the sum."""
        if not 1 <= epoch <= len(self.gpa_weights):
            raise MethodError(
                f"epoch {epoch} is outside the {len(self.gpa_weights)} epochs PromptSRC's "
                "prompt aggregation was set up for (epochs)"
            )
        weight = self.gpa_weights[epoch - 1]
        for name, p in self.named_parameters():
            if p.requires_grad:
                total = self.get_buffer(_buffer_name(name))
                total.copy_(total + p * weight)
        if epoch == self.config.epochs:
            for name, p in self.named_parameters():
                if p.requires_grad:
                    p.copy_(self.get_buffer(_buffer_name(name)))
