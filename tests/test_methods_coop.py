"""CoOp, CoCoOp, KgCoOp: prompt layout and init as the official code builds them, the fast text
path equal to the reference (logits and context gradients, fp32), parameter counts on ViT-B/16
shapes, and clear errors for bad settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_vit_config
from vlprompt.backbone import load_clip, register_model_config
from vlprompt.errors import MethodError
from vlprompt.methods import create_method
from vlprompt.methods.kgcoop import knowledge_guided_score

NAMES = ["dog", "golden_retriever", "a rather long class name here", "x"]
ATOL = 1e-5


def _pair(name, clip, **config):
    """The same method twice (same init), fast and reference."""
    torch.manual_seed(1)
    fast = create_method(name, clip, NAMES, implementation="fast", **config)
    torch.manual_seed(1)
    ref = create_method(name, clip, NAMES, implementation="reference", **config)
    return fast, ref


def _grads_after_ce(method, images, labels):
    loss = method.loss(method.forward_train(images), labels)
    loss.backward()
    return method.forward_train(images).logits.detach(), [
        p.grad.clone() for p in method.trainable_parameters()
    ]


def _assert_fast_equals_reference(fast, ref, batch=4):
    torch.manual_seed(2)
    images, labels = torch.randn(batch, 3, 32, 32), torch.arange(batch) % len(NAMES)
    logits_f, grads_f = _grads_after_ce(fast, images, labels)
    logits_r, grads_r = _grads_after_ce(ref, images, labels)
    torch.testing.assert_close(logits_f, logits_r, atol=ATOL, rtol=1e-5)
    for gf, gr in zip(grads_f, grads_r):
        torch.testing.assert_close(gf, gr, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("csc", [False, True])
def test_coop_fast_path_equals_reference(position, csc, tiny_clip):
    fast, ref = _pair("coop", tiny_clip, n_ctx=5, class_token_position=position, csc=csc)
    assert fast.prompt_embeddings().shape[1] < ref.prompt_embeddings().shape[1] == 77
    _assert_fast_equals_reference(fast, ref)


def test_coop_chunked_and_checkpointed_encoding_equals_reference(tiny_clip):
    fast, ref = _pair("coop", tiny_clip, n_ctx=3, text_chunk_size=3, text_checkpoint="always")
    _assert_fast_equals_reference(fast, ref)


def test_cocoop_fast_path_equals_official_per_image_loop(tiny_clip):
    fast, ref = _pair("cocoop", tiny_clip, text_chunk_size=5)
    _assert_fast_equals_reference(fast, ref, batch=3)


def test_kgcoop_fast_path_equals_reference_with_its_regulariser(tiny_clip):
    fast, ref = _pair("kgcoop", tiny_clip)
    _assert_fast_equals_reference(fast, ref)


def test_prompt_layout_matches_the_official_token_order(tiny_clip):
    """SOS ctx name . EOS for "end"; ctx halves around the name for "middle"; name first for
    "front" — checked against token embeddings of the corresponding text."""
    names = ["golden_retriever"]
    emb = tiny_clip.token_embedding
    for position, text in [
        ("end", "a photo of a golden retriever."),
        ("middle", "a photo golden retriever of a."),
        ("front", "golden retriever a photo of a."),
    ]:
        m = create_method(
            "coop", tiny_clip, names, n_ctx=4, class_token_position=position, csc=True
        )
        with torch.no_grad():
            m.ctx.copy_(emb(tiny_clip.tokenize(["a photo of a"]))[0, 1:5][None])
            expected = emb(tiny_clip.tokenize([text]))
        for implementation in ("fast", "reference"):
            m.config.implementation = implementation
            got = m.prompt_embeddings().detach()
            torch.testing.assert_close(got, expected[:, : got.shape[1]])


def test_coop_initialised_from_words_is_zero_shot_clip(tiny_clip):
    m = create_method("coop", tiny_clip, NAMES, ctx_init="a photo of a")
    assert m.ctx.shape == (4, tiny_clip.text_width)  # n_ctx = the init's 4 tokens
    prompts = [f"a photo of a {n.replace('_', ' ')}." for n in NAMES]
    with torch.no_grad():
        expected = tiny_clip.encode_text(tiny_clip.tokenize(prompts), normalize=True)
        torch.testing.assert_close(m.text_features(), expected, atol=1e-6, rtol=1e-5)


def test_random_context_is_n_0_002(tiny_clip):
    m = create_method("coop", tiny_clip, NAMES * 1, n_ctx=16, csc=True)
    assert m.ctx.shape == (len(NAMES), 16, tiny_clip.text_width)
    assert abs(m.ctx.std().item() - 0.02) < 0.002 and abs(m.ctx.mean().item()) < 0.002


def test_prograd_init_pads_the_template_words_at_the_end(tiny_clip):
    m = create_method("prograd", tiny_clip, NAMES)  # n_ctx 16, "a photo of a"
    words = tiny_clip.token_embedding(tiny_clip.tokenize(["a photo of a"]))[0, 1:5]
    assert m.ctx.shape == (16, tiny_clip.text_width)
    assert torch.equal(m.ctx[:12], torch.zeros(12, tiny_clip.text_width))
    torch.testing.assert_close(m.ctx[12:], words)
    assert m.config.gradient_rule == "prograd"


def test_kgcoop_regulariser_is_one_minus_mean_cosine(tiny_clip):
    m = create_method("kgcoop", tiny_clip, NAMES, n_ctx=2, ctx_init="")
    torch.manual_seed(3)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    out = m.forward_train(images)
    zs = m.zeroshot_text_features()
    expected_score = 1 - (out.text_features * zs).sum(-1).mean()  # both are unit vectors
    torch.testing.assert_close(knowledge_guided_score(out.text_features, zs), expected_score)
    expected = F.cross_entropy(out.logits, labels) + 8.0 * expected_score
    torch.testing.assert_close(m.loss(out, labels), expected)
    # initialised from the template, the learned prompt IS the hand-crafted one: score 0
    same = create_method("kgcoop", tiny_clip, NAMES)
    with torch.no_grad():
        score = knowledge_guided_score(same.text_features(), same.zeroshot_text_features())
    assert abs(score.item()) < 1e-6


def test_cached_text_features_follow_optimizer_steps_and_class_lists(tiny_clip):
    m = create_method("coop", tiny_clip, NAMES, n_ctx=2)
    with torch.no_grad():
        before = m.text_features()
        assert m.text_features() is before  # cached while nothing changes
    opt = torch.optim.SGD([m.ctx], lr=1.0)
    m.backward_step(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    opt.step()
    with torch.no_grad():
        after = m.text_features()
        assert not torch.allclose(before, after)
        m.set_classnames(["cat", "dog"])
        assert m.text_features().shape[0] == 2


# ---- bad settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["coop", "cocoop", "kgcoop", "prograd"])
def test_n_ctx_below_one_is_refused(name, tiny_clip):
    with pytest.raises(MethodError, match="n_ctx must be >= 1, got 0"):
        create_method(name, tiny_clip, NAMES, n_ctx=0)


@pytest.mark.parametrize("name", ["coop", "cocoop", "kgcoop"])
def test_init_text_longer_than_the_context_is_refused(name, tiny_clip):
    with pytest.raises(MethodError, match="needs more than the text encoder's 77 token positions"):
        create_method(name, tiny_clip, NAMES, ctx_init=" ".join(["photo"] * 80))


def test_context_plus_class_name_longer_than_the_context_is_refused(tiny_clip):
    with pytest.raises(MethodError, match="class prompt .*a rather long class name here"):
        create_method("coop", tiny_clip, NAMES, n_ctx=70)


def test_prograd_init_longer_than_n_ctx_is_refused(tiny_clip):
    with pytest.raises(MethodError, match="has 4 tokens but n_ctx is 2"):
        create_method("prograd", tiny_clip, NAMES, n_ctx=2)


def test_bad_class_token_position_and_implementation_are_refused(tiny_clip):
    with pytest.raises(MethodError, match="class_token_position"):
        create_method("coop", tiny_clip, NAMES, class_token_position="start")
    with pytest.raises(MethodError, match="implementation"):
        create_method("coop", tiny_clip, NAMES, implementation="quick")


def test_class_specific_context_cannot_switch_classes(tiny_clip):
    m = create_method("coop", tiny_clip, NAMES, n_ctx=2, csc=True)
    with pytest.raises(MethodError, match="class-specific context"):
        m.set_classnames(["zebra", "lion"])


@pytest.mark.parametrize("name", ["coop", "cocoop"])
def test_loading_prompts_saved_for_another_text_width_is_refused(name, tiny_clip, tmp_path):
    create_method(name, tiny_clip, NAMES).save(tmp_path)
    register_model_config("vlprompt-test-tiny-vit-w32", tiny_vit_config(text_width=32))
    other = load_clip("vlprompt-test-tiny-vit-w32")
    with pytest.raises(ValueError, match="tensor 'ctx' has shape .*64.* needs .*32"):
        create_method(name, other, NAMES).load(tmp_path, other)


# ---- ViT-B/16 shapes ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_b16():
    return load_clip("ViT-B-16", pretrained=None)


@pytest.mark.slow
def test_parameter_counts_on_vit_b16_shapes(vit_b16):
    assert create_method("coop", vit_b16, NAMES).num_trainable_parameters() == 16 * 512 == 8192
    cocoop = create_method("cocoop", vit_b16, NAMES)
    assert cocoop.num_trainable_parameters() == 4 * 512 + (512 * 32 + 32) + (32 * 512 + 512)
    assert cocoop.num_trainable_parameters() == 35_360
    assert create_method("kgcoop", vit_b16, NAMES).num_trainable_parameters() == 4 * 512
    assert create_method("prograd", vit_b16, NAMES).num_trainable_parameters() == 8192
