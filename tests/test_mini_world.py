"""The mini world: deterministic drawing, captions that tell the truth, style shifts."""

from __future__ import annotations

import numpy as np
import pytest

from vlprompt.mini import world


def test_same_seed_same_pixels_and_caption():
    a_img, a_cap, a_attrs = world.sample(seed=7, index=3)
    b_img, b_cap, b_attrs = world.sample(seed=7, index=3)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img))
    assert (a_cap, a_attrs) == (b_cap, b_attrs)
    c_img, _, _ = world.sample(seed=8, index=3)
    assert not np.array_equal(np.asarray(a_img), np.asarray(c_img))


def test_render_is_an_rgb_image_of_the_world_size():
    img, _, _ = world.sample(seed=0, index=0)
    assert img.mode == "RGB" and img.size == (world.IMAGE_SIZE, world.IMAGE_SIZE)
    small = world.render(world.sample_attributes(np.random.default_rng(0)), seed=1, size=32)
    assert small.size == (32, 32)


@pytest.mark.parametrize("index", range(40))
def test_caption_mentions_only_true_attributes(index):
    """Every attribute word in a caption is the image's own (never another shape/colour/...)."""
    rng = np.random.default_rng([3, index])
    attrs = world.sample_attributes(rng)
    words = set(world.caption(attrs, rng).replace(",", " ").split())
    noun = world.PLURALS[attrs.shape] if attrs.count > 1 else attrs.shape
    assert words & {noun, "shape", "shapes"}, "the object is always named"
    assert not words & (set(world.SHAPES) | set(world.PLURALS.values())) - {noun}
    assert not words & set(world.COLORS) - {attrs.color}
    assert not words & set(world.PATTERNS) - {attrs.pattern}
    assert not words & set(world.SCENES) - {attrs.background}
    numbers = {w for w in world.NUMBER_WORDS.values()}
    assert words & numbers <= {world.NUMBER_WORDS[attrs.count]}


def test_captions_cover_every_attribute_over_many_draws():
    rng = np.random.default_rng(0)
    attrs = world.Attributes("star", "red", "striped", "small", 2, None, "grass", "sketch")
    text = " ".join(world.caption(attrs, rng) for _ in range(200))
    for word in ("stars", "red", "striped", "small", "two", "grass", "sketch"):
        assert word in text


def test_fixed_attributes_are_kept_and_contrast_rule_holds():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a = world.sample_attributes(rng, color="white", count=3)
        assert a.color == "white" and a.count == 3 and a.position is None
        assert world.contrast_ok(a.color, a.background)
    with pytest.raises(ValueError, match="unknown attribute"):
        world.sample_attributes(rng, colour="red")


@pytest.mark.parametrize("style", [s for s in world.STYLES if s != "photo"])
def test_style_variants_differ_from_the_photo(style):
    rng = np.random.default_rng(5)
    attrs = world.sample_attributes(rng, style="photo")
    state = rng.bit_generator.state
    photo = np.asarray(world.render(attrs, rng), dtype=np.float32)
    rng.bit_generator.state = state
    shifted = np.asarray(world.render(world.restyle(attrs, style), rng), dtype=np.float32)
    assert np.abs(photo - shifted).mean() > 5.0  # mean absolute difference in 0..255 units


def test_sketch_has_no_colour_and_inverted_is_the_negative():
    rng = np.random.default_rng(2)
    attrs = world.sample_attributes(rng, style="sketch", color="red")
    sketch = np.asarray(world.render(attrs, seed=4), dtype=np.int16)
    assert np.array_equal(sketch[..., 0], sketch[..., 1])
    photo = np.asarray(world.render(world.restyle(attrs, "photo"), seed=4), dtype=np.int16)
    inverted = np.asarray(world.render(world.restyle(attrs, "inverted"), seed=4), dtype=np.int16)
    assert np.abs(255 - inverted - photo).max() <= 1


def test_unknown_style_is_refused():
    attrs = world.sample_attributes(np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown style 'oil'"):
        world.restyle(attrs, "oil")


@pytest.mark.parametrize(
    "attribute,word",
    [("shape", "stars"), ("color", "red"), ("pattern", "striped"), ("size", "small")]
    + [("count", "two"), ("background", "grass")],
)
def test_required_attributes_are_always_mentioned(attribute, word):
    rng = np.random.default_rng(0)
    attrs = world.Attributes("star", "red", "striped", "small", 2, None, "grass", "photo")
    for _ in range(50):
        assert word in world.caption(attrs, rng, require=(attribute,)).replace(",", " ").split()
