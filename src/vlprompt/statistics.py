"""Statistics for comparing methods over data sets and seeds: intervals, paired tests, ranks, spread.

Pure functions on plain numbers (sequences, and dicts keyed by method, data set and seed); no
knowledge of results files. Seeds draw different shots, so a method's seed spread is part of its
result, and with 3 seeds on few data sets the tests below have little power: a non-significant
result reads "not distinguishable", never "equal".

- `t_interval`, `seed_intervals`: Student's t interval over seeds (n - 1 degrees of freedom).
- `signed_rank_test`, `compare_methods`: Wilcoxon's signed-rank test (Wilcoxon 1945) on paired
  differences, exact at every n (the null distribution is enumerated over the 2^n sign flips
  with a dynamic programme, conditional on the mid-ranks, so ties keep an exact p), Holm's
  step-down correction across pairs of methods (Holm 1979), the matched-pairs rank-biserial
  correlation as effect size (Kerby 2014).
- `friedman`, `average_ranks`: the Friedman test over per-data-set means with the Iman-Davenport
  F beside it, average ranks (1 = best, ties share the average rank); Demšar (JMLR 2006).
- `cd_groups`, `nemenyi_cd`, `cd_diagram`: the critical-difference diagram (Demšar 2006). The
  default post-hoc is pairwise Wilcoxon with Holm, which Benavoli, Corani & Mangili (JMLR 2016)
  recommend over the Nemenyi test (whose outcome for two methods depends on the others compared);
  Nemenyi's critical difference is the option.
- `brown_forsythe`, `spread_table`: equal seed variances by the Brown-Forsythe test (Brown &
  Forsythe 1974: Levene's test with the median as centre), per data set the deviations from that
  data set's median, pooled.

scipy alone rather than autorank or scikit-posthocs: scipy is already installed (a dependency of
scikit-learn) and gives every distribution needed; autorank picks its tests by normality checks
(and Nemenyi for the ranks), scikit-posthocs has no Holm-over-Wilcoxon CD diagram and needs
pandas; neither tests paired (data set, seed) cells.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

ALPHA = 0.05
SPREAD_MIN_SEEDS = 3  # with 2 seeds both deviations from the median are equal: nothing to test
EXACT_MAX_PAIRS = 400  # the exact signed-rank distribution up to this many pairs, normal beyond

Cells = Mapping[Hashable, float]  # (data set, seed) -> value


def harmonic_mean(base: float, new: float) -> float:
    """H = 2BN/(B+N); 0 when both are 0."""
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)


# ----------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """Mean with a t interval over n values; `half_width` is nan (and `note` says why) for n=1."""

    mean: float
    std: float
    n: int
    half_width: float
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def note(self) -> str:
        return "" if self.n > 1 else "one seed: no interval"


def t_half_width(std: float, n: int, confidence: float = 0.95) -> float:
    """Half-width of the t interval t_{(1+c)/2, n-1} · s / sqrt(n); nan when n < 2."""
    if n < 2 or math.isnan(std):
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student's t interval for the mean of `values` (seeds), sample std (ddof=1)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("t_interval needs at least one value")
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Interval(float(array.mean()), std, int(array.size),
                    t_half_width(std, int(array.size), confidence), confidence)  # fmt: skip


def seed_intervals(
    cells: Mapping[str, Cells], confidence: float = 0.95
) -> dict[tuple[str, Hashable], Interval]:
    """Per (method, data set): mean, std and t interval over its seeds (cells keyed (data set,
    seed))."""
    out = {}
    for method in sorted(cells):
        by_data: dict[Hashable, list[float]] = {}
        for (dataset, _seed), value in sorted(cells[method].items(), key=lambda kv: repr(kv[0])):
            by_data.setdefault(dataset, []).append(value)
        for dataset, values in by_data.items():
            out[(method, dataset)] = t_interval(values, confidence)
    return out


# ----------------------------------------------------------------------------- paired tests


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): the i-th smallest p times (m - i + 1),
    made monotone and capped at 1; reject where adjusted p <= alpha."""
    m = len(p_values)
    adjusted = [math.nan] * m
    running = 0.0
    for i, index in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - i) * p_values[index]))
        adjusted[index] = running
    return adjusted


