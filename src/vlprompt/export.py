"""A finished run as a standalone classifier: ONNX or TorchScript, plus three JSON files.

Every method whose class side does not depend on the image (`text_depends_on_image` False) is,
after training, an image path (frozen CLIP, or CLIP with the method's learned image-side parts)
followed by one product with a constant of the class list, `class_features()`. The export
computes that constant once (`method.classifier()` + `class_side()`), stores it as buffers of
a plain module, and traces only the image path and the head, so the exported graph holds no
text tower. The logits are `run.method(images)`'s (the logit scale included), computed in fp32
on the CPU copy that is traced; `tests/test_export.py` checks them against the method.

The export folder (docs/deploy.md describes each file; `vlprompt serve` reads it):

- `model.onnx` or `model.pt` (TorchScript): input `images` [B, 3, H, W] (preprocessed, any B),
  outputs `logits` [B, C] and, with the flags, `features` and `probabilities`;
- `labels.json`: the class names in logit order;
- `preprocess.json`: the eval transform (resize of the short side, centre crop, mean, std), read
  from `vlprompt.data.transform_for(clip, train=False)`;
- `model.json`: method, backbone, vlprompt version, format, input and output names, temperature.

CoCoOp (`text_depends_on_image`) is refused: each image shifts its prompts, so the text tower
would have to run inside the exported graph for every image.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlprompt._version import __version__
from vlprompt.errors import ExportError, RunError
from vlprompt.run_folder import (
    EXPORT_LABELS,
    EXPORT_MODEL_INFO,
    EXPORT_PREPROCESS,
    claim_folder,
    folder_lock,
    is_run_finished,
    not_writable,
    write_file,
)

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
MODEL_FORMAT = "vlprompt-export/1"
INPUT_NAME = "images"
OPSET = 18
INSTALL_HINT = "pip install 'vlprompt[export]'"


# ---- the class side as buffers ------------------------------------------------------------------
def _flatten(obj: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """The tensors of a class side (a tensor, a tuple/list or a dataclass of them and plain
    values) and a function rebuilding it from a list of (possibly moved) tensors."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj], lambda ts: ts[0]
    if isinstance(obj, (tuple, list)) or dataclasses.is_dataclass(obj):
        items = (
            [getattr(obj, f.name) for f in dataclasses.fields(obj)]
            if dataclasses.is_dataclass(obj)
            else list(obj)
        )
        parts = [_flatten(item) for item in items]
        counts = [len(tensors) for tensors, _ in parts]

        def rebuild(ts: list[Any]) -> Any:
            out, start = [], 0
            for (_, rebuild_item), n in zip(parts, counts, strict=True):
                out.append(rebuild_item(ts[start : start + n]))
                start += n
            if dataclasses.is_dataclass(obj):
                names = [f.name for f in dataclasses.fields(obj)]
                return dataclasses.replace(obj, **dict(zip(names, out, strict=True)))
            return type(obj)(out)

        return [t for tensors, _ in parts for t in tensors], rebuild
    return [], lambda _ts: obj  # a plain value (Tip-Adapter's alpha, beta, `cached`)


@contextlib.contextmanager
def constant_class_side(method: Any, side: Any) -> Iterator[None]:
    """Inside: `method.class_side()` returns `side` (this instance only), so the method's own
    head reads the exported constant and no text tower runs."""
    method.class_side = lambda: side
    try:
        yield
    finally:
        del method.class_side


# ---- the image path of each method family -------------------------------------------------------
@dataclass(frozen=True)
class ImagePath:
    """How a family reaches its logits: `features(method, images)` (what the head reads) and
    `head(method, features)`; `features_doc` says what the `features` output is."""

    features: Callable[[Any, Any], Any]
    head: Callable[[Any, Any], Any]
    features_doc: str


def _normalized(x: Any) -> Any:
    import torch.nn.functional as F

    return F.normalize(x, dim=-1)


