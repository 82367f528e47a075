"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022, "Tip-Adapter: Training-free Adaption of
CLIP for Few-shot Classification"; official code gaopengcuhk/Tip-Adapter `main.py`,
`main_imagenet.py`, `utils.py` (`build_cache_model`, `search_hp`, `clip_classifier`),
`configs/*.yaml`, `datasets/*.py`, at commit d0e2d6f8c5feb8b6ce937b757810761f7155d4d5).

A cache model built from the few-shot training set, without gradient steps (`tip_adapter`):
- keys K [N, E]: the frozen CLIP image features of every training image (unnormalised) averaged
  over `augment_epoch` randomly augmented passes (RandomResizedCrop scale 0.5-1, bicubic, and a
  horizontal flip), then L2-normalised; values V [N, C]: the one-hot labels;
- logits = CLIP's zero-shot logits + alpha * exp(-(beta - beta * f @ K^T)) @ V, f the normalised
  test feature; zero-shot = logit_scale * f @ W^T with W the text features of the hand-crafted
  template (an ensemble: each template normalised, averaged, renormalised);
- alpha and beta are searched on the validation features over the official grid, beta_i =
  i * (search_scale[0] - 0.1) / search_step[0] + 0.1 for i in 0..search_step[0]-1 (the scale
  itself is never reached), alpha likewise; beta outer, alpha inner; the first strict best
  validation accuracy wins, starting from accuracy 0 and (beta, alpha) = (0, 0).

Tip-Adapter-F (`tip_adapter_f`) also fine-tunes the keys (the official `nn.Linear` initialised
with K; values, text features and CLIP stay frozen): AdamW (lr 0.001, eps 1e-4, PyTorch's weight
decay 0.01), CosineAnnealingLR stepped per iteration over epochs * iterations per epoch (down
to `min_lr`, 0), batch 256 shuffled, no warm-up; every epoch sees fresh augmentations of the
training images (their normalised features); loss = cross-entropy of the logits above with the
initial alpha/beta. The keys of the best epoch are kept, then alpha/beta are searched again on
the validation features.

The validation features are every image of the val split, as the official `main.py` searches
`dataset.val` (`val_split="whole"`; `"few-shot"` takes CoOp's min(shots, 4) per class). Ties:
the search keeps the first strictly best grid point, beta ascending in the outer loop and alpha
in the inner one (official `search_hp`), so among points with equally many correct predictions
it keeps the smallest beta, then the smallest alpha: the point nearest zero-shot CLIP's logits.

Official defaults (configs/imagenet.yaml, also the generic values): init_alpha 1.17, init_beta 1,
search_scale [7, 3], search_step [200, 20], augment_epoch 10, lr 0.001, train_epoch 20, batch 256,
16 shots. Per data set (configs/<name>.yaml): init_alpha / search_scale, EuroSAT 100 epochs; the
templates are CoOp's per-data-set ones (`datasets/<name>.py`, the same table as vlprompt's) and
ImageNet's 7-template ensemble (`datasets/imagenet.py`): presets hold them.

Features: the cache views and -F's per-epoch views are drawn by `vlprompt.view_pool.augmented_views`
(seeded per view) and encoded once through the feature cache (`fit`'s `feature_cache`), keyed by
the transform, seed, batch size and workers: a second run on the same images (another alpha/beta
grid, or -F after Tip-Adapter, which shares the cache views) encodes nothing again. The
validation and test features are the cached features of the test transform, as for every method
with `frozen_image_encoder`. `fit_features` (features given, no images) builds the cache from
those single features and -F trains on them in every epoch.

New classes (base-to-new): the cache holds images of the fitted (base) classes only, so a class
it does not hold has no cache column and its logit is zero-shot CLIP's; on a list of new classes
the logits are exactly zero-shot CLIP's (`set_classnames` logs this and lists such classes in
`uncached_classes`). Read a base-to-new row of this family as: base = Tip-Adapter, new = zero-shot
CLIP with the same template(s).

