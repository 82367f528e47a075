"""Every error a user can cause, through the command line: exit code 2, one line
`vlprompt: error: ...` naming the file or value, never "Traceback", and no file outside the
command's own output folder changed. One case per kind of bad input (the library-level tests
of each kind are in test_bad_input_data.py and test_bad_input_values.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_data_trees import make_dtd
from test_engine_helpers import TINY_VIT
from vlprompt.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


def _train(world, out, *extra, data=None, dataset="imagefolder", method="test_tiny"):
    return [
        "train", "--method", method, "--dataset", dataset,
        "--root", str(data or world["data"]), "--backbone", TINY_VIT,
        "--pretrained", str(world["ckpt"]), "--shots", "2", "--epochs", "1", "-q",
        "-o", str(out), *extra,
    ]  # fmt: skip


# ---- the cases: (tmp, world) -> (argv, words the one line must hold) --------------------------
def _setting(flag: str, value: str, named: str) -> Callable:
    return lambda tmp, world: (_train(world, tmp / "out", flag, value), [named, value])


def _one_class(tmp, world):
    data = tmp / "one"
    for split in ("train", "val", "test"):
        shutil.copytree(world["data"] / split / "red_thing", data / split / "red_thing")
    return _train(world, tmp / "out", data=data), ["at least two classes", "red thing"]


def _csv(text: str, *words: str) -> Callable:
    def make(tmp, world):
        image = world["data"] / "train" / "red_thing" / "0.png"
        path = tmp / "labels.csv"
        path.write_text(text.format(image=image), encoding="utf-8")
        return _train(world, tmp / "out", data=path, dataset="csv"), [str(path), *words]

    return make


def _dtd_split(edit: Callable[[dict], None], *words: str) -> Callable:
    def make(tmp, world):
        root = make_dtd(tmp / "data")
        images = root / "dtd" / "images"
        classes = sorted(p.name for p in images.iterdir())
        files = {c: sorted(p.name for p in (images / c).iterdir()) for c in classes}
        split = {
            part: [[f"{c}/{files[c][i]}", y, c] for y, c in enumerate(classes)]
            for i, part in enumerate(("train", "val", "test"))
        }
        edit(split)
        path = root / "dtd" / "split_zhou_DescribableTextures.json"
        path.write_text(json.dumps(split), encoding="utf-8")
        return _train(world, tmp / "out", data=root, dataset="dtd"), [path.name, *words]

    return make


def _trained(world, tmp, method: str = "test_tiny") -> Path:
    """A finished run folder (trained once per test, in tmp; coop where it must export)."""
    run = tmp / "run"
    assert main(_train(world, run, method=method)) == 0
    return run


def _read_only(folder: Path) -> Path:
    """`folder`, created and made unwritable (chattr +i as root, where chmod is not enough);
    the test undoes it."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr is not available")
    else:
        folder.chmod(0o555)
    return folder


def _writable_again(tmp: Path) -> None:
    for folder in [tmp, *(p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink())]:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        else:
            folder.chmod(0o755)


def _export(source: Callable[[Path, dict], Path], target: Callable[[Path], Path], *words: str,
            fmt: str = "torchscript") -> Callable:  # fmt: skip
    def make(tmp, world):
        run, out = source(tmp, world), target(tmp)
        return ["export", str(run), "--format", fmt, "-o", str(out)], [*words]

    return make


def _coop_run(tmp, world) -> Path:
    return _trained(world, tmp, method="coop")


def _unfinished_run(tmp, world) -> Path:
    run = _trained(world, tmp)
    (run / "status.json").unlink()
    return run


def _not_a_run(tmp, world) -> Path:
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("my notes\n")
    return folder


def _a_file(tmp) -> Path:
    path = tmp / "report.txt"
    path.write_text("mine\n")
    return path


def _eval_after_the_data_moved(tmp, world):
    data = tmp / "data"
    shutil.copytree(world["data"], data)
    run = tmp / "run"
    assert main(_train(world, run, data=data)) == 0
    data.rename(tmp / "moved")
    return ["eval", str(run), "--report"], [str(data), "no longer exists", "--root"]


