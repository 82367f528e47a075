"""The mini world: a procedural image world, a tiny CLIP pre-trained on it, and few-shot data sets.

Everything the real pipeline does (few-shot prompt learning, base-to-new, domain shift) runs on it
in minutes on a laptop CPU. `load_mini_clip()` gives the shipped pre-trained tiny CLIP;
`pretrain(...)` rebuilds it; the `mini_*` data sets are registered in `vlprompt.data`. The
mini world is a data source: the quickstart and `mini_bench`, which run sweeps on it, live in
`vlprompt.quickstart`. The names below are imported when first used (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "pretrain": "vlprompt.mini.pretrain",
    "MODEL_NAME": "vlprompt.mini.tiny_clip",
    "checkpoint_path": "vlprompt.mini.tiny_clip",
    "load_mini_clip": "vlprompt.mini.tiny_clip",
}

if TYPE_CHECKING:
    from vlprompt.mini.pretrain import pretrain
    from vlprompt.mini.tiny_clip import MODEL_NAME, checkpoint_path, load_mini_clip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlprompt.mini' has no attribute {name!r}")


__all__ = ["MODEL_NAME", "checkpoint_path", "load_mini_clip", "pretrain"]