Checked against the official code (/tmp/tip_official, not in this repository: their `utils.py`
and `run_tip_adapter` / `run_tip_adapter_F` from `main.py`, CUDA calls, `.half()` (-> fp32) and
their `clip.tokenize` stubbed; `clip_classifier` run on the same tiny open_clip text tower, every
weight perturbed; the same random unnormalised view features, 25 images x 4 views, 5 classes; -F:
3 epochs x 3 steps of batch 8 on the same epoch views in the same order), fp32: cache keys
bit-equal, values equal, text features <= 2.2e-7; `search_hp` (200 x 20 grid) and -F's search
pick the same (beta, alpha), -F the same best epoch; logits <= 2.5e-5 (logits up to 58), -F
per-step loss <= 1.3e-5 (loss ~13), key gradients <= 3.6e-7, fine-tuned keys <= 1.0e-7. All of
it is their text features and their literal 100 (exp(log 100) is 100.0000076 in fp32): with
those given to ours, logits are bit-equal, loss <= 9.5e-7, gradients <= 1.5e-8, keys <= 3e-8.

Learned: the keys [N, E] (N = shots x classes; -F fine-tunes them: 16 shots x 1000 ImageNet
classes x 512 = 8,192,000 values on ViT-B/16), the one-hot values and alpha, beta, all buffers
filled by `fit` (so `num_trainable_parameters()` is 0: the engine has nothing to train).

Departures from the official code, on purpose:
- Precision: fp32 throughout (official: CLIP in fp16, fp16 values and adapter, with no
  precision setting: `main.py` / `main_imagenet.py` load CLIP with `clip.load(cfg['backbone'])`,
  which keeps OpenAI's fp16 weights on CUDA; `utils.py` `build_cache_model` makes the values
  `.half()`; the -F adapter is `.to(clip_model.dtype)`); the logits and the fine-tuning run in
  fp32 under autocast too.
- The zero-shot logits use the backbone's `logit_scale` (100 for CLIP) where the official code
  writes 100.
- The -F epoch is chosen on the validation features (official: on the test set, with the initial
  alpha/beta; its ImageNet script also searches alpha/beta on the test set); without validation
  features the last epoch is kept and alpha/beta stay at their initial values.
- A class without training images keeps its (empty) value column (official: `F.one_hot` drops
  the columns above the largest label present).
- Cache views and -F epoch views come from two seeded view streams (official: one global RNG);
  the same distribution, reproducible per seed. The seed is torch's initial seed (the run's):
  `fit` has no seed argument.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.base import (
    FrozenImageMixin,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    clip_logits,
    full_precision,
    validate_classnames,
)
from vlprompt.methods.method_config import (
    MAX_VIEWS,
    VIEWS_WHY,
    check_at_most,
    check_val_split,
    val_split_field,
)
from vlprompt.methods.registry import register_method
from vlprompt.methods.saving import OwnClassesMixin
from vlprompt.methods.zeroshot import TemplateEnsembleMixin

MAX_SEARCH_STEPS = 1_000  # grid points of beta or alpha
SEARCH_WHY = "the search scores beta x alpha pairs on the validation set; official 200 and 20"

if TYPE_CHECKING:
    from vlprompt.data.types import Datum

logger = logging.getLogger(__name__)

GRID_START = 0.1  # the first value of the official alpha and beta grids
# -F's epoch views: the view seeds of run seed s + 2^31, apart from every run's cache views
EPOCH_STREAM = 2**31