def min_attainable_p(n: int) -> float:
    """The smallest two-sided p of the signed-rank test on n non-zero differences: 2 / 2^n (every
    sign the same), so n >= 6 is needed for p < 0.05."""
    return min(1.0, 2.0 ** (1 - n)) if n > 0 else 1.0


@dataclass(frozen=True)
class SignedRank:
    """Wilcoxon's signed-rank test on paired differences (zeros dropped)."""

    n: int  # non-zero differences
    zeros: int
    statistic: float  # T+: sum of the ranks of the positive differences
    p_value: float  # two-sided
    rank_biserial: float  # (T+ - T-) / (T+ + T-), in [-1, 1]; nan without non-zero differences
    exact: bool


def _midranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, method="average")


def signed_rank_test(differences: Sequence[float]) -> SignedRank:
    """Two-sided Wilcoxon signed-rank test (Wilcoxon 1945), zeros dropped (his convention,
    scipy's zero_method="wilcox"). Exact up to EXACT_MAX_PAIRS: the null distribution of T+ given
    the mid-ranks, by convolving each rank's two signs (so ties stay exact, unlike scipy's exact
    mode); p = 2 · min(P(T+ <= t), P(T+ >= t)), capped at 1. Effect size: the matched-pairs
    rank-biserial correlation (Kerby 2014)."""
    d = np.asarray(differences, dtype=float)
    nonzero = d[d != 0]
    n = int(nonzero.size)
    zeros = int(d.size - n)
    if n == 0:
        return SignedRank(0, zeros, 0.0, 1.0, math.nan, True)
    ranks = _midranks(np.abs(nonzero))
    t_plus = float(ranks[nonzero > 0].sum())
    total = float(ranks.sum())
    effect = (2 * t_plus - total) / total
    if n > EXACT_MAX_PAIRS:
        from scipy import stats

        p = float(stats.wilcoxon(nonzero, method="approx", correction=True).pvalue)
        return SignedRank(n, zeros, t_plus, p, effect, False)
    doubled = np.rint(2 * ranks).astype(int)  # mid-ranks are multiples of 1/2
    dist = np.zeros(int(doubled.sum()) + 1)
    dist[0] = 1.0
    for r in doubled:  # each rank joins T+ with probability 1/2
        shifted = np.zeros_like(dist)
        shifted[r:] = dist[:-r]
        dist = 0.5 * (dist + shifted)
    w = int(round(2 * t_plus))
    lower = float(dist[: w + 1].sum())
    upper = float(dist[w:].sum())
    return SignedRank(n, zeros, t_plus, min(1.0, 2 * min(lower, upper)), effect, True)


@dataclass(frozen=True)
class PairComparison:
    """One pair of methods on their shared cells; `first` is the one with the higher mean (or
    the first by name at a tie), so `mean_difference` >= 0."""

    first: str
    second: str
    metric: str
    n_pairs: int  # shared cells
    n_nonzero: int  # pairs with a difference (the test's n)
    mean_difference: float  # first - second, points
    wins: int  # pairs where first > second
    rank_biserial: float
    p_value: float  # raw two-sided
    p_holm: float
    alpha: float

    @property
    def testable(self) -> bool:
        """Whether the test can reach alpha at all on this many non-zero differences."""
        return min_attainable_p(self.n_nonzero) <= self.alpha

    @property
    def significant(self) -> bool:
        return self.testable and self.p_holm <= self.alpha

    def verdict(self) -> str:
        """One plain sentence: which is better and by how much, or why no call is made."""
        if self.n_pairs == 0:
            return f"{self.first} vs {self.second} on {self.metric}: no shared cells to pair"
        if not self.testable:
            return (f"{self.first} vs {self.second} on {self.metric}: too few pairs "
                    f"(n={self.n_nonzero}) for the test to reach alpha = {self.alpha:g}")  # fmt: skip
        if self.significant:
            return (f"{self.first} > {self.second} on {self.metric}: "
                    f"+{self.mean_difference:.1f} points, {format_p(self.p_holm)} (Holm), "
                    f"{self.wins} of {self.n_pairs} pairs")  # fmt: skip
        return (f"{self.first} vs {self.second} on {self.metric}: not distinguishable at alpha = "
                f"{self.alpha:g} ({format_p(self.p_holm)} (Holm), {self.n_pairs} pairs)")  # fmt: skip


