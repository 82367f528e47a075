"""The tiny CLIP: its config, its pre-training loop, and the shipped checkpoint."""

from __future__ import annotations

import json
import math

import open_clip
import pytest
import torch
from safetensors import safe_open

import vlprompt
from vlprompt.mini import MODEL_NAME, checkpoint_path, load_mini_clip
from vlprompt.mini.datasets import MINI_DATASETS
from vlprompt.mini.pretrain import PretrainConfig, encode_text_truncated, pretrain
from vlprompt.mini.probe import zeroshot_accuracy


def test_model_config_is_registered_with_the_real_tokenizer():
    assert MODEL_NAME in vlprompt.list_models()
    clip = vlprompt.load_clip(MODEL_NAME)
    assert clip.context_length == 77 and clip.is_vit
    assert clip.model.token_embedding.weight.shape[0] == 49408
    reference = open_clip.get_tokenizer("ViT-B-16")(["a red striped circle"])
    assert torch.equal(clip.tokenize(["a red striped circle"]).cpu(), reference)


def test_truncated_text_encoder_equals_open_clip(tiny_clip):
    """The pre-training text path (only up to the longest EOT) equals open_clip's encode_text."""
    model = tiny_clip.model
    tokens = tiny_clip.tokenize(["a red circle", "there are two small blue striped stars on grass"])
    torch.testing.assert_close(
        encode_text_truncated(model, tokens), model.encode_text(tokens), atol=1e-5, rtol=1e-5
    )


def test_pretrain_writes_a_loadable_checkpoint_and_a_record(tmp_path):
    out = tmp_path / "mini.safetensors"
    record = pretrain(out, seed=3, steps=2, batch_size=4, pool_size=4, log=None)
    assert record["config"]["steps"] == 2 and record["config"]["seed"] == 3
    assert json.loads((tmp_path / "mini.safetensors.json").read_text())["final_loss"] > 0
    clip = load_mini_clip(pretrained=out)
    assert clip.model.token_embedding.weight.dtype == torch.float32  # fp16 storage, fp32 model
    with safe_open(str(out), "pt") as f:
        assert f.get_tensor("logit_scale").dtype == torch.float16


def test_pretrain_builds_another_registered_architecture(tmp_path):
    """`model=` pre-trains any registered open_clip config (here a 1-layer text tower)."""
    from vlprompt.backbone import register_model_config

    config = json.loads((checkpoint_path().parent / f"{MODEL_NAME}.json").read_text())
    config["text_cfg"]["layers"] = 1
    register_model_config("mini-text1-test", config)
    out = tmp_path / "text1.safetensors"
    record = pretrain(out, steps=1, batch_size=2, pool_size=2, model="mini-text1-test", log=None)
    assert record["config"]["model"] == "mini-text1-test"
    clip = vlprompt.load_clip("mini-text1-test", pretrained=out)
    assert len(clip.model.transformer.resblocks) == 1
    with pytest.raises(ValueError, match="unknown model config 'no-such-model'"):
        pretrain(tmp_path / "x.safetensors", steps=1, batch_size=2, pool_size=2,
                 model="no-such-model", log=None)  # fmt: skip


def test_pretrain_command_registers_a_model_config_file(tmp_path, capsys):
    from vlprompt.cli import main

    config = json.loads((checkpoint_path().parent / f"{MODEL_NAME}.json").read_text())
    config["text_cfg"]["layers"] = 1
    (tmp_path / "mini-text1-cli.json").write_text(json.dumps(config))
    out = tmp_path / "cli.safetensors"
    argv = ["mini", "pretrain", "-o", str(out), "--steps", "1", "--batch-size", "2",
            "--pool-size", "2", "--model-config", str(tmp_path / "mini-text1-cli.json")]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((tmp_path / "cli.safetensors.json").read_text())["config"]["model"] == (
        "mini-text1-cli"
    )
    (tmp_path / "bad.json").write_text('{"embed_dim": 8}')
    assert main([*argv[:-1], str(tmp_path / "bad.json")]) != 0
    assert "bad.json: an open_clip model config needs the keys" in capsys.readouterr().err


def test_pretrain_config_refuses_bad_values(tmp_path):
    with pytest.raises(ValueError, match="pool_size >= batch_size"):
        PretrainConfig(batch_size=64, pool_size=8)
    with pytest.raises(ValueError, match="must be a .safetensors path"):
        pretrain(tmp_path / "mini.pt", steps=1, batch_size=2, pool_size=2, log=None)


def test_shipped_checkpoint_is_small_and_loads_through_load_clip():
    path = checkpoint_path()
    assert path.is_file() and path.stat().st_size <= 25 * 2**20
    clip = vlprompt.load_clip(MODEL_NAME, pretrained=path)
    assert clip.pretrained == str(path)
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["config"]["model"] == MODEL_NAME


@pytest.fixture(scope="module")
def shipped_clip():
    return load_mini_clip()


@pytest.mark.parametrize("dataset", sorted(MINI_DATASETS))
def test_shipped_checkpoint_new_class_zero_shot_is_at_least_three_times_chance(
    shipped_clip, dataset
):
    """The mini world's acceptance bar: on every data set's new classes (the second half of
    its labels, all 30 test images per class), zero-shot accuracy >= 3x chance. The closest is
    mini_patterns: 103 of 180 images where 90 pass (docs/mini-world.md)."""
    n = len(MINI_DATASETS[dataset].classnames)
    chance = 100.0 / (n - math.ceil(n / 2))
    assert zeroshot_accuracy(shipped_clip, dataset, classes="new") >= 3 * chance


def test_pretraining_pairs_differ_in_exactly_the_named_attribute():
    from vlprompt.mini.pretrain import render_pool

    images, attrs, differs = render_pool(seed=0, size=16)
    assert images.shape == (16, 64, 64, 3) and len(differs) == 8
    for k, vary in enumerate(differs):
        a, b = attrs[2 * k].to_dict(), attrs[2 * k + 1].to_dict()
        changed = {n for n in a if a[n] != b[n]} - {"position"}
        assert changed == {vary}
    with pytest.raises(ValueError, match="must be even"):
        render_pool(seed=0, size=3)


def test_pretrain_command_defaults_rebuild_the_shipped_checkpoint():
    """`vlprompt mini pretrain` with no flags uses the shipped checkpoint's recipe."""
    from vlprompt.cli import build_parser

    args = build_parser(["mini", "pretrain"]).parse_args(["mini", "pretrain"])
    path = checkpoint_path()
    shipped = json.loads(path.with_name(path.name + ".json").read_text())["config"]
    for key in ("seed", "steps", "batch_size", "pool_size", "lr"):
        assert getattr(args, key) == shipped[key], key
    assert PretrainConfig().model == shipped["model"] == MODEL_NAME
