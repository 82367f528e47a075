"""Loading an open_clip model and running its towers layer by layer, with per-layer hooks.

`load_clip` returns a frozen `ClipBackbone`. Each tower has a layer-wise encoder,
`run_text_layers(x, mask, hook)` / `run_vision_layers(x, mask, hook)`: the one loop over that
tower's open_clip blocks. At block i it computes `block(x, attn_mask=mask)`, or, given a `hook`,
`hook(i, block, x, mask)` instead. A hook may edit the tokens before calling the block (insert or
replace prompt tokens: `ReplaceTokens`), or compute the block another way (keep its keys/values,
run only read-only rows against cached keys/values: `vlprompt.attention`). `encode_image` /
`encode_text` are rebuilt from the pieces (`vision_embed`, `vision_ln_pre`, `run_vision_layers`,
`vision_head`, `token_embedding`, `run_text_layers`, `text_head`) and equal open_clip's own to
float tolerance, so a method that inserts prompts between those pieces changes nothing else.
Weight-file formats are handled in `vlprompt.clip_weights`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.attention import pooled_rows_forward
from vlprompt.errors import CheckpointError, DownloadError, ModelNameError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# A per-layer hook: `hook(i, block, x, mask) -> x` is called at block i of a tower's loop in
# place of `block(x, attn_mask=mask)`. It may edit `x` and then call the block, or compute the
# block another way (vlprompt.attention). One hook object serves one pass through the tower.
LayerHook = Callable[[int, nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


def run_layers(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    hook: LayerHook | None = None,
) -> torch.Tensor:
    """The layer loop of a tower: tokens [B, S, D] through every block of `blocks`, with the
    additive attention `mask` (None: full attention) and an optional per-layer `hook`."""
    for i, block in enumerate(blocks):
        x = block(x, attn_mask=mask) if hook is None else hook(i, block, x, mask)
    return x


@dataclass
class ReplaceTokens:
    """Deep prompts as a per-layer hook: at the input of block i < len(tokens), the k positions
    start..start+k-1 take `tokens[i]` ([k, D], or [B, k, D] per sequence); later blocks run on
    what the previous block returned. With `insert=True`, block 0's tokens are inserted at
    `start` instead (the sequence grows by k; pass a mask sized for the grown sequence).
    `start=None` means the end of the sequence (append, or the last k positions).

    So prompts inserted at layer 0 and replaced at each of the first J layers (IVLP, MaPLe,
    PromptSRC) are `ReplaceTokens([p_0, ..., p_{J-1}], start, insert=True)`. The tokens go in
    as given: embed, add a positional embedding or apply `vision_ln_pre` to them beforehand
    where the method asks for it (ln_pre is per token, so it commutes with the insertion)."""

    tokens: Sequence[torch.Tensor]
    start: int | None = None
    insert: bool = False
    # tokens[j] goes to block first_block + j (1: block 0's prompts are already in the input)
    first_block: int = 0

    def __call__(
        self, i: int, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if self.first_block <= i < self.first_block + len(self.tokens):
            x = self.edit(i, x)
        return block(x, attn_mask=mask)

    def edit(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """`x` with block i's tokens in place (inserted when i == 0 and `insert`)."""
        new = self.tokens[i - self.first_block].to(x.dtype)
        new = new.expand(x.shape[0], -1, -1) if new.dim() == 2 else new
        insert = self.insert and i == 0
        k = new.shape[1]
        start = self.start
        if start is None:
            start = x.shape[1] if insert else x.shape[1] - k
        stop = start if insert else start + k
        if not insert and (start < 0 or stop > x.shape[1]):
            raise ValueError(f"positions {start}..{stop - 1} are outside {x.shape[1]} tokens")
        return torch.cat([x[:, :start], new, x[:, stop:]], dim=1)


def register_model_config(name: str, config: dict[str, Any]) -> None:
    """Make an architecture (open_clip's JSON model config) known to open_clip under `name`.
    open_clip registers configs from files and reads them at once, so the file lives in a
    temporary folder only as long as that takes (nothing is left behind in the temp dir)."""
    with tempfile.TemporaryDirectory(prefix="vlprompt-model-config-") as folder:
        path = Path(folder) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)