def _clip_head(method: Any, feats: Any) -> Any:
    from vlprompt.methods.features import clip_logits

    return clip_logits(method.clip, feats, method.class_side())


FROZEN = ImagePath(
    # the frozen features by the contract of `image_features`; the last block computes the
    # CLS row alone (the same features to float tolerance, 1/depth less work)
    lambda m, x: m.clip.encode_image(x, normalize=True, pooled_only=True),
    lambda m, f: m.logits_from_features(f),
    "normalised CLIP image features [B, E]",
)
DEEP_PROMPTS = ImagePath(
    lambda m, x: _normalized(m.encode_image(x)),
    _clip_head,
    "normalised prompted image features [B, E]",
)
RPO_PATH = ImagePath(
    lambda m, x: m.prompt_image_features(x),
    lambda m, f: m.pair_logits(f, m.class_side()),
    "the K normalised image prompt features [B, K, E]",
)

MMRL_PATH = ImagePath(
    lambda m, x: m.encode_image(x),
    lambda m, f: m.pair_logits(f, m.class_side()),
    "the normalised class-token and representation image features [B, 2, E]",
)


def _lora_head(method: Any, feats: Any) -> Any:
    from vlprompt.methods.features import full_precision

    with full_precision(feats.device):
        scale = method.config.logit_scale or method.clip.logit_scale.float()
        return scale * feats.float() @ method.class_side().float().t()


LORA_PATH = ImagePath(
    # merged (`exportable_copy`): plain CLIP with merged weights, the last block on CLS alone
    lambda m, x: (
        m.lora_image_features(x)
        if m.lora_vision
        else m.clip.encode_image(x, normalize=True, pooled_only=True)
    ),
    _lora_head,
    "normalised image features of the merged LoRA image tower [B, E]",
)
TUNED_NORMS_PATH = ImagePath(
    lambda m, x: m.tuned_image_features(x),
    _clip_head,
    "normalised image features of the LayerNorm-tuned image tower [B, E]",
)
SKIP_PATH = ImagePath(
    lambda m, x: m.tuned_image_features(x),
    _clip_head,
    "normalised image features of the tuned upper blocks [B, E]",
)
# methods whose image path is not frozen CLIP, by registered name
IMAGE_PATHS = {
    "ivlp": DEEP_PROMPTS,
    "maple": DEEP_PROMPTS,
    "promptsrc": DEEP_PROMPTS,
    "rpo": RPO_PATH,
    "mmrl": MMRL_PATH,
    "clip_lora": LORA_PATH,
    "two_stage": TUNED_NORMS_PATH,
    "skiptuning": SKIP_PATH,
}


def image_path_of(method: Any) -> ImagePath | None:
    """The family's image path; None for a method of unknown layout (a plugin that is not a
    frozen image encoder): its `forward` is traced whole and it has no `features` output."""
    if method.frozen_image_encoder:
        return FROZEN
    return IMAGE_PATHS.get(method.name)


def merge_lora(method: Any) -> None:
    """CLIP-LoRA: add each vision update into the frozen attention weights of this (copied)
    method and drop the updates, so the image tower is plain CLIP with merged weights (what its
    eval mode computes through `functional_call`, which cannot be traced)."""
    import torch
    from torch import nn

    lora = getattr(method, "lora_vision", None)
    if not lora:
        return
    with torch.no_grad():
        for module in lora.values():
            merged = module.merged_weights()
            module.base.in_proj_weight.copy_(merged["in_proj_weight"])
            if "out_proj.weight" in merged:
                module.base.out_proj.weight.copy_(merged["out_proj.weight"])
    method.lora_vision = nn.ModuleDict()


