r"""Objectivity, reliability and validity: the analyses of Segebarth et al. (eLife 2020) for experts,
consensus and models side by side.

The first part of this module is array- and table-level (numpy, scipy, :mod:`~fiji_consensus.metrics`):
statistics with the paper's effect sizes, Grubbs' outlier test, per-image measures, uncertainty against
expert disagreement. The last part, :func:`run_evaluate`, is the job behind ``fiji-consensus evaluate``:
it reads experts, an optional consensus, model predictions, groups and regions, and writes CSV tables,
``summary.json``, ``config.json``, ``inputs.csv`` (every input file with its SHA-256) and ``report.html``.

Definitions (``../shared/notes/anchors.md``)
---------------------------------------------
Kruskal-Wallis
    ``H`` with the tie correction, ``p`` from χ² with ``k - 1`` degrees of freedom; effect size
    ``η²_H = (H - k + 1) / (N - k)`` (Tomczak & Tomczak 2014; it can be slightly negative for tiny effects,
    and is reported as computed).
Mann-Whitney U
    As the study's code computes it: ``U`` of the first sample, ``Z = (U - n₁n₂/2) / √(n₁n₂(N+1)/12)``
    (no tie or continuity correction), effect size ``η² = Z² / N`` with ``N = n₁ + n₂``; the two-sided
    ``p`` from the normal approximation with tie and continuity correction (scipy's asymptotic method).
    Pairwise tests are Bonferroni-corrected: significant when ``p <= α / m`` for ``m`` comparisons
    (the study divides by the number of groups, which equals ``m`` for its 3 groups), with
    ``p_bonferroni = min(1, m p)``. The direction of a significant effect is the group with the larger
    median.
Grubbs (two-sided)
    ``G = max |x - x̄| / s`` (``s`` with ``ddof = 1``) against
    ``G_crit = (N - 1)/√N · √(t² / (N - 2 + t²))`` with ``t`` the upper ``α / (2N)`` quantile of Student's
    t with ``N - 2`` degrees of freedom; repeated on the remaining values while an outlier is found.
    Outliers are **flagged, never removed** (the study used ``outliers.smirnov_grubbs``, which iterates
    the same way).
Reliability
    Spread (sample standard deviation, ``ddof = 1``) of an effect size across the models of one training
    strategy (and, for comparison, across the experts); pairwise ROI-F1 between them; per-image
    coefficient of variation of object counts; ICC(2,1) of the counts.
Uncertainty vs disagreement
    For each pixel the number ``k`` of the ``R`` experts who marked it (fraction ``k / R``): mean
    uncertainty and probability per ``k``; QUBIQ-style Dice of ``probability > τ`` against
    ``fraction > τ`` for ``τ = 0.1, ..., 0.9`` (strictly above, so ``τ = 0.5`` is a strict majority);
    calibration of the probability against the fraction in equal-width bins, with the expected calibration
    error ``ECE = Σ_b (n_b / N) |p̄_b - f̄_b|``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .uncertainty import qa_score

__all__ = [
    "QUBIQ_THRESHOLDS",
    "MEASURES",
    "KruskalResult",
    "MannWhitneyResult",
    "GrubbsResult",
    "kruskal_wallis",
    "mann_whitney",
    "bonferroni",
    "grubbs_critical",
    "grubbs",
    "classify_against_experts",
    "region_measures",
    "fraction_table",
    "calibration_table",
    "expected_calibration_error",
    "qubiq_dice",
    "validity_statistics",
    "effect_spread",
    "agreement_summary",
    "spearman",
    "qa_agreement",
    "Evaluation",
    "run_evaluate",
]

logger = logging.getLogger(__name__)

#: Thresholds of the QUBIQ-style Dice: 0.1, 0.2, ..., 0.9.
QUBIQ_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))

#: Per-image measures of the validity analysis (objects inside the region).
MEASURES = ("count", "density", "mean_intensity")


def _finite(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _nanmean(x: Any) -> float:
    a = _finite(x)
    return float(a.mean()) if a.size else math.nan


def _nansd(x: Any) -> float:
    a = _finite(x)
    return float(a.std(ddof=1)) if a.size >= 2 else math.nan


def _tie_sum(ranks_source: np.ndarray) -> float:
    """``Σ (t³ - t)`` over groups of tied values."""
    _, t = np.unique(ranks_source, return_counts=True)
    t = t.astype(np.float64)
    return float((t**3 - t).sum())


# ------------------------------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class KruskalResult:
    """Kruskal-Wallis H test with the η²_H effect size (NaN fields where undefined)."""

    h: float
    p: float
    df: int
    n: int
    k: int
    eta2_h: float


def kruskal_wallis(samples: Sequence[Any]) -> KruskalResult:
    """Kruskal-Wallis H test of ``k`` independent samples and its effect size η²_H.

    Parameters
    ----------
    samples : sequence of array_like
        One 1-D sample per group; NaN values are left out; empty groups are dropped.

    Returns
    -------
    KruskalResult
        ``h`` (tie-corrected), ``p`` (χ², ``k - 1`` degrees of freedom), ``df``, ``n`` (values used),
        ``k`` (non-empty groups) and ``eta2_h = (H - k + 1) / (N - k)``. ``h``, ``p`` and ``eta2_h`` are NaN
        with fewer than 2 groups, ``N <= k`` or when every value is equal.

    Examples
    --------
    >>> r = kruskal_wallis([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    >>> round(r.h, 4), round(r.p, 4), round(r.eta2_h, 4)
    (7.2, 0.0273, 0.8667)
    """
    from scipy import stats

    arrays = [_finite(s) for s in samples]
    arrays = [a for a in arrays if a.size]
    k = len(arrays)
    n = int(sum(a.size for a in arrays))
    nan = math.nan
    if k < 2 or n <= k:
        return KruskalResult(nan, nan, max(k - 1, 0), n, k, nan)
    allv = np.concatenate(arrays)
    ranks = stats.rankdata(allv)
    ties = _tie_sum(allv)
    corr = 1.0 - ties / (n**3 - n)
    if corr <= 0:
        return KruskalResult(nan, nan, k - 1, n, k, nan)
    h = 0.0
    start = 0
    for a in arrays:
        r = ranks[start : start + a.size]
        h += r.sum() ** 2 / a.size
        start += a.size
    h = (12.0 / (n * (n + 1)) * h - 3.0 * (n + 1)) / corr
    p = float(stats.chi2.sf(h, k - 1))
    return KruskalResult(float(h), p, k - 1, n, k, float((h - k + 1) / (n - k)))


@dataclass(frozen=True)
class MannWhitneyResult:
    """Two-sided Mann-Whitney U test with the η² = Z²/N effect size."""

    u: float
    z: float
    p: float
    n1: int
    n2: int
    eta2: float
    median1: float
    median2: float


def mann_whitney(
    a: Any, b: Any, *, method: str = "asymptotic", tie_correction: bool = False
) -> MannWhitneyResult:
    """Two-sided Mann-Whitney U test of two independent samples and its effect size ``η² = Z² / N``.

    By default this is the study's computation (``Source_code/compute_statistics.ipynb`` of Segebarth
    et al. 2020): ``p`` from scipy's ``mannwhitneyu(a, b, alternative="two-sided")`` as it was then
    (normal approximation with tie and continuity correction), and
    ``Z = (U - n₁n₂/2) / √(n₁n₂(N + 1)/12)`` without tie or continuity correction.

    Parameters
    ----------
    a, b : array_like
        1-D samples; NaN values are left out.
    method : {"asymptotic", "exact", "auto"}
        How scipy computes ``p`` (``"exact"``/``"auto"``: exact distribution for small samples without
        ties). Default ``"asymptotic"``, as in the study.
    tie_correction : bool
        Use the tie-corrected variance of ``U`` for ``Z`` (default False, as in the study).

    Returns
    -------
    MannWhitneyResult
        ``u`` (U of ``a``, as scipy), ``z`` (positive when ``a`` tends to be larger), ``p``, ``n1``,
        ``n2``, ``eta2 = z**2 / (n1 + n2)`` and the medians. NaN fields when a sample is empty; when every
        value is equal ``z = eta2 = 0`` and ``p = 1``.

    Examples
    --------
    >>> r = mann_whitney([1, 2, 3, 4], [5, 6, 7, 8])
    >>> r.u, round(r.z, 4), round(r.eta2, 4), round(r.p, 4)
    (0.0, -2.3094, 0.6667, 0.0304)
    >>> round(mann_whitney([1, 2, 3, 4], [5, 6, 7, 8], method="exact").p, 4)   # 2 / C(8, 4)
    0.0286
    """
    from scipy import stats

    if method not in ("asymptotic", "exact", "auto"):
        raise ValueError(f"method must be 'asymptotic', 'exact' or 'auto'; got {method!r}")
    x, y = _finite(a), _finite(b)
    n1, n2 = int(x.size), int(y.size)
    nan = math.nan
    med1 = float(np.median(x)) if n1 else nan
    med2 = float(np.median(y)) if n2 else nan
    if n1 == 0 or n2 == 0:
        return MannWhitneyResult(nan, nan, nan, n1, n2, nan, med1, med2)
    allv = np.concatenate([x, y])
    n = n1 + n2
    ranks = stats.rankdata(allv)
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    if np.all(allv == allv[0]):
        return MannWhitneyResult(u, 0.0, 1.0, n1, n2, 0.0, med1, med2)
    ties = _tie_sum(allv) / (n * (n - 1)) if tie_correction else 0.0
    z = (u - n1 * n2 / 2.0) / math.sqrt(n1 * n2 / 12.0 * ((n + 1) - ties))
    p = float(stats.mannwhitneyu(x, y, alternative="two-sided", method=method).pvalue)
    return MannWhitneyResult(u, float(z), p, n1, n2, float(z * z / n), med1, med2)


def bonferroni(p: Any, m: int) -> np.ndarray | float:
    """Bonferroni-adjusted p value(s): ``min(1, m p)`` (NaN stays NaN).

    >>> bonferroni(0.02, 3), bonferroni([0.2, 0.5], 3).tolist()
    (0.06, [0.6000000000000001, 1.0])
    """
    if int(m) < 1:
        raise ValueError(f"m (number of comparisons) must be >= 1; got {m}")
    arr = np.minimum(np.asarray(p, dtype=np.float64) * int(m), 1.0)
    return float(arr) if arr.ndim == 0 else arr


def grubbs_critical(n: int, alpha: float = 0.05) -> float:
    """Critical value of the two-sided Grubbs test for ``n`` values at level ``alpha``.

    >>> round(grubbs_critical(10, 0.05), 3)    # table value 2.290
    2.29
    """
    from scipy import stats

    if n < 3:
        raise ValueError(f"Grubbs' test needs at least 3 values; got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    t = float(stats.t.ppf(1.0 - alpha / (2.0 * n), n - 2))
    return (n - 1) / math.sqrt(n) * math.sqrt(t * t / (n - 2 + t * t))


@dataclass(frozen=True)
class GrubbsResult:
    """Result of :func:`grubbs`: which values are outliers, and each step of the iteration."""

    outlier: np.ndarray  # bool, one per input value (NaN values are never outliers)
    steps: tuple[dict[str, float], ...]  # index, value, G, G_crit of every test made (the last one failed)


def grubbs(values: Any, *, alpha: float = 0.05, max_outliers: int | None = None) -> GrubbsResult:
    """Two-sided Grubbs test, repeated while it finds an outlier; outliers are flagged, never removed.

    Parameters
    ----------
    values : array_like, shape (N,)
        The values (NaN values are skipped).
    alpha : float
        Significance level of each test (default 0.05).
    max_outliers : int, optional
        Stop after this many outliers (default: as long as at least 3 values remain).

    Returns
    -------
    GrubbsResult
        ``outlier`` (bool, shape (N,)) and ``steps``: one dict per test with the tested ``index`` (into
        ``values``), its ``value``, ``G`` and ``G_crit``.

    Examples
    --------
    The NIST/SEMATECH e-Handbook example (section 1.3.5.17): G = 2.4687 > G_crit = 2.1266.

    >>> x = [199.31, 199.53, 200.19, 200.82, 201.92, 201.95, 202.18, 245.57]
    >>> r = grubbs(x)
    >>> r.outlier.tolist()
    [False, False, False, False, False, False, False, True]
    >>> round(r.steps[0]["G"], 4), round(r.steps[0]["G_crit"], 4)
    (2.4688, 2.1266)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    out = np.zeros(x.shape, dtype=bool)
    active = np.isfinite(x)
    steps: list[dict[str, float]] = []
    while active.sum() >= 3 and (max_outliers is None or out.sum() < max_outliers):
        idx = np.flatnonzero(active)
        v = x[idx]
        sd = v.std(ddof=1)
        if not sd > 0:
            break
        dev = np.abs(v - v.mean())
        j = int(np.argmax(dev))
        g = float(dev[j] / sd)
        crit = grubbs_critical(v.size, alpha)
        steps.append({"index": int(idx[j]), "value": float(v[j]), "G": g, "G_crit": crit})
        if g <= crit:
            break
        out[idx[j]] = True
        active[idx[j]] = False
    return GrubbsResult(out, tuple(steps))


# ------------------------------------------------------------------------------------------ objectivity


def classify_against_experts(value: float, expert_values: Sequence[float]) -> str:
    """Where a model's score on one image falls relative to the experts' scores on that image.

    Returns ``"above"`` (better than the best expert), ``"below"`` (worse than the worst expert),
    ``"within"`` (in the experts' range, ends included) or ``"undefined"`` (the model's score or every
    expert's score is NaN).

    >>> classify_against_experts(0.9, [0.5, 0.8]), classify_against_experts(0.4, [0.5, 0.8])
    ('above', 'below')
    >>> classify_against_experts(0.5, [0.5, 0.8])
    'within'
    """
    e = _finite(expert_values)
    if not e.size or not math.isfinite(value):
        return "undefined"
    if value > e.max():
        return "above"
    if value < e.min():
        return "below"
    return "within"


# ------------------------------------------------------------------------------------------ validity


def region_measures(
    mask: Any,
    image: Any,
    *,
    region: Any = None,
    ignore: Any = None,
    min_size: int = 0,
) -> dict[str, float]:
    """Objects of a mask inside a region: count, density and mean intensity.

    Pixels outside ``region`` and inside ``ignore`` are set to background **before** labelling
    (8-connectivity, objects of area ``< min_size`` dropped), as the study treats ignore masks.

    Parameters
    ----------
    mask : array_like, shape (Y, X)
        Binary mask or probability (foreground ``> 0.5``).
    image : array_like, shape (Y, X)
        The intensity image.
    region : array_like of bool, shape (Y, X), optional
        Where to count (default: the whole image).
    ignore : array_like of bool, shape (Y, X), optional
        Pixels left out (also of the region's area).
    min_size : int
        Smallest object area kept.

    Returns
    -------
    dict
        ``count`` (objects), ``region_area`` (pixels), ``density`` (objects per 10⁶ pixels of region) and
        ``mean_intensity`` (mean over objects of each object's mean intensity; NaN without objects).

    Examples
    --------
    >>> m = np.zeros((4, 6), bool); m[0, 0] = m[2:4, 3:5] = True
    >>> img = np.arange(24, dtype=float).reshape(4, 6)
    >>> r = region_measures(m, img)
    >>> r["count"], r["mean_intensity"]     # (0 + mean(15, 16, 21, 22)) / 2
    (2, 9.25)
    """
    from scipy import ndimage

    from .matching import label_objects

    img = np.asarray(image)
    shape = np.shape(mask)
    if img.shape != shape:
        raise ValueError(f"image and mask must have the same shape; got {img.shape} and {shape}")
    keep = np.ones(shape, dtype=bool)
    if region is not None:
        reg = np.asarray(region)
        if reg.shape != shape:
            raise ValueError(f"region must have the mask's shape {shape}; got {reg.shape}")
        keep &= reg.astype(bool)
    if ignore is not None:
        keep &= ~np.asarray(ignore, dtype=bool)
    labels = label_objects(mask, min_size=min_size, ignore=~keep)
    n = int(labels.max(initial=0))
    area = int(keep.sum())
    if n:
        means = ndimage.mean(img.astype(np.float64), labels, index=np.arange(1, n + 1))
        mean_int = float(np.mean(means))
    else:
        mean_int = math.nan
    return {
        "count": n,
        "region_area": area,
        "density": n / area * 1e6 if area else math.nan,
        "mean_intensity": mean_int,
    }


def validity_statistics(
    rows: Sequence[Mapping[str, Any]],
    *,
    measures: Sequence[str] = MEASURES,
    alpha: float = 0.05,
    control: str | None = None,
    comparisons: str = "all",
) -> dict[str, list[dict[str, Any]]]:
    """Group differences per rater: Kruskal-Wallis, pairwise Mann-Whitney (Bonferroni), Grubbs outliers.

    Parameters
    ----------
    rows : sequence of dict
        One row per image and rater with keys ``image``, ``group``, ``rater`` and every ``measure``.
        Rows with an empty group are left out.
    measures : sequence of str
        Columns to analyse.
    alpha : float
        Family-wise significance level (Bonferroni over the pairwise comparisons of one rater and measure)
        and level of Grubbs' test.
    control : str, optional
        The control group: adds ``<measure>_normalised`` (value / control mean of that rater) to the rows.
    comparisons : {"all", "control"}
        All pairs of groups, or each group against ``control``.

    Returns
    -------
    dict
        ``tests`` (Kruskal-Wallis per rater and measure), ``pairwise`` (Mann-Whitney per pair of groups),
        ``outliers`` (Grubbs within each group: one row per flagged value) and ``rows`` (copies of the
        input rows with ``<measure>_outlier`` flags and, with a control, normalised values).
    """
    if comparisons not in ("all", "control"):
        raise ValueError(f"comparisons must be 'all' or 'control'; got {comparisons!r}")
    if comparisons == "control" and control is None:
        raise ValueError("comparisons='control' needs a control group")
    out_rows = [dict(r) for r in rows]
    used = [r for r in out_rows if r.get("group") not in (None, "")]
    raters = list(dict.fromkeys(r["rater"] for r in used))
    groups = sorted({str(r["group"]) for r in used}, key=_natural_key)
    if control is not None and used and control not in groups:
        raise ValueError(f"control group {control!r} is not among the groups {groups}")
    tests: list[dict[str, Any]] = []
    pairwise: list[dict[str, Any]] = []
    outliers: list[dict[str, Any]] = []
    for rater in raters:
        rr = [r for r in used if r["rater"] == rater]
        for measure in measures:
            by_group = {g: [r for r in rr if str(r["group"]) == g] for g in groups}
            vals = {g: np.array([_float(r.get(measure)) for r in by_group[g]]) for g in groups}
            kw = kruskal_wallis([vals[g] for g in groups])
            tests.append({
                "rater": rater, "measure": measure, "test": "kruskal-wallis", "n": kw.n, "k": kw.k,
                "H": kw.h, "df": kw.df, "p": kw.p, "eta2_h": kw.eta2_h,
                "significant": bool(kw.p < alpha) if math.isfinite(kw.p) else False,
            })
            if control is not None:
                cmean = _nanmean(vals[control])
                for r in rr:
                    v = _float(r.get(measure))
                    r[f"{measure}_normalised"] = v / cmean if cmean and math.isfinite(cmean) else math.nan
            if comparisons == "control":
                pairs = [(control, g) for g in groups if g != control]
            else:
                pairs = list(combinations(groups, 2))
            m = max(len(pairs), 1)
            for ga, gb in pairs:
                mw = mann_whitney(vals[ga], vals[gb])
                p_adj = bonferroni(mw.p, m) if math.isfinite(mw.p) else math.nan
                sig = bool(math.isfinite(mw.p) and mw.p <= alpha / m)
                direction = ""
                if sig:
                    direction = ga if mw.median1 > mw.median2 else gb if mw.median2 > mw.median1 else ""
                pairwise.append({
                    "rater": rater, "measure": measure, "group_a": ga, "group_b": gb, "n_a": mw.n1,
                    "n_b": mw.n2, "median_a": mw.median1, "median_b": mw.median2, "U": mw.u, "Z": mw.z,
                    "p": mw.p, "m": m, "alpha_bonferroni": alpha / m, "p_bonferroni": p_adj,
                    "eta2": mw.eta2, "significant": sig, "direction": direction,
                })
            for g in groups:
                gres = grubbs(vals[g], alpha=alpha)
                for r, flag in zip(by_group[g], gres.outlier):
                    r[f"{measure}_outlier"] = bool(flag)
                for s in gres.steps:
                    if gres.outlier[s["index"]]:
                        r = by_group[g][s["index"]]
                        outliers.append({
                            "rater": rater, "measure": measure, "group": g, "image": r["image"],
                            "value": s["value"], "G": s["G"], "G_crit": s["G_crit"], "n": int(np.isfinite(vals[g]).sum()),
                        })
    return {"tests": tests, "pairwise": pairwise, "outliers": outliers, "rows": out_rows}


def effect_spread(
    tests: Sequence[Mapping[str, Any]],
    pairwise: Sequence[Mapping[str, Any]],
    strategies: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """Reliability as in the paper: the spread (SD, ``ddof = 1``) of each effect size across the raters of
    one strategy.

    Parameters
    ----------
    tests, pairwise
        The ``tests`` and ``pairwise`` tables of :func:`validity_statistics`.
    strategies
        Strategy name → rater names (e.g. ``{"experts": [...], "seeds": ["m0", "m1", "m2"]}``);
        strategies with fewer than 2 raters get NaN spreads.

    Returns
    -------
    list of dict
        One row per strategy, measure and comparison (``"kruskal-wallis"`` or ``"<a> vs <b>"``):
        ``effect`` (``eta2_h`` or ``eta2``), ``n_raters``, ``mean``, ``sd``, ``min``, ``max`` and
        ``n_significant`` (raters whose test was significant).
    """
    rows: list[dict[str, Any]] = []
    for strategy, members in strategies.items():
        members = list(members)
        kw: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for t in tests:
            if t["rater"] in members:
                kw.setdefault((t["measure"], "kruskal-wallis"), []).append(t)
        for p in pairwise:
            if p["rater"] in members:
                kw.setdefault((p["measure"], f"{p['group_a']} vs {p['group_b']}"), []).append(p)
        for (measure, comparison), items in kw.items():
            effect = "eta2_h" if comparison == "kruskal-wallis" else "eta2"
            vals = _finite([it[effect] for it in items])
            rows.append({
                "strategy": strategy, "measure": measure, "comparison": comparison, "effect": effect,
                "n_raters": len(items), "mean": float(vals.mean()) if vals.size else math.nan,
                "sd": _nansd(vals), "min": float(vals.min()) if vals.size else math.nan,
                "max": float(vals.max()) if vals.size else math.nan,
                "n_significant": int(sum(bool(it["significant"]) for it in items)),
            })
    return rows


# ------------------------------------------------------------------------------------------ reliability


def agreement_summary(
    pair_rows: Sequence[Mapping[str, Any]],
    counts: Mapping[str, Sequence[float]],
    strategies: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """Agreement within each strategy: pairwise ROI-F1/Dice, count CV per image, ICC(2,1) of counts.

    Parameters
    ----------
    pair_rows
        Per-image pairwise rows with ``rater_a``, ``rater_b``, ``roi_f1``, ``dice``.
    counts
        Rater → object count per image (same image order for every rater).
    strategies
        Strategy name → rater names.

    Returns
    -------
    list of dict
        One row per strategy: ``n_raters``, ``mean_pairwise_roi_f1``, ``mean_pairwise_dice`` (over pairs
        and images), ``mean_count_cv`` (mean over images of SD/mean of the raters' counts, ``ddof = 1``),
        ``icc_counts`` (ICC(2,1), images × raters; NaN with < 2 images or raters).
    """
    rows = []
    for strategy, members in strategies.items():
        members = [m for m in members if m in counts]
        ms = set(members)
        prs = [p for p in pair_rows if p["rater_a"] in ms and p["rater_b"] in ms]
        table = np.array([counts[m] for m in members], dtype=np.float64).T if members else np.zeros((0, 0))
        cvs = []
        for row in table:
            mu = row.mean() if row.size else math.nan
            cvs.append(row.std(ddof=1) / mu if row.size >= 2 and mu > 0 else math.nan)
        icc = math.nan
        if table.ndim == 2 and table.shape[0] >= 2 and table.shape[1] >= 2:
            icc = float(metrics.icc(table, form="ICC(2,1)"))
        rows.append({
            "strategy": strategy,
            "n_raters": len(members),
            "raters": " ".join(members),
            "mean_pairwise_roi_f1": _nanmean([p["roi_f1"] for p in prs]),
            "mean_pairwise_dice": _nanmean([p["dice"] for p in prs]),
            "mean_count_cv": _nanmean(cvs),
            "icc_counts": icc,
        })
    return rows


# ------------------------------------------------------------------------------------------ uncertainty


def _check_maps(*arrays: tuple[str, Any]) -> list[np.ndarray]:
    out = []
    shape = None
    for name, a in arrays:
        arr = np.asarray(a)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (Y, X) array; got shape {arr.shape}")
        if shape is not None and arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}; got {arr.shape}")
        shape = arr.shape
        out.append(arr)
    return out


def _keep(ignore: Any, shape: tuple[int, ...]) -> np.ndarray:
    if ignore is None:
        return np.ones(shape, dtype=bool)
    ign = np.asarray(ignore, dtype=bool)
    if ign.shape != shape:
        raise ValueError(f"ignore must have shape {shape}; got {ign.shape}")
    return ~ign


def fraction_table(
    votes: Any,
    n_experts: int,
    *,
    probability: Any,
    uncertainty: Any = None,
    ignore: Any = None,
) -> dict[str, np.ndarray]:
    """Sums per expert-vote level ``k = 0..R`` (for accumulating over images).

    Parameters
    ----------
    votes : array_like of int, shape (Y, X)
        Number of experts who marked each pixel (``0..n_experts``).
    n_experts : int
        ``R``.
    probability : array_like, shape (Y, X)
        Model foreground probability.
    uncertainty : array_like, shape (Y, X), optional
        Model uncertainty map.
    ignore : array_like of bool, optional
        Pixels left out.

    Returns
    -------
    dict
        ``n_pixels``, ``sum_probability``, ``sum_uncertainty`` (zeros without uncertainty), each of
        shape ``(R + 1,)``.

    Examples
    --------
    >>> v = np.array([[0, 0, 1, 2]]); p = np.array([[0.0, 0.2, 0.5, 1.0]])
    >>> t = fraction_table(v, 2, probability=p, uncertainty=p)
    >>> t["n_pixels"].tolist(), t["sum_probability"].tolist()
    ([2, 1, 1], [0.2, 0.5, 1.0])
    """
    v, p = _check_maps(("votes", votes), ("probability", probability))
    keep = _keep(ignore, v.shape)
    v = v[keep].astype(np.int64)
    if v.size and (v.min() < 0 or v.max() > n_experts):
        raise ValueError(f"votes must lie in 0..{n_experts}; got {v.min()}..{v.max()}")
    m = n_experts + 1
    res = {
        "n_pixels": np.bincount(v, minlength=m),
        "sum_probability": np.bincount(v, weights=p[keep].astype(np.float64), minlength=m),
        "sum_uncertainty": np.zeros(m),
    }
    if uncertainty is not None:
        (u,) = _check_maps(("uncertainty", uncertainty))
        if u.shape != p.shape:
            raise ValueError(f"uncertainty must have shape {p.shape}; got {u.shape}")
        res["sum_uncertainty"] = np.bincount(v, weights=u[keep].astype(np.float64), minlength=m)
    return res


def calibration_table(
    probability: Any, target: Any, *, bins: int = 10, ignore: Any = None
) -> dict[str, np.ndarray]:
    """Sums per equal-width probability bin: pixel count, sum of probabilities, sum of target fractions.

    Bin ``b`` holds ``b/B <= p < (b+1)/B`` (``p = 1`` in the last bin). Add the tables of several images and
    pass them to :func:`expected_calibration_error`.

    >>> t = calibration_table(np.array([[0.05, 0.15, 0.95]]), np.array([[0.0, 0.5, 1.0]]), bins=10)
    >>> t["n_pixels"].tolist()
    [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    """
    p, f = _check_maps(("probability", probability), ("target", target))
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    keep = _keep(ignore, p.shape)
    pv = p[keep].astype(np.float64)
    fv = f[keep].astype(np.float64)
    if pv.size and (pv.min() < 0 or pv.max() > 1):
        raise ValueError(f"probability must lie in [0, 1]; got {pv.min()}..{pv.max()}")
    b = np.minimum((pv * bins).astype(np.int64), bins - 1)
    return {
        "n_pixels": np.bincount(b, minlength=bins),
        "sum_probability": np.bincount(b, weights=pv, minlength=bins),
        "sum_target": np.bincount(b, weights=fv, minlength=bins),
    }


def expected_calibration_error(table: Mapping[str, np.ndarray]) -> float:
    """ECE ``Σ_b (n_b / N) |p̄_b - f̄_b|`` of a :func:`calibration_table` (NaN without pixels).

    >>> t = calibration_table(np.array([[0.05, 0.15, 0.95]]), np.array([[0.0, 0.5, 1.0]]))
    >>> round(expected_calibration_error(t), 4)     # (0.05 + 0.35 + 0.05) / 3
    0.15
    """
    n = np.asarray(table["n_pixels"], dtype=np.float64)
    total = n.sum()
    if total == 0:
        return math.nan
    nz = n > 0
    gap = np.abs(np.asarray(table["sum_probability"])[nz] - np.asarray(table["sum_target"])[nz]) / n[nz]
    return float((n[nz] / total * gap).sum())


def qubiq_dice(
    probability: Any,
    reference: Any,
    *,
    thresholds: Sequence[float] = QUBIQ_THRESHOLDS,
    ignore: Any = None,
) -> np.ndarray:
    """QUBIQ-style Dice of a probability map against a soft reference at several thresholds.

    Both maps are binarised **strictly above** each threshold (``τ = 0.5`` on an expert fraction is a
    strict majority). Values are rounded to 6 decimals first, so a float32 fraction such as ``1/5`` equals
    the threshold ``0.2`` instead of lying just above it.

    Parameters
    ----------
    probability, reference : array_like, shape (Y, X)
        Values in [0, 1] (e.g. model probability and fraction of experts).
    thresholds : sequence of float
        Default :data:`QUBIQ_THRESHOLDS` (0.1 ... 0.9); average the result with :func:`numpy.nanmean`.
    ignore : array_like of bool, optional
        Pixels left out.

    Returns
    -------
    ndarray of float64, shape (T,)
        Dice per threshold; NaN where both binarised maps are empty.

    Examples
    --------
    >>> f = np.array([[0.2, 0.4, 0.6, 1.0]])        # 1, 2, 3, 5 of 5 experts
    >>> p = np.array([[0.3, 0.3, 0.7, 0.9]])
    >>> qubiq_dice(p, f, thresholds=[0.2, 0.5]).round(3).tolist()   # 1 of 5 is not > 0.2
    [0.857, 1.0]
    """
    p, f = _check_maps(("probability", probability), ("reference", reference))
    keep = _keep(ignore, p.shape)
    pv = np.round(p[keep].astype(np.float64), 6)
    fv = np.round(f[keep].astype(np.float64), 6)
    th = np.asarray(thresholds, dtype=np.float64).ravel()
    out = np.empty(th.size)
    for i, t in enumerate(th):
        a, b = pv > t, fv > t
        s = int(a.sum()) + int(b.sum())
        out[i] = 2.0 * np.count_nonzero(a & b) / s if s else math.nan
    return out


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation (average ranks for ties) over the pairs where both are finite.

    NaN when fewer than 3 pairs remain or either side is constant.

    >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 25]), 3)
    0.8
    >>> spearman([1, 2, 3], [5, 5, 5])
    nan
    """
    from scipy.stats import spearmanr

    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs two sequences of equal length; got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def qa_agreement(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Does a model's per-image QA score point at the images where it agrees least with the consensus?

    ``rows``: one model's objectivity rows (``image``, ``qa_score``, ``roi_f1``, ``dice``). Returns
    ``qa_n_images``, the Spearman correlations of the QA score with ROI-F1 and with Dice (negative = images
    with a higher QA score agree less: reviewing in QA order finds the worst first), the image ``predict``
    would put first for review and that image's rank by ROI-F1 (1 = the model's worst image).

    >>> rows = [{"image": "a", "qa_score": 0.5, "roi_f1": 0.6, "dice": 0.6},
    ...         {"image": "b", "qa_score": 0.3, "roi_f1": 0.8, "dice": 0.7},
    ...         {"image": "c", "qa_score": 0.2, "roi_f1": 0.9, "dice": 0.8}]
    >>> r = qa_agreement(rows)
    >>> r["qa_spearman_roi_f1"], r["qa_review_first"], r["qa_review_first_roi_f1_rank"]
    (-1.0, 'a', 1)
    """
    rs = [r for r in rows if math.isfinite(_float(r.get("qa_score")))]
    out: dict[str, Any] = {"qa_n_images": len(rs), "qa_spearman_roi_f1": math.nan, "qa_spearman_dice": math.nan,
                           "qa_review_first": None, "qa_review_first_roi_f1_rank": None}
    if not rs:
        return out
    qa = [_float(r["qa_score"]) for r in rs]
    out["qa_spearman_roi_f1"] = spearman(qa, [_float(r.get("roi_f1")) for r in rs])
    out["qa_spearman_dice"] = spearman(qa, [_float(r.get("dice")) for r in rs])
    first = max(rs, key=lambda r: _float(r["qa_score"]))
    out["qa_review_first"] = first["image"]
    f1 = _float(first.get("roi_f1"))
    if math.isfinite(f1):
        out["qa_review_first_roi_f1_rank"] = 1 + sum(
            1 for r in rs if math.isfinite(_float(r.get("roi_f1"))) and _float(r["roi_f1"]) < f1)
    return out


