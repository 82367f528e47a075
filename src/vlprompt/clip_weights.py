"""Reading local CLIP weight files (checkpoints) of every common format into open_clip's
state-dict layout.

Formats: OpenAI state dict or TorchScript archive (`.pt`), open_clip state dict (`.pt`, `.pth`,
`.bin`, possibly wrapped as `{"state_dict": ...}` by open_clip's trainer), `.safetensors`
(open_clip or Hugging Face layout) and Hugging Face CLIP folders. Pickle-based files load with
`weights_only=True`; TorchScript archives only with an explicit opt-in.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from vlprompt.errors import CheckpointError

ACCEPTED = (
    "OpenAI CLIP state dict or TorchScript archive (.pt), open_clip state dict (.pt/.pth/.bin), "
    ".safetensors (open_clip or Hugging Face layout), Hugging Face CLIP folder "
    "(config.json + model.safetensors)"
)
_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]  # open_clip layout
    quick_gelu: bool  # whether the weights were trained with QuickGELU
    format: str  # "openai", "torchscript", "open_clip", "huggingface"


def is_local_source(pretrained: str | Path) -> bool:
    """True when `pretrained` names a file or folder rather than an open_clip tag."""
    text = str(pretrained)
    path = Path(text).expanduser()
    return (
        path.exists()
        or "/" in text
        or "\\" in text
        or path.suffix.lower() in _PICKLE_SUFFIXES | {".safetensors"}
    )


def read_checkpoint(path: Path, trust_torchscript: bool = False) -> Checkpoint:
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (no such file or folder)")
    if path.is_dir():
        return _read_hf_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _from_state_dict(_safe_load_safetensors(path), path)
    if suffix in _PICKLE_SUFFIXES:
        if _is_torchscript(path):
            if not trust_torchscript:
                raise CheckpointError(
                    f"{path} is a TorchScript archive, which can execute code when loaded; "
                    "load it only if you trust its source, with trust_torchscript=True "
                    "(CLI: --trust-torchscript)"
                )
            try:
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
            except Exception as exc:  # torch raises RuntimeError, ValueError, ... on bad archives
                raise CheckpointError(
                    f"{path}: not a readable TorchScript archive ({type(exc).__name__}: "
                    f"{_first_line(exc)}); it may be truncated: download it again. "
                    f"Accepted: {ACCEPTED}"
                ) from None
            ckpt = _from_state_dict(dict(sd), path)
            return Checkpoint(ckpt.state_dict, True, "torchscript")
        return _from_state_dict(_unwrap(_load_pickle_weights(path), path), path)
    raise CheckpointError(
        f"{path}: unrecognised checkpoint format {suffix!r}. Accepted: {ACCEPTED}"
    )


def _load_pickle_weights(path: Path) -> object:
    """torch.load restricted to tensors and plain containers: never runs a pickle's code."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)}). "
            "Files holding anything but tensors are refused; a truncated download is "
            f"refused too (download it again). Accepted: {ACCEPTED}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def _safe_load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({type(exc).__name__}: "
            f"{_first_line(exc)}); it may be truncated or damaged: download it again"
        ) from exc


def _is_torchscript(path: Path) -> bool:
    """Whether `path` is a TorchScript archive; a damaged zip is not (torch.load names it)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors. Accepted: {ACCEPTED}")
    # open_clip's trainer saves DDP ("module.") and torch.compile ("_orig_mod.") prefixes
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def _from_state_dict(sd: dict[str, torch.Tensor], path: Path) -> Checkpoint:
    if any(k.startswith(("text_model.", "vision_model.")) for k in sd):
        # a lone Hugging Face weights file: its activation is in a config.json beside it, if any
        config_path = path.parent / "config.json"
        quick = _hf_quick_gelu(config_path) if config_path.is_file() else True
        return Checkpoint(_convert_hf(sd, path), quick, "huggingface")
    if "positional_embedding" not in sd and "text.positional_embedding" not in sd:
        raise CheckpointError(
            f"{path}: does not look like a CLIP checkpoint (no positional_embedding). "
            f"Accepted: {ACCEPTED}"
        )
    # OpenAI's archives carry these three scalars; their weights need QuickGELU
    is_openai = any(k in sd for k in _OPENAI_EXTRA_KEYS)
    clean = {k: v for k, v in sd.items() if k not in _OPENAI_EXTRA_KEYS}
    return Checkpoint(clean, is_openai, "openai" if is_openai else "open_clip")


def _hf_quick_gelu(config_path: Path) -> bool:
    """Whether a Hugging Face CLIP config.json uses QuickGELU (OpenAI's CLIPs do)."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: not a readable JSON config ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{config_path}: holds {type(config).__name__}, not a Hugging Face CLIP config "
            "(a JSON object)"
        )
    text = config.get("text_config") or {}
    if not isinstance(text, dict):
        raise CheckpointError(f"{config_path}: 'text_config' is not a JSON object")
    return text.get("hidden_act", config.get("hidden_act", "quick_gelu")) == "quick_gelu"