# ---- the exported module ------------------------------------------------------------------------
def _exportable_module(method: Any, temperature: float, features: bool, probabilities: bool) -> Any:
    import torch
    from torch import nn

    class ExportedClassifier(nn.Module):
        """Images [B, 3, H, W] -> (logits, [features], [probabilities]): the method's image
        path and head on its class side, held as buffers."""

        def __init__(self) -> None:
            super().__init__()
            self.method = method
            self.path = image_path_of(method)
            with method.classifier():
                side = method.class_side()
            tensors, self._rebuild = _flatten(side)
            for i, t in enumerate(tensors):
                self.register_buffer(f"class_side_{i}", t.detach().clone())
            self._n_side = len(tensors)
            self.temperature = float(temperature)
            self.features, self.probabilities = features, probabilities

        def forward(self, images: torch.Tensor) -> Any:
            side = self._rebuild([getattr(self, f"class_side_{i}") for i in range(self._n_side)])
            with constant_class_side(self.method, side):
                if self.path is None:
                    feats, logits = None, self.method(images)
                else:
                    feats = self.path.features(self.method, images)
                    logits = self.path.head(self.method, feats)
            logits = logits.float()
            outputs = [logits]
            if self.features:
                outputs.append(feats.float())
            if self.probabilities:
                outputs.append(torch.softmax(logits / self.temperature, dim=-1))
            return tuple(outputs) if len(outputs) > 1 else logits

    return ExportedClassifier().eval()


def exportable_copy(method: Any) -> Any:
    """An fp32 CPU copy of `method` in eval mode, its CLIP-LoRA updates merged; the run's own
    method is left as it was (the tokenizer is shared, not copied)."""
    memo = {id(method.clip.tokenizer): method.clip.tokenizer}
    twin = copy.deepcopy(method, memo)
    twin = twin.cpu().float().eval()
    twin._held_class_side.clear()
    merge_lora(twin)
    return twin


def build_exportable(
    method: Any, *, temperature: float = 1.0, features: bool = False, probabilities: bool = False
) -> Any:
    """The plain module that the export traces: images -> logits (+ features, probabilities)."""
    if method.text_depends_on_image:
        raise ExportError(
            f"{method.name} cannot be exported: its class side depends on each image (its "
            "prompts are shifted per image), so the text tower would have to run in the "
            "exported graph for every image; use `vlprompt predict` or a text-static method"
        )
    if getattr(method, "dept", None) is not None:
        raise ExportError(
            f"{method.name} with feature_rule 'dept' cannot be exported yet: its base-class "
            "logits fuse DePT's head on the unnormalised image features, which the exported "
            "graph does not carry; use `vlprompt predict`, or export a run without the rule"
        )
    if features and image_path_of(method) is None:
        raise ExportError(
            f"{method.name}: vlprompt does not know which image features its head reads, so it "
            "cannot add a features output; export without --features"
        )
    try:
        return _exportable_module(exportable_copy(method), temperature, features, probabilities)
    except NotImplementedError as exc:  # e.g. a plugin method without class features
        raise ExportError(
            f"{method.name} cannot be exported: {exc}; the export bakes the class side into the "
            "graph, which needs the method's class_features(); use `vlprompt predict` instead"
        ) from None


def output_names(features: bool, probabilities: bool) -> list[str]:
    return ["logits"] + ["features"] * features + ["probabilities"] * probabilities


# ---- the two formats ----------------------------------------------------------------------------
def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(
            f"exporting to ONNX needs the package {module!r}, which is not installed: "
            f"{INSTALL_HINT}"
        ) from None


@contextlib.contextmanager
def _traceable() -> Iterator[None]:
    """No autograd and no fused attention kernel (`_native_multi_head_attention`, which neither
    ONNX nor a traced graph of another batch size can take): the plain attention ops."""
    import torch

    fused = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch marks TorchScript deprecated; the user asked for it by name
            warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
            # a Python value read from a tensor is a constant of the class list or the method
            # (Tip-Adapter's cache size): `check_export` runs the result on other batches
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fused)


