"""Trainable-parameter counts on ViT-B/16's shapes (built without weights) equal the papers'."""

from __future__ import annotations

import pytest

from vlprompt.methods.parameter_counts import ParameterCount, parameter_count, shapes_only_backbone

# Counts the papers (or their official code) give for ViT-B/16, with each method's defaults.
PUBLISHED = {
    "coop": 16 * 512,  # 16 context vectors of width 512
    "cocoop": 4 * 512 + (512 * 32 + 32) + (32 * 512 + 512),  # 4 ctx + the meta-net
    "kgcoop": 4 * 512,
    "rpo": 24 * (512 + 768),  # K = 24 prompts in each tower
    "ivlp": 46_080,  # PromptSRC's paper: 4 + 4 tokens, depth 9 in both towers
    "promptsrc": 46_080,  # the same prompts as IVLP (PromptSRC's paper)
    "maple": 3_555_072,  # MaPLe's paper (3.55 M): 9 x (2 x 512 + 512 x 768 + 768)
    "clip_lora": 12 * 3 * 2 * 2 * (512 + 768),  # rank 2 on q, k, v of all 12 blocks, both towers
    "clip_adapter": 2 * 512 * 128,  # the image adapter 512 -> 128 -> 512, no biases
    # MMRL's paper (4.99 M): 5 x 512 tokens, 7 x (512 -> 768 and 512 -> 512, with biases),
    # the representation projection 768 x 512
    "mmrl": 5 * 512 + 7 * (512 * 768 + 768 + 512 * 512 + 512) + 768 * 512,
}


@pytest.fixture(scope="module")
def vit_b16():
    return shapes_only_backbone("ViT-B-16")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_on_vit_b16_equal_the_published_ones(name, vit_b16):
    assert parameter_count(name, vit_b16) == ParameterCount(PUBLISHED[name], 0)


def test_a_count_that_grows_with_the_classes_is_given_per_class(vit_b16):
    count = parameter_count("coop", vit_b16, csc=True)  # one context per class
    assert count == ParameterCount(0, 16 * 512)
    assert count.describe() == "8,192 x classes"
    assert ParameterCount(10, 3).describe() == "10 + 3 x classes"
    assert ParameterCount(46_080, 0).describe() == "46,080"