def _register_shipped_configs() -> None:
    """Architectures shipped with vlprompt (the mini world's tiny CLIP) are known to open_clip as
    soon as vlprompt is imported, so a saved run on them reloads anywhere."""
    for path in sorted((Path(__file__).parent / "assets").glob("*.json")):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
            open_clip.add_model_config(path)


_register_shipped_configs()


def list_models() -> list[str]:
    """Architectures open_clip (and vlprompt's own configs) know."""
    return open_clip.list_models()


# open_clip model names that bring their own weights: a Hugging Face Hub repository (downloaded)
# or a local folder (config + weights read by open_clip itself, not by vlprompt.clip_weights)
EXTERNAL_SCHEMAS = {"hf-hub:": "a Hugging Face Hub repository", "local-dir:": "a local folder"}


def external_source(name: str) -> str | None:
    """Where an open_clip schema name (`hf-hub:org/repo`, `local-dir:/path`) takes its weights
    from, in words; None for a plain architecture name."""
    for prefix, where in EXTERNAL_SCHEMAS.items():
        if str(name).startswith(prefix):
            return f"{where} ({str(name)[len(prefix) :]})"
    return None


def _check_model_name(name: str) -> None:
    if external_source(name):
        return
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        raise ModelNameError(
            f"unknown model name {name!r}.{hint} `vlprompt.list_models()` lists all {len(known)}."
        )