def onnx_bytes(
    model: Any, example: Any, names: list[str], *, fused_attention: bool = True
) -> bytes:
    """The module as an ONNX model (opset OPSET, dynamic batch axis), serialised. The
    TorchScript-based exporter: it traces the Python code as it runs, like `torch.jit.trace`.
    With `fused_attention`, the image tower's self-attention is onnxruntime's one
    `com.microsoft.Attention` operator per block (`vlprompt.onnx_attention`: 1.1x faster on a
    CPU at batch 32); without, standard ONNX operators only, for any ONNX runtime."""
    import torch

    _require("onnx")
    from vlprompt import onnx_attention

    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *names]}
    fused = onnx_attention.fused_attention(model) if fused_attention else contextlib.nullcontext()
    domains = {onnx_attention.DOMAIN: onnx_attention.DOMAIN_VERSION} if fused_attention else None
    with _traceable(), fused:
        torch.onnx.export(
            model, (example,), buffer, input_names=[INPUT_NAME], output_names=names,
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
            custom_opsets=domains,
        )  # fmt: skip
    return buffer.getvalue()


def contrib_operators(data: bytes) -> list[str]:
    """The operators of a serialised ONNX model outside the standard domain, as
    `domain.Operator`, sorted (what a runtime other than onnxruntime must also support)."""
    import onnx

    graph = onnx.load_from_string(data).graph
    return sorted(
        {f"{n.domain}.{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")}
    )


def torchscript_bytes(model: Any, example: Any) -> bytes:
    """The module traced (`torch.jit.trace`) and frozen (parameters inlined, the unused text
    tower dropped), serialised."""
    import torch

    with _traceable():
        traced = torch.jit.trace(model.eval(), (example,), check_trace=False)
        frozen = torch.jit.freeze(traced)
    buffer = io.BytesIO()
    torch.jit.save(frozen, buffer)
    return buffer.getvalue()


def _run_exported(fmt: str, data: bytes, images: Any) -> Any | None:
    """The exported model's first output (the logits) on `images`; None for ONNX without
    onnxruntime."""
    import torch

    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
            out = torch.jit.load(io.BytesIO(data))(images)
        return out[0] if isinstance(out, tuple) else out
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT_NAME: images.numpy()})[0])


def check_export(model: Any, fmt: str, data: bytes, size: int) -> None:
    """Run the exported model at batch 1 and 3 (it was traced at 2) against the module it was
    traced from: a shape or value that the trace turned into a constant shows here."""
    import torch

    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        images = torch.randn(batch, 3, size, size, generator=generator)
        with _traceable():
            out = model(images)
            expected = out[0] if isinstance(out, tuple) else out
        got = _run_exported(fmt, data, images)
        if got is None:
            return
        gap = float((got - expected).abs().max()) if got.shape == expected.shape else None
        if gap is None or gap > 1e-3 * max(1.0, float(expected.abs().max())):
            raise ExportError(
                f"the exported {fmt} model of {model.method.name} does not give the method's "
                f"logits at batch {batch} (max difference {gap}); this is a bug of the export, "
                "please report it with the method's settings"
            )


# ---- the JSON files -----------------------------------------------------------------------------
def preprocess_info(clip: Any) -> dict[str, Any]:
    """The eval transform as data: resize of the short side, centre crop, mean and std, read
    from the transform `Run.predict` uses."""
    from torchvision import transforms as T

    from vlprompt.data import transform_for

    transform = transform_for(clip, train=False)
    steps = {type(step).__name__: step for step in transform.transforms}
    resize, crop, norm = steps.get("Resize"), steps.get("CenterCrop"), steps.get("Normalize")
    if resize is None or crop is None or norm is None or "ToTensor" not in steps:
        raise ExportError(
            f"the eval transform {transform} is not resize + centre crop + normalise; the "
            "export cannot describe it in preprocess.json"
        )
    size = resize.size if isinstance(resize.size, int) else resize.size[0]
    interp = resize.interpolation
    return {
        "resize_short_side": int(size),
        "interpolation": interp.value if isinstance(interp, T.InterpolationMode) else str(interp),
        "crop_size": [int(s) for s in crop.size],
        "mean": [float(m) for m in norm.mean],
        "std": [float(s) for s in norm.std],
        "scale": 1 / 255,
        "color": "RGB",
        "layout": "NCHW",
        "steps": [
            "convert to RGB",
            "resize the short side to resize_short_side (the long side to "
            "int(resize_short_side * long / short)) with interpolation",
            "centre crop to crop_size (top = round((h - crop_h) / 2), left likewise)",
            "pixel * scale, then (pixel - mean) / std per channel",
        ],
    }


