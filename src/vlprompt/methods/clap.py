"""CLAP (Silva-Rodriguez et al., CVPR 2024, "A Closer Look at the Few-Shot Adaptation of Large
Vision-Language Models"; official code jusiro/CLAP `trainers/adapters.py` (`AdapterMethod`,
`CustomCLIP.forward_lp`, `TrainerXCostume.run_epoch`, `ADAPTER.train` / `forward_backward` /
`extract_features`), `configs/trainers/SGD_lr1e-1_B256_ep300.yaml`, `scripts/adapt.sh`,
`experiments/experiment_CLAP.txt`, `train.py`, at commit
dbdf4095b3d824546474c725539b9f4efff3ca0e; Dassl's defaults from KaiyangZhou/Dassl.pytorch at
c61a1b570ac6333bd50fb5ae06aea59002fb20bb).

A class-adaptive constrained linear probe on frozen CLIP image features (`INIT ZS`,
`CONSTRAINT l2`, the paper's CLAP):
- the prototypes p_c [C, E] start at the zero-shot prototypes t_c: the *unnormalised* text
  embeddings (the text tower's projected EOT feature) averaged over the templates (one template
  per data set, ImageNet: the 7 CLIP templates + "a photo of a {}.");
- logits = logit_scale * cos(f, p_c);
- loss = cross-entropy + mean_c lambda_c ||p_c - t_c||^2, with the multipliers lambda_c fixed
  before training to the zero-shot performance of class c: the mean over class c's training
  features of the zero-shot softmax probability of class c (`init_lagrangian_multipliers`;
  `outer_step`'s adaptive update is not used by the `l2` constraint);
- the training features: 20 randomly augmented views of every training image (Dassl's
  RandomResizedCrop scale 0.08-1 + flip; `epochs_aumentation = 20`), all pooled; every epoch
  the pool is shuffled and the first `batches` batches of 256 are used, `batches` being the
  length of Dassl's image loader (floor(N / 256) images' batches, 1 when N < 256);
- SGD lr 0.1 (momentum 0.9, no weight decay), 300 epochs, 1 warm-up epoch at 1e-5 then cosine
  (Dassl's `ConstantWarmupScheduler`), the learning rate stepped per epoch; no validation: the
  last epoch is kept.
`constraint="none"` is the paper's ZS-LP (the same probe without the penalty).

Learned: the prototypes [C, E] (a buffer filled by `fit`; `num_trainable_parameters()` is 0).

Checked against the official code (/tmp, not in this repository: trainers/adapters.py executed
with Dassl, their CLIP package and the data sets stubbed, CUDA calls removed: their
`AdapterMethod` (ZS init, `init_lagrangian_multipliers`, `zero_shot_constraint`),
`CustomCLIP.forward_lp`, `TrainerXCostume.run_epoch` and `ADAPTER.forward_backward` on a stub
trainer with Dassl's own `ConstantWarmupScheduler` (its `verbose` argument dropped for today's
torch) and SGD; logit_scale frozen as `build_model` leaves it; the same random unnormalised
pooled features, zero-shot prototypes and test features, and the same shuffles (numpy's seeded
`rand().argsort()`, fed to ours)), fp32, 300 epochs:
- 4 classes, 40 images x 3 views of width 16, batch 16 (2 steps per epoch), lr 0.01: every
  step's loss <= 2.4e-6 (loss up to 11.7), gradients <= 3.9e-6, final prototypes <= 2.4e-7,
  test logits <= 1.5e-5 (logits up to 60); 6 classes, 60 x 3 of width 32, batch 8 (7 steps per
  epoch): loss <= 2.9e-6, gradients <= 2.8e-6, logits <= 7.6e-6;
- the official lr 0.1, batch 256 (1 step per epoch, 10 images): loss <= 9.5e-7, gradients
  <= 3.4e-6, logits <= 1.1e-5; ZS-LP (`constraint="none"`, 2 steps per epoch): loss <= 3.6e-6,
  logits <= 1.9e-5;
- at lr 0.1 with 2 steps per epoch this toy problem is chaotic (the loss jumps between 3 and
  12 from epoch to epoch): the first steps agree to 1e-6, then fp32 rounding (e.g. the
  schedule's closed form against torch's recursive cosine) grows to 0.18 in the loss and 2e-3 in
  the final prototypes.

Departures from the official code, on purpose:
- Precision: fp32 throughout. Official (PREC fp16, the default: `train.py`
  `TRAINER.ADAPTER.PREC = "fp16"`, no config or script sets another): the zero-shot prototypes
  come from CLIP's fp16 text tower (computed when `CustomCLIP` is built), then the model is cast
  to fp32 (`trainers/adapters.py`: `self.model = self.model.float()`), so the image features and
  the training are fp32.
- The views and each epoch's shuffle come from generators seeded with the run's seed (official:
  the global torch / numpy RNGs).
- Class names: `_` becomes a space in the prompts (official: the names as the data set gives
  them).
- Only the fitted class list is classified (one prototype per class); every class needs
  training features (official: `one_hot` of the labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import (
    FrozenImageMixin,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    features_key,
    full_precision,
)
from vlprompt.methods.feature_fitting import (
    ClosedSetMixin,
    check_fit_data,
    not_fitted,
    run_seed,
    train_view_features,
)
from vlprompt.methods.method_config import MAX_VIEWS, VIEWS_WHY, check_at_most
from vlprompt.methods.registry import register_method
from vlprompt.schedule import lr_at_epoch, set_lr

if TYPE_CHECKING:
    from vlprompt.data.types import Datum

CONSTRAINTS = ("l2", "none")


@dataclass
class CLAPConfig(MethodConfig):
    """CLAP (defaults: the official SGD_lr1e-1_B256_ep300.yaml with INIT ZS, CONSTRAINT l2)."""

    templates: tuple[str, ...] = field(
        default=(),
        metadata={"help": "templates whose unnormalised text embeddings are averaged into the "
                  "zero-shot prototypes (ImageNet: 8); empty = the single template"},
    )  # fmt: skip
    constraint: str = field(
        default="l2",
        metadata={"help": "'l2' (CLAP: class-adaptive penalty towards the zero-shot "
                  "prototypes) or 'none' (ZS-LP)"},
    )  # fmt: skip
    augment_epoch: int = field(
        default=20,
        metadata={"help": "augmented views of every training image, all pooled (official 20)"},
    )
    cache_crop_min_scale: float = field(
        default=0.08,
        metadata={"help": "smallest area fraction of the random crop of the training views "
                  "(Dassl's RRCROP_SCALE 0.08)"},
    )  # fmt: skip
    lr: float = field(default=0.1, metadata={"help": "SGD learning rate after warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "SGD weight decay (official 0)"})
    epochs: int = field(default=300, metadata={"help": "training epochs (official 300)"})
    batch_size: int = field(
        default=256, metadata={"help": "features per step; also the image loader's batch"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.templates = tuple(self.templates)
        if self.constraint not in CONSTRAINTS:
            raise MethodError(
                f"constraint must be one of {', '.join(CONSTRAINTS)} ('l2' is CLAP), got "
                f"{self.constraint!r}"
            )
        if self.augment_epoch < 1:
            raise MethodError(
                f"augment_epoch must be >= 1 (augmented views of each training image), got "
                f"{self.augment_epoch}"
            )
        check_at_most("augment_epoch", self.augment_epoch, MAX_VIEWS, VIEWS_WHY)
        if not 0 < self.cache_crop_min_scale <= 1:
            raise MethodError(
                f"cache_crop_min_scale must be in (0, 1] (official 0.08), got "
                f"{self.cache_crop_min_scale}"
            )
        if self.optimizer != "sgd" or self.lr_schedule != "epoch" or self.iterations != 0:
            raise MethodError(
                f"CLAP trains with SGD and the per-epoch schedule (optimizer 'sgd', lr_schedule "
                f"'epoch', iterations 0), got {self.optimizer!r}, {self.lr_schedule!r}, "
                f"{self.iterations}"
            )
        if self.gradient_rule != "none":
            raise MethodError(
                f"gradient_rule must be 'none': CLAP trains inside fit with its own loss, got "
                f"{self.gradient_rule!r}"
            )


# ---- the official formulas ----------------------------------------------------------------------
def clap_logits(feats: torch.Tensor, prototypes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """logit_scale * cos(f, p_c) [B, C] (`forward_lp`)."""
    return F.normalize(feats, dim=-1) @ F.normalize(prototypes, dim=-1).T * scale


def zero_shot_performance(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """lambda_c [C]: class c's mean zero-shot probability of class c."""
    one_hot = F.one_hot(labels, logits.shape[1]).float()
    return torch.diag(logits.softmax(dim=-1).T @ one_hot) / one_hot.sum(dim=0)


