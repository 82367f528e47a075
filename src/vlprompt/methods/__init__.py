"""Methods: one file each, registered by name. Import order does not matter."""

from vlprompt.methods.base import MethodConfig, PromptMethod, StepOutput, TrainOutput
from vlprompt.methods.registry import (
    create_method,
    get_method_class,
    list_methods,
    make_config,
    register_method,
)

# Each method module registers itself with @register_method; list them here explicitly.
# (method imports below)
# isort: split
from vlprompt.methods import (
    cocoop,  # noqa: F401
    coop,  # noqa: F401
    kgcoop,  # noqa: F401
    linear_probe,  # noqa: F401
    prograd,  # noqa: F401
    rpo,  # noqa: F401
    zeroshot,  # noqa: F401
)

__all__ = [
    "MethodConfig",
    "PromptMethod",
    "StepOutput",
    "TrainOutput",
    "create_method",
    "get_method_class",
    "list_methods",
    "make_config",
    "register_method",
]
