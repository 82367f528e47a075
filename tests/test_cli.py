"""The `vlprompt` command end to end through `main(argv)`: train -> eval -> predict on a tiny CLIP
and a tiny generated image folder, and the one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from test_engine_helpers import TINY_VIT
from vlprompt.cli import main
from vlprompt.methods import list_methods

pytestmark = pytest.mark.usefixtures("isolated_home")


def _train_argv(world, out, *extra):
    return [
        "train", "--method", "test_tiny", "--dataset", "imagefolder",
        "--root", str(world["data"]), "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]),
        "--shots", "4", "--deterministic", "-q", "-o", str(out), *extra,
    ]  # fmt: skip


def _one_line_error(capsys, *needles):
    """The error is one line `vlprompt: error: ...` (after any skip notices), no traceback."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("vlprompt: error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert "Traceback" not in err
    err = errors[0]
    for needle in needles:
        assert needle in err, err
    return err


def test_train_eval_predict_end_to_end(world, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_argv(world, run, "--epochs", "2", "--lr", "0.3")) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and str(run) in out
    for name in ("config.json", "prompts.safetensors", "method.json", "results.jsonl", "log.txt"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["method_config"]["epochs"] == 2 and config["method_config"]["lr"] == 0.3
    assert config["method_config"]["batch_size"] == 4  # the method's own default

    assert main(["eval", str(run), "--json", "--no-record"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["n_images"] == 12 and record["split"] == "test"
    (trained,) = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert record["accuracy"] == trained["accuracy"]

    # predict on the test folder plus one file that is not an image
    (tmp_path / "notes.txt").write_text("not an image")
    argv = ["predict", str(run), str(world["data"] / "test"), str(tmp_path / "notes.txt")]
    assert main([*argv, "--json", "--topk", "2"]) == 0
    captured = capsys.readouterr()
    assert "skipping" in captured.err and "notes.txt" in captured.err
    predictions = json.loads(captured.out)
    good = [p for p in predictions if "predictions" in p]
    assert len(good) == 12 and all(len(p["predictions"]) == 2 for p in good)
    assert [p for p in predictions if "error" in p][0]["image"].endswith("notes.txt")
    for p in good:
        probs = [q["probability"] for q in p["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    # results.jsonl's accuracy equals the one recomputed from the predictions
    hits = [
        p["predictions"][0]["class"] == p["image"].split("/")[-2].replace("_", " ") for p in good
    ]
    assert trained["accuracy"] == pytest.approx(100.0 * sum(hits) / len(hits), abs=1e-9)

    assert main(["predict", str(run), str(world["data"] / "test" / "red_thing" / "0.png")]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].endswith("0.png") and len(text) == 1 + 3  # top-5 capped at 3 classes


def test_config_file_and_flags(world, tmp_path, capsys):
    settings = tmp_path / "run.yaml"
    settings.write_text(
        f"method: test_tiny\ndataset: imagefolder\nroot: {world['data']}\nbackbone: {TINY_VIT}\n"
        f"pretrained: {world['ckpt']}\nshots: 4\nepochs: 1\nlr: 0.2\n"
    )
    run = tmp_path / "run"
    assert main(["train", "--config", str(settings), "--lr", "0.1", "-q", "-o", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["method_config"]["epochs"] == 1  # from the file
    assert config["method_config"]["lr"] == 0.1  # the flag wins over the file
    # the saved config.json is itself a valid --config: same run, so it is reused
    capsys.readouterr()
    assert main(["train", "--config", str(run / "config.json"), "-q", "-o", str(run)]) == 0


def test_bad_input_is_one_line_with_exit_code_2(world, tmp_path, capsys):
    assert main(_train_argv(world, tmp_path / "a", "--method", "nope")) == 2
    _one_line_error(capsys, "unknown method 'nope'", "test_tiny")
    argv = _train_argv(world, tmp_path / "a")
    argv[argv.index("imagefolder")] = "nope_data"
    assert main(argv) == 2
    _one_line_error(capsys, "unknown data set 'nope_data'", "imagefolder")

    run = tmp_path / "run"
    assert main(_train_argv(world, run, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(_train_argv(world, run, "--epochs", "2")) == 2
    _one_line_error(capsys, "another config", "method_config.epochs: 1 -> 2", "--overwrite")

    assert main(["eval", str(tmp_path)]) == 2
    _one_line_error(capsys, "not a run folder")
    (tmp_path / "junk.txt").write_text("x")
    assert main(["predict", str(run), str(tmp_path / "junk.txt")]) == 2
    _one_line_error(capsys, "no readable image")


@pytest.mark.parametrize(
    "verb", ["train", "eval", "predict", "bench", "methods", "datasets", "quickstart", "mini"]
)
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_train_help_lists_the_methods_own_settings(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--method", "rpo", "--help"])
    out = capsys.readouterr().out
    assert "--K K" in out and "default: 24" in out and "default: 0.01" in out


@pytest.mark.parametrize("method", list_methods())
def test_every_methods_settings_become_train_flags_beside_the_engines(method, capsys):
    """A method setting named like an engine flag (e.g. Tip-Adapter's cache crop vs the engine's
    --crop-min-scale) would make `train --method NAME` crash in argparse: every method's
    settings must parse beside the engine's."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--method", method, "--help"])
    assert exit_info.value.code == 0
    assert "--crop-min-scale" in capsys.readouterr().out


def test_bench_set_takes_a_method_prefix_for_one_methods_setting():
    """`--set clip_lora.iterations=500 --set lr=0.1`: one method's setting and everyone's; a
    method the sweep does not run is one clear error."""
    from vlprompt.cli import _split_settings
    from vlprompt.protocols import BenchError

    pairs = [("clip_lora.iterations", 500), ("lr", 0.1), ("coop.n_ctx", 4)]
    everyone, per_method = _split_settings(pairs, ["clip_lora", "coop"])
    assert everyone == {"lr": 0.1}
    assert per_method == {"clip_lora": {"iterations": 500}, "coop": {"n_ctx": 4}}
    with pytest.raises(BenchError, match=r"'rpo' is not among the sweep's methods \(coop\)"):
        _split_settings([("rpo.K", 4)], ["coop"])
    assert _split_settings([("coop+dept.lr", 0.1)], ["coop", "coop+dept"]) == (
        {}, {"coop+dept": {"lr": 0.1}}
    )  # fmt: skip


def test_methods_and_datasets_are_listed(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "test_tiny" in out and "rpo" in out
    assert main(["datasets"]) == 0
    assert "imagefolder" in capsys.readouterr().out


def test_bench_verb_runs_a_base2new_sweep_on_the_engine(world, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = [
        "bench", "base2new", "--methods", "test_tiny", "--datasets", "imagefolder",
        "--seeds", "1", "--shots", "4", "--root", str(world["data"]), "--backbone", TINY_VIT,
        "--pretrained", str(world["ckpt"]), "--set", "epochs=1", "--no-report", "-q",
        "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "1 run(s) trained" in capsys.readouterr().out
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["subsample"] for r in records) == ["base", "new"]
    assert main(argv) == 0  # everything recorded: nothing runs again
    assert "0 run(s) trained or evaluated, 1 already done" in capsys.readouterr().out


def test_bench_sweeps_a_method_with_and_without_depts_head(world, tmp_path, capsys):
    """`--methods coop,coop+dept`: one sweep, two labels in its records and summary, and
    `--set coop+dept.KEY=...` for the DePT runs only."""
    out = tmp_path / "bench"
    argv = [
        "bench", "base2new", "--methods", "coop,coop+dept", "--datasets", "imagefolder",
        "--seeds", "1", "--shots", "2", "--root", str(world["data"]), "--backbone", TINY_VIT,
        "--pretrained", str(world["ckpt"]), "--set", "epochs=1", "--set", "n_ctx=2",
        "--set", "coop+dept.dept_weight=0.5", "-q", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "2 run(s) trained" in capsys.readouterr().out
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted({r["method"] for r in records}) == ["coop", "coop+dept"]
    saved = json.loads(
        (out / "base2new/imagefolder/coop+dept/shots2_seed1/config.json").read_text()
    )
    assert saved["method"] == "coop"
    assert saved["method_config"]["feature_rule"] == "dept"
    assert saved["method_config"]["dept_weight"] == 0.5
    plain = json.loads((out / "base2new/imagefolder/coop/shots2_seed1/config.json").read_text())
    assert plain["method_config"]["feature_rule"] == "none"
    summary = (out / "summary.md").read_text()
    assert "| coop+dept |" in summary
    # the recipe names the label too: one run each, the rule given on the command
    assert "| coop | 1 |" in summary and "| coop+dept | 1 |" in summary


def test_resume_needs_only_the_run_folder(world, tmp_path, capsys):
    import vlprompt

    def kill(stats):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vlprompt.train(
            "test_tiny", "imagefolder", root=world["data"], backbone=TINY_VIT,
            pretrained=world["ckpt"], shots=4, epochs=2, output_dir=tmp_path / "run",
            progress=False, on_epoch_end=kill,
        )  # fmt: skip
    assert main(["train", "--resume", "-q", "-o", str(tmp_path / "run")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "resumed from" in log and "epoch 2/2" in log
    assert main(["train", "--resume", "-q", "-o", str(tmp_path / "empty")]) == 2
    _one_line_error(capsys, "needs a run in")


def test_crop_min_scale_flag_reaches_the_run_config(world, tmp_path):
    run = tmp_path / "run"
    assert main(_train_argv(world, run, "--crop-min-scale", "1")) == 0
    assert json.loads((run / "config.json").read_text())["engine"]["crop_min_scale"] == 1.0


def test_resume_accepts_a_moved_data_folder(world, tmp_path):
    """The data root is not part of a run's identity: `--resume --root NEW` continues the run
    on the moved data (the old root is gone)."""
    import shutil

    old, new = tmp_path / "data-old", tmp_path / "data-new"
    shutil.copytree(world["data"], old)
    run = tmp_path / "run"
    argv = ["train", "--method", "test_tiny", "--dataset", "imagefolder", "--root", str(old),
            "--backbone", TINY_VIT, "--pretrained", str(world["ckpt"]), "--shots", "2",
            "--epochs", "2", "-q", "-o", str(run)]  # fmt: skip
    assert main(argv) == 0
    (run / "status.json").unlink()  # as if killed after its last checkpoint
    old.rename(new)
    assert main(["train", "--resume", "--root", str(new), "-q", "-o", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["root"] == str(new.resolve())


def test_a_run_below_zero_shot_says_so_with_the_likely_cause(tmp_path, capsys):
    """The papers' recipe on the mini world (--preset paper: the random crop of 8-100%) for one
    warm-up epoch ends below zero-shot CLIP: train's last line shows zero-shot's accuracy on
    the same images beside the run's, says BELOW and names the crop; results.jsonl keeps it."""
    run = tmp_path / "run"
    argv = ["train", "--method", "coop", "--dataset", "mini_shapes", "--root", str(tmp_path / "m"),
            "--subsample", "base", "--shots", "2", "--epochs", "1", "--preset", "paper",
            "--deterministic", "--no-calibrate", "-o", str(run)]  # fmt: skip
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    (record,) = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    zero_shot = record["zero_shot_accuracy"]
    assert record["accuracy"] < zero_shot
    assert f"test accuracy {record['accuracy']:.2f}% (zero-shot {zero_shot:.2f}%: BELOW " in last
    assert "likely cause: the papers' random crop (crop_min_scale 0.08)" in last, last
    # zero-shot CLIP itself is not compared with itself
    assert main([*argv[:2], "zsclip", *argv[3:-1], str(tmp_path / "zs")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "zero-shot" not in last and f"test accuracy {zero_shot:.2f}%" in last


def test_a_deep_prompt_run_logs_its_initial_accuracy_and_trains_as_without_it(
    tmp_path, capsys, monkeypatch
):
    """IVLP's fresh tokens change CLIP before any step: train logs the validation accuracy of
    the untrained prompts beside zero-shot CLIP's; the learned weights are those of a run
    without that line (the check draws no random number that training would have drawn)."""
    import torch
    from safetensors.torch import load_file

    from vlprompt.methods.ivlp import IVLP

    def train(name):
        run = tmp_path / name
        argv = ["train", "--method", "ivlp", "--dataset", "mini_shapes", "--root",
                str(tmp_path / "m"), "--subsample", "base", "--shots", "2", "--epochs", "1",
                "--crop-min-scale", "0.08",  # random crops: training draws random numbers
                "--deterministic", "--no-calibrate", "-o", str(run)]  # fmt: skip
        assert main(argv) == 0
        captured = capsys.readouterr()
        return captured.out + captured.err, load_file(next(run.glob("**/*.safetensors")))

    out, logged = train("logged")
    (line,) = [x for x in out.splitlines() if "before training" in x]
    assert "on the validation split (" in line and "% with the initial ivlp tokens" in line
    assert "zero-shot CLIP" in line
    monkeypatch.setattr(IVLP, "changes_clip_at_init", False)
    out, plain = train("plain")
    assert "before training" not in out
    assert logged.keys() == plain.keys()
    for key in logged:
        assert torch.equal(logged[key], plain[key]), key
