"""The evaluation report: tables against hand computation, figures that open, files only in
the folder given."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlprompt import diagnosis as dg
from vlprompt.errors import DiagnosisError

NAMES = ["cat", "dog, small", "airliner", "tulip"]  # a comma: the CSVs must quote it
# 10 images; true labels and the predicted class (the logit set to 5, others 0 or 1)
LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
PREDS = [0, 1, 0, 1, 0, 2, 2, 1, 2, 1]


def hand_logits() -> np.ndarray:
    z = np.zeros((len(LABELS), len(NAMES)))
    z[np.arange(len(PREDS)), PREDS] = 5.0
    z[:, 3] += np.linspace(0, 1, len(LABELS))  # distinct confidences, tulip second
    return z


def paths() -> list[str]:
    return [f"img/{i}.png" for i in range(len(LABELS))]


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    root = tmp_path / "images"
    (root / "img").mkdir(parents=True)
    for i in range(len(LABELS)):
        Image.new("RGB", (64 + 8 * i, 48), (20 * i, 90, 160)).save(root / f"img/{i}.png")
    (root / "img/7.png").write_bytes(b"not an image")  # a mistake whose file is unreadable
    (root / "img/4.png").unlink()  # and one whose file is gone
    folder = tmp_path / "run" / "eval"
    files = dg.write_report(folder, hand_logits(), np.array(LABELS), NAMES, paths(), root, 40.0)
    return folder, files


@pytest.fixture(scope="module")
def report_base(report):
    return report[0].parent.parent


def test_confusion_matrix_sums_to_n_and_its_diagonal_counts_the_correct():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    cm = dg.confusion_matrix(labels, preds, 7)
    assert cm.sum() == 500
    assert np.diag(cm).tolist() == [int(((labels == c) & (preds == c)).sum()) for c in range(7)]
    loop = np.zeros((7, 7), int)
    for t, p in zip(labels, preds):
        loop[t, p] += 1
    assert (cm == loop).all()


def test_per_class_csv_matches_a_hand_computation(report):
    folder, files = report
    rows = read_csv(files[dg.PER_CLASS_CSV])
    assert [r["class"] for r in rows] == NAMES
    # cat 2/3 (-> dog), dog 1/2 (-> cat), airliner 3/4 (-> dog), tulip 0/1 (-> dog)
    assert [(r["n"], r["correct"]) for r in rows] == [
        ("3", "2"),
        ("2", "1"),
        ("4", "3"),
        ("1", "0"),
    ]
    assert [float(r["accuracy"]) for r in rows] == pytest.approx([200 / 3, 50, 75, 0], abs=0.005)
    assert [r["most_confused_with"] for r in rows] == [
        "dog, small",
        "cat",
        "dog, small",
        "dog, small",
    ]


def test_confusion_csv_has_the_names_and_the_counts(report):
    folder, files = report
    table = list(csv.reader(io.StringIO(files[dg.CONFUSION_CSV].read_text())))
    assert table[0][1:] == NAMES and [r[0] for r in table[1:]] == NAMES
    cm = np.array([[int(v) for v in r[1:]] for r in table[1:]])
    assert cm.sum() == len(LABELS) and np.trace(cm) == 6 and cm[2, 1] == 1


def test_errors_csv_lists_every_mistake_with_parsable_columns(report):
    folder, files = report
    rows = read_csv(files[dg.ERRORS_CSV])
    wrong = [i for i, (t, p) in enumerate(zip(LABELS, PREDS)) if t != p]
    assert len(rows) == len(wrong) == 4
    assert sorted(r["file"] for r in rows) == sorted(f"img/{i}.png" for i in wrong)
    confidences = [float(r["confidence"]) for r in rows]
    assert confidences == sorted(confidences, reverse=True)  # most confident first
    for r in rows:
        i = int(Path(r["file"]).stem)
        assert r["true"] == NAMES[LABELS[i]] and r["predicted"] == NAMES[PREDS[i]]
        top = [item.rsplit(":", 1) for item in r["top3"].split(";")]
        assert len(top) == 3 and all(name in NAMES for name, _ in top)
        probs = [float(p) for _, p in top]
        assert top[0][0] == r["predicted"] and probs[0] == pytest.approx(
            float(r["confidence"]), abs=1e-4
        )
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_the_pngs_open_and_have_a_sensible_size(report):
    folder, files = report
    for name in (dg.CONFUSION_PNG, dg.MISTAKES_PNG):
        with Image.open(files[name]) as img:
            assert img.format == "PNG" and 300 <= img.width <= 2500 and 200 <= img.height <= 2500


def test_the_contact_sheet_survives_unreadable_images(report):
    folder, files = report
    with Image.open(files[dg.MISTAKES_PNG]) as img:
        sheet = np.asarray(img.convert("RGB"))
    # image 7 (not an image) is the second mistake; its tile is grey (150, 150, 150)
    grey = (sheet == 150).all(axis=2)
    assert grey.sum() > 0.5 * 160 * 160


def test_the_contact_sheet_with_no_mistakes_is_still_an_image(tmp_path):
    z = np.eye(3) * 4
    files = dg.write_report(tmp_path / "r", z, np.arange(3), ["a", "b", "c"], ["x", "y", "z"])
    assert read_csv(files[dg.ERRORS_CSV]) == []
    with Image.open(files[dg.MISTAKES_PNG]) as img:
        assert img.width > 100
    assert "trained 100.0%" in files[dg.SUMMARY_TXT].read_text()


def test_write_report_writes_only_its_files_inside_its_folder(report, report_base):
    tmp_path = report_base
    folder, files = report
    assert set(files) == {
        dg.PER_CLASS_CSV,
        dg.CONFUSION_CSV,
        dg.CONFUSION_PNG,
        dg.ERRORS_CSV,
        dg.MISTAKES_PNG,
        dg.SUMMARY_TXT,
    }
    assert all(p.parent == folder and p.is_file() for p in files.values())
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)  # no temp files left
    outside = {p for p in tmp_path.rglob("*") if p.is_file() and folder not in p.parents}
    assert {p.relative_to(tmp_path).as_posix() for p in outside} == {
        f"images/img/{i}.png" for i in range(len(LABELS)) if i != 4
    }
    assert (tmp_path / "images/img/7.png").read_bytes() == b"not an image"


def test_confusion_figure_labels_small_sets_and_lists_the_top_confusions():
    rng = np.random.default_rng(1)
    for c, labelled in ((10, True), (100, False)):
        labels = rng.integers(0, c, 20 * c)
        preds = np.where(
            rng.uniform(size=labels.size) < 0.7, labels, rng.integers(0, c, labels.size)
        )
        cm = dg.confusion_matrix(labels, preds, c)
        fig = dg.confusion_figure(cm, [f"c{i}" for i in range(c)], top_k=5)
        ax, text_ax = fig.axes[0], fig.axes[1]
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ("c3" in ticks) is labelled
        listed = text_ax.texts[0].get_text()
        (i, j, count), *_ = dg.top_confusions(cm, 5)
        assert listed.startswith(" 1. c" + str(i)) and f"c{j}: {count}" in listed
        png = Image.open(io.BytesIO(dg.figure_png(fig)))
        assert 500 <= png.width <= 2000 and 400 <= png.height <= 1500


def test_top_confusions_are_the_largest_off_diagonal_cells():
    cm = np.array([[9, 1, 4], [0, 5, 2], [3, 0, 8]])
    assert dg.top_confusions(cm, 2) == [(0, 2, 4), (2, 0, 3)]
    assert dg.top_confusions(np.eye(3, dtype=int), 5) == []


def test_wilson_interval_and_summary_line_known_answers():
    from scipy.stats import binomtest

    for k, n in ((80, 100), (10, 10), (0, 7), (33, 41)):
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        got = dg.wilson_interval(100 * k / n, n)
        assert got == pytest.approx((100 * ci.low, 100 * ci.high), abs=1e-6)
    assert dg.wilson_interval(80.0, 100) == pytest.approx((71.12, 86.67), abs=0.01)
    line = dg.summary_line(60.0, 80.0, 100)
    assert line.startswith("zero-shot 60.0% -> trained 80.0% (95% interval ±7.8 over the split")
    assert dg.summary_line(None, 80.0, 100).startswith("trained 80.0%")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"class_names": ["a", "b"]}, "class names: expected 4"),
        ({"paths": ["x"]}, "image paths: expected 10"),
        ({"labels": np.array([0] * 9 + [4])}, "labels: expected values in 0..3"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, kwargs, fragment):
    args = {
        "logits": hand_logits(),
        "labels": np.array(LABELS),
        "class_names": NAMES,
        "paths": paths(),
    }
    with pytest.raises(DiagnosisError, match=fragment):
        dg.write_report(tmp_path / "r", **{**args, **kwargs})
    assert not (tmp_path / "r").exists()


def test_the_contact_sheet_works_with_pillows_bitmap_font(monkeypatch):
    """Pillow < 10.1 has only the bitmap font (no sizes, no text anchors)."""
    from PIL import ImageFont

    monkeypatch.setattr(dg, "_font", lambda size: ImageFont.load_default_imagefont())
    rows = [{"file": "/nonexistent/x.png", "true": "a very long class name indeed",
             "predicted": "another long class name", "confidence": "0.9"}]  # fmt: skip
    sheet = dg.contact_sheet(rows, n=4)
    assert sheet.width > 160 and (np.asarray(sheet) == 150).all(axis=2).sum() > 0.5 * 160 * 160


def test_a_file_in_place_of_the_folder_is_one_clear_error(tmp_path):
    (tmp_path / "eval").write_text("x")
    with pytest.raises(DiagnosisError, match="not a folder"):
        dg.write_report(tmp_path / "eval", np.eye(2), np.arange(2), ["a", "b"], ["p", "q"])