# ------------------------------------------------------------------------------------------ job helpers


def _float(v: Any) -> float:
    try:
        return float(v) if v is not None and v != "" else math.nan
    except (TypeError, ValueError):
        return math.nan


def _natural_key(s: str) -> tuple:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


@dataclass
class _ModelSource:
    name: str
    root: Path
    kind: str  # "predict" or "masks"
    paths: dict[str, Path]
    uncertainty: dict[str, Path] = field(default_factory=dict)
    measure: str | None = None
    threshold: float = 0.5


def _open_model(name: str, folder: Path, ids: Sequence[str]) -> _ModelSource:
    from . import io as fio

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prediction folder of model {name!r} does not exist: {folder}")
    try:
        if (folder / "probability").is_dir():
            paths = fio.pair_annotations(ids, folder / "probability", expert=name)
            unc = {}
            if (folder / "uncertainty").is_dir():
                unc = fio.pair_annotations(ids, folder / "uncertainty", expert=name, required=False)
            measure, threshold = None, 0.5
            cfg = folder / "config.json"
            if cfg.is_file():
                c = fio.read_json(cfg).get("config", {})
                measure = c.get("uncertainty")
                threshold = float(c.get("threshold") or 0.5)
            first = folder / "per_image" / f"{ids[0]}.json" if ids else None
            if first is not None and first.is_file():
                threshold = float(fio.read_json(first).get("threshold") or threshold)
            return _ModelSource(name, folder, "predict", paths, unc, measure, threshold)
        return _ModelSource(name, folder, "masks", fio.pair_annotations(ids, folder, expert=name))
    except fio.AnnotationError as exc:
        raise fio.AnnotationError(f"model {name!r}: {exc}") from None


