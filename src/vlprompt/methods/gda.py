"""GDA (Wang et al., ICLR 2024, "A Hard-to-Beat Baseline for Training-free CLIP-based
Adaptation"; official code mrflogs/ICLR24 `main_few_shots.py` `run`, `main_base2new.py` `run`,
`utils.py` `clip_classifier`, `configs/few_shots/*.yaml`, `configs/base2new/*.yaml`,
`datasets/*.py`, at commit 560fe211700964c915442ff98dbe47dd09656a35).

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

Base-to-new (main_base2new.py `run`): the base classes are fitted as above, but with
`covariance="class_mean"`: Sigma^-1 = pinv(mean over classes of each class's `cov`), no shrinkage;
alpha is searched on them. A class it did not fit gets a synthesised Gaussian
(`synthesized_gaussians`), from the stored training features V (all views, normalised) and the
class's normalised text feature t: X = its k = 64 rows of V with the largest X t (topk), mean
mu = mean of [X; 16 copies of t], S = (X - t)^T (X - t) / (k - 1) (centred on t, not on mu), and
one precision for the new classes, the average over them of D * pinv((k - 1) S + trace(S) I);
then W, b as above with the uniform prior over the new list, and the base classes' alpha.
`set_classnames` synthesises the rows of a new list once (and keeps them for that list):
- the official hard-codes 512 for D (`512 * pinv(...)`, `torch.eye(512)`): D is the feature width
  here, the same on ViT-B/16 (512); the official code fails on any other width;
- a list mixing fitted and unfitted classes (the official evaluates pure new lists only): a
  fitted class keeps its fitted row, the unfitted ones get the synthesis over the unfitted
  classes of the list, every row with the uniform prior over the whole list (log 1/C); on a
  subset or reordering of the fitted classes this is the fitted classifier (its bias shifted by
  a constant; ImageNet-A/-R's 200 classes where named as in the fitted list).

Official few-shot config (configs/few_shots/*.yaml): augment_epoch 10 (every data set), shots 1,
2, 4, 8, 16, seeds 1-3 (main_few_shots.py); the alpha grid is hard-coded in `run`. Templates:
the same per-data-set table as Tip-Adapter's (datasets/*.py), ImageNet's 7-template ensemble.

Learned (buffers filled by `fit`, so `num_trainable_parameters()` is 0): W [C, E], b [C],
alpha and the normalised training features [N x augment_epoch, E] the new-class synthesis reads,
saved with them (safetensors, fp32): at 16 shots x 100 classes x 10 views x 512 dims, 8,192,000
values, a 32,973,492-byte prompts.safetensors (measured: `fit_features` on 16,000 random features
of ViT-B/16's width, then `save`); 16-shot ImageNet (1,000 classes) stores ten times that.

Checked against the official code (/tmp, not in this repository: the body of `run` from
main_few_shots.py with its CUDA calls removed, `cls_acc` from utils.py; a stub CLIP returning the
same random view features, 6 classes x 5 images x 3 views of width 32, unnormalised (`run`
normalises them), with the same random text, validation (40) and test (50) features), fp32: W
<= 2.1e-6 (|W| up to 2.5), b <= 2.4e-7, the same alpha chosen (1e-4) and the test logits
bit-equal at it; with both classifiers at alpha 1 and 100 the logits differ by <= 3.8e-6 and
2.0e-4 (logits up to 46 and 464: the pinv of the same fp32 matrix, summed in another order).

Base-to-new checked against the official code the same way (/tmp: the body of `run` from
main_base2new.py with `.cuda()` removed, `cls_acc` from utils.py (its `float(array)` made
`float(array[0])` for today's NumPy); a stub CLIP returning the same random unnormalised view
features, 10 base classes x 16 images x 4 views of width 512 (the official needs D = 512), the
same random base and new text features (8 new classes), 50 validation, 60 base and 64 new test
features; ours built on ViT-B/16's shapes with logit_scale exp(log 100), covariance class_mean,
three random draws), fp32: the same alpha chosen (1, 0.1, 0.1), base W bit-equal, base b
<= 1.1e-4 (|b| up to 162), base logits <= 9.2e-5 (up to 492); new W <= 2.0e-5 (|W| up to 11),
new b <= 7.6e-6 (up to 12.6), new logits <= 1.4e-5 (up to 32), at alpha 100 <= 1.3e-3 (up to
2.2e3; relative 6e-7), the same base and new accuracies. The differences are the summation order
(one pinv per chunk of classes, summed, vs the official stack and mean) and CLIP's logit scale
100.0000076 vs the official literal 100.

alpha is searched on the whole val split, as the official code does (`val_split="whole"`;
`"few-shot"` searches CoOp's min(shots, 4) per class). ImageNet's val split is its test set
(CoOp's), as the official `val_features = test_features` (main_few_shots.py) and `val_loader` of
the test set (main_base2new.py).

Departures from the official code, on purpose:
- Precision: fp32 throughout. Official: fp32 too (no precision setting), but for the
  test/validation features of the first (seed, shots) iteration, encoded by CLIP in fp16
  (`main_few_shots.py`: `clip.load(cfg['backbone'])` keeps OpenAI's fp16 weights on CUDA) before
  `clip_classifier(..., clip_model.float())` turns the model to fp32 for good.
- The zero-shot logits use the backbone's `logit_scale` (100 for CLIP; official: a literal 100).
- The default covariance is the few-shot one (ks) in every protocol; the official base-to-new
  script uses class_mean for the base classes: `--preset gda_base2new` sets it.
- D for the official 512 and the choice for mixed class lists: see "Base-to-new" above.
- More new-class neighbours than stored features (new_class_topk > N x views) is an error
  naming the setting (official: torch.topk fails).
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
    check_fit_data,
    eval_view_features,
    not_fitted,
    train_view_features,
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

if TYPE_CHECKING:
    from vlprompt.data.types import Datum

ALPHA_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # main_few_shots.py `run`
COVARIANCES = ("ks", "class_mean")  # main_few_shots.py, main_base2new.py (base classes)
NEW_CLASS_CHUNK = 64  # new classes whose [D, D] scatter matrices are inverted at once


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
    val_split: str = val_split_field("whole")
    covariance: str = field(
        default="ks",
        metadata={"help": "the fitted classes' shared covariance: ks (main_few_shots.py: the "
                  "KS-shrunk covariance of the class-centred features) or class_mean "
                  "(main_base2new.py: the pinv of the mean per-class covariance)"},
    )  # fmt: skip
    new_class_topk: int = field(
        default=64,
        metadata={"help": "a class it did not fit: the stored training features nearest its "
                  "text feature that make its Gaussian (main_base2new.py k = 64)"},
    )  # fmt: skip
    new_class_text_copies: int = field(
        default=16,
        metadata={"help": "copies of a new class's text feature averaged into its mean with "
                  "its top-k features (main_base2new.py 16; 0: the neighbours alone)"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        self.templates = tuple(self.templates)
        self.alpha_grid = tuple(float(a) for a in self.alpha_grid)
        check_val_split(self.val_split)
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
        if self.covariance not in COVARIANCES:
            raise MethodError(
                f"covariance must be one of {', '.join(COVARIANCES)} (ks: few-shot, class_mean: "
                f"the official base-to-new base classes), got {self.covariance!r}"
            )
        if self.new_class_topk < 2:
            raise MethodError(
                f"new_class_topk must be >= 2 (a new class's covariance divides by k - 1; "
                f"official 64), got {self.new_class_topk}"
            )
        if self.new_class_text_copies < 0:
            raise MethodError(
                f"new_class_text_copies must be >= 0 (official 16), got "
                f"{self.new_class_text_copies}"
            )
        check_at_most("new_class_topk", self.new_class_topk, 1_000_000,
                      "more neighbours than 16 shots of 1000 classes in 100 views hold")  # fmt: skip
        check_at_most("new_class_text_copies", self.new_class_text_copies, 100_000,
                      "copies of the text feature in a new class's mean; official 16")  # fmt: skip
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


def class_mean_precision(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """The official base-to-new inverse of the shared covariance [D, D] (main_base2new.py):
    pinv of the mean of the per-class covariances (N_c - 1 in each denominator)."""
    total = sum(features[labels == c].T.cov() for c in range(n_classes))
    return torch.linalg.pinv(total / n_classes)


def discriminant(
    means: torch.Tensor, precision: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [C, D], b [C]): W_c = Sigma^-1 mu_c, b_c = log(1 / n_classes) - mu_c^T Sigma^-1 mu_c / 2
    (the precision is symmetric)."""
    weight = means @ precision
    bias = math.log(1.0 / n_classes) - (weight * means).sum(dim=-1) / 2
    return weight, bias


