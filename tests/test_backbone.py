"""ClipBackbone's hooks rebuild open_clip's own frozen encoders exactly (fp32, atol 1e-5)."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import QuickGELU

from conftest import TINY_RN, VIT_SHAPES
from vlprompt import ModelNameError, list_models, load_clip

TEXTS = ["a photo of a cat.", "x", "a much longer caption about a small red dog on a green lawn"]


def _load(name: str, **kwargs):
    torch.manual_seed(0)
    clip = load_clip(name, **kwargs)
    # random init leaves some weights at 0/1 (e.g. LayerNorm); perturb all of them so the
    # comparison exercises every parameter
    with torch.no_grad():
        for p in clip.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return clip


def _images(clip, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, clip.image_size, clip.image_size)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_vit_hooks_equal_open_clip_encode_image_and_text(name):
    clip = _load(name)
    images = _images(clip)
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        ours_img = clip.encode_image(images)
        ref_img = clip.model.encode_image(images)
        ours_txt = clip.encode_text(tokens)
        ref_txt = clip.model.encode_text(tokens)
    assert ours_img.shape == (3, clip.embed_dim)
    assert ours_txt.shape == (3, clip.embed_dim)
    torch.testing.assert_close(ours_img, ref_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_txt, ref_txt, atol=1e-5, rtol=0)
    # normalize=True equals open_clip's normalize=True
    with torch.no_grad():
        torch.testing.assert_close(
            clip.encode_image(images, normalize=True),
            clip.model.encode_image(images, normalize=True),
            atol=1e-5,
            rtol=0,
        )


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_vision_hooks_compose_to_encode_image(name):
    """What a method does by hand (embed, ln_pre, blocks, head on CLS) equals open_clip."""
    clip = _load(name)
    images = _images(clip, 2)
    with torch.no_grad():
        x = clip.vision_embed(images)
        n_patches = (clip.image_size // clip.model.visual.patch_size[0]) ** 2
        assert x.shape == (2, 1 + n_patches, clip.vision_width)
        x = clip.vision_ln_pre(x)
        for block in clip.vision_blocks:
            x = block(x)
        feats = clip.vision_head(x[:, 0])
        torch.testing.assert_close(feats, clip.model.encode_image(images), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES))
def test_pooled_only_image_pass_equals_open_clip(name):
    """`pooled_only` (the last block computes the CLS row alone; what an export runs) gives
    open_clip's features, normalised or not."""
    clip = _load(name)
    images = _images(clip, 4)
    with torch.no_grad():
        for normalize in (False, True):
            torch.testing.assert_close(
                clip.encode_image(images, normalize=normalize, pooled_only=True),
                clip.model.encode_image(images, normalize=normalize),
                atol=1e-5,
                rtol=0,
            )


def test_resnet_encode_image_and_text_equal_open_clip(tiny_rn_clip):
    clip = tiny_rn_clip
    assert not clip.is_vit
    images = _images(clip)
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(
            clip.encode_image(images), clip.model.encode_image(images), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            clip.encode_text(tokens), clip.model.encode_text(tokens), atol=1e-5, rtol=0
        )
    with pytest.raises(ModelNameError, match="no ViT image tower"):
        clip.vision_embed(images)


@pytest.mark.parametrize("name", sorted(VIT_SHAPES) + [TINY_RN])
def test_text_truncated_to_longest_eos_equals_full_context(name):
    """The causal mask makes positions after the last EOS irrelevant: L = max(EOS)+1 is exact."""
    clip = _load(name)
    tokens = clip.tokenize(TEXTS)
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1
    assert length < clip.context_length  # the test would prove nothing otherwise
    with torch.no_grad():
        emb = clip.token_embedding(tokens)
        full = clip.encode_text_embeddings(emb, eot)
        short = clip.encode_text_embeddings(emb[:, :length], eot)
        torch.testing.assert_close(short, full, atol=1e-5, rtol=0)
        torch.testing.assert_close(full, clip.model.encode_text(tokens), atol=1e-5, rtol=0)


def test_text_causal_mask_is_additive_causal(tiny_clip):
    mask = tiny_clip.text_causal_mask(5)
    assert mask.shape == (5, 5)
    assert torch.all(mask.tril() == 0)
    assert torch.all(torch.isinf(mask.triu(1)[torch.ones(5, 5).triu(1).bool()]))


def test_backbone_is_frozen_and_stays_in_eval(tiny_clip):
    assert not any(p.requires_grad for p in tiny_clip.parameters())
    tiny_clip.train()
    assert not tiny_clip.model.training


def test_tokenize_context_length_and_special_tokens():
    clip = _load("vlprompt-test-vit-b")
    tokens = clip.tokenize(["a photo of a cat."])
    assert tokens.shape == (1, 16)
    assert int(tokens[0, 0]) == clip.sot_token_id == 49406
    assert int(tokens[0].max()) == clip.eot_token_id == 49407


def test_describe_reports_geometry():
    clip = _load("vlprompt-test-vit-c")
    d = clip.describe()
    assert d["image_size"] == 48
    assert d["context_length"] == 32
    assert (d["text_width"], d["vision_width"], d["embed_dim"]) == (48, 36, 16)
    assert d["is_vit"] and d["quick_gelu"] is False and d["pretrained"] is None


def test_weights_id_changes_with_any_weight(tiny_clip):
    before = tiny_clip.weights_id
    assert len(before) == 64
    torch.manual_seed(0)
    same = load_clip("vlprompt-test-tiny-vit")
    assert same.weights_id == before
    torch.manual_seed(1)
    other = load_clip("vlprompt-test-tiny-vit")
    assert other.weights_id != before


def test_force_quick_gelu_uses_quickgelu_modules():
    clip = load_clip("vlprompt-test-tiny-vit", quick_gelu=True)
    assert clip.quick_gelu
    acts = [m for m in clip.model.modules() if isinstance(m, QuickGELU)]
    assert len(acts) == 4  # 2 vision + 2 text blocks


def test_unknown_model_name_lists_closest_names():
    assert "ViT-B-16" in list_models()
    with pytest.raises(ModelNameError, match=r"unknown model name 'ViT-B-61'.*ViT-B-16"):
        load_clip("ViT-B-61")


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match="precision must be one of"):
        load_clip("vlprompt-test-tiny-vit", precision="fp8")


def test_shipped_architectures_are_known_without_importing_the_mini_world():
    """A run saved on the mini world's tiny CLIP must reload (e.g. `vlprompt eval`) in a process
    that never imported vlprompt.mini."""
    import subprocess
    import sys

    code = (
        "import sys, open_clip, vlprompt.backbone\n"
        "assert 'vlprompt.mini' not in sys.modules\n"
        "sys.exit(0 if 'vlprompt-mini-vit' in open_clip.list_models() else 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_registering_a_config_leaves_nothing_in_the_temp_dir(tmp_path):
    """A process that registers an architecture and loads it leaves no file in its temp dir."""
    import os
    import subprocess
    import sys

    code = (
        "from conftest import tiny_vit_config\n"
        "from vlprompt.backbone import load_clip, register_model_config\n"
        "register_model_config('vlprompt-test-registered-vit', tiny_vit_config(text_width=32))\n"
        "assert load_clip('vlprompt-test-registered-vit').text_width == 32\n"
    )
    tests_dir = os.path.dirname(__file__)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join([tests_dir, env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert list(tmp_path.iterdir()) == []