def _read_model(src: _ModelSource, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """Return ``(probability float32, is_soft, uncertainty or None)`` of one image."""
    from . import io as fio

    path = src.paths[image_id]
    prob: np.ndarray | None = None
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = np.squeeze(np.asarray(tifffile.imread(path)))
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isin(arr, (0.0, 1.0))):
            if arr.shape != tuple(shape):
                raise fio.AnnotationError(
                    f"model {src.name!r}: {path} has shape {arr.shape}, but its image has shape {tuple(shape)}"
                )
            if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
                raise fio.AnnotationError(
                    f"model {src.name!r}: {path} holds values outside [0, 1]; expected a probability map or a mask"
                )
            prob = arr.astype(np.float32)
    soft = prob is not None
    if prob is None:
        try:
            prob = fio.read_mask(path, shape).astype(np.float32)
        except fio.AnnotationError as exc:
            raise fio.AnnotationError(f"model {src.name!r}: {exc}") from None
    unc = None
    if image_id in src.uncertainty:
        unc = fio.read_image(src.uncertainty[image_id]).astype(np.float32)
        if unc.shape != prob.shape:
            raise fio.AnnotationError(
                f"model {src.name!r}: uncertainty {src.uncertainty[image_id]} has shape {unc.shape}; expected {prob.shape}"
            )
    return prob, soft, unc


