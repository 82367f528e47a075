"""IVLP: the method's forward equals a plain reference built by hand (explicit concatenation per
layer over open_clip's own blocks) in logits and gradients; depth 1 is shallow prompting; save ->
load is exact; only the prompt tensors learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import VIT_SHAPES
from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt.deep_prompts import resolve_depth
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.ivlp import IVLP

CLASSES = ["dog", "cat", "red_car", "oak tree"]


def _depths(clip) -> tuple[int, int]:
    return len(clip.model.transformer.resblocks), len(clip.model.visual.transformer.resblocks)


def _method(clip, **config) -> IVLP:
    torch.manual_seed(1)
    dt, dv = _depths(clip)
    config = {"depth_text": dt, "depth_vision": dv, **config}
    m = create_method("ivlp", clip, CLASSES, n_ctx_vision=3, **config)
    with torch.no_grad():  # far from init
        for p in m.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def reference_text(clip, ctx, deep, classnames) -> torch.Tensor:
    """Full-length prompts; at blocks 1..len(deep) positions 1..n are replaced by hand."""
    n = ctx.shape[0]
    model = clip.model
    names = [c.replace("_", " ") for c in classnames]
    tokens = clip.tokenize([" ".join(["X"] * n) + f" {c}." for c in names])
    emb = model.token_embedding(tokens)
    c = ctx[None].expand(len(names), -1, -1)
    x = torch.cat([emb[:, :1], c, emb[:, 1 + n :]], dim=1) + model.positional_embedding
    for i, block in enumerate(model.transformer.resblocks):
        if 1 <= i <= len(deep):
            p = deep[i - 1][None].expand(len(names), -1, -1)
            x = torch.cat([x[:, :1], p, x[:, 1 + n :]], dim=1)
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x[torch.arange(len(names)), tokens.argmax(dim=-1)])
    return F.normalize(x @ model.text_projection, dim=-1)


def reference_image(clip, vp, deep, images) -> torch.Tensor:
    """Prompts appended after the patches before ln_pre; the last k tokens replaced by hand."""
    v = clip.model.visual
    k = vp.shape[0]
    x = v.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, vp[None].expand(x.shape[0], -1, -1)], dim=1))
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, :-k], deep[i - 1][None].expand(x.shape[0], -1, -1)], dim=1)
        x = block(x)
    return F.normalize(v.ln_post(x[:, 0]) @ v.proj, dim=-1)


def reference_logits(m: IVLP, images) -> torch.Tensor:
    clip = m.clip
    text = reference_text(clip, m.ctx, list(m.deep_text), m.classnames)
    img = reference_image(clip, m.vision_prompt, list(m.deep_vision), images)
    return clip.model.logit_scale.exp() * img @ text.t()


def _images(clip, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, clip.image_size, clip.image_size)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_forward_and_gradients_equal_the_plain_reference(name, implementation):
    clip = _clip(name)
    m = _method(clip, implementation=implementation)
    images, labels = _images(clip), torch.tensor([0, 2, 3])
    params = m.trainable_parameters()
    ours = m(images)
    g_ours = torch.autograd.grad(F.cross_entropy(ours, labels), params)
    theirs = reference_logits(m, images)
    g_theirs = torch.autograd.grad(F.cross_entropy(theirs, labels), params)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("checkpoint_mode", ["auto", "always", "never"])
def test_text_in_class_chunks_equals_the_plain_reference(checkpoint_mode):
    """Chunks of 3 of the 4 classes (each cut at its own longest EOS, checkpointed or not):
    the same logits and gradients as the plain reference."""
    clip = _clip(sorted(VIT_SHAPES)[0])
    m = _method(clip, text_chunk_size=3, text_checkpoint=checkpoint_mode)
    images, labels = _images(clip), torch.tensor([0, 2, 3])
    params = m.trainable_parameters()
    ours = m(images)
    g_ours = torch.autograd.grad(F.cross_entropy(ours, labels), params)
    theirs = reference_logits(m, images)
    g_theirs = torch.autograd.grad(F.cross_entropy(theirs, labels), params)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_depth_1_equals_shallow_prompting_through_open_clips_blocks(name):
    clip = _clip(name)
    m = _method(clip, depth_text=1, depth_vision=1)
    assert len(m.deep_text) == 0 and len(m.deep_vision) == 0
    images = _images(clip)
    model, v = clip.model, clip.model.visual
    with torch.no_grad():
        x = clip.vision_embed(images)
        x = torch.cat([x, m.vision_prompt.expand(x.shape[0], -1, -1)], dim=1)
        x = v.transformer(v.ln_pre(x))  # open_clip's own blocks on the concatenated sequence
        img = F.normalize(v.ln_post(x[:, 0]) @ v.proj, dim=-1)
        n = m.n_ctx
        tokens = clip.tokenize([" ".join(["X"] * n) + f" {c.replace('_', ' ')}." for c in CLASSES])
        emb = model.token_embedding(tokens)
        ctx = m.ctx.expand(len(CLASSES), -1, -1)
        t = torch.cat([emb[:, :1], ctx, emb[:, 1 + n :]], dim=1) + model.positional_embedding
        t = model.transformer(t, attn_mask=model.attn_mask)
        t = model.ln_final(t[torch.arange(len(CLASSES)), tokens.argmax(dim=-1)])
        text = F.normalize(t @ model.text_projection, dim=-1)
        theirs = model.logit_scale.exp() * img @ text.t()
        torch.testing.assert_close(m(images), theirs, atol=1e-5, rtol=0)


def test_official_defaults_and_init():
    cfg = IVLP.config_class()
    assert (cfg.n_ctx, cfg.n_ctx_vision) == (4, 4)
    # depth None = the official 9 on ViT-B/16's 12 blocks, every block of a shallower tower
    assert (cfg.depth_text, cfg.depth_vision) == (None, None)
    assert resolve_depth(None, 12, "depth_text") == 9
    assert resolve_depth(None, 2, "depth_text") == 2
    assert cfg.ctx_init == "a photo of a"
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.warmup_epochs) == (0.0025, 20, 4, 1)
    clip = _clip("vlprompt-test-vit-a")
    m = create_method("ivlp", clip, CLASSES, depth_text=2, depth_vision=2)
    ids = clip.tokenize(["a photo of a"])[0, 1:5]
    torch.testing.assert_close(m.ctx.data, clip.model.token_embedding(ids).detach())
    assert m.vision_prompt.shape == (4, clip.vision_width)
    assert m.deep_text[0].shape == (4, clip.text_width)


def test_save_load_gives_identical_logits(tmp_path):
    clip = _clip("vlprompt-test-vit-b")
    m = _method(clip)
    images = _images(clip)
    m.save(tmp_path / "ivlp")
    loaded = IVLP.load(tmp_path / "ivlp", clip)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), m(images), atol=0, rtol=0)


def test_only_prompt_tensors_get_gradients():
    clip = _clip("vlprompt-test-vit-d")
    m = _method(clip)
    F.cross_entropy(m(_images(clip)), torch.tensor([0, 1, 2])).backward()
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    expected = {"ctx", "vision_prompt"}
    expected |= {f"deep_text.{i}" for i in range(len(m.deep_text))}
    expected |= {f"deep_vision.{i}" for i in range(len(m.deep_vision))}
    assert names == expected
    assert all(p.grad is not None for p in m.trainable_parameters())
    assert all(p.grad is None for p in clip.parameters())


@pytest.mark.parametrize(
    "bad", [{"depth_text": 0}, {"depth_vision": 0}, {"depth_text": 99}, {"depth_vision": 99}]
)
def test_bad_depths_are_one_clear_error(bad):
    clip = _clip("vlprompt-test-vit-a")
    with pytest.raises(MethodError, match="depth"):
        create_method("ivlp", clip, CLASSES, **bad)


def test_default_depth_takes_every_block_of_a_shallow_tower():
    clip = _clip("vlprompt-test-vit-a")
    m = create_method("ivlp", clip, CLASSES)
    dt, dv = _depths(clip)
    assert (len(m.deep_text) + 1, len(m.deep_vision) + 1) == (dt, dv)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [({"n_ctx_vision": 0}, "n_ctx_vision"), ({"ctx_init": "", "n_ctx": 80}, "context")],
)
def test_bad_prompt_counts_are_one_clear_error(bad, fragment):
    clip = _clip("vlprompt-test-vit-a")
    with pytest.raises(MethodError, match=fragment):
        create_method("ivlp", clip, CLASSES, **bad)
