"""Tables and plots from a sweep's `results.jsonl`: `summary.md`, `summary.csv`, `summary.tex`,
`plots/*.png` and the same as PDF.

Every number is a mean over seeds with the *sample* standard deviation (ddof=1) beside it; with one
seed the deviation is shown as "-" (empty in the CSV). Accuracies are reported as the engine
recorded them (percent).

Base-to-new: per data set, base and new are means over seeds and H = 2BN/(B+N) of those means (the
papers' convention); its ± is the deviation of the per-seed H. The average over data sets is given
with both conventions that papers mix: H of the averaged base and new accuracies (CoCoOp, KgCoOp,
MaPLe, PromptSRC) and the average of the per-data-set H.
An average row's ± is the deviation over seeds of the per-seed averages, taken over the seeds every
averaged data set has.

Beside the standard deviation: the half-width of the 95% Student-t interval over seeds (the CSV's
`ci95`, a table of its own in summary.md), and a "Comparisons" part per protocol
(vlprompt.comparisons: paired tests, average ranks with a critical-difference diagram, the seed
variance test). summary.tex holds the paper tables (vlprompt.latex).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlprompt import comparisons
from vlprompt.errors import ReportError
from vlprompt.io import read_jsonl
from vlprompt.latex import ZERO_SHOT, render_latex, sort_by_method
from vlprompt.published import comparison_md
from vlprompt.recipe import recipe_md
from vlprompt.run_folder import (
    PLOTS_DIR,
    RESULTS_FILE,
    SUMMARY_CSV,
    SUMMARY_MD,
    SUMMARY_TEX,
    write_file,
)
from vlprompt.run_folder import plots_dir as sweep_plots_dir
from vlprompt.statistics import cd_diagram, harmonic_mean, t_half_width

AVERAGE = "average"  # the `dataset` of rows averaged over data sets (or over xd/dg targets)
CSV_COLUMNS = (
    "backbone",
    "protocol",
    "method",
    "source",
    "dataset",
    "subsample",
    "shots",
    "metric",
    "mean",
    "std",
    "min",
    "max",
    "n_seeds",
    "seeds",
    "n_datasets",
    "ci95",
)
REQUIRED = ("protocol", "method", "source", "dataset", "subsample", "shots", "seed", "accuracy")
PROTOCOL_TITLES = {
    "base2new": "Base-to-new generalisation",
    "fewshot": "Few-shot learning",
    "xd": "Cross-data-set transfer",
    "dg": "Domain generalisation",
}


@dataclass(frozen=True)
class Cell:
    """One aggregated number of the summary (one CSV row)."""

    backbone: str
    protocol: str
    method: str
    source: str  # data set trained on
    dataset: str  # data set tested on, or AVERAGE
    subsample: str  # "base", "new", "all" ("base+new" for H)
    shots: int
    metric: str  # accuracy | base | new | H | H_of_avg | avg_of_H
    mean: float
    std: float  # nan with fewer than two seeds
    seeds: tuple[int, ...]
    n_datasets: int = 1
    minimum: float = math.nan  # the extremes of the per-seed values (per-seed H for H;
    maximum: float = math.nan  # per-seed averages for an average row)

    def text(self) -> str:
        spread = "-" if math.isnan(self.std) else f"{self.std:.2f}"
        return f"{self.mean:.2f} ± {spread}"

    @property
    def ci95(self) -> float:
        """Half-width of the 95% t interval over the seeds (nan with one seed)."""
        return t_half_width(self.std, len(self.seeds))

    def ci_text(self) -> str:
        if len(self.seeds) < 2:
            return f"{self.mean:.2f} (one seed)"
        return f"{self.mean:.2f} ± {self.ci95:.2f} (std {self.std:.2f})"


@dataclass
class SummaryFiles:
    """The files `write_summary` wrote."""

    markdown: Path
    csv: Path
    plots: list[Path] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    tex: Path | None = None


# ----------------------------------------------------------------------------- numbers


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for a single value)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std


def _backbone_label(value: Any) -> str:
    if isinstance(value, dict):
        name = str(value.get("name", "?"))
        pretrained = value.get("pretrained")
        return f"{name} ({pretrained})" if pretrained else name
    return "?" if value is None else str(value)


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results file, one per evaluation key (the last line wins)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path} does not exist: run `vlprompt bench ...` to create it")
    by_key: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(read_jsonl(path, ReportError), start=1):
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ReportError(
                f"{path}, record {number}: lacks {', '.join(missing)} "
                "(expected a sweep's results.jsonl written by `vlprompt bench`)"
            )
        key = record.get("key") or "|".join(str(record[k]) for k in REQUIRED[:-1])
        by_key[key] = record
    return list(by_key.values())


SeedValues = dict[int, float]
Group = tuple[str, str, str, str, str, str, int]  # backbone, protocol, method, source, data, sub, k


def per_seed(records: Sequence[dict[str, Any]]) -> dict[Group, SeedValues]:
    """Accuracy per seed for each (backbone, protocol, method, source, data set, subsample,
    shots)."""
    groups: dict[Group, SeedValues] = defaultdict(dict)
    for r in records:
        group = (
            _backbone_label(r.get("backbone")),
            str(r["protocol"]),
            str(r["method"]),
            str(r["source"]),
            str(r["dataset"]),
            str(r["subsample"]),
            int(r["shots"]),
        )
        groups[group][int(r["seed"])] = float(r["accuracy"])
    return dict(groups)


def _cell(group: Group, metric: str, values: SeedValues, subsample: str | None = None) -> Cell:
    backbone, protocol, method, source, dataset, sub, shots = group
    seeds = tuple(sorted(values))
    mean, std = mean_std([values[s] for s in seeds])
    low, high = _extremes(values)
    return Cell(backbone, protocol, method, source, dataset, subsample or sub, shots, metric,
                mean, std, seeds, 1, low, high)  # fmt: skip


def _average_cell(
    base: Group, metric: str, means: list[float], per_seed_avg: SeedValues, n: int
) -> Cell:
    """A row averaged over `n` data sets: the mean of their means; ± over the common seeds."""
    backbone, protocol, method, source, _, sub, shots = base
    seeds = tuple(sorted(per_seed_avg))
    std = mean_std([per_seed_avg[s] for s in seeds])[1] if seeds else math.nan
    low, high = _extremes(per_seed_avg)
    return Cell(backbone, protocol, method, source, AVERAGE, sub, shots, metric,
                float(np.mean(means)), std, seeds, n, low, high)  # fmt: skip


def _extremes(values: SeedValues) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return float(min(values.values())), float(max(values.values()))


def _common_seeds(series: Sequence[SeedValues]) -> list[int]:
    common = set(series[0])
    for values in series[1:]:
        common &= set(values)
    return sorted(common)


def _base2new_cells(groups: dict[Group, SeedValues]) -> list[Cell]:
    cells: list[Cell] = []
    pairs: dict[tuple, dict[str, tuple[SeedValues, SeedValues]]] = defaultdict(dict)
    for group, base in groups.items():
        backbone, protocol, method, source, dataset, sub, shots = group
        if protocol != "base2new" or sub != "base" or dataset != source:
            continue
        new = groups.get((backbone, protocol, method, source, dataset, "new", shots))
        cells.append(_cell(group, "base", base))
        if new is None:
            continue
        cells.append(_cell(group[:5] + ("new", shots), "new", new))
        common = sorted(set(base) & set(new))
        h_cell = _cell(group, "H", {s: harmonic_mean(base[s], new[s]) for s in common}, "base+new")
        h = harmonic_mean(mean_std(list(base.values()))[0], mean_std(list(new.values()))[0])
        cells.append(replace(h_cell, mean=h))
        pairs[(backbone, method, shots)][dataset] = (base, new)

    for (backbone, method, shots), by_data in sorted(pairs.items()):
        data = sorted(by_data)
        bases = [by_data[d][0] for d in data]
        news = [by_data[d][1] for d in data]
        base_means = [mean_std(list(b.values()))[0] for b in bases]
        new_means = [mean_std(list(n.values()))[0] for n in news]
        h_means = [harmonic_mean(b, n) for b, n in zip(base_means, new_means)]
        seeds = _common_seeds(bases + news)
        seed_base = {s: float(np.mean([b[s] for b in bases])) for s in seeds}
        seed_new = {s: float(np.mean([n[s] for n in news])) for s in seeds}
        seed_h_of_avg = {s: harmonic_mean(seed_base[s], seed_new[s]) for s in seeds}
        seed_avg_h = {
            s: float(np.mean([harmonic_mean(b[s], n[s]) for b, n in zip(bases, news)]))
            for s in seeds
        }
        group = (backbone, "base2new", method, AVERAGE, AVERAGE, "base", shots)
        n = len(data)
        # H of the averages: `_average_cell` of the one value gives it with the per-seed ±
        h_of_avg = harmonic_mean(float(np.mean(base_means)), float(np.mean(new_means)))
        both = group[:5] + ("base+new", shots)
        cells += [
            _average_cell(group, "base", base_means, seed_base, n),
            _average_cell(group[:5] + ("new", shots), "new", new_means, seed_new, n),
            _average_cell(both, "H_of_avg", [h_of_avg], seed_h_of_avg, n),
            _average_cell(both, "avg_of_H", h_means, seed_avg_h, n),
        ]
    return cells


def _accuracy_cells(groups: dict[Group, SeedValues]) -> list[Cell]:
    """fewshot, xd and dg: one accuracy per (method, source, target, shots) and averages:
    over data sets for fewshot, over the targets (source excluded) for xd and dg."""
    cells: list[Cell] = []
    to_average: dict[tuple, list[SeedValues]] = defaultdict(list)
    for group, values in groups.items():
        backbone, protocol, method, source, dataset, sub, shots = group
        if protocol not in ("fewshot", "xd", "dg"):
            continue
        cells.append(_cell(group, "accuracy", values))
        if protocol == "fewshot":
            to_average[(backbone, protocol, method, AVERAGE, shots)].append(values)
        elif dataset != source:
            to_average[(backbone, protocol, method, source, shots)].append(values)
    for (backbone, protocol, method, source, shots), series in sorted(to_average.items()):
        if protocol == "fewshot" and len(series) < 2:
            continue  # the average of one data set is that data set
        seeds = _common_seeds(series)
        seed_avg = {s: float(np.mean([v[s] for v in series])) for s in seeds}
        means = [mean_std(list(v.values()))[0] for v in series]
        group = (backbone, protocol, method, source, AVERAGE, "all", shots)
        cells.append(_average_cell(group, "accuracy", means, seed_avg, len(series)))
    return cells


def summarize(records: Sequence[dict[str, Any]]) -> list[Cell]:
    """All aggregated numbers of a sweep (what summary.csv holds)."""
    groups = per_seed(records)
    return _base2new_cells(groups) + _accuracy_cells(groups)


# ----------------------------------------------------------------------------- tables


def render_csv(cells: Sequence[Cell]) -> str:
    """Long-format CSV, full precision, one row per number (empty std with one seed; min and
    max are the extremes of the per-seed values)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in cells:
        writer.writerow([
            c.backbone, c.protocol, c.method, c.source, c.dataset, c.subsample, c.shots,
            c.metric, repr(c.mean), _number(c.std), _number(c.minimum), _number(c.maximum),
            len(c.seeds),
            ";".join(map(str, c.seeds)), c.n_datasets, _number(c.ci95),
        ])  # fmt: skip
    return buffer.getvalue()


