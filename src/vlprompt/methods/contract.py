"""The contract every method follows: `PromptMethod`, an nn.Module mapping images to logits.

The engine, evaluation and the view pool call only what is declared here (with a default for
every optional capability), so a new method is one file that subclasses `MethodConfig`
(`vlprompt.methods.method_config`) and `PromptMethod` and registers itself with
`@register_method`. A method whose class side does not depend on the image
(`text_depends_on_image` False: all but CoCoOp) gives it as `class_features()`; `classifier()`
computes it once for many batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import MethodError
from vlprompt.methods.dept import DePTHead, check_feature_rule, fused_logits, head_param_groups
from vlprompt.methods.features import KeyedCache, clip_logits, features_key, full_precision
from vlprompt.methods.method_config import MethodConfig
from vlprompt.methods.saving import load_learned, save_learned
from vlprompt.methods.training_step import GradScale, StepOutput, TrainOutput, backward_step

if TYPE_CHECKING:
    from vlprompt.attention import KeyValues
    from vlprompt.data.types import Datum


class PromptMethod(nn.Module):
    """Base class of every method. The frozen CLIP lives in `self.clip`; learned parts are modules
    or parameters of the subclass and are the only things `save` writes.

    A subclass implements `forward` (and usually nothing else is required). Everything else the
    engine, evaluation and the view pool use is declared below with a default: override what the
    method has (frozen image features, a frozen image state, closed-form fitting, templates,
    parameter groups, an end-of-epoch step)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    # True: trained by the engine's gradient steps (`backward_step`); False: `fit` prepares it
    # without gradient steps (zero-shot CLIP: nothing to fit; the linear probe: closed form)
    needs_training: ClassVar[bool] = True
    # the data set's hand-crafted template (CoOp's per-data-set table) becomes `template`
    uses_dataset_template: ClassVar[bool] = True
    # the image side is frozen CLIP, untouched by what is learned: `image_features` gives its
    # normalised features and `logits_from_features` classifies them, so evaluation reads cached
    # features (`vlprompt.feature_cache`) and a view pool stores features (`FrozenImageMixin`)
    frozen_image_encoder: ClassVar[bool] = False
    # True: after training it classifies any class list (`set_classnames`), so base-to-new tests
    # it on classes it never saw; False: only the classes it was fitted on (the linear probe)
    classifies_new_classes: ClassVar[bool] = True
    # how it classifies a class it learned nothing for, where that is not obvious: the reports
    # print it under base-to-new tables (Tip-Adapter: "new classes are zero-shot CLIP's ...")
    new_classes_note: ClassVar[str | None] = None
    # True: the class side of the logits depends on the image (CoCoOp: each image shifts the
    # prompts of every class), so every image runs the text tower; False: the logits read one
    # constant of the class list, `class_features()`, which `classifier()` computes once
    text_depends_on_image: ClassVar[bool] = False
    # the feature rules (`MethodConfig.feature_rule`) the method supports: "dept" where its
    # training forward returns its unnormalised image and class features and its forward fuses
    # the head's logits (`vlprompt.methods.dept`)
    feature_rules: ClassVar[tuple[str, ...]] = ()
    # True: its untrained state already changes what CLIP computes (fresh random tokens inside a
    # tower: deep prompts, MMRL's representation tokens), so a run first logs its validation
    # accuracy before any step beside zero-shot CLIP's (a collapse that starts at the
    # initialisation shows there, not after the run)
    changes_clip_at_init: ClassVar[bool] = False
    _holding: bool = False  # inside `classifier()`

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """Settings whose official value depends on the data set, other than `template` (TCP's
        prompt after the context): the method's defaults for `dataset`, under any preset and
        setting given. Default: none."""
        return {}

    @classmethod
    def template_for(cls, dataset: str, dataset_template: str) -> str | None:
        """The `template` a run of this method on `dataset` gets unless the user sets one: the
        data set's hand-crafted template, or None to keep the config's default."""
        return dataset_template if cls.uses_dataset_template else None

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: MethodConfig) -> None:
        super().__init__()
        self.clip = clip  # frozen; never saved with the method
        self.config = config
        self.classnames = validate_classnames(classnames)
        self._zeroshot_cache = KeyedCache()
        self._held_class_side = KeyedCache()
        self.dept: DePTHead | None = None
        self.head_classnames: list[str] | None = None
        if config.feature_rule == "dept":
            check_feature_rule(self)
            self.dept = DePTHead(clip.embed_dim, len(self.classnames)).to(clip.device)
            self.head_classnames = list(self.classnames)
            # the head reads unnormalised image features: cached normalised ones cannot serve
            self.frozen_image_encoder = False  # type: ignore[misc]

    @property
    def dept_active(self) -> bool:
        """Whether forwards fuse DePT's head: under feature_rule "dept", on the class list the
        head was trained for (official: base classes fused, new classes plain)."""
        return self.dept is not None and self.classnames == self.head_classnames

    # ---- what a method implements -------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] (already transformed) -> class logits [B, len(classnames)]."""
        raise NotImplementedError

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        """The training forward. Default: `forward`, no image features. Methods that compute the
        frozen CLIP image features anyway return them so ProGrad's teacher costs no image pass."""
        return TrainOutput(self(images))

    def loss(self, out: TrainOutput, labels: torch.Tensor) -> torch.Tensor:
        """The method's training loss. Default: cross-entropy (KgCoOp adds its regulariser)."""
        return nn.functional.cross_entropy(out.logits, labels)

    def backward_step(
        self, images: torch.Tensor, labels: torch.Tensor, scale: GradScale = lambda t: t
    ) -> StepOutput:
        """Compute the loss and leave its gradient in `.grad` of the trainable parameters (after
        the gradient rule, if any); the engine then steps the optimizer."""
        return backward_step(self, images, labels, scale)

    # ---- optional capabilities (each with its default) -------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised frozen CLIP image features [B, E], without autograd. A method with
        `frozen_image_encoder` reads its images only through this function (the view pool
        shadows it with stored features)."""
        with torch.no_grad():
            return self.clip.encode_image(images, normalize=True)

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] from normalised frozen image features [B, E]: the classifier of a
        method with `frozen_image_encoder` (evaluation calls it on cached features). Default:
        none, the method needs the images."""
        raise NotImplementedError(
            f"{type(self).__name__} classifies images, not image features "
            "(frozen_image_encoder is False)"
        )

    @property
    def reads_frozen_image_features(self) -> bool:
        """Whether a training step of a method with a trained image path also reads the frozen
        image features through `image_features` (the zero-shot teacher of the "prograd" and
        "kd" rules; PromptSRC's regulariser), so that a view pool may store them beside the
        images. Default: under those rules."""
        return self.config.gradient_rule in ("prograd", "kd")

    @property
    def has_frozen_image_state(self) -> bool:
        """Whether training reads the image tower through `frozen_image_state`, so that a view
        pool may store that state instead of images. Default: False."""
        return False

    def frozen_image_state(self, images: torch.Tensor) -> tuple[list[KeyValues], torch.Tensor]:
        """What training needs of the frozen image tower that never depends on what is learned,
        computed without autograd: each layer's keys/values of the CLS + patch tokens and the
        frozen CLS features [B, E] (not normalised). A method with `has_frozen_image_state`
        reads its images only through this function (`vlprompt.view_pool` stores it and
        shadows the function with the stored rows). Default: none."""
        raise NotImplementedError(f"{type(self).__name__} has no frozen image state")

    def fit_features(
        self,
        train_feats: torch.Tensor,
        train_labels: torch.Tensor,
        val_feats: torch.Tensor | None = None,
        val_labels: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Fit in closed form on normalised frozen image features [N, E] and their labels,
        choosing any hyper-parameter on the validation features; returns what was chosen.
        Default: nothing to fit from features ({}): a method with `needs_training` is trained
        by the engine's gradient steps instead, and zero-shot CLIP learns nothing."""
        return {}

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
        """Prepare a method without `needs_training` from the training (and validation) images,
        in place of the engine's gradient steps; `feature_cache` (a
        `vlprompt.feature_cache.FeatureCache` or None) serves frozen image features, `log`
        reports progress. Default: nothing to fit (zero-shot CLIP); the linear probe fits its
        classifier here (`fit_features`). Methods with `needs_training` are trained by the
        engine's gradient steps instead and never reach this."""

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (torch.optim's format). A group may carry
        `lr_scale`: its learning rate is the schedule's times that factor (e.g. a head learned
        faster than the prompts); other keys (e.g. `weight_decay`) override the config's.
        Default: one group of all trainable parameters ([] when there are none)."""
        params = self.trainable_parameters()
        return [{"params": params}] if params else []

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """What the engine's optimizer gets: `param_groups()`, with DePT's head (under
        feature_rule "dept") in its own group at `dept_lr_scale` times the schedule's rate."""
        groups = self.param_groups()
        if self.dept is None:
            return groups
        return head_param_groups(groups, self.dept, self.config.dept_lr_scale)

    def lr_spans(self, total_steps: int) -> list[tuple[int, int]] | None:
        """Under `lr_schedule="step"`: per group of `param_groups()` (in order), the optimizer
        steps [start, stop) of the training's `total_steps` in which it learns, each span with a
        cosine of its own from `lr` to `min_lr` (the group's learning rate is 0 outside it): a
        training in stages, each with a fresh schedule. Default: None, every group over the
        whole training."""
        return None

    def on_train_step(self, step: int, total_steps: int) -> None:
        """Called by the engine before each optimizer step, with its 0-based index in the whole
        training of `total_steps` steps (a resumed run continues the count); e.g. to switch
        stages. Default: nothing."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the engine after each training epoch (1-based `epoch`, as in the epoch's
        checkpoint), before the parameters are checked and the checkpoint is written; e.g. an
        aggregation of the per-epoch states. Default: nothing."""

    # ---- feature rules (DePT) -----------------------------------------------------------------
    def raw_text_features(self) -> torch.Tensor:
        """Class features [C, E] before L2 normalisation, with autograd (DePT's head reads them;
        a method with "dept" in `feature_rules` gives them)."""
        raise NotImplementedError(f"{type(self).__name__} gives no unnormalised class features")

    def prompted_train_output(self, raw_image: torch.Tensor) -> TrainOutput:
        """The training forward of a method whose logits are CLIP's cosine logits of its image
        features `raw_image` [B, E] (unnormalised) and its class side; under feature_rule "dept"
        the class side is computed from `raw_text_features` and both raw features are returned."""
        image = nn.functional.normalize(raw_image, dim=-1)
        if self.dept is None:
            return TrainOutput(clip_logits(self.clip, image, self.class_side()))
        raw_text = self.raw_text_features()
        text = nn.functional.normalize(raw_text, dim=-1)
        logits = clip_logits(self.clip, image, text)
        return TrainOutput(logits, raw_image_features=raw_image, raw_text_features=raw_text)

    def prompted_logits(self, raw_image: torch.Tensor) -> torch.Tensor:
        """Evaluation logits from unnormalised image features [B, E]: CLIP's cosine logits with
        the class side, fused with DePT's head on its classes (`vlprompt.methods.dept`)."""
        image = nn.functional.normalize(raw_image, dim=-1)
        return fused_logits(self, clip_logits(self.clip, image, self.class_side()), raw_image)

    # ---- the class side, constant over images (evaluation, predict, export) ----------------
    def class_features(self) -> Any:
        """The class side of the logits: what they read of the classes, the same for every
        image, computed from the current parameters and class list (under autograd while
        training). The logits of any batch are a fixed function of the batch's image features
        (with the method's learned image-side parts) and this constant: the normalised text
        features [C, E] for most methods, RPO's K per class [C, K, E], Tip-Adapter's text
        features with its cache, the linear probe's weights. Default: `self.text_features()`.
        A method with `text_depends_on_image` has none."""
        if self.text_depends_on_image:
            raise NotImplementedError(
                f"{type(self).__name__}'s class side depends on the image (text_depends_on_image)"
            )
        text_features = getattr(self, "text_features", None)
        if text_features is None:
            raise NotImplementedError(f"{type(self).__name__} defines no class_features")
        return text_features()

    def class_side(self) -> Any:
        """`class_features()` as a forward reads it: inside `classifier()` (no autograd),
        computed once per class list, parameters and autocast dtype, and reused by every batch;
        elsewhere computed at every call (training: each step's own, with autograd)."""
        if not self._holding or torch.is_grad_enabled():
            return self.class_features()
        return self._held_class_side.get(self._class_side_key(), self.class_features)

    def _class_side_key(self) -> tuple:
        """What the class side depends on: the class list, each learned tensor (version and
        storage: an optimizer step, a load or `copy_` changes it) and the autocast dtype."""
        own = [self.parameters(recurse=False), self.buffers(recurse=False)]
        own += [
            group
            for name, child in self.named_children()
            if name != "clip"
            for group in (child.parameters(), child.buffers())
        ]
        tensors = tuple((t._version, t.data_ptr(), t.dtype) for group in own for t in group)
        return (*features_key(self.clip, self.classnames), tensors)

    @contextlib.contextmanager
    def classifier(self) -> Iterator[PromptMethod]:
        """The method as a fixed classifier over many batches (evaluation, `Run.predict`): eval
        mode (left on), no autograd, and the class side (`class_features`) computed at the first
        forward and reused by every later one, then dropped on exit. The same logits as calling
        the method batch by batch, without recomputing the text side per batch (IVLP on 1000
        classes: one prompted text pass per evaluation, not one per batch)."""
        self.eval()
        with self.holding_class_side(), torch.no_grad():
            yield self

    @contextlib.contextmanager
    def holding_class_side(self) -> Iterator[PromptMethod]:
        """Inside: forwards made without autograd reuse one class side (the part of
        `classifier()` that is safe to keep open across a generator's yields: it changes no
        global autograd state)."""
        outer = self._holding
        self._holding = True
        try:
            yield self
        finally:
            self._holding = outer
            if not outer:
                self._held_class_side.clear()

    def train(self, mode: bool = True) -> PromptMethod:
        self._held_class_side.clear()  # a class side held for evaluation is never reused after
        return super().train(mode)

    # ---- zero-shot CLIP (ProGrad's teacher, KgCoOp's anchor, zsclip) ----------------------
    @torch.no_grad()
    def zeroshot_text_features(self) -> torch.Tensor:
        """Normalised text features of `config.template` for the current class names, cached;
        computed in fp32 whatever autocast says (once per class list)."""
        from vlprompt.methods.text_encoding import TEMPLATE_HINT, tokenize_checked

        def compute() -> torch.Tensor:
            texts = [self.config.template.format(c.replace("_", " ")) for c in self.classnames]
            tokens = tokenize_checked(self.clip, texts, "hand-crafted prompt", TEMPLATE_HINT)
            with full_precision(self.clip.device):
                return self.clip.encode_text(tokens, normalize=True)

        key = features_key(self.clip, self.classnames, self.config.template, fp32=True)
        return self._zeroshot_cache.get(key, compute)

    @torch.no_grad()
    def zeroshot_logits(
        self, images: torch.Tensor, image_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Zero-shot CLIP logits; reuses `image_features` (normalised) when given."""
        if image_features is None:
            image_features = self.image_features(images)
        return clip_logits(self.clip, image_features, self.zeroshot_text_features())

    def set_classnames(self, classnames: list[str]) -> None:
        """Point the method at another class list (e.g. the new classes of base-to-new)."""
        self.classnames = validate_classnames(classnames)
        self._held_class_side.clear()

    # ---- shared helpers --------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything learned, nothing of the frozen backbone."""
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if not k.startswith("clip.")
        }

    def save(self, directory: str | Path) -> None:
        """Write `prompts.safetensors` + `method.json` (`vlprompt.methods.saving`)."""
        save_learned(self, directory)

    @classmethod
    def load(
        cls, directory: str | Path, clip: ClipBackbone, classnames: list[str] | None = None
    ) -> PromptMethod:
        return load_learned(directory, clip, classnames, expected=cls)

    def size_to_saved(self, tensors: dict[str, torch.Tensor]) -> None:
        """Before saved tensors are loaded: resize what the fitted data sized (Tip-Adapter's
        cache rows) to the saved `tensors`' shapes. Nothing for a method of fixed sizes."""


def validate_classnames(classnames: list[str]) -> list[str]:
    if isinstance(classnames, str):
        raise MethodError(
            f"the class list must be a list of class names, got the text {classnames!r}"
        )
    names = list(classnames)
    if not names:
        raise MethodError("the class list is empty: a method needs at least one class name")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise MethodError(
                f"class name #{i + 1} of the class list is {name!r}, not text; class names "
                "must be strings"
            )
        if not name.strip():
            raise MethodError(
                f"class name #{i + 1} of the class list is empty; every class needs a name"
            )
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if dupes:
        raise MethodError(f"the class list has duplicate names: {sorted(set(dupes))}")
    return names
