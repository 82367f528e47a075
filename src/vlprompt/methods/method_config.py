"""A method's settings: the `MethodConfig` dataclass every method config extends (the training
recipe's shared defaults), the checks of its values, and the `RUNTIME` mark of settings that
change only speed or memory. Each field carries its help text in `field(metadata={"help": ...})`,
which `vlprompt train --method NAME --help` shows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vlprompt.errors import DataError, MethodError

GRADIENT_RULES = ("none", "prograd", "kd")
FEATURE_RULES = ("none", "dept")  # vlprompt.methods.dept
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("epoch", "step")  # the learning rate set per epoch, or per optimizer step
# the two implementations of a method with a fast path: "fast" (same numbers, less work) and
# "reference" (the paper's computation, the fast path's oracle in the tests)
IMPLEMENTATIONS = ("fast", "reference")
# the validation images a method's searches score: CoOp's few-shot sample (min(shots, 4) per
# class) or every image of the val split (what the official Tip-Adapter and GDA code search on);
# a method config with a `val_split` field picks one, and the run builds its val split so
VAL_SPLITS = ("few-shot", "whole")
# upper bounds of the size settings, refused before anything is allocated (each bound names why)
MAX_EPOCHS = 10_000
EPOCHS_WHY = "the longest official recipe trains 300 epochs: CLAP, LP++"
MAX_ITERATIONS = 1_000_000
ITERATIONS_WHY = "CLIP-LoRA's official recipe takes 500 steps per shot, 8000 at 16 shots"
MAX_BATCH = 65_536
BATCH_WHY = "a batch is held in memory at once; the official recipes use at most 256"
MAX_VIEWS = 100
VIEWS_WHY = (
    "the cache holds views x training images x the embedding width; the official recipes use 10 "
    "or 20"
)
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
    feature_rule: str = field(
        default="none",
        metadata={
            "help": "'none' or 'dept' (DePT's channel-wise transformation head on the method's "
            "unnormalised features, trained beside its prompts and fused with its logits on the "
            "training classes; vlprompt.methods.dept); coop, cocoop, kgcoop, prograd, maple, ivlp "
            "and promptsrc can use it, with any gradient rule"
        },
    )
    dept_weight: float = field(
        default=0.7,
        metadata={"help": "DePT's w: loss (1-w) CE + w CE_head; logits (1-w) + w head (0.7)"},
    )
    dept_lr_scale: float = field(
        default=6.5,
        metadata={"help": "the DePT head's learning rate over the prompts' (official 6.5)"},
    )

    def __post_init__(self) -> None:
        check_setting_types(self)
        check_templates(self)
        if self.lr <= 0:
            raise MethodError(f"lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise MethodError(f"epochs must be >= 1, got {self.epochs}")
        check_at_most("epochs", self.epochs, MAX_EPOCHS, EPOCHS_WHY)
        if self.batch_size < 1:
            raise MethodError(f"batch_size must be >= 1, got {self.batch_size}")
        check_at_most("batch_size", self.batch_size, MAX_BATCH, BATCH_WHY)
        if self.warmup_epochs < 0:
            raise MethodError(
                f"warmup_epochs must be >= 0 (0 = no warm-up), got {self.warmup_epochs}"
            )
        check_at_most("warmup_epochs", self.warmup_epochs, MAX_EPOCHS, EPOCHS_WHY)
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
        check_feature_rule_settings(self)
        if self.optimizer not in OPTIMIZERS:
            raise MethodError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not self.adam_eps > 0:
            raise MethodError(f"adam_eps must be > 0, got {self.adam_eps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def check_feature_rule_settings(config: MethodConfig) -> None:
    """`feature_rule` and DePT's settings (`vlprompt.methods.dept`)."""
    if config.feature_rule not in FEATURE_RULES:
        raise MethodError(
            f"feature_rule must be one of {', '.join(FEATURE_RULES)}, got {config.feature_rule!r}"
        )
    if not 0 <= config.dept_weight <= 1:
        raise MethodError(
            f"dept_weight must be in [0, 1] (DePT uses 0.7), got {config.dept_weight}"
        )
    if not config.dept_lr_scale > 0:
        raise MethodError(f"dept_lr_scale must be > 0 (DePT uses 6.5), got {config.dept_lr_scale}")
    changed = [
        name
        for name, default in (("dept_weight", 0.7), ("dept_lr_scale", 6.5))
        if getattr(config, name) != default
    ]
    if changed and config.feature_rule != "dept":
        raise MethodError(
            f"{', '.join(changed)} set but feature_rule is {config.feature_rule!r}: they act only "
            "with feature_rule=dept; add it or drop them"
        )


def check_at_most(name: str, value: int, bound: int, why: str) -> None:
    """MethodError when the size setting `name` is above `bound` (`why`: where it comes from),
    before anything of that size is allocated or run."""
    if value > bound:
        raise MethodError(f"{name} must be at most {bound} ({why}), got {value}")


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
    check_at_most("iterations", config.iterations, MAX_ITERATIONS, ITERATIONS_WHY)
    if not 0 <= config.min_lr <= config.lr:
        raise MethodError(f"min_lr must be in [0, lr={config.lr}], got {config.min_lr}")
    if config.lr_schedule == "step" and config.warmup_epochs > 0:
        raise MethodError(
            f"warmup_epochs must be 0 with lr_schedule 'step' (it has no warm-up), got "
            f"{config.warmup_epochs}"
        )


def val_split_field(official: str) -> Any:
    """The `val_split` setting of a method whose official code searches on `official`."""
    return field(
        default=official,
        metadata={"help": "the validation images the search scores: 'few-shot' (min(shots, 4) "
                  "per class, CoOp's sample) or 'whole' (every val image; official: "
                  f"{official!r})"},
    )  # fmt: skip


def check_val_split(value: str) -> None:
    if value not in VAL_SPLITS:
        raise MethodError(f"val_split must be one of {', '.join(VAL_SPLITS)}, got {value!r}")
