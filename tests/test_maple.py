"""MaPLe: the method's forward equals a plain reference built by hand (explicit concatenation and
replacement per layer over open_clip's own blocks, the coupling Linears applied by hand) in
logits and gradients; the vision prompts each block reads are the coupling map of that block's
text prompts; depth 1 is shallow prompting; "a photo" is learned and "of a" stays text; save ->
load is exact, also on new classes; only the learned tensors learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import VIT_SHAPES, tiny_vit_config
from test_rpo import _clip  # a tiny ViT with every weight perturbed
from vlprompt.backbone import register_model_config
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.maple import MaPLe, coupled_depth

CLASSES = ["dog", "cat", "red_car", "oak tree"]
NEW_CLASSES = ["golden_retriever", "fox", "bus"]
TEMPLATE = "a photo of a {}."  # the official prompt: ctx_init "a photo of a" + the class name
DEEP = "vlprompt-test-maple-deep"  # 3 text and 3 vision blocks: two deep prompt layers
register_model_config(
    DEEP,
    tiny_vit_config(width=48, layers=3, heads=4, text_width=32, text_heads=2, text_layers=3,
                    embed_dim=24),
)  # fmt: skip
SHAPES = [*sorted(VIT_SHAPES), DEEP]


def _n_blocks(clip) -> int:
    return min(len(clip.model.transformer.resblocks), len(clip.model.visual.transformer.resblocks))


def _method(clip, **config) -> MaPLe:
    torch.manual_seed(1)
    m = create_method("maple", clip, CLASSES, **{"depth": _n_blocks(clip), **config})
    with torch.no_grad():  # far from init
        for p in m.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _images(clip, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, clip.image_size, clip.image_size)


def reference_text(clip, ctx, deep, classnames) -> torch.Tensor:
    """Full-length official prompts; positions 1..n take the context, then at blocks
    1..len(deep) the deep text prompts, by hand."""
    n = ctx.shape[0]
    model = clip.model
    tokens = clip.tokenize([TEMPLATE.format(c.replace("_", " ")) for c in classnames])
    emb = model.token_embedding(tokens)
    c = ctx[None].expand(len(classnames), -1, -1)
    x = torch.cat([emb[:, :1], c, emb[:, 1 + n :]], dim=1) + model.positional_embedding
    for i, block in enumerate(model.transformer.resblocks):
        if 1 <= i <= len(deep):
            p = deep[i - 1][None].expand(len(classnames), -1, -1)
            x = torch.cat([x[:, :1], p, x[:, 1 + n :]], dim=1)
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x[torch.arange(len(classnames)), tokens.argmax(dim=-1)])
    return F.normalize(x @ model.text_projection, dim=-1)


def coupled(m: MaPLe) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The vision prompts by hand: proj(ctx), and each block's Linear of its text prompts."""
    first = m.ctx @ m.proj.weight.t() + m.proj.bias
    deep = [
        t @ lin.weight.t() + lin.bias
        for t, lin in zip(m.compound_prompts_text, m.compound_prompt_projections, strict=True)
    ]
    return first, deep


def reference_image(clip, first, deep, images) -> torch.Tensor:
    """Prompts appended after the patches before ln_pre; the last k tokens replaced by hand."""
    v = clip.model.visual
    k = first.shape[0]
    x = v.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, first[None].expand(x.shape[0], -1, -1)], dim=1))
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, :-k], deep[i - 1][None].expand(x.shape[0], -1, -1)], dim=1)
        x = block(x)
    return F.normalize(v.ln_post(x[:, 0]) @ v.proj, dim=-1)


def reference_logits(m: MaPLe, images) -> torch.Tensor:
    clip = m.clip
    text = reference_text(clip, m.ctx, list(m.compound_prompts_text), m.classnames)
    img = reference_image(clip, *coupled(m), images)
    return clip.model.logit_scale.exp() * img @ text.t()


