"""LP++ (Huang, Shakeri et al., CVPR 2024, "LP++: A Surprisingly Strong Linear Probe for Few-Shot
CLIP"; official code FereshteShakeri/FewShot-CLIP-Strong-Baseline `methods/linear_probe_p2.py`
(`LinearProbe_P2`), `methods/utils.py` (`compute_centroids`, `compute_centroids_alpha`),
`main.py`, `main_imagenet.py`, `utils.py` (`clip_classifier`), `configs/base.yaml`, at
commit f81054f995b060f8348d20e7306e15889b70c786).

A linear probe on the normalised CLIP image features f whose class weights are blended with the
text embeddings t_c (unscaled cosine, no logit scale):
    logits_c = f . w_c + b_c + alpha_c * (f . t_c),
trained full-batch on the N training features, with the official data-driven step sizes:
- init: w_c = the *sum* of class c's features (`compute_centroids` keeps the division commented
  out), b = PyTorch's `nn.Linear` bias init U(-1/sqrt(E), 1/sqrt(E)); every alpha_c = 250 times
  the mean over classes of the mean cosine f . t_c of class c's features (`calculate_init_alpha`:
  250 / shots * (shots * class mean));
- w, b: SGD (momentum 0.9) at lr_w = 4 N / lambda_max(F^T F) (`calculate_lr_w`);
- alpha: every 10 epochs, alpha -= lr_alpha * alpha.grad with lr_alpha = N / (4 max_c
  sum_n (f_n . t_c)^2) (`calculate_lr_alpha`). alpha's gradient is never zeroed (the optimizer
  holds w and b only), so the step uses the gradient summed over every epoch so far: kept as the
  official code does it;
- 300 full-batch epochs (configs/base.yaml `train_epoch`), cross-entropy; after each epoch the
  validation accuracy is measured and the classifier of the last epoch with the best accuracy
  (`>=`) is kept (the official code tests that epoch's classifier).
The training features are one randomly augmented view of every training image
(RandomResizedCrop scale 0.5-1, bicubic, flip: main.py's `train_tranform`), the validation ones
the test transform's. Templates: Tip-Adapter's per-data-set table (datasets/*.py), ImageNet's
7-template ensemble, ensembled as `clip_classifier` does (normalised, averaged, renormalised).

Learned (buffers filled by `fit`; `num_trainable_parameters()` is 0): w [C, E], b [C], alpha [C].

Checked against the official code (/tmp, not in this repository: `LinearProbe_P2.forward` from
methods/linear_probe_p2.py with methods/utils.py and methods/method.py, CUDA calls removed, the
one-hot of `get_one_hot` in fp32 instead of fp16; a stub CLIP returning the same random
normalised training (5 classes x 4 shots), validation (20) and test (60) features of width 32,
the same text features and the official classifier's initial bias given to ours), fp32, all 300
epochs: the same kept epoch, every epoch's loss <= 3.6e-7 (loss up to 1.7), the gradients of w
<= 1.1e-8, of b <= 3.0e-8 and of alpha (summed as there) <= 9.3e-9, the test logits <= 1.2e-5
(logits up to 62).

Departures from the official code, on purpose:
- Precision: fp32 throughout (official: CLIP's fp16 model dtype for the features, the classifier
  and alpha, with no precision setting: `main.py` / `main_imagenet.py` load CLIP with
  `clip.load(cfg['backbone'])`, which keeps OpenAI's fp16 weights on CUDA, and
  `methods/linear_probe_p2.py` makes the classifier and alpha `.to(model.dtype)`).
- The initial bias comes from a generator seeded with the run's seed (official: the global RNG).
- lambda_max by torch's `eigvalsh` (official: scipy's `eigh` of the same fp32 matrix).
- The epoch is chosen on the run's few-shot validation split (official: `shots` validation
  images per class, main.py `generate_fewshot_dataset_(shots, split="val")`; for ImageNet `shots`
  more *training* images per class under the training augmentation, datasets/imagenet.py
  `generate_fewshot_dataset`); without validation features the last epoch is kept.
- Only the fitted class list is classified (one learned row per class; the official code has no
  new-class rule), and every class needs training features (official: the class count is
  N / shots).
"""

from __future__ import annotations

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
    full_precision,
)
from vlprompt.methods.feature_fitting import (
    ClosedSetMixin,
    check_fit_data,
    eval_view_features,
    not_fitted,
    run_seed,
    train_view_features,
)
from vlprompt.methods.method_config import EPOCHS_WHY, MAX_EPOCHS, check_at_most
from vlprompt.methods.registry import register_method
from vlprompt.methods.zeroshot import TemplateEnsembleMixin