def _number(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def _ordered(items: Iterable[str]) -> list[str]:
    """Distinct items in order of first appearance (data sets in the order the sweep ran)."""
    return list(dict.fromkeys(items))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _index(cells: Sequence[Cell]) -> dict[tuple, Cell]:
    return {
        (c.backbone, c.protocol, c.method, c.source, c.dataset, c.shots, c.metric): c for c in cells
    }


def _get(index: dict[tuple, Cell], *key: Any) -> str:
    cell = index.get(tuple(key))
    return cell.text() if cell is not None else ""


def _shots_text(shots: int) -> str:
    return f"{shots} shot{'s' if shots != 1 else ''}"


def _seeds_text(cells: Sequence[Cell]) -> str:
    seeds = sorted({s for c in cells for s in c.seeds})
    return ",".join(map(str, seeds)) or "-"


def _base2new_md(cells: list[Cell], backbone: str, shots: int) -> list[str]:
    index = _index(cells)
    mine = [c for c in cells if c.backbone == backbone and c.shots == shots]
    methods = _ordered(c.method for c in mine)
    datasets = _ordered(c.dataset for c in mine if c.dataset != AVERAGE)
    out = [f"## {PROTOCOL_TITLES['base2new']} — {backbone}, {_shots_text(shots)}", ""]
    averages = [c for c in mine if c.dataset == AVERAGE]
    if averages:
        out += [
            "Average over data sets. **H (of avg)**: H of the averaged base and new accuracies "
            "(the convention of CoCoOp, KgCoOp, MaPLe, PromptSRC). **H (avg of H)**: the average of "
            "the per-data-set H (RPO's). ± over seeds of the per-seed averages.",
            "",
        ]
        rows = []
        for m in methods:
            a = index.get((backbone, "base2new", m, AVERAGE, AVERAGE, shots, "base"))
            if a is None:
                continue
            rows.append([m, str(a.n_datasets)] + [
                _get(index, backbone, "base2new", m, AVERAGE, AVERAGE, shots, metric)
                for metric in ("base", "new", "H_of_avg", "avg_of_H")
            ])  # fmt: skip
        out += _table(["method", "data sets", "base", "new", "H (of avg)", "H (avg of H)"], rows)
        out += _new_class_notes(methods)
    if len(datasets) > 1:
        out += ["H per data set:", ""]
        rows = [
            [m] + [_get(index, backbone, "base2new", m, d, d, shots, "H") for d in datasets]
            for m in methods
        ]
        out += _table(["method", *datasets], rows)
    for d in datasets:
        seeds = _seeds_text([c for c in mine if c.dataset == d])
        out += [f"### {d} (seeds {seeds})", ""]
        rows = [
            [m]
            + [_get(index, backbone, "base2new", m, d, d, shots, k) for k in ("base", "new", "H")]
            for m in methods
            if (backbone, "base2new", m, d, d, shots, "base") in index
        ]
        out += _table(["method", "base", "new", "H"], rows)
    return out


def _new_class_notes(methods: Sequence[str]) -> list[str]:
    """One line per method whose new-class column needs reading (e.g. Tip-Adapter's: zero-shot
    CLIP's accuracy, not a learned one), so that no number passes for what it is not."""
    from vlprompt.methods import get_method_class

    lines = []
    for name in methods:
        try:
            note = get_method_class(name.split("+")[0]).new_classes_note  # a label's method
        except Exception:  # a method of another process's plugin: nothing known about it
            continue
        if note:
            lines.append(f"- **{name}**: {note}.")
    return ["", "New classes:", "", *lines] if lines else []


def _fewshot_md(cells: list[Cell], backbone: str) -> list[str]:
    index = _index(cells)
    mine = [c for c in cells if c.backbone == backbone]
    methods = _ordered(c.method for c in mine)
    shots = sorted({c.shots for c in mine})
    datasets = _ordered(c.dataset for c in mine if c.dataset != AVERAGE)
    out = [f"## {PROTOCOL_TITLES['fewshot']} — {backbone}", "", "Accuracy by shots per class.", ""]
    for d in [*datasets, AVERAGE] if len(datasets) > 1 else datasets:
        source = AVERAGE if d == AVERAGE else d
        title = f"average over {len(datasets)} data sets" if d == AVERAGE else d
        seeds = _seeds_text([c for c in mine if c.dataset == d])
        out += [f"### {title} (seeds {seeds})", ""]
        rows = [
            [m] + [_get(index, backbone, "fewshot", m, source, d, k, "accuracy") for k in shots]
            for m in methods
        ]
        out += _table(["method", *[f"{k} shot{'s' if k > 1 else ''}" for k in shots]], rows)
    return out


def _transfer_md(cells: list[Cell], backbone: str, protocol: str) -> list[str]:
    index = _index(cells)
    mine = [c for c in cells if c.backbone == backbone]
    out = [f"## {PROTOCOL_TITLES[protocol]} — {backbone}", ""]
    for source, shots in sorted({(c.source, c.shots) for c in mine}):
        here = [c for c in mine if c.source == source and c.shots == shots]
        methods = _ordered(c.method for c in here)
        targets = _ordered(c.dataset for c in here if c.dataset not in (source, AVERAGE))
        seeds = _seeds_text(here)
        out += [f"### source {source}, {shots} shots (seeds {seeds})", ""]
        columns = [source, *targets, AVERAGE]
        rows = [
            [m]
            + [_get(index, backbone, protocol, m, source, d, shots, "accuracy") for d in columns]
            for m in methods
        ]
        header = ["method", f"{source} (source)", *targets, "target average"]
        out += _table(header, rows)
    return out


def _base2new_by_shots_md(cells: list[Cell], backbone: str) -> list[str]:
    """One table over shots (RPO's extreme few-shot figure as numbers): base, new and H of the
    one data set, or of the average over data sets (H of avg)."""
    mine = [c for c in cells if c.backbone == backbone and c.protocol == "base2new"]
    shots = sorted({c.shots for c in mine})
    if len(shots) < 2:
        return []
    index = _index(mine)
    datasets = _ordered(c.dataset for c in mine if c.dataset != AVERAGE)
    panel = AVERAGE if len(datasets) > 1 else datasets[0]
    rows = []
    for m in _ordered(c.method for c in mine):
        for metric in ("base", "new", "H"):
            name = "H_of_avg" if panel == AVERAGE and metric == "H" else metric
            rows.append([m, metric] + [_get(index, backbone, "base2new", m, panel, panel, k, name)
                                       for k in shots])  # fmt: skip
    where = f"average over {len(datasets)} data sets" if panel == AVERAGE else panel
    out = [f"## {PROTOCOL_TITLES['base2new']} by shots — {backbone}, {where}", ""]
    return out + _table(["method", "", *[f"{k} shot{'s' if k > 1 else ''}" for k in shots]], rows)


SPREAD_MIN_SEEDS = 3  # the spread table appears from this many seeds on


def _spread_md(cells: list[Cell], backbone: str, protocol: str) -> list[str]:
    """Seed spread: std, min and max over seeds of the headline number of every row (per-seed
    H for base2new, with the base and new std beside it; accuracy otherwise)."""
    mine = [c for c in cells if c.backbone == backbone and c.protocol == protocol]
    rank = {m: i for i, m in enumerate(_ordered(c.method for c in mine))}
    if max((len(c.seeds) for c in mine), default=0) < SPREAD_MIN_SEEDS:
        return []
    index = _index(mine)
    headline = ("H", "H_of_avg") if protocol == "base2new" else ("accuracy",)
    rows = []
    for c in sorted(
        (
            c
            for c in mine
            if c.metric in headline and not (c.dataset == AVERAGE and c.n_datasets < 2)
        ),
        key=lambda c: (c.dataset == AVERAGE, c.source, c.dataset, c.shots, rank[c.method]),
    ):
        row = [c.method, c.dataset if c.dataset == c.source else f"{c.source} → {c.dataset}"]
        row += [str(c.shots), str(len(c.seeds)), f"{c.mean:.2f}", _fixed(c.std),
                _fixed(c.minimum), _fixed(c.maximum), _fixed(c.maximum - c.minimum)]  # fmt: skip
        if protocol == "base2new":
            for metric in ("base", "new"):
                other = index.get((backbone, protocol, c.method, c.source, c.dataset, c.shots,
                                   metric))  # fmt: skip
                row.append(_fixed(other.std) if other is not None else "")
        rows.append(row)
    what = "H" if protocol == "base2new" else "accuracy"
    header = ["method", "data set", "shots", "seeds", what, "std", "min", "max", "max − min"]
    if protocol == "base2new":
        header += ["base std", "new std"]
    note = (
        f"Spread over seeds of the {what}"
        + (" (per-seed H; an average row: per-seed H of the averages)" if what == "H" else "")
        + ": sample std (ddof=1), the lowest and highest seed."
    )
    return [f"### Spread over seeds — {PROTOCOL_TITLES[protocol]}", "", note, ""] + _table(
        header, rows
    )


def _fixed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _ci_md(cells: list[Cell], backbone: str, protocol: str) -> list[str]:
    """The 95% t interval over seeds of every row's numbers (base, new and H for base2new)."""
    mine = [c for c in cells if c.backbone == backbone and c.protocol == protocol]
    rank = {m: i for i, m in enumerate(_ordered(c.method for c in mine))}
    title = f"### 95% confidence intervals over seeds — {PROTOCOL_TITLES[protocol]}"
    if max((len(c.seeds) for c in mine), default=0) < 2:
        return [title, "", "Omitted: one seed per number; an interval needs at least two.", ""]
    index = _index(mine)
    metrics = ("base", "new", "H") if protocol == "base2new" else ("accuracy",)
    rows = []
    for c in sorted(
        (c for c in mine if c.metric in ("base", "accuracy")
         and not (c.dataset == AVERAGE and c.n_datasets < 2)),
        key=lambda c: (c.dataset == AVERAGE, c.source, c.dataset, c.shots, rank[c.method]),
    ):  # fmt: skip
        key = (backbone, protocol, c.method, c.source, c.dataset, c.shots)
        found = [index.get(key + ("H_of_avg" if c.dataset == AVERAGE and m == "H" else m,))
                 for m in metrics]  # fmt: skip
        where = c.dataset if c.dataset == c.source else f"{c.source} → {c.dataset}"
        rows.append([c.method, where, str(c.shots), str(len(c.seeds))]
                    + [x.ci_text() if x is not None else "" for x in found])  # fmt: skip
    note = (
        "mean ± half-width of the 95% Student-t interval over seeds (n − 1 degrees of freedom), "
        "the sample std beside it; an average row's interval is over the per-seed averages"
        + ("; H's interval is that of the per-seed H around the H of the means" if
           protocol == "base2new" else "") + "."
    )  # fmt: skip
    header = ["method", "data set", "shots", "seeds", *metrics]
    return [title, "", note, ""] + _table(header, rows)


def render_markdown(
    cells: Sequence[Cell],
    n_records: int | None = None,
    groups: dict[Group, SeedValues] | None = None,
    plots_dir: str | None = None,
    posthoc: str = "wilcoxon",
    recipe: Sequence[str] = (),
    published: Sequence[str] = (),
) -> str:
    """summary.md; with the per-seed `groups` also the intervals and the "Comparisons" part per
    protocol (`plots_dir`: where its CD diagrams are, None when no plots are written).
    `recipe` and `published`: the lines of the recipe (vlprompt.recipe) in the header and of the
    published numbers beside the sweep's (vlprompt.published) after the tables. The methods are
    listed in the order of their first cell (`latex.sort_by_method`)."""
    cells = list(cells)
    extra: dict[tuple[str, str], list[str]] = {}
    if groups is not None:
        prefixes = _plot_prefixes(cells)

        def cd_paths(block: comparisons.Block) -> list[str]:
            if plots_dir is None:
                return []
            stem = _cd_stem(block, prefixes.get(block.backbone, ""))
            return [f"{plots_dir}/{stem}.png", f"{plots_dir}/{stem}.pdf"]

        found = comparisons.analyses(groups, posthoc)
        extra = comparisons.comparisons_md(found, PROTOCOL_TITLES, cd_paths)
    out = ["# Benchmark summary", ""]
    source = f" from {n_records} evaluations in `{RESULTS_FILE}`" if n_records is not None else ""
    out += [
        f"Generated{source}. Accuracy (%) on the test split of the last epoch: mean ± sample "
        "standard deviation (ddof=1) over seeds; '-' where one seed only. Per-data-set H is the "
        "harmonic mean of the mean base and new accuracies; its ± is over per-seed H.",
        "",
    ]
    if groups is not None and cells:
        out += [
            "Each protocol ends with the 95% t intervals over seeds and a Comparisons part: paired "
            "tests between methods, average ranks over data sets and a test of the seed "
            "variances, each with the seeds and data sets behind it.",
            "",
        ]
    out += list(recipe)
    if not cells:
        out += ["No results yet.", ""]
    out += list(published)
    for backbone in sorted({c.backbone for c in cells}):
        for protocol in ("base2new", "fewshot", "xd", "dg"):
            mine = [c for c in cells if c.backbone == backbone and c.protocol == protocol]
            if not mine:
                continue
            if protocol == "base2new":
                out += _base2new_by_shots_md(mine, backbone)
                for shots in sorted({c.shots for c in mine}):
                    out += _base2new_md(mine, backbone, shots)
            elif protocol == "fewshot":
                out += _fewshot_md(mine, backbone)
            else:
                out += _transfer_md(mine, backbone, protocol)
            out += _spread_md(mine, backbone, protocol)
            if groups is not None:
                out += _ci_md(mine, backbone, protocol)
                out += extra.get((backbone, protocol)) or [
                    f"### Comparisons — {PROTOCOL_TITLES[protocol]} — {backbone}", "",
                    "Omitted: no number with per-seed values to compare.", "",
                ]  # fmt: skip
    return "\n".join(out).rstrip() + "\n"


def _plot_prefixes(cells: Sequence[Cell]) -> dict[str, str]:
    """The file-name prefix of each backbone's plots (none with one backbone)."""
    backbones = sorted({c.backbone for c in cells})
    return {b: _slug(b) if len(backbones) > 1 else "" for b in backbones}


# ----------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Any:
    """A figure on the Agg canvas, without pyplot (no global backend change, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: Path) -> Path:
    """PNG (or PDF, by the suffix) written atomically (vlprompt.run_folder.write_file; `plots/`
    is in a sweep folder)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png")
    return write_file(path.parent, path.name, buffer.getvalue(), owner=path.parent.parent)


def _slug(*parts: Any) -> str:
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "plot"


def _err(cell: Cell | None) -> float:
    return 0.0 if cell is None or math.isnan(cell.std) else cell.std


def _save_figures(fig: Any, path: Path) -> list[Path]:
    """The figure as `path` (PNG) and beside it as PDF (vector, for a paper)."""
    return [_save_figure(fig, path), _save_figure(fig, path.with_suffix(".pdf"))]


def _zero_shot(methods: Sequence[str]) -> str | None:
    """The zero-shot method of a plot, drawn as a reference line rather than as a method."""
    return next((m for m in ZERO_SHOT if m in methods), None)


def _fewshot_plots(cells: list[Cell], prefix: str, plots_dir: Path) -> list[Path]:
    """Accuracy against shots per method (± std over seeds), zero-shot CLIP as a dashed
    reference line with its value in the legend; the legend beside the axes."""
    paths = []
    for dataset in _ordered(c.dataset for c in cells):
        fig = _figure(6.2, 3.6)
        ax = fig.add_subplot()
        here = [c for c in cells if c.dataset == dataset]
        methods = _ordered(c.method for c in here)
        reference = _zero_shot(methods)
        for j, method in enumerate(m for m in methods if m != reference):
            line = sorted((c for c in here if c.method == method), key=lambda c: c.shots)
            color = f"C{j % 10}"
            ax.errorbar([c.shots for c in line], [c.mean for c in line],
                        yerr=[_err(c) for c in line], marker="o", capsize=3, color=color,
                        label=method)  # fmt: skip
        if reference is not None:
            level = float(np.mean([c.mean for c in here if c.method == reference]))
            ax.axhline(level, color="0.4", linestyle="--", linewidth=1,
                       label=f"zero-shot CLIP ({level:.1f})")  # fmt: skip
        shots = sorted({c.shots for c in here})
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%), bars: ± std over seeds")
        ax.set_title(
            f"few-shot: {dataset}" if dataset != AVERAGE else "few-shot: average over data sets"
        )
        ax.grid(alpha=0.3)
        fig.legend(loc="outside right upper", fontsize=8)
        paths += _save_figures(fig, plots_dir / f"{_slug(prefix, 'fewshot', dataset)}.png")
    return paths