def format_p(p: float) -> str:
    if math.isnan(p):
        return "p = -"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def compare_methods(
    cells: Mapping[str, Cells], metric: str = "H", alpha: float = ALPHA
) -> list[PairComparison]:
    """Every pair of methods: signed-rank test over the cells (e.g. (data set, seed)) both have,
    Holm-corrected across all pairs that share a cell. Methods in sorted order, pairs in
    itertools.combinations order."""
    raw = []
    for a, b in itertools.combinations(sorted(cells), 2):
        shared = sorted(set(cells[a]) & set(cells[b]), key=repr)
        diff = np.array([cells[a][k] - cells[b][k] for k in shared], dtype=float)
        if diff.size and diff.mean() < 0:
            a, b, diff = b, a, -diff
        test = signed_rank_test(diff)
        raw.append((a, b, diff, test))
    tested = [i for i, r in enumerate(raw) if r[2].size]
    adjusted = dict(zip(tested, holm([raw[i][3].p_value for i in tested])))
    return [
        PairComparison(
            a,
            b,
            metric,
            int(diff.size),
            test.n,
            float(diff.mean()) if diff.size else math.nan,
            int((diff > 0).sum()),
            test.rank_biserial,
            test.p_value if diff.size else math.nan,
            adjusted.get(i, math.nan),
            alpha,
        )
        for i, (a, b, diff, test) in enumerate(raw)
    ]


# ----------------------------------------------------------------------------- ranks