def model_info(
    run: Any, fmt: str, names: list[str], temperature: float, contrib: list[str]
) -> dict[str, Any]:
    method = run.method
    return {
        "format": MODEL_FORMAT,
        "model_file": FORMATS[fmt],
        "model_format": fmt,
        "method": method.name,
        "backbone": run.config.backbone,
        "pretrained": None if run.config.pretrained is None else str(run.config.pretrained),
        "dataset": run.config.dataset,
        "vlprompt_version": __version__,
        "n_classes": len(method.classnames),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, run.clip.image_size,
                                                run.clip.image_size], "dtype": "float32"},
        "outputs": names,
        "temperature": temperature,
        "logits": "uncalibrated (the logit scale included); probabilities = "
        "softmax(logits / temperature)",
        "opset": OPSET if fmt == "onnx" else None,
        "contrib_operators": contrib,
        "run_dir": str(run.run_dir),
    }  # fmt: skip


# ---- the entry point ----------------------------------------------------------------------------
def export_run(
    run: Any,
    output_dir: str | Path,
    format: str = "onnx",
    *,
    features: bool = False,
    probabilities: bool = False,
    fused_attention: bool = True,
) -> Path:
    """Export a finished run (a `vlprompt.api.Run`: `load_run(folder)`) into `output_dir` (new,
    empty, or an earlier export folder): `model.onnx` or `model.pt`, `labels.json`,
    `preprocess.json` and `model.json`. Returns the model file's path. The graph takes
    preprocessed images [B, 3, H, W] and returns the logits (+ the image features the head
    reads with `features`, + softmax(logits / the run's temperature) with `probabilities`).
    ONNX: `fused_attention=False` writes standard operators only (`onnx_bytes`)."""
    import torch

    if format not in FORMATS:
        raise ExportError(f"export format {format!r}: expected one of {sorted(FORMATS)}")
    if format == "onnx":
        _require("onnx")
    if not is_run_finished(run.run_dir):
        raise RunError(
            f"{run.run_dir} holds a run that has not finished training; finish it with "
            f"`vlprompt train --resume --output-dir {run.run_dir}`, then export"
        )
    temperature = float(getattr(run, "temperature", 1.0))
    if not math.isfinite(temperature) or temperature <= 0:
        raise ExportError(
            f"{run.run_dir}: the run's temperature is {temperature}, expected a finite number "
            "> 0; calibrate the run again"
        )
    model = build_exportable(
        run.method, temperature=temperature, features=features, probabilities=probabilities
    )
    folder = claim_folder(output_dir, "export", what="export folder")
    size = run.clip.image_size
    example = torch.zeros(2, 3, size, size)
    names = output_names(features, probabilities)
    if format == "onnx":
        data = onnx_bytes(model, example, names, fused_attention=fused_attention)
    else:
        data = torchscript_bytes(model, example)
    contrib = contrib_operators(data) if format == "onnx" else []
    check_export(model, format, data, size)
    try:
        with folder_lock(folder):
            path = write_file(folder, FORMATS[format], data)
            for other in set(FORMATS.values()) - {path.name}:  # an earlier export's other format
                (folder / other).unlink(missing_ok=True)
            write_file(folder, EXPORT_LABELS, list(run.method.classnames))
            write_file(folder, EXPORT_PREPROCESS, preprocess_info(run.clip))
            write_file(
                folder, EXPORT_MODEL_INFO, model_info(run, format, names, temperature, contrib)
            )
    except OSError as exc:
        raise not_writable(folder, exc, "export folder") from None
    return path
