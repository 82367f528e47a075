"""TCP — Textual-based Class-aware Prompt tuning (Yao, Zhang and Xu, CVPR 2024; official code
htyao89/Textual-based_Class-aware_prompt_tuning at bd97bec6bd4901baaf318e9e8f073f618d12066e:
`trainers/tcp.py`, `trainers/clip_text/model.py` (`ResidualAttentionBlock_MaPLe`, the text
blocks that inject the class-aware tokens), `configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml`,
`scripts/base2new_train.sh`, `train.py`, README (Adam's eps)).

CoOp's learned context plus class-aware tokens from a "textual knowledge embedding":
- Prompt of class c: `SOS ctx_1..ctx_n <prompt_template with the name>` (as the official: the
  data set's `CUSTOM_TEMPLATES` entry, e.g. "X X X X {}, a type of pet.", whose first n words the
  context replaces; `TCP_PROMPT_TEMPLATES`, the default for each data set with or without
  `--preset tcp`), encoded by the frozen text tower and pooled at EOS.
- Meta-net: Linear(E, E // 4) -> QuickGELU -> Linear(E // 4, k * D) on the frozen, normalised
  CLIP text features of the hand-crafted prompt (`config.template`, official
  `CUSTOM_TEMPLATES_ori`) of each class; E = the embedding width, D = the text width, k = 4
  tokens per class. Reshaped to [C, k, D].
- Those tokens replace the hidden states at positions 1..k at the input of text block 8 (0-based:
  the 9th of 12) and are not replaced again (official `layers=[8]`, `weights=[1.0]`:
  `1.0 * tokens + 0.0 * states`, a plain replacement).
- Logits: CLIP's `logit_scale * cos(image, text)`; loss:
  `CE + 8 * (1 - mean_c cos(t_c, t0_c))` (eps 1e-7), t0 the hand-crafted features above.

Defaults = the official base-to-new run: 4 context vectors from N(0, 0.02^2) (CTX_INIT False),
class token at the end, 4 class-aware tokens at block 8, weight 8, lr 0.002, batch 32, 50 epochs
(25 for ImageNet and SUN397: `train.py`), cosine after 1 warm-up epoch at constant 1e-5.
Base-to-new: the class-aware tokens of the new classes come from their own hand-crafted features.

Checked against the official code side by side on the same random weights (a scratch copy of
`trainers/tcp.py` and `trainers/clip_text/model.py`, Dassl stubbed, their CLIP built from the
open_clip model's state dict, QuickGELU blocks; a 12-block, width-512 text tower so that the
official `layers=[8]` and `reshape(..., 512)` run unmodified; 5 base classes, 6 images; the
layouts of OxfordPets, UCF101 and StanfordCars): worst |difference| over fast and reference paths:
logits 3.7e-06, loss 9.5e-07, gradients of the context and the meta-net 5.8e-07
(largest gradient 0.46), new-class evaluation logits after loading the trained part 3.9e-06
(fp32, CPU). Injecting one block earlier (7) moves the logits by 0.34.

Departures from the official code, on purpose:
- Precision: the official default PREC is fp16 (everything, the meta-net and the hand-crafted
  features included): `train.py` sets `TRAINER.COOP.PREC = "fp16"` (CLIP and the context, made
  in CLIP's dtype) and `TRAINER.COCOOP.PREC = "fp16"` (`trainers/tcp.py`:
  `self.meta_net.half()`), no TCP config or script sets another, and the hand-crafted features
  come from a second CLIP loaded in fp16 whatever PREC says; the SGD updates are fp16, with no
  loss scaling. Here parameters and hand-crafted features are fp32, the logits are computed in
  fp32 under any autocast, and the engine's precision applies to the passes (`--precision`:
  fp32 on the CPU; on CUDA fp16 autocast with a GradScaler by default).
- Widths come from the backbone (official: the meta-net output is reshaped with a hard-coded 512);
  the injection block defaults to 8, or the last block of a tower of 9 blocks or fewer.
- The text tower runs only up to the longest EOS on the fast path (exact under the causal mask);
  while training, the positions every class prompt shares (SOS, the context, template words
  before the name) go through the blocks before the injection once, not once per class, and the
  last block computes the EOS rows only (exact).
- `ctx_init` words initialise the context (official: any CTX_INIT means "a photo of a"); the
  class-aware tokens must end before every class prompt's EOS (official: unchecked).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from vlprompt.backbone import ClipBackbone, ReplaceTokens
from vlprompt.chunking import encode_in_chunks
from vlprompt.data.templates import TCP_DEFAULT_PROMPT, TCP_PROMPT_TEMPLATES
from vlprompt.deep_prompts import can_share_prefix, injected_text_features, shared_prefix_length
from vlprompt.errors import DataError, MethodError
from vlprompt.methods import text_encoding as te
from vlprompt.methods.base import (
    FrozenImageMixin,
    KeyedCache,
    MethodConfig,
    PromptMethod,
    TrainOutput,
    clip_logits,
    features_key,
)
from vlprompt.methods.kgcoop import knowledge_guided_score
from vlprompt.methods.prompt_context import (
    ContextConfig,
    PromptLayoutMixin,
    check_fits_context,
    initial_context,
    n_ctx_of,
)
from vlprompt.methods.registry import register_method

OFFICIAL_INJECT_LAYER = 8  # official `layers=[8]` in ResidualAttentionBlock_MaPLe.forward

# TCP's hand-crafted prompts (official `CUSTOM_TEMPLATES_ori`) where they differ from CoOp's table
TCP_TEMPLATES = {
    "fgvc_aircraft": "a photo of an aircraft {}.",
    "dtd": "a photo of a {}, a type of texture.",
    "food101": "a photo of a {}, a type of food.",
}


@dataclass
class TCPConfig(ContextConfig):
    """TCP (defaults: the official base-to-new run, see the module docstring)."""

    n_ctx: int = field(default=4, metadata={"help": "learned context vectors"})
    prompt_template: str = field(
        default=TCP_DEFAULT_PROMPT,
        metadata={
            "help": "text after the context, '{}' = the class name (default: the official one of "
            "the data set, its CUSTOM_TEMPLATES entry without the first n_ctx words, e.g. '{}, a "
            "type of pet.' for oxford_pets; '{}.' elsewhere)"
        },
    )
    n_class_tokens: int = field(
        default=4, metadata={"help": "class-aware tokens per class (positions 1..k)"}
    )
    inject_layer: int | None = field(
        default=None,
        metadata={
            "help": "text block (0-based) whose input takes the class-aware tokens (default: the "
            "official 8, or the last block of a tower of 9 blocks or fewer)"
        },
    )
    kg_weight: float = field(
        default=8.0, metadata={"help": "weight of the consistency with the hand-crafted features"}
    )
    optimizer: str = field(
        default="adam", metadata={"help": "official: Adam, eps 1e-3, weight decay as L2"}
    )
    adam_eps: float = field(default=1e-3, metadata={"help": "Adam epsilon (official 1e-3)"})
    epochs: int = field(
        default=50, metadata={"help": "training epochs (official: 25 for ImageNet and SUN397)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        from vlprompt.data.templates import check_template  # lazy: keeps vlprompt.mini unimported

        try:
            check_template(self.prompt_template)
        except DataError as exc:
            raise MethodError(f"prompt_template: {exc}") from None
        if self.n_class_tokens < 1:
            raise MethodError(f"n_class_tokens must be >= 1, got {self.n_class_tokens}")
        if self.inject_layer is not None and self.inject_layer < 1:
            raise MethodError(
                f"inject_layer must be >= 1 (block 0's input holds the learned context), got "
                f"{self.inject_layer}"
            )
        if self.kg_weight < 0:
            raise MethodError(f"kg_weight must be >= 0, got {self.kg_weight}")


def resolve_inject_layer(layer: int | None, n_blocks: int) -> int:
    """The text block whose input takes the class-aware tokens: `layer`, or the official 8
    capped at the last block. One clear error when no block after the first exists."""
    if layer is None:
        layer = min(OFFICIAL_INJECT_LAYER, n_blocks - 1)
        if layer < 1:
            raise MethodError(
                f"tcp injects its class-aware tokens at a text block after the first, and this "
                f"text tower has {n_blocks} block; use a backbone with 2 or more text blocks"
            )
    if layer >= n_blocks:
        raise MethodError(
            f"inject_layer {layer} is deeper than the text tower ({n_blocks} blocks, 0-based); "
            f"use 1 <= inject_layer <= {n_blocks - 1}"
        )
    return layer


def knowledge_net(embed_dim: int, text_width: int, n_tokens: int) -> nn.Sequential:
    """The official meta-net: Linear(E, E // 4) -> QuickGELU -> Linear(E // 4, k * D)."""
    hidden = embed_dim // 4
    return nn.Sequential(
        OrderedDict(
            [
                ("linear1", nn.Linear(embed_dim, hidden)),
                ("relu", QuickGELU()),  # the official name of the QuickGELU
                ("linear2", nn.Linear(hidden, n_tokens * text_width)),
            ]
        )
    )


def build_template_layout(
    clip: ClipBackbone, classnames: list[str], n_ctx: int, template: str
) -> te.PromptLayout:
    """Class prompts `SOS X*n_ctx template(name) EOS`, tokenised as the official code does, with
    the embeddings around the context slots (`name_lens`: every token between them and EOS)."""
    placeholder = " ".join([te.PLACEHOLDER] * n_ctx)
    prompts = [f"{placeholder} {template.format(te.clean_classname(c))}" for c in classnames]
    tokens = te.tokenize_checked(clip, prompts, what="class prompt")
    x_id = int(te.text_token_ids(clip, te.PLACEHOLDER)[0])
    if not bool((tokens[:, 1 : 1 + n_ctx] == x_id).all()):
        raise MethodError("the tokenizer does not map the placeholder 'X' to one token per slot")
    eot = tokens.argmax(dim=-1)
    with torch.no_grad():
        emb = clip.token_embedding(tokens)
    return te.PromptLayout(
        eot_index=eot,
        name_lens=[int(n) for n in (eot - 1 - n_ctx).tolist()],
        prefix=emb[:, :1].clone(),
        suffix=emb[:, 1 + n_ctx :].clone(),
        n_ctx=n_ctx,
    )


@dataclass
class TCPTrainOutput(TrainOutput):
    """The training forward plus the learned text features the consistency term needs."""

    text_features: torch.Tensor | None = None  # [classes, embed_dim], normalised, with grad


@register_method
class TCP(PromptLayoutMixin, FrozenImageMixin, PromptMethod):
    """A learned context whose states at a middle text block are replaced by class-aware tokens."""

    name: ClassVar[str] = "tcp"
    config_class: ClassVar[type[MethodConfig]] = TCPConfig
    config: TCPConfig
    share_text_prefix: bool = True  # fast path: shared positions once (False: per class)

    @classmethod
    def dataset_settings(cls, dataset: str) -> dict[str, Any]:
        """The official prompt after the context (`CUSTOM_TEMPLATES`) of `dataset`."""
        return {"prompt_template": TCP_PROMPT_TEMPLATES.get(dataset, TCP_DEFAULT_PROMPT)}

    @classmethod
    def template_for(cls, dataset: str, dataset_template: str) -> str | None:
        """TCP's hand-crafted prompt (official `CUSTOM_TEMPLATES_ori`)."""
        return TCP_TEMPLATES.get(dataset, dataset_template)

    def __init__(self, clip: ClipBackbone, classnames: list[str], config: TCPConfig) -> None:
        super().__init__(clip, classnames, config)
        self.inject_layer = resolve_inject_layer(config.inject_layer, len(clip.text_blocks))
        self.n_ctx = n_ctx_of(clip, config)
        # positions 1..k: before the EOS, at most the context's last position
        check_fits_context(clip, "n_class_tokens", config.n_class_tokens, spare=2)
        self.ctx = nn.Parameter(initial_context(clip, config, None))
        net = knowledge_net(clip.embed_dim, clip.text_width, config.n_class_tokens)
        self.meta_net = net.to(clip.device)
        self._text_cache = KeyedCache()
        self._build_layout()

    def _build_layout(self) -> None:
        cfg = self.config
        layout = build_template_layout(self.clip, self.classnames, self.n_ctx, cfg.prompt_template)
        shortest = int(layout.eot_index.min())
        if 1 + cfg.n_class_tokens > shortest:
            raise MethodError(
                f"n_class_tokens {cfg.n_class_tokens} would overwrite the EOS of a class prompt "
                f"(the shortest has its EOS at position {shortest}); use n_class_tokens <= "
                f"{shortest - 1}"
            )
        self.name_lens = layout.name_lens
        self.register_buffer("token_prefix", layout.prefix, persistent=False)
        self.register_buffer("token_suffix", layout.suffix, persistent=False)
        self.register_buffer("eot_index", layout.eot_index, persistent=False)
        self._text_cache.clear()

    # ---- text side ---------------------------------------------------------------------------
    def class_tokens(self) -> torch.Tensor:
        """The class-aware tokens [C, k, D] from the hand-crafted text features."""
        knowledge = self.zeroshot_text_features().to(self.meta_net.linear1.weight.dtype)
        tokens = self.meta_net(knowledge)
        return tokens.view(len(self.classnames), self.config.n_class_tokens, self.clip.text_width)

    def prompt_embeddings(self) -> torch.Tensor:
        """Block 0's text input [C, L, D]: SOS, the context, the templated name, EOS (no
        positional embedding yet); L = the longest EOS + 1 on the fast path."""
        layout = self.layout
        ctx = self.ctx.to(self.clip.dtype)[None].expand(len(self.classnames), -1, -1)
        if self.config.implementation == "reference":
            return te.assemble_reference(layout, ctx, "end")
        return te.assemble_fast(layout, ctx, None, layout.max_length)

    def encode(self, prompts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Text features (not normalised) [C, E]: `tokens` replace positions 1..k at the input
        of block `inject_layer`. Fast path: `text_chunk_size` classes at a time, checkpointed
        as `text_checkpoint` says."""
        tokens = tokens.to(prompts.dtype)
        if self.config.implementation == "reference":
            return self.encode_chunk(prompts, self.eot_index, tokens)

        def encode(rows: slice) -> torch.Tensor:
            return self.encode_chunk(prompts[rows], self.eot_index[rows], tokens[rows])

        cfg = self.config
        return encode_in_chunks(encode, prompts.shape[0], cfg.text_chunk_size, cfg.text_checkpoint)

    def encode_chunk(
        self, prompts: torch.Tensor, eot_index: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        """One chunk's features. Fast path while training (autograd records; evaluation's
        features are computed once per class list and cached, through the plain pass): the
        positions every class prompt shares (SOS, the context, fixed template words) go through
        the blocks before `inject_layer` once (`injected_text_features`); the class-aware tokens
        make every position class-specific from there on."""
        shared = self.shared_prefix_length() if torch.is_grad_enabled() else 0
        if shared and can_share_prefix(self.clip, shared, eot_index, []):
            return injected_text_features(
                self.clip, prompts, eot_index, tokens, self.inject_layer, shared
            )
        hook = ReplaceTokens([tokens], start=1, first_block=self.inject_layer)
        return self.clip.encode_text_embeddings(prompts, eot_index, hook=hook)

    def shared_prefix_length(self) -> int:
        """Leading positions equal in every class prompt (0 on the reference path)."""
        fast = self.config.implementation != "reference"
        return shared_prefix_length(self.layout) if fast and self.share_text_prefix else 0

    def compute_text_features(self) -> torch.Tensor:
        return te.normalize(self.encode(self.prompt_embeddings(), self.class_tokens()))

    def text_features(self) -> torch.Tensor:
        """Normalised text features of the prompts [C, E]. Without autograd (evaluation) they
        are cached until a learned tensor changes (a step or a load bumps its version), the
        class list does or the autocast dtype does."""
        if torch.is_grad_enabled():
            return self.compute_text_features()
        versions = tuple((p._version, p.data_ptr()) for p in self.trainable_parameters())
        key = features_key(self.clip, self.classnames, self.config.implementation, versions)
        return self._text_cache.get(key, self.compute_text_features)

    # ---- logits and loss ---------------------------------------------------------------------
    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits from normalised frozen image features [B, E] (no image-encoder pass)."""
        return clip_logits(self.clip, image_features, self.class_side())

    def forward_train(self, images: torch.Tensor) -> TCPTrainOutput:
        feats = self.image_features(images)
        text = self.text_features()
        return TCPTrainOutput(clip_logits(self.clip, feats, text), feats, text)

    def loss(self, out: TrainOutput, labels: torch.Tensor) -> torch.Tensor:
        """CE + kg_weight * (1 - mean_c cos(learned_c, hand-crafted_c))."""
        text = getattr(out, "text_features", None)
        if text is None:  # a forward that did not keep the text features: compute them
            text = self.text_features()
        score = knowledge_guided_score(text, self.zeroshot_text_features().to(text.device))
        return F.cross_entropy(out.logits, labels) + self.config.kg_weight * score