def _example_window(any_mask: np.ndarray, size: int = 256) -> tuple[int, int, int, int]:
    """The ``size``-square window (stride size/8) with the most annotated pixels: ``(y0, y1, x0, x1)``."""
    h, w = any_mask.shape
    sy, sx = min(size, h), min(size, w)
    ii = np.pad(any_mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(size // 8, 1)
    best, pos = -1, (0, 0)
    for y in list(range(0, h - sy + 1, step)) or [0]:
        for x in list(range(0, w - sx + 1, step)) or [0]:
            s = ii[y + sy, x + sx] - ii[y, x + sx] - ii[y + sy, x] + ii[y, x]
            if s > best:
                best, pos = int(s), (y, x)
    return pos[0], pos[0] + sy, pos[1], pos[1] + sx


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _confusion(cand: np.ndarray, ref: np.ndarray, keep: np.ndarray | None) -> tuple[float, float]:
    c, r = (cand, ref) if keep is None else (cand[keep], ref[keep])
    tp = np.count_nonzero(c & r)
    fn = np.count_nonzero(~c & r)
    fp = np.count_nonzero(c & ~r)
    tn = c.size - tp - fn - fp
    return (tp / (tp + fn) if tp + fn else math.nan, tn / (tn + fp) if tn + fp else math.nan)


# ------------------------------------------------------------------------------------------ the job


@dataclass
class Evaluation:
    """Everything :func:`run_evaluate` computed: the tables (lists of dict rows, as written to CSV), the
    summary, the provenance record and the example crops for the report."""

    tables: dict[str, list[dict[str, Any]]]
    summary: dict[str, Any]
    provenance: dict[str, Any]
    experts: list[str]
    models: list[str]
    strategies: dict[str, list[str]]
    example: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


#: The CSV tables and their columns (in this order).
TABLE_COLUMNS: dict[str, list[str]] = {
    "objectivity": [
        "image", "rater", "kind", "dice", "roi_f1", "average_precision", "sensitivity", "specificity",
        "object_precision", "object_recall", "n_objects", "n_reference_objects", "staple_sensitivity",
        "staple_specificity", "class_roi_f1", "class_dice", "expert_min_roi_f1", "expert_max_roi_f1", "qa_score",
    ],
    "objectivity_summary": [
        "rater", "kind", "n_images", "dice", "roi_f1", "average_precision", "sensitivity", "specificity",
        "staple_sensitivity", "staple_specificity", "n_above", "n_within", "n_below", "passes_selection",
        "experts_below_mean_roi_f1",
    ],
    "agreement": ["rater_a", "rater_b", "n_images", "dice", "roi_f1"],
    "agreement_per_image": ["image", "rater_a", "rater_b", "dice", "roi_f1"],
    "reliability": [
        "strategy", "n_raters", "raters", "mean_pairwise_roi_f1", "mean_pairwise_dice", "mean_count_cv",
        "icc_counts",
    ],
    "counts": [
        "image", "group", "rater", "kind", "count", "region_area", "density", "mean_intensity",
        "count_normalised", "density_normalised", "mean_intensity_normalised", "count_outlier",
        "density_outlier", "mean_intensity_outlier",
    ],
    "validity_tests": ["rater", "measure", "test", "n", "k", "H", "df", "p", "eta2_h", "significant"],
    "validity_pairwise": [
        "rater", "measure", "group_a", "group_b", "n_a", "n_b", "median_a", "median_b", "U", "Z", "p", "m",
        "alpha_bonferroni", "p_bonferroni", "eta2", "significant", "direction",
    ],
    "outliers": ["rater", "measure", "group", "image", "value", "G", "G_crit", "n"],
    "effect_spread": [
        "strategy", "measure", "comparison", "effect", "n_raters", "mean", "sd", "min", "max", "n_significant",
    ],
    "uncertainty_vs_fraction": [
        "model", "experts_marking", "fraction", "minority", "n_pixels", "mean_probability", "mean_uncertainty",
    ],
    "calibration": ["model", "bin_low", "bin_high", "n_pixels", "mean_probability", "mean_fraction"],
    "qubiq": ["image", "model", *[f"dice_{t:.1f}" for t in QUBIQ_THRESHOLDS], "mean_dice"],
    "uncertainty_summary": [
        "model", "measure", "mean_uncertainty_unanimous_background", "mean_uncertainty_disagreement",
        "mean_uncertainty_unanimous_foreground", "uncertainty_rises_with_disagreement", "ece",
        "ece_foreground", "qubiq_mean_dice", "qa_n_images", "qa_spearman_roi_f1", "qa_spearman_dice",
        "qa_review_first", "qa_review_first_roi_f1_rank",
    ],
}


def _prepare_out(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {out} exists and is not empty; use --overwrite to replace its files or choose "
            "another folder"
        )
    out.mkdir(parents=True, exist_ok=True)


def run_evaluate(config: Any, *, progress: bool = False) -> dict[str, Any]:
    """Objectivity, reliability, validity and uncertainty analyses; tables and report in ``config.out``.

    Parameters
    ----------
    config : EvaluateConfig
        Experts (project folder or images + expert folders), optional consensus, model predictions,
        groups, regions, control, output folder.
    progress : bool
        Progress bar over images (stderr).

    Returns
    -------
    dict
        The summary, also written to ``summary.json``.

    Examples
    --------
    >>> from fiji_consensus.config import EvaluateConfig
    >>> cfg = EvaluateConfig(project="project", models={"ens": "predictions/ens"},
    ...                      groups="groups.csv", out="reports/eval")      # doctest: +SKIP
    >>> run_evaluate(cfg)["models"]["ens"]["passes_selection"]             # doctest: +SKIP
    True
    """
    return evaluate(config, progress=progress).summary


def evaluate(config: Any, *, progress: bool = False) -> Evaluation:
    """:func:`run_evaluate`, returning the whole :class:`Evaluation` (tables, example crops) too."""
    from . import consensus as cons
    from . import io as fio
    from .jobs import _config_record, _progress, _resolve_dataset, read_groups

    out = Path(config.out)
    ds = _resolve_dataset(config)
    experts = ds.expert_names
    ids = ds.ids
    if config.consensus is None and len(experts) < 2:
        raise ValueError(
            f"a STAPLE consensus needs at least 2 experts; got {len(experts)}: give --consensus or more experts"
        )
    clash = sorted(set(config.models) & set(experts))
    if clash:
        raise ValueError(f"model names must differ from the expert names; got {clash}")
    cons_paths = fio.pair_annotations(ids, config.consensus, expert="consensus") if config.consensus else {}
    region_paths = fio.pair_annotations(ids, config.regions, expert="regions", required=False) if config.regions else {}
    groups: dict[str, str] = {}
    if config.groups is not None:
        all_groups = read_groups(config.groups)
        groups = {i: all_groups[i] for i in ids if i in all_groups}
        missing = [i for i in ids if i not in all_groups]
        if missing:
            logger.warning("%d image(s) have no group in %s and are left out of the group statistics: %s",
                           len(missing), config.groups, ", ".join(missing[:10]))
        if config.control is not None and config.control not in set(groups.values()):
            raise ValueError(
                f"control group {config.control!r} is not among the groups of the images: "
                f"{sorted(set(groups.values()), key=_natural_key)}"
            )
    models = {name: _open_model(name, Path(folder), ids) for name, folder in config.models.items()}
    model_names = list(models)
    strategies: dict[str, list[str]] = {k: list(v) for k, v in config.strategies.items()}
    if not strategies and len(model_names) >= 2:
        strategies = {"models": list(model_names)}
    example_id = config.example if config.example is not None else (ids[0] if ids else None)
    if example_id is not None and example_id not in ds.images:
        raise ValueError(f"example image {example_id!r} is not among the images: {', '.join(ids[:10])}")
    _prepare_out(out, overwrite=config.overwrite)

    R = len(experts)
    raters = [*experts, "consensus", *model_names]
    kinds = {**{e: "expert" for e in experts}, "consensus": "consensus", **{m: "model" for m in model_names}}
    obj_rows: list[dict[str, Any]] = []
    pair_rows: list[dict[str, Any]] = []
    count_rows: list[dict[str, Any]] = []
    counts: dict[str, list[float]] = {r: [] for r in raters}
    qubiq_rows: list[dict[str, Any]] = []
    frac_acc: dict[str, dict[str, np.ndarray]] = {}
    cal_acc: dict[str, dict[str, np.ndarray]] = {}
    cal_fg_acc: dict[str, dict[str, np.ndarray]] = {}
    soft_models: dict[str, bool] = {}
    inputs: list[dict[str, Any]] = []
    example: dict[str, Any] = {}
    staple_meta: list[dict[str, Any]] = []
    min_size = int(config.min_size)

    for image_id in _progress(ids, total=len(ids), enabled=progress, desc="evaluate"):
        image, ann, ignore = ds.load(image_id)
        shape = image.shape
        masks = np.stack([ann[e] > 0 for e in experts])
        keep = None if ignore is None else ~ignore
        st = cons.staple(masks, ignore=ignore) if R >= 2 else None
        if st is not None:
            staple_meta.append({"image": image_id, "n_iter": st.n_iter, "converged": st.converged, "prior": st.prior})
        if cons_paths:
            reference = fio.read_mask(cons_paths[image_id], shape)
        else:
            reference = st.probability > 0.5
        if ignore is not None:
            reference = reference & ~ignore
        model_prob: dict[str, np.ndarray] = {}
        model_unc: dict[str, np.ndarray | None] = {}
        for name, src in models.items():
            prob, soft, unc = _read_model(src, image_id, shape)
            model_prob[name] = prob
            model_unc[name] = unc
            soft_models[name] = soft_models.get(name, True) and soft
        bin_masks = {
            **{e: masks[k] for k, e in enumerate(experts)},
            "consensus": reference,
            **{m: model_prob[m] > models[m].threshold for m in model_names},
        }
        # objectivity: every expert and model against the consensus
        img_rows = []
        for k_r, (name, m) in enumerate(bin_masks.items()):
            if name == "consensus":
                continue
            sens, spec = _confusion(m, reference, keep)
            obj = metrics.object_scores(reference, m, min_size=min_size, ignore=ignore)
            row = {
                "image": image_id, "rater": name, "kind": kinds[name],
                "dice": metrics.dice(reference, m, ignore=ignore), "roi_f1": obj["f1"],
                "average_precision": metrics.average_precision(reference, m, min_size=min_size, ignore=ignore)[0],
                "sensitivity": sens, "specificity": spec, "object_precision": obj["precision"],
                "object_recall": obj["recall"], "n_objects": obj["n_candidate"],
                "n_reference_objects": obj["n_reference"],
            }
            if kinds[name] == "expert" and st is not None:
                row["staple_sensitivity"] = float(st.sensitivity[k_r])
                row["staple_specificity"] = float(st.specificity[k_r])
            if kinds[name] == "model":
                # the per-image QA score `predict` ranks images by (mean uncertainty over predicted foreground)
                unc = model_unc.get(name)
                row["qa_score"] = (qa_score(unc, model_prob[name], threshold=models[name].threshold)
                                   if unc is not None else math.nan)
            img_rows.append(row)
        e_f1 = [r["roi_f1"] for r in img_rows if r["kind"] == "expert"]
        e_dice = [r["dice"] for r in img_rows if r["kind"] == "expert"]
        ef = _finite(e_f1)
        for r in img_rows:
            r["expert_min_roi_f1"] = float(ef.min()) if ef.size else math.nan
            r["expert_max_roi_f1"] = float(ef.max()) if ef.size else math.nan
            if r["kind"] == "model":
                r["class_roi_f1"] = classify_against_experts(r["roi_f1"], e_f1)
                r["class_dice"] = classify_against_experts(r["dice"], e_dice)
        obj_rows += img_rows
        # agreement between every pair of raters
        stack = np.stack([bin_masks[r] for r in raters])
        mat_f1 = metrics.pairwise_matrix(stack, "roi_f1", min_size=min_size, ignore=ignore)
        mat_dice = metrics.pairwise_matrix(stack, "dice", ignore=ignore)
        for i, j in combinations(range(len(raters)), 2):
            pair_rows.append({"image": image_id, "rater_a": raters[i], "rater_b": raters[j],
                              "dice": float(mat_dice[i, j]), "roi_f1": float(mat_f1[i, j])})
        # per-image measures (validity) and counts (reliability)
        region = fio.read_mask(region_paths[image_id], shape) if image_id in region_paths else None
        for name in raters:
            meas = region_measures(bin_masks[name], image, region=region, ignore=ignore, min_size=min_size)
            count_rows.append({"image": image_id, "group": groups.get(image_id, ""), "rater": name,
                               "kind": kinds[name], **meas})
            n_obj = meas["count"] if region is None else metrics.count_objects(
                bin_masks[name], min_size=min_size, ignore=ignore)
            counts[name].append(float(n_obj))
        # uncertainty vs disagreement
        votes = masks.sum(axis=0).astype(np.int64)
        fraction = votes / float(R)
        for name in model_names:
            p = model_prob[name]
            t = fraction_table(votes, R, probability=p, uncertainty=model_unc[name], ignore=ignore)
            acc = frac_acc.setdefault(name, {k: np.zeros_like(v) for k, v in t.items()})
            for k_, v in t.items():
                acc[k_] = acc[k_] + v
            c = calibration_table(p, fraction, bins=config.calibration_bins, ignore=ignore)
            acc = cal_acc.setdefault(name, {k: np.zeros_like(v) for k, v in c.items()})
            for k_, v in c.items():
                acc[k_] = acc[k_] + v
            fg_ignore = ~((fraction > 0) | (p >= 0.5))
            if ignore is not None:
                fg_ignore |= ignore
            c = calibration_table(p, fraction, bins=config.calibration_bins, ignore=fg_ignore)
            acc = cal_fg_acc.setdefault(name, {k: np.zeros_like(v) for k, v in c.items()})
            for k_, v in c.items():
                acc[k_] = acc[k_] + v
            qd = qubiq_dice(p, fraction, ignore=ignore)
            qubiq_rows.append({"image": image_id, "model": name,
                               **{f"dice_{t:.1f}": float(d) for t, d in zip(QUBIQ_THRESHOLDS, qd)},
                               "mean_dice": _nanmean(qd)})
        if image_id == example_id:
            y0, y1, x0, x1 = _example_window(masks.any(axis=0) | reference)
            example = {
                "image_id": image_id,
                "window": (y0, y1, x0, x1),
                "thumbnail": image[:: max(1, max(shape) // 512), :: max(1, max(shape) // 512)],
                "thumbnail_step": max(1, max(shape) // 512),
                "image": image[y0:y1, x0:x1],
                "masks": {r: bin_masks[r][y0:y1, x0:x1].copy() for r in raters},
                "uncertainty": {m: model_unc[m][y0:y1, x0:x1].copy() for m in model_names if model_unc[m] is not None},
                "probability": {m: model_prob[m][y0:y1, x0:x1].copy() for m in model_names if soft_models.get(m)},
            }
        # provenance: every input file
        files = [("image", ds.images[image_id])] + [(f"expert:{e}", ds.experts[e][image_id]) for e in experts]
        if image_id in ds.ignore:
            files.append(("ignore", ds.ignore[image_id]))
        if cons_paths:
            files.append(("consensus", cons_paths[image_id]))
        if image_id in region_paths:
            files.append(("region", region_paths[image_id]))
        for name, src in models.items():
            files.append((f"model:{name}", src.paths[image_id]))
            if image_id in src.uncertainty:
                files.append((f"uncertainty:{name}", src.uncertainty[image_id]))
        for role, path in files:
            inputs.append({"image": image_id, "role": role, "path": str(Path(path).resolve()),
                           "bytes": Path(path).stat().st_size, "sha256": _sha256(Path(path))})

    tables = _aggregate(
        config, experts, model_names, raters, kinds, strategies, obj_rows, pair_rows, count_rows, counts,
        qubiq_rows, frac_acc, cal_acc, cal_fg_acc, soft_models, models, groups,
    )
    record = _config_record(config)
    record["command"] = "evaluate"
    try:
        import matplotlib

        record["matplotlib"] = matplotlib.__version__
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        pass
    record["reference"] = "consensus folder " + str(config.consensus) if cons_paths else "STAPLE of the experts, posterior > 0.5"
    record["models"] = {n: {"folder": str(s.root.resolve()), "kind": s.kind, "threshold": s.threshold,
                            "uncertainty": s.measure} for n, s in models.items()}
    record["staple"] = staple_meta
    summary = _summary(config, out, ids, experts, model_names, strategies, tables, record, groups, soft_models)
    ev = Evaluation(tables=tables, summary=summary, provenance=record, experts=experts, models=model_names,
                    strategies=strategies, example=example, note=config.note)
    over = bool(config.overwrite)
    fio.write_json(out / "config.json", record, overwrite=over)
    fio.write_csv(out / "inputs.csv", inputs, columns=["image", "role", "path", "bytes", "sha256"], overwrite=over)
    written = ["config.json", "inputs.csv"]
    for name, rows in tables.items():
        if name in ("counts",) or rows:
            fio.write_csv(out / f"{name}.csv", rows, columns=TABLE_COLUMNS[name], overwrite=over)
            written.append(f"{name}.csv")
    if config.report:
        from .report import write_report

        write_report(ev, out / "report.html", overwrite=over)
        written.append("report.html")
    summary["files"] = written
    fio.write_json(out / "summary.json", summary, overwrite=over)
    logger.info("evaluation of %d images written to %s", len(ids), out)
    return ev


def _aggregate(
    config: Any, experts, model_names, raters, kinds, strategies, obj_rows, pair_rows, count_rows, counts,
    qubiq_rows, frac_acc, cal_acc, cal_fg_acc, soft_models, models, groups,
) -> dict[str, list[dict[str, Any]]]:
    R = len(experts)
    # objectivity summary
    summ = []
    mean_f1 = {}
    for name in [*experts, *model_names]:
        rs = [r for r in obj_rows if r["rater"] == name]
        row: dict[str, Any] = {"rater": name, "kind": kinds[name], "n_images": len(rs)}
        for k in ("dice", "roi_f1", "average_precision", "sensitivity", "specificity",
                  "staple_sensitivity", "staple_specificity"):
            row[k] = _nanmean([r.get(k, math.nan) for r in rs])
        mean_f1[name] = row["roi_f1"]
        if kinds[name] == "model":
            cls = [r["class_roi_f1"] for r in rs]
            row["n_above"], row["n_within"], row["n_below"] = (cls.count(c) for c in ("above", "within", "below"))
            # the paper's selection rule: ROI-F1 >= the lowest expert's on every image
            row["passes_selection"] = all(
                not math.isfinite(r["roi_f1"]) or not math.isfinite(r["expert_min_roi_f1"])
                or r["roi_f1"] >= r["expert_min_roi_f1"] for r in rs
            )
        summ.append(row)
    for row in summ:
        if row["kind"] == "model":
            row["experts_below_mean_roi_f1"] = sum(
                1 for e in experts if math.isfinite(mean_f1[e]) and mean_f1[e] < row["roi_f1"]
            )
    # agreement (mean over images)
    agree = []
    for a, b in combinations(raters, 2):
        ps = [p for p in pair_rows if p["rater_a"] == a and p["rater_b"] == b]
        agree.append({"rater_a": a, "rater_b": b, "n_images": len(ps), "dice": _nanmean([p["dice"] for p in ps]),
                      "roi_f1": _nanmean([p["roi_f1"] for p in ps])})
    rel_strategies = {"experts": list(experts), **strategies} if R >= 2 else dict(strategies)
    reliability = agreement_summary(pair_rows, counts, rel_strategies)
    # validity
    tests: list[dict[str, Any]] = []
    pairwise: list[dict[str, Any]] = []
    outliers: list[dict[str, Any]] = []
    spread: list[dict[str, Any]] = []
    rows_out = count_rows
    if groups:
        vs = validity_statistics(count_rows, alpha=config.alpha, control=config.control,
                                 comparisons=config.comparisons)
        tests, pairwise, outliers, rows_out = vs["tests"], vs["pairwise"], vs["outliers"], vs["rows"]
        spread = effect_spread(tests, pairwise, rel_strategies)
    # uncertainty vs disagreement
    frac_rows, cal_rows, unc_summary = [], [], []
    for name in model_names:
        if not soft_models.get(name):
            continue
        t = frac_acc[name]
        n = t["n_pixels"].astype(np.float64)
        has_u = bool(models[name].uncertainty)
        for k in range(R + 1):
            frac_rows.append({
                "model": name, "experts_marking": k, "fraction": k / R, "minority": min(k, R - k),
                "n_pixels": int(n[k]),
                "mean_probability": t["sum_probability"][k] / n[k] if n[k] else math.nan,
                "mean_uncertainty": t["sum_uncertainty"][k] / n[k] if n[k] and has_u else math.nan,
            })
        c = cal_acc[name]
        b = config.calibration_bins
        for i in range(b):
            cn = int(c["n_pixels"][i])
            cal_rows.append({
                "model": name, "bin_low": i / b, "bin_high": (i + 1) / b, "n_pixels": cn,
                "mean_probability": c["sum_probability"][i] / cn if cn else math.nan,
                "mean_fraction": c["sum_target"][i] / cn if cn else math.nan,
            })
        u = t["sum_uncertainty"]
        dis = slice(1, R)
        u_bg = u[0] / n[0] if n[0] and has_u else math.nan
        u_fg = u[R] / n[R] if n[R] and has_u else math.nan
        u_dis = u[dis].sum() / n[dis].sum() if n[dis].sum() and has_u else math.nan
        # mean uncertainty by minority size d = min(k, R - k): 0 = unanimous, larger = more disagreement
        by_d = []
        for d in range(R // 2 + 1):
            ks = [k for k in range(R + 1) if min(k, R - k) == d]
            nn = n[ks].sum()
            by_d.append(u[ks].sum() / nn if nn and has_u else math.nan)
        rises = bool(has_u and all(math.isfinite(x) for x in by_d) and len(by_d) >= 2
                     and all(b_ > a_ for a_, b_ in zip(by_d, by_d[1:])))
        unc_summary.append({
            **qa_agreement([r for r in obj_rows if r["rater"] == name]),
            "model": name, "measure": models[name].measure,
            "mean_uncertainty_unanimous_background": u_bg, "mean_uncertainty_disagreement": u_dis,
            "mean_uncertainty_unanimous_foreground": u_fg,
            "uncertainty_rises_with_disagreement": rises if has_u else None,
            "mean_uncertainty_by_minority": by_d,
            "ece": expected_calibration_error(c), "ece_foreground": expected_calibration_error(cal_fg_acc[name]),
            "qubiq_mean_dice": _nanmean([q["mean_dice"] for q in qubiq_rows if q["model"] == name]),
        })
    qubiq = [q for q in qubiq_rows if soft_models.get(q["model"])]
    return {
        "objectivity": obj_rows, "objectivity_summary": summ, "agreement": agree,
        "agreement_per_image": pair_rows, "reliability": reliability, "counts": rows_out,
        "validity_tests": tests, "validity_pairwise": pairwise, "outliers": outliers, "effect_spread": spread,
        "uncertainty_vs_fraction": frac_rows, "calibration": cal_rows, "qubiq": qubiq,
        "uncertainty_summary": unc_summary,
    }


def _summary(config, out, ids, experts, model_names, strategies, tables, record, groups, soft_models) -> dict[str, Any]:
    summ = {r["rater"]: r for r in tables["objectivity_summary"]}
    models_out = {}
    for m in model_names:
        r = summ[m]
        models_out[m] = {
            "roi_f1": r["roi_f1"], "dice": r["dice"], "average_precision": r["average_precision"],
            "n_above": r["n_above"], "n_within": r["n_within"], "n_below": r["n_below"],
            "passes_selection": r["passes_selection"], "experts_below_mean_roi_f1": r["experts_below_mean_roi_f1"],
            "probability": bool(soft_models.get(m)),
        }
    for u in tables["uncertainty_summary"]:
        models_out[u["model"]].update({k: v for k, v in u.items() if k != "model"})
    validity = {}
    for t in tables["validity_tests"]:
        validity.setdefault(t["rater"], {})[t["measure"]] = {"H": t["H"], "p": t["p"], "eta2_h": t["eta2_h"]}
    return {
        "ok": True,
        "command": "evaluate",
        "out": str(out.resolve()),
        "version": record["version"],
        "n_images": len(ids),
        "experts": experts,
        "models": models_out,
        "strategies": strategies,
        "reference": record["reference"],
        "min_size": int(config.min_size),
        "experts_scores": {e: {k: summ[e][k] for k in ("roi_f1", "dice", "average_precision",
                                                         "staple_sensitivity", "staple_specificity")}
                           for e in experts},
        "n_groups": len(set(groups.values())),
        "groups_note": config.note,
        "validity": validity,
        "reliability": tables["reliability"],
        "n_outliers": len(tables["outliers"]),
    }
