"""GDA (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline for Training-free CLIP-based
Adaptation"; official code mrflogs/ICLR24 `main_few_shots.py` `run`, `utils.py`
`clip_classifier`, `configs/few_shots/*.yaml`, `datasets/*.py`, at commit
560fe211700964c915442ff98dbe47dd09656a35).

Gaussian discriminant analysis on CLIP image features, without training:
- the training features: `augment_epoch` (10) randomly augmented views of every training image
  (RandomResizedCrop scale 0.5-1, bicubic, flip: Tip-Adapter's cache views), each normalised, all
  N x views of them pooled;
- mu_c: the mean of class c's features; one shared covariance by the official "KS estimator":
  with X the features centred on their class means (N' rows, D columns) and S = cov(X) (torch's
  `cov`, N' - 1 in the denominator), Sigma^-1 = D * pinv((N' - 1) S + trace(S) I);
- the linear classifier W = Sigma^-1 mu_c, b_c = log(1 / C) - mu_c^T Sigma^-1 mu_c / 2 (uniform
  prior);
- logits = logit_scale * f @ T^T + alpha * (f @ W^T + b), f the normalised test feature, T the
  text features of the data set's template(s) (an ensemble: each template normalised,
  averaged, renormalised, as `clip_classifier`);
- alpha: the first strict best validation accuracy over [1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100],
  starting from accuracy 0 with alpha 0.1.

Official few-shot config (configs/few_shots/*.yaml): augment_epoch 10 (every data set), shots 1,
2, 4, 8, 16, seeds 1-3 (main_few_shots.py); the alpha grid is hard-coded in `run`. Templates:
the same per-data-set table as Tip-Adapter's (datasets/*.py), ImageNet's 7-template ensemble.

Learned (buffers filled by `fit`, so `num_trainable_parameters()` is 0): W [C, E], b [C] and
alpha.

Checked against the official code (/tmp, not in this repository: the body of `run` from
main_few_shots.py with its CUDA calls removed, `cls_acc` from utils.py; a stub CLIP returning the
same random view features, 6 classes x 5 images x 3 views of width 32, unnormalised (`run`
normalises them), with the same random text, validation (40) and test (50) features), fp32: W
<= 2.1e-6 (|W| up to 2.5), b <= 2.4e-7, the same alpha chosen (1e-4) and the test logits
bit-equal at it; with both classifiers at alpha 1 and 100 the logits differ by <= 3.8e-6 and
2.0e-4 (logits up to 46 and 464: the pinv of the same fp32 matrix, summed in another order).

Departures:
- fp32 throughout. Official: fp32 too, but for the test/validation features of the first
  (seed, shots) iteration, encoded by CLIP in fp16 before `clip_classifier(...,
  clip_model.float())` turns the model to fp32 for good.
- The zero-shot logits use the backbone's `logit_scale` (100 for CLIP; official: a literal 100).
- alpha is searched on the run's few-shot validation split (official: the whole val split; for
  ImageNet the test set, `val_features = test_features` in main_few_shots.py).
- Classes: only the fitted class list is classified. The official base-to-new script
  (`main_base2new.py`) fits base classes with another estimator (the mean of the per-class
  covariances) and synthesises new-class Gaussians from the k = 64 training features nearest each
  new text feature; neither is implemented here, so base-to-new is not run with GDA.
- Every class needs training features (official: a class without any gives NaN means).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.base import (
    FrozenImageMixin,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    clip_logits,
    full_precision,
)
from vlprompt.methods.feature_fitting import (
    ClosedSetMixin,
    check_fit_data,
    eval_view_features,
    not_fitted,
    train_view_features,
)
from vlprompt.methods.method_config import MAX_VIEWS, VIEWS_WHY, check_at_most
from vlprompt.methods.registry import register_method
from vlprompt.methods.zeroshot import TemplateEnsembleMixin

if TYPE_CHECKING:
    from vlprompt.data.types import Datum

ALPHA_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # main_few_shots.py `run`


@dataclass
class GDAConfig(MethodConfig):
    """GDA (defaults: the official configs/few_shots/*.yaml and main_few_shots.py)."""

    templates: tuple[str, ...] = field(
        default=(),
        metadata={"help": "an ensemble of templates (ImageNet: 7); empty = the single template"},
    )
    augment_epoch: int = field(
        default=10,
        metadata={"help": "augmented views of every training image, all pooled (official 10)"},
    )
    cache_crop_min_scale: float = field(
        default=0.5,
        metadata={"help": "smallest area fraction of the random crop of the training views"},
    )
    alpha: float = field(
        default=0.1,
        metadata={"help": "weight of the GDA logits when no validation features choose it "
                  "(official start of the search: 0.1)"},
    )  # fmt: skip
    alpha_grid: tuple[float, ...] = field(
        default=ALPHA_GRID,
        metadata={"help": "alpha values searched on the validation features (empty: keep alpha)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.templates = tuple(self.templates)
        self.alpha_grid = tuple(float(a) for a in self.alpha_grid)
        if self.augment_epoch < 1:
            raise MethodError(
                f"augment_epoch must be >= 1 (augmented views of each training image), got "
                f"{self.augment_epoch}"
            )
        check_at_most("augment_epoch", self.augment_epoch, MAX_VIEWS, VIEWS_WHY)
        if not 0 < self.cache_crop_min_scale <= 1:
            raise MethodError(
                f"cache_crop_min_scale must be in (0, 1] (official 0.5), got "
                f"{self.cache_crop_min_scale}"
            )
        if self.alpha < 0 or any(a < 0 for a in self.alpha_grid):
            raise MethodError(
                f"alpha and alpha_grid must be >= 0 (official grid {list(ALPHA_GRID)}), got "
                f"{self.alpha} and {list(self.alpha_grid)}"
            )
        if self.gradient_rule != "none":
            raise MethodError(
                f"gradient_rule must be 'none': GDA takes no gradient steps for a rule to act "
                f"on, got {self.gradient_rule!r}"
            )


# ---- the estimator (the official formulas) -----------------------------------------------------
def class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """mu [C, D]: the mean feature of each class."""
    return torch.stack([features[labels == c].mean(dim=0) for c in range(n_classes)])


def ks_precision(features: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """The official shrunk inverse of the shared covariance [D, D]:
    D * pinv((N' - 1) S + trace(S) I), S = cov of the class-centred features."""
    centred = torch.cat([features[labels == c] - means[c] for c in range(len(means))])
    n, dim = centred.shape
    cov = centred.T.cov()
    eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
    return dim * torch.linalg.pinv((n - 1) * cov + cov.trace() * eye)


def gda_classifier(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [C, D], b [C]) of the Gaussian classifier with the KS precision and uniform prior."""
    means = class_means(features, labels, n_classes)
    precision = ks_precision(features, labels, means)
    weight = means @ precision  # the precision is symmetric: W_c = Sigma^-1 mu_c
    bias = math.log(1.0 / n_classes) - (weight * means).sum(dim=-1) / 2
    return weight, bias


def gda_logits(
    zero_shot: torch.Tensor,
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    return zero_shot + alpha * (features @ weight.T + bias)


def search_alpha(
    zero_shot: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    grid: Sequence[float],
    start: float,
) -> tuple[float, float]:
    """(alpha, validation accuracy in %): the first strict best of `grid`, from (start, 0)."""
    best_alpha, best_acc = start, 0.0
    for alpha in grid:
        pred = gda_logits(zero_shot, features, weight, bias, alpha).argmax(dim=-1)
        acc = 100.0 * int((pred == labels).sum()) / len(labels)
        if acc > best_acc:
            best_alpha, best_acc = alpha, acc
    return best_alpha, best_acc


# ---- the method ---------------------------------------------------------------------------------
@register_method
class GDA(ClosedSetMixin, TemplateEnsembleMixin, FrozenImageMixin, PromptMethod):
    """Zero-shot CLIP plus a Gaussian discriminant classifier of the few-shot features."""

    name: ClassVar[str] = "gda"
    config_class: ClassVar[type[MethodConfig]] = GDAConfig
    needs_training: ClassVar[bool] = False  # fitted in closed form by `fit` / `fit_features`
    classifies_new_classes: ClassVar[bool] = False
    config: GDAConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: GDAConfig) -> None:
        super().__init__(clip, classnames, config)
        n, dim, device = len(self.classnames), clip.embed_dim, clip.device
        self.register_buffer("weight", torch.zeros(n, dim, device=device))
        self.register_buffer("bias", torch.zeros(n, device=device))
        self.register_buffer("alpha", torch.full((), -1.0, device=device))  # < 0: not fitted
        self._text_cache = KeyedCache()

    def class_features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """The class side: zero-shot text features and the fitted classifier (W, b, alpha)."""
        return self.text_features(), self.weight, self.bias, float(self.alpha)

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        if float(self.alpha) < 0:
            raise not_fitted(self.name)
        text, weight, bias, alpha = self.class_side()
        zero_shot = clip_logits(self.clip, image_features, text)
        with full_precision(image_features.device):
            feats = image_features.float()
            return gda_logits(zero_shot.float(), feats, weight, bias, alpha)

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
        """Fit on `augment_epoch` augmented views of the training images (each normalised,
        pooled), alpha chosen on the validation images (test transform)."""
        cfg = self.config
        views = train_view_features(self.clip, train, cfg.augment_epoch, cfg.cache_crop_min_scale,
                                    feature_cache, batch_size, num_workers)  # fmt: skip
        val_f, val_y = eval_view_features(self.clip, val, feature_cache, batch_size, num_workers)
        labels = torch.tensor([d.label for d in train], dtype=torch.long)
        feats = F.normalize(views.float(), dim=-1).reshape(-1, views.shape[-1])
        info = self.fit_features(feats, labels.repeat(views.shape[0]), val_f, val_y)
        log(f"gda: {len(labels)} images x {views.shape[0]} views; alpha {info['alpha']:.4g}, "
            f"validation accuracy {info['val_accuracy']:.4g}")  # fmt: skip

    def fit_features(
        self,
        train_feats: torch.Tensor,
        train_labels: torch.Tensor,
        val_feats: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Fit on normalised features [N, E] (every class present); alpha searched on the
        validation features. Returns alpha and its validation accuracy (nan without them)."""
        device = self.clip.device
        check_fit_data(self.name, train_feats, train_labels, self.classnames)
        feats = train_feats.to(device).float()
        with torch.no_grad(), full_precision(device):
            weight, bias = gda_classifier(feats, train_labels.to(device), len(self.classnames))
            alpha, accuracy = self.config.alpha, math.nan
            if val_feats is not None and val_labels is not None and len(val_labels) > 0:
                val_f = val_feats.to(device).float()
                zero_shot = clip_logits(self.clip, val_f, self.text_features()).float()
                alpha, accuracy = search_alpha(
                    zero_shot, val_f, val_labels.to(device), weight, bias,
                    self.config.alpha_grid, self.config.alpha,
                )  # fmt: skip
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        self.alpha.fill_(alpha)
        return {"alpha": alpha, "val_accuracy": accuracy}
