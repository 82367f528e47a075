"""The method contract, re-exported from the modules that hold it, by job:
`method_config` (the settings dataclass and its checks), `contract` (`PromptMethod`),
`features` (logits in fp32, caches of computed features, `FrozenImageMixin`) and
`training_step` (what a step returns, the gradient rule's plumbing). Importing from here keeps
working; new code may import from those modules.
"""

from vlprompt.methods.contract import PromptMethod, validate_classnames
from vlprompt.methods.features import (
    FrozenImageMixin,
    KeyedCache,
    autocast_dtype,
    clip_logits,
    features_key,
    full_precision,
)
from vlprompt.methods.method_config import (
    GRADIENT_RULES,
    IMPLEMENTATIONS,
    LR_SCHEDULES,
    OPTIMIZERS,
    RUNTIME,
    MethodConfig,
    check_schedule,
    check_setting_types,
    check_templates,
    runtime_settings,
)
from vlprompt.methods.training_step import GradScale, StepOutput, TrainOutput, backward_step

__all__ = [
    "GRADIENT_RULES",
    "IMPLEMENTATIONS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "RUNTIME",
    "FrozenImageMixin",
    "GradScale",
    "KeyedCache",
    "MethodConfig",
    "PromptMethod",
    "StepOutput",
    "TrainOutput",
    "autocast_dtype",
    "backward_step",
    "check_schedule",
    "check_setting_types",
    "check_templates",
    "clip_logits",
    "features_key",
    "full_precision",
    "runtime_settings",
    "validate_classnames",
]