def gda_classifier(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, covariance: str = "ks"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [C, D], b [C]) of the Gaussian classifier with the shared precision of `covariance`
    (ks or class_mean) and a uniform prior."""
    means = class_means(features, labels, n_classes)
    if covariance == "class_mean":
        precision = class_mean_precision(features, labels, n_classes)
    else:
        precision = ks_precision(features, labels, means)
    return discriminant(means, precision, n_classes)


def synthesized_gaussians(
    train_feats: torch.Tensor, text: torch.Tensor, k: int, copies: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official new-class Gaussians (main_base2new.py), from the stored training features
    [N, D] and the new classes' normalised text features [C, D]: (means [C, D], precision [D, D]).
    Each class: X its k training features nearest its text feature t (largest X t), its mean
    the mean of X and `copies` copies of t, S = (X - t)^T (X - t) / (k - 1) (centred on t); the
    precision D * pinv((k - 1) S + trace(S) I), averaged over the classes."""
    n, dim = train_feats.shape
    if k > n:
        raise MethodError(
            f"gda: new_class_topk {k} exceeds the {n} stored training features (shots x classes "
            f"x augment_epoch); set new_class_topk <= {n} to classify classes it did not fit"
        )
    nearest = (text @ train_feats.T).topk(k, dim=-1).indices  # [C, k]
    means = torch.cat([train_feats[nearest], text[:, None].expand(-1, copies, -1)], dim=1)
    eye = torch.eye(dim, dtype=train_feats.dtype, device=train_feats.device)
    total = torch.zeros(dim, dim, dtype=train_feats.dtype, device=train_feats.device)
    for start in range(0, len(text), NEW_CLASS_CHUNK):
        rows = slice(start, start + NEW_CLASS_CHUNK)
        centred = train_feats[nearest[rows]] - text[rows, None]  # [c, k, D]
        cov = centred.transpose(1, 2) @ centred / (k - 1)
        trace = cov.diagonal(dim1=1, dim2=2).sum(dim=-1)[:, None, None]
        total += (dim * torch.linalg.pinv((k - 1) * cov + trace * eye)).sum(dim=0)
    return means.mean(dim=1), total / len(text)


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
class GDA(OwnClassesMixin, TemplateEnsembleMixin, FrozenImageMixin, PromptMethod):
    """Zero-shot CLIP plus a Gaussian discriminant classifier of the few-shot features; classes it
    did not fit get Gaussians synthesised from the stored training features."""

    name: ClassVar[str] = "gda"
    own_classes_text: ClassVar[str] = "the classes it was fitted on (the rows of its weight)"
    config_class: ClassVar[type[MethodConfig]] = GDAConfig
    needs_training: ClassVar[bool] = False  # fitted in closed form by `fit` / `fit_features`
    new_classes_note: ClassVar[str | None] = (
        "a class it did not fit gets a Gaussian synthesised from the 64 stored base-class "
        "training features nearest its text feature (mean with 16 copies of that feature, "
        "KS-shrunk precision averaged over the new classes) with the base classes' alpha, as "
        "the official main_base2new.py"
    )
    config: GDAConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: GDAConfig) -> None:
        super().__init__(clip, classnames, config)
        n, dim, device = len(self.classnames), clip.embed_dim, clip.device
        self.register_buffer("weight", torch.zeros(n, dim, device=device))
        self.register_buffer("bias", torch.zeros(n, device=device))
        self.register_buffer("alpha", torch.full((), -1.0, device=device))  # < 0: not fitted
        # the normalised training features [N x views, E], kept for classes it did not fit
        self.register_buffer("train_features", torch.zeros(0, dim, device=device))
        self.fitted_classnames = list(self.classnames)  # the rows of weight and bias
        self._text_cache = KeyedCache()
        self._rows_cache = KeyedCache()

    # ---- classes: fitted rows, synthesised rows --------------------------------------------
    def set_classnames(self, classnames: list[str]) -> None:
        """Point the method at `classnames`: a class it fitted keeps its fitted row, any other
        class gets a row synthesised now (`synthesized_gaussians` over the list's unfitted
        classes). Every row's prior is uniform over the whole list."""
        super().set_classnames(classnames)
        if float(self.alpha) >= 0:
            self.class_rows()

    def class_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W [C, E], b [C]) of the current class list: the fitted buffers on the fitted list,
        otherwise computed once per list and kept."""
        if self.classnames == self.fitted_classnames:
            return self.weight, self.bias
        stored = self.train_features
        key = (tuple(self.classnames), stored.data_ptr(), stored._version, self.weight._version)
        return self._rows_cache.get(key, self._mixed_rows)

    def _mixed_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        fitted = {name: i for i, name in enumerate(self.fitted_classnames)}
        old = [i for i, name in enumerate(self.classnames) if name in fitted]
        new = [i for i, name in enumerate(self.classnames) if name not in fitted]
        n_cls, device = len(self.classnames), self.weight.device
        weight = torch.zeros(n_cls, self.weight.shape[1], device=device)
        bias = torch.zeros(n_cls, device=device)
        with torch.no_grad(), full_precision(device):
            if old:
                rows = torch.tensor([fitted[self.classnames[i]] for i in old], device=device)
                weight[old] = self.weight[rows]
                prior = math.log(len(self.fitted_classnames) / n_cls)  # log(1/C) - log(1/C_fit)
                bias[old] = self.bias[rows] + prior
            if new:
                text = self.text_features()[new].float()
                means, precision = synthesized_gaussians(
                    self.train_features.float(), text, self.config.new_class_topk,
                    self.config.new_class_text_copies,
                )  # fmt: skip
                weight[new], bias[new] = discriminant(means, precision, n_cls)
        return weight, bias

    def class_features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """The class side: zero-shot text features and the current classes' rows (W, b) with
        alpha."""
        weight, bias = self.class_rows()
        return self.text_features(), weight, bias, float(self.alpha)

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
        self.set_classnames(self.fitted_classnames)  # it fits the classes it was built for
        check_fit_data(self.name, train_feats, train_labels, self.classnames)
        self._check_class_sizes(train_labels)
        feats = train_feats.to(device).float()
        with torch.no_grad(), full_precision(device):
            weight, bias = gda_classifier(
                feats, train_labels.to(device), len(self.classnames), self.config.covariance
            )
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
        self.train_features = feats.clone()
        self._rows_cache.clear()
        return {"alpha": alpha, "val_accuracy": accuracy}

    def _check_class_sizes(self, labels: torch.Tensor) -> None:
        """The class_mean covariance needs two features of every class (N_c - 1 > 0)."""
        if self.config.covariance != "class_mean":
            return
        counts = torch.bincount(labels.cpu(), minlength=len(self.classnames))
        single = [self.classnames[i] for i in (counts < 2).nonzero().flatten().tolist()]
        if single:
            raise MethodError(
                f"gda: covariance 'class_mean' needs >= 2 training features per class (a "
                f"class's covariance divides by N_c - 1); only one for {single[:5]}: use "
                "augment_epoch >= 2 or covariance 'ks'"
            )

    # ---- saving --------------------------------------------------------------------------------

    def size_to_saved(self, tensors: dict[str, torch.Tensor]) -> None:
        """The stored training features have as many rows as were saved."""
        rows = tensors["train_features"].shape[0] if "train_features" in tensors else 0
        self.train_features = torch.zeros(rows, self.train_features.shape[1],
                                          device=self.train_features.device)  # fmt: skip
