"""The statistics in a sweep summary: intervals, the Comparisons part, CD plots, summary.tex."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess

import matplotlib.image as mpimg
import numpy as np
import pytest

from test_report import b2n, rec, write
from vlprompt.latex import escape, render_latex
from vlprompt.report import (
    AVERAGE,
    PROTOCOL_TITLES,
    ReportError,
    harmonic_mean,
    render_markdown,
    summarize,
    write_summary,
)
from vlprompt.statistics import t_half_width

DATASETS = ("caltech", "pets", "cars", "food", "dtd", "eurosat")


def b2n_sweep(methods=(("zsclip", -5.0), ("coop", 0.0), ("rpo", 2.0)), datasets=DATASETS,
              seeds=(1, 2, 3), seed=0):  # fmt: skip
    """base2new records: each method's level plus per-cell noise; rpo 2 points over coop."""
    rng = np.random.default_rng(seed)
    records = []
    for method, shift in methods:
        for i, d in enumerate(datasets):
            for s in seeds:
                base = 80 + shift + i + rng.normal(0, 0.5)
                records += b2n(method, d, s, base, 70 + shift - i + rng.normal(0, 0.5))
    return records


def section(text, title):
    """The lines of a markdown section from its heading to the next heading of any level."""
    start = text.index(title)
    rest = text[start + len(title) :]
    end = re.search(r"\n#{1,4} ", rest)
    return rest[: end.start()] if end else rest


def test_summary_has_the_comparisons_and_the_cd_plots(tmp_path):
    records = b2n_sweep()
    write(tmp_path / "results.jsonl", records)
    files = write_summary(tmp_path)
    text = files.markdown.read_text()
    assert "### Comparisons — Base-to-new generalisation — ViT-B-16, 16 shots" in text
    assert "3 methods, 6 data sets, 3 seeds (1, 2, 3)" in text
    pairs = section(text, "#### Pairwise tests")
    h = {(r["method"], r["dataset"], r["seed"], r["subsample"]): r["accuracy"] for r in records}
    gain = np.mean([harmonic_mean(h["rpo", d, s, "base"], h["rpo", d, s, "new"])
                    - harmonic_mean(h["coop", d, s, "base"], h["coop", d, s, "new"])
                    for d in DATASETS for s in (1, 2, 3)])  # fmt: skip
    assert f"rpo > coop on H: +{gain:.1f} points, p < 0.001 (Holm), 18 of 18 pairs" in pairs
    assert "Holm-corrected over the 3 pairs" in pairs
    ranks = section(text, "#### Average ranks over data sets (Friedman)")
    assert "| rpo | 1.00 | 6 |" in ranks and "| zsclip | 3.00 | 0 |" in ranks
    assert "over the 6 data sets every method has, means over 3 seeds. Friedman χ² = 12.00" in ranks
    assert "`plots/cd_base2new_shots16.png`, `plots/cd_base2new_shots16.pdf`" in ranks
    assert "(post-hoc: pairwise Wilcoxon/Holm)" in ranks
    assert "not distinguishable at alpha = 0.05: none (every pair distinguishable)." in ranks
    spread = section(text, "#### Seed variance (Brown–Forsythe)")
    assert "Holm-corrected over the 3 pairs" in spread and "| coop − rpo | 6 | 18 / 18 |" in spread
    png = tmp_path / "plots" / "cd_base2new_shots16.png"
    pdf = tmp_path / "plots" / "cd_base2new_shots16.pdf"
    assert {png, pdf} <= set(files.plots)
    assert mpimg.imread(png).std() > 0 and pdf.read_bytes().startswith(b"%PDF")
    assert not [p for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]


