"""Summary tables and plots (vlprompt.report) from hand-written results.jsonl records."""

from __future__ import annotations

import csv
import json
import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from vlprompt.report import (
    AVERAGE,
    ReportError,
    harmonic_mean,
    load_results,
    mean_std,
    render_markdown,
    summarize,
    write_summary,
)


def rec(protocol, method, source, dataset, subsample, seed, accuracy, shots=16, **extra):
    return dict(
        protocol=protocol, method=method, source=source, dataset=dataset, subsample=subsample,
        seed=seed, accuracy=accuracy, shots=shots, split="test", backbone="ViT-B-16",
        key=f"{protocol}/{source}/{method}/shots{shots}_seed{seed}|{dataset}:{subsample}:test",
        **extra,
    )  # fmt: skip


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def cells_by(cells, **match):
    found = [c for c in cells if all(getattr(c, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def b2n(method, dataset, seed, base, new):
    return [
        rec("base2new", method, dataset, dataset, "base", seed, base),
        rec("base2new", method, dataset, dataset, "new", seed, new),
    ]


def test_harmonic_mean_and_sample_std():
    assert harmonic_mean(80.0, 40.0) == pytest.approx(160 / 3)
    assert harmonic_mean(0.0, 0.0) == 0.0
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)  # ddof=1
    assert math.isnan(mean_std([5.0])[1])


def test_two_h_conventions_on_a_hand_example_where_they_differ():
    # d1: B=80, N=40 -> H=53.333; d2: B=60, N=60 -> H=60
    # averages: B=70, N=50 -> H of avg = 2*70*50/120 = 58.333; avg of H = 56.667
    records = b2n("rpo", "d1", 1, 80.0, 40.0) + b2n("rpo", "d2", 1, 60.0, 60.0)
    cells = summarize(records)
    avg = dict(protocol="base2new", method="rpo", dataset=AVERAGE)
    assert cells_by(cells, metric="base", **avg).mean == pytest.approx(70.0)
    assert cells_by(cells, metric="new", **avg).mean == pytest.approx(50.0)
    assert cells_by(cells, metric="H_of_avg", **avg).mean == pytest.approx(175 / 3)
    assert cells_by(cells, metric="avg_of_H", **avg).mean == pytest.approx((160 / 3 + 60) / 2)
    assert cells_by(cells, metric="H", dataset="d1").mean == pytest.approx(160 / 3)
    assert cells_by(cells, metric="H_of_avg", **avg).n_datasets == 2
    table = render_markdown(cells)
    assert "| rpo | 2 | 70.00 ± - | 50.00 ± - | 58.33 ± - | 56.67 ± - |" in table
    assert "H (of avg)" in table and "H (avg of H)" in table
    assert "sample standard deviation (ddof=1)" in table


def test_a_base_to_new_table_says_when_new_classes_are_zero_shot():
    """Tip-Adapter's new-class column is zero-shot CLIP's (no cache of new classes): the table
    says so under the averages; a method that learns for new classes gets no such line."""
    records = []
    for d in ("d1", "d2"):
        records += b2n("tip_adapter", d, 1, 80.0, 60.0) + b2n("coop", d, 1, 75.0, 55.0)
    table = render_markdown(summarize(records))
    assert "- **tip_adapter**: its cache holds base-class images only, so its new-class " in table
    assert "**coop**" not in table
    only_coop = render_markdown(summarize([r for r in records if r["method"] == "coop"]))
    assert "New classes:" not in only_coop


def test_per_dataset_h_uses_seed_means_and_std_of_per_seed_h():
    records = b2n("coop", "d", 1, 90.0, 50.0) + b2n("coop", "d", 2, 80.0, 70.0)
    cell = cells_by(summarize(records), metric="H", dataset="d")
    assert cell.mean == pytest.approx(harmonic_mean(85.0, 60.0))
    per_seed = [harmonic_mean(90, 50), harmonic_mean(80, 70)]
    assert cell.std == pytest.approx(np.std(per_seed, ddof=1))
    assert cell.seeds == (1, 2)


def test_average_row_std_is_over_the_seeds_every_data_set_has():
    records = (
        b2n("m", "d1", 1, 80.0, 60.0)
        + b2n("m", "d1", 2, 82.0, 62.0)
        + b2n("m", "d2", 1, 70.0, 50.0)
        + b2n("m", "d2", 2, 74.0, 56.0)
        + b2n("m", "d2", 3, 90.0, 90.0)  # only d2 has seed 3: not in the average's spread
    )
    base = cells_by(summarize(records), metric="base", dataset=AVERAGE)
    assert base.mean == pytest.approx((81.0 + 78.0) / 2)  # mean of the data sets' means
    assert base.seeds == (1, 2)
    assert base.std == pytest.approx(np.std([(80 + 70) / 2, (82 + 74) / 2], ddof=1))


def test_fewshot_xd_dg_cells_and_tables(tmp_path):
    records = []
    for seed, bump in ((1, 0.0), (2, 2.0)):
        for shots in (1, 4):
            for d, base in (("pets", 60.0), ("cars", 40.0)):
                records.append(
                    rec("fewshot", "coop", d, d, "all", seed, base + shots + bump, shots)
                )
        for d, acc in (("inet", 70.0), ("v2", 60.0), ("sketch", 40.0)):
            records.append(rec("dg", "rpo", "inet", d, "all", seed, acc + bump))
        for d, acc in (("inet", 71.0), ("pets", 90.0)):
            records.append(rec("xd", "rpo", "inet", d, "all", seed, acc + bump))
    cells = summarize(records)
    fs = cells_by(cells, protocol="fewshot", dataset="pets", shots=4)
    assert (fs.mean, fs.std) == pytest.approx((65.0, np.std([64.0, 66.0], ddof=1)))
    fs_avg = cells_by(cells, protocol="fewshot", dataset=AVERAGE, shots=1)
    assert fs_avg.mean == pytest.approx((62.0 + 42.0) / 2) and fs_avg.n_datasets == 2
    dg_avg = cells_by(cells, protocol="dg", dataset=AVERAGE)
    assert dg_avg.mean == pytest.approx((61.0 + 41.0) / 2)  # targets only, not the source
    assert cells_by(cells, protocol="xd", dataset=AVERAGE).mean == pytest.approx(91.0)
    table = render_markdown(cells)
    assert "| method | 1 shot | 4 shots |" in table
    # targets in the order the sweep ran them (the papers' V2, Sketch, A, R order)
    assert "| method | inet (source) | v2 | sketch | target average |" in table
    assert "| rpo | 71.00 ± 1.41 | 61.00 ± 1.41 | 41.00 ± 1.41 | 51.00 ± 1.41 |" in table
    assert "### average over 2 data sets" in table


def sweep_records(datasets=("d1", "d2"), fewshot=("d1", "d2"), dg=True):
    records = []
    for seed in (1, 2, 3):
        for method, shift in (("coop", 0.0), ("rpo", 3.0)):
            for d in datasets:
                records += b2n(method, d, seed, 70 + shift + seed, 60 + shift - seed)
            for d in fewshot:
                for shots in (1, 2, 4):
                    acc = 50 + shift + 2 * shots + seed + len(d)
                    records.append(rec("fewshot", method, d, d, "all", seed, acc, shots))
            for d in ("inet", "v2") if dg else ():
                records.append(rec("dg", method, "inet", d, "all", seed, 50 + shift + seed))
    return records


def test_write_summary_csv_equals_numpy_on_the_raw_records(tmp_path):
    records = sweep_records()
    write(tmp_path / "results.jsonl", records)
    files = write_summary(tmp_path, plots=False)
    assert files.markdown.read_text().startswith("# Benchmark summary")
    with open(files.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    checked = 0
    for row in rows:
        if row["dataset"] == AVERAGE or row["metric"] not in ("accuracy", "base", "new"):
            continue
        subsample = "all" if row["metric"] == "accuracy" else row["metric"]
        values = [
            r["accuracy"]
            for r in records
            if (r["protocol"], r["method"], r["source"], r["dataset"], str(r["shots"]))
            == (row["protocol"], row["method"], row["source"], row["dataset"], row["shots"])
            and r["subsample"] == subsample
        ]
        assert len(values) == 3
        assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-12)
        assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        checked += 1
    assert checked == 2 * (2 * 2 + 2 * 3 + 2)  # base/new x 2 data sets, fewshot 2 x 3, dg 2


@pytest.mark.slow  # ~2-4 s on a shared CPU: importing matplotlib and drawing four figures
def test_plots_are_written_atomically_as_valid_pngs(tmp_path):
    write(
        tmp_path / "results.jsonl", sweep_records(datasets=("d1", "d2"), fewshot=("d1",), dg=False)
    )
    files = write_summary(tmp_path)
    names = sorted(p.name for p in files.plots)
    stems = ["base2new_shots16", "fewshot_d1", "seeds_base2new", "seeds_fewshot"]
    assert names == sorted(f"{stem}{ext}" for stem in stems for ext in (".pdf", ".png"))
    for path in (p for p in files.plots if p.suffix == ".pdf"):
        assert path.read_bytes().startswith(b"%PDF")
    for path in (p for p in files.plots if p.suffix == ".png"):
        image = mpimg.imread(path)
        assert path.stat().st_size > 0 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0  # something was drawn
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == names  # no temp files


def test_one_seed_shows_a_dash_and_an_empty_csv_std(tmp_path):
    write(tmp_path / "results.jsonl", b2n("coop", "d", 1, 80.0, 60.0))
    files = write_summary(tmp_path, plots=False)
    assert "| coop | 80.00 ± - | 60.00 ± - | 68.57 ± - |" in files.markdown.read_text()
    with open(files.csv, newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["metric"] == "base" and r["dataset"] == "d")
    assert row["std"] == "" and row["n_seeds"] == "1"


def test_duplicate_keys_count_once_and_bad_files_are_clear_errors(tmp_path):
    first = rec("fewshot", "coop", "d", "d", "all", 1, 50.0)
    again = dict(first, accuracy=52.0)
    write(tmp_path / "results.jsonl", [first, again])
    (only,) = load_results(tmp_path / "results.jsonl")
    assert only["accuracy"] == 52.0
    with pytest.raises(ReportError, match=r"missing.jsonl does not exist: run `vlprompt bench"):
        load_results(tmp_path / "missing.jsonl")
    write(tmp_path / "bad.jsonl", [{"method": "coop", "accuracy": 1.0}])
    with pytest.raises(ReportError, match=r"bad.jsonl, record 1: lacks protocol, source"):
        load_results(tmp_path / "bad.jsonl")


def test_atomic_writes_give_files_the_usual_permissions(tmp_path):
    """mkstemp makes 0o600 files; results and prompts must be readable like any other file."""
    from vlprompt import io as vio
    from vlprompt.io import atomic_save_tensors, atomic_write_text

    expected = 0o666 & ~vio._UMASK
    atomic_write_text(tmp_path / "a.json", "{}")
    atomic_save_tensors(tmp_path / "b.safetensors", {"x": __import__("torch").zeros(2)})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == expected
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == expected
    assert expected != 0o600  # the usual umasks (0o022, 0o002) give group/other read
