"""How far a classifier's confidence can be trusted: temperature scaling, expected calibration
error with a reliability diagram, and split-conformal prediction sets. Plain arrays in (logits or
probabilities [N, C] as numpy arrays or torch tensors, integer labels [N]); no run folders.

**Temperature scaling** (Guo et al., ICML 2017) divides the logits by one scalar T > 0 fitted on
validation logits by minimising the mean negative log-likelihood. The NLL is convex in 1/T, so it
is unimodal in u = log T, and a bounded 1-D Brent search over u
(`scipy.optimize.minimize_scalar(method="bounded")`) finds that minimum to `xatol` in log T
(1e-6) with no gradient, no learning rate and no torch; the usual LBFGS on T has no bound and,
on a separable set, walks T towards 0 until a tolerance stops it somewhere arbitrary.
T is bounded to [T_MIN, T_MAX] = [0.01, 100] (two decades either side of 1, which covers CLIP's
logit scale of 100 and raw cosine similarities): on a validation set that the model separates
perfectly the NLL keeps falling as T -> 0 (such sets get T_MIN directly), and on one it gets
all wrong it can keep falling as T -> infinity, so T stays finite and `TemperatureFit.at_bound`
says when a bound was hit (the validation set could not determine T). The NLL is computed
with log1p so that the tiny loss of confident right answers does not round to a flat 0.
Temperature never changes the top-1 prediction.

**Expected calibration error**: the top-1 confidences fall into equal-width bins (15 by default,
as Guo et al.; bin i is (i/M, (i+1)/M]); ECE = sum over bins of (count / N) * |accuracy - mean
confidence|. `reliability_bins` gives the per-bin data, `reliability_diagram` draws it.
An ECE measured on the data T was fitted on is optimistic: measure it on held-out images.

**Split-conformal prediction sets** (Angelopoulos & Bates, "A Gentle Introduction to Conformal
Prediction and Distribution-Free Uncertainty Quantification", 2021). Scores: LAC, 1 - p_true;
APS, the probability mass of the classes ranked at or above the true one. The threshold is the
k-th smallest calibration score, k = ceil((n + 1) * coverage) (the finite-sample correction);
when k > n no finite threshold certifies the coverage, and the set is every class
(`ConformalThreshold.all_classes`, with a note naming the n needed). The default APS is the
non-randomised one: a class is in the set when the mass up to and including it is <= the
threshold, so sets are deterministic (the same image gets the same set in `predict` and `serve`)
and coverage is at least nominal; the randomised variant (`randomized=True`: mass above the class
plus U * its probability, U uniform per image) is exact in expectation but draws a new U per call
and can return an empty set.

The guarantee is marginal and holds under exchangeability of calibration and test images: it is
an average over calibration draws. For one calibration set of n points (continuous scores), the
coverage on future images is Beta(k, n + 1 - k) distributed. At coverage 0.9, its mean and the
5%-95% range of that Beta distribution are (`coverage_spread(n, 0.9)`):
n = 20: 0.905, 0.78-0.98; n = 40 (4 validation images x 10 classes): 0.902, 0.82-0.97;
n = 100: 0.901, 0.85-0.95; n = 400 (4 x 100 classes): 0.900, 0.875-0.924.
So with 4 validation images per class the guarantee is loose: one calibration draw may cover
82% or 97% of test images. Fitting T on the same images as the threshold uses one parameter of
those images; its effect on the guarantee is small next to that spread, but it is not zero.

Why no library: MAPIE (1.x, `SplitConformalClassifier`) wraps a scikit-learn estimator and calls
its `predict_proba`; netcal brings its own stack (pyro, tikzplotlib, ...). Both would need an
adapter around logits we already have, for about 30 lines of score and quantile code here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vlprompt.errors import CalibrationError, VlpromptError

T_MIN, T_MAX = 0.01, 100.0
N_BINS = 15
SCORES = ("lac", "aps")
FORMAT_VERSION = 1
TEMPERATURE_METHOD = (
    "temperature scaling: NLL minimised over log T by bounded Brent, T in [0.01, 100]"
)
ECE_METHOD = "expected calibration error: equal-width bins over the top-1 confidence"


# ----------------------------------------------------------------------------- inputs


def as_array(
    x: Any, name: str, ndim: int, error: type[VlpromptError] = CalibrationError
) -> np.ndarray:
    """A numpy float64 copy of an array or a torch tensor with `ndim` dimensions, all finite."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{name}: expected numbers, got {type(x).__name__} ({exc})") from exc
    if arr.ndim != ndim:
        raise error(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise error(f"{name}: holds NaN or infinite values; pass finite numbers")
    return arr


def as_labels(
    labels: Any, n: int, n_classes: int, error: type[VlpromptError] = CalibrationError
) -> np.ndarray:
    """Integer labels [n] in 0..n_classes-1."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.shape != (n,) or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise error(
            f"labels: expected {n} integer class indices, got shape {arr.shape} ({arr.dtype})"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise error(f"labels: expected values in 0..{n_classes - 1}, got {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


def _inputs(scores: Any, labels: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    arr = as_array(scores, name, 2)
    if arr.shape[0] == 0:
        raise CalibrationError(f"{name}: no images (shape {arr.shape}); pass at least one")
    return arr, as_labels(labels, arr.shape[0], arr.shape[1])


# ----------------------------------------------------------------------------- temperature


def apply_temperature(logits: Any, temperature: float) -> Any:
    """logits / T (same type as `logits`: numpy array or torch tensor)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise CalibrationError(f"temperature: expected a finite number > 0, got {temperature}")
    return logits / temperature


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Probabilities [N, C] (float64) of logits / T; rows sum to 1."""
    z = apply_temperature(as_array(logits, "logits", 2), temperature)  # a new array
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    z, y = _inputs(logits, labels, "logits")
    return _nll(z, y, temperature)


def _nll(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Per image log(sum_c exp(d_c)) with d = (z - z_y) / T, via log1p when the true class
    leads, so the tiny NLL of a confident right answer does not round to 0 (which would make
    the objective flat near small T)."""
    rows = np.arange(len(y))
    d = (z - z[rows, y][:, None]) / temperature
    d[rows, y] = -np.inf
    m = np.maximum(d.max(axis=1), 0.0)
    rest = np.exp(d - m[:, None]).sum(axis=1)
    with np.errstate(divide="ignore"):
        per_image = np.where(m > 0, m + np.log(np.exp(-m) + rest), np.log1p(rest))
    return float(per_image.mean())


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    nll_before: float  # at T = 1
    nll_after: float
    at_bound: str | None  # "lower" / "upper" when T sits on a bound (T not determined by data)


def fit_temperature(
    logits: Any, labels: Any, bounds: tuple[float, float] = (T_MIN, T_MAX), xatol: float = 1e-6
) -> TemperatureFit:
    """The T in `bounds` minimising the validation NLL (bounded Brent search over log T)."""
    from scipy.optimize import minimize_scalar

    z, y = _inputs(logits, labels, "logits")
    if not (0 < bounds[0] < bounds[1] < math.inf):
        raise CalibrationError(f"temperature bounds: expected 0 < low < high, got {bounds}")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    before = _nll(z, y, 1.0)
    if np.ptp(z, axis=1).max() == 0:  # every row constant: the NLL does not depend on T
        return TemperatureFit(1.0, before, before, None)
    if _separable(z, y):  # the NLL falls all the way to T -> 0
        return TemperatureFit(bounds[0], before, _nll(z, y, bounds[0]), "lower")

    def objective(u: float) -> float:
        return _nll(z, y, math.exp(u))

    res = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": xatol})
    # Brent stops within xatol of a bound without evaluating it: the bounds compete (first,
    # so that they win a tie on a plateau where the NLL has rounded to a constant)
    u_best, f_best = min(
        [(lo, objective(lo)), (hi, objective(hi)), (float(res.x), float(res.fun))],
        key=lambda t: t[1],
    )
    at_bound = "lower" if u_best - lo < 1e-3 else "upper" if hi - u_best < 1e-3 else None
    return TemperatureFit(math.exp(u_best), before, f_best, at_bound)


def _separable(z: np.ndarray, y: np.ndarray) -> bool:
    """Every image's true class has the strictly largest logit: then the NLL decreases in 1/T
    without end (each term log(1 + sum exp(-margin / T)) falls), so T goes to its lower bound."""
    others = z.copy()
    others[np.arange(len(y)), y] = -np.inf
    return bool((z[np.arange(len(y)), y] > others.max(axis=1)).all())


# ----------------------------------------------------------------------------- ECE


@dataclass(frozen=True)
class ReliabilityBins:
    """Per equal-width confidence bin: how many images, their mean top-1 confidence and their
    accuracy (both NaN for an empty bin); `ece` weighs |accuracy - confidence| by count / n."""

    edges: np.ndarray  # [M + 1], 0..1
    count: np.ndarray  # [M] int
    confidence: np.ndarray  # [M]
    accuracy: np.ndarray  # [M]
    ece: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (empty bins as null)."""

        def clean(a: np.ndarray) -> list[Any]:
            return [None if math.isnan(v) else float(v) for v in a]

        return {
            "edges": self.edges.tolist(),
            "count": self.count.tolist(),
            "confidence": clean(self.confidence),
            "accuracy": clean(self.accuracy),
            "ece": self.ece,
            "n": self.n,
        }


def reliability_bins(probs: Any, labels: Any, n_bins: int = N_BINS) -> ReliabilityBins:
    """Reliability-diagram data of probabilities [N, C] against labels [N]."""
    p, y = _inputs(probs, labels, "probabilities")
    if n_bins < 1:
        raise CalibrationError(f"n_bins: expected at least 1, got {n_bins}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i is (edges[i], edges[i + 1]]; a confidence of exactly 0 joins the first bin
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    gaps = np.where(count > 0, np.abs(np.nan_to_num(acc) - np.nan_to_num(mean_conf)), 0.0)
    ece = float(np.sum(count / len(y) * gaps))
    return ReliabilityBins(edges, count, mean_conf, acc, ece, len(y))


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = N_BINS) -> float:
    """ECE (a fraction in [0, 1]) of probabilities [N, C] against labels [N]."""
    return reliability_bins(probs, labels, n_bins).ece


def reliability_diagram(
    before: ReliabilityBins, after: ReliabilityBins | None = None, temperature: float | None = None
) -> Any:
    """A matplotlib Figure (Agg canvas, no pyplot): per panel the accuracy of each bin as bars,
    the gap to the bin's mean confidence shaded, the diagonal of perfect calibration; ECE before
    (and after temperature scaling) in the title. The caller saves it (`fig.savefig`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("before", before)] + ([("after", after)] if after is not None else [])
    fig = Figure(figsize=(4.2 * len(panels), 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (which, bins) in zip(axes, panels):
        label = (
            "uncalibrated (T = 1)"
            if which == "before"
            else (f"temperature scaled (T = {temperature:.3g})" if temperature else "calibrated")
        )
        _draw_bins(ax, bins, label)
    title = f"ECE {100 * before.ece:.1f}%"
    if after is not None:
        title = f"ECE before {100 * before.ece:.1f}% -> after {100 * after.ece:.1f}%"
    fig.suptitle(f"{title} ({len(before.count)} bins, n = {before.n})")
    return fig


def _draw_bins(ax: Any, bins: ReliabilityBins, label: str) -> None:
    width = np.diff(bins.edges)
    left = bins.edges[:-1]
    full = bins.count > 0
    acc = np.where(full, bins.accuracy, 0.0)
    conf = np.where(full, bins.confidence, 0.0)
    ax.bar(
        left[full],
        acc[full],
        width=width[full],
        align="edge",
        color="#4472c4",
        edgecolor="white",
        label="accuracy",
    )
    low, gap = np.minimum(acc, conf), np.abs(conf - acc)
    ax.bar(
        left[full],
        gap[full],
        bottom=low[full],
        width=width[full],
        align="edge",
        color="#e06666",
        alpha=0.45,
        hatch="//",
        edgecolor="#cc0000",
        linewidth=0.5,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence (top-1)",
        ylabel="accuracy",
        title=f"{label}: ECE {100 * bins.ece:.1f}%",
    )
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)


# ----------------------------------------------------------------------------- conformal


def coverage_spread(n: int, coverage: float, mass: float = 0.9) -> tuple[float, float, float]:
    """Mean and central `mass` range of the coverage a split-conformal threshold from n
    calibration points gives on future images (Beta(k, n + 1 - k), continuous scores)."""
    from scipy.stats import beta

    k = _rank(n, coverage)
    if k > n:
        return 1.0, 1.0, 1.0
    dist = beta(k, n + 1 - k)
    lo, hi = dist.ppf([(1 - mass) / 2, (1 + mass) / 2])
    return float(dist.mean()), float(lo), float(hi)


def _rank(n: int, coverage: float) -> int:
    """k = ceil((n + 1) * coverage), robust to (n + 1) * 0.9 = 9.000000000000002."""
    return math.ceil((n + 1) * coverage - 1e-9)


def min_calibration_points(coverage: float) -> int:
    """The smallest n with ceil((n + 1) * coverage) <= n (a finite threshold)."""
    n = max(1, math.floor(coverage / (1 - coverage)) - 1)
    while _rank(n, coverage) > n:
        n += 1
    return n


@dataclass(frozen=True)
class ConformalThreshold:
    """A split-conformal threshold: class c is in an image's set when its score <= threshold;
    math.inf (all_classes) when n is too small for the coverage."""

    score: str  # "lac" or "aps"
    coverage: float
    n: int  # calibration points
    rank: int  # k = ceil((n + 1) * coverage); the threshold is the k-th smallest score
    threshold: float
    randomized: bool = False
    note: str = ""

    @property
    def all_classes(self) -> bool:
        return math.isinf(self.threshold)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["threshold"] = None if self.all_classes else self.threshold  # JSON has no infinity
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConformalThreshold:
        try:
            t = d["threshold"]
            return cls(
                str(d["score"]),
                float(d["coverage"]),
                int(d["n"]),
                int(d["rank"]),
                math.inf if t is None else float(t),
                bool(d.get("randomized", False)),
                str(d.get("note", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"conformal threshold record {d!r}: missing or bad field ({exc})"
            ) from exc


def _check_score(score: str) -> str:
    if score not in SCORES:
        raise CalibrationError(f"conformal score {score!r}: expected one of {', '.join(SCORES)}")
    return score


def _uniform(n: int, rng: Any) -> np.ndarray:
    return np.random.default_rng(rng).uniform(size=n)


def class_scores(
    probs: np.ndarray, score: str, randomized: bool = False, rng: Any = None
) -> np.ndarray:
    """Every class's conformity score [N, C] (lower = more conforming). Calibration takes the
    true class's entry and prediction sets compare all entries, so both use the same numbers."""
    if _check_score(score) == "lac":
        return 1.0 - probs
    order = np.argsort(-probs, axis=1, kind="stable")
    sorted_p = np.take_along_axis(probs, order, axis=1)
    mass = np.cumsum(sorted_p, axis=1)  # up to and including each ranked class
    if randomized:
        mass = mass - sorted_p + _uniform(len(probs), rng)[:, None] * sorted_p
    out = np.empty_like(mass)
    np.put_along_axis(out, order, mass, axis=1)
    return out


def _check_coverage(coverage: float) -> float:
    if not (0 < coverage < 1):
        raise CalibrationError(f"coverage: expected a number between 0 and 1, got {coverage}")
    return float(coverage)


def conformal_threshold(
    cal_probs: Any,
    cal_labels: Any,
    coverage: float,
    score: str = "lac",
    randomized: bool = False,
    rng: Any = None,
) -> ConformalThreshold:
    """The split-conformal threshold for `coverage` from calibration probabilities and labels.
    `randomized` applies to APS only; `rng` (a seed or numpy Generator) draws its U."""
    p, y = _inputs(cal_probs, cal_labels, "calibration probabilities")
    coverage, score = _check_coverage(coverage), _check_score(score)
    randomized = randomized and score == "aps"
    n, k = len(y), _rank(len(y), coverage)
    if k > n:
        need = min_calibration_points(coverage)
        note = (
            f"{n} calibration points cannot certify coverage {coverage:g} (needs at least "
            f"{need}): every class is in the set"
        )
        return ConformalThreshold(score, coverage, n, k, math.inf, randomized, note)
    s = class_scores(p, score, randomized, rng)[np.arange(n), y]
    mean, lo, hi = coverage_spread(n, coverage)
    note = (
        f"coverage over calibration draws ~ Beta({k}, {n + 1 - k}): mean {mean:.3f}, "
        f"90% of draws in [{lo:.3f}, {hi:.3f}]"
    )
    return ConformalThreshold(score, coverage, n, k, float(np.sort(s)[k - 1]), randomized, note)


def prediction_sets(
    probs: Any,
    threshold: ConformalThreshold | float,
    score: str | None = None,
    randomized: bool | None = None,
    rng: Any = None,
) -> np.ndarray:
    """Boolean [N, C]: class c is in image i's set. `threshold` is a ConformalThreshold (its
    score and variant are used) or a number with `score` ("lac" by default)."""
    p = as_array(probs, "probabilities", 2)
    if isinstance(threshold, ConformalThreshold):
        if score not in (None, threshold.score):
            raise CalibrationError(
                f"score {score!r}: the threshold was calibrated for {threshold.score!r}"
            )
        score, randomized, q = threshold.score, threshold.randomized, threshold.threshold
    else:
        q = float(threshold)
    score = _check_score(score or "lac")
    if math.isinf(q) and q > 0:
        return np.ones(p.shape, dtype=bool)
    return class_scores(p, score, bool(randomized), rng) <= q


def named_sets(
    probs: Any, sets: np.ndarray, class_names: list[str] | tuple[str, ...]
) -> list[list[tuple[str, float]]]:
    """Each image's set as (class name, probability), most probable first (for `predict` and
    `serve` output)."""
    p = as_array(probs, "probabilities", 2)
    if sets.shape != p.shape or len(class_names) != p.shape[1]:
        raise CalibrationError(
            f"prediction sets {sets.shape}, probabilities {p.shape} and {len(class_names)} class "
            "names do not match; pass the sets made from these probabilities"
        )
    out = []
    for row, mask in zip(p, sets):
        order = [c for c in np.argsort(-row, kind="stable") if mask[c]]
        out.append([(class_names[c], float(row[c])) for c in order])
    return out


# ----------------------------------------------------------------------------- the record


@dataclass
class Calibration:
    """What calibration learned on a validation split, serialisable as JSON: the temperature,
    the ECE before/after it (on `ece_split`), and conformal thresholds on temperature-scaled
    probabilities, one per (score, coverage)."""

    temperature: float
    ece_before: float
    ece_after: float
    n_val: int
    n_bins: int = N_BINS
    ece_split: str = "val"
    temperature_at_bound: str | None = None
    conformal: list[ConformalThreshold] = field(default_factory=list)
    temperature_method: str = TEMPERATURE_METHOD
    ece_method: str = ECE_METHOD
    conformal_method: str = "split conformal (Angelopoulos & Bates); APS non-randomised"

    def threshold(self, coverage: float, score: str = "lac") -> ConformalThreshold:
        """The threshold for (score, coverage); apply it to `self.probabilities(logits)`."""
        for t in self.conformal:
            if t.score == score and math.isclose(t.coverage, coverage):
                return t
        have = ", ".join(f"{t.score}@{t.coverage:g}" for t in self.conformal) or "none"
        raise CalibrationError(
            f"no conformal threshold for {score} at coverage {coverage:g} (have: {have})"
        )

    def probabilities(self, logits: Any) -> np.ndarray:
        return softmax(logits, self.temperature)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conformal"] = [t.to_dict() for t in self.conformal]
        d["format"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT_VERSION:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CalibrationError(
                f"calibration record: expected format {FORMAT_VERSION}, got {got!r}"
            )
        known = {f for f in cls.__dataclass_fields__ if f != "conformal"}
        try:
            kwargs = {k: v for k, v in d.items() if k in known}
            rec = cls(
                **kwargs,
                conformal=[ConformalThreshold.from_dict(t) for t in d.get("conformal", [])],
            )
        except TypeError as exc:
            raise CalibrationError(f"calibration record: missing field ({exc})") from exc
        if not (rec.temperature > 0 and math.isfinite(rec.temperature)):
            raise CalibrationError(
                f"calibration record: temperature {rec.temperature!r} is not a number > 0"
            )
        return rec


def fit_calibration(
    val_logits: Any,
    val_labels: Any,
    coverages: tuple[float, ...] = (0.9, 0.95),
    scores: tuple[str, ...] = ("lac", "aps"),
    n_bins: int = N_BINS,
    eval_logits: Any = None,
    eval_labels: Any = None,
) -> Calibration:
    """Fit T and the conformal thresholds on validation logits; ECE before/after T on
    `eval_logits` when given (held-out images, `ece_split="eval"`), else on validation."""
    z, y = _inputs(val_logits, val_labels, "validation logits")
    fit = fit_temperature(z, y)
    probs = softmax(z, fit.temperature)
    conformal = [conformal_threshold(probs, y, c, s) for s in scores for c in coverages]
    ez, ey, split = z, y, "val"
    if eval_logits is not None:
        ez, ey = _inputs(eval_logits, eval_labels, "evaluation logits")
        split = "eval"
    return Calibration(
        temperature=fit.temperature,
        ece_before=expected_calibration_error(softmax(ez), ey, n_bins),
        ece_after=expected_calibration_error(softmax(ez, fit.temperature), ey, n_bins),
        n_val=len(y),
        n_bins=n_bins,
        ece_split=split,
        temperature_at_bound=fit.at_bound,
        conformal=conformal,
    )
