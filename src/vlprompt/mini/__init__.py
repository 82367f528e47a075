"""The mini world: a procedural image world, a tiny CLIP pre-trained on it, and few-shot data sets.

Everything the real pipeline does (few-shot prompt learning, base-to-new, domain shift) runs on it
in minutes on a laptop CPU. `load_mini_clip()` gives the shipped pre-trained tiny CLIP;
`pretrain(...)` rebuilds it; the `mini_*` data sets are registered in `vlprompt.data`;
`quickstart()` runs base-to-new for every method and prints the table.
"""

from __future__ import annotations

from vlprompt.mini.pretrain import pretrain
from vlprompt.mini.quickstart import mini_bench, quickstart
from vlprompt.mini.tiny_clip import MODEL_NAME, checkpoint_path, load_mini_clip

__all__ = [
    "MODEL_NAME",
    "checkpoint_path",
    "load_mini_clip",
    "mini_bench",
    "pretrain",
    "quickstart",
]
