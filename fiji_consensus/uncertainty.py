r"""Ensemble statistics from a stack of foreground probabilities: mean, spread, entropies, QA scores.

Every function takes an ``(M, Y, X)`` stack ``p`` of foreground probabilities, one plane per ensemble
*sample* (member × test-time-augmentation view), and returns ``(Y, X)`` maps on an **absolute scale**:
nothing is rescaled per image, so maps and scores of different images (and of different runs) can be
compared directly.

Definitions (binary segmentation, ``M`` samples :math:`p_m`, mean :math:`\bar p = \frac1M\sum_m p_m`,
binary entropy :math:`H(q) = -q\log_2 q - (1-q)\log_2(1-q)` in **bits**, with :math:`0 \log 0 = 0`):

=============================  =========================================================  ==========
quantity                        formula                                                    range
=============================  =========================================================  ==========
mean probability                :math:`\bar p`                                             [0, 1]
member standard deviation       :math:`\sqrt{\frac1M\sum_m (p_m-\bar p)^2}` (ddof = 0)       [0, 0.5]
predictive entropy (total)      :math:`H(\bar p)`                                          [0, 1]
expected entropy (aleatoric)    :math:`\frac1M\sum_m H(p_m)`                               [0, 1]
mutual information (epistemic)  :math:`H(\bar p) - \frac1M\sum_m H(p_m)`                   [0, 1]
deepflash2's U                  :math:`\frac4C\sum_c \bar p_c(1-\bar p_c) = 4\bar p(1-\bar p)`  [0, 1]
=============================  =========================================================  ==========

The decomposition *total = aleatoric + epistemic* is that of Depeweg et al. 2018 ("Decomposition of
uncertainty in Bayesian deep learning", ICML) and Smith & Gal 2018 ("Understanding measures of
uncertainty for adversarial example detection", UAI), applied to deep ensembles (Lakshminarayanan et al.
2017, NeurIPS) with test-time augmentation (Wang et al. 2019, Neurocomputing). The mutual information is
non-negative by Jensen's inequality (rounding below zero is clipped). deepflash2's U (Griebel et al. 2023,
Nat Commun, with C = 2 classes) is a total uncertainty like :math:`H(\bar p)`; both depend on
:math:`\bar p` only and peak (at 1) for :math:`\bar p = 0.5`. Bits make every entropy 1 at most, the
same scale as U.

The per-image QA score is deepflash2's: the mean of an uncertainty map over the predicted foreground
(:math:`\bar p >` threshold); images are reviewed in decreasing order of it (:func:`review_order`).

Examples
--------
>>> p = np.array([[[0.9]], [[0.1]]])          # two members disagree completely
>>> s = ensemble_statistics(p)
>>> float(s["mean"][0, 0]), float(s["entropy"][0, 0]), round(float(s["mutual_information"][0, 0]), 3)
(0.5, 1.0, 0.531)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "MEASURES",
    "MEASURE_RANGE",
    "binary_entropy",
    "mean_probability",
    "member_std",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "deepflash2_uncertainty",
    "ensemble_statistics",
    "uncertainty_map",
    "qa_score",
    "review_order",
]

#: Uncertainty measures by name (the keys of :func:`ensemble_statistics` other than ``"mean"``).
MEASURES = ("entropy", "expected_entropy", "mutual_information", "std", "deepflash2")

#: The largest value each measure can take (its absolute scale: maps are never normalised per image).
MEASURE_RANGE = {
    "entropy": 1.0,
    "expected_entropy": 1.0,
    "mutual_information": 1.0,
    "std": 0.5,
    "deepflash2": 1.0,
}


def _as_stack(stack: Any, name: str = "stack") -> np.ndarray:
    arr = np.asarray(stack)
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must be (M, Y, X): M member/view probabilities of one image; got an array of shape "
            f"{arr.shape}"
        )
    if arr.shape[0] < 1 or arr.size == 0:
        raise ValueError(f"{name} must hold at least one non-empty probability map; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
            arr = arr.astype(np.float32)
        else:
            raise TypeError(f"{name} must hold probabilities (floats); got dtype {arr.dtype}")
    return _check_prob(arr, name)


def _check_prob(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.size:
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} must not contain NaN or infinite values")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} must hold probabilities in [0, 1]; got values in [{lo}, {hi}]")
    return arr


def _xlog2x(q: np.ndarray) -> np.ndarray:
    """``q * log2(q)`` with ``0 log 0 = 0`` (no warnings, exact at 0 and 1)."""
    out = np.zeros_like(q)
    pos = q > 0
    out[pos] = q[pos] * np.log2(q[pos])
    return out


def binary_entropy(p: Any) -> np.ndarray:
    """Entropy of a Bernoulli(p) variable in bits, elementwise; 0 at p = 0 and p = 1, 1 at p = 0.5.

    >>> binary_entropy([0.0, 0.5, 1.0]).tolist()
    [0.0, 1.0, 0.0]
    """
    q = np.asarray(p)
    q = q.astype(np.float64) if not np.issubdtype(q.dtype, np.floating) else q
    _check_prob(q, "p")
    h = -(_xlog2x(q) + _xlog2x(1.0 - q))
    return np.clip(h, 0.0, 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0


def mean_probability(stack: Any) -> np.ndarray:
    """``p̄``: the mean foreground probability over the samples, ``(Y, X)``."""
    p = _as_stack(stack)
    return p.mean(axis=0, dtype=np.float64).astype(p.dtype)


def member_std(stack: Any) -> np.ndarray:
    """Population standard deviation (ddof = 0) of the samples' probabilities, ``(Y, X)``, in [0, 0.5]."""
    p = _as_stack(stack)
    return p.std(axis=0, dtype=np.float64).astype(p.dtype)


