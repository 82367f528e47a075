"""The mini world: a procedural image world, a tiny CLIP pre-trained on it, and few-shot data sets.

Everything the real pipeline does (few-shot prompt learning, base-to-new, domain shift) runs on it
in minutes on a laptop CPU. `load_mini_clip()` gives the shipped pre-trained tiny CLIP;
`pretrain(...)` rebuilds it; the `mini_*` data sets are registered in `vlprompt.data`;
`quickstart()` runs base-to-new for every method and prints the table.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from vlprompt.backbone import ClipBackbone, load_clip

MODEL_NAME = "vlprompt-mini-vit"
_ASSETS = resources.files("vlprompt") / "assets"
# the architecture itself is registered by vlprompt.backbone (assets/vlprompt-mini-vit.json)


def checkpoint_path() -> Path:
    """The shipped pre-trained weights (safetensors, fp16 storage; loading casts to fp32)."""
    return Path(str(_ASSETS / f"{MODEL_NAME}.safetensors"))


def load_mini_clip(device: str = "cpu", pretrained: str | Path | None = None) -> ClipBackbone:
    """The pre-trained tiny CLIP through the normal `load_clip` path (shipped weights unless
    `pretrained` names another checkpoint, e.g. one rebuilt by `vlprompt mini pretrain`)."""
    path = Path(pretrained) if pretrained is not None else checkpoint_path()
    return load_clip(MODEL_NAME, pretrained=path, device=device)


# After the definitions above: these modules import MODEL_NAME / checkpoint_path from here.
from vlprompt.mini.pretrain import pretrain  # noqa: E402
from vlprompt.mini.quickstart import mini_bench, quickstart  # noqa: E402

__all__ = [
    "MODEL_NAME",
    "checkpoint_path",
    "load_mini_clip",
    "mini_bench",
    "pretrain",
    "quickstart",
]
