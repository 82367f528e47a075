"""vlprompt: few-shot adaptation of CLIP-style models by prompt learning (RPO, ProGrad, ...)."""

from vlprompt._version import __version__
from vlprompt.api import Run, evaluate, load_run, train
from vlprompt.backbone import ClipBackbone, list_models, load_clip, register_model_config
from vlprompt.errors import CheckpointError, DownloadError, ModelNameError, VlpromptError
from vlprompt.methods import create_method, list_methods

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
