"""Every local checkpoint format round-trips through `load_clip` to the same features, the
Hugging Face conversion matches transformers' own CLIP, and bad input gets one clear error."""

from __future__ import annotations

import time

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from torch import nn

import vlprompt
from conftest import TINY_VIT, tiny_vit_config
from vlprompt import CheckpointError, DownloadError, ModelNameError, load_clip
from vlprompt.clip_weights import hf_to_open_clip_state_dict, read_checkpoint

OTHER_VIT = "vlprompt-test-ckpt-other-vit"
HF_VIT = "vlprompt-test-ckpt-hf-vit"
vlprompt.register_model_config(OTHER_VIT, tiny_vit_config(width=32, heads=2))
# the open_clip twin of the tiny Hugging Face CLIP below (QuickGELU, as OpenAI's weights)
vlprompt.register_model_config(HF_VIT, {**tiny_vit_config(), "quick_gelu": True})

TEXTS = ["a photo of a cat.", "a small red dog", "x"]
OPENAI_EXTRAS = {
    "input_resolution": torch.tensor(32),
    "context_length": torch.tensor(77),
    "vocab_size": torch.tensor(49408),
}


def _source(quick_gelu: bool):
    """A tiny CLIP whose every weight is random (LayerNorms too), and its reference features."""
    torch.manual_seed(0)
    clip = load_clip(TINY_VIT, quick_gelu=quick_gelu)
    with torch.no_grad():
        for p in clip.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return clip


def _features(clip) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, clip.image_size, clip.image_size, generator=gen)
    with torch.no_grad():
        return clip.encode_image(images), clip.encode_text(clip.tokenize(TEXTS))


def _assert_same_features(loaded, source) -> None:
    for ours, ref in zip(_features(loaded), _features(source)):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def _quick_gelu_modules(clip) -> int:
    return sum(isinstance(m, QuickGELU) for m in clip.model.modules())


def _state_dict(clip) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in clip.model.state_dict().items()}


class _OpenAIArchive(nn.Module):
    """Laid out like OpenAI's TorchScript CLIP: open_clip's keys at the top level plus the three
    scalars OpenAI's archives carry."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, value in OPENAI_EXTRAS.items():
            self.register_buffer(name, value.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


# ---- round trips -----------------------------------------------------------------------------


def test_openai_state_dict_round_trips_with_quick_gelu(tmp_path):
    source = _source(quick_gelu=True)
    path = tmp_path / "ViT-tiny-openai.pt"
    torch.save({**_state_dict(source), **OPENAI_EXTRAS}, path)
    assert read_checkpoint(path).format == "openai"
    loaded = load_clip(TINY_VIT, pretrained=path)
    assert loaded.quick_gelu and _quick_gelu_modules(loaded) == 4
    assert loaded.pretrained == str(path)
    _assert_same_features(loaded, source)


def test_torchscript_archive_needs_trust_then_round_trips(tmp_path):
    source = _source(quick_gelu=True)
    archive = torch.jit.trace(_OpenAIArchive(source.model), (torch.randn(1, 3, 32, 32),))
    path = tmp_path / "ViT-tiny.pt"
    archive.save(str(path))
    with pytest.raises(CheckpointError, match=r"TorchScript archive.*trust_torchscript=True"):
        load_clip(TINY_VIT, pretrained=path)
    loaded = load_clip(TINY_VIT, pretrained=path, trust_torchscript=True)
    assert loaded.quick_gelu and _quick_gelu_modules(loaded) == 4
    _assert_same_features(loaded, source)


def test_open_clip_state_dict_round_trips(tmp_path):
    source = _source(quick_gelu=False)
    path = tmp_path / "plain.pt"
    torch.save(_state_dict(source), path)
    loaded = load_clip(TINY_VIT, pretrained=str(path))
    assert not loaded.quick_gelu and _quick_gelu_modules(loaded) == 0
    _assert_same_features(loaded, source)


def test_open_clip_trainer_checkpoint_round_trips(tmp_path):
    """open_clip's trainer writes {"epoch", "name", "state_dict" (DDP "module." keys), ...}."""
    source = _source(quick_gelu=False)
    wrapped = {
        "epoch": 3,
        "name": "run",
        "state_dict": {f"module.{k}": v for k, v in _state_dict(source).items()},
    }
    path = tmp_path / "epoch_3.pt"
    torch.save(wrapped, path)
    loaded = load_clip(TINY_VIT, pretrained=path)
    _assert_same_features(loaded, source)


