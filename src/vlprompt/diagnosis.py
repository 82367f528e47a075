"""What a classifier gets wrong on an evaluation split, as files a person reads: a per-class
accuracy table, the confusion matrix (CSV and PNG), the list of mistakes, a contact sheet of the
most confident mistakes and a one-line summary. Plain arrays in (logits [N, C], labels [N], class
names, the images' relative paths); `write_report(folder, ...)` writes every file into `folder`
and nowhere else, each atomically.

Accuracies are in percent, as everywhere in vlprompt; confidences are probabilities in [0, 1].
The summary's interval is the 95% Wilson score interval of the accuracy over the split's images
(binomial sampling of test images only, not seeds or shots): it stays inside [0, 100] and keeps
its coverage near 0% or 100% and for small splits, where the normal interval does not; "±Z" is
its half-width (the interval itself is centred slightly towards 50%).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlprompt.calibration import as_array, as_labels, softmax
from vlprompt.errors import DiagnosisError
from vlprompt.io import atomic_write_bytes, atomic_write_text

PER_CLASS_CSV = "per_class.csv"
CONFUSION_CSV = "confusion.csv"
CONFUSION_PNG = "confusion.png"
ERRORS_CSV = "errors.csv"
MISTAKES_PNG = "mistakes.png"
SUMMARY_TXT = "summary.txt"
MAX_TICK_LABELS = 40  # above this many classes the matrix has no per-class tick labels
TOP_K = 10  # largest off-diagonal confusions listed beside the matrix
N_MISTAKES = 24  # tiles on the contact sheet


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Predictions:
    """An evaluation's probabilities [N, C], labels and top-1 predictions [N], with the class
    names [C] and the images' paths [N] (as given: relative paths stay relative)."""

    probs: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    class_names: tuple[str, ...]
    paths: tuple[str, ...]

    @classmethod
    def from_logits(
        cls,
        logits: Any,
        labels: Any,
        class_names: Sequence[str],
        paths: Sequence[str | Path],
        temperature: float = 1.0,
    ) -> Predictions:
        z = as_array(logits, "logits", 2, DiagnosisError)
        n, c = z.shape
        if len(class_names) != c:
            raise DiagnosisError(
                f"class names: expected {c} (one per logit column), got {len(class_names)}"
            )
        if len(paths) != n:
            raise DiagnosisError(f"image paths: expected {n} (one per logit row), got {len(paths)}")
        y = as_labels(labels, n, c, DiagnosisError)
        probs = softmax(z, temperature) if n else np.zeros((0, c))
        return cls(probs, y, z.argmax(axis=1), tuple(map(str, class_names)), tuple(map(str, paths)))

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def wrong(self) -> np.ndarray:
        """Indices of the mistakes, most confident first (ties by index)."""
        idx = np.flatnonzero(self.preds != self.labels)
        conf = self.probs[idx, self.preds[idx]]
        return idx[np.lexsort((idx, -conf))]


# ----------------------------------------------------------------------------- tables


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [C, C]: row = true class, column = predicted class."""
    flat = np.asarray(labels) * n_classes + np.asarray(preds)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def top_confusions(cm: np.ndarray, k: int = TOP_K) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), largest first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    true, pred = np.nonzero(off)
    order = np.lexsort((pred, true, -off[true, pred]))[:k]
    return [(int(true[i]), int(pred[i]), int(off[true[i], pred[i]])) for i in order]


def per_class_rows(cm: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per class: images, correct, accuracy (percent; empty without images) and the class its
    images are most often predicted as (empty when none is wrong)."""
    rows = []
    for i, name in enumerate(class_names):
        n, correct = int(cm[i].sum()), int(cm[i, i])
        off = cm[i].copy()
        off[i] = 0
        j = int(off.argmax())
        rows.append(
            {
                "class": name,
                "n": n,
                "correct": correct,
                "accuracy": f"{100 * correct / n:.2f}" if n else "",
                "most_confused_with": class_names[j] if off[j] else "",
                "confused_n": int(off[j]),
            }
        )
    return rows


def error_rows(pred: Predictions, top: int = 3) -> list[dict[str, Any]]:
    """One row per mistake, most confident first: file, true, predicted, confidence (the
    predicted class's probability) and the top classes as "name:prob;name:prob;..." (split on
    ';', then on the last ':')."""
    names = pred.class_names
    rows = []
    for i in pred.wrong:
        p = pred.probs[i]
        best = np.argsort(-p, kind="stable")[:top]
        rows.append(
            {
                "file": pred.paths[i],
                "true": names[pred.labels[i]],
                "predicted": names[pred.preds[i]],
                "confidence": f"{p[pred.preds[i]]:.4f}",
                f"top{top}": ";".join(f"{names[c]}:{p[c]:.4f}" for c in best),
            }
        )
    return rows