def average_ranks(table: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Average rank of each method over the data sets every method has (higher value = rank 1;
    tied values share the average of their ranks)."""
    methods = sorted(table)
    datasets = shared_datasets(table)
    if not methods or not datasets:
        return {}
    values = np.array([[table[m][d] for m in methods] for d in datasets], dtype=float)
    ranks = np.array([_midranks(-row) for row in values])
    return {m: float(r) for m, r in zip(methods, ranks.mean(axis=0))}


def shared_datasets(table: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The data sets every method of `table` has, in the first method's order."""
    if not table:
        return []
    first = next(iter(table.values()))
    return [d for d in first if all(d in row for row in table.values())]


@dataclass(frozen=True)
class RankTest:
    """Friedman's test over data sets; statistic and p are nan with fewer than 3 methods or 2
    data sets (`note` says why)."""

    average_ranks: dict[str, float]
    n_datasets: int
    statistic: float  # Friedman chi-square (tie-corrected)
    p_value: float
    iman_davenport_f: float
    iman_davenport_p: float
    note: str = ""


def friedman(table: Mapping[str, Mapping[str, float]]) -> RankTest:
    """Friedman's test (Friedman 1937) that all methods rank alike over the data sets they share,
    with Iman and Davenport's (1980) less conservative F = (N-1)χ² / (N(k-1) - χ²) on (k-1,
    (k-1)(N-1)) degrees of freedom, as Demšar (2006) recommends."""
    ranks = average_ranks(table)
    k, datasets = len(table), shared_datasets(table)
    n = len(datasets)
    nan = math.nan
    if k < 3:
        return RankTest(
            ranks,
            n,
            nan,
            nan,
            nan,
            nan,
            f"{k} method{'s' if k != 1 else ''}: the "
            "Friedman test needs at least 3 (two are compared by the pairwise test)",
        )
    if n < 2:
        return RankTest(
            ranks,
            n,
            nan,
            nan,
            nan,
            nan,
            f"{n} shared data set{'s' if n != 1 else ''}: ranks need at least 2",
        )
    from scipy import stats

    columns = [[table[m][d] for d in datasets] for m in sorted(table)]
    if all(len(set(row)) == 1 for row in zip(*columns)):
        return RankTest(ranks, n, 0.0, 1.0, 0.0, 1.0, "every data set ties all methods")
    chi2, p = stats.friedmanchisquare(*columns)
    denominator = n * (k - 1) - chi2
    if denominator <= 0:  # every data set ranks the methods the same
        f_value, f_p = math.inf, 0.0
    else:
        f_value = (n - 1) * chi2 / denominator
        f_p = float(stats.f.sf(f_value, k - 1, (k - 1) * (n - 1)))
    return RankTest(ranks, n, float(chi2), float(p), float(f_value), f_p)


def nemenyi_cd(k: int, n_datasets: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of average ranks: q_alpha · sqrt(k(k+1) / (6N)), q_alpha the
    studentized range quantile over sqrt(2) (Demšar 2006, Table 5: 2.343 for k=3 at 0.05)."""
    from scipy import stats

    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n_datasets)))


def cd_groups(
    ranks: Mapping[str, float], different: Callable[[str, str], bool]
) -> list[tuple[str, ...]]:
    """The bars of a CD diagram: maximal runs of methods, consecutive in rank order, no two of
    which `different` separates (at least two methods each)."""
    order = sorted(ranks, key=lambda m: (ranks[m], m))
    runs = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and not any(different(order[x], order[j + 1])
                                             for x in range(i, j + 1)):  # fmt: skip
            j += 1
        if j > i:
            runs.append((i, j))
    maximal = [r for r in runs if not any(o != r and o[0] <= r[0] and r[1] <= o[1] for o in runs)]
    return [tuple(order[i : j + 1]) for i, j in maximal]


def wilcoxon_holm_groups(
    ranks: Mapping[str, float], pairs: Sequence[PairComparison]
) -> list[tuple[str, ...]]:
    """CD bars from pairwise Wilcoxon/Holm results: two methods are apart when their pair is
    significant."""
    apart = {frozenset((p.first, p.second)) for p in pairs if p.significant}
    return cd_groups(ranks, lambda a, b: frozenset((a, b)) in apart)


def nemenyi_groups(
    ranks: Mapping[str, float], n_datasets: int, alpha: float = ALPHA
) -> list[tuple[str, ...]]:
    cd = nemenyi_cd(len(ranks), n_datasets, alpha)
    return cd_groups(ranks, lambda a, b: abs(ranks[a] - ranks[b]) >= cd)


def cd_diagram(
    ranks: Mapping[str, float],
    groups: Sequence[Sequence[str]],
    title: str,
    cd: float | None = None,
) -> Any:
    """Demšar's critical-difference diagram as a matplotlib Figure (Agg canvas, no pyplot): the
    rank axis (1 = best, on the left), each method's average rank, a thick bar under every group
    not significantly different, and the CD interval when `cd` is given (Nemenyi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = sorted(ranks, key=lambda m: (ranks[m], m))
    k = len(order)
    left, right = order[: (k + 1) // 2], order[(k + 1) // 2 :]
    rows = max(len(left), len(right))
    step, bar_step = 0.3, 0.12
    first_line = 0.25 + bar_step * len(groups)
    bottom = first_line + step * rows
    lines = title.count("\n") + 1
    height = 1.0 + 0.18 * lines + 0.4 * rows + 0.15 * len(groups)
    fig = Figure(figsize=(7.5, height), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.25, 0.03, 0.5, 1 - 0.03 - (0.2 + 0.17 * lines) / height))
    ax.set_axis_off()
    high = max(k, math.ceil(max(ranks.values())))
    ax.set_xlim(1, high)
    ax.set_ylim(-bottom - 0.05, 0.6 if cd is not None else 0.35)
    ax.hlines(0, 1, high, color="black", linewidth=1)
    for r in range(1, high + 1):
        ax.vlines(r, 0, 0.07, color="black", linewidth=1)
        ax.text(r, 0.1, str(r), ha="center", va="bottom", fontsize=9)
    if cd is not None:
        ax.hlines(0.45, 1, 1 + cd, color="black", linewidth=1.5)
        ax.vlines([1, 1 + cd], 0.41, 0.49, color="black", linewidth=1)
        ax.text(1 + cd / 2, 0.5, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    for i, method in enumerate(left):
        y = -(first_line + step * i)
        ax.plot([ranks[method], ranks[method], 1 - 0.05 * high], [0, y, y], color="black",
                linewidth=0.8, clip_on=False)  # fmt: skip
        ax.text(1 - 0.06 * high, y, f"{method} ({ranks[method]:.2f})", ha="right", va="center",
                fontsize=9, clip_on=False)  # fmt: skip
    for i, method in enumerate(reversed(right)):
        y = -(first_line + step * i)
        ax.plot([ranks[method], ranks[method], high + 0.05 * high], [0, y, y], color="black",
                linewidth=0.8, clip_on=False)  # fmt: skip
        ax.text(high + 0.06 * high, y, f"({ranks[method]:.2f}) {method}", ha="left", va="center",
                fontsize=9, clip_on=False)  # fmt: skip
    for i, group in enumerate(groups):
        y = -(0.15 + bar_step * i)
        low_rank, high_rank = min(ranks[m] for m in group), max(ranks[m] for m in group)
        ax.hlines(y, low_rank - 0.08, high_rank + 0.08, color="black", linewidth=4)
    fig.suptitle(title, fontsize=8)
    return fig


# ----------------------------------------------------------------------------- spread


def median_deviations(cells: Cells) -> dict[Hashable, list[float]]:
    """Per data set, each seed's value minus that data set's median (cells keyed (data set,
    seed))."""
    by_data: dict[Hashable, list[float]] = {}
    for (dataset, _seed), value in sorted(cells.items(), key=lambda kv: repr(kv[0])):
        by_data.setdefault(dataset, []).append(value)
    return {d: list(np.asarray(v) - np.median(v)) for d, v in by_data.items()}


def pooled_std(cells: Cells) -> tuple[float, int]:
    """Within-data-set seed std pooled over data sets (sqrt of the df-weighted mean variance) and
    its degrees of freedom; nan with no data set of two seeds."""
    by_data: dict[Hashable, list[float]] = {}
    for (dataset, _seed), value in cells.items():
        by_data.setdefault(dataset, []).append(value)
    squares = df = 0.0
    for values in by_data.values():
        if len(values) > 1:
            squares += float(np.var(values, ddof=1)) * (len(values) - 1)
            df += len(values) - 1
    return (math.sqrt(squares / df) if df else math.nan), int(df)


@dataclass(frozen=True)
class SpreadTest:
    """Brown-Forsythe test of equal seed variances of two methods over the data sets both have."""

    first: str
    second: str
    n_first: int  # cells of `first` on the shared data sets
    n_second: int
    n_datasets: int
    std_first: float  # pooled within-data-set std
    std_second: float
    statistic: float  # F (= t² of the two-sample t test on the absolute deviations)
    p_value: float  # two-sided, or one-sided for alternative="less"
    alternative: str
    p_holm: float = math.nan

    @property
    def variance_ratio(self) -> float:
        return (self.std_first / self.std_second) ** 2 if self.std_second else math.inf


def brown_forsythe(
    a: Cells, b: Cells, alternative: str = "two-sided", names: tuple[str, str] = ("a", "b")
) -> SpreadTest:
    """Brown-Forsythe test (Levene's test with the median as centre, Brown & Forsythe 1974) of
    equal seed variances of `a` and `b` (cells keyed (data set, seed)) over the data sets both
    have with at least SPREAD_MIN_SEEDS seeds: the absolute deviations from each data set's median, pooled
    per method, compared by one-way ANOVA (for one data set this is exactly
    scipy.stats.levene(center="median")). alternative="less" asks "is a's seed variance lower
    than b's?": the one-sided two-sample t test on the absolute deviations (F = t²)."""
    from scipy import stats

    if alternative not in ("two-sided", "less"):
        raise ValueError(f"alternative must be 'two-sided' or 'less', not {alternative!r}")
    dev_a, dev_b = median_deviations(a), median_deviations(b)
    enough = SPREAD_MIN_SEEDS
    shared = [d for d in dev_a if d in dev_b and min(len(dev_a[d]), len(dev_b[d])) >= enough]
    z_a = np.abs(np.concatenate([dev_a[d] for d in shared])) if shared else np.zeros(0)
    z_b = np.abs(np.concatenate([dev_b[d] for d in shared])) if shared else np.zeros(0)
    keep_a = {k: v for k, v in a.items() if k[0] in shared}
    keep_b = {k: v for k, v in b.items() if k[0] in shared}
    std_a, std_b = pooled_std(keep_a)[0], pooled_std(keep_b)[0]
    if not shared or (np.all(z_a == 0) and np.all(z_b == 0)):
        return SpreadTest(names[0], names[1], z_a.size, z_b.size, len(shared), std_a, std_b,
                          math.nan, math.nan, alternative)  # fmt: skip
    scale = 1e-9 * (1.0 + max(z_a.max(), z_b.max()))
    if max(np.ptp(z_a), np.ptp(z_b)) <= scale:  # no variation within either method: no test
        equal = abs(z_a.mean() - z_b.mean()) <= scale
        return SpreadTest(names[0], names[1], z_a.size, z_b.size, len(shared), std_a, std_b,
                          0.0 if equal else math.nan, 1.0 if equal else math.nan,
                          alternative)  # fmt: skip
    t, p = stats.ttest_ind(z_a, z_b, alternative=alternative)
    return SpreadTest(names[0], names[1], int(z_a.size), int(z_b.size), len(shared), std_a,
                      std_b, float(t) ** 2, float(p), alternative)  # fmt: skip


def compare_spreads(cells: Mapping[str, Cells], alpha: float = ALPHA) -> list[SpreadTest]:
    """Two-sided Brown-Forsythe test for every pair of methods, Holm-corrected across the pairs
    with a p-value."""
    tests = [
        brown_forsythe(cells[a], cells[b], names=(a, b))
        for a, b in itertools.combinations(sorted(cells), 2)
    ]
    tested = [i for i, t in enumerate(tests) if not math.isnan(t.p_value)]
    adjusted = dict(zip(tested, holm([tests[i].p_value for i in tested])))
    return [replace(t, p_holm=adjusted.get(i, math.nan)) for i, t in enumerate(tests)]


def spread_verdict(test: SpreadTest, alpha: float = ALPHA) -> str:
    """One sentence: whose seed spread is lower, or that the two are not distinguishable."""
    a, b = test.first, test.second
    if math.isnan(test.p_value) and test.n_datasets:
        return (f"{a} vs {b}: the deviations from the median do not vary within either method "
                f"on the {test.n_datasets} shared data sets; too few to test")  # fmt: skip
    if math.isnan(test.p_value):
        return (f"{a} vs {b}: no shared data set with {SPREAD_MIN_SEEDS} seeds or more (no "
                "spread to test)")  # fmt: skip
    p = test.p_holm if not math.isnan(test.p_holm) else test.p_value
    stds = f"pooled seed std {test.std_first:.2f} vs {test.std_second:.2f}"
    if p <= alpha:
        low, high = (a, b) if test.std_first < test.std_second else (b, a)
        return f"{low}'s seed spread is lower than {high}'s: {stds}, {format_p(p)} (Holm)"
    return (f"{a} vs {b}: seed spreads not distinguishable at alpha = {alpha:g} ({stds}, "
            f"{format_p(p)} (Holm))")  # fmt: skip


@dataclass(frozen=True)
class Spread:
    """A method's seed spread over its data sets (cells keyed (data set, seed))."""

    method: str
    n_datasets: int  # with at least SPREAD_MIN_SEEDS seeds
    n_cells: int
    pooled_std: float
    mean_abs_deviation: float  # from each data set's median
    max_range: float  # the largest max - min over seeds of one data set


def spread_table(cells: Mapping[str, Cells]) -> list[Spread]:
    rows = []
    for method in sorted(cells):
        deviations = {
            d: v for d, v in median_deviations(cells[method]).items() if len(v) >= SPREAD_MIN_SEEDS
        }
        flat = np.abs(np.concatenate(list(deviations.values()))) if deviations else np.zeros(0)
        ranges = [max(v) - min(v) for v in deviations.values()]
        rows.append(Spread(method, len(deviations), int(flat.size), pooled_std(cells[method])[0],
                           float(flat.mean()) if flat.size else math.nan,
                           float(max(ranges)) if ranges else math.nan))  # fmt: skip
    return rows