B2N_MARKERS = (("base", "o", -0.22), ("new", "s", 0.0), ("H", "D", 0.22))


def _base2new_plot(cells: list[Cell], prefix: str, plots_dir: Path) -> list[Path]:
    """Base, new and H per method as dots with ± std over seeds (a dot plot, so that the axis
    can fit the numbers and a 2-point difference shows), H written beside its dot, zero-shot
    CLIP's H as a dashed reference line; the legend above the panels."""
    index = _index(cells)
    backbone, shots = cells[0].backbone, cells[0].shots
    methods = _ordered(c.method for c in cells)
    datasets = _ordered(c.dataset for c in cells if c.dataset != AVERAGE)
    panels = ([AVERAGE] if any(c.dataset == AVERAGE for c in cells) else []) + datasets
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = _figure(max(4.5, 4.0 * columns), 0.9 + (0.45 * len(methods) + 0.9) * rows)
    reference = _zero_shot(methods)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        y = np.arange(len(methods))[::-1].astype(float)
        for j, (metric, marker, offset) in enumerate(B2N_MARKERS):
            name = "H_of_avg" if panel == AVERAGE and metric == "H" else metric
            found = [index.get((backbone, "base2new", m, panel, panel, shots, name))
                     for m in methods]  # fmt: skip
            at = [(yy + offset, c) for yy, c in zip(y, found) if c is not None]
            if not at:
                continue
            ax.errorbar([c.mean for _, c in at], [yy for yy, _ in at],
                        xerr=[_err(c) for _, c in at], fmt=marker, color=f"C{j}", capsize=2,
                        markersize=4, label=metric if i == 0 else None)  # fmt: skip
            if metric == "H":
                for yy, c in at:
                    ax.annotate(f"{c.mean:.1f}", (c.mean + _err(c), yy), fontsize=7,
                                xytext=(3, 0), textcoords="offset points", va="center")  # fmt: skip
        if reference is not None:
            name = "H_of_avg" if panel == AVERAGE else "H"
            zs = index.get((backbone, "base2new", reference, panel, panel, shots, name))
            if zs is not None:
                ax.axvline(zs.mean, color="0.4", linestyle="--", linewidth=1,
                           label="zero-shot CLIP's H" if i == 0 else None)  # fmt: skip
        ax.set_yticks(y, methods, fontsize=8)
        ax.set_ylim(-0.6, len(methods) - 0.4)
        ax.margins(x=0.12)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title("average (H of avg)" if panel == AVERAGE else panel, fontsize=9)
        ax.set_xlabel("accuracy (%), ± std over seeds", fontsize=8)
    fig.legend(loc="outside upper center", ncols=4, fontsize=8)
    return _save_figures(fig, plots_dir / f"{_slug(prefix, 'base2new', f'shots{shots}')}.png")