class ClipBackbone(nn.Module):
    """A frozen open_clip CLIP with its tokenizer, image geometry and the hooks methods use."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        name: str,
        pretrained: str | None,
        quick_gelu: bool,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        if not hasattr(model, "token_embedding") or not hasattr(model, "transformer"):
            raise ModelNameError(
                f"{name} has a custom text tower; vlprompt supports CLIP-style models whose text "
                "tower is open_clip's own transformer (e.g. ViT-B-16, RN50, ViT-L-14)"
            )
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.quick_gelu = quick_gelu
        self.precision = precision
        self._weights_id: str | None = None

    # ---- facts ---------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.model.token_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def is_vit(self) -> bool:
        """True when the image tower is a ViT with a class token (what RPO needs)."""
        v = self.model.visual
        return hasattr(v, "class_embedding") and hasattr(v, "transformer")

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(
            getattr(self.model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        )

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(getattr(self.model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def vision_width(self) -> int:
        v = self.model.visual
        return int(v.class_embedding.shape[0]) if self.is_vit else int(v.output_dim)

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def eot_token_id(self) -> int:
        return int(getattr(self.tokenizer, "eot_token_id", 49407))

    @property
    def sot_token_id(self) -> int:
        return int(getattr(self.tokenizer, "sot_token_id", 49406))

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp of the learned log temperature (100 for OpenAI CLIP)."""
        return self.model.logit_scale.exp()

    @property
    def weights_id(self) -> str:
        """sha256 of every weight (names, shapes, bytes): what feature caches key on."""
        if self._weights_id is None:
            digest = hashlib.sha256()
            for key, value in sorted(self.model.state_dict().items()):
                digest.update(key.encode())
                digest.update(str(tuple(value.shape)).encode())
                digest.update(str(value.dtype).encode())
                flat = value.detach().cpu().contiguous().reshape(-1)  # 0-dim tensors cannot .view
                digest.update(flat.view(torch.uint8).numpy().tobytes())
            self._weights_id = digest.hexdigest()
        return self._weights_id

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "quick_gelu": self.quick_gelu,
            "precision": self.precision,
            "image_size": self.image_size,
            "context_length": self.context_length,
            "text_width": self.text_width,
            "vision_width": self.vision_width,
            "embed_dim": self.embed_dim,
            "is_vit": self.is_vit,
        }

    def train(self, mode: bool = True) -> ClipBackbone:
        """The backbone stays in eval mode whatever the method's mode (no dropout, frozen)."""
        super().train(False)
        return self

    # ---- text hooks ----------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """BPE tokens [N, context_length] (SOT ... EOT, zero padded), on the backbone's device."""
        return self.tokenizer(list(texts)).to(self.device)

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.token_embedding(tokens).to(self.dtype)

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.model.transformer.resblocks

    @property
    def text_positional_embedding(self) -> torch.Tensor:
        return self.model.positional_embedding

    def text_causal_mask(self, length: int | None = None) -> torch.Tensor:
        """Additive causal mask [L, L] (0 on and below the diagonal, -inf above)."""
        mask = self.model.attn_mask
        n = length or mask.shape[0]
        return mask[:n, :n]

    def text_head(self, x: torch.Tensor) -> torch.Tensor:
        """ln_final and the projection, applied to pooled text states [..., width]."""
        x = self.model.ln_final(x)
        proj = self.model.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def run_text_layers(
        self, x: torch.Tensor, mask: torch.Tensor | None, hook: LayerHook | None = None
    ) -> torch.Tensor:
        """Text states [N, L, D] (positional embedding already added) through every text block
        with the additive `mask` (CLIP's: `text_causal_mask(L)`) and an optional per-layer
        `hook` (see `LayerHook`). Returns the last block's output, before ln_final."""
        return run_layers(self.text_blocks, x, mask, hook)

    def encode_text_embeddings(
        self,
        x: torch.Tensor,
        eot_index: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        hook: LayerHook | None = None,
    ) -> torch.Tensor:
        """Text features from token embeddings [N, L, D] (L <= context_length; the causal mask
        makes any L >= max(eot_index)+1 exact). `eot_index` [N] picks the pooled position."""
        n = x.shape[1]
        x = x + self.text_positional_embedding[:n].to(x.dtype)
        mask = self.text_causal_mask(n) if attn_mask is None else attn_mask
        x = self.run_text_layers(x, mask, hook)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot_index]
        return self.text_head(pooled)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Equal to open_clip's `encode_text`, computed through the hooks."""
        tokens = tokens.to(self.device)
        feats = self.encode_text_embeddings(self.token_embedding(tokens), tokens.argmax(dim=-1))
        return F.normalize(feats, dim=-1) if normalize else feats

    # ---- vision hooks --------------------------------------------------------------------
    def _require_vit(self) -> None:
        if not self.is_vit:
            raise ModelNameError(
                f"{self.name} has no ViT image tower (no class/patch tokens); "
                "this needs a ViT backbone such as ViT-B-16"
            )

    def vision_embed(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> tokens [B, 1 + patches, width]: conv patches, CLS, positional embedding
        (before ln_pre). Patch dropout is never applied: the backbone is frozen and in eval."""
        self._require_vit()
        v = self.model.visual
        x = v.conv1(images.to(self.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        return x + v.positional_embedding.to(x.dtype)

    def vision_ln_pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.visual.ln_pre(x)

    @property
    def vision_blocks(self) -> nn.ModuleList:
        self._require_vit()
        return self.model.visual.transformer.resblocks

    def run_vision_layers(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        hook: LayerHook | None = None,
    ) -> torch.Tensor:
        """Vision states [B, S, D] (after `vision_ln_pre`) through every vision block, with an
        optional additive `mask` (CLIP's is none) and per-layer `hook` (see `LayerHook`)."""
        return run_layers(self.vision_blocks, x, mask, hook)

    def vision_head(self, x: torch.Tensor) -> torch.Tensor:
        """ln_post and the projection, applied to pooled vision states [..., width]."""
        v = self.model.visual
        x = v.ln_post(x)
        return x @ v.proj if v.proj is not None else x

    def encode_image(
        self, images: torch.Tensor, normalize: bool = False, pooled_only: bool = False
    ) -> torch.Tensor:
        """Equal to open_clip's `encode_image`; ViTs go through the hooks, ResNets through
        open_clip's tower (no method inserts tokens into a ResNet). `pooled_only`: the last
        block computes the CLS row alone (the other rows give only their keys and values;
        `vlprompt.attention.pooled_rows_forward`), the same features to float tolerance for
        about 1/depth less work: what an exported model runs."""
        images = images.to(self.device)
        if not self.is_vit or not _standard_vit(self.model.visual):
            feats = self.model.encode_image(images.to(self.dtype))
        else:
            x = self.vision_ln_pre(self.vision_embed(images))
            if pooled_only:
                x = run_layers(self.vision_blocks[:-1], x)
                x = pooled_rows_forward(self.vision_blocks[-1], x, None)
            else:
                x = self.run_vision_layers(x)
            feats = self.vision_head(x[:, 0])
        return F.normalize(feats, dim=-1) if normalize else feats


def _standard_vit(visual: nn.Module) -> bool:
    """A ViT pooled on its class token with ln_post before pooling (CLIP's own layout)."""
    return (
        getattr(visual, "attn_pool", None) is None
        and getattr(visual, "pool_type", "tok") == "tok"
        and not getattr(visual, "final_ln_after_pool", False)
    )


def load_clip(
    name: str,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    *,
    quick_gelu: bool | None = None,
    trust_torchscript: bool = False,
    cache_dir: str | None = None,
) -> ClipBackbone:
    """Load a frozen CLIP: architecture `name` (any open_clip model name) with weights from
    `pretrained`:

    - `None`: random initialisation (tests, or training from scratch);
    - an open_clip pretrained tag (`"openai"`, `"laion2b_s34b_b88k"`, ...): downloaded by open_clip;
    - a local file: OpenAI state dict or TorchScript archive (`.pt`, needs `trust_torchscript=True`
      because a TorchScript archive can run code), open_clip state dict (`.pt`/`.bin`/`.pth`) or
      `.safetensors`;
    - a Hugging Face CLIP folder (`config.json` + `model.safetensors`).

    `quick_gelu=None` decides from the weights: OpenAI weights (tags whose open_clip config says
    so, e.g. `openai`; TorchScript archives; OpenAI-layout state dicts, recognised by their
    `input_resolution`/`context_length`/`vocab_size` entries; HF configs with `quick_gelu`) need
    QuickGELU. A plain state dict of OpenAI weights without those entries cannot be told apart
    from an open_clip one: pass `quick_gelu=True` for it.

    With `HF_HUB_OFFLINE=1` (or `TRANSFORMERS_OFFLINE=1`) a tag loads only from the local cache
    (`cache_dir`, or the Hugging Face / `~/.cache/clip` defaults) and otherwise fails at once with
    a `DownloadError`; `name` may be spelled the OpenAI way (`"ViT-B/16"`).
    """
    from vlprompt.clip_weights import is_local_source, read_checkpoint

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if not external_source(name):
        name = name.replace("/", "-")  # OpenAI spells "ViT-B/16", open_clip "ViT-B-16"
    _check_model_name(name)
    with _external_errors(name):
        tokenizer = open_clip.get_tokenizer(name)

    if pretrained is not None and is_local_source(pretrained):
        ckpt = read_checkpoint(Path(pretrained), trust_torchscript=trust_torchscript)
        qg = ckpt.quick_gelu if quick_gelu is None else quick_gelu
        with quiet_random_init():  # the weights are loaded just below
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=qg)
        _load_fitting_state_dict(model, ckpt.state_dict, Path(pretrained), name)
        source = str(pretrained)
    elif pretrained is not None:
        tag = str(pretrained)
        qg, model = _create_from_tag(name, tag, quick_gelu, cache_dir)
        source = tag
    else:
        qg = bool(quick_gelu)
        with quiet_random_init(), _external_errors(name):  # random or the schema's own weights
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=qg)
        source = None

    model = model.to(device=device)
    if precision != "fp32":
        model = model.to(dtype=PRECISIONS[precision])
    return ClipBackbone(model, tokenizer, name, source, qg, precision)