if TYPE_CHECKING:
    from vlprompt.data.types import Datum

INIT_ALPHA_SCALE = 250.0  # calculate_init_alpha: 250 / shots * (shots * class mean)


@dataclass
class LPPlusPlusConfig(MethodConfig):
    """LP++ (defaults: the official configs/base.yaml and linear_probe_p2.py)."""

    templates: tuple[str, ...] = field(
        default=(),
        metadata={"help": "an ensemble of templates (ImageNet: 7); empty = the single template"},
    )
    epochs: int = field(
        default=300, metadata={"help": "full-batch training epochs (official train_epoch 300)"}
    )
    momentum: float = field(
        default=0.9, metadata={"help": "SGD momentum of the visual weights and bias (official 0.9)"}
    )
    alpha_every: int = field(
        default=10,
        metadata={"help": "epochs between the gradient steps of the blending weights alpha "
                  "(official 10)"},
    )  # fmt: skip
    cache_crop_min_scale: float = field(
        default=0.5,
        metadata={"help": "smallest area fraction of the random crop of the training view"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.templates = tuple(self.templates)
        if self.alpha_every < 1:
            raise MethodError(
                f"alpha_every must be >= 1 (epochs between alpha steps; official 10), got "
                f"{self.alpha_every}"
            )
        check_at_most("alpha_every", self.alpha_every, MAX_EPOCHS, EPOCHS_WHY)
        if not 0 < self.cache_crop_min_scale <= 1:
            raise MethodError(
                f"cache_crop_min_scale must be in (0, 1] (official 0.5), got "
                f"{self.cache_crop_min_scale}"
            )
        if self.gradient_rule != "none":
            raise MethodError(
                f"gradient_rule must be 'none': LP++ trains inside fit with its own step sizes, "
                f"got {self.gradient_rule!r}"
            )


# ---- the official formulas ----------------------------------------------------------------------
def lp_logits(
    feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, alpha: torch.Tensor,
    text: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """f @ w^T + b + alpha * (f @ t^T): [B, C]."""
    return feats @ weight.T + bias + alpha * (feats @ text.T)


def class_sums(feats: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The sum of each class's features [C, E] (`compute_centroids`)."""
    return F.one_hot(labels, n_classes).to(feats.dtype).T @ feats


def init_alpha(feats: torch.Tensor, labels: torch.Tensor, text: torch.Tensor) -> float:
    """250 x the mean over classes of the class-mean cosine to the own text embedding."""
    n_classes = len(text)
    one_hot = F.one_hot(labels, n_classes).to(feats.dtype)
    own = (one_hot * (feats @ text.T)).sum(dim=0) / one_hot.sum(dim=0)  # [C]
    return float(INIT_ALPHA_SCALE * own.double().mean())


def lr_visual(feats: torch.Tensor) -> float:
    """4 N / the largest eigenvalue of F^T F."""
    return 4 * feats.shape[0] / float(torch.linalg.eigvalsh(feats.T @ feats).max())


def lr_blend(feats: torch.Tensor, text: torch.Tensor) -> float:
    """N / (4 max_c sum_n (f_n . t_c)^2)."""
    return feats.shape[0] / (4 * float((feats @ text.T).pow(2).sum(dim=0).max()))


@dataclass
class Fitted:
    weight: torch.Tensor
    bias: torch.Tensor
    alpha: torch.Tensor
    epoch: int
    val_accuracy: float


def train_lp(
    feats: torch.Tensor,
    labels: torch.Tensor,
    text: torch.Tensor,
    init_bias: torch.Tensor,
    config: LPPlusPlusConfig,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    on_epoch: Callable[..., None] = lambda *_: None,
) -> Fitted:
    """The official training loop (`LinearProbe_P2.forward`), returning the kept classifier;
    `on_epoch(epoch, loss, weight, bias, alpha)` sees each epoch's loss and tensors (with their
    gradients) after the steps."""
    weight = nn.Parameter(class_sums(feats, labels, len(text)))
    bias = nn.Parameter(init_bias.clone())
    alpha = torch.full((len(text),), init_alpha(feats, labels, text), requires_grad=True)
    step_alpha = lr_blend(feats, text)
    optimizer = torch.optim.SGD([weight, bias], lr=lr_visual(feats), momentum=config.momentum)
    best: Fitted | None = None
    for epoch in range(config.epochs):
        loss = F.cross_entropy(lp_logits(feats, weight, bias, alpha, text), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (epoch + 1) % config.alpha_every == 0:
            alpha.data -= step_alpha * alpha.grad  # the gradient summed since the start
        on_epoch(epoch, loss.item(), weight, bias, alpha)
        acc = math.nan
        if val is not None:
            with torch.no_grad():
                pred = lp_logits(val[0], weight, bias, alpha, text).argmax(dim=-1)
            acc = 100.0 * int((pred == val[1]).sum()) / len(val[1])
        if best is None or val is None or acc >= best.val_accuracy:
            best = Fitted(weight.detach().clone(), bias.detach().clone(),
                          alpha.detach().clone(), epoch + 1, acc)  # fmt: skip
    assert best is not None
    return best


# ---- the method ---------------------------------------------------------------------------------
@register_method
class LPPlusPlus(ClosedSetMixin, TemplateEnsembleMixin, FrozenImageMixin, PromptMethod):
    """A linear probe blended class-wise with the text embeddings, data-driven step sizes."""

    name: ClassVar[str] = "lp_plus_plus"
    config_class: ClassVar[type[MethodConfig]] = LPPlusPlusConfig
    needs_training: ClassVar[bool] = False  # trained inside `fit` / `fit_features`
    classifies_new_classes: ClassVar[bool] = False
    config: LPPlusPlusConfig

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: LPPlusPlusConfig):
        super().__init__(clip, classnames, config)
        n, dim, device = len(self.classnames), clip.embed_dim, clip.device
        self.register_buffer("weight", torch.zeros(n, dim, device=device))
        self.register_buffer("bias", torch.zeros(n, device=device))
        self.register_buffer("alpha", torch.zeros(n, device=device))
        self.register_buffer("fitted_epoch", torch.zeros((), device=device))  # 0: not fitted
        self._text_cache = KeyedCache()

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        if float(self.fitted_epoch) == 0:
            raise not_fitted(self.name)
        text, weight, bias, alpha = self.class_side()
        with full_precision(image_features.device):
            return lp_logits(image_features.float(), weight, bias, alpha, text)

    def class_features(self) -> tuple[torch.Tensor, ...]:
        """The class side: zero-shot text features and the fitted probe (W, b, per-class alpha)."""
        return self.text_features(), self.weight, self.bias, self.alpha

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
        """Train on one augmented view of the training images (normalised), the epoch chosen on
        the validation images (test transform)."""
        views = train_view_features(self.clip, train, 1, self.config.cache_crop_min_scale,
                                    feature_cache, batch_size, num_workers)  # fmt: skip
        val_f, val_y = eval_view_features(self.clip, val, feature_cache, batch_size, num_workers)
        labels = torch.tensor([d.label for d in train], dtype=torch.long)
        info = self.fit_features(F.normalize(views[0].float(), dim=-1), labels, val_f, val_y)
        log(f"lp_plus_plus: {len(labels)} training features; kept epoch {info['epoch']:.0f}, "
            f"validation accuracy {info['val_accuracy']:.4g}")  # fmt: skip

    def fit_features(
        self,
        train_feats: torch.Tensor,
        train_labels: torch.Tensor,
        val_feats: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Train on normalised features [N, E] (every class present). Returns the kept epoch,
        its validation accuracy (nan without validation features) and the step sizes."""
        device = self.clip.device
        check_fit_data(self.name, train_feats, train_labels, self.classnames)
        feats, labels = train_feats.to(device).float(), train_labels.to(device).long()
        val = None
        if val_feats is not None and val_labels is not None and len(val_labels) > 0:
            val = (val_feats.to(device).float(), val_labels.to(device).long())
        bound = 1 / math.sqrt(feats.shape[1])  # nn.Linear's bias init
        generator = torch.Generator().manual_seed(run_seed())
        init_bias = (torch.rand(len(self.classnames), generator=generator) * 2 - 1) * bound
        text = self.text_features()
        with full_precision(device), torch.enable_grad():
            fitted = train_lp(feats, labels, text, init_bias.to(device), self.config, val)
        self.weight.copy_(fitted.weight)
        self.bias.copy_(fitted.bias)
        self.alpha.copy_(fitted.alpha)
        self.fitted_epoch.fill_(fitted.epoch)
        return {"epoch": fitted.epoch, "val_accuracy": fitted.val_accuracy,
                "lr_w": lr_visual(feats), "lr_alpha": lr_blend(feats, text)}  # fmt: skip
