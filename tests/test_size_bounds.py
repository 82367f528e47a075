"""Every size setting of every method (and the engine's) has bounds: 0 where it means nothing, a
negative value and an absurd one (10**7) are each one line through the CLI, exit code 2, refused
before anything of that size is allocated or run, naming the bound and why, and no file is
written (vlprompt.methods.method_config.check_at_most and the methods' backbone bounds)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from test_engine_helpers import TINY_VIT
from vlprompt.cli import main
from vlprompt.methods import get_method_class, list_methods
from vlprompt.methods.method_config import _setting_kind

pytestmark = pytest.mark.usefixtures("isolated_home")

HUGE = 10**7
# settings where 0 has a meaning (their help says which): 0 is no refusal there
ZERO_MEANS_SOMETHING = {"warmup_epochs", "iterations", "search_steps", "rpo.text_chunk_size",
                        "gda.new_class_text_copies", "skiptuning.start_layer"}  # fmt: skip
ENGINE_SIZES = ["eval_batch_size", "num_workers", "view_pool"]


def _int_settings() -> list[tuple[str, str, bool]]:
    """(method, setting, is a pair) for every whole-number setting of every registered method."""
    out = []
    for method in list_methods():
        for f in fields(get_method_class(method).config_class):
            kind, is_sequence, _ = _setting_kind(f.type)
            if kind == "int":
                out.append((method, f.name, is_sequence))
    return out


def _cases() -> list[tuple[str, str, int]]:
    cases = []
    for method, setting, _ in _int_settings():
        values = [-1, HUGE]
        if (
            setting not in ZERO_MEANS_SOMETHING
            and f"{method}.{setting}" not in ZERO_MEANS_SOMETHING
        ):
            values.append(0)
        cases += [(method, setting, value) for value in values]
    return cases


def test_the_cases_cover_every_methods_sizes():
    settings = {(m, s) for m, s, _ in _int_settings()}
    assert {("coop", "n_ctx"), ("rpo", "K"), ("tcp", "n_class_tokens"), ("clap", "augment_epoch"),
            ("cocoop", "meta_net_reduction"), ("tip_adapter", "search_step"),
            ("linear_probe", "max_iter"), ("clip_lora", "rank"), ("ivlp", "depth_vision"),
            ("lp_plus_plus", "alpha_every")} <= settings  # fmt: skip
    assert {m for m, _ in settings} == set(list_methods())


def _argv(world, out: Path, *extra: str, method: str = "coop") -> list[str]:
    return [
        "train", "--method", method, "--dataset", "imagefolder", "--root", str(world["data"]),
        "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]), "--shots", "1", "-q",
        "-o", str(out), *extra,
    ]  # fmt: skip


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` but the per-test HOME's caches (few-shot splits)."""
    home = root / "home"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_relative_to(home)
    }


def _refused(world, tmp_path, capsys, argv: list[str]) -> str:
    """Run `argv`: exit code 2, one line, no traceback, nothing written; the line."""
    before, world_before = _snapshot(tmp_path), _snapshot(world["data"].parent)
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlprompt: error: "), captured.err
    assert not (tmp_path / "out").exists()
    assert _snapshot(tmp_path) == before and _snapshot(world["data"].parent) == world_before
    return lines[0]


@pytest.mark.parametrize("method,setting,value", _cases())
def test_a_size_out_of_bounds_is_one_line_before_anything_is_allocated(
    world, tmp_path, capsys, method, setting, value
):
    pair = dict(((m, s), p) for m, s, p in _int_settings())[method, setting]
    text = f"{value},20" if pair else str(value)
    flag = "--" + setting.replace("_", "-")
    # a recipe that trains by iterations refuses --epochs before its bound (tests/test_cli_errors)
    trains_by_steps = get_method_class(method).config_class().iterations > 0
    by_steps = ["--iterations=0"] if setting == "epochs" and trains_by_steps else []
    line = _refused(world, tmp_path, capsys, _argv(world, tmp_path / "out", f"{flag}={text}",
                                                   *by_steps, method=method))  # fmt: skip
    assert setting in line or (pair and "search_step" in line), line
    assert str(value) in line, line
    if value == HUGE:  # the bound, and where it comes from
        assert any(word in line for word in ("at most", "<=", "must divide")), line
        assert "(" in line, line


@pytest.mark.parametrize("value", [-1, HUGE])
@pytest.mark.parametrize("setting", ENGINE_SIZES)
def test_an_engine_size_out_of_bounds_is_one_line(world, tmp_path, capsys, setting, value):
    flag = "--" + setting.replace("_", "-")
    line = _refused(world, tmp_path, capsys, _argv(world, tmp_path / "out", f"{flag}={value}"))
    assert setting in line and str(value) in line, line
    if value == HUGE:
        assert "at most" in line, line


@pytest.mark.parametrize(
    "method,setting,bound",
    [("coop", "n_ctx", 74), ("maple", "n_ctx", 74), ("tcp", "n_class_tokens", 75), ("rpo", "K", 77),
     ("cocoop", "meta_net_reduction", 32)],
)  # fmt: skip
def test_backbone_bounds_are_the_backbones_and_the_bound_itself_is_accepted(
    tiny_clip, method, setting, bound
):
    """The tiny CLIP has a 77-token context and a 32-wide embedding: the bound is refused one
    above and accepted at itself (the methods are built, nothing trained)."""
    from vlprompt.errors import MethodError
    from vlprompt.methods import create_method

    extra = {"ctx_init": ""} if method == "maple" else {}
    with pytest.raises(
        MethodError, match=rf"^{setting} must be at most {bound} .*got {bound + 1}$"
    ):
        create_method(method, tiny_clip, ["dog", "cat"], **{setting: bound + 1}, **extra)
    if method in ("rpo", "cocoop"):  # the others need a class name beside the tokens
        create_method(method, tiny_clip, ["dog", "cat"], **{setting: bound}, **extra)