def parameter_count(text_width: int, vision_width: int, depth: int, n_ctx: int) -> int:
    """Per prompted block: n text tokens and a Linear text width -> vision width (the context
    and `proj` at block 0, a deep text prompt and a coupling Linear at each deeper block)."""
    return depth * (n_ctx * text_width + text_width * vision_width + vision_width)


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize(
    "settings",
    [
        {"implementation": "fast"},
        {"implementation": "reference"},
        # the text in chunks of 3 of the 4 classes, each cut at its own longest EOS
        {"text_chunk_size": 3, "text_checkpoint": "always"},
        {"text_chunk_size": 3, "text_checkpoint": "never"},
    ],
    ids=["fast", "reference", "chunks-checkpointed", "chunks"],
)
def test_forward_and_gradients_equal_the_plain_reference(name, settings):
    clip = _clip(name)
    m = _method(clip, **settings)
    images, labels = _images(clip), torch.tensor([0, 2, 3])
    params = m.trainable_parameters()
    ours = m(images)
    g_ours = torch.autograd.grad(F.cross_entropy(ours, labels), params)
    theirs = reference_logits(m, images)
    g_theirs = torch.autograd.grad(F.cross_entropy(theirs, labels), params)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _block_inputs(blocks) -> tuple[list[torch.Tensor], list]:
    inputs: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda mod, args: inputs.append(args[0])) for b in blocks]
    return inputs, hooks


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_each_block_reads_the_coupling_map_of_its_text_prompts(depth):
    clip = _clip(DEEP)
    m = _method(clip, depth=depth, implementation="reference")  # every block runs every row
    n = m.n_ctx
    vision_in, hooks = _block_inputs(clip.vision_blocks)
    text_in, text_hooks = _block_inputs(clip.text_blocks)
    with torch.no_grad():
        m(_images(clip, 2))
        for h in hooks + text_hooks:
            h.remove()
        first, deep = coupled(m)
        assert len(deep) == depth - 1
        pos = clip.model.positional_embedding[1 : 1 + n]
        torch.testing.assert_close(
            vision_in[0][:, -n:], clip.vision_ln_pre(first).expand(2, -1, -1)
        )
        torch.testing.assert_close(text_in[0][:, 1 : 1 + n], (m.ctx + pos).expand(4, -1, -1))
        for j in range(1, len(clip.vision_blocks)):
            if j < depth:  # this block's text prompts, and the Linear of them in the vision tower
                torch.testing.assert_close(vision_in[j][:, -n:], deep[j - 1].expand(2, -1, -1))
                torch.testing.assert_close(
                    text_in[j][:, 1 : 1 + n], m.compound_prompts_text[j - 1].expand(4, -1, -1)
                )
            else:  # deeper blocks carry what the previous block returned
                previous = clip.vision_blocks[j - 1](vision_in[j - 1])
                torch.testing.assert_close(vision_in[j], previous, atol=0, rtol=0)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_depth_1_equals_shallow_prompting_through_open_clips_blocks(name):
    clip = _clip(name)
    m = _method(clip, depth=1)
    assert len(m.compound_prompts_text) == 0 and len(m.compound_prompt_projections) == 0
    images = _images(clip)
    model, v = clip.model, clip.model.visual
    with torch.no_grad():
        x = clip.vision_embed(images)
        x = torch.cat([x, m.proj(m.ctx).expand(x.shape[0], -1, -1)], dim=1)
        x = v.transformer(v.ln_pre(x))  # open_clip's own blocks on the concatenated sequence
        img = F.normalize(v.ln_post(x[:, 0]) @ v.proj, dim=-1)
        n = m.n_ctx
        tokens = clip.tokenize([TEMPLATE.format(c.replace("_", " ")) for c in CLASSES])
        emb = model.token_embedding(tokens)
        ctx = m.ctx.expand(len(CLASSES), -1, -1)
        t = torch.cat([emb[:, :1], ctx, emb[:, 1 + n :]], dim=1) + model.positional_embedding
        t = model.transformer(t, attn_mask=model.attn_mask)
        t = model.ln_final(t[torch.arange(len(CLASSES)), tokens.argmax(dim=-1)])
        text = F.normalize(t @ model.text_projection, dim=-1)
        theirs = model.logit_scale.exp() * img @ text.t()
        torch.testing.assert_close(m(images), theirs, atol=1e-5, rtol=0)


def test_a_photo_is_learned_and_of_a_stays_text():
    clip = _clip("vlprompt-test-vit-a")
    m = create_method("maple", clip, CLASSES, implementation="reference")
    template = clip.model.token_embedding(
        clip.tokenize([TEMPLATE.format(c.replace("_", " ")) for c in CLASSES])
    ).detach()
    a_photo = clip.model.token_embedding(clip.tokenize(["a photo"])[0, 1:3]).detach()
    torch.testing.assert_close(m.ctx.data, a_photo, atol=0, rtol=0)
    with torch.no_grad():
        m.ctx.add_(1.0)  # whatever the context holds, the rest of the prompt is the template's
        prompts = m.prompt_embeddings()
    torch.testing.assert_close(prompts[:, 1:3], m.ctx.data.expand(len(CLASSES), -1, -1))
    torch.testing.assert_close(prompts[:, 3:], template[:, 3:], atol=0, rtol=0)
    torch.testing.assert_close(prompts[:, :1], template[:, :1], atol=0, rtol=0)