def _pack(target: Callable[[Path], Path], *words: str) -> Callable:
    def make(tmp, world):
        out = target(tmp)
        return ["pack", str(_trained(world, tmp)), "-o", str(out)], [str(out.parent), *words]

    return make


def _predict_bundle(weights: Callable[[Path, dict], Path], *words: str) -> Callable:
    def make(tmp, world):
        bundle = tmp / "run.vlprompt"
        assert main(["pack", str(_trained(world, tmp)), "-o", str(bundle)]) == 0
        image = str(world["data"] / "test" / "red_thing" / "0.png")
        path = weights(tmp, world)
        return ["predict", str(bundle), image, "--pretrained", str(path)], [str(path), *words]

    return make


def _other_weights(tmp, world) -> Path:
    tensors = load_file(str(world["ckpt"]))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    path = tmp / "other.safetensors"
    save_file(tensors, str(path))
    return path


def _edited_run(edit: Callable[[Path], None], command: str, *words: str) -> Callable:
    def make(tmp, world):
        run = _trained(world, tmp)
        edit(run)
        image = str(world["data"] / "test" / "red_thing" / "0.png")
        argv = {
            "eval": ["eval", str(run)],
            "predict": ["predict", str(run), image],
            "resume": ["train", "--resume", "-q", "-o", str(run)],
        }[command]
        return argv, [str(run), *words]

    return make


def _other_method(run: Path) -> None:
    info = json.loads((run / "method.json").read_text())
    (run / "method.json").write_text(json.dumps({**info, "method": "coop"}))


