"""The contract every method follows: a config dataclass + an nn.Module mapping images to logits.

The engine, evaluation and the view pool call only what is declared here (with a default for
every optional capability), so a new method is one file that subclasses `MethodConfig` and
`PromptMethod` and registers itself with `@register_method`. Each config field carries its help
text in `field(metadata={"help": ...})`, which `vlprompt train --method NAME --help` shows.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from vlprompt.backbone import ClipBackbone
from vlprompt.errors import DataError, MethodError
from vlprompt.methods.saving import load_learned, save_learned

if TYPE_CHECKING:
    from vlprompt.attention import KeyValues
    from vlprompt.data.types import Datum

GRADIENT_RULES = ("none", "prograd", "kd")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("epoch", "step")  # the learning rate set per epoch, or per optimizer step
# the two implementations of a method with a fast path: "fast" (same numbers, less work) and
# "reference" (the paper's computation, the fast path's oracle in the tests)
IMPLEMENTATIONS = ("fast", "reference")
# field metadata of a setting that changes only speed or memory, never a number (e.g. chunk
# sizes): it is not part of a run's identity, so a resume may change it
RUNTIME = {"runtime": True}


def runtime_settings(config_class: type) -> frozenset[str]:
    """The settings of a method config marked `RUNTIME`."""
    return frozenset(f.name for f in fields(config_class) if f.metadata.get("runtime"))


@dataclass
class MethodConfig:
    """Settings shared by all methods (the training recipe's defaults, which the engine reads
    unless the user overrides them). Subclasses add theirs, each with its help text."""

    template: str = field(
        default="a photo of a {}.",
        metadata={"help": "hand-crafted prompt, used by zero-shot parts and init"},
    )
    optimizer: str = field(
        default="sgd",
        metadata={"help": "'sgd', 'adam' (weight decay as L2, as Dassl's) or 'adamw' (decoupled)"},
    )
    lr: float = field(default=0.002, metadata={"help": "peak learning rate after warm-up"})
    weight_decay: float = field(default=5e-4, metadata={"help": "optimizer weight decay"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    adam_eps: float = field(default=1e-8, metadata={"help": "Adam / AdamW epsilon"})
    epochs: int = field(
        default=10, metadata={"help": "training epochs (the last one is evaluated)"}
    )
    batch_size: int = field(default=32, metadata={"help": "images per step"})
    warmup_epochs: int = field(
        default=1, metadata={"help": "epochs at constant warmup_lr before the cosine schedule"}
    )
    warmup_lr: float = field(default=1e-5, metadata={"help": "learning rate during warm-up"})
    lr_schedule: str = field(
        default="epoch",
        metadata={
            "help": "'epoch' (the learning rate is set once per epoch: warm-up, then cosine over "
            "the epochs) or 'step' (cosine from lr to min_lr set at every optimizer step over "
            "the whole training, torch's CosineAnnealingLR stepped per iteration; no warm-up)"
        },
    )
    min_lr: float = field(
        default=0.0, metadata={"help": "lowest learning rate of the 'step' cosine (eta_min)"}
    )
    iterations: int = field(
        default=0,
        metadata={
            "help": "training length in optimizer steps (0: `epochs` epochs); when > 0 it "
            "replaces `epochs`: ceil(iterations / batches per epoch) epochs, the last one "
            "stopping part-way"
        },
    )
    gradient_rule: str = field(
        default="none",
        metadata={
            "help": "'none' (plain loss gradient), 'prograd' (project the loss gradient when it "
            "conflicts with the gradient of the KL towards zero-shot CLIP) or 'kd' (knowledge "
            "distillation, the ProGrad paper's comparison: loss + lambda * that KL, plainly "
            "added); any method can use either"
        },
    )
    prograd_lambda: float = field(
        default=1.0,
        metadata={
            "help": "lambda of the gradient rule (ProGrad: 0.8 for 8/16-shot Flowers, DTD, EuroSAT)"
        },
    )
    prograd_temperature: float = field(
        default=1.0, metadata={"help": "temperature T of the KL towards zero-shot CLIP"}
    )

    def __post_init__(self) -> None:
        check_setting_types(self)
        check_templates(self)
        if self.lr <= 0:
            raise MethodError(f"lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise MethodError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise MethodError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.warmup_epochs < 0:
            raise MethodError(
                f"warmup_epochs must be >= 0 (0 = no warm-up), got {self.warmup_epochs}"
            )
        if self.warmup_epochs > 0 and self.warmup_lr <= 0:
            raise MethodError(
                f"warmup_lr must be > 0 when warmup_epochs is {self.warmup_epochs}, got "
                f"{self.warmup_lr}; set warmup_epochs=0 to train without warm-up"
            )
        check_schedule(self)
        if not 0 <= self.momentum < 1:
            raise MethodError(
                f"momentum must be in [0, 1) (SGD's default 0.9), got {self.momentum}"
            )
        if self.weight_decay < 0:
            raise MethodError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.gradient_rule not in GRADIENT_RULES:
            raise MethodError(
                f"gradient_rule must be one of {', '.join(GRADIENT_RULES)}, got "
                f"{self.gradient_rule!r}"
            )
        if self.prograd_lambda < 0:
            raise MethodError(
                f"prograd_lambda must be >= 0 (ProGrad uses 1.0 or 0.8), got {self.prograd_lambda}"
            )
        if self.prograd_temperature <= 0:
            raise MethodError(
                f"prograd_temperature must be > 0 (ProGrad uses 1.0), got "
                f"{self.prograd_temperature}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise MethodError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not self.adam_eps > 0:
            raise MethodError(f"adam_eps must be > 0, got {self.adam_eps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainOutput:
    """A training forward: the logits and, when the method has them for free, the frozen CLIP
    image features (L2-normalised) that ProGrad's zero-shot teacher reuses."""

    logits: torch.Tensor  # [batch, classes]
    image_features: torch.Tensor | None = None  # [batch, embed_dim], normalised, no grad