def to_csv(rows: Sequence[dict[str, Any]], header: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def confusion_csv(cm: np.ndarray, class_names: Sequence[str]) -> str:
    """Rows = true class, columns = predicted class, both named in the header/first column."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, cm):
        writer.writerow([name, *map(int, row)])
    return buf.getvalue()


# ----------------------------------------------------------------------------- summary


def wilson_interval(accuracy: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (percent) of an accuracy (percent) measured on n images."""
    from scipy.stats import norm

    if n <= 0:
        return 0.0, 100.0
    z = float(norm.ppf(0.5 + level / 2))
    p = accuracy / 100
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def summary_line(zero_shot_accuracy: float | None, trained_accuracy: float, n: int) -> str:
    """'zero-shot X% -> trained Y% (95% interval ±Z over the split)', accuracies in percent."""
    lo, hi = wilson_interval(trained_accuracy, n)
    tail = f"trained {trained_accuracy:.1f}% (95% interval ±{(hi - lo) / 2:.1f} over the split"
    tail += f" of {n} images, Wilson)"
    if zero_shot_accuracy is None:
        return tail
    return f"zero-shot {zero_shot_accuracy:.1f}% -> {tail}"


# ----------------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Any:
    """A figure on the Agg canvas, without pyplot (no global backend change, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 2] + ".."


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], top_k: int = TOP_K) -> Any:
    """Row-normalised confusion matrix (sequential colormap, square-root colour scale so small
    confusions show), class names on the axes up to MAX_TICK_LABELS classes, the top_k largest
    off-diagonal cells numbered on the matrix and listed beside it."""
    from matplotlib.colors import PowerNorm

    c = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    side = float(np.clip(0.16 * c + 3.5, 5.0, 10.0))
    fig = _figure(side + 3.6, side)
    ax, text_ax = fig.subplots(1, 2, width_ratios=[side, 3.6])
    im = ax.imshow(frac, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="none")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class (sqrt scale)")
    ax.set(xlabel="predicted class", ylabel="true class")
    if c <= MAX_TICK_LABELS:
        size = 8 if c <= 20 else 6
        ax.set_xticks(range(c), [_short(n, 18) for n in class_names], rotation=90, fontsize=size)
        ax.set_yticks(range(c), [_short(n, 18) for n in class_names], fontsize=size)
    else:
        ax.set(xlabel=f"predicted class (index, {c} classes)", ylabel="true class (index)")
    top = top_confusions(cm, top_k)
    lines = []
    for rank, (i, j, count) in enumerate(top, start=1):
        ax.text(
            j,
            i,
            str(rank),
            color="#c00000",
            fontsize=7,
            ha="center",
            va="center",
            fontweight="bold",
        )
        share = 100 * count / rows[i, 0]
        lines.append(
            f"{rank:>2}. {_short(class_names[i], 22)}\n    -> "
            f"{_short(class_names[j], 22)}: {count} ({share:.0f}%)"
        )
    text_ax.axis("off")
    text_ax.set_title(f"largest confusions (of {int(cm.sum())} images)", fontsize=9, loc="left")
    body = "\n".join(lines) if lines else "no confusions"
    text_ax.text(
        0, 1, body, va="top", ha="left", fontsize=8, family="monospace", transform=text_ax.transAxes
    )
    acc = 100 * np.trace(cm) / max(1, cm.sum())
    ax.set_title(f"confusion matrix, rows normalised (accuracy {acc:.1f}%)", fontsize=10)
    return fig


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


# ----------------------------------------------------------------------------- contact sheet


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: Any, name: str, suffix: str, font: Any, width: int) -> str:
    """name + suffix, the name cut with '..' until the whole fits `width` pixels."""
    text = name + suffix
    if draw.textlength(text, font=font) <= width:
        return text
    while name and draw.textlength(name + ".." + suffix, font=font) > width:
        name = name[:-1]
    return name + ".." + suffix


def _thumbnail(path: Path, size: int) -> Any:
    """The image fitted into size x size on a white tile, or a grey 'unreadable' tile."""
    from PIL import Image, ImageDraw, ImageOps

    tile = Image.new("RGB", (size, size), "white")
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            small = ImageOps.contain(img.convert("RGB"), (size, size))
        tile.paste(small, ((size - small.width) // 2, (size - small.height) // 2))
    except Exception:  # any file a user may point at: missing, truncated, not an image, huge
        tile = Image.new("RGB", (size, size), (150, 150, 150))
        draw, font = ImageDraw.Draw(tile), _font(14)
        x = (size - draw.textlength("unreadable", font=font)) / 2  # no anchor: bitmap fonts
        draw.text((x, size // 2 - 7), "unreadable", fill="white", font=font)
    return tile


def contact_sheet(
    errors: Sequence[dict[str, Any]],
    image_root: str | Path | None = None,
    n: int = N_MISTAKES,
    thumb: int = 160,
    columns: int = 6,
) -> Any:
    """A PIL image: the first n rows of `errors` (most confident first) as a thumbnail grid, each
    captioned "true -> predicted (conf)". Paths are read relative to `image_root` when given."""
    from PIL import Image, ImageDraw

    shown = list(errors)[:n]
    cols = max(1, min(columns, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    pad, caption, header = 8, 34, 28
    sheet = Image.new(
        "RGB",
        (pad + cols * (thumb + pad), header + rows * (thumb + caption + pad)),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    title = f"{len(shown)} most confident mistakes of {len(errors)}" if errors else "no mistakes"
    draw.text((pad, 8), title, fill="black", font=_font(14))
    for k, row in enumerate(shown):
        x = pad + (k % cols) * (thumb + pad)
        y = header + (k // cols) * (thumb + caption + pad)
        path = Path(row["file"])
        if image_root is not None and not path.is_absolute():
            path = Path(image_root) / path
        sheet.paste(_thumbnail(path, thumb), (x, y))
        conf = float(row["confidence"])
        one = f"{row['true']} -> {row['predicted']} ({conf:.2f})"
        if draw.textlength(one, font=font) <= thumb:
            lines = [one]
        else:  # two lines, each name cut to fit; the arrow and the confidence always show
            lines = [
                _fit(draw, str(row["true"]), " ->", font, thumb),
                _fit(draw, str(row["predicted"]), f" ({conf:.2f})", font, thumb),
            ]
        for line_no, text in enumerate(lines):
            draw.text((x, y + thumb + 3 + 14 * line_no), text, fill="black", font=font)
    return sheet


def image_png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- the report


def write_report(
    folder: str | Path,
    logits: Any,
    labels: Any,
    class_names: Sequence[str],
    paths: Sequence[str | Path],
    image_root: str | Path | None = None,
    zero_shot_accuracy: float | None = None,
    temperature: float = 1.0,
    top_k: int = TOP_K,
    n_mistakes: int = N_MISTAKES,
) -> dict[str, Path]:
    """Write the evaluation report into `folder` (created if missing) and return its files by
    name: per_class.csv, confusion.csv, confusion.png, errors.csv, mistakes.png, summary.txt.
    Every file is written through a temp file in `folder` and a rename; nothing is written
    elsewhere. Images are read (never written) relative to `image_root`."""
    pred = Predictions.from_logits(logits, labels, class_names, paths, temperature)
    if len(pred.labels) == 0:
        raise DiagnosisError("logits: no images to report on; evaluate on a non-empty split")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DiagnosisError(f"{folder}: exists and is not a folder; give a folder for the report")
    folder.mkdir(parents=True, exist_ok=True)
    cm = confusion_matrix(pred.labels, pred.preds, pred.n_classes)
    errors = error_rows(pred)
    accuracy = 100 * np.trace(cm) / cm.sum()
    files = {
        name: folder / name
        for name in (
            PER_CLASS_CSV,
            CONFUSION_CSV,
            CONFUSION_PNG,
            ERRORS_CSV,
            MISTAKES_PNG,
            SUMMARY_TXT,
        )
    }
    per_class_header = ["class", "n", "correct", "accuracy", "most_confused_with", "confused_n"]
    atomic_write_text(
        files[PER_CLASS_CSV], to_csv(per_class_rows(cm, pred.class_names), per_class_header)
    )
    atomic_write_text(files[CONFUSION_CSV], confusion_csv(cm, pred.class_names))
    atomic_write_text(
        files[ERRORS_CSV], to_csv(errors, ["file", "true", "predicted", "confidence", "top3"])
    )
    atomic_write_bytes(
        files[CONFUSION_PNG], figure_png(confusion_figure(cm, pred.class_names, top_k))
    )
    atomic_write_bytes(
        files[MISTAKES_PNG], image_png(contact_sheet(errors, image_root, n_mistakes))
    )
    atomic_write_text(
        files[SUMMARY_TXT], _summary_text(zero_shot_accuracy, accuracy, cm, pred.class_names)
    )
    return files


def _summary_text(
    zero_shot: float | None, accuracy: float, cm: np.ndarray, names: Sequence[str]
) -> str:
    lines = [summary_line(zero_shot, accuracy, int(cm.sum()))]
    top = top_confusions(cm, 5)
    if top:
        lines.append(
            "most confused: "
            + ", ".join(f"{names[i]} -> {names[j]} ({count})" for i, j, count in top)
        )
    return "\n".join(lines) + "\n"
