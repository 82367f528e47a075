"""Temperature scaling, ECE and split-conformal sets against known answers and brute force."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from vlprompt import calibration as cal
from vlprompt.errors import CalibrationError


def calibrated_set(n: int, n_classes: int, seed: int, spread: float = 2.0):
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, n_classes)) * spread
    probs = cal.softmax(logits)
    labels = (probs.cumsum(axis=1) > rng.uniform(size=(n, 1))).argmax(axis=1)
    return logits, labels


# ----------------------------------------------------------------------------- temperature


def test_fitted_temperature_is_the_grid_minimum_of_the_nll():
    logits, labels = calibrated_set(300, 6, seed=1)
    logits = logits * 2.5 + np.random.default_rng(2).normal(size=logits.shape)
    fit = cal.fit_temperature(logits, labels)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 4001))
    nlls = np.array([cal.nll(logits, labels, t) for t in grid])
    t_grid = grid[nlls.argmin()]
    assert fit.at_bound is None
    assert fit.temperature == pytest.approx(t_grid, rel=3e-3)  # grid step is 0.2% in T
    assert fit.nll_after <= nlls.min() + 1e-9
    assert fit.nll_after < fit.nll_before == pytest.approx(cal.nll(logits, labels))


def test_nll_equals_the_plain_log_softmax_formula():
    from scipy.special import log_softmax

    logits, labels = calibrated_set(100, 5, seed=14, spread=4.0)
    for t in (0.3, 1.0, 7.0):
        plain = -log_softmax(logits / t, axis=1)[np.arange(100), labels].mean()
        assert cal.nll(logits, labels, t) == pytest.approx(plain, rel=1e-12)
    # a confident right answer: the plain formula rounds to 0, log1p keeps exp(-80)
    assert cal.nll(np.array([[80.0, 0.0]]), np.array([0])) == pytest.approx(math.exp(-80))


def test_over_confident_logits_get_t_near_3_and_a_lower_ece():
    logits, labels = calibrated_set(4000, 10, seed=3)
    fit = cal.fit_temperature(3 * logits, labels)
    assert fit.temperature == pytest.approx(3.0, rel=0.08)
    before = cal.expected_calibration_error(cal.softmax(3 * logits), labels)
    after = cal.expected_calibration_error(cal.softmax(3 * logits, fit.temperature), labels)
    assert after <= before
    assert before > 0.1 and after < 0.03


def test_ece_of_a_calibrated_model_is_near_zero():
    logits, labels = calibrated_set(20000, 5, seed=4)
    assert cal.expected_calibration_error(cal.softmax(logits), labels) < 0.015


def test_ece_known_answers():
    # 4 images at confidence 0.75, 3 right: accuracy = confidence, ECE exactly 0
    probs = np.array([[0.75, 0.25]] * 4)
    assert cal.expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    # bin (0.6, 0.8]: conf 0.7, both right -> gap 0.3; bin (0.8, 1]: conf 0.9, wrong -> 0.9
    probs = np.array([[0.7, 0.3], [0.3, 0.7], [0.9, 0.1]])
    bins = cal.reliability_bins(probs, np.array([0, 1, 1]), n_bins=5)
    assert bins.count.tolist() == [0, 0, 0, 2, 1]
    assert bins.ece == pytest.approx((2 * 0.3 + 1 * 0.9) / 3)
    assert bins.accuracy[3] == 1.0 and bins.confidence[4] == pytest.approx(0.9)
    assert math.isnan(bins.accuracy[0])
    json.dumps(bins.to_dict(), allow_nan=False)


def test_a_confidence_on_a_bin_edge_falls_in_the_lower_bin():
    probs = np.array([[0.2] * 5, [0.4, 0.2, 0.2, 0.1, 0.1]])  # 0.2 and 0.4 are edges of 15 bins
    bins = cal.reliability_bins(probs, np.array([0, 0]))
    assert bins.count[2] == 1 and bins.count[5] == 1 and bins.count.sum() == 2


def test_temperature_keeps_probabilities_normalised_and_the_prediction():
    logits, _ = calibrated_set(50, 7, seed=5)
    for t in (0.01, 0.5, 3.0, 100.0):
        p = cal.softmax(logits * 40, t)
        assert np.allclose(p.sum(axis=1), 1.0) and np.isfinite(p).all()
        assert (p.argmax(axis=1) == logits.argmax(axis=1)).all()


def test_separable_validation_keeps_t_finite_at_the_lower_bound():
    logits = np.array([[5.0, 0.0, 0.0], [0.0, 4.0, 1.0], [0.0, 1.0, 6.0]] * 10)
    labels = np.array([0, 1, 2] * 10)
    fit = cal.fit_temperature(logits, labels)
    assert fit.at_bound == "lower" and fit.temperature == pytest.approx(cal.T_MIN, rel=1e-2)


def test_all_wrong_validation_pushes_t_to_the_upper_bound():
    logits = np.array([[3.0, 0.0], [0.0, 2.0]] * 12)
    labels = np.array([1, 0] * 12)
    fit = cal.fit_temperature(logits, labels)
    assert fit.at_bound == "upper" and fit.temperature == pytest.approx(cal.T_MAX, rel=1e-2)
    assert fit.nll_after < fit.nll_before


def test_a_few_dozen_images_and_torch_tensors():
    torch = pytest.importorskip("torch")
    logits, labels = calibrated_set(36, 4, seed=6)
    t = torch.tensor(logits, dtype=torch.float32) * 2
    fit = cal.fit_temperature(t, torch.tensor(labels))
    assert fit.at_bound is None and 0.5 < fit.temperature < 10
    scaled = cal.apply_temperature(t, fit.temperature)
    assert isinstance(scaled, torch.Tensor) and torch.allclose(scaled * fit.temperature, t)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: cal.fit_temperature(np.zeros((3, 2)), np.array([0, 2, 1])), "labels"),
        (lambda: cal.fit_temperature(np.zeros((3, 2)), np.array([0.0, 1, 1])), "integer"),
        (lambda: cal.fit_temperature(np.zeros(3), np.array([0, 1, 1])), "2 dimensions"),
        (lambda: cal.softmax(np.array([[np.nan, 1.0]])), "NaN"),
        (lambda: cal.apply_temperature(np.zeros((1, 2)), 0.0), "temperature"),
        (lambda: cal.conformal_threshold(np.full((3, 2), 0.5), [0, 1, 0], 1.2), "coverage"),
        (lambda: cal.conformal_threshold(np.full((3, 2), 0.5), [0, 1, 0], 0.5, "raps"), "lac"),
        (lambda: cal.fit_temperature(np.zeros((0, 2)), np.zeros(0, int)), "no images"),
    ],
)
def test_bad_input_is_one_clear_error(call, fragment):
    with pytest.raises(CalibrationError, match=fragment):
        call()


# ----------------------------------------------------------------------------- conformal


@pytest.mark.parametrize("score, randomized", [("lac", False), ("aps", False), ("aps", True)])
def test_conformal_sets_reach_the_nominal_coverage_over_random_splits(score, randomized):
    logits, labels = calibrated_set(1500, 10, seed=7, spread=1.5)
    probs = cal.softmax(logits)
    rng = np.random.default_rng(8)
    coverages, sizes = [], []
    for _ in range(100):
        perm = rng.permutation(len(labels))
        c, t = perm[:300], perm[300:]
        thr = cal.conformal_threshold(probs[c], labels[c], 0.9, score, randomized, rng)
        sets = cal.prediction_sets(probs[t], thr, rng=rng)
        coverages.append(sets[np.arange(len(t)), labels[t]].mean())
        sizes.append(sets.sum(axis=1).mean())
    # expected coverage k / (n + 1) = 271 / 301 = 0.9003; sd of the mean over 100 splits ~ 0.002
    assert 0.88 <= np.mean(coverages) <= 0.93
    assert 1 < np.mean(sizes) < 10  # informative: not every class


def test_conformal_threshold_is_the_kth_smallest_score():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45], [0.7, 0.3]] * 2)
    labels = np.zeros(10, dtype=int)
    thr = cal.conformal_threshold(probs, labels, 0.8)  # k = ceil(11 * 0.8) = 9
    scores = np.sort(1 - probs[:, 0])
    assert thr.rank == 9 and thr.threshold == pytest.approx(scores[8])
    assert "Beta(9, 2)" in thr.note and not thr.all_classes


def test_prediction_sets_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.15, 0.75]])
    lac = cal.prediction_sets(probs, 0.75, "lac")  # p >= 0.25
    assert lac.tolist() == [[True, True, False], [False, False, True]]
    aps = cal.prediction_sets(probs, 0.8, "aps")  # mass up to and including a class <= 0.8
    assert aps.tolist() == [[True, True, False], [False, False, True]]
    aps = cal.prediction_sets(probs, 0.95, "aps")
    assert aps.tolist() == [[True, True, False], [False, True, True]]


def test_named_sets_list_the_members_most_probable_first():
    probs = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    sets = cal.prediction_sets(probs, 0.75, "lac")  # p >= 0.25
    assert cal.named_sets(probs, sets, ["a", "b", "c"]) == [[("b", 0.5), ("c", 0.3)], [("c", 0.8)]]
    with pytest.raises(CalibrationError, match="class names"):
        cal.named_sets(probs, sets, ["a", "b"])


def test_too_few_calibration_points_give_every_class():
    probs = cal.softmax(np.random.default_rng(9).normal(size=(5, 4)))
    thr = cal.conformal_threshold(probs, [0, 1, 2, 3, 0], 0.9, "aps")
    assert thr.all_classes and thr.rank == 6 and "needs at least 9" in thr.note
    assert cal.prediction_sets(probs, thr).all()
    assert cal.min_calibration_points(0.9) == 9 and cal.min_calibration_points(0.95) == 19
    probs9 = cal.softmax(np.random.default_rng(10).normal(size=(9, 4)))
    thr9 = cal.conformal_threshold(probs9, np.arange(9) % 4, 0.9)
    assert not thr9.all_classes and thr9.threshold == pytest.approx(
        (1 - probs9[np.arange(9), np.arange(9) % 4]).max()
    )


def test_coverage_spread_matches_the_beta_distribution():
    mean, lo, hi = cal.coverage_spread(40, 0.9)
    assert mean == pytest.approx(37 / 41) and 0.80 < lo < 0.83 and 0.96 < hi < 0.97
    assert cal.coverage_spread(5, 0.9) == (1.0, 1.0, 1.0)


# ----------------------------------------------------------------------------- record, figure


def test_calibration_record_round_trips_through_json():
    logits, labels = calibrated_set(60, 5, seed=11)
    rec = cal.fit_calibration(3 * logits, labels, coverages=(0.9, 0.99))
    assert rec.n_val == 60 and rec.ece_after <= rec.ece_before and rec.ece_split == "val"
    assert rec.threshold(0.99, "aps").all_classes  # 60 points cannot certify 0.99
    text = json.dumps(rec.to_dict(), allow_nan=False)
    back = cal.Calibration.from_dict(json.loads(text))
    assert back == rec
    assert np.allclose(back.probabilities(logits), cal.softmax(logits, rec.temperature))
    with pytest.raises(CalibrationError, match="lac at coverage 0.8"):
        rec.threshold(0.8)
    with pytest.raises(CalibrationError, match="format"):
        cal.Calibration.from_dict({"temperature": 1.0})
    bad = dict(rec.to_dict(), temperature=-1.0)
    with pytest.raises(CalibrationError, match="temperature"):
        cal.Calibration.from_dict(bad)


def test_ece_on_held_out_images():
    logits, labels = calibrated_set(400, 5, seed=12)
    rec = cal.fit_calibration(
        3 * logits[:200], labels[:200], eval_logits=3 * logits[200:], eval_labels=labels[200:]
    )
    assert rec.ece_split == "eval" and rec.n_val == 200
    assert rec.ece_before == pytest.approx(
        cal.expected_calibration_error(cal.softmax(3 * logits[200:]), labels[200:])
    )


def test_reliability_diagram_is_a_png_of_sensible_size():
    logits, labels = calibrated_set(300, 5, seed=13)
    before = cal.reliability_bins(cal.softmax(3 * logits), labels)
    after = cal.reliability_bins(cal.softmax(logits), labels)
    fig = cal.reliability_diagram(before, after, temperature=3.0)
    assert f"{100 * before.ece:.1f}%" in fig._suptitle.get_text()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    img = Image.open(io.BytesIO(buf.getvalue()))
    assert img.format == "PNG" and 600 <= img.width <= 1200 and 300 <= img.height <= 600