@dataclass
class StepOutput:
    """What one training step returns to the engine (after gradients are in `.grad`)."""

    loss: torch.Tensor  # detached scalar, the loss that was minimised
    logits: torch.Tensor  # detached [batch, classes], for running accuracy
    # the gradients are already the global batch's (averaged over DDP processes by the step
    # itself, as the ProGrad rule does), so the engine does not average them again
    gradients_synced: bool = False


GradScale = Callable[[torch.Tensor], torch.Tensor]  # e.g. GradScaler.scale; identity on CPU


# ---- mixed precision ---------------------------------------------------------------------------
def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast computes in on `device`'s type now, or None when autocast is off. It is
    part of the key of every cache of computed features, so that features computed under bf16 or
    fp16 autocast never serve an fp32 pass (nor the other way round)."""
    kind = torch.device(device).type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off on `device`'s type. Logits are computed in fp32 from the (possibly bf16/fp16)
    features: the product is small ([B, E] x [E, C]) and bf16 keeps 8 significant bits, so logits
    near 30 would be rounded in steps of 0.125 before the loss; frozen zero-shot text features
    (computed once per class list) are computed in fp32 too."""
    return torch.autocast(torch.device(device).type, enabled=False)


def clip_logits(
    clip: ClipBackbone, image_features: torch.Tensor, text_features: torch.Tensor
) -> torch.Tensor:
    """logit_scale * image_f @ text_f.T in fp32 (both already normalised), under autocast too."""
    with full_precision(image_features.device):
        return clip.logit_scale.float() * image_features.float() @ text_features.float().t()


# ---- caches of computed features ---------------------------------------------------------------
def features_key(
    clip: ClipBackbone, classnames: Sequence[str], *identity: Any, fp32: bool = False
) -> tuple:
    """The key of a cache of features computed for `classnames`: the class names, `identity`
    (what else the features depend on: a template, or a learned tensor's `_version` and
    `data_ptr()`), the backbone's device and dtype, and the autocast dtype of the call (None for
    features computed in fp32 whatever autocast says: `fp32=True`)."""
    precision = None if fp32 else autocast_dtype(clip.device)
    return (tuple(classnames), *identity, clip.device, clip.dtype, precision)


