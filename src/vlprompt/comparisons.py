"""The "Comparisons" part of a sweep summary: which method is better, by how much, and how sure.

A block is one protocol's headline metric for one backbone and shots value (and one source for
xd/dg): H per (data set, seed) for base2new (the per-seed H of base and new), accuracy otherwise;
xd and dg compare on the targets only. For each block: the pairwise signed-rank tests with Holm's
correction, the average ranks with Friedman's test and a critical-difference diagram, and the
Brown-Forsythe test of the seed variances (vlprompt.statistics has the methods and their
sources). Each part states the seeds and data sets behind it, or why it is omitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vlprompt import statistics as st
from vlprompt.statistics import harmonic_mean

HEADLINE = {"base2new": "H", "fewshot": "accuracy", "xd": "accuracy", "dg": "accuracy"}
POSTHOCS = ("wilcoxon", "nemenyi")


@dataclass
class Block:
    """The per-seed headline values of the methods compared together."""

    backbone: str
    protocol: str
    source: str  # the training data set for xd/dg, "" otherwise
    shots: int
    cells: dict[str, dict[tuple[str, int], float]] = field(default_factory=dict)
    means: dict[str, dict[str, float]] = field(default_factory=dict)  # the tables' numbers

    @property
    def metric(self) -> str:
        return HEADLINE[self.protocol]

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(d for c in self.cells.values() for d, _ in c))

    @property
    def seeds(self) -> list[int]:
        return sorted({s for c in self.cells.values() for _, s in c})

    @property
    def max_seeds(self) -> int:
        """The most seeds any (method, data set) has."""
        counts: dict[tuple[str, str], int] = {}
        for method, cells in self.cells.items():
            for d, _ in cells:
                counts[(method, d)] = counts.get((method, d), 0) + 1
        return max(counts.values(), default=0)


def blocks(groups: dict[tuple, dict[int, float]]) -> list[Block]:
    """Comparison blocks from `report.per_seed` groups, in a stable order."""
    found: dict[tuple, Block] = {}
    for (backbone, protocol, method, source, dataset, sub, shots), values in groups.items():
        if protocol == "base2new":
            new = groups.get((backbone, protocol, method, source, dataset, "new", shots))
            if sub != "base" or dataset != source or new is None:
                continue
            seeds = sorted(set(values) & set(new))
            per_seed = {s: harmonic_mean(values[s], new[s]) for s in seeds}
            mean = harmonic_mean(float(np.mean(list(values.values()))),
                                 float(np.mean(list(new.values()))))  # fmt: skip
            key = (backbone, protocol, "", shots)
        elif protocol in ("fewshot", "xd", "dg"):
            if protocol != "fewshot" and dataset == source:
                continue  # transfer is judged on the targets
            per_seed, mean = dict(values), float(np.mean(list(values.values())))
            key = (backbone, protocol, source if protocol != "fewshot" else "", shots)
        else:
            continue
        if not per_seed:
            continue
        block = found.setdefault(key, Block(*key))
        block.cells.setdefault(method, {}).update({(dataset, s): v for s, v in per_seed.items()})
        block.means.setdefault(method, {})[dataset] = mean
    order = {p: i for i, p in enumerate(HEADLINE)}
    return [found[k] for k in sorted(found, key=lambda k: (k[0], order[k[1]], k[2], k[3]))]


@dataclass
class Analysis:
    block: Block
    pairs: list[st.PairComparison]
    ranks: st.RankTest
    groups: list[tuple[str, ...]]  # CD bars
    cd: float | None  # Nemenyi's critical difference when that is the post-hoc
    spreads: list[st.SpreadTest]
    spread_rows: list[st.Spread]
    posthoc: str
    alpha: float

    @property
    def can_draw_cd(self) -> bool:
        return len(self.block.cells) >= 3 and self.ranks.n_datasets >= 2

    def cd_title(self) -> str:
        n = self.ranks.n_datasets
        if self.posthoc == "nemenyi":
            how = f"Nemenyi, CD = {self.cd:.2f}"
        else:
            how = "Wilcoxon signed-rank over (data set, seed) pairs, Holm"
        b = self.block
        where = f"{b.protocol}" + (f" from {b.source}" if b.source else "") + f", {b.shots} shots"
        return (f"{where}: average rank of {b.metric} over {n} data sets (1 = best), "
                f"{len(b.seeds)} seeds\nbars join methods not distinguishable at alpha = {self.alpha:g}"
                f"\npost-hoc: {how}; Friedman {st.format_p(self.ranks.p_value)}")  # fmt: skip


def analyse(block: Block, alpha: float = st.ALPHA, posthoc: str = "wilcoxon") -> Analysis:
    if posthoc not in POSTHOCS:
        raise ValueError(f"posthoc must be one of {', '.join(POSTHOCS)}, not {posthoc!r}")
    pairs = st.compare_methods(block.cells, block.metric, alpha)
    ranks = st.friedman(block.means)
    cd = None
    groups: list[tuple[str, ...]] = []
    if len(block.cells) >= 3 and ranks.n_datasets >= 2:
        if posthoc == "nemenyi":
            cd = st.nemenyi_cd(len(block.cells), ranks.n_datasets, alpha)
            groups = st.nemenyi_groups(ranks.average_ranks, ranks.n_datasets, alpha)
        else:
            groups = st.wilcoxon_holm_groups(ranks.average_ranks, pairs)
    enough = block.max_seeds >= st.SPREAD_MIN_SEEDS
    spreads = st.compare_spreads(block.cells, alpha) if enough else []
    rows = st.spread_table(block.cells) if enough else []
    return Analysis(block, pairs, ranks, groups, cd, spreads, rows, posthoc, alpha)


# ----------------------------------------------------------------------------- markdown


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table and a blank line (the layout of report.py's tables)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _f(value: float, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return st.format_p(value).removeprefix("p = ").removeprefix("p ")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def block_md(a: Analysis, titles: dict[str, str], cd_paths: Sequence[str] = ()) -> list[str]:
    b = a.block
    where = f"{titles[b.protocol]} — {b.backbone}" + (f", source {b.source}" if b.source else "")
    seeds = ", ".join(map(str, b.seeds))
    n_data = len(b.datasets)
    out = [f"### Comparisons — {where}, {_shots(b.shots)}", ""]
    out += [
        f"Headline metric: {b.metric} per (data set, seed) cell"
        + (" (targets only)" if b.source else "")
        + f"; {_plural(len(b.cells), 'method')}, {_plural(n_data, 'data set')}, "
        f"{_plural(len(b.seeds), 'seed')} ({seeds}), alpha = {a.alpha:g}. With few seeds and "
        'data sets these tests have little power: "not distinguishable" is not "equal".',
        "",
    ]
    out += _pairs_md(a) + _ranks_md(a, cd_paths) + _spread_md(a)
    return out


def _shots(k: int) -> str:
    return f"{k} shot{'s' if k != 1 else ''}"


def _pairs_md(a: Analysis) -> list[str]:
    out = ["#### Pairwise tests", ""]
    if len(a.block.cells) < 2:
        return out + ["Omitted: one method only, nothing to pair.", ""]
    out += [
        "Wilcoxon signed-rank test (two-sided, exact) on the differences over the (data set, "
        f"seed) cells both methods have; p Holm-corrected over the {_plural(len(a.pairs), 'pair')}"
        " of methods; r: matched-pairs rank-biserial correlation; difference in points. The test "
        "cannot reach alpha = 0.05 on fewer than 6 non-tied pairs and then says so.",
        "",
    ]
    rows = [
        [f"{p.first} − {p.second}", str(p.n_pairs), _f(p.mean_difference), _f(p.rank_biserial),
         _p(p.p_value), _p(p.p_holm), p.verdict()]
        for p in a.pairs
    ]  # fmt: skip
    return out + _table(["pair", "pairs", "difference", "r", "p", "p (Holm)", "verdict"], rows)


def _ranks_md(a: Analysis, cd_paths: Sequence[str]) -> list[str]:
    b, r = a.block, a.ranks
    out = ["#### Average ranks over data sets (Friedman)", ""]
    if len(b.cells) < 2:
        return out + ["Omitted: one method only, nothing to rank.", ""]
    if r.n_datasets < 2:
        return out + [
            f"Omitted: {_plural(r.n_datasets, 'data set')} every method has; ranks over data "
            "sets need at least 2.",
            "",
        ]
    shared = st.shared_datasets(b.means)
    if math.isnan(r.p_value):
        test = f"Friedman test omitted: {r.note}."
    else:
        test = (f"Friedman χ² = {r.statistic:.2f}, {st.format_p(r.p_value)}; Iman–Davenport "
                f"F = {r.iman_davenport_f:.2f}, {st.format_p(r.iman_davenport_p)}.")  # fmt: skip
    out += [
        f"Rank of each method's mean {b.metric} per data set (1 = best, ties share the average "
        f"rank) over the {_plural(r.n_datasets, 'data set')} every method has, means over "
        f"{_plural(b.max_seeds, 'seed')}. {test}",
        "",
    ]
    order = sorted(r.average_ranks, key=lambda m: (r.average_ranks[m], m))
    rows = []
    for m in order:
        wins = sum(b.means[m][d] >= max(b.means[x][d] for x in b.means) for d in shared)
        rows.append([m, f"{r.average_ranks[m]:.2f}", str(wins),
                     _f(float(np.mean([b.means[m][d] for d in shared])))])  # fmt: skip
    out += _table(["method", "average rank", "data sets best", f"mean {b.metric}"], rows)
    if not a.can_draw_cd:
        out += [
            f"Critical-difference diagram omitted: {_plural(len(b.cells), 'method')} (it needs "
            "at least 3; the pairwise test compares two).",
            "",
        ]
    else:
        if a.posthoc == "nemenyi":
            how = f"Nemenyi's critical difference, CD = {a.cd:.2f}"
        else:
            how = "pairwise Wilcoxon/Holm"
        links = ", ".join(f"`{p}`" for p in cd_paths) or "not drawn (summary written without plots)"
        bars = "; ".join(" = ".join(g) for g in a.groups) or "none (every pair distinguishable)"
        out += [
            f"Critical-difference diagram (post-hoc: {how}): {links}. Methods joined by a bar, "
            f"not distinguishable at alpha = {a.alpha:g}: {bars}.",
            "",
        ]
    return out


def _spread_md(a: Analysis) -> list[str]:
    out = ["#### Seed variance (Brown–Forsythe)", ""]
    n = a.block.max_seeds
    if n < 2:
        return out + ["Omitted: one seed per data set, so no seed variance to compare.", ""]
    if n < st.SPREAD_MIN_SEEDS:
        return out + [
            f"Omitted: {n} seeds per data set; the test needs {st.SPREAD_MIN_SEEDS} (with 2 seeds "
            "both deviations from the median are equal).",
            "",
        ]
    out += [
        f"Per method: seed std within each data set pooled over the data sets with at least "
        f"{st.SPREAD_MIN_SEEDS} seeds, the mean absolute deviation from each data set's median, the largest "
        "max − min of one data set.",
        "",
    ]
    rows = [[s.method, str(s.n_datasets), str(s.n_cells), _f(s.pooled_std),
             _f(s.mean_abs_deviation), _f(s.max_range)] for s in a.spread_rows]  # fmt: skip
    out += _table(
        ["method", "data sets", "cells", "pooled std", "mean abs. deviation", "max range"], rows
    )
    if len(a.block.cells) < 2:
        return out + ["Variance test omitted: one method only.", ""]
    out += [
        "Brown–Forsythe test (Levene's with the median) of equal seed variances per pair: "
        "absolute deviations from each data set's median over the data sets both have, "
        f"two-sided, Holm-corrected over the {_plural(len(a.spreads), 'pair')}.",
        "",
    ]
    rows = [[f"{t.first} − {t.second}", str(t.n_datasets), f"{t.n_first} / {t.n_second}",
             _f(t.variance_ratio), _p(t.p_value), _p(t.p_holm), st.spread_verdict(t, a.alpha)]
            for t in a.spreads]  # fmt: skip
    header = ["pair", "data sets", "cells", "variance ratio", "p", "p (Holm)", "verdict"]
    return out + _table(header, rows)


def analyses(groups: dict[tuple, dict[int, float]], posthoc: str = "wilcoxon") -> list[Analysis]:
    return [analyse(b, posthoc=posthoc) for b in blocks(groups)]


def comparisons_md(
    found: Sequence[Analysis], titles: dict[str, str], cd_paths: Callable[[Block], list[str]]
) -> dict[tuple[str, str], list[str]]:
    """Markdown per (backbone, protocol); `cd_paths(block)`: where its CD diagram is written
    (empty: not written)."""
    out: dict[tuple[str, str], list[str]] = {}
    for a in found:
        b = a.block
        paths = cd_paths(b) if a.can_draw_cd else []
        out.setdefault((b.backbone, b.protocol), []).extend(block_md(a, titles, paths))
    return out