def test_safetensors_round_trips(tmp_path):
    source = _source(quick_gelu=False)
    path = tmp_path / "open_clip_model.safetensors"
    save_file(_state_dict(source), str(path))
    loaded = load_clip(TINY_VIT, pretrained=path)
    assert read_checkpoint(path).format == "open_clip"
    _assert_same_features(loaded, source)


def test_explicit_quick_gelu_overrides_detection(tmp_path):
    source = _source(quick_gelu=True)
    path = tmp_path / "qg.safetensors"
    save_file(_state_dict(source), str(path))  # no OpenAI marker: detected as GELU
    assert not load_clip(TINY_VIT, pretrained=path).quick_gelu
    loaded = load_clip(TINY_VIT, pretrained=path, quick_gelu=True)
    _assert_same_features(loaded, source)


# ---- Hugging Face ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_clip():
    transformers = pytest.importorskip("transformers")
    shared = dict(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=32,
    )
    text = dict(
        shared,
        vocab_size=49408,
        max_position_embeddings=77,
        # pool at the EOT token 49407, as open_clip does (argmax of the ids)
        eos_token_id=49407,
        bos_token_id=49406,
        pad_token_id=0,
    )
    vision = dict(shared, image_size=32, patch_size=8)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _hf_features(model, images, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers 5 returns a BaseModelOutputWithPooling (projected features in
    `pooler_output`); transformers 4 returned the tensor itself."""
    with torch.no_grad():
        img = model.get_image_features(pixel_values=images)
        txt = model.get_text_features(input_ids=tokens)
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    return img, txt


def _hf_inputs(clip):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=gen), clip.tokenize(TEXTS)


def test_hf_conversion_matches_transformers_clip(hf_clip):
    """The pure conversion loaded into open_clip's CLIP gives transformers' own features."""
    converted = hf_to_open_clip_state_dict(dict(hf_clip.state_dict()))
    model = open_clip.create_model(HF_VIT, pretrained=None)
    model.load_state_dict(converted, strict=True)
    model.eval()
    clip = vlprompt.ClipBackbone(model, open_clip.get_tokenizer(HF_VIT), HF_VIT, None, True)
    images, tokens = _hf_inputs(clip)
    ref_img, ref_txt = _hf_features(hf_clip, images, tokens)
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(images), ref_img, atol=1e-5, rtol=0)
        torch.testing.assert_close(clip.encode_text(tokens), ref_txt, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.logit_scale, hf_clip.logit_scale)


def test_hf_folder_round_trips_with_quick_gelu(hf_clip, tmp_path):
    hf_clip.save_pretrained(tmp_path / "hf")
    loaded = load_clip(HF_VIT, pretrained=tmp_path / "hf")
    assert read_checkpoint(tmp_path / "hf").format == "huggingface"
    # the twin config already has quick_gelu; load onto the plain tiny ViT to see detection work
    plain = load_clip(TINY_VIT, pretrained=tmp_path / "hf")
    assert plain.quick_gelu and _quick_gelu_modules(plain) == 4
    images, tokens = _hf_inputs(loaded)
    ref_img, ref_txt = _hf_features(hf_clip, images, tokens)
    for clip in (loaded, plain):
        with torch.no_grad():
            torch.testing.assert_close(clip.encode_image(images), ref_img, atol=1e-5, rtol=0)
            torch.testing.assert_close(clip.encode_text(tokens), ref_txt, atol=1e-5, rtol=0)
    # the weights file alone is recognised as Hugging Face layout too
    alone = load_clip(TINY_VIT, pretrained=tmp_path / "hf" / "model.safetensors")
    assert alone.quick_gelu
    torch.testing.assert_close(alone.encode_image(images), ref_img, atol=1e-5, rtol=0)


def test_hf_folder_without_config_or_weights_is_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"without config\.json"):
        load_clip(TINY_VIT, pretrained=tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text('{"text_config": {}}')
    with pytest.raises(CheckpointError, match=r"no weights found.*model\.safetensors"):
        load_clip(TINY_VIT, pretrained=tmp_path / "empty")


# ---- bad input -------------------------------------------------------------------------------


def test_unknown_model_name_suggests_closest():
    with pytest.raises(ModelNameError, match=r"'ViT-B-61'.*Closest names:.*ViT-B-16"):
        load_clip("ViT-B-61")


def test_openai_slash_spelling_is_accepted():
    """OpenAI spells "ViT-B/16"; open_clip "ViT-B-16". The check happens before building."""
    with pytest.raises(CheckpointError, match=r"pretrained tag of ViT-B-16"):
        load_clip("ViT-B/16", pretrained="no-such-tag")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.pt"):
        load_clip(TINY_VIT, pretrained=tmp_path / "nope.pt")


def test_unrecognised_format_lists_accepted_formats(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match=r"unrecognised checkpoint format '\.txt'.*Accepted:"):
        load_clip(TINY_VIT, pretrained=path)


def test_corrupt_or_unsafe_pickle_is_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt: not a readable checkpoint"):
        load_clip(TINY_VIT, pretrained=garbage)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "cfg": _Arbitrary()}, unsafe)
    with pytest.raises(CheckpointError, match=r"unsafe\.pt: not a readable checkpoint.*refused"):
        load_clip(TINY_VIT, pretrained=unsafe)


class _Arbitrary:
    """A pickled object of a class: loading it would run code, so it must be refused."""


def test_non_clip_safetensors_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match=r"does not look like a CLIP checkpoint"):
        load_clip(TINY_VIT, pretrained=path)


def test_checkpoint_for_another_architecture_names_first_mismatching_key(tmp_path):
    source = _source(quick_gelu=False)
    path = tmp_path / "tiny.safetensors"
    save_file(_state_dict(source), str(path))
    other = open_clip.create_model(OTHER_VIT).state_dict()
    first = next(
        k for k, v in other.items() if tuple(v.shape) != tuple(source.model.state_dict()[k].shape)
    )
    with pytest.raises(CheckpointError, match=rf"does not fit {OTHER_VIT}: '{first}' has shape"):
        load_clip(OTHER_VIT, pretrained=path)


def test_checkpoint_missing_or_extra_key_is_named(tmp_path):
    full = _state_dict(_source(quick_gelu=False))
    sd = dict(full)
    del sd["ln_final.bias"]
    save_file(sd, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"key 'ln_final\.bias' is missing"):
        load_clip(TINY_VIT, pretrained=tmp_path / "missing.safetensors")
    sd = dict(full)
    sd["extra.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected key 'extra\.weight'"):
        load_clip(TINY_VIT, pretrained=tmp_path / "extra.safetensors")


def test_unknown_pretrained_tag_lists_tags():
    with pytest.raises(CheckpointError, match=r"'openia' is neither.*Did you mean openai"):
        load_clip("RN50", pretrained="openia")


def test_offline_download_fails_fast_with_local_path_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    connects = []

    def no_network(*args, **kwargs):
        connects.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr("socket.socket.connect", no_network)
    monkeypatch.setattr("socket.getaddrinfo", no_network)
    start = time.perf_counter()
    with pytest.raises(DownloadError, match=r"RN50/openai.*offline.*pass a local checkpoint path"):
        load_clip("RN50", pretrained="openai", cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 5
    assert connects == []


def test_offline_uses_the_cached_file(tmp_path, monkeypatch):
    """Offline, a tag whose file is already in the Hugging Face cache loads from it."""
    source = _source(quick_gelu=True)
    repo = tmp_path / "models--vlprompt-test--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file(_state_dict(source), str(snapshot / "open_clip_model.safetensors"))
    tag_cfg = {"url": "", "hf_hub": "vlprompt-test/tiny/", "quick_gelu": True}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_VIT, {"tinytag": tag_cfg})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_clip(TINY_VIT, pretrained="tinytag", cache_dir=str(tmp_path))
    assert loaded.quick_gelu and loaded.pretrained == "tinytag"
    _assert_same_features(loaded, source)