def test_the_ci_table_and_csv_column_are_t_intervals(tmp_path):
    write(tmp_path / "results.jsonl", b2n_sweep())
    files = write_summary(tmp_path, plots=False)
    with open(files.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    row = next(
        r for r in rows if (r["method"], r["dataset"], r["metric"]) == ("rpo", "pets", "new")
    )
    assert float(row["ci95"]) == pytest.approx(4.302652729911275 * float(row["std"]) / 3**0.5)
    text = files.markdown.read_text()
    table = section(text, "### 95% confidence intervals over seeds — Base-to-new generalisation")
    assert "mean ± half-width of the 95% Student-t interval over seeds" in table
    mean, std = float(row["mean"]), float(row["std"])
    line = next(x for x in table.splitlines() if x.startswith("| rpo | pets | 16 | 3 |"))
    assert f"{mean:.2f} ± {t_half_width(std, 3):.2f} (std {std:.2f})" in line
    assert "not drawn (summary written without plots)" in text


def test_one_seed_says_why_intervals_and_variance_tests_are_omitted(tmp_path):
    write(tmp_path / "results.jsonl", b2n_sweep(datasets=("pets", "cars"), seeds=(1,)))
    files = write_summary(tmp_path)
    text = files.markdown.read_text()
    assert "Omitted: one seed per number; an interval needs at least two." in text
    assert "Omitted: one seed per data set, so no seed variance to compare." in text
    assert "rpo vs coop on H: too few pairs (n=2) for the test to reach alpha = 0.05" in text
    assert "1 seed (1)" in text
    assert "cd_base2new_shots16.png" in {p.name for p in files.plots}  # 3 methods, 2 data sets
    _no_empty_tables(text)

    write(tmp_path / "results.jsonl", b2n_sweep(seeds=(1, 2)))
    text = write_summary(tmp_path, plots=False).markdown.read_text()
    assert "Omitted: 2 seeds per data set; the test needs 3 (with 2 seeds both deviations" in text
    assert "Omitted: one seed per number" not in text
    _no_empty_tables(text)


def test_one_method_and_one_data_set_say_why_parts_are_omitted(tmp_path):
    write(tmp_path / "results.jsonl", b2n_sweep(methods=(("coop", 0.0),)))
    text = write_summary(tmp_path).markdown.read_text()
    assert "Omitted: one method only, nothing to pair." in text
    assert "Omitted: one method only, nothing to rank." in text
    assert "Variance test omitted: one method only." in text
    _no_empty_tables(text)

    write(tmp_path / "results.jsonl", b2n_sweep(datasets=("pets",)))
    files = write_summary(tmp_path)
    text = files.markdown.read_text()
    assert "Omitted: 1 data set every method has; ranks over data sets need at least 2." in text
    assert not any(p.name.startswith("cd_") for p in files.plots)
    assert "too few pairs (n=3)" in text
    _no_empty_tables(text)


def _no_empty_tables(text):
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|---"):
            assert lines[i + 1].startswith("| "), f"empty table at line {i}: {lines[i - 1]}"


def test_two_methods_rank_without_friedman_or_a_cd_diagram(tmp_path):
    write(tmp_path / "results.jsonl", b2n_sweep(methods=(("coop", 0.0), ("rpo", 2.0))))
    files = write_summary(tmp_path)
    text = files.markdown.read_text()
    assert "Friedman test omitted: 2 methods: the Friedman test needs at least 3" in text
    assert "Critical-difference diagram omitted: 2 methods (it needs at least 3" in text
    assert not any(p.name.startswith("cd_") for p in files.plots)


def test_nemenyi_is_the_option_and_named(tmp_path):
    write(tmp_path / "results.jsonl", b2n_sweep())
    text = write_summary(tmp_path, plots=False, posthoc="nemenyi").markdown.read_text()
    # k=3, N=6: CD = 2.343 * sqrt(3*4 / 36) = 1.35 > the 1.00 between neighbours, < 2.00
    assert "(post-hoc: Nemenyi's critical difference, CD = 1.35): not drawn" in text
    assert "at alpha = 0.05: rpo = coop; coop = zsclip." in text
    with pytest.raises(ReportError, match=r"posthoc='holm': expected one of wilcoxon, nemenyi"):
        write_summary(tmp_path, posthoc="holm")


def test_fewshot_and_transfer_compare_per_shots_and_on_targets_only():
    records = []
    rng = np.random.default_rng(1)
    for method, shift in (("coop", 0.0), ("rpo", 1.0), ("zsclip", -3.0)):
        for seed in (1, 2, 3):
            for shots in (1, 4):
                for d in DATASETS:
                    acc = 50 + shift + shots + rng.normal(0, 0.3)
                    records.append(rec("fewshot", method, d, d, "all", seed, acc, shots))
            for d in ("inet", "v2", "sketch"):
                records.append(rec("dg", method, "inet", d, "all", seed, 60 + shift + seed))
    cells = summarize(records)
    from vlprompt.report import per_seed

    text = render_markdown(cells, groups=per_seed(records))
    assert "### Comparisons — Few-shot learning — ViT-B-16, 1 shot" in text
    assert "### Comparisons — Few-shot learning — ViT-B-16, 4 shots" in text
    dg = section(text, "### Comparisons — Domain generalisation — ViT-B-16, source inet, 16 shots")
    assert "accuracy per (data set, seed) cell (targets only); 3 methods, 2 data sets" in dg
    assert "Comparisons" not in render_markdown(cells)  # without per-seed values: tables only


# ----------------------------------------------------------------------------- LaTeX


def tabulars(tex):
    return re.findall(r"\\begin\{tabular\}\{(\w+)\}\n(.*?)\\end\{tabular\}", tex, re.S)


def check_structure(tex):
    """booktabs rules in order, every row as many cells as the column spec, no stray specials."""
    found = tabulars(tex)
    assert found
    for spec, body in found:
        lines = body.strip().splitlines()
        assert lines[0] == r"\toprule" and lines[2] == r"\midrule" and lines[-1] == r"\bottomrule"
        for line in lines:
            if line.startswith("\\") and line.endswith("rule"):
                continue
            assert line.endswith(r" \\")
            assert len(re.split(r"(?<!\\)&", line)) == len(spec), line
            assert not re.search(r"(?<!\\)[_%#]", line), line
    return found


def test_latex_base2new_table_bold_best_zero_shot_first_and_escaped():
    records = b2n_sweep(methods=(("rpo", 2.0), ("zsclip", -5.0), ("co_op%&#", 0.0)))
    tex = render_latex(summarize(records), PROTOCOL_TITLES, AVERAGE)
    ((spec, body),) = check_structure(tex)
    assert spec == "llrrr"
    rows = [r for r in body.splitlines() if r.endswith(r" \\")][1:]
    assert rows[0].startswith(r"Average (6) & zsclip & ")
    assert rows[1].startswith(r" & co\_op\%\&\# & ") and rows[2].startswith(" & rpo & ")
    assert rows[2].count(r"\textbf{") == 3  # rpo is best on base, new and H of the average
    assert rows[3].startswith("caltech & zsclip")
    assert tex.count(r"\midrule") == 1 + len(DATASETS)  # header rule + one between data sets
    assert escape("a_b%c&d#e$f{g}~^\\") == (
        r"a\_b\%c\&d\#e\$f\{g\}\textasciitilde{}\textasciicircum{}\textbackslash{}"
    )


def test_latex_fewshot_and_dg_tables():
    records = []
    for seed in (1, 2):
        for method, shift in (("coop", 0.0), ("rpo", 1.0)):
            for shots in (1, 2, 4):
                for d in ("pets", "cars"):
                    acc = 50 + shift + shots + seed
                    records.append(rec("fewshot", method, d, d, "all", seed, acc, shots))
            for d in ("inet", "v2"):
                records.append(rec("dg", method, "inet", d, "all", seed, 60 + shift))
    tex = render_latex(summarize(records), PROTOCOL_TITLES, AVERAGE)
    (fewshot, dg) = check_structure(tex)
    assert fewshot[0] == "llrrr" and "Data set & Method & 1 & 2 & 4" in fewshot[1]
    assert "Average (2) & coop & 52.50 & 53.50 & 55.50" in fewshot[1]
    assert dg[0] == "lrrr" and r"Method & inet (source) & v2 & Average" in dg[1]
    assert r"rpo & \textbf{61.00} & \textbf{61.00} & \textbf{61.00}" in dg[1]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_summary_tex_compiles(tmp_path):
    records = b2n_sweep(methods=(("zsclip", -5.0), ("co_op%&#", 0.0)))
    records += [rec("fewshot", "rpo_x", "pets", "pets", "all", 1, 50.0, 2)]
    write(tmp_path / "results.jsonl", records)
    files = write_summary(tmp_path, plots=False)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        f"\\input{{{files.tex.name}}}\n\\end{{document}}\n"
    )
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