def penalty(
    prototypes: torch.Tensor, base: torch.Tensor, multipliers: torch.Tensor
) -> torch.Tensor:
    """mean_c lambda_c ||p_c - t_c||^2 (`zero_shot_constraint`)."""
    return (multipliers * (prototypes - base).pow(2).sum(dim=-1)).mean()


def batches_per_epoch(n_images: int, batch_size: int) -> int:
    """The length of Dassl's training loader: full batches only when a batch fits."""
    return n_images // batch_size if n_images >= batch_size else 1


def train_clap(
    feats: torch.Tensor,
    labels: torch.Tensor,
    base: torch.Tensor,
    scale: torch.Tensor,
    config: CLAPConfig,
    n_images: int,
    order: Callable[[int], torch.Tensor],
    on_step: Callable[..., None] = lambda *_: None,
) -> torch.Tensor:
    """The official training (`ADAPTER.train`, `run_epoch`, `forward_backward`) on pooled
    features [M, E]: the last epoch's prototypes [C, E]. `order(epoch)` is that epoch's shuffle
    of the M rows; `on_step(loss, prototypes)` sees each step's loss and gradient."""
    prototypes = nn.Parameter(base.clone())
    multipliers = torch.zeros(len(base), device=base.device)
    if config.constraint == "l2":
        with torch.no_grad():
            multipliers = zero_shot_performance(clap_logits(feats, base, scale), labels)
    optimizer = torch.optim.SGD([prototypes], lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)  # fmt: skip
    size = config.batch_size
    for epoch in range(config.epochs):
        set_lr(optimizer, lr_at_epoch(epoch, lr=config.lr, warmup_lr=config.warmup_lr,
                                      warmup_epochs=config.warmup_epochs, epochs=config.epochs))  # fmt: skip
        rows = order(epoch)
        for b in range(batches_per_epoch(n_images, size)):
            batch = rows[b * size : (b + 1) * size]
            loss = F.cross_entropy(clap_logits(feats[batch], prototypes, scale), labels[batch])
            if config.constraint == "l2":
                loss = loss + penalty(prototypes, base, multipliers)
            optimizer.zero_grad()
            loss.backward()
            on_step(loss.item(), prototypes)
            optimizer.step()
    return prototypes.detach()


