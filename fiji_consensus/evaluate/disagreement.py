"""Uncertainty against expert disagreement: sums per vote level, calibration and its ECE, QUBIQ-style Dice,
and whether a model's per-image QA score points at the images it gets wrong (Spearman)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._common import _check_maps, _float, _keep

__all__ = [
    "QUBIQ_THRESHOLDS", "fraction_table", "calibration_table", "expected_calibration_error", "qubiq_dice",
    "spearman", "qa_agreement",
]

#: Thresholds of the QUBIQ-style Dice: 0.1, 0.2, ..., 0.9.
QUBIQ_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))


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
