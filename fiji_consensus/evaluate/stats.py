"""Kruskal-Wallis, Mann-Whitney U (with the study's effect sizes), Bonferroni, Grubbs; where a model's score
falls among the experts'. Definitions: :mod:`fiji_consensus.evaluate`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._common import _finite

__all__ = [
    "KruskalResult", "MannWhitneyResult", "GrubbsResult", "kruskal_wallis", "mann_whitney", "bonferroni",
    "grubbs_critical", "grubbs", "classify_against_experts",
]


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
    if np.all(allv == allv[0]):  # H is 0/0: every rank is tied
        return KruskalResult(nan, nan, k - 1, n, k, nan)
    res = stats.kruskal(*arrays)  # tie-corrected H, p from chi2 with k - 1 degrees of freedom
    h = float(res.statistic)
    return KruskalResult(h, float(res.pvalue), k - 1, n, k, (h - k + 1) / (n - k))


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
    n = n1 + n2
    if np.all(x == x[0]) and np.all(y == x[0]):  # every value tied: no evidence either way
        return MannWhitneyResult(n1 * n2 / 2.0, 0.0, 1.0, n1, n2, 0.0, med1, med2)
    res = stats.mannwhitneyu(x, y, alternative="two-sided", method=method)
    u = float(res.statistic)  # U of the first sample
    # var(U) = n1 n2 (N + 1) / 12, times scipy's tie factor 1 - sum(t^3 - t) / (N^3 - N) when asked for
    factor = float(stats.tiecorrect(stats.rankdata(np.concatenate([x, y])))) if tie_correction else 1.0
    z = (u - n1 * n2 / 2.0) / math.sqrt(n1 * n2 * (n + 1) / 12.0 * factor)
    return MannWhitneyResult(u, float(z), float(res.pvalue), n1, n2, float(z * z / n), med1, med2)


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