@contextmanager
def _external_errors(name: str) -> Iterator[None]:
    """open_clip's errors for a schema name (a missing folder or config, a pickle holding more
    than tensors, no network) as one CheckpointError line; plain names pass through."""
    where = external_source(name)
    if where is None:
        yield
        return
    try:
        yield
    except Exception as exc:  # open_clip raises FileNotFoundError, ValueError, UnpicklingError, ...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise CheckpointError(
            f"cannot load {name!r} from {where}: {type(exc).__name__}: {detail[:300]}. open_clip "
            "reads it with torch.load(weights_only=True), which refuses files holding anything but "
            "tensors; use a folder with open_clip_config.json and .safetensors weights, or "
            "--backbone ARCH --pretrained /path/to/weights"
        ) from None


def _create_from_tag(
    name: str, tag: str, quick_gelu: bool | None, cache_dir: str | None
) -> tuple[bool, nn.Module]:
    """Create `name` with the weights of open_clip's pretrained `tag` (downloaded or cached)."""
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag.lower().replace("-", "_") not in tags:  # open_clip's own tag normalisation
        close = difflib.get_close_matches(tag.lower(), tags, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CheckpointError(
            f"{tag!r} is neither a local file/folder nor a pretrained tag of {name}.{hint} "
            f"Tags for {name}: {', '.join(tags) or 'none'}"
        )
    cfg = open_clip.get_pretrained_cfg(name, tag)
    # OpenAI's weights (and a few others, e.g. MetaCLIP) were trained with QuickGELU
    qg = bool(cfg.get("quick_gelu", False)) if quick_gelu is None else quick_gelu
    how_to_fix = (
        "Download the checkpoint on a machine with network access and pass a local checkpoint "
        "path instead: load_clip(name, pretrained='/path/to/checkpoint.safetensors') or "
        "`--pretrained /path/to/checkpoint`"
    )
    if _offline_requested():
        # huggingface_hub reads HF_HUB_OFFLINE only when it is imported; decide here so an
        # offline run never waits on network retries
        cached = _cached_pretrained_file(cfg, cache_dir)
        if cached is None:
            raise DownloadError(
                f"weights {name}/{tag} are not in the local cache and offline mode is on "
                f"(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE). {how_to_fix}"
            )
        preprocess = {
            k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg
        }
        model = open_clip.create_model(
            name, pretrained=cached, force_quick_gelu=qg, force_preprocess_cfg=preprocess
        )
        return qg, model
    try:
        model = open_clip.create_model(
            name, pretrained=tag, force_quick_gelu=qg, cache_dir=cache_dir
        )
    except Exception as exc:  # open_clip/huggingface_hub raise many kinds when offline
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise DownloadError(
            f"could not download weights {name}/{tag} ({type(exc).__name__}: {detail}). "
            f"Offline? {how_to_fix}"
        ) from exc
    return qg, model


def _offline_requested() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _cached_pretrained_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """The already-downloaded file of an open_clip pretrained config, if any (no network)."""
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename]
        if filename == "open_clip_pytorch_model.bin":
            candidates.insert(0, "open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for candidate in candidates:
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    url = cfg.get("url", "")
    if url:
        path = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def quiet_random_init() -> Iterator[None]:
    """Hide open_clip's "No pretrained weights loaded ... initialized randomly" warning where
    that is deliberate (random init asked for, or weights loaded by vlprompt right after)."""
    root = logging.getLogger()
    notice_filter = _DropRandomInitNotice()
    root.addFilter(notice_filter)
    try:
        yield
    finally:
        root.removeFilter(notice_filter)


def _load_fitting_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path, name: str
) -> None:
    """Load `state_dict` into `model`, naming the first key that is missing or mis-shaped."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in state_dict:
            raise CheckpointError(
                f"{path}: checkpoint does not fit {name}: key {key!r} is missing "
                f"(is this checkpoint for another architecture?)"
            )
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: checkpoint does not fit {name}: {key!r} has shape "
                f"{tuple(state_dict[key].shape)}, {name} needs {tuple(value.shape)}"
            )
    unexpected = sorted(set(state_dict) - set(own))
    if unexpected:
        raise CheckpointError(
            f"{path}: checkpoint does not fit {name}: unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} unexpected in all)"
        )
    model.load_state_dict({k: state_dict[k].to(own[k].dtype) for k in own}, strict=True)