# ---- settings -----------------------------------------------------------------------------------
@dataclass
class TipAdapterConfig(MethodConfig):
    """Tip-Adapter (defaults: the official configs/imagenet.yaml)."""

    templates: tuple[str, ...] = field(
        default=(),
        metadata={"help": "an ensemble of templates (ImageNet: 7); empty = the single template"},
    )
    init_alpha: float = field(
        default=1.17, metadata={"help": "alpha (weight of the cache logits) before the search"}
    )
    init_beta: float = field(
        default=1.0, metadata={"help": "beta (sharpness of the cache affinities) before the search"}
    )
    search_hp: bool = field(
        default=True,
        metadata={"help": "search alpha and beta on the validation features (official: True)"},
    )
    search_scale: tuple[float, ...] = field(
        default=(7.0, 3.0),
        metadata={"help": "(beta, alpha): each grid runs from 0.1 towards this value"},
    )
    search_step: tuple[int, ...] = field(
        default=(200, 20), metadata={"help": "(beta, alpha): number of grid values"}
    )
    val_split: str = val_split_field("whole")
    augment_epoch: int = field(
        default=10,
        metadata={"help": "augmented passes over the training images averaged into the keys"},
    )
    cache_crop_min_scale: float = field(
        default=0.5,
        metadata={"help": "smallest area fraction of the random crop of the training views"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.templates = tuple(self.templates)
        self.search_scale = tuple(float(s) for s in self.search_scale)
        self.search_step = tuple(self.search_step)
        check_val_split(self.val_split)
        for name in ("init_alpha", "init_beta"):
            if getattr(self, name) < 0:
                raise MethodError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.search_scale) != 2 or min(self.search_scale) <= GRID_START:
            raise MethodError(
                f"search_scale must be two numbers (beta, alpha) above {GRID_START} (the grids "
                f"start there), got {self.search_scale}"
            )
        if len(self.search_step) != 2 or min(self.search_step) < 1:
            raise MethodError(
                f"search_step must be two whole numbers (beta, alpha) >= 1, got {self.search_step}"
            )
        for name, steps in zip(("beta", "alpha"), self.search_step):
            check_at_most(f"search_step's {name}", steps, MAX_SEARCH_STEPS, SEARCH_WHY)
        if self.augment_epoch < 1:
            raise MethodError(
                f"augment_epoch must be >= 1 (augmented views averaged into each key), got "
                f"{self.augment_epoch}"
            )
        check_at_most("augment_epoch", self.augment_epoch, MAX_VIEWS, VIEWS_WHY)
        if not 0 < self.cache_crop_min_scale <= 1:
            raise MethodError(
                f"cache_crop_min_scale must be in (0, 1] (official 0.5), got {self.cache_crop_min_scale}"
            )
        if self.gradient_rule != "none":
            raise MethodError(
                f"gradient_rule must be 'none': Tip-Adapter takes no engine gradient steps for "
                f"a rule to act on, got {self.gradient_rule!r}"
            )


@dataclass
class TipAdapterFConfig(TipAdapterConfig):
    """Tip-Adapter-F (defaults: the official configs/imagenet.yaml and main.py)."""

    optimizer: str = field(default="adamw", metadata={"help": "'adamw' (the official optimizer)"})
    lr: float = field(default=0.001, metadata={"help": "AdamW learning rate of the keys"})
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (official: PyTorch's default 0.01)"}
    )
    epochs: int = field(
        default=20, metadata={"help": "fine-tuning epochs (train_epoch; EuroSAT 100)"}
    )
    batch_size: int = field(default=256, metadata={"help": "training features per step"})
    warmup_epochs: int = field(
        default=0, metadata={"help": "must be 0: the official schedule has no warm-up"}
    )
    lr_schedule: str = field(
        default="step",
        metadata={"help": "'step': CosineAnnealingLR stepped per iteration (the official one)"},
    )
    adam_eps: float = field(default=1e-4, metadata={"help": "AdamW epsilon (official 1e-4)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer != "adamw":
            raise MethodError(
                f"optimizer must be 'adamw' (Tip-Adapter-F's optimizer), got {self.optimizer!r}"
            )
        if self.lr_schedule != "step" or self.iterations != 0:
            raise MethodError(
                f"lr_schedule must be 'step' and iterations 0 (Tip-Adapter-F's cosine runs per "
                f"iteration over `epochs` epochs), got {self.lr_schedule!r} and {self.iterations}"
            )
        if self.adam_eps <= 0:
            raise MethodError(f"adam_eps must be > 0 (official 1e-4), got {self.adam_eps}")


# ---- the cache model (the official formulas) ----------------------------------------------------
def build_cache(
    view_features: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys [N, E]: the image features of each view [V, N, E] averaged over the views, then
    normalised; values [N, C]: the one-hot labels (official `build_cache_model`)."""
    keys = view_features.float().mean(dim=0)
    keys = keys / keys.norm(dim=-1, keepdim=True)
    return keys, F.one_hot(labels.long(), n_classes).float()


def cache_logits(
    features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float
) -> torch.Tensor:
    """exp(-(beta - beta * f @ K^T)) @ V [B, C] for normalised features f [B, E]."""
    affinity = F.linear(features, keys)
    return (-(beta - beta * affinity)).exp() @ values


def tip_logits(zero_shot: torch.Tensor, cache: torch.Tensor, alpha: float) -> torch.Tensor:
    return zero_shot + cache * alpha


def search_grid(scale: float, steps: int) -> list[float]:
    """The official grid: `steps` values from 0.1 in steps of (scale - 0.1) / steps."""
    return [i * (scale - GRID_START) / steps + GRID_START for i in range(steps)]


def search_alpha_beta(
    zero_shot: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    betas: Sequence[float],
    alphas: Sequence[float],
) -> tuple[float, float, int]:
    """(beta, alpha, correct): the grid point with the most correct validation predictions, the
    first one in (beta, alpha) order on ties; (0, 0, 0) when none is correct (official
    `search_hp`)."""
    best_beta, best_alpha, best_correct = 0.0, 0.0, 0
    for beta in betas:
        cache = cache_logits(features, keys, values, beta)
        for alpha in alphas:
            correct = _correct(tip_logits(zero_shot, cache, alpha), labels)
            if correct > best_correct:
                best_beta, best_alpha, best_correct = beta, alpha, correct
    return best_beta, best_alpha, best_correct


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int((logits.argmax(dim=-1) == labels).sum())


@dataclass
class Validation:
    """Normalised validation features, their labels and their zero-shot logits."""

    features: torch.Tensor
    labels: torch.Tensor
    zero_shot: torch.Tensor

    def correct(self, keys: torch.Tensor, values: torch.Tensor, alpha: float, beta: float) -> int:
        cache = cache_logits(self.features, keys, values, beta)
        return _correct(tip_logits(self.zero_shot, cache, alpha), self.labels)

    def accuracy(
        self, keys: torch.Tensor, values: torch.Tensor, alpha: float, beta: float
    ) -> float:
        return 100.0 * self.correct(keys, values, alpha, beta) / len(self.labels)


def fine_tune_keys(
    keys: torch.Tensor,
    values: torch.Tensor,
    labels: torch.Tensor,
    epoch_features: Callable[[int], torch.Tensor],
    zero_shot_of: Callable[[torch.Tensor], torch.Tensor],
    config: TipAdapterFConfig,
    alpha: float,
    beta: float,
    val: Validation | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Tip-Adapter-F's training of the keys (official `run_tip_adapter_F`): the keys of the best
    epoch on `val` (the last one without it) and the mean training loss of each epoch."""
    weight = nn.Parameter(keys.clone())
    optimizer = torch.optim.AdamW(
        [weight], lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay
    )
    steps = math.ceil(len(labels) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, config.epochs * steps, eta_min=config.min_lr
    )
    best_keys, best_correct, best_epoch = weight.detach().clone(), -1, 0
    info: dict[str, float] = {}
    for epoch in range(config.epochs):
        features = epoch_features(epoch)
        zero_shot = zero_shot_of(features)
        losses = []
        for rows in torch.randperm(len(labels), generator=generator).split(config.batch_size):
            rows = rows.to(features.device)
            cache = cache_logits(features[rows], weight, values, beta)
            loss = F.cross_entropy(tip_logits(zero_shot[rows], cache, alpha), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        info[f"loss_epoch_{epoch + 1}"] = sum(losses) / len(losses)
        correct = val.correct(weight.detach(), values, alpha, beta) if val is not None else 0
        if val is None or correct > best_correct:
            best_keys, best_correct, best_epoch = weight.detach().clone(), correct, epoch + 1
    info["best_epoch"] = best_epoch
    return best_keys, info


# ---- the methods --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TipClassSide:
    """What Tip-Adapter's logits read of the classes (`class_features`): all constant, so an
    exported model is CLIP's image encoder followed by these products."""

    text: torch.Tensor  # [C, E] normalised text features of the template(s)
    keys: torch.Tensor  # [N, E] cache keys
    values: torch.Tensor  # [N, C] the value columns of the current classes
    alpha: float
    beta: float
    cached: bool  # whether any current class has a cache column


@register_method
class TipAdapter(OwnClassesMixin, TemplateEnsembleMixin, FrozenImageMixin, PromptMethod):
    """Tip-Adapter: zero-shot CLIP plus a cache of the few-shot features, no training."""

    name: ClassVar[str] = "tip_adapter"
    own_classes_text: ClassVar[str] = "the classes it was fitted on (its cache columns)"
    config_class: ClassVar[type[MethodConfig]] = TipAdapterConfig
    needs_training: ClassVar[bool] = False  # the cache is built by `fit` / `fit_features`
    new_classes_note: ClassVar[str | None] = (
        "its cache holds base-class images only, so its new-class accuracy is zero-shot CLIP's "
        "(same template)"
    )
    fine_tunes_keys: ClassVar[bool] = False
    config: TipAdapterConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: TipAdapterConfig) -> None:
        super().__init__(clip, classnames, config)
        device = clip.device
        self.register_buffer("cache_keys", torch.zeros(0, clip.embed_dim, device=device))
        self.register_buffer("cache_values", torch.zeros(0, len(self.classnames), device=device))
        self.register_buffer("alpha", torch.zeros((), device=device))
        self.register_buffer("beta", torch.zeros((), device=device))
        self._text_cache = KeyedCache()
        self._use_fitted_classes()

    # ---- classes: the cache covers the fitted ones ------------------------------------------
    def _use_fitted_classes(self) -> None:
        self.fitted_classnames = list(self.classnames)  # the classes of the value columns
        self.uncached_classes: list[str] = []  # current classes without a cache column
        self._value_columns = torch.arange(len(self.classnames))

    def set_classnames(self, classnames: list[str]) -> None:
        """Point the method at `classnames`. A class the cache holds no images of (e.g. a new
        class of base-to-new) gets no cache logits: its logit is zero-shot CLIP's. Such classes
        are logged and listed in `uncached_classes`."""
        self.classnames = validate_classnames(classnames)
        column = {name: i for i, name in enumerate(self.fitted_classnames)}
        empty = len(self.fitted_classnames)  # the index of an all-zero column
        self._value_columns = torch.tensor([column.get(n, empty) for n in self.classnames])
        self.uncached_classes = [n for n in self.classnames if n not in column]
        if self.uncached_classes:
            more = ", ..." if len(self.uncached_classes) > 5 else ""
            logger.warning(
                f"{self.name}: the cache holds no images of {len(self.uncached_classes)} of the "
                f"{len(self.classnames)} classes ({', '.join(self.uncached_classes[:5])}{more}); "
                "their logits are zero-shot CLIP's"
            )

    def _current_values(self) -> torch.Tensor:
        """The value columns of the current classes (all-zero for a class the cache lacks)."""
        padded = F.pad(self.cache_values, (0, 1))
        return padded[:, self._value_columns.to(padded.device)]

    # ---- text side (text_features: TemplateEnsembleMixin, the official `clip_classifier`) -----
    def zero_shot_of(self, image_features: torch.Tensor) -> torch.Tensor:
        return clip_logits(self.clip, image_features, self.text_features())

    # ---- classifying ---------------------------------------------------------------------------
    def class_features(self) -> TipClassSide:
        """The text features and the cache (keys, the current classes' value columns, alpha,
        beta): constants of the class list once fitted."""
        return TipClassSide(
            self.text_features(),
            self.cache_keys,
            self._current_values(),
            float(self.alpha),
            float(self.beta),
            cached=len(self.uncached_classes) < len(self.classnames),
        )

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        if self.cache_keys.shape[0] == 0:
            raise MethodError(
                f"{self.name} is not fitted: call fit(...) or fit_features(...) first"
            )
        side = self.class_side()
        zero_shot = clip_logits(self.clip, image_features, side.text)
        if not side.cached:
            return zero_shot  # no class has a cache column: exactly zero-shot CLIP
        with full_precision(image_features.device):
            cache = cache_logits(image_features.float(), side.keys, side.values, side.beta)
            return tip_logits(zero_shot, cache, side.alpha)

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
        """Build the cache from `augment_epoch` augmented views of the training images (and,
        for -F, train on `epochs` more views), choosing alpha/beta on the validation images
        (test transform); every view is encoded once through `feature_cache`."""
        from vlprompt.data import transform_for
        from vlprompt.feature_cache import encode_images_cached

        seed = _run_seed()
        transform = transform_for(
            self.clip, train=True, crop_min_scale=self.config.cache_crop_min_scale
        )

        def views_of(n_views: int, stream_seed: int) -> torch.Tensor:
            return augmented_view_features(self.clip, train, transform, n_views, stream_seed,
                                           feature_cache, batch_size, num_workers)  # fmt: skip

        views = views_of(self.config.augment_epoch, seed)
        epoch_views = (
            views_of(self.config.epochs, seed + EPOCH_STREAM) if self.fine_tunes_keys else None
        )
        val_f, val_y = encode_images_cached(
            self.clip, val, transform_for(self.clip, train=False), feature_cache, batch_size,
            num_workers,
        )  # fmt: skip
        labels = torch.tensor([d.label for d in train], dtype=torch.long)
        info = self._fit(views, labels, val_f, val_y, epoch_views, seed)
        summary = {k: v for k, v in info.items() if not k.startswith("loss_epoch_")}
        log(
            f"{self.name}: cache of {len(labels)} images x {views.shape[0]} augmented views; "
            + ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
        )

    def fit_features(
        self,
        train_feats: torch.Tensor,
        train_labels: torch.Tensor,
        val_feats: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Build the cache from one view (normalised features [N, E]), -F training on those same
        features every epoch; alpha/beta searched on the validation features. Returns alpha,
        beta, the validation accuracy and (-F) each epoch's loss and the chosen epoch."""
        epoch_views = train_feats[None].expand(self.config.epochs, -1, -1)
        return self._fit(train_feats[None], train_labels, val_feats, val_labels, epoch_views,
                         _run_seed())  # fmt: skip

    def _fit(self, views, labels, val_feats, val_labels, epoch_views, seed) -> dict[str, float]:
        """views [V, N, E] (any scale); epoch_views [epochs, N, E] (-F) or None."""
        cfg, device = self.config, self.clip.device
        labels = labels.long().to(device)
        self._check_labels(views, labels)
        self._use_fitted_classes()
        keys, values = build_cache(views.to(device), labels, len(self.classnames))
        val = self._validation(val_feats, val_labels)
        alpha, beta = cfg.init_alpha, cfg.init_beta
        info: dict[str, float] = {}
        if self.fine_tunes_keys:
            with full_precision(device), torch.enable_grad():
                keys, info = fine_tune_keys(
                    keys, values, labels, lambda e: _normalized(epoch_views[e].to(device)),
                    self.zero_shot_of, cfg, alpha, beta, val,
                    torch.Generator().manual_seed(seed),
                )  # fmt: skip
        with torch.no_grad(), full_precision(device):
            if val is not None and cfg.search_hp:
                beta, alpha, _ = search_alpha_beta(
                    val.zero_shot, val.features, val.labels, keys, values,
                    search_grid(cfg.search_scale[0], cfg.search_step[0]),
                    search_grid(cfg.search_scale[1], cfg.search_step[1]),
                )  # fmt: skip
            accuracy = math.nan if val is None else val.accuracy(keys, values, alpha, beta)
        self.cache_keys, self.cache_values = keys.detach(), values
        self.alpha.fill_(alpha)
        self.beta.fill_(beta)
        return {"alpha": alpha, "beta": beta, "val_accuracy": accuracy, **info}

    def _check_labels(self, views: torch.Tensor, labels: torch.Tensor) -> None:
        n_cls = len(self.classnames)
        if views.ndim != 3 or views.shape[1] != len(labels) or len(labels) == 0:
            raise MethodError(
                f"{self.name}: {views.shape[1] if views.ndim == 3 else '?'} training features but "
                f"{len(labels)} labels (need the same non-zero number)"
            )
        if labels.min() < 0 or labels.max() >= n_cls:
            raise MethodError(
                f"{self.name}: training labels must lie in 0..{n_cls - 1}, got "
                f"{int(labels.min())}..{int(labels.max())}"
            )

    def _validation(
        self, feats: torch.Tensor | None, labels: torch.Tensor | None
    ) -> Validation | None:
        if feats is None or labels is None or len(labels) == 0:
            return None
        feats = feats.to(self.clip.device).float()
        with torch.no_grad():
            return Validation(feats, labels.long().to(self.clip.device), self.zero_shot_of(feats))

    # ---- saving --------------------------------------------------------------------------------

    def size_to_saved(self, tensors: dict[str, torch.Tensor]) -> None:
        """The cache has as many rows as the saved keys (shots x classes x views)."""
        rows = tensors["cache_keys"].shape[0] if "cache_keys" in tensors else 0
        device = self.cache_keys.device
        self.cache_keys = torch.zeros(rows, self.cache_keys.shape[1], device=device)
        self.cache_values = torch.zeros(rows, self.cache_values.shape[1], device=device)


@register_method
class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: Tip-Adapter whose cache keys are fine-tuned (AdamW, 20 epochs)."""

    name: ClassVar[str] = "tip_adapter_f"
    config_class: ClassVar[type[MethodConfig]] = TipAdapterFConfig
    fine_tunes_keys: ClassVar[bool] = True
    config: TipAdapterFConfig


# ---- helpers ------------------------------------------------------------------------------------
def _normalized(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True)


def _run_seed() -> int:
    """The run's seed (vlprompt seeds torch with it before building the method)."""
    return torch.initial_seed() % 2**31


def augmented_view_features(
    clip: ClipBackbone,
    items: Sequence[Datum],
    transform: Callable,
    n_views: int,
    seed: int,
    feature_cache: Any = None,
    batch_size: int = 100,
    num_workers: int = 0,
) -> torch.Tensor:
    """Unnormalised frozen image features [n_views, N, E] of `n_views` random augmentations of
    every image (`vlprompt.view_pool.augmented_views`, seeded per view), through the feature
    cache (one entry, keyed by the transform, the seed, the batch size and the workers)."""
    from vlprompt.data.dataset import ImageListDataset
    from vlprompt.view_pool import augmented_views

    n, dim = len(items), clip.embed_dim

    def compute() -> torch.Tensor:
        flat = torch.empty(n, n_views * dim)
        views = augmented_views(ImageListDataset(list(items), transform), n_views, seed=seed,
                                batch_size=batch_size, num_workers=num_workers)  # fmt: skip
        with torch.no_grad():
            for view, start, images in views:
                feats = clip.encode_image(images).float().cpu()
                flat[start : start + len(feats), view * dim : (view + 1) * dim] = feats
        return flat

    if feature_cache is None:
        flat = compute()
    else:
        description = (
            f"tip-adapter: unnormalised features of {n_views} augmented views (seed {seed}, "
            f"batch {batch_size}, workers {num_workers}) of {transform!r}"
        )
        flat = feature_cache.get_or_compute(clip, description, [d.path for d in items], compute)
    return flat.view(n, n_views, dim).permute(1, 0, 2)
