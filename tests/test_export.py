"""`vlprompt export`: every text-static method of the registry, trained into a tiny run folder,
exported to ONNX (run by onnxruntime) and TorchScript gives the loaded run's logits at batch 1
and 7; a plain Python without vlprompt classifies images from the export folder alone like
`vlprompt predict`; CoCoOp, a read-only or foreign folder and an unfinished run are refused."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlprompt
from test_engine_helpers import COLORS, TINY_VIT
from test_method_matrix import CASES, own_methods
from test_run_folder import read_only_folder  # noqa: F401 (a fixture)
from vlprompt.cli import main
from vlprompt.errors import ExportError, FolderError, RunError
from vlprompt.export import export_run
from vlprompt.methods import get_method_class

ort = pytest.importorskip("onnxruntime")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
TEXT_STATIC = [n for n in own_methods() if not get_method_class(n).text_depends_on_image]


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    """name -> a finished tiny run folder of that method (trained once per module)."""
    made: dict[str, Path] = {}
    home = tmp_path_factory.mktemp("home")

    def get(name: str) -> Path:
        if name not in made:
            settings = dict(CASES[name][0])
            if get_method_class(name).needs_training and "iterations" not in settings:
                settings.setdefault("epochs", 1)
            out = tmp_path_factory.mktemp("runs") / name
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("HOME", str(home))
                vlprompt.train(
                    name, "imagefolder", root=world["data"], backbone=TINY_VIT,
                    pretrained=world["ckpt"], output_dir=out, shots=4, progress=False,
                    deterministic=True, evaluate=False, **settings,
                )  # fmt: skip
            made[name] = out
        return made[name]

    return get


def _images(n: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)


def _onnx_outputs(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def _torchscript_outputs(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    model = torch.jit.load(io.BytesIO(path.read_bytes()))
    out = model(images)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


# ---- the logits of every method -----------------------------------------------------------------
@pytest.mark.parametrize("name", TEXT_STATIC)
def test_every_text_static_method_exports_the_runs_logits(name, runs, tmp_path):
    run = vlprompt.load_run(runs(name))
    images = _images()
    with torch.no_grad():
        expected = run.method(images).numpy()
    onnx_path = run.export(tmp_path / "onnx", "onnx")
    ts_path = run.export(tmp_path / "ts", "torchscript")
    assert (onnx_path.name, ts_path.name) == ("model.onnx", "model.pt")
    for outputs in (_onnx_outputs, _torchscript_outputs):
        for batch in (1, 7):
            (logits,) = outputs(onnx_path if outputs is _onnx_outputs else ts_path, images[:batch])
            assert logits.shape == (batch, len(run.classnames))
            np.testing.assert_allclose(logits, expected[:batch], rtol=0, atol=1e-4)


def test_the_graph_holds_no_text_tower(runs, tmp_path):
    """The class side is a constant: no initializer of the exported CoOp has the token
    embedding's shape, and the only input is the images."""
    import onnx

    run = vlprompt.load_run(runs("coop"))
    model = onnx.load(str(run.export(tmp_path / "e")))
    vocab = tuple(run.clip.model.token_embedding.weight.shape)
    assert all(tuple(t.dims) != vocab for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["images"]
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value  # a named, dynamic batch axis


@pytest.mark.parametrize("name", ["tip_adapter_f", "rpo", "ivlp"])
def test_features_and_probabilities_outputs(name, runs, tmp_path):
    run = vlprompt.load_run(runs(name))
    run.calibration = {"temperature": 2.5}  # a calibrated run (its fitted temperature)
    images = _images(3)
    method = run.method
    with torch.no_grad():
        logits = method(images)
        if name == "rpo":
            feats = method.encode_image(images)[0]
        elif name == "ivlp":
            feats = torch.nn.functional.normalize(method.encode_image(images), dim=-1)
        else:
            feats = method.image_features(images)
    path = run.export(tmp_path / "e", features=True, probabilities=True)
    got_logits, got_feats, probs = _onnx_outputs(path, images)
    np.testing.assert_allclose(got_logits, logits.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got_feats, feats.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(probs, (logits / 2.5).softmax(-1).numpy(), rtol=0, atol=1e-6)
    info = json.loads((path.parent / "model.json").read_text())
    assert info["outputs"] == ["logits", "features", "probabilities"]
    assert info["temperature"] == 2.5 and info["method"] == name


# ---- the folder's JSON files and a reader without vlprompt ---------------------------------------
def test_labels_preprocess_and_model_json(runs, tmp_path):
    run = vlprompt.load_run(runs("coop"))
    folder = run.export(tmp_path / "e", "torchscript").parent
    assert json.loads((folder / "labels.json").read_text()) == run.classnames
    pre = json.loads((folder / "preprocess.json").read_text())
    assert pre["resize_short_side"] == 32 and pre["crop_size"] == [32, 32]
    assert pre["mean"] == pytest.approx(list(run.clip.mean))
    assert pre["std"] == pytest.approx(list(run.clip.std))
    assert pre["interpolation"] == "bicubic"
    info = json.loads((folder / "model.json").read_text())
    assert info["model_file"] == "model.pt" and info["model_format"] == "torchscript"
    assert info["backbone"] == TINY_VIT and info["vlprompt_version"] == vlprompt.__version__
    assert info["input"]["name"] == "images" and info["temperature"] == 1.0
    run.export(folder, "onnx")  # again into its own folder: the other format's file goes
    assert not (folder / "model.pt").exists() and (folder / "model.onnx").is_file()


def _photo_folder(root: Path) -> Path:
    """Colour images of several sizes and modes, so that resize and crop both act."""
    root.mkdir()
    g = np.random.default_rng(0)
    for i, (w, h) in enumerate([(50, 37), (41, 64), (32, 32), (90, 45), (33, 70), (64, 40)]):
        colour = np.array(COLORS[i % 3], dtype=np.int16)
        pixels = np.clip(colour + g.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        (image.convert("P") if i == 4 else image).save(root / f"img{i}.png")
    return root


def _snippet(path: Path, heading: str) -> str:
    """The first python block after `heading` in `path`."""
    text = path.read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.S).group(1)


def _docs_snippet() -> str:
    """The onnxruntime snippet of docs/deploy.md, which the test runs as it is; the README
    shows the same one."""
    snippet = _snippet(DOCS, "## Classifying without vlprompt")
    assert _snippet(DOCS.parents[1] / "README.md", "## Deploy") == snippet
    return snippet


def test_a_python_without_vlprompt_classifies_like_predict(runs, tmp_path, capsys):
    run_dir = runs("coop")
    export_dir = tmp_path / "export"
    export_run(vlprompt.load_run(run_dir), export_dir, "onnx")
    photos = _photo_folder(tmp_path / "photos")
    paths = sorted(str(p) for p in photos.iterdir())
    script = _docs_snippet() + "\nassert 'vlprompt' not in sys.modules, 'vlprompt was imported'\n"
    done = subprocess.run(
        [sys.executable, "-I", "-c", script, str(export_dir), *paths],
        capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ours = dict(line.split("\t") for line in done.stdout.strip().splitlines())
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(photos), "--topk", "1", "--json"]) == 0
    theirs = {r["image"]: r["predictions"][0]["class"] for r in json.loads(capsys.readouterr().out)}
    assert ours == theirs and len(ours) == len(paths)


# ---- refusals ------------------------------------------------------------------------------------
def _refused(capsys, argv: list[str]) -> str:
    """The one error line of `vlprompt ARGV` (what training the fixture's run printed is
    read out first)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlprompt: error: "), err
    return err[0]


def test_cocoop_is_refused_with_one_line(runs, tmp_path, capsys):
    line = _refused(capsys, ["export", str(runs("cocoop")), "-o", str(tmp_path / "e")])
    assert "cocoop cannot be exported" in line and "depends on each image" in line
    assert not (tmp_path / "e").exists()  # refused before the folder was made


def test_a_read_only_folder_is_one_line(runs, capsys, read_only_folder):  # noqa: F811
    line = _refused(capsys, ["export", str(runs("coop")), "-o", str(read_only_folder / "e")])
    assert "choose a folder you can write to" in line


def test_a_foreign_folder_is_refused_untouched(runs, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FolderError, match="is not empty"):
        export_run(vlprompt.load_run(runs("coop")), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_an_unfinished_run_is_refused(runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(runs("coop"), run_dir)
    run = vlprompt.load_run(run_dir)
    (run_dir / "status.json").unlink()
    with pytest.raises(RunError, match="has not finished training"):
        run.export(tmp_path / "e")  # a Run loaded before its folder lost its status
    assert not (tmp_path / "e").exists()
    line = _refused(capsys, ["export", str(run_dir), "-o", str(tmp_path / "e")])
    assert "has not finished training" in line


def test_a_missing_onnx_package_names_the_extra(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(ExportError, match=re.escape("pip install 'vlprompt[export]'")):
        export_run(vlprompt.load_run(runs("coop")), tmp_path / "e")


def test_the_cli_writes_the_folder(runs, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["export", str(runs("zsclip")), "--format", "torchscript", "-o", str(out)]) == 0
    assert str(out / "model.pt") in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"model.pt", "labels.json", "preprocess.json", "model.json"} <= names


def test_a_trace_that_bakes_in_the_batch_size_is_caught():
    """`check_export` runs the exported model at batches other than the traced one: a module
    that reads the batch size as a Python int is refused, not written."""
    from types import SimpleNamespace

    from vlprompt.export import check_export, torchscript_bytes

    class BakesBatch(torch.nn.Module):
        method = SimpleNamespace(name="toy")

        def forward(self, images):
            return images.mean(dim=(1, 2, 3)).unsqueeze(1) + torch.arange(int(images.shape[0]))

    model = BakesBatch()
    data = torchscript_bytes(model, torch.zeros(2, 3, 4, 4))
    with pytest.raises(ExportError, match="does not give the method's logits at batch 1"):
        check_export(model, "torchscript", data, 4)


# ---- the fused attention operator ---------------------------------------------------------------
def _graph_operators(path: Path) -> list[str]:
    import onnx

    return [f"{n.domain}.{n.op_type}" for n in onnx.load(str(path)).graph.node]


# (fused Attention operators, Softmax operators) of the fused graph, given the tower's blocks n:
# IVLP's last block computes the CLS row alone (`pooled_rows_forward`, unfused); RPO's frozen
# tokens are fused (`block_forward_with_kv`), its prompt rows' attention is not
# (fused attention operators, softmaxes) of an image tower of n blocks: the last block computes
# only the pooled row (the softmax of its one query), or only keys and values (RPO's frozen
# tokens, whose prompt rows take a softmax per block)
FUSED_GRAPH = {
    "coop": lambda n: (n - 1, 1),
    "ivlp": lambda n: (n - 1, 1),
    "clip_lora": lambda n: (n - 1, 1),
    "rpo": lambda n: (n - 1, n),
}


@pytest.mark.parametrize("name", sorted(FUSED_GRAPH))
def test_attention_is_one_fused_operator_per_block_or_standard_ops(name, runs, tmp_path):
    """By default each image-tower block's self-attention is one `com.microsoft.Attention`;
    `--standard-ops` writes standard ONNX operators only; both give the run's logits."""
    run = vlprompt.load_run(runs(name))
    images = _images()
    with torch.no_grad():
        expected = run.method(images).numpy()
    blocks = len(run.clip.model.visual.transformer.resblocks)
    fused = run.export(tmp_path / "fused", "onnx")
    out = tmp_path / "standard"
    assert main(["export", str(runs(name)), "-o", str(out), "--standard-ops"]) == 0
    standard = out / "model.onnx"
    operators = _graph_operators(fused)
    counts = (operators.count("com.microsoft.Attention"), operators.count(".Softmax"))
    assert counts == FUSED_GRAPH[name](blocks)
    assert {op.split(".")[0] for op in _graph_operators(standard)} == {""}
    infos = [json.loads((p.parent / "model.json").read_text()) for p in (fused, standard)]
    assert [i["contrib_operators"] for i in infos] == [["com.microsoft.Attention"], []]
    for path in (fused, standard):
        for batch in (1, 7):
            (logits,) = _onnx_outputs(path, images[:batch])
            np.testing.assert_allclose(logits, expected[:batch], rtol=0, atol=1e-4)


def test_packed_attention_computes_the_modules_attention():
    """`PackedSelfAttention` (what the tracer runs in place of a plain self-attention call)
    equals `nn.MultiheadAttention`'s output; a call with a mask runs the module's own forward;
    the modules are restored afterwards."""
    from vlprompt.onnx_attention import fused_attention

    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    holder = torch.nn.Sequential(attn)
    x = torch.randn(3, 5, 16)
    mask = torch.triu(torch.full((5, 5), float("-inf")), 1)
    with torch.no_grad():
        expected = attn(x, x, x, need_weights=False)[0]
        masked = attn(x, x, x, need_weights=False, attn_mask=mask)[0]
        with fused_attention(holder) as switched:
            assert switched == 1 and "forward" in vars(attn)
            got = attn(x, x, x, need_weights=False)[0]
            got_masked = attn(x, x, x, need_weights=False, attn_mask=mask)[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert torch.equal(got_masked, masked)
    assert "forward" not in vars(attn)
