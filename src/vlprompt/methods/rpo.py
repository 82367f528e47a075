"""RPO — Read-only Prompt Optimization (Lee et al., ICCV 2023), on any open_clip ViT.

K learnable prompt pairs: text prompt i sits after each class's EOS token, vision prompt i after
the patch tokens. Masked attention lets the prompts read the frozen tokens while no frozen token
reads a prompt (and no prompt reads a prompt, itself included), so CLIP's own token states never
change. Prompt i of the image pairs with prompt i of the text; logits are the mean over the K
pairs of CLIP's scaled cosine similarity. Behaviour follows the official `trainers/rpo.py` with
config `main_K24.yaml` (docs/reproduce.md lists its values).

Two implementations give the same numbers (tested to fp32 tolerance, logits and gradients):

- `"reference"`: the paper's formulation. Full sequences (tokens + prompts) go through open_clip's
  blocks with the full additive mask, all under autograd. The text sequence is laid out like the
  official code: all context slots, prompt i of class c overwriting slot eos_c + 1 + i (the
  padding after EOS), each row seeing only columns 0..eos_c (causally). Where a long text leaves
  no room for K prompts, the sequence grows past the context (the official code fails there).
- `"fast"` (default): the frozen tokens are plain frozen CLIP, computed without autograd; at each
  layer only the K prompt rows go through the block, attending to that layer's cached frozen
  keys/values (`vlprompt.attention`). The text keys/values of every class are computed once per
  class list. Backward touches K rows per image/class instead of all tokens.

Departures from the official code, on purpose:
- Precision: the official configs set PREC "fp16" (`configs/trainers/RPO/main_K24.yaml`): CLIP,
  the prompts (created in CLIP's dtype), the attention masks and the SGD updates are fp16, with
  no loss scaling. Here the prompts are fp32, the logits are computed in fp32 under any
  autocast, and the engine's precision applies to the passes (`--precision`: fp32 on the CPU; on
  CUDA fp16 autocast with a GradScaler by default).
- Sizes come from the backbone (official: ViT-B/16 at 224 px: 14 x 14 patches, vision width
  768 and text width 512 hard-coded).
- Where a long class prompt leaves no room for the K text prompts after its EOS within the
  context length, the sequence grows past it (the official code fails there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlprompt.attention import (
    CollectKeyValues,
    KeyValues,
    ReadOnlyRows,
    block_keys_values,
    check_block,
)
from vlprompt.backbone import ClipBackbone, run_layers
from vlprompt.chunking import encode_in_chunks
from vlprompt.errors import RPOError
from vlprompt.methods.base import (
    IMPLEMENTATIONS,
    RUNTIME,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    TrainOutput,
    features_key,
    full_precision,
)
from vlprompt.methods.method_config import check_at_most
from vlprompt.methods.prompt_context import CHUNK_WHY, MAX_CHUNK
from vlprompt.methods.registry import register_method

MASKS = ("readonly", "none")
INITS = ("special", "random")
# official ST-init: each prompt vector moves by its own random direction of norm 0.1
INIT_NOISE_NORM = 0.1
_CACHE_CHUNK = 128  # classes per chunk when caching the frozen text keys/values (bounds memory)


@dataclass
class RPOConfig(MethodConfig):
    """RPO settings; defaults are the official base-to-new config `main_K24.yaml`."""

    K: int = field(
        default=24,
        metadata={
            "help": "prompt pairs (text prompt i pairs with vision prompt i); 4 for extreme "
            "few-shot"
        },
    )
    implementation: str = field(
        default="fast",
        metadata={
            "help": "'fast': frozen tokens without autograd, only the K prompt rows "
            "differentiated (same numbers); 'reference': the paper's full masked forward "
            "(benchmarks and tests compare against it)"
        },
    )
    text_chunk_size: int = field(
        default=256,
        metadata={
            "help": "fast path: classes per chunk of the text forward (training and "
            "evaluation); while training with more than one chunk, each chunk is recomputed in "
            "backward (activation checkpointing) so peak memory stays bounded at 1000 classes; "
            "costs one extra text forward per step, same numbers; 0 = all classes at once",
            **RUNTIME,
        },
    )
    mask: str = field(
        default="readonly",
        metadata={
            "help": "'readonly' = the read-only masked attention; 'none' = the prompts join "
            "ordinary attention (text: CLIP's causal mask; image: no mask), so frozen image "
            "tokens read the prompts (the paper's ablation without masked attention); runs the "
            "reference path"
        },
    )
    init: str = field(
        default="special",
        metadata={
            "help": "'special' = ST-init (EOT / class embedding + noise of norm 0.1); 'random' "
            "= N(0, 0.02^2) per element, CoOp's random init (the paper's ablation)"
        },
    )
    lr: float = field(
        default=0.01,
        metadata={"help": "SGD learning rate; 0.005 for domain generalisation (ImageNet source)"},
    )
    epochs: int = field(default=15, metadata={"help": "training epochs"})
    batch_size: int = field(default=4, metadata={"help": "images per step"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.K, int) or self.K < 1:
            raise RPOError(f"RPO needs K >= 1 prompt pairs, got K={self.K!r} (the paper uses 24)")
        if not isinstance(self.text_chunk_size, int) or self.text_chunk_size < 0:
            raise RPOError(
                f"text_chunk_size must be an integer >= 0 (0 = no chunking), "
                f"got {self.text_chunk_size!r}"
            )
        check_at_most("text_chunk_size", self.text_chunk_size, MAX_CHUNK, CHUNK_WHY)
        if self.mask not in MASKS:
            raise RPOError(f"RPO mask must be one of {MASKS}, got {self.mask!r}")
        if self.init not in INITS:
            raise RPOError(f"RPO init must be one of {INITS}, got {self.init!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise RPOError(
                f"RPO implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )


@dataclass
class _TextCache:
    """Frozen text facts of one class list: what the fast text path reads every step."""

    key: tuple
    kv: list[KeyValues]  # per layer, [C, H, T, head_dim], T = longest SOS..EOS
    key_mask: torch.Tensor  # [C, 1, 1, T] additive: class c's prompts see only columns 0..eos_c
    eos_features: torch.Tensor  # [C, embed_dim] frozen CLIP text features (not normalised)


@register_method
class RPO(PromptMethod):
    """Read-only prompts on both towers of a frozen open_clip ViT."""

    name = "rpo"
    config_class = RPOConfig
    # the official configs use "a photo of a {}." for every data set, not CoOp's per-data-set ones
    uses_dataset_template: ClassVar[bool] = False

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: RPOConfig) -> None:
        super().__init__(clip, classnames, config)
        _check_backbone(clip, "reference" if config.mask == "none" else config.implementation)
        self.config: RPOConfig = config
        check_at_most("K", config.K, clip.context_length, "the official code puts the K text "
                      f"prompts in free positions of {clip.name}'s {clip.context_length}-token "
                      "text context; the paper uses 24")  # fmt: skip
        if config.init == "random":
            text_init, vision_init = _random_init(clip, config.K)
        else:
            text_init, vision_init = _special_token_init(clip, config.K)
        self.text_prompt = nn.Parameter(text_init)  # [K, text_width]
        self.vision_prompt = nn.Parameter(vision_init)  # [K, vision_width]
        self._text_cache: _TextCache | None = None
        self._eval_text = KeyedCache()

    # ---- public API -----------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_train(images).logits

    def forward_train(self, images: torch.Tensor) -> TrainOutput:
        """Logits and the frozen CLIP image features (normalised CLS output), which ProGrad's
        teacher reuses so it needs no image pass of its own."""
        image_prompts, cls_features = self.encode_image(images)
        logits = self.pair_logits(image_prompts, self.class_side())
        return TrainOutput(logits, F.normalize(cls_features.detach(), dim=-1))

    def pair_logits(self, image_prompts: torch.Tensor, text_prompts: torch.Tensor) -> torch.Tensor:
        """(1/K) sum_i logit_scale * img[:, i] @ text[:, i].T for normalised prompt features
        img [B, K, E] and text [C, K, E]; in fp32 under autocast too."""
        k = image_prompts.shape[1]
        with full_precision(image_prompts.device):
            img, text = image_prompts.float(), text_prompts.float()
            return self.clip.logit_scale.float() * torch.einsum("bke,cke->bc", img, text) / k

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised vision prompt features [B, K, E] and the frozen CLS features [B, E]
        (ln_post + projection, not normalised)."""
        images = images.to(self.clip.device)
        if self._reference_path:
            prompts, cls = self._reference_image(images)
        else:
            prompts, cls = self._fast_image(images)
        return F.normalize(prompts, dim=-1), cls

    def text_features(self) -> torch.Tensor:
        """Normalised text prompt features [C, K, E] of the current class names. Without
        autograd (evaluation) they are computed once per prompt value and class list."""
        if self._reference_path:
            return F.normalize(self._reference_text()[0], dim=-1)
        if torch.is_grad_enabled() and self.text_prompt.requires_grad:
            self._eval_text.clear()
            return F.normalize(self._fast_text(), dim=-1)
        key = (self._class_key(), self.text_prompt._version, self.text_prompt.data_ptr())
        return self._eval_text.get(key, lambda: F.normalize(self._fast_text(), dim=-1))

    def frozen_text_features(self) -> torch.Tensor:
        """Frozen CLIP features at each class's EOS (not normalised), from the text cache."""
        return self._frozen_text().eos_features

    def set_classnames(self, classnames: list[str]) -> None:
        super().set_classnames(classnames)
        self._text_cache = None
        self._eval_text.clear()

    @property
    def _reference_path(self) -> bool:
        """The full forward: asked for, or needed by the unmasked ablation (tokens read the
        prompts, so frozen states cannot be cached)."""
        return self.config.implementation == "reference" or self.config.mask == "none"

    # ---- text -----------------------------------------------------------------------------
    def _texts(self) -> list[str]:
        return [self.config.template.format(c.replace("_", " ")) for c in self.classnames]

    def _class_key(self) -> tuple:
        """What the text caches depend on besides the prompts (`features_key`): the frozen
        keys/values computed under bf16/fp16 autocast are in that dtype, so the autocast dtype
        is part of it."""
        return features_key(self.clip, self.classnames, self.config.template)

    def _frozen_text(self) -> _TextCache:
        """Per-layer keys/values of every class's SOS..EOS tokens, computed once per class list
        (frozen CLIP: they never depend on the prompts). Stored only up to the longest EOS."""
        key = self._class_key()
        if self._text_cache is not None and self._text_cache.key == key:
            return self._text_cache
        self._text_cache = None  # free the old cache before building the new one
        clip = self.clip
        tokens = clip.tokenize(self._texts())
        eos = tokens.argmax(dim=-1)
        length = int(eos.max()) + 1
        causal = clip.text_causal_mask(length)
        chunks: list[list[KeyValues]] = []
        eos_features = []
        with torch.no_grad():
            for start in range(0, tokens.shape[0], _CACHE_CHUNK):
                tok = tokens[start : start + _CACHE_CHUNK, :length]
                x = clip.token_embedding(tok) + clip.text_positional_embedding[:length].to(
                    clip.dtype
                )
                collect = CollectKeyValues()
                x = clip.run_text_layers(x, causal, collect)
                chunks.append(collect.kv)
                rows = torch.arange(tok.shape[0], device=tok.device)
                eos_features.append(clip.text_head(x[rows, eos[start : start + _CACHE_CHUNK]]))
            kv = [
                KeyValues(torch.cat([c[i].k for c in chunks]), torch.cat([c[i].v for c in chunks]))
                for i in range(len(clip.text_blocks))
            ]
        columns = torch.arange(length, device=tokens.device)
        key_mask = torch.zeros(len(eos), 1, 1, length, dtype=clip.dtype, device=tokens.device)
        key_mask.masked_fill_((columns[None, :] > eos[:, None])[:, None, None, :], float("-inf"))
        self._text_cache = _TextCache(key, kv, key_mask, torch.cat(eos_features))
        return self._text_cache

    def _fast_text(self) -> torch.Tensor:
        """Text prompt outputs [C, K, E] (ln_final + projection, not normalised): only the
        prompt rows go through each block, reading the cached frozen keys/values."""
        cache = self._frozen_text()
        prompt = self.text_prompt.to(self.clip.dtype)

        def encode(rows: slice) -> torch.Tensor:
            return self._text_rows(prompt, cache, rows.start, rows.stop)

        n_classes, chunk = cache.key_mask.shape[0], self.config.text_chunk_size
        return encode_in_chunks(encode, n_classes, chunk, "auto", checkpoint_fn=checkpoint)

    def _text_rows(
        self, prompt: torch.Tensor, cache: _TextCache, start: int, stop: int
    ) -> torch.Tensor:
        """Prompt outputs of classes start..stop-1 (the prompts have no positional embedding)."""
        mask = cache.key_mask[start:stop]
        rows = prompt.unsqueeze(0).expand(mask.shape[0], -1, -1)
        part = [KeyValues(kv.k[start:stop], kv.v[start:stop]) for kv in cache.kv]
        rows = self.clip.run_text_layers(rows, mask, ReadOnlyRows(part))
        return self.clip.text_head(rows)

    def _reference_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The official layout and masks, through open_clip's blocks under autograd. Returns the
        prompt outputs [C, K, E] and the EOS outputs [C, E] (both not normalised)."""
        clip = self.clip
        k = self.config.K
        tokens = clip.tokenize(self._texts())
        n_classes, context = tokens.shape
        eos = tokens.argmax(dim=-1)
        # all context slots as in the official code; more only where the prompts of a long text
        # would not fit (the official code fails there; prompts have no position, so it is fine)
        length = max(context, int(eos.max()) + 1 + k)
        x = torch.zeros(n_classes, length, clip.text_width, dtype=clip.dtype, device=clip.device)
        x[:, :context] = clip.token_embedding(tokens) + clip.text_positional_embedding.to(
            clip.dtype
        )
        classes = torch.arange(n_classes, device=clip.device)[:, None]
        slots = eos[:, None] + 1 + torch.arange(k, device=clip.device)[None, :]  # [C, K]
        x = x.index_put((classes, slots), self.text_prompt.to(clip.dtype).expand(n_classes, k, -1))
        mask = torch.full((length, length), float("-inf"), device=clip.device).triu(1)
        columns = torch.arange(length, device=clip.device)
        hidden = (columns[None, :] > eos[:, None]).to(clip.device)  # [C, length]
        if self.config.mask == "none":  # CLIP's causal mask alone: prompts see what precedes
            hidden = torch.zeros_like(hidden)
        mask = mask[None].masked_fill(hidden[:, None, :], float("-inf"))  # [C, L, L]
        heads = clip.text_blocks[0].attn.num_heads
        mask = mask[:, None].expand(-1, heads, -1, -1).reshape(n_classes * heads, length, length)
        x = clip.run_text_layers(x, mask.to(x.dtype))
        prompts = clip.text_head(x[classes, slots])
        eos_out = clip.text_head(x[classes[:, 0], eos])
        return prompts, eos_out

    # ---- image ----------------------------------------------------------------------------
    @property
    def has_frozen_image_state(self) -> bool:
        """The fast path reads the image tower only through `frozen_image_state`."""
        return not self._reference_path

    def frozen_image_state(self, images: torch.Tensor) -> tuple[list[KeyValues], torch.Tensor]:
        """What the fast path needs of the frozen image tower, without autograd: each layer's
        keys/values of the CLS + patch tokens and the frozen CLS features [B, E] (not
        normalised). It never depends on the prompts (`vlprompt.view_pool` stores it)."""
        clip = self.clip
        collect = CollectKeyValues()
        with torch.no_grad():
            x = clip.run_vision_layers(clip.vision_ln_pre(clip.vision_embed(images)), None, collect)
            cls = clip.vision_head(x[:, 0])
        return collect.kv, cls

    def prompt_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised vision prompt features [B, K, E] alone, what the logits read (an exported
        RPO computes this). Without the frozen CLS features, the frozen tokens' outputs of the
        last block are read by nobody: there they give only their keys and values (2 of the 12
        d x d products per token of a block). With 24 prompt rows a ViT-B/16 image pass then
        costs 1.03x zero-shot CLIP's linear work instead of 1.10x."""
        images = images.to(self.clip.device)
        if self._reference_path:
            return self.encode_image(images)[0]
        return F.normalize(self._prompt_rows(self.frozen_keys_values(images)), dim=-1)

    def frozen_keys_values(self, images: torch.Tensor) -> list[KeyValues]:
        """`frozen_image_state`'s keys/values, the last block's from its ln_1 and key/value
        projections only (no attention or MLP for the frozen tokens there)."""
        clip = self.clip
        blocks = clip.vision_blocks
        collect = CollectKeyValues()
        with torch.no_grad():
            x = clip.vision_ln_pre(clip.vision_embed(images))
            x = run_layers(blocks[:-1], x, None, collect)
            return [*collect.kv, block_keys_values(blocks[-1], x)]

    def _fast_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kvs, cls = self.frozen_image_state(images)
        return self._prompt_rows(kvs), cls

    def _prompt_rows(self, kvs: list[KeyValues]) -> torch.Tensor:
        """The K vision prompt outputs [B, K, E] (ln_post + projection, not normalised), each
        block reading the frozen tokens' keys/values `kvs` (batch B)."""
        clip = self.clip
        prompt = clip.vision_ln_pre(self.vision_prompt.to(clip.dtype))  # no positional embedding
        rows = prompt.unsqueeze(0).expand(kvs[0].k.shape[0], -1, -1)
        rows = clip.run_vision_layers(rows, None, ReadOnlyRows(kvs))
        return clip.vision_head(rows)

    def _reference_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[CLS, patches] + pos emb, then the K prompts; ln_pre on all; no row sees a prompt."""
        clip = self.clip
        x = clip.vision_embed(images)
        n_tokens = x.shape[1]
        prompts = self.vision_prompt.to(clip.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        x = clip.vision_ln_pre(torch.cat([x, prompts], dim=1))
        size = x.shape[1]
        mask = torch.zeros(size, size, dtype=x.dtype, device=x.device)
        if self.config.mask == "readonly":
            mask[:, n_tokens:] = float("-inf")
        x = clip.run_vision_layers(x, mask)
        cls = clip.vision_head(x[:, 0])
        if self.config.mask == "none":  # the CLS state now reads the prompts: not frozen CLIP's
            cls = self.frozen_image_state(images)[1]
        return clip.vision_head(x[:, n_tokens:]), cls


def _check_backbone(clip: ClipBackbone, implementation: str) -> None:
    if not clip.is_vit:
        raise RPOError(
            f"RPO needs a ViT image tower (class and patch tokens to append prompts to); "
            f"{clip.name} has a {type(clip.visual).__name__} image tower. "
            "Use a ViT backbone such as ViT-B-16, or another method (e.g. coop)"
        )
    if getattr(clip.visual, "attn_pool", None) is not None:
        raise RPOError(f"RPO does not support {clip.name}: its ViT pools with attention")
    if getattr(clip.model, "attn_mask", None) is None:
        raise RPOError(
            f"RPO needs a causal text tower; {clip.name}'s text tower has no causal mask"
        )
    if implementation != "fast":
        return
    for tower, blocks in (("text", clip.text_blocks), ("image", clip.vision_blocks)):
        reason = next((r for r in map(check_block, blocks) if r is not None), None)
        if reason is not None:
            raise RPOError(
                f"RPO's fast path cannot run {clip.name}'s {tower} blocks ({reason}); "
                "use implementation='reference'"
            )


def _random_init(clip: ClipBackbone, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N(0, 0.02^2) per element, text first, on the CPU: the alternative the official
    `trainers/rpo.py` keeps commented out beside its ST-init (`nn.init.normal_(..., std=0.02)`)."""
    text = torch.randn(k, clip.text_width) * 0.02
    vision = torch.randn(k, clip.vision_width) * 0.02
    return text.to(clip.device), vision.to(clip.device)


def _unit_rows(n: torch.Tensor) -> torch.Tensor:
    return n / n.norm(dim=-1, keepdim=True)


def _special_token_init(clip: ClipBackbone, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ST-init as in the official code: the EOT token embedding (text) and the class embedding
    (vision), repeated K times, each of the K vectors moved by 0.1 times its own random unit
    direction (normalised per prompt vector, not over the whole K x d tensor). Noise is drawn
    on the CPU, text first, from the global generator (seed it for reproducibility)."""
    with torch.no_grad():
        eot = torch.tensor([clip.eot_token_id], device=clip.device)
        text = clip.token_embedding(eot).float().cpu().repeat(k, 1)
        text = text + INIT_NOISE_NORM * _unit_rows(torch.randn(k, clip.text_width))
        vision = clip.visual.class_embedding.detach().float().cpu().repeat(k, 1)
        vision = vision + INIT_NOISE_NORM * _unit_rows(torch.randn(k, clip.vision_width))
    return text.to(clip.device), vision.to(clip.device)
