"""vlprompt: few-shot adaptation of CLIP-style models by prompt learning (RPO, ProGrad, ...).

The names below are imported when first used (PEP 562), so `import vlprompt` and the command
line's `--help` load neither torch nor open_clip; `vlprompt.train` and the others load them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vlprompt._version import __version__
from vlprompt.errors import CheckpointError, DownloadError, ModelNameError, VlpromptError

# public name -> the module that defines it
_LAZY = {
    "Run": "vlprompt.api",
    "evaluate": "vlprompt.api",
    "load_run": "vlprompt.api",
    "train": "vlprompt.api",
    "ClipBackbone": "vlprompt.backbone",
    "list_models": "vlprompt.backbone",
    "load_clip": "vlprompt.backbone",
    "register_model_config": "vlprompt.backbone",
    "create_method": "vlprompt.methods",
    "list_methods": "vlprompt.methods",
}

if TYPE_CHECKING:  # for type checkers and IDEs
    from vlprompt.api import Run, evaluate, load_run, train
    from vlprompt.backbone import ClipBackbone, list_models, load_clip, register_model_config
    from vlprompt.methods import create_method, list_methods


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'vlprompt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CheckpointError",
    "ClipBackbone",
    "DownloadError",
    "ModelNameError",
    "Run",
    "VlpromptError",
    "__version__",
    "create_method",
    "evaluate",
    "list_methods",
    "list_models",
    "load_clip",
    "load_run",
    "register_model_config",
    "train",
]