class KeyedCache:
    """One computed value (e.g. the text features of a class list), kept until its key
    (`features_key`) changes; the old value is dropped before the new one is computed."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Any = None

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if self.value is None or self.key != key:
            self.clear()
            self.value, self.key = compute(), key
        return self.value

    def clear(self) -> None:
        self.key = self.value = None


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
    # normalised features and `forward_features` classifies them, so evaluation reads cached
    # features (`vlprompt.feature_cache`) and a view pool stores features (`FrozenImageMixin`)
    frozen_image_encoder: ClassVar[bool] = False
    # True: after training it classifies any class list (`set_classnames`), so base-to-new tests
    # it on classes it never saw; False: only the classes it was fitted on (the linear probe)
    classifies_new_classes: ClassVar[bool] = True
    # how it classifies a class it learned nothing for, where that is not obvious: the reports
    # print it under base-to-new tables (Tip-Adapter: "new classes are zero-shot CLIP's ...")
    new_classes_note: ClassVar[str | None] = None

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
        from vlprompt.methods.gradient_rules import prograd_backward, prograd_kl

        out = self.forward_train(images)
        loss = self.loss(out, labels)
        if self.config.gradient_rule == "kd":
            teacher = self.zeroshot_logits(images, out.image_features)
            kl = prograd_kl(out.logits, teacher, self.config.prograd_temperature)
            loss = loss + self.config.prograd_lambda * kl
        if self.config.gradient_rule == "prograd":
            teacher = self.zeroshot_logits(images, out.image_features)
            prograd_backward(
                self.trainable_parameters(),
                loss,
                out.logits,
                teacher,
                lam=self.config.prograd_lambda,
                temperature=self.config.prograd_temperature,
                scale=scale,
            )
            return StepOutput(loss.detach(), out.logits.detach(), gradients_synced=True)
        scale(loss).backward()
        return StepOutput(loss.detach(), out.logits.detach())

    # ---- optional capabilities (each with its default) -------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised frozen CLIP image features [B, E], without autograd. A method with
        `frozen_image_encoder` reads its images only through this function (the view pool
        shadows it with stored features)."""
        with torch.no_grad():
            return self.clip.encode_image(images, normalize=True)

    def forward_features(self, image_features: torch.Tensor) -> torch.Tensor:
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

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the engine after each training epoch (1-based `epoch`, as in the epoch's
        checkpoint), before the parameters are checked and the checkpoint is written; e.g. an
        aggregation of the per-epoch states. Default: nothing."""

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


class FrozenImageMixin:
    """Methods whose image side is frozen CLIP (`frozen_image_encoder`): images reach the
    classifier only as `image_features`, training returns them (ProGrad's teacher reuses them)
    and `forward_features` classifies cached features. Mix in before `PromptMethod`."""

    frozen_image_encoder: ClassVar[bool] = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.image_features(images))

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        feats = self.image_features(images)
        return TrainOutput(self.forward_features(feats), feats)


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


# ---- settings checks ---------------------------------------------------------------------------
_SCALAR_KINDS = ("float", "int", "bool", "str")


def _setting_kind(annotation: Any) -> tuple[str | None, bool, bool]:
    """(scalar kind, is a sequence of it, None allowed) of a config field's annotation, read from
    its text ("float", "int | None", "tuple[float, ...]"); (None, ...) for any other type."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    parts = [p for p in text.replace(" ", "").split("|") if p]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    if len(parts) != 1:
        return None, False, optional
    part = parts[0]
    for kind in _SCALAR_KINDS:
        if part == kind:
            return kind, False, optional
        if part in (f"tuple[{kind},...]", f"list[{kind}]"):
            return kind, True, optional
    return None, False, optional


def _check_scalar(name: str, value: Any, kind: str) -> None:
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MethodError(f"{name} must be a number, got {_describe(value)}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise MethodError(f"{name} must be a finite number, got {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise MethodError(f"{name} must be a whole number, got {_describe(value)}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise MethodError(f"{name} must be true or false, got {_describe(value)}")
    elif kind == "str" and not isinstance(value, str):
        raise MethodError(f"{name} must be text, got {_describe(value)}")


def _describe(value: Any) -> str:
    """A value as an error message shows it, saying what kind of value it is where that helps."""
    if isinstance(value, bool):
        return f"{value!r} (a true/false value)"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f"the text {value!r}"
        return (
            f"the text {value!r}; write the number without quotes (YAML reads forms such as "
            "2e-3 as text: write 2.0e-3)"
        )
    return f"{value!r} ({type(value).__name__})"


def check_setting_types(config: MethodConfig) -> None:
    """Every field of a method config holds a value of its annotated kind: numbers for float
    fields (finite: no NaN or infinity; bools refused), whole numbers for int fields, true/false
    for bool fields, text for str fields, lists of them for tuple fields. Raises MethodError
    naming the setting."""
    for f in fields(config):
        kind, is_sequence, optional = _setting_kind(f.type)
        if kind is None:
            continue
        value = getattr(config, f.name)
        if value is None and optional:
            continue
        if not is_sequence:
            _check_scalar(f.name, value, kind)
            continue
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise MethodError(f"{f.name} must be a list, got {_describe(value)}")
        for i, item in enumerate(value):
            _check_scalar(f"{f.name}[{i}]", item, kind)


def _check_template(name: str, template: Any) -> None:
    from vlprompt.data.templates import check_template

    try:
        check_template(template)
    except DataError as exc:  # its message quotes the template; say which setting holds it
        raise MethodError(str(exc) if name == "template" else f"{name}: {exc}") from None


def check_templates(config: MethodConfig) -> None:
    """`template` and every entry of a template list (`templates`) is a usable template
    (`vlprompt.data.templates.check_template`). Raises MethodError naming the setting."""
    for f in fields(config):
        if f.name not in ("template", "templates"):
            continue
        value = getattr(config, f.name)
        if isinstance(value, (list, tuple)):
            for i, template in enumerate(value):
                _check_template(f"{f.name}[{i}]", template)
        else:
            _check_template(f.name, value)


def check_schedule(config: MethodConfig) -> None:
    """The per-step schedule's settings (`lr_schedule`, `min_lr`, `iterations`)."""
    if config.lr_schedule not in LR_SCHEDULES:
        raise MethodError(
            f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {config.lr_schedule!r}"
        )
    if config.iterations < 0:
        raise MethodError(
            f"iterations must be >= 0 (0 = train for `epochs` epochs), got {config.iterations}"
        )
    if not 0 <= config.min_lr <= config.lr:
        raise MethodError(f"min_lr must be in [0, lr={config.lr}], got {config.min_lr}")
    if config.lr_schedule == "step" and config.warmup_epochs > 0:
        raise MethodError(
            f"warmup_epochs must be 0 with lr_schedule 'step' (it has no warm-up), got "
            f"{config.warmup_epochs}"
        )


def config_to_json(config: MethodConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
