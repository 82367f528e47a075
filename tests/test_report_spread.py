"""Seed spread in the summary (std, min, max; box plots) and base-to-new against shots."""

from __future__ import annotations

import csv

import matplotlib.image as mpimg
import numpy as np
import pytest

from test_report import b2n, cells_by, rec, write
from vlprompt.report import AVERAGE, harmonic_mean, render_markdown, summarize, write_summary

BASES = [80.0, 84.0, 78.0, 90.0, 81.0]
NEWS = [70.0, 60.0, 75.0, 66.0, 72.0]


def ten_seed_records(method="rpo", dataset="d", shots=16, shift=0.0):
    records = []
    for seed, (base, new) in enumerate(zip(BASES, NEWS), start=1):
        for r in b2n(method, dataset, seed, base + shift, new + shift):
            r["shots"] = shots
            r["key"] = r["key"].replace("shots16", f"shots{shots}")
            records.append(r)
    return records


def test_min_max_are_the_per_seed_extremes_of_each_number():
    cells = summarize(ten_seed_records() + ten_seed_records(dataset="e", shift=2.0))
    base = cells_by(cells, method="rpo", dataset="d", metric="base")
    assert (base.minimum, base.maximum) == (78.0, 90.0)
    h = cells_by(cells, method="rpo", dataset="d", metric="H")
    per_seed_h = [harmonic_mean(b, n) for b, n in zip(BASES, NEWS)]
    assert h.minimum == pytest.approx(min(per_seed_h)) and h.maximum == pytest.approx(
        max(per_seed_h)
    )
    assert h.std == pytest.approx(np.std(per_seed_h, ddof=1))
    average = cells_by(cells, method="rpo", dataset=AVERAGE, metric="base")
    assert (average.minimum, average.maximum) == (79.0, 91.0)  # per-seed averages of d and e


def test_csv_has_min_and_max_columns_and_one_seed_leaves_them_filled(tmp_path):
    write(tmp_path / "results.jsonl", ten_seed_records() + b2n("coop", "d", 1, 50.0, 40.0))
    files = write_summary(tmp_path, plots=False)
    with open(files.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    rpo = next(r for r in rows if r["method"] == "rpo" and r["metric"] == "new")
    assert (float(rpo["min"]), float(rpo["max"])) == (60.0, 75.0)
    coop = next(r for r in rows if r["method"] == "coop" and r["metric"] == "new")
    assert (coop["std"], coop["min"], coop["max"]) == ("", "40.0", "40.0")


def test_markdown_spread_table_from_three_seeds_on():
    text = render_markdown(summarize(ten_seed_records()))
    assert "### Spread over seeds — Base-to-new generalisation" in text
    h = [harmonic_mean(b, n) for b, n in zip(BASES, NEWS)]
    row = next(line for line in text.splitlines() if line.startswith("| rpo | d | 16 | 5 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:9] == [f"{np.std(h, ddof=1):.2f}", f"{min(h):.2f}", f"{max(h):.2f}",
                          f"{max(h) - min(h):.2f}"]  # fmt: skip
    assert cells[9:] == [f"{np.std(BASES, ddof=1):.2f}", f"{np.std(NEWS, ddof=1):.2f}"]
    two_seeds = [r for r in ten_seed_records() if r["seed"] <= 2]
    assert "Spread over seeds" not in render_markdown(summarize(two_seeds))


def test_fewshot_spread_rows_are_accuracy():
    records = [
        rec("fewshot", "coop", "d", "d", "all", s, a) for s, a in zip((1, 2, 3), (50, 56, 53))
    ]
    text = render_markdown(summarize(records))
    assert "| coop | d | 16 | 3 | 53.00 | 3.00 | 50.00 | 56.00 | 6.00 |" in text


def test_base2new_by_shots_table_lists_every_shots_value():
    records = []
    for shots, shift in ((1, -10.0), (4, -5.0), (16, 0.0)):
        records += ten_seed_records(shots=shots, shift=shift)
    text = render_markdown(summarize(records))
    assert "## Base-to-new generalisation by shots — ViT-B-16, d" in text
    row = next(line for line in text.splitlines() if line.startswith("| rpo | base |"))
    mean = np.mean(BASES)
    assert row == (f"| rpo | base | {mean - 10:.2f} ± {np.std(BASES, ddof=1):.2f} | "
                   f"{mean - 5:.2f} ± {np.std(BASES, ddof=1):.2f} | "
                   f"{mean:.2f} ± {np.std(BASES, ddof=1):.2f} |")  # fmt: skip


@pytest.mark.slow  # matplotlib
def test_shots_band_plot_and_box_plot_are_drawn(tmp_path):
    records = []
    for shots, shift in ((1, -10.0), (2, -6.0), (4, -3.0)):
        for method, extra in (("rpo", 0.0), ("coop", -4.0)):
            for dataset in ("d", "e"):
                records += ten_seed_records(method, dataset, shots, shift + extra)
    write(tmp_path / "results.jsonl", records)
    names = sorted(p.name for p in write_summary(tmp_path).plots)
    assert {"base2new_by_shots_d.png", "base2new_by_shots_e.png",
            "base2new_by_shots_average.png", "seeds_base2new.png"} <= set(names)  # fmt: skip
    image = mpimg.imread(tmp_path / "plots" / "base2new_by_shots_average.png")
    assert image.shape[1] > 600 and image.std() > 0