BOX_MIN_SEEDS = 5  # a box plot behind the points from this many seeds on


def _base2new_shots_plots(cells: list[Cell], prefix: str, plots_dir: Path) -> list[Path]:
    """Base, new and H against shots per method, mean with a band of ± one std over seeds:
    per data set, and for the average over data sets (H of avg) when there are several."""
    datasets = _ordered(c.dataset for c in cells if c.dataset != AVERAGE)
    panels = datasets + ([AVERAGE] if len(datasets) > 1 else [])
    shots = sorted({c.shots for c in cells})
    index = _index(cells)
    backbone = cells[0].backbone
    paths = []
    for panel in panels:
        fig = _figure(11, 3.4)
        for i, metric in enumerate(("base", "new", "H")):
            ax = fig.add_subplot(1, 3, i + 1)
            name = "H_of_avg" if panel == AVERAGE and metric == "H" else metric
            for j, method in enumerate(_ordered(c.method for c in cells)):
                line = [index.get((backbone, "base2new", method, panel, panel, k, name))
                        for k in shots]  # fmt: skip
                points = [(k, c) for k, c in zip(shots, line) if c is not None]
                if not points:
                    continue
                x = np.array([k for k, _ in points], dtype=float)
                mean = np.array([c.mean for _, c in points])
                err = np.array([_err(c) for _, c in points])
                ax.plot(x, mean, marker="o", color=f"C{j % 10}", label=method)
                ax.fill_between(x, mean - err, mean + err, color=f"C{j % 10}", alpha=0.2)
            ax.set_xscale("log", base=2)
            ax.set_xticks(shots, [str(k) for k in shots])
            ax.set_xlabel("shots per class")
            ax.set_title(metric if name == metric else "H (of avg)", fontsize=9)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_ylabel("accuracy (%), band: ± std over seeds")
        title = "average over data sets" if panel == AVERAGE else panel
        fig.suptitle(f"base-to-new by shots: {title}", fontsize=10)
        fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside right upper",
                   fontsize=7)  # fmt: skip
        paths += _save_figures(fig, plots_dir / f"{_slug(prefix, 'base2new_by_shots', panel)}.png")
    return paths


