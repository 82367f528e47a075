"""Linear probe CLIP (Radford et al., 2021; CoOp's `lpclip/linear_probe.py`).

L2-regularised multinomial logistic regression (scikit-learn, L-BFGS, max_iter 1000) on frozen,
L2-normalised image features. The inverse regularisation C is chosen on the validation split the
way CoOp's `lpclip` does: a coarse sweep over C in {1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6}, then
`search_steps` rounds of bisection in log10(C) between 0.1x and 10x the best coarse value (each
round fits both ends and keeps the better half, ties to the smaller C); the classifier of the last
round is kept, as in the official script. Without validation features C = `default_c`.

The fitted weights are stored as tensors (`weight` [C, E], `bias` [C]) so the probe saves as
safetensors and classifies with `forward` / `logits_from_features` like every method.

The reference is CoOp's `lpclip` (KaiyangZhou/CoOp `lpclip/feat_extractor.py`,
`lpclip/linear_probe.py`), which follows the linear probe of OpenAI's CLIP paper.

Departures from the official code, on purpose:
- Precision: the official features are fp16: `lpclip/feat_extractor.py` loads CLIP with
  `clip.load("RN50", "cuda", jit=False)`, which keeps OpenAI's fp16 weights on CUDA (`clip/clip.py`
  `load` casts to fp32 on the CPU only); they are saved with `.tolist()` in an npz, so
  scikit-learn fits float64 arrays of fp16 values (no precision setting). Here the features are
  encoded in fp32 (outside autocast, through the feature cache) and reach scikit-learn as fp32
  arrays; the stored weights and the logits are fp32.
- CoOp's `lpclip` fits unnormalised features; we normalise them so the probe shares the feature
  cache and `logits_from_features` contract of the other methods (the C sweep absorbs the scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.base import (
    FrozenImageMixin,
    MethodConfig,
    PromptMethod,
    full_precision,
    validate_classnames,
)
from vlprompt.methods.method_config import check_at_most
from vlprompt.methods.registry import register_method
from vlprompt.methods.saving import read_method_info

if TYPE_CHECKING:
    from vlprompt.data.types import Datum

COARSE_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # CoOp lpclip's initial search list


BISECTION_WHY = (
    "each round halves an interval of log10(C) of width 2; after about 50 rounds a double "
    "no longer tells its ends apart; CoOp's search uses 8"
)


@dataclass
class LinearProbeConfig(MethodConfig):
    """Linear probe (defaults: CoOp's lpclip search)."""

    c_grid: tuple[float, ...] = field(
        default=COARSE_C, metadata={"help": "coarse sweep over the inverse regularisation C"}
    )
    search_steps: int = field(
        default=8, metadata={"help": "bisection rounds in log10(C) around the best coarse value"}
    )
    max_iter: int = field(default=1000, metadata={"help": "L-BFGS iterations per fit"})
    default_c: float = field(
        default=1.0, metadata={"help": "C used when no validation features are given"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.c_grid = tuple(float(c) for c in self.c_grid)
        if not self.c_grid or min(self.c_grid) <= 0:
            raise MethodError(f"c_grid must hold positive values, got {self.c_grid}")
        if self.search_steps < 0:
            raise MethodError(f"search_steps must be >= 0, got {self.search_steps}")
        check_at_most("search_steps", self.search_steps, 64, BISECTION_WHY)
        if self.max_iter < 1:
            raise MethodError(f"max_iter must be >= 1 (L-BFGS iterations), got {self.max_iter}")
        check_at_most("max_iter", self.max_iter, 100_000, "L-BFGS iterations per fit; CoOp's 1000")
        if self.default_c <= 0:
            raise MethodError(
                f"default_c must be > 0 (the inverse regularisation C), got {self.default_c}"
            )


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


@register_method
class LinearProbe(FrozenImageMixin, PromptMethod):
    """Logistic regression on frozen CLIP image features; classifies only its fitted classes."""

    name: ClassVar[str] = "linear_probe"
    config_class: ClassVar[type[MethodConfig]] = LinearProbeConfig
    needs_training: ClassVar[bool] = False  # fitted in closed form by `fit` / `fit_features`
    classifies_new_classes: ClassVar[bool] = False  # one weight row per fitted class
    config: LinearProbeConfig

    def __init__(
        self, clip: ClipBackbone, classnames: list[str], config: LinearProbeConfig
    ) -> None:
        super().__init__(clip, classnames, config)
        n, dim = len(self.classnames), clip.embed_dim
        self.register_buffer("weight", torch.zeros(n, dim, device=clip.device))
        self.register_buffer("bias", torch.zeros(n, device=clip.device))
        self.register_buffer("c_value", torch.zeros((), device=clip.device))  # 0 = not fitted

    # ---- fitting -----------------------------------------------------------------------------
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
        """Fit on the frozen image features of the training and validation images, encoded
        with the test transform (the CLIP paper's probe) through `feature_cache`."""
        from vlprompt.data import transform_for
        from vlprompt.feature_cache import encode_images_cached

        transform = transform_for(self.clip, train=False)
        train_f, train_y = encode_images_cached(
            self.clip, train, transform, feature_cache, batch_size, num_workers
        )
        val_f, val_y = encode_images_cached(
            self.clip, val, transform, feature_cache, batch_size, num_workers
        )
        log(
            f"fitting the linear probe on {len(train_y)} training / {len(val_y)} validation features"
        )
        self.fit_features(train_f, train_y, val_f, val_y)

    def _fit(self, x: np.ndarray, y: np.ndarray, c: float) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, max_iter=self.config.max_iter).fit(x, y)

    @staticmethod
    def _accuracy(clf: Any, x: np.ndarray, y: np.ndarray) -> float:
        return float((clf.predict(x) == y).mean())

    def fit_features(
        self,
        train_feats: torch.Tensor,
        train_labels: torch.Tensor,
        val_feats: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Fit on normalised image features [N, E] with labels in [0, classes); choose C on the
        validation features. Returns {"c": chosen C, "val_accuracy": its accuracy (or nan)}."""
        x = _as_numpy(nn.functional.normalize(train_feats.float(), dim=-1))
        y = train_labels.detach().cpu().numpy().astype(np.int64)
        n_cls = len(self.classnames)
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise MethodError(
                f"linear probe: {x.shape[0]} training features but {y.shape[0]} labels (need "
                "the same non-zero number)"
            )
        missing = sorted(set(range(n_cls)) - set(y.tolist()))
        if missing or y.min() < 0 or y.max() >= n_cls:
            raise MethodError(
                f"linear probe: training labels must cover every class 0..{n_cls - 1} exactly; "
                f"classes without examples: {[self.classnames[i] for i in missing[:5]]}"
            )
        if val_feats is None or val_labels is None or len(val_labels) == 0:
            c, acc, clf = self.config.default_c, math.nan, self._fit(x, y, self.config.default_c)
        else:
            xv = _as_numpy(nn.functional.normalize(val_feats.float(), dim=-1))
            yv = val_labels.detach().cpu().numpy().astype(np.int64)
            c, acc, clf = self._search(x, y, xv, yv)
        self._store(clf, n_cls, c)
        return {"c": c, "val_accuracy": acc}

    def _search(self, x, y, xv, yv) -> tuple[float, float, Any]:
        """CoOp lpclip's coarse sweep then log-space bisection; the last round's fit is kept."""
        scores = [self._accuracy(self._fit(x, y, c), xv, yv) for c in self.config.c_grid]
        peak = self.config.c_grid[int(np.argmax(scores))]  # first best, like np.argmax there
        if self.config.search_steps == 0:
            clf = self._fit(x, y, peak)
            return peak, self._accuracy(clf, xv, yv), clf
        lo, hi = math.log10(peak) - 1.0, math.log10(peak) + 1.0
        for _ in range(self.config.search_steps):
            left, right = self._fit(x, y, 10**lo), self._fit(x, y, 10**hi)
            acc_l, acc_r = self._accuracy(left, xv, yv), self._accuracy(right, xv, yv)
            if acc_l < acc_r:
                c, acc, clf = 10**hi, acc_r, right
                lo = 0.5 * (lo + hi)
            else:
                c, acc, clf = 10**lo, acc_l, left
                hi = 0.5 * (lo + hi)
        return c, acc, clf

    def _store(self, clf: Any, n_cls: int, c: float) -> None:
        coef = torch.as_tensor(clf.coef_, dtype=torch.float32)
        intercept = torch.as_tensor(clf.intercept_, dtype=torch.float32)
        if n_cls == 2:  # binary: sklearn keeps one row z; softmax([0, z]) = sigmoid(z)
            coef = torch.cat([torch.zeros_like(coef), coef])
            intercept = torch.cat([torch.zeros_like(intercept), intercept])
        order = torch.as_tensor(clf.classes_, dtype=torch.long)
        weight = torch.zeros(n_cls, coef.shape[1])
        bias = torch.zeros(n_cls)
        weight[order], bias[order] = coef, intercept
        device = self.weight.device
        self.weight.copy_(weight.to(device))
        self.bias.copy_(bias.to(device))
        self.c_value.fill_(c)

    # ---- classifying -------------------------------------------------------------------------
    def class_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fitted classifier: weights [C, E] and biases [C]."""
        return self.weight, self.bias

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        if float(self.c_value) == 0.0:
            raise MethodError("the linear probe is not fitted: call fit_features(...) first")
        weight, bias = self.class_side()
        x = nn.functional.normalize(image_features.float(), dim=-1)
        with full_precision(x.device):  # the fitted fp32 classifier, under autocast too
            return x @ weight.t() + bias

    def set_classnames(self, classnames: list[str]) -> None:
        names = validate_classnames(classnames)
        if names != self.classnames:
            raise MethodError(
                "a linear probe classifies only the classes it was fitted on "
                f"({len(self.classnames)} classes, e.g. {self.classnames[:3]}); it cannot score "
                "other or reordered class lists (e.g. base-to-new 'new' classes) — use a "
                "prompt method (zsclip, coop, ...) for those"
            )

    @classmethod
    def load(
        cls, directory: str | Path, clip: ClipBackbone, classnames: list[str] | None = None
    ) -> PromptMethod:
        saved = read_method_info(directory).get("classnames")
        if classnames is not None and list(classnames) != saved:
            raise MethodError(
                f"{directory}: this linear probe was fitted on {len(saved)} other classes and "
                "cannot classify the given class list; load it without class names"
            )
        return super().load(directory, clip, classnames)
