"""Trainable-parameter counts on ViT-B/16's shapes (built without weights) equal the papers'."""

from __future__ import annotations

import pytest

from vlprompt.methods.parameter_counts import ParameterCount, parameter_count, shapes_only_backbone

_BLOCK = lambda w: 12 * w**2 + 13 * w  # noqa: E731  a residual block of width w (MLP ratio 4)

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
    # blocks 6-11 of both towers (12 w^2 + 13 w each), ln_post + proj, ln_final + text projection
    "skiptuning": 6 * _BLOCK(768) + 6 * _BLOCK(512) + 2 * 768 + 768 * 512 + 2 * 512 + 512**2,
    # MMRL's paper (4.99 M): 5 x 512 tokens, 7 x (512 -> 768 and 512 -> 512, with biases),
    # the representation projection 768 x 512
    "mmrl": 5 * 512 + 7 * (512 * 768 + 768 + 512 * 512 + 512) + 768 * 512,
}
# Counts that grow with the classes: (fixed, per class).
PUBLISHED_PER_CLASS = {
    # 2SFS: ln_1 and ln_2 of all 12 blocks of both towers (the official trainable set), then a
    # head of 512 per class (stage 2)
    "two_stage": (12 * 2 * 2 * (512 + 768), 512),
}


@pytest.fixture(scope="module")
def vit_b16():
    return shapes_only_backbone("ViT-B-16")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_on_vit_b16_equal_the_published_ones(name, vit_b16):
    assert parameter_count(name, vit_b16) == ParameterCount(PUBLISHED[name], 0)


def test_depts_head_adds_two_channel_maps_and_a_linear_classifier(vit_b16):
    from vlprompt.methods.parameter_counts import feature_rule_count

    # DePT (official FiLM(512) x 2 + nn.Linear(512, classes)): 4 x 512 + 513 x classes
    assert feature_rule_count(vit_b16, "dept") == ParameterCount(4 * 512, 513)
    coop = parameter_count("coop", vit_b16, feature_rule="dept")
    assert coop == ParameterCount(16 * 512 + 4 * 512, 513)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PER_CLASS))
def test_counts_with_a_part_per_class_on_vit_b16(name, vit_b16):
    assert parameter_count(name, vit_b16) == ParameterCount(*PUBLISHED_PER_CLASS[name])


def test_a_count_that_grows_with_the_classes_is_given_per_class(vit_b16):
    count = parameter_count("coop", vit_b16, csc=True)  # one context per class
    assert count == ParameterCount(0, 16 * 512)
    assert count.describe() == "8,192 x classes"
    assert ParameterCount(10, 3).describe() == "10 + 3 x classes"
    assert ParameterCount(46_080, 0).describe() == "46,080"
