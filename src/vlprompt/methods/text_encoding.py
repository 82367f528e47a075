"""The CoOp-family text side: tokenised prompt layouts, prompt assembly and the text encoder.

A CoOp prompt for class c is `SOS ctx_1..ctx_n name_c "." EOS` (official CoOp `PromptLearner`:
the class prompt is tokenised with n placeholder words "X X .. X name." and the embeddings around
the placeholders are kept as a fixed prefix (SOS) and suffix (name, ".", EOS, padding)). The
pooled feature is the EOS position's output.

Two implementations, chosen by `implementation`:

- "reference": the paper's computation. Prompts are assembled per class with `torch.cat` (the
  official loop) at the full context length (77) and all classes go through the encoder at once.
- "fast": the same numbers with less work. The causal mask means the EOS output never depends on
  positions after it, so only positions up to the longest EOS of the class list are built and
  encoded. Prompts are assembled with one `gather` instead of a Python loop. Classes are encoded
  in chunks of `chunk_size` sequences and, while training on many classes, each chunk runs under
  `torch.utils.checkpoint` so that activation memory is bounded by one chunk (its forward is
  recomputed in the backward pass: exact, a little slower, much less memory); the loop is
  `vlprompt.chunking.encode_in_chunks`, shared with every other text side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlprompt.attention import SharedPrefixRows, check_block
from vlprompt.backbone import ClipBackbone
from vlprompt.chunking import encode_in_chunks
from vlprompt.errors import MethodError

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"  # the official placeholder word for context slots (one BPE token)


def clean_classname(name: str) -> str:
    """Class names as prompts use them: `_` becomes a space (official CoOp)."""
    return name.replace("_", " ")


CONTEXT_HINT = "use fewer context tokens (n_ctx / ctx_init) or shorter class names"
TEMPLATE_HINT = "use a shorter template or shorter class names"


def tokenize_checked(
    clip: ClipBackbone, texts: list[str], what: str = "prompt", hint: str = CONTEXT_HINT
) -> torch.Tensor:
    """Tokens [N, context_length]; a clear error if any text (with SOS and EOS) does not fit.

    Tokenises at context_length + 1: a text that fits puts its EOS before the last position."""
    length = clip.context_length
    tokens = clip.tokenizer(list(texts), context_length=length + 1).to(clip.device)
    eot = tokens.argmax(dim=-1)
    too_long = (eot >= length).nonzero().flatten().tolist()
    if too_long:
        text = texts[too_long[0]]
        raise MethodError(
            f"the {what} {text!r} needs more than the text encoder's {length} token positions "
            f"({len(too_long)} of {len(texts)} too long); {hint}"
        )
    return tokens[:, :length]


def text_token_ids(clip: ClipBackbone, text: str) -> torch.Tensor:
    """BPE ids of `text` without SOS/EOS (1-D)."""
    tokens = tokenize_checked(clip, [text], what="text")[0]
    return tokens[1 : int(tokens.argmax())]


@dataclass
class PromptLayout:
    """Tokenised class prompts with `n_ctx` placeholder slots (class name at the end, as the
    official code tokenises them), their fixed embeddings and the positions of each part."""

    eot_index: torch.Tensor  # [C] position of EOS (the same whatever the class token position)
    name_lens: list[int]  # BPE tokens of each class name
    prefix: torch.Tensor  # [C, 1, D] SOS embedding
    suffix: torch.Tensor  # [C, L - 1 - n_ctx, D] name, ".", EOS, padding embeddings
    n_ctx: int

    @property
    def max_length(self) -> int:
        """Positions the fast path encodes: up to and including the longest EOS."""
        return int(self.eot_index.max()) + 1


def build_layout(clip: ClipBackbone, classnames: list[str], n_ctx: int) -> PromptLayout:
    names = [clean_classname(c) for c in classnames]
    placeholder = " ".join([PLACEHOLDER] * n_ctx)
    prompts = [f"{placeholder} {name}." for name in names]
    tokens = tokenize_checked(clip, prompts, what="class prompt")
    x_id = int(text_token_ids(clip, PLACEHOLDER)[0])
    if not bool((tokens[:, 1 : 1 + n_ctx] == x_id).all()):
        raise MethodError("the tokenizer does not map the placeholder 'X' to one token per slot")
    eot = tokens.argmax(dim=-1)
    # name tokens = everything between the context slots and "." EOS
    name_lens = (eot - 1 - n_ctx - 1).tolist()
    with torch.no_grad():
        emb = clip.token_embedding(tokens)
    return PromptLayout(
        eot_index=eot,
        name_lens=[int(n) for n in name_lens],
        prefix=emb[:, :1].clone(),
        suffix=emb[:, 1 + n_ctx :].clone(),
        n_ctx=n_ctx,
    )


# ---- prompt assembly ---------------------------------------------------------------------------
def assemble_reference(
    layout: PromptLayout, ctx: torch.Tensor, position: str = "end"
) -> torch.Tensor:
    """The official assembly at full length: ctx [C, n, D] -> prompts [C, L, D] (a loop over
    classes for middle/front, as official CoOp writes it)."""
    prefix, suffix = layout.prefix, layout.suffix.to(ctx.dtype)
    prefix = prefix.to(ctx.dtype)
    if position == "end":
        return torch.cat([prefix, ctx, suffix], dim=1)
    half = layout.n_ctx // 2
    rows = []
    for i, name_len in enumerate(layout.name_lens):
        name_i, rest_i = suffix[i : i + 1, :name_len], suffix[i : i + 1, name_len:]
        ctx_i = ctx[i : i + 1]
        if position == "middle":
            parts = [prefix[i : i + 1], ctx_i[:, :half], name_i, ctx_i[:, half:], rest_i]
        elif position == "front":
            parts = [prefix[i : i + 1], name_i, ctx_i, rest_i]
        else:
            raise MethodError(f"class_token_position must be one of {CLASS_TOKEN_POSITIONS}")
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0)


def position_index(layout: PromptLayout, position: str, length: int) -> torch.Tensor | None:
    """For middle/front: [C, length] source positions in the "end" layout that build each class's
    prompt (None for "end", which needs no reordering)."""
    if position == "end":
        return None
    n, half = layout.n_ctx, layout.n_ctx // 2
    rows = []
    for name_len in layout.name_lens:
        ctx = list(range(1, 1 + n))
        name = list(range(1 + n, 1 + n + name_len))
        if position == "middle":
            order = [0, *ctx[:half], *name, *ctx[half:]]
        elif position == "front":
            order = [0, *name, *ctx]
        else:
            raise MethodError(f"class_token_position must be one of {CLASS_TOKEN_POSITIONS}")
        order += list(range(len(order), length))
        rows.append(order[:length])
    return torch.tensor(rows, device=layout.eot_index.device)


def assemble_fast(
    layout: PromptLayout,
    ctx: torch.Tensor,
    index: torch.Tensor | None,
    length: int,
) -> torch.Tensor:
    """ctx [C, n, D] (or [..., C, n, D]) -> prompts [..., C, length, D] with one concat and, for
    middle/front, one gather with the precomputed `index`."""
    lead = ctx.shape[:-3]
    prefix = layout.prefix.to(ctx.dtype).expand(*lead, -1, -1, -1)
    suffix = layout.suffix[:, : length - 1 - layout.n_ctx].to(ctx.dtype)
    suffix = suffix.expand(*lead, -1, -1, -1)
    x = torch.cat([prefix, ctx, suffix], dim=-2)
    if index is None:
        return x
    idx = index.view(*([1] * len(lead)), *index.shape, 1).expand(*x.shape)
    return torch.gather(x, -2, idx)


# ---- encoding ----------------------------------------------------------------------------------
def encode_reference(clip: ClipBackbone, prompts: torch.Tensor, eot_index: torch.Tensor):
    """All sequences at once, at whatever length `prompts` has (77 for the reference)."""
    return clip.encode_text_embeddings(prompts, eot_index)


def encode_fast(
    clip: ClipBackbone,
    prompts: torch.Tensor,
    eot_index: torch.Tensor,
    chunk_size: int = 256,
    use_checkpoint: str = "auto",
    shared_prefix: int = 0,
) -> torch.Tensor:
    """prompts [N, L', D] (L' >= max EOS + 1) -> features [N, E], `chunk_size` sequences at a time.

    Chunks and their checkpointing as `vlprompt.chunking.encode_in_chunks` (0: one chunk; while
    autograd records, "auto" checkpoints when there is more than one chunk). `shared_prefix` = P > 1 says
    that the first P positions of every sequence are equal (SOS + a shared context): they are
    then encoded once per chunk (`encode_shared_prefix`), when the text blocks allow it."""
    length = int(eot_index.max()) + 1
    prompts = prompts[:, :length]
    mask = clip.text_causal_mask(length)
    shared = can_share_prefix(clip, shared_prefix, eot_index)

    def encode(rows: slice) -> torch.Tensor:
        x, e = prompts[rows], eot_index[rows]
        if shared:
            return encode_shared_prefix(clip, x, e, shared_prefix)
        return clip.encode_text_embeddings(x, e, mask)

    return encode_in_chunks(encode, prompts.shape[0], int(chunk_size or 0), use_checkpoint)


def can_share_prefix(clip: ClipBackbone, prefix_len: int, eot_index: torch.Tensor) -> bool:
    """Whether `encode_shared_prefix` applies: a prefix of 2+ positions before every EOS, plain
    open_clip text blocks (`vlprompt.attention.check_block`)."""
    if prefix_len < 2 or int(eot_index.min()) < prefix_len:
        return False
    return all(check_block(block) is None for block in clip.text_blocks)


def encode_shared_prefix(
    clip: ClipBackbone, prompts: torch.Tensor, eot_index: torch.Tensor, prefix_len: int
) -> torch.Tensor:
    """`clip.encode_text_embeddings(prompts, eot_index)` for prompts whose first `prefix_len`
    positions are the same in every sequence. The causal mask makes those positions' states the
    same in every sequence too, so they go through the encoder once (as one sequence) and every
    sequence's remaining positions attend to the shared prefix keys/values plus their own.
    Same numbers (float rounding aside); the work on the prefix is done once instead of N times.
    The text tower's loop runs the rows, with the `SharedPrefixRows` hook carrying the prefix."""
    n = prompts.shape[1]
    x = prompts + clip.text_positional_embedding[:n].to(prompts.dtype)
    causal = clip.text_causal_mask(n)
    shared = SharedPrefixRows(x[:1, :prefix_len], causal[:prefix_len, :prefix_len])
    rows = clip.run_text_layers(x[:, prefix_len:], causal[prefix_len:], shared)
    pooled = rows[torch.arange(rows.shape[0], device=rows.device), eot_index - prefix_len]
    return clip.text_head(pooled)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