def test_official_defaults_and_init():
    cfg = MaPLe.config_class()
    assert (cfg.n_ctx, cfg.ctx_init, cfg.depth) == (2, "a photo of a", None)
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (0.0035, 5, 4)
    assert (cfg.warmup_epochs, cfg.warmup_lr, cfg.momentum, cfg.weight_decay) == (
        1, 1e-5, 0.9, 5e-4
    )  # fmt: skip
    assert (cfg.optimizer, cfg.implementation) == ("sgd", "fast")
    # one depth for both towers: the official 9 on ViT-B/16's 12 + 12 blocks, else the shallower
    assert coupled_depth(None, 12, 12) == 9
    assert coupled_depth(None, 2, 3) == coupled_depth(None, 3, 2) == 2
    assert coupled_depth(3, 12, 12) == 3
    clip = _clip(DEEP)
    m = create_method("maple", clip, CLASSES)
    assert m.depth == 3
    assert [t.shape for t in m.compound_prompts_text] == [(2, clip.text_width)] * 2
    assert m.proj.weight.shape == (clip.vision_width, clip.text_width)
    first, *rest = m.compound_prompt_projections  # copies of one Linear, drawn apart from proj
    for lin in rest:
        assert torch.equal(lin.weight, first.weight) and torch.equal(lin.bias, first.bias)
    assert not torch.equal(first.weight, m.proj.weight)


@pytest.mark.parametrize("name", SHAPES)
def test_parameter_count_follows_the_formula(name):
    clip = _clip(name)
    m = create_method("maple", clip, CLASSES)
    want = parameter_count(clip.text_width, clip.vision_width, m.depth, 2)
    assert m.num_trainable_parameters() == want
    assert parameter_count(512, 768, 9, 2) == 3_555_072  # ViT-B/16, the official count


def test_save_load_gives_identical_logits_also_on_new_classes(tmp_path):
    clip = _clip(DEEP)
    m = _method(clip)
    images = _images(clip)
    assert {k for k in m.learned_state_dict() if "projections" in k} == {
        f"compound_prompt_projections.{i}.{w}" for i in range(2) for w in ("weight", "bias")
    }
    m.save(tmp_path / "maple")
    loaded = MaPLe.load(tmp_path / "maple", clip)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), m(images), atol=0, rtol=0)
        m.set_classnames(NEW_CLASSES)
        assert m(images).shape == (3, len(NEW_CLASSES))
        torch.testing.assert_close(m(images), reference_logits(m, images), atol=1e-5, rtol=0)
        on_new = MaPLe.load(tmp_path / "maple", clip, NEW_CLASSES)
        torch.testing.assert_close(on_new(images), m(images), atol=0, rtol=0)


def test_only_learned_tensors_get_gradients():
    clip = _clip(DEEP)
    m = _method(clip)
    F.cross_entropy(m(_images(clip)), torch.tensor([0, 1, 2])).backward()
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    expected = {"ctx", "proj.weight", "proj.bias"}
    expected |= {f"compound_prompts_text.{i}" for i in range(2)}
    expected |= {
        f"compound_prompt_projections.{i}.{w}" for i in range(2) for w in ("weight", "bias")
    }
    assert names == expected
    assert all(p.grad is not None for p in m.trainable_parameters())
    assert all(p.grad is None for p in clip.parameters())


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"depth": 0}, "depth must be >= 1"),
        ({"depth": 3}, "depth 3 is deeper than the vision tower"),  # shape d: 3 text, 2 vision
        ({"depth": 4}, "depth 4 is deeper than the text tower"),
        ({"n_ctx": 0}, "n_ctx must be >= 1"),
        ({"n_ctx": 5}, "n_ctx 5 is more than the 4 tokens of ctx_init"),
        ({"ctx_init": "", "n_ctx": 30}, "n_ctx must be at most 17 \\(the 20-token text context"),
        ({"implementation": "slow"}, "implementation must be one of"),
    ],
)
def test_bad_settings_are_one_clear_error(bad, fragment):
    clip = _clip("vlprompt-test-vit-d")
    with pytest.raises(MethodError, match=fragment):
        create_method("maple", clip, CLASSES, **bad)


def test_a_resnet_backbone_is_one_clear_error(tiny_rn_clip):
    with pytest.raises(MethodError, match="maple needs a ViT image tower"):
        create_method("maple", tiny_rn_clip, CLASSES)