def mean_text_embeddings(
    clip: ClipBackbone, classnames: list[str], templates: Sequence[str]
) -> torch.Tensor:
    """The unnormalised text embeddings averaged over the templates [C, E]."""
    total = None
    for template in templates:
        texts = [template.format(te.clean_classname(c)) for c in classnames]
        tokens = te.tokenize_checked(clip, texts, "prompt", te.TEMPLATE_HINT)
        feats = clip.encode_text(tokens).float()
        total = feats if total is None else total + feats
    return total / len(templates)


# ---- the method ---------------------------------------------------------------------------------
@register_method
class CLAP(ClosedSetMixin, FrozenImageMixin, PromptMethod):
    """A linear probe from the zero-shot prototypes, held near them class by class."""

    name: ClassVar[str] = "clap"
    config_class: ClassVar[type[MethodConfig]] = CLAPConfig
    needs_training: ClassVar[bool] = False  # trained inside `fit` / `fit_features`
    classifies_new_classes: ClassVar[bool] = False
    config: CLAPConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: CLAPConfig) -> None:
        super().__init__(clip, classnames, config)
        n, dim, device = len(self.classnames), clip.embed_dim, clip.device
        self.register_buffer("prototypes", torch.zeros(n, dim, device=device))  # 0: not fitted
        self._text_cache = KeyedCache()

    def templates(self) -> tuple[str, ...]:
        return self.config.templates or (self.config.template,)

    @torch.no_grad()
    def zero_shot_prototypes(self) -> torch.Tensor:
        """t [C, E]: the unnormalised text embeddings averaged over the templates, in fp32."""

        def compute() -> torch.Tensor:
            with full_precision(self.clip.device):
                return mean_text_embeddings(self.clip, self.classnames, self.templates())

        key = features_key(self.clip, self.classnames, self.templates(), fp32=True)
        return self._text_cache.get(key, compute)

    def class_features(self) -> torch.Tensor:
        """The class side: the fitted prototypes (constant after fitting)."""
        return self.prototypes

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        if not bool(self.prototypes.any()):
            raise not_fitted(self.name)
        prototypes = self.class_side()
        with full_precision(image_features.device):
            scale = self.clip.logit_scale.float()
            return clap_logits(image_features.float(), prototypes, scale)

    # ---- fitting -------------------------------------------------------------------------------
    def fit(
        self,
        train: Sequence[Datum],
        val: Sequence[Datum],
        *,
        feature_cache: Any = None,
        batch_size: int = 100,
        num_workers: int = 0,
        log: Callable[[str], None] = lambda _message: None,
    ) -> None:
        """Train on `augment_epoch` augmented views of the training images; validation-free
        (`val` is not read)."""
        views = train_view_features(self.clip, train, self.config.augment_epoch,
                                    self.config.cache_crop_min_scale, feature_cache, batch_size,
                                    num_workers)  # fmt: skip
        labels = torch.tensor([d.label for d in train], dtype=torch.long)
        self._fit(views, labels)
        log(f"clap: {len(labels)} images x {views.shape[0]} views, {self.config.epochs} epochs")

    def fit_features(
        self,
        train_feats: torch.Tensor,
        train_labels: torch.Tensor,
        val_feats: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Train on features [N, E] (one view; every class present). Validation-free: the
        validation features are not read. Returns the multipliers' mean."""
        return self._fit(train_feats[None], train_labels)

    def _fit(self, views: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """views [V, N, E] (any scale: the logits normalise them), labels [N]."""
        device = self.clip.device
        check_fit_data(self.name, views[0] if views.ndim == 3 else views, labels,
                       self.classnames)  # fmt: skip
        n_views, n_images = views.shape[0], views.shape[1]
        feats = views.to(device).float().reshape(n_views * n_images, -1)
        pooled = labels.to(device).long().repeat(n_views)
        generator = torch.Generator().manual_seed(run_seed())

        def order(_epoch: int) -> torch.Tensor:
            return torch.randperm(len(pooled), generator=generator).to(device)

        base = self.zero_shot_prototypes()
        scale = self.clip.logit_scale.detach().float()
        with full_precision(device), torch.enable_grad():
            prototypes = train_clap(feats, pooled, base, scale, self.config, n_images, order)
        self.prototypes.copy_(prototypes)
        with torch.no_grad():
            lam = zero_shot_performance(clap_logits(feats, base, scale), pooled)
        return {"multiplier_mean": float(lam.mean())}