def predictive_entropy(stack: Any) -> np.ndarray:
    """Total uncertainty ``H(p̄)`` in bits, ``(Y, X)``."""
    p = _as_stack(stack)
    return binary_entropy(p.mean(axis=0, dtype=np.float64)).astype(p.dtype)


def expected_entropy(stack: Any) -> np.ndarray:
    """Aleatoric uncertainty ``mean_m H(p_m)`` in bits, ``(Y, X)``."""
    p = _as_stack(stack)
    acc = np.zeros(p.shape[1:], np.float64)
    for plane in p:  # plane by plane: memory of one float64 image, not of the stack
        acc += binary_entropy(plane.astype(np.float64))
    return (acc / p.shape[0]).astype(p.dtype)


def mutual_information(stack: Any) -> np.ndarray:
    """Epistemic uncertainty ``H(p̄) - mean_m H(p_m)`` in bits (>= 0), ``(Y, X)``."""
    return ensemble_statistics(stack)["mutual_information"]


def deepflash2_uncertainty(stack: Any) -> np.ndarray:
    """deepflash2's ``U = 4 p̄ (1 - p̄)`` (its ``(4/C) Σ_c p̄_c (1 - p̄_c)`` with C = 2), ``(Y, X)``."""
    p = _as_stack(stack)
    m = p.mean(axis=0, dtype=np.float64)
    return (4.0 * m * (1.0 - m)).astype(p.dtype)


def ensemble_statistics(stack: Any) -> dict[str, np.ndarray]:
    """All statistics of one image in one pass: ``mean`` and every measure of :data:`MEASURES`.

    Parameters
    ----------
    stack : array_like
        ``(M, Y, X)`` foreground probabilities in [0, 1] (member × view samples).

    Returns
    -------
    dict of str to numpy.ndarray
        ``mean``, ``std``, ``entropy`` (total), ``expected_entropy`` (aleatoric), ``mutual_information``
        (epistemic), ``deepflash2``; each ``(Y, X)`` in the stack's float dtype (float32 for integer input).

    Examples
    --------
    >>> s = ensemble_statistics(np.array([[[0.0, 1.0]], [[0.0, 0.0]]]))
    >>> s["mean"].tolist(), s["entropy"].tolist(), s["expected_entropy"].tolist()
    ([[0.0, 0.5]], [[0.0, 1.0]], [[0.0, 0.0]])
    """
    p = _as_stack(stack)
    dt = p.dtype
    m = p.mean(axis=0, dtype=np.float64)
    total = binary_entropy(m)
    aleatoric = np.zeros(p.shape[1:], np.float64)
    sq = np.zeros(p.shape[1:], np.float64)
    for plane in p:
        q = plane.astype(np.float64)
        aleatoric += binary_entropy(q)
        sq += (q - m) ** 2
    aleatoric /= p.shape[0]
    return {
        "mean": m.astype(dt),
        "std": np.sqrt(sq / p.shape[0]).astype(dt),
        "entropy": total.astype(dt),
        "expected_entropy": aleatoric.astype(dt),
        "mutual_information": np.clip(total - aleatoric, 0.0, 1.0).astype(dt),
        "deepflash2": (4.0 * m * (1.0 - m)).astype(dt),
    }


def uncertainty_map(stack: Any, measure: str = "entropy") -> np.ndarray:
    """One uncertainty measure (a name of :data:`MEASURES`) of an ``(M, Y, X)`` stack."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}; got {measure!r}")
    return ensemble_statistics(stack)[measure]


def qa_score(uncertainty: Any, probability: Any, *, threshold: float = 0.5) -> float:
    """Mean uncertainty over the predicted foreground (``probability > threshold``): deepflash2's QA score.

    NaN when nothing is predicted as foreground (the score is undefined, not 0).

    >>> qa_score(np.array([[0.2, 0.8], [0.0, 1.0]]), np.array([[0.9, 0.6], [0.1, 0.4]]))
    0.5
    """
    u = np.asarray(uncertainty)
    p = np.asarray(probability)
    if u.shape != p.shape:
        raise ValueError(f"uncertainty and probability must have the same shape; got {u.shape} and {p.shape}")
    if not (0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be in [0, 1]; got {threshold}")
    fg = p > threshold
    if not fg.any():
        return float("nan")
    return float(np.mean(u[fg], dtype=np.float64))


def review_order(scores: Mapping[str, float] | Sequence[tuple[str, float]]) -> list[str]:
    """Image ids ordered for review: highest QA score first, ties by id, undefined (NaN) scores last.

    >>> review_order({"a": 0.1, "b": float("nan"), "c": 0.3})
    ['c', 'a', 'b']
    """
    items = list(scores.items()) if isinstance(scores, Mapping) else [tuple(s) for s in scores]

    def key(item: tuple[str, float]) -> tuple[int, float, str]:
        v = float(item[1]) if item[1] is not None else float("nan")
        return (1, 0.0, str(item[0])) if math.isnan(v) else (0, -v, str(item[0]))

    return [str(i) for i, _ in sorted(items, key=key)]
