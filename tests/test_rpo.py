"""RPO (official `trainers/rpo.py`, `main_K24.yaml`) on tiny random open_clip ViTs of several
shapes: read-only prompts, fast path == reference (paper) forward, init, logits, training, I/O."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_VIT, VIT_SHAPES
from vlprompt import create_method, load_clip
from vlprompt.errors import MethodError, VlpromptError
from vlprompt.methods.rpo import INIT_NOISE_NORM, RPO, RPOConfig, RPOError

CLASSES = ["cat", "sea_lion", "a rather long class name with several words in it", "x"]
K = 3


def _clip(name: str = TINY_VIT):
    torch.manual_seed(0)
    clip = load_clip(name)
    with torch.no_grad():  # random init leaves LayerNorms at 1/0: perturb every weight
        for p in clip.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return clip


def _images(clip, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, clip.image_size, clip.image_size)


def _pair(clip, **config):
    """A fast and a reference RPO with the same (random, far from init) prompt values."""
    fast = create_method("rpo", clip, CLASSES, K=K, **config)
    with torch.no_grad():
        fast.text_prompt.copy_(torch.randn_like(fast.text_prompt))
        fast.vision_prompt.copy_(torch.randn_like(fast.vision_prompt))
    ref = create_method("rpo", clip, CLASSES, K=K, implementation="reference", **config)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _capture_block_outputs(blocks) -> tuple[list[torch.Tensor], list]:
    outputs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o.detach())) for b in blocks]
    return outputs, hooks


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_original_tokens_are_frozen_clip_at_every_layer_whatever_the_prompts(name):
    """Reference (paper) forward: every original token's state at every layer, and the CLS/EOS
    outputs, equal frozen open_clip's; prompts change nothing but their own rows."""
    clip = _clip(name)
    _, ref = _pair(clip)
    images = _images(clip)

    vis_states, hooks = _capture_block_outputs(clip.vision_blocks)
    prompts, cls = ref._reference_image(images)
    for h in hooks:
        h.remove()
    x = clip.vision_ln_pre(clip.vision_embed(images))
    n_tokens = x.shape[1]
    for block, state in zip(clip.vision_blocks, vis_states, strict=True):
        x = block(x)
        assert state.shape[1] == n_tokens + K
        torch.testing.assert_close(state[:, :n_tokens], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(cls, clip.model.encode_image(images), atol=1e-5, rtol=0)

    tokens = clip.tokenize(ref._texts())
    eos = tokens.argmax(dim=-1)
    txt_states, hooks = _capture_block_outputs(clip.text_blocks)
    _, eos_out = ref._reference_text()
    for h in hooks:
        h.remove()
    x = clip.token_embedding(tokens) + clip.text_positional_embedding
    for block, state in zip(clip.text_blocks, txt_states, strict=True):
        x = block(x, attn_mask=clip.text_causal_mask())
        for c, e in enumerate(eos.tolist()):  # SOS..EOS of each class
            torch.testing.assert_close(state[c, : e + 1], x[c, : e + 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(eos_out, clip.model.encode_text(tokens), atol=1e-5, rtol=0)


def test_fast_path_frozen_features_equal_open_clip():
    """The fast path's frozen CLS/EOS features (what ProGrad's teacher reuses) are open_clip's."""
    clip = _clip()
    fast, _ = _pair(clip)
    images = _images(clip)
    out = fast.forward_train(images)
    torch.testing.assert_close(
        out.image_features, clip.model.encode_image(images, normalize=True), atol=1e-5, rtol=0
    )
    tokens = clip.tokenize(fast._texts())
    torch.testing.assert_close(
        fast.frozen_text_features(), clip.model.encode_text(tokens), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_fast_path_equals_reference_in_logits_and_prompt_gradients(name):
    """The reference lays the text out like the official code (all context slots, prompt i of
    class c in slot eos_c + 1 + i); the fast path runs the prompt rows alone against SOS..EOS
    keys/values. Same logits and gradients: the layout cannot matter for read-only prompts."""
    clip = _clip(name)
    fast, ref = _pair(clip)
    images, labels = _images(clip, 3), torch.tensor([0, 2, 3])
    results = []
    for method in (fast, ref):
        out = method.forward_train(images)
        F.cross_entropy(out.logits, labels).backward()
        results.append((out.logits, method.text_prompt.grad, method.vision_prompt.grad))
    (logits_f, gt_f, gv_f), (logits_r, gt_r, gv_r) = results
    assert gt_f.abs().sum() > 0 and gv_f.abs().sum() > 0
    torch.testing.assert_close(logits_f, logits_r, atol=1e-5, rtol=0)
    torch.testing.assert_close(gt_f, gt_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gv_f, gv_r, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # evaluation (no autograd) takes the fast path too, same numbers
        torch.testing.assert_close(fast(images), logits_r, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_prompt_features_alone_equal_the_reference_prompt_features(name):
    """`prompt_image_features` (what an export runs: the frozen tokens' last block gives only
    keys and values) equals the reference's normalised prompt outputs, on both paths."""
    clip = _clip(name)
    fast, ref = _pair(clip)
    images = _images(clip, 3)
    with torch.no_grad():
        expected = F.normalize(ref._reference_image(images)[0], dim=-1)
        kvs = fast.frozen_keys_values(images)
        assert len(kvs) == len(clip.vision_blocks)
        for ours, full_kv in zip(kvs, fast.frozen_image_state(images)[0], strict=True):
            torch.testing.assert_close(ours.k, full_kv.k, atol=1e-5, rtol=0)
            torch.testing.assert_close(ours.v, full_kv.v, atol=1e-5, rtol=0)
        for method in (fast, ref):
            torch.testing.assert_close(
                method.prompt_image_features(images), expected, atol=1e-5, rtol=0
            )


@pytest.mark.parametrize("rule", ["none", "prograd"])
def test_class_chunked_text_path_gives_the_same_gradients(rule):
    """text_chunk_size recomputes class chunks in backward (checkpointing): same numbers, also
    under ProGrad's two backward passes; uneven chunks (4 classes, chunks of 3)."""
    clip = _clip("vlprompt-test-vit-d")
    whole, _ = _pair(clip, gradient_rule=rule)
    chunked = create_method("rpo", clip, CLASSES, K=K, gradient_rule=rule, text_chunk_size=3)
    chunked.load_state_dict(whole.state_dict())
    images, labels = _images(clip, 3), torch.tensor([0, 2, 1])
    steps = [m.backward_step(images, labels) for m in (whole, chunked)]
    torch.testing.assert_close(steps[0].logits, steps[1].logits, atol=1e-5, rtol=0)
    for name in ("text_prompt", "vision_prompt"):
        g_whole, g_chunked = (getattr(m, name).grad for m in (whole, chunked))
        torch.testing.assert_close(g_chunked, g_whole, atol=1e-5, rtol=1e-5)


def test_default_chunks_the_text_side_only_above_256_classes(monkeypatch):
    """Default text_chunk_size=256: memory stays bounded at ImageNet's 1000 classes, while up to
    256 classes (the benchmarks' 100, every mini data set) run unchunked, at full speed."""
    import vlprompt.methods.rpo as rpo_module

    assert RPOConfig().text_chunk_size == 256
    calls = []
    original = rpo_module.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(rpo_module, "checkpoint", counting_checkpoint)
    clip = _clip("vlprompt-test-vit-d")
    images = _images(clip, 2)
    for n_classes, chunks in ((256, 0), (300, 2)):
        calls.clear()
        names = [f"class {i}" for i in range(n_classes)]
        method = create_method("rpo", clip, names, K=2)
        method.forward_train(images).logits.sum().backward()
        assert len(calls) == chunks, n_classes


def test_init_is_special_tokens_plus_noise_of_norm_exactly_0_1_per_prompt_vector():
    """Official ST-init: `noise / noise.norm(dim=-1, keepdim=True)` — each of the K prompt
    vectors (not the K x d tensor as a whole) moves by 0.1 times its own unit direction, from
    the EOT token embedding (text) and the class embedding (vision)."""
    clip = _clip()
    method = create_method("rpo", clip, CLASSES, K=5)
    eot = clip.token_embedding(torch.tensor([clip.eot_token_id]))[0]
    for prompt, base in (
        (method.text_prompt, eot),
        (method.vision_prompt, clip.visual.class_embedding),
    ):
        delta = prompt.detach() - base
        torch.testing.assert_close(delta.norm(dim=-1), torch.full((5,), INIT_NOISE_NORM))
        assert (delta[0] - delta[1]).norm() > 1e-3  # a different direction per prompt vector
    assert INIT_NOISE_NORM == 0.1


def test_only_the_two_prompt_tensors_learn():
    clip = _clip()
    method = create_method("rpo", clip, CLASSES, K=K)
    assert [n for n, p in method.named_parameters() if p.requires_grad] == [
        "text_prompt",
        "vision_prompt",
    ]
    assert method.num_trainable_parameters() == K * (clip.text_width + clip.vision_width)
    F.cross_entropy(method.forward_train(_images(clip)).logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in clip.parameters())
    assert set(method.learned_state_dict()) == {"text_prompt", "vision_prompt"}


def test_logits_are_the_mean_over_the_k_prompt_pairs():
    clip = _clip()
    method, _ = _pair(clip)
    images = _images(clip)
    img, _ = method.encode_image(images)
    txt = method.text_features()
    assert img.shape == (2, K, clip.embed_dim) and txt.shape == (len(CLASSES), K, clip.embed_dim)
    by_hand = sum(clip.logit_scale * img[:, i] @ txt[:, i].t() for i in range(K)) / K
    torch.testing.assert_close(method(images), by_hand, atol=1e-5, rtol=0)


def test_defaults_are_the_official_main_k24_config():
    cfg = RPOConfig()
    assert (cfg.K, cfg.lr, cfg.momentum, cfg.weight_decay) == (24, 0.01, 0.9, 5e-4)
    assert (cfg.epochs, cfg.batch_size, cfg.warmup_epochs, cfg.warmup_lr) == (15, 4, 1, 1e-5)
    assert (cfg.optimizer, cfg.template, cfg.implementation) == ("sgd", "a photo of a {}.", "fast")


def _train(method, images, labels, steps: int = 4) -> list[float]:
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        losses.append(float(method.backward_step(images, labels).loss))
        opt.step()
    return losses


def test_a_few_sgd_steps_lower_the_training_loss_alone_and_with_prograd():
    """Labels that disagree with zero-shot CLIP make the CE and KL gradients conflict, so the
    ProGrad projection fires (its trajectory differs) and rpo+prograd still trains."""
    images, labels = _images(_clip(), 4), torch.tensor([0, 1, 0, 1])
    runs = {}
    for rule in ("none", "prograd"):
        method = create_method("rpo", _clip(), CLASSES, K=K, gradient_rule=rule)
        runs[rule] = _train(method, images, labels)
        assert runs[rule][-1] < runs[rule][0] - 0.5, (rule, runs[rule])
    assert abs(runs["prograd"][1] - runs["none"][1]) > 1e-3, runs


def test_prograd_teacher_reuses_frozen_features_equal_to_a_separate_image_pass():
    clip = _clip()
    method = create_method("rpo", clip, CLASSES, K=K, gradient_rule="prograd")
    images = _images(clip)
    out = method.forward_train(images)
    teacher = method.zeroshot_logits(images, out.image_features)
    torch.testing.assert_close(teacher, method.zeroshot_logits(images), atol=1e-5, rtol=0)


def test_set_classnames_recomputes_the_text_caches():
    clip = _clip()
    method, _ = _pair(clip)
    images = _images(clip)
    method(images)  # builds the caches for CLASSES
    method.set_classnames(["dog", "tree"])
    fresh = create_method("rpo", clip, ["dog", "tree"], K=K)
    fresh.load_state_dict(method.state_dict())
    fresh.set_classnames(["dog", "tree"])
    with torch.no_grad():
        assert method(images).shape == (2, 2)
        torch.testing.assert_close(method(images), fresh(images), atol=1e-6, rtol=0)


def test_evaluation_cache_follows_prompt_updates():
    """No-grad forwards cache text features per prompt value; an optimizer step invalidates."""
    clip = _clip()
    method, ref = _pair(clip)
    images = _images(clip)
    with torch.no_grad():
        before = method(images)
        step = torch.randn_like(
            method.text_prompt
        )  # (a constant shift would be LayerNorm-invisible)
        method.text_prompt.add_(step)
        ref.text_prompt.add_(step)
        after = method(images)
        assert (after - before).abs().max() > 1e-4
        torch.testing.assert_close(after, ref(images), atol=1e-5, rtol=0)


def test_save_load_gives_identical_logits_and_rejects_another_width(tmp_path):
    clip = _clip()
    method, _ = _pair(clip)
    images = _images(clip)
    method.save(tmp_path / "rpo")
    loaded = RPO.load(tmp_path / "rpo", clip)
    assert isinstance(loaded, RPO) and loaded.config.K == K
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), method(images), atol=0, rtol=0)
    other = _clip("vlprompt-test-vit-b")
    with pytest.raises(ValueError, match="text_prompt.*shape.*saved for"):
        RPO.load(tmp_path / "rpo", other)


def test_bad_settings_and_backbones_raise_clear_errors(tiny_rn_clip):
    clip = _clip()
    assert issubclass(RPOError, MethodError) and issubclass(RPOError, VlpromptError)
    with pytest.raises(RPOError, match=r"K >= 1.*K=0"):
        create_method("rpo", clip, CLASSES, K=0)
    with pytest.raises(RPOError, match="text_chunk_size must be an integer >= 0"):
        create_method("rpo", clip, CLASSES, text_chunk_size=-1)
    with pytest.raises(RPOError, match="implementation must be one of"):
        create_method("rpo", clip, CLASSES, implementation="turbo")
    with pytest.raises(RPOError, match="RPO needs a ViT image tower.*ModifiedResNet"):
        create_method("rpo", tiny_rn_clip, CLASSES)
    with pytest.raises(MethodError, match="class list is empty"):
        create_method("rpo", clip, [])
    with pytest.raises(MethodError, match=r"duplicate names: \['cat'\]"):
        create_method("rpo", clip, ["cat", "dog", "cat"])


@pytest.mark.slow
def test_vit_b16_shapes_have_30720_trainable_parameters():
    """Official count for ViT-B/16 with K=24: 24*512 + 24*768 (random weights, no download)."""
    clip = load_clip("ViT-B-16")
    method = create_method("rpo", clip, ["cat", "dog"])
    assert method.num_trainable_parameters() == 24 * 512 + 24 * 768 == 30_720
