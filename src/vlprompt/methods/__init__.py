"""Methods: one file each, registered by name (every module here is imported)."""

from vlprompt.methods.base import MethodConfig, PromptMethod, StepOutput, TrainOutput
from vlprompt.methods.registry import (
    create_method,
    get_method_class,
    list_methods,
    make_config,
    register_method,
)

# Every module of this package is imported, so a method file registers itself with
# @register_method and needs no edit elsewhere; methods of other packages come through the
# "vlprompt.methods" entry points (vlprompt.methods.registry).
# isort: split
import importlib as _importlib
import pkgutil as _pkgutil

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

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
