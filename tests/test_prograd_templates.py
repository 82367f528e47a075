"""ProGrad's own templates and context init, as the official code builds them
(BeierZhu/Prompt-align, ProGrad.public/trainers/prograd.py: CUSTOM_TEMPLATES and
PromptLearner.__init__ with CTX_INIT on), written out here independently of vlprompt's code."""

from __future__ import annotations

import pytest
import torch

from vlprompt.api import resolve_config
from vlprompt.errors import MethodError
from vlprompt.methods import create_method

# the official CUSTOM_TEMPLATES, under vlprompt's data-set names
OFFICIAL = {
    "oxford_pets": "a type of pet, a photo of a {}.",
    "oxford_flowers": "a type of flower, a photo of a {}.",
    "fgvc_aircraft": "a type of aircraft, a photo of a {}.",
    "dtd": "a texture of {}.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a type of food, a photo of {}.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
}
NAMES = ["abyssinian", "english_setter", "great pyrenees"]


def _official_prompts(clip, template: str, n_ctx: int, names: list[str]):
    """What the official PromptLearner feeds the text encoder at init, and its EOT positions."""
    ctx_init = template.replace(" {}.", "").replace("_", " ")
    prompt_n_ctx = len(ctx_init.split(" "))
    with torch.no_grad():
        embedding = clip.token_embedding(clip.tokenize([ctx_init]))
    ctx_vectors = torch.zeros(n_ctx, clip.text_width)
    ctx_vectors[n_ctx - prompt_n_ctx :, :] = embedding[0, 1 : 1 + prompt_n_ctx, :]
    prompt_prefix = " ".join(["X"] * (n_ctx - prompt_n_ctx))
    prompt_prefix = f"{prompt_prefix} {ctx_init}"
    prompts = [prompt_prefix + " " + name.replace("_", " ") + "." for name in names]
    tokenized = clip.tokenize(prompts)
    with torch.no_grad():
        embedding = clip.token_embedding(tokenized)
    ctx = ctx_vectors[None].expand(len(names), -1, -1)
    full = torch.cat([embedding[:, :1], ctx, embedding[:, 1 + n_ctx :]], dim=1)
    return full, tokenized.argmax(dim=-1)


@pytest.mark.parametrize("dataset", sorted(OFFICIAL))
def test_prograds_teacher_template_is_the_official_one(dataset):
    config = resolve_config("prograd", dataset, backbone="ViT-B-16", pretrained=None)
    assert config.method_config["template"] == OFFICIAL[dataset]


@pytest.mark.parametrize("dataset", sorted(OFFICIAL))
@pytest.mark.parametrize("n_ctx", [16, 9])
def test_prograds_prompts_at_init_equal_the_official_layout(tiny_clip, dataset, n_ctx):
    template = OFFICIAL[dataset]
    method = create_method(
        "prograd", tiny_clip, NAMES, template=template, n_ctx=n_ctx, implementation="reference"
    )
    expected, eot = _official_prompts(tiny_clip, template, n_ctx, NAMES)
    with torch.no_grad():
        got = method.prompt_embeddings()
    assert torch.equal(method.eot_index, eot)
    assert got.shape == expected.shape and torch.equal(got, expected)
    # the fast path assembles the same prompts, truncated after the longest EOT
    fast = create_method("prograd", tiny_clip, NAMES, template=template, n_ctx=n_ctx)
    with torch.no_grad():
        short = fast.prompt_embeddings()
    assert torch.equal(short, expected[:, : short.shape[1]]) and short.shape[1] > int(eot.max())


def test_a_comma_leaves_the_last_words_as_fixed_text(tiny_clip):
    method = create_method("prograd", tiny_clip, NAMES, template=OFFICIAL["oxford_pets"])
    assert method.fixed_text() == "a"  # "pet," is two tokens: 8 learned, "a" stays text
    method = create_method("prograd", tiny_clip, NAMES, template=OFFICIAL["food101"])
    assert method.fixed_text() == "of"
    method = create_method("prograd", tiny_clip, NAMES, template=OFFICIAL["dtd"])
    assert method.fixed_text() == ""
    n_words = 3  # "a texture of": 13 zero vectors, then the three words
    assert torch.count_nonzero(method.ctx.detach().abs().sum(-1)) == n_words
    assert torch.equal(method.ctx.detach()[: 16 - n_words], torch.zeros(16 - n_words, 64))


def test_user_data_gets_the_default_template_and_bad_settings_are_clear(tiny_clip):
    config = resolve_config("prograd", "imagefolder", backbone="ViT-B-16", pretrained=None)
    assert config.method_config["template"] == "a photo of a {}."
    with pytest.raises(MethodError, match="ctx_from_template=false"):
        create_method("prograd", tiny_clip, NAMES, ctx_init="a photo of a")
    with pytest.raises(MethodError, match="has 8 tokens but n_ctx is 4"):
        create_method("prograd", tiny_clip, NAMES, template=OFFICIAL["oxford_pets"], n_ctx=4)
    with pytest.raises(MethodError, match="ending in"):
        create_method("prograd", tiny_clip, NAMES, template="{} texture.")
    method = create_method(
        "prograd", tiny_clip, NAMES, template="{} texture.", ctx_from_template=False,
        ctx_init="a photo of a",
    )  # fmt: skip
    assert method.fixed_text() == "" and method.ctx.shape == (16, 64)