def _spread_plot(
    groups: dict[Group, SeedValues],
    protocol: str,
    prefix: str,
    backbone: str,
    plots_dir: Path,
    order: Sequence[str] = (),
) -> list[Path]:
    """Per-seed values (points) and their mean (bar) per data set and method: base2new's H,
    few-shot accuracy at the largest shots, xd/dg accuracy per target."""
    series: dict[tuple[str, str], SeedValues] = {}
    mine = {g: v for g, v in groups.items() if g[0] == backbone and g[1] == protocol}
    if protocol == "base2new":
        for g, base in mine.items():
            new = mine.get(g[:5] + ("new", g[6]))
            if g[5] == "base" and new:
                label = g[4] if len({x[6] for x in mine}) == 1 else f"{g[4]} ({g[6]} shots)"
                series[(label, g[2])] = {
                    s: harmonic_mean(base[s], new[s]) for s in sorted(set(base) & set(new))
                }
        ylabel = "H per seed"
    elif protocol == "fewshot":
        top = max(g[6] for g in mine)
        for g, values in mine.items():
            if g[6] == top:
                series[(g[4], g[2])] = values
        ylabel = f"accuracy per seed, {top} shots"
    else:
        for g, values in mine.items():
            series[(g[4] if g[4] != g[3] else f"{g[4]} (source)", g[2])] = values
        ylabel = "accuracy per seed"
    if not series:
        return []
    labels = _ordered(k[0] for k in series)
    present = {k[1] for k in series}
    methods = [m for m in order if m in present] + sorted(present - set(order))
    fig = _figure(max(4.5, 1.1 * len(labels) * max(1, len(methods)) ** 0.5 + 2), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    colors = [f"C{i % 10}" for i in range(len(methods))]
    for j, method in enumerate(methods):
        for i, label in enumerate(labels):
            values = series.get((label, method))
            if not values:
                continue
            x = i + (j - (len(methods) - 1) / 2) * width
            points = [values[s] for s in sorted(values)]
            if len(points) >= BOX_MIN_SEEDS:
                ax.boxplot([points], positions=[x], widths=width * 0.8, showfliers=False,
                           medianprops={"color": colors[j]}, boxprops={"color": colors[j]},
                           whiskerprops={"color": colors[j]}, capprops={"color": colors[j]},
                           manage_ticks=False)  # fmt: skip
            jitter = np.linspace(-0.25, 0.25, len(points)) * width if len(points) > 1 else [0.0]
            ax.scatter(x + np.asarray(jitter), points, s=14, color=colors[j], zorder=3)
            ax.hlines(np.mean(points), x - width / 2.5, x + width / 2.5, color=colors[j])
        ax.scatter([], [], color=colors[j], label=method)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    boxes = max(len(v) for v in series.values()) >= BOX_MIN_SEEDS
    what = "points: seeds, line: mean" + (", box: quartiles and whiskers" if boxes else "")
    ax.set_title(f"{protocol}: per-seed spread ({what})", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=7)
    return _save_figures(fig, plots_dir / f"{_slug(prefix, 'seeds', protocol)}.png")


def write_plots(
    cells: Sequence[Cell],
    groups: dict[Group, SeedValues],
    plots_dir: str | Path,
    posthoc: str = "wilcoxon",
) -> list[Path]:
    """few-shot curves per data set, base/new/H bars per method (and against shots with bands
    when a base2new sweep has several), per-seed spread per protocol (box plots from
    BOX_MIN_SEEDS seeds), a critical-difference diagram (PNG and PDF) per comparison of three
    methods or more over two data sets or more."""
    plots_dir = Path(plots_dir)
    cells = list(cells)
    prefixes = _plot_prefixes(cells)
    paths: list[Path] = []
    for backbone, prefix in prefixes.items():
        mine = [c for c in cells if c.backbone == backbone]
        fewshot = [c for c in mine if c.protocol == "fewshot"]
        if fewshot:
            paths += _fewshot_plots(fewshot, prefix, plots_dir)
        base2new = [c for c in mine if c.protocol == "base2new"]
        if len({c.shots for c in base2new}) > 1:
            paths += _base2new_shots_plots(base2new, prefix, plots_dir)
        for shots in sorted({c.shots for c in base2new}):
            paths += _base2new_plot([c for c in base2new if c.shots == shots], prefix, plots_dir)
        order = _ordered(c.method for c in mine)
        for protocol in ("base2new", "fewshot", "xd", "dg"):
            if any(c.protocol == protocol for c in mine):
                paths += _spread_plot(groups, protocol, prefix, backbone, plots_dir, order)
    for analysis in comparisons.analyses(groups, posthoc):
        if analysis.can_draw_cd:
            stem = _cd_stem(analysis.block, prefixes.get(analysis.block.backbone, ""))
            fig = cd_diagram(analysis.ranks.average_ranks, analysis.groups, analysis.cd_title(),
                             analysis.cd)  # fmt: skip
            paths += [_save_figure(fig, plots_dir / f"{stem}{ext}") for ext in (".png", ".pdf")]
    return paths


def _cd_stem(block: comparisons.Block, prefix: str) -> str:
    """The file name (without suffix) of a comparison block's critical-difference diagram."""
    return _slug(prefix, "cd", block.protocol, block.source, f"shots{block.shots}")


def write_summary(
    output_dir: str | Path,
    results: str | Path | None = None,
    plots: bool = True,
    posthoc: str = "wilcoxon",
    methods_order: Sequence[str] = (),
    published: bool = False,
) -> SummaryFiles:
    """Read `<output_dir>/results.jsonl` (or `results`) and write summary.md, summary.csv,
    summary.tex and plots/ (PNG and PDF) into `output_dir`, each atomically.
    `posthoc`: the CD diagram's post-hoc test, "wilcoxon" (with Holm) or "nemenyi";
    `methods_order`: these methods first, in this order, in every table and plot (then zero-shot
    CLIP, then by name); `published`: a part with the published numbers beside the sweep's
    (vlprompt.published), or a line saying that none applies. summary.md's header holds the
    sweep's recipe, read from its runs' config.json files (vlprompt.recipe)."""
    if posthoc not in comparisons.POSTHOCS:
        raise ReportError(
            f"posthoc={posthoc!r}: expected one of {', '.join(comparisons.POSTHOCS)} (the "
            "critical-difference diagram's post-hoc test)"
        )
    output_dir = Path(output_dir)
    records = load_results(results or output_dir / RESULTS_FILE)
    cells = summarize(records)
    _check_order(methods_order, cells)
    cells = sort_by_method(cells, methods_order)
    groups = per_seed(records)
    files = SummaryFiles(output_dir / SUMMARY_MD, output_dir / SUMMARY_CSV, cells=cells,
                         tex=output_dir / SUMMARY_TEX)  # fmt: skip
    write_file(output_dir, SUMMARY_CSV, render_csv(cells))
    methods = _ordered(c.method for c in cells)
    markdown = render_markdown(
        cells, len(records), groups, PLOTS_DIR if plots else None, posthoc,
        recipe=recipe_md(output_dir, methods),
        published=comparison_md(cells) if published else (),
    )  # fmt: skip
    write_file(output_dir, SUMMARY_MD, markdown)
    write_file(output_dir, SUMMARY_TEX, render_latex(cells, PROTOCOL_TITLES, AVERAGE, methods))
    if plots:
        files.plots = write_plots(cells, groups, sweep_plots_dir(output_dir), posthoc)
    return files


def _check_order(methods_order: Sequence[str], cells: Sequence[Cell]) -> None:
    """A method named in `methods_order` that the sweep does not hold is one clear error."""
    known = _ordered(c.method for c in cells)
    unknown = [m for m in methods_order if m not in known]
    if unknown:
        raise ReportError(
            f"methods order: {', '.join(unknown)} not in the sweep's results (its methods: "
            f"{', '.join(sorted(known)) or 'none'}); name only those"
        )
