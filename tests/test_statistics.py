"""vlprompt.statistics on synthetic numbers with known answers (scipy as the oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from vlprompt.statistics import (
    average_ranks,
    brown_forsythe,
    cd_diagram,
    cd_groups,
    compare_methods,
    compare_spreads,
    friedman,
    holm,
    min_attainable_p,
    nemenyi_cd,
    nemenyi_groups,
    seed_intervals,
    signed_rank_test,
    spread_table,
    spread_verdict,
    t_interval,
    wilcoxon_holm_groups,
)


def cells(values, datasets=11, seeds=3):
    """(data set, seed) -> value from a flat sequence."""
    keys = [(f"d{d}", s) for d in range(datasets) for s in range(1, seeds + 1)]
    return dict(zip(keys, values))


def test_t_interval_is_the_textbook_formula_and_one_seed_has_none():
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.std == 1.0 and iv.n == 3
    assert iv.half_width == pytest.approx(4.302652729911275 / math.sqrt(3))  # t_{.975, 2}
    assert (iv.low, iv.high) == pytest.approx((2 - iv.half_width, 2 + iv.half_width))
    one = t_interval([5.0])
    assert math.isnan(one.half_width) and one.note == "one seed: no interval"


def test_seed_intervals_per_method_and_data_set():
    found = seed_intervals({"rpo": {("pets", 1): 1.0, ("pets", 2): 3.0, ("dtd", 1): 7.0}})
    assert found["rpo", "pets"] == t_interval([1.0, 3.0])
    assert found["rpo", "dtd"].n == 1 and math.isnan(found["rpo", "dtd"].half_width)


def test_t_interval_covers_the_true_mean_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    draws = rng.normal(70.0, 2.0, size=(2000, 3))
    covered = 0
    for row in draws:
        iv = t_interval(row)
        covered += iv.low <= 70.0 <= iv.high
    assert 0.93 <= covered / 2000 <= 0.97


def test_signed_rank_p_equals_scipy_exact_without_ties_and_is_exact_with_ties():
    rng = np.random.default_rng(1)
    for n in (3, 6, 9, 15, 25):
        d = rng.normal(0.4, 1.0, n)
        assert signed_rank_test(d).p_value == pytest.approx(
            stats.wilcoxon(d, method="exact").pvalue, rel=1e-12
        )
    # ties: enumerate all 2^n sign flips of the mid-ranks by brute force
    d = np.array([1.0, 1.0, 2.0, -2.0, 3.0, 3.0, 3.0, -0.5, 0.0])
    test = signed_rank_test(d)
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    t_obs = ranks[nz > 0].sum()
    signs = np.array(np.meshgrid(*[[0, 1]] * len(nz))).reshape(len(nz), -1).T
    t_all = signs @ ranks
    brute = min(1.0, 2 * min(np.mean(t_all <= t_obs + 1e-9), np.mean(t_all >= t_obs - 1e-9)))
    assert test.n == 8 and test.zeros == 1 and test.statistic == t_obs
    assert test.p_value == pytest.approx(brute, rel=1e-12)
    assert test.rank_biserial == pytest.approx((2 * t_obs - ranks.sum()) / ranks.sum())


def test_holm_equals_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_a_planted_difference_is_detected_with_a_plain_verdict():
    rng = np.random.default_rng(2)
    noise = rng.normal(0.0, 1.0, 33)
    base = cells(70 + noise)
    better = cells(70 + noise + 2.0 + rng.normal(0.0, 0.7, 33))
    (pair,) = compare_methods({"coop": base, "rpo": better}, metric="H")
    assert (pair.first, pair.second) == ("rpo", "coop") and pair.n_pairs == 33
    assert pair.significant and pair.p_holm < 0.001
    assert pair.verdict().startswith(f"rpo > coop on H: +{pair.mean_difference:.1f} points, ")
    assert pair.verdict().endswith(f"(Holm), {pair.wins} of 33 pairs")
    assert pair.rank_biserial > 0.9


def test_the_false_positive_rate_of_a_null_difference_stays_near_alpha():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        a, b = rng.normal(70, 1.5, 21), rng.normal(70, 1.5, 21)
        (pair,) = compare_methods({"a": cells(a, 7), "b": cells(b, 7)})
        hits += pair.significant
        if not pair.significant:
            assert "not distinguishable at alpha = 0.05" in pair.verdict()
    assert hits / 200 <= 0.1


def test_too_few_pairs_are_refused_not_called():
    # n=5 all in one direction: p = 2/32 > 0.05; the verdict says why instead of "not different"
    assert min_attainable_p(5) == 0.0625 and min_attainable_p(6) == 0.03125
    three = {"a": cells([80, 81, 82], 1), "b": cells([70, 71, 72], 1)}
    (pair,) = compare_methods(three)
    assert not pair.testable and not pair.significant
    assert pair.verdict() == "a vs b on H: too few pairs (n=3) for the test to reach alpha = 0.05"
    six = {"a": cells(range(80, 86), 2), "b": cells(range(70, 76), 2)}
    assert compare_methods(six)[0].significant  # n=6, all one way: p = 0.03125


def test_methods_without_shared_cells_get_no_p_value():
    (pair,) = compare_methods({"a": cells([1.0, 2.0], 1, 2), "b": {("other", 1): 3.0}})
    assert pair.n_pairs == 0 and math.isnan(pair.p_value) and math.isnan(pair.p_holm)
    assert pair.verdict() == "a vs b on H: no shared cells to pair"


def test_holm_is_applied_across_the_pairs_of_methods():
    rng = np.random.default_rng(4)
    table = {m: cells(70 + shift + rng.normal(0, 1, 33)) for m, shift in
             (("a", 0.0), ("b", 0.3), ("c", 0.8))}  # fmt: skip
    pairs = compare_methods(table)
    assert [frozenset((p.first, p.second)) for p in pairs] == [
        frozenset("ab"),
        frozenset("ac"),
        frozenset("bc"),
    ]
    assert [p.p_holm for p in pairs] == pytest.approx(holm([p.p_value for p in pairs]))


def test_average_ranks_equal_hand_computed_ranks_with_a_tie():
    table = {
        "a": {"d1": 80.0, "d2": 60.0, "d3": 70.0},
        "b": {"d1": 75.0, "d2": 60.0, "d3": 72.0},
        "c": {"d1": 70.0, "d2": 65.0, "d3": 50.0},
    }
    # d1: a1 b2 c3; d2: c1, a and b tie for 2 and 3 -> 2.5 each; d3: b1 a2 c3
    ranks = average_ranks(table)
    assert ranks == pytest.approx({"a": (1 + 2.5 + 2) / 3, "b": (2 + 2.5 + 1) / 3,
                                   "c": (3 + 1 + 3) / 3})  # fmt: skip
    test = friedman(table)
    assert test.n_datasets == 3 and test.note == ""
    columns = [[table[m][d] for d in ("d1", "d2", "d3")] for m in "abc"]
    assert test.p_value == pytest.approx(stats.friedmanchisquare(*columns).pvalue)
    # a data set one method lacks is not ranked
    assert average_ranks({**table, "c": {"d1": 70.0, "d2": 65.0}})["c"] == pytest.approx(2.0)


def test_friedman_says_why_it_is_not_run():
    two = {"a": {"d1": 1.0, "d2": 2.0}, "b": {"d1": 2.0, "d2": 1.0}}
    assert "needs at least 3" in friedman(two).note and math.isnan(friedman(two).p_value)
    one = {m: {"d1": v} for m, v in (("a", 1.0), ("b", 2.0), ("c", 3.0))}
    assert "1 shared data set: ranks need at least 2" == friedman(one).note


def test_friedman_detects_a_consistent_ranking_and_iman_davenport_is_not_weaker():
    table = {m: {f"d{i}": 70.0 + shift + 0.1 * i for i in range(8)}
             for m, shift in (("a", 2.0), ("b", 1.0), ("c", 0.0))}  # fmt: skip
    test = friedman(table)
    assert test.average_ranks == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert test.p_value < 0.001 and test.iman_davenport_p <= test.p_value


def test_nemenyi_cd_matches_demsar_and_cd_groups():
    assert nemenyi_cd(4, 14) == pytest.approx(1.25, abs=0.01)  # Demšar 2006, section 3.2.2
    ranks = {"a": 1.2, "b": 1.9, "c": 3.0, "d": 3.9}
    assert nemenyi_groups(ranks, 14) == [("a", "b"), ("b", "c"), ("c", "d")]
    assert cd_groups(ranks, lambda x, y: False) == [("a", "b", "c", "d")]
    assert cd_groups(ranks, lambda x, y: True) == []


def test_wilcoxon_holm_groups_follow_the_significant_pairs():
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 1, 33)
    table = {"a": cells(75 + noise), "b": cells(75 + noise + rng.normal(0, 0.5, 33)),
             "c": cells(70 + noise)}  # fmt: skip
    pairs = compare_methods(table)
    ranks = {"a": 1.6, "b": 1.4, "c": 3.0}
    assert wilcoxon_holm_groups(ranks, pairs) == [("b", "a")]


def test_cd_diagram_draws_a_figure_with_its_title():
    fig = cd_diagram({"a": 1.2, "b": 2.1, "c": 2.7}, [("a", "b")], "post-hoc: Nemenyi", cd=1.1)
    fig.canvas.draw()
    assert fig.texts[0].get_text() == "post-hoc: Nemenyi"
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "a (1.20)" in labels and "(2.70) c" in labels and "CD = 1.10" in labels
    assert np.asarray(fig.canvas.buffer_rgba()).std() > 0


def test_brown_forsythe_detects_a_planted_4x_variance_ratio():
    rng = np.random.default_rng(6)
    centres = rng.normal(70, 10, 11)  # data sets differ in level, not in seed spread
    wide = cells(np.repeat(centres, 5) + rng.normal(0, 2.0, 55), seeds=5)
    narrow = cells(np.repeat(centres, 5) + rng.normal(0, 1.0, 55), seeds=5)
    test = brown_forsythe(narrow, wide, alternative="less", names=("rpo", "coop"))
    assert test.n_datasets == 11 and test.n_first == test.n_second == 55
    assert test.p_value < 0.05 and 2 < 1 / test.variance_ratio < 8
    assert brown_forsythe(wide, narrow, alternative="less").p_value > 0.5  # wrong direction
    (pair,) = compare_spreads({"rpo": narrow, "coop": wide})
    assert spread_verdict(pair).startswith("rpo's seed spread is lower than coop's")


def test_brown_forsythe_on_one_data_set_is_scipys_levene_with_the_median():
    rng = np.random.default_rng(7)
    x, y = rng.normal(0, 1, 9), rng.normal(0, 2, 7)
    test = brown_forsythe(cells(x, 1, 9), cells(y, 1, 7))
    oracle = stats.levene(x, y, center="median")
    assert test.p_value == pytest.approx(oracle.pvalue) and test.statistic == pytest.approx(
        oracle.statistic
    )


def test_spread_needs_three_seeds_and_says_so():
    two_seeds = {"a": cells([1.0, 2.0, 3.0, 5.0], 2, 2), "b": cells([3.0, 5.0, 1.0, 1.5], 2, 2)}
    (test,) = compare_spreads(two_seeds)
    assert math.isnan(test.p_value) and test.n_datasets == 0
    assert "no shared data set with 3 seeds or more" in spread_verdict(test)
    flat = brown_forsythe(cells([1.0, 2.0, 3.0], 1), cells([1.0, 3.0, 5.0], 1))
    assert not math.isnan(flat.p_value)  # |deviations| 1,0,1 vs 2,0,2 vary: testable
    flat = brown_forsythe(cells([1.0, 1.0, 3.0, 3.0], 1, 4), cells([1.0, 1.0, 5.0, 5.0], 1, 4))
    assert math.isnan(flat.p_value) and "too few to test" in spread_verdict(flat)
    constant = {"a": cells([1.0] * 6, 2, 3), "b": cells([2.0] * 6, 2, 3)}
    assert "do not vary within either method on the 2 shared" in spread_verdict(
        compare_spreads(constant)[0]
    )
    same = brown_forsythe(cells([1.0, 2.0, 3.0], 1), cells([5.0, 6.0, 7.0], 1))
    assert (same.statistic, same.p_value) == (0.0, 1.0)  # equal spreads, no 0/0
    rows = spread_table({"a": cells([1.0, 3.0, 2.0, 10.0, 10.0, 16.0], 2, 3)})
    assert rows[0].n_datasets == 2 and rows[0].max_range == 6.0
    assert rows[0].pooled_std == pytest.approx(math.sqrt((1.0 + 12.0) / 2))
