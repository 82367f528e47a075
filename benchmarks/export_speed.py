"""Images/s of an exported run (ONNX on onnxruntime) against vlprompt's own predict path and
zero-shot CLIP's image pass, on a ViT-B/16-shaped CLIP (random weights: speed does not depend
on them; no download), CPU, one thread everywhere, 100 classes.

    python benchmarks/export_speed.py [--methods zsclip,coop,rpo,ivlp,clip_lora,tip_adapter]
        [--classes 100] [--batches 1,32] [--repeats 3] [--repeats-large 3] [--output DIR]

Per method and batch size, timed interleaved (one of each per round, so machine load hits all
alike; the median over rounds), in CPU seconds of the process (`time.process_time`; one thread
everywhere, so this is the compute time, little affected by other processes on the machine):
- zero-shot CLIP: `clip.encode_image(images)` in torch (the image pass every method needs);
- predict: the method inside `method.classifier()` (what `Run.predict` runs per batch, class
  side computed once, image decoding not counted), in torch;
- exported: the `vlprompt.export` module as ONNX (`onnx_bytes`, what `vlprompt export` writes:
  the image tower's attention as onnxruntime's fused `com.microsoft.Attention`), onnxruntime,
  1 intra-op thread;
- standard ops: the same export with `fused_attention=False` (`vlprompt export --standard-ops`:
  standard ONNX operators only, attention as MatMul/Softmax/MatMul).
The ratios are the exported models' times over zero-shot CLIP's (the target: <= 1.1); the zsclip
row (zero-shot CLIP exported) shows what the runtime alone changes. Both exports are checked
against the method (max logit difference, the larger of the two) before timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vlprompt.backbone import load_clip
from vlprompt.export import build_exportable, onnx_bytes
from vlprompt.methods import create_method

SETTINGS = {"tip_adapter": {"search_step": (5, 4)}}  # a short alpha/beta search on random features
SHOTS = 16  # Tip-Adapter's cache: 16 random features per class


def build(name: str, clip, n_classes: int):
    names = [f"class {i}" for i in range(n_classes)]
    method = create_method(name, clip, names, **SETTINGS.get(name, {}))
    if hasattr(method, "fit_features") and name.startswith("tip_adapter"):
        g = torch.Generator().manual_seed(0)
        feats = torch.nn.functional.normalize(
            torch.randn(n_classes * SHOTS, clip.embed_dim, generator=g), dim=-1
        )
        labels = torch.arange(n_classes).repeat_interleave(SHOTS)
        method.fit_features(feats, labels, feats[::SHOTS], labels[::SHOTS])
    return method.eval()


def onnx_session(method, image_size: int, fused_attention: bool = True):
    import onnxruntime as ort

    model = build_exportable(method)
    example = torch.zeros(2, 3, image_size, image_size)
    data = onnx_bytes(model, example, ["logits"], fused_attention=fused_attention)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def seconds(fn) -> float:
    """CPU seconds of this process (one thread everywhere): on a shared machine the other
    processes' load lengthens wall time, much less this."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(method, sessions, clip, batch: int, repeats: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, clip.image_size, clip.image_size, generator=g)
    array = images.numpy()
    runs = {
        "zero-shot": lambda: clip.encode_image(images),
        "predict": lambda: method(images),
        "exported": lambda: sessions[0].run(None, {"images": array}),
        "standard ops": lambda: sessions[1].run(None, {"images": array}),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad(), method.classifier():
        method(images[:1])  # the class side, computed once (not timed)
        if batch == 1:  # warm-up (a batch of 32 is long enough to need none)
            for fn in runs.values():
                fn()
        for _ in range(repeats):
            for key, fn in runs.items():
                times[key].append(seconds(fn))
    return {k: batch / statistics.median(v) for k, v in times.items()}


def max_difference(method, session, clip) -> float:
    images = torch.randn(3, 3, clip.image_size, clip.image_size)
    with torch.no_grad(), method.classifier():
        expected = method(images).numpy()
    return float(np.abs(session.run(None, {"images": images.numpy()})[0] - expected).max())


def write_rows(args: argparse.Namespace, name: str, rows: list) -> None:
    """One method's measured rows as JSON, with what made them (versions, settings)."""
    import onnxruntime

    from vlprompt._version import code_version
    from vlprompt.io import atomic_write_text

    record = {
        "method": name, "model": args.model, "classes": args.classes,
        "repeats": args.repeats, "repeats_large": args.repeats_large,
        "vlprompt_version": code_version(), "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "rows": [{"batch": b, "images_per_cpu_s": s, "max_logit_difference": g,
                  "export_wall_s": e} for _, b, s, g, e in rows],
    }  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output / f"{name}.json", json.dumps(record, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--methods", default="zsclip,coop,rpo,ivlp,clip_lora,tip_adapter")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--repeats", type=int, default=3, help="rounds at batch 1")
    parser.add_argument("--repeats-large", type=int, default=3, help="rounds at larger batches")
    parser.add_argument("--output", type=Path, default=None,
                        help="also write each method's rows to OUTPUT/<method>.json (what "
                             "benchmarks/docs_tables.py renders into the docs)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clip = load_clip(args.model)  # random weights
    rows = []
    for name in args.methods.split(","):
        method = build(name, clip, args.classes)
        start = time.perf_counter()
        sessions = [onnx_session(method, clip.image_size)]
        export_s = time.perf_counter() - start
        sessions.append(onnx_session(method, clip.image_size, fused_attention=False))
        gap = max(max_difference(method, session, clip) for session in sessions)
        for batch in (int(b) for b in args.batches.split(",")):
            repeats = args.repeats if batch == 1 else args.repeats_large
            speed = measure(method, sessions, clip, batch, repeats)
            rows.append((name, batch, speed, gap, export_s))
            print(f"{name} batch {batch}: {speed} (max |logit difference| {gap:.1e})", flush=True)
        if args.output is not None:
            write_rows(args, name, [r for r in rows if r[0] == name])
        del sessions, method
    print(f"\n{args.model}, {args.classes} classes, CPU, 1 thread; images per CPU second "
          "(median over rounds)\n")  # fmt: skip
    print("| method | batch | zero-shot CLIP image pass (torch) | vlprompt predict (torch) "
          "| exported ONNX (onnxruntime) | exported time / zero-shot time "
          "| standard ops (onnxruntime) | standard ops time / zero-shot time | max logit diff "
          "| export wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, batch, s, gap, export_s in rows:
        print(f"| {name} | {batch} | {s['zero-shot']:.1f} | {s['predict']:.1f} | "
              f"{s['exported']:.1f} | {s['zero-shot'] / s['exported']:.2f} | "
              f"{s['standard ops']:.1f} | {s['zero-shot'] / s['standard ops']:.2f} | {gap:.0e} | "
              f"{export_s:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
