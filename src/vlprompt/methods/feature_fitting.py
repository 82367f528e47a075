"""What the methods fitted on cached frozen image features share (GDA, LP++, CLAP): the
training views through the feature cache, the checks of the fitted labels, and (LP++, CLAP) the
closed class list of a classifier with one learned row per fitted class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vlprompt.errors import MethodError
from vlprompt.methods.base import validate_classnames
from vlprompt.methods.saving import read_method_info

if TYPE_CHECKING:
    from vlprompt.backbone import ClipBackbone
    from vlprompt.data.types import Datum
    from vlprompt.methods.base import PromptMethod


def run_seed() -> int:
    """The run's seed (vlprompt seeds torch with it before building the method)."""
    return torch.initial_seed() % 2**31


def train_view_features(
    clip: ClipBackbone,
    train: Sequence[Datum],
    n_views: int,
    crop_min_scale: float,
    feature_cache: Any,
    batch_size: int,
    num_workers: int,
) -> torch.Tensor:
    """Unnormalised frozen features [n_views, N, E] of `n_views` random augmentations
    (RandomResizedCrop from `crop_min_scale`, bicubic, flip) of every training image, seeded
    by the run's seed and encoded once through the feature cache (the entry Tip-Adapter's cache
    views use: the same views are encoded once for every method that reads them)."""
    from vlprompt.data import transform_for
    from vlprompt.methods.tip_adapter import augmented_view_features

    transform = transform_for(clip, train=True, crop_min_scale=crop_min_scale)
    return augmented_view_features(
        clip, train, transform, n_views, run_seed(), feature_cache, batch_size, num_workers
    )


def eval_view_features(
    clip: ClipBackbone, items: Sequence[Datum], feature_cache: Any, batch_size: int,
    num_workers: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Normalised features [N, E] of the test transform and the labels [N]."""
    from vlprompt.data import transform_for
    from vlprompt.feature_cache import encode_images_cached

    transform = transform_for(clip, train=False)
    return encode_images_cached(clip, items, transform, feature_cache, batch_size, num_workers)


def check_fit_data(
    name: str, features: torch.Tensor, labels: torch.Tensor, classnames: list[str]
) -> None:
    """Features [N, E] and labels [N] covering every class 0..C-1 (a class without training
    features has no mean / prototype to fit)."""
    if features.ndim != 2 or features.shape[0] != len(labels) or len(labels) == 0:
        raise MethodError(
            f"{name}: {features.shape[0] if features.ndim == 2 else '?'} training features but "
            f"{len(labels)} labels (need the same non-zero number of [N, E] features and labels)"
        )
    n_cls = len(classnames)
    if labels.min() < 0 or labels.max() >= n_cls:
        raise MethodError(
            f"{name}: training labels must lie in 0..{n_cls - 1}, got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    missing = sorted(set(range(n_cls)) - set(labels.tolist()))
    if missing:
        raise MethodError(
            f"{name}: every class needs training features; none for "
            f"{[classnames[i] for i in missing[:5]]}"
        )


def not_fitted(name: str) -> MethodError:
    return MethodError(f"{name} is not fitted: call fit(...) or fit_features(...) first")


class ClosedSetMixin:
    """A classifier with one fitted row per class: it scores only the class list it was fitted
    on (the official code has no new-class rule). Mix in before `PromptMethod`."""

    classifies_new_classes = False

    def set_classnames(self: Any, classnames: list[str]) -> None:
        names = validate_classnames(classnames)
        if names != self.classnames:
            raise MethodError(
                f"{self.name} classifies only the classes it was fitted on "
                f"({len(self.classnames)} classes, e.g. {self.classnames[:3]}); it cannot score "
                "other or reordered class lists (e.g. base-to-new 'new' classes) - use a "
                "prompt method (zsclip, coop, ...) for those"
            )

    @classmethod
    def load(
        cls: Any, directory: str | Path, clip: ClipBackbone, classnames: list[str] | None = None
    ) -> PromptMethod:
        saved = read_method_info(directory).get("classnames")
        if classnames is not None and list(classnames) != saved:
            raise MethodError(
                f"{directory}: this {cls.name} was fitted on {len(saved)} other classes and "
                "cannot classify the given class list; load it without class names"
            )
        return super().load(directory, clip, classnames)