def _read_hf_folder(path: Path) -> Checkpoint:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{path} is a folder without config.json; a Hugging Face CLIP folder holds "
            "config.json + model.safetensors"
        )
    quick = _hf_quick_gelu(config_path)
    if (path / "model.safetensors").is_file():
        sd = _safe_load_safetensors(path / "model.safetensors")
    elif (path / "model.safetensors.index.json").is_file():
        sd = {}
        for shard in _index_shards(path / "model.safetensors.index.json"):
            sd.update(_safe_load_safetensors(path / shard))
    elif (path / "pytorch_model.bin").is_file():
        sd = _unwrap(_load_pickle_weights(path / "pytorch_model.bin"), path / "pytorch_model.bin")
    else:
        raise CheckpointError(
            f"{path}: no weights found; a Hugging Face CLIP folder holds model.safetensors "
            "(or model.safetensors.index.json + shards, or pytorch_model.bin) beside config.json"
        )
    if not any(k.startswith(("text_model.", "vision_model.")) for k in sd):
        raise CheckpointError(f"{path}: the weights are not a Hugging Face CLIPModel's")
    return Checkpoint(_convert_hf(sd, path), quick, "huggingface")


def _convert_hf(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """`hf_to_open_clip_state_dict`, its errors naming the file or folder `path`."""
    try:
        return hf_to_open_clip_state_dict(sd)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _index_shards(index_path: Path) -> list[str]:
    """The shard files a Hugging Face `model.safetensors.index.json` names (CheckpointError if
    it is not such an index)."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{index_path}: not a readable JSON index ({exc})") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if (
        not isinstance(weight_map, dict)
        or not weight_map
        or not all(isinstance(v, str) and v for v in weight_map.values())
    ):
        raise CheckpointError(
            f"{index_path}: not a safetensors index (expected a JSON object whose 'weight_map' "
            "maps weight names to shard files)"
        )
    return sorted(set(weight_map.values()))


def hf_to_open_clip_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a Hugging Face `CLIPModel` state dict to open_clip's CLIP layout (pure function)."""
    out: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, torch.Tensor]] = {}
    renames = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
        "logit_scale": "logit_scale",
    }
    block_renames = {
        "self_attn.out_proj": "attn.out_proj",
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    for key, value in sd.items():
        if key in renames:
            out[renames[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif ".encoder.layers." in key and "." in key.split(".encoder.layers.", 1)[1]:
            tower, rest = key.split(".encoder.layers.", 1)
            index, sub = rest.split(".", 1)
            prefix = (
                "" if tower == "text_model" else "visual."
            ) + f"transformer.resblocks.{index}."
            if sub.startswith("self_attn.") and sub.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                layers.setdefault(prefix, {})[sub] = value
                continue
            for old, new in block_renames.items():
                if sub.startswith(old + "."):
                    out[prefix + new + sub[len(old) :]] = value
                    break
            else:
                raise CheckpointError(f"Hugging Face key {key!r} has no open_clip counterpart")
        elif key.endswith("position_ids"):
            continue
        else:
            raise CheckpointError(f"Hugging Face key {key!r} has no open_clip counterpart")
    for prefix, parts in layers.items():
        for kind in ("weight", "bias"):
            names = [f"self_attn.{p}_proj.{kind}" for p in "qkv"]
            absent = [n for n in names if n not in parts]
            if absent:
                raise CheckpointError(
                    f"Hugging Face weights lack {absent[0]!r} of layer {prefix!r} (its q, k and v "
                    "projections go together); the file is incomplete"
                )
            try:
                merged = torch.cat([parts[n] for n in names], dim=0)
            except RuntimeError as exc:
                raise CheckpointError(
                    f"Hugging Face q/k/v projections of layer {prefix!r} do not fit together "
                    f"({_first_line(exc)})"
                ) from None
            out[prefix + f"attn.in_proj_{kind}"] = merged
    return out