def _truncate(name: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = next(run.rglob(name))
        path.write_bytes(path.read_bytes()[:50])

    return edit


def _nan_prompts(run: Path) -> None:
    tensors = load_file(str(run / "prompts.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in tensors.items()},
              str(run / "prompts.safetensors"))  # fmt: skip


def _unfinished_with_bad_state(run: Path) -> None:
    (run / "status.json").unlink()
    (next(run.rglob("state.json"))).write_text('{"epoch": "one"}')


def _garbage_weights(tmp, world):
    path = tmp / "weights.safetensors"
    path.write_bytes(b"\x00garbage, not a safetensors file")
    argv = _train(world, tmp / "out")
    argv[argv.index(str(world["ckpt"]))] = str(path)
    return argv, [str(path)]


CASES: dict[str, Callable] = {
    "negative momentum": _setting("--momentum", "-0.5", "momentum"),
    "negative weight decay": _setting("--weight-decay", "-1", "weight_decay"),
    "nan lr": _setting("--lr", "nan", "lr"),
    "inf prograd lambda": _setting("--prograd-lambda", "inf", "prograd_lambda"),
    "negative warm-up": _setting("--warmup-epochs", "-1", "warmup_epochs"),
    "seed too large": _setting("--seed", "4294967296", "seed"),
    "unknown device": _setting("--device", "gpu0", "device"),
    "template without {}": _setting("--template", "a photo", "template"),
    "template with a field": _setting("--template", "a {name} photo", "template"),
    "one class": _one_class,
    "csv short row": _csv("path,label,classname\n{image},0,red\n{image}\n", "line 3"),
    "csv huge label": _csv(
        "path,label,classname\n{image},0,red\n{image},1000000000000000000000000000000,blue\n",
        "line 3",
    ),
    "split file path leaves the images": _dtd_split(
        lambda s: s["train"][0].__setitem__(0, "../../etc/passwd"), "leaves the image folder"
    ),
    "split file label of the wrong type": _dtd_split(
        lambda s: s["val"][0].__setitem__(1, 1.5), "val"
    ),
    "split file huge label": _dtd_split(lambda s: s["test"][0].__setitem__(1, 10**30), "test"),
    "prompts of another method": _edited_run(_other_method, "eval", "coop"),
    "truncated prompts": _edited_run(_truncate("prompts.safetensors"), "predict"),
    "nan prompts": _edited_run(_nan_prompts, "predict", "NaN or infinite"),
    "malformed checkpoint state": _edited_run(_unfinished_with_bad_state, "resume", "state.json"),
    "truncated checkpoint": _edited_run(
        lambda run: ((run / "status.json").unlink(), _truncate("state.safetensors")(run)),
        "resume",
        "state.safetensors",
    ),  # fmt: skip
    "garbage clip weights": _garbage_weights,
    # settings that would be silently dropped or would hang
    "epochs on an iterations recipe": lambda tmp, world: (
        _train(world, tmp / "out", method="clip_lora"),
        ["iterations=", "--iterations"],
    ),
    "ray flags without ray": lambda tmp, world: (
        [*_bench(tmp), "--gpus-per-run", "1", "--ray-address", "auto"],
        ["--ray-address, --gpus-per-run", "--executor ray"],
    ),
    "ray address where nothing listens": lambda tmp, world: (
        [*_bench(tmp), "--executor", "ray", "--ray-address", "127.0.0.1:1"],
        ["127.0.0.1:1", "nothing answers"],
    ),
    "resume with a preset": lambda tmp, world: (
        ["train", "--resume", "--preset", "coop", "-q", "-o", str(_trained(world, tmp))],
        ["--preset 'coop'", "another run"],
    ),
    "resume with a method setting": lambda tmp, world: (
        ["train", "--resume", "--lr", "0.25", "-q", "-o", str(_trained(world, tmp))],
        ["--lr 0.25", "another run"],
    ),
    "datasets root missing": lambda tmp, world: (
        ["datasets", "--root", str(tmp / "nope")],
        [str(tmp / "nope"), "does not exist"],
    ),
    "eval on cuda without cuda": lambda tmp, world: (
        ["eval", str(_trained(world, tmp)), "--device", "cuda"],
        ["CUDA is not available"],
    ),
    # the exporter, pack, predict on a bundle and eval --report
    "export into a read-only folder": _export(
        _coop_run, lambda tmp: _read_only(tmp / "ro") / "export", "ro", "choose a folder you can"
    ),
    "export to a file": _export(_coop_run, _a_file, "report.txt", "is a file"),
    "export of an unfinished run": _export(
        _unfinished_run, lambda tmp: tmp / "export", "not finished", "--resume"
    ),
    "export of a folder that is no run": _export(
        _not_a_run, lambda tmp: tmp / "export", "notes", "not a run folder"
    ),
    "export of a method without class features": _export(
        lambda tmp, world: _trained(world, tmp),
        lambda tmp: tmp / "export",
        "cannot be exported",
        "vlprompt predict",
    ),  # fmt: skip
    "export to an unknown format": _export(
        _coop_run, lambda tmp: tmp / "export", "--format", "'tflite'", "onnx", fmt="tflite"
    ),
    "eval --report after the data moved": _eval_after_the_data_moved,
    "pack onto an existing file": _pack(_a_file, "exists", "new file name"),
    "pack into a folder": _pack(lambda tmp: tmp, "is a folder", ".vlprompt"),
    "pack under a file": _pack(lambda tmp: _a_file(tmp) / "run.vlprompt", "is a file"),
    "pack into a read-only folder": _pack(
        lambda tmp: _read_only(tmp / "ro") / "run.vlprompt",
        "bundle's folder",
        "choose a folder you",
    ),
    "predict a bundle with other weights": _predict_bundle(
        _other_weights, "not the weight file the run was trained on", "tiny.safetensors"
    ),
    "predict a bundle with a missing weight file": _predict_bundle(
        lambda tmp, world: tmp / "nope.safetensors", "is not a file", "tiny.safetensors"
    ),
    "predict a bundle with a folder as weights": _predict_bundle(
        lambda tmp, world: tmp, "is not a file", "tiny.safetensors"
    ),
}


def _bench(tmp: Path) -> list[str]:
    return ["bench", "fewshot", "--methods", "coop", "--datasets", "mini_shapes", "--seeds",
            "1", "-q", "-o", str(tmp / "out")]  # fmt: skip


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(path.is_relative_to(s) for s in skip):
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_no_traceback_and_nothing_outside_changed(
    case, world, tmp_path, capsys
):
    try:
        argv, words = CASES[case](tmp_path, world)
        capsys.readouterr()
        # the command's own output folder may change (created, or its log when resuming)
        own = tmp_path / ("run" if "--resume" in argv else "out")
        before = _snapshot(tmp_path, (own, tmp_path / "home"))
        world_before = _snapshot(world["data"].parent, ())
        assert _exit_code(argv) == 2
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out
        lines = captured.err.strip().splitlines()
        # argparse refuses a flag's value after its usage lines, as "vlprompt VERB: error: ..."
        errors = [line for line in lines if re.match(r"vlprompt( \w+)?: error: ", line)]
        assert len(errors) == 1 and lines[-1] == errors[0], captured.err
        for word in words:
            assert word in errors[0], errors[0]
        assert _snapshot(tmp_path, (own, tmp_path / "home")) == before
        assert _snapshot(world["data"].parent, ()) == world_before
    finally:
        _writable_again(tmp_path)


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's refusal
        return int(exc.code or 0)


# ---- unusual input that has a correct answer: exit 0, no traceback, the right output -------------
LATEX_NAMES = ("my_m%e&t#h$od", "da_ta%s&e#t$")  # method, data set: LaTeX's specials
LATEX_ESCAPED = ("my\\_m\\%e\\&t\\#h\\$od", "da\\_ta\\%s\\&e\\#t\\$")


def _sweep(tmp: Path, methods, datasets, seeds) -> Path:
    from test_report_cli import rec

    records = [rec(m, d, sub, s, 70.0 - i + s) for i, m in enumerate(methods) for d in datasets
               for s in seeds for sub in ("base", "new")]  # fmt: skip
    records += [dict(rec(m, d, "all", s, 60.0 - i, protocol="fewshot"), shots=4)
                for i, m in enumerate(methods) for d in datasets for s in seeds]  # fmt: skip
    (tmp / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp


@pytest.mark.parametrize(
    "methods,datasets,seeds,plots",
    [(("rpo", "coop"), ("dtd", "eurosat"), (1,), True), (("rpo", "coop"), ("dtd",), (1, 2, 3), False),
     (("rpo",), ("dtd",), (1,), True), (("zsclip", LATEX_NAMES[0]), (LATEX_NAMES[1], "dtd"), (1, 2), False)],
    ids=["one seed", "one data set", "one of everything", "latex specials"],
)  # fmt: skip
def test_a_small_or_oddly_named_sweep_reports_correctly(
    tmp_path, capsys, methods, datasets, seeds, plots
):
    sweep = _sweep(tmp_path, methods, datasets, seeds)
    assert main(["report", str(sweep), "--latex", *([] if plots else ["--no-plots"])]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out and "error" not in captured.err
    mean = 70.0 + statistics.mean(seeds)  # the first method's base accuracy, every data set
    spread = "-" if len(seeds) == 1 else f"{statistics.stdev(seeds):.2f}"  # one seed: none
    assert f"| {methods[0]} | {len(datasets)} | {mean:.2f} ± {spread} |" in captured.out
    tex = (sweep / "summary.tex").read_text()
    assert tex.count(r"\begin{table}") == 2  # base-to-new and few-shot
    assert rf"\textbf{{{mean:.2f}}}" in tex or len(methods) == 1  # the best in bold
    for name, escaped in zip(LATEX_NAMES, LATEX_ESCAPED):
        if name in methods + datasets:
            assert escaped in tex and name not in tex
    _check_latex(tex, sweep)


def _check_latex(tex: str, folder: Path) -> None:
    """Every special character escaped (no stray comment, math, parameter or subscript), each
    table row as many cells as its header; compiled by pdflatex where it is installed."""
    for line in tex.splitlines():
        if line.startswith("%"):
            continue
        bare = re.sub(r"\\[&%#$_{}]", "", line)
        assert not re.search(r"[%#$_]", bare), line
    for table in tex.split(r"\begin{tabular}")[1:]:
        rows = [r for r in table.split(r"\end{tabular}")[0].splitlines() if r.endswith(r"\\")]
        cells = {len(re.findall(r"(?<!\\)&", row)) for row in rows}
        assert len(cells) == 1, rows
    if shutil.which("pdflatex") is None:
        return
    (folder / "tables.tex").write_text(tex)
    (folder / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\input{tables.tex}\n\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "doc.tex"],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
