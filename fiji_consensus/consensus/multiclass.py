"""Multi-class STAPLE with per-expert confusion matrices, following ITK's ``MultiLabelSTAPLEImageFilter``."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fiji_consensus.consensus._common import STAPLE_MAX_ITER, _DENSE_PATTERNS, _check_float, _check_int

__all__ = ["MultiClassStapleResult", "staple_multiclass"]

logger = logging.getLogger(__name__)

#: ITK's ``TerminationUpdateThreshold`` default: stop when no confusion-matrix entry changes this much.
MULTICLASS_TOL = 1e-5


@dataclass(frozen=True)
class MultiClassStapleResult:
    """Result of :func:`staple_multiclass`.

    Attributes
    ----------
    probability : numpy.ndarray of float64, shape (C, Y, X)
        Posterior ``P(T_i = c)`` for every class; sums to 1 over ``c`` (all 0 where no class is possible).
    labels : numpy.ndarray of int32, shape (Y, X)
        Class with the largest posterior; ``undecided_label`` (default ``C``) where the maximum is shared.
    confusion : numpy.ndarray of float64, shape (R, C, C)
        ``confusion[k, j, c] = P(expert k assigns j | true class c)``; every column sums to 1 (or 0 for a
        class with no posterior mass).
    prior : numpy.ndarray of float64, shape (C,)
        Class prior used throughout the EM (estimated or given).
    n_iter : int
        Number of EM iterations performed.
    converged : bool
        Whether the largest confusion-matrix update fell below ``tol``.
    undecided_label : int
        The label written where the posterior maximum is shared.
    """

    probability: np.ndarray
    labels: np.ndarray
    confusion: np.ndarray
    prior: np.ndarray
    n_iter: int
    converged: bool
    undecided_label: int

    @property
    def sensitivity(self) -> np.ndarray:
        """``(R, C)`` per-expert, per-class sensitivity ``P(expert assigns c | true class c)``."""
        return np.diagonal(self.confusion, axis1=1, axis2=2).copy()


def _label_stack(label_masks: Any, name: str = "label_masks") -> np.ndarray:
    if isinstance(label_masks, (list, tuple)):
        if len(label_masks) == 0:
            raise ValueError(f"{name} must hold at least 2 label images; got an empty sequence")
        arrays = [np.asarray(m) for m in label_masks]
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"all {name} must have the same shape; got shapes {[a.shape for a in arrays]}")
        arr = np.stack(arrays)
    else:
        arr = np.asarray(label_masks)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (n_experts, Y, X) label images; got an array of shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 experts; got {arr.shape[0]}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class labels 0..C-1; got dtype {arr.dtype}")
    lo = int(arr.min())
    if lo < 0:
        raise ValueError(f"{name} must hold class labels >= 0; got minimum {lo}")
    return arr


def _label_patterns(stack: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct label patterns of an ``(R, Y, X)`` stack of ``c`` classes: (patterns (P, R) intp, the
    pattern index of every pixel, pixels per pattern float64)."""
    r = stack.shape[0]
    flat = stack.reshape(r, -1)
    if c ** r <= _DENSE_PATTERNS * 16:
        codes = np.zeros(flat.shape[1], dtype=np.int64)
        for k in range(r - 1, -1, -1):
            codes *= c
            codes += flat[k]
        hist = np.bincount(codes, minlength=c ** r)
        present = np.flatnonzero(hist)
        counts = hist[present].astype(np.float64)
        pats = (present[:, None] // (c ** np.arange(r))) % c  # (P, R)
        index = np.full(c ** r, -1, dtype=np.int64)
        index[present] = np.arange(present.size)
        inverse = index[codes]
    else:
        pats, inverse, counts_i = np.unique(flat.T, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.ravel()
        counts = counts_i.astype(np.float64)
    return pats.astype(np.intp), inverse, counts


def _class_prior(pats: np.ndarray, counts: np.ndarray, c: int, prior: Sequence[float] | None) -> np.ndarray:
    """The given class prior normalised, else the label frequencies over all experts (ITK); fixed in the EM."""
    if prior is None:
        freq = np.zeros(c)
        for k in range(pats.shape[1]):
            freq += np.bincount(pats[:, k], weights=counts, minlength=c)
        return freq / freq.sum()
    pi = np.asarray(prior, dtype=np.float64).ravel()
    if pi.shape != (c,) or not np.all(np.isfinite(pi)) or np.any(pi < 0) or pi.sum() <= 0:
        raise ValueError(f"prior must be {c} non-negative numbers (one per class); got {prior!r}")
    return pi / pi.sum()


def _initial_confusion(pats: np.ndarray, counts: np.ndarray, c: int) -> np.ndarray:
    """ITK's start: every expert's labels against the majority vote (ties not counted), rows normalised."""
    n_pat, r = pats.shape
    votes = np.zeros((n_pat, c))
    for k in range(r):
        votes[np.arange(n_pat), pats[:, k]] += 1
    vmax = votes.max(axis=1)
    winner = votes.argmax(axis=1)
    decided = (votes == vmax[:, None]).sum(axis=1) == 1
    theta = np.zeros((r, c, c))
    for k in range(r):
        np.add.at(theta[k], (pats[decided, k], winner[decided]), counts[decided])
        rows = theta[k].sum(axis=1, keepdims=True)
        np.divide(theta[k], rows, out=theta[k], where=rows > 0)
    return theta


def _posterior(pats: np.ndarray, pi: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """E-step: ``W_uc = pi_c prod_k theta_k[pattern_uk, c]`` per pattern, normalised over ``c``."""
    n_pat, r = pats.shape
    w = np.broadcast_to(pi, (n_pat, pi.size)).copy()
    for k in range(r):
        w *= theta[k][pats[:, k]]
    s = w.sum(axis=1, keepdims=True)
    np.divide(w, s, out=w, where=s != 0)
    return w


def _multiclass_em(
    pats: np.ndarray, counts: np.ndarray, pi: np.ndarray, theta: np.ndarray, *, tol: float, max_iter: int
) -> tuple[np.ndarray, int, bool]:
    """EM until no confusion-matrix entry changes by ``tol`` or more; returns (theta, n_iter, converged)."""
    r = pats.shape[1]
    converged = False
    n_iter = 0
    for it in range(max_iter):
        w = _posterior(pats, pi, theta) * counts[:, None]
        new = np.zeros_like(theta)
        for k in range(r):
            np.add.at(new[k], pats[:, k], w)
            cols = new[k].sum(axis=0, keepdims=True)
            np.divide(new[k], cols, out=new[k], where=cols != 0)
        update = float(np.abs(new - theta).max())
        theta = new
        n_iter = it + 1
        if update < tol:
            converged = True
            break
    return theta, n_iter, converged


def staple_multiclass(
    label_masks: Any,
    *,
    n_classes: int | None = None,
    prior: Sequence[float] | None = None,
    tol: float = MULTICLASS_TOL,
    max_iter: int = STAPLE_MAX_ITER,
    undecided_label: int | None = None,
) -> MultiClassStapleResult:
    r"""Multi-class STAPLE (Warfield et al. 2004, sec. II-C), following ITK's ``MultiLabelSTAPLEImageFilter``.

    Each expert ``k`` is modelled by a confusion matrix ``theta_k[j, c] = P(D_k = j | T = c)``. With the
    class prior ``pi`` (default: the frequency of each label over all experts and pixels, kept fixed):

    * initialisation (ITK): ``theta_k[j, c]`` = the number of pixels that expert ``k`` labels ``j`` and the
      majority vote labels ``c``, each row normalised to sum 1 (pixels with a tied vote are not counted;
      ITK's seeding writes their counts one cell out of bounds, which changes only the first iterate);
    * E-step: ``W_ic = pi_c prod_k theta_k[D_ik, c]``, normalised over ``c``;
    * M-step: ``theta_k[j, c] = sum_{i: D_ik = j} W_ic / sum_i W_ic`` (columns sum to 1);
    * stop when no confusion-matrix entry changes by ``tol`` or more (ITK's
      ``TerminationUpdateThreshold``), or after ``max_iter`` iterations;
    * labels: the class with the largest posterior, ``undecided_label`` where the maximum is shared.

    ITK runs this in single precision (``float`` weights); this implementation uses double precision, so
    posteriors and confusion matrices agree with SimpleITK to about ``1e-6`` rather than bit for bit. The
    EM runs on the distinct label patterns across experts, like :func:`staple`.

    Parameters
    ----------
    label_masks : array_like of int, shape (R, Y, X), or sequence of R arrays of shape (Y, X)
        Class labels ``0 .. C-1`` from each of ``R >= 2`` experts (bool is read as 0/1).
    n_classes : int, optional
        Number of classes ``C``; default ``max label + 1`` (as ITK).
    prior : sequence of float, shape (C,), optional
        Class prior (non-negative, normalised here). Default: estimated as above.
    tol : float
        Convergence threshold on the largest absolute change of any confusion-matrix entry.
    max_iter : int
        Maximum number of EM iterations (SimpleITK: ``2**32 - 1``).
    undecided_label : int, optional
        Label for pixels whose posterior maximum is shared; default ``C`` (as ITK).

    Returns
    -------
    MultiClassStapleResult

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((6, 6), int); truth[1:3, 1:5] = 1; truth[4:6, :] = 2
    >>> noisy = truth.copy(); noisy[0, 0] = 2
    >>> res = staple_multiclass(np.stack([truth, truth, noisy]))
    >>> bool((res.labels == truth).all()), res.probability.shape, res.confusion.shape
    (True, (3, 6, 6), (3, 3, 3))
    """
    stack = _label_stack(label_masks)
    r, ny, nx = stack.shape
    max_label = int(stack.max())
    if n_classes is None:
        c = max_label + 1
    else:
        c = _check_int(n_classes, "n_classes", 1)
        if c <= max_label:
            raise ValueError(f"n_classes must exceed the largest label {max_label}; got n_classes={c}")
    tol = _check_float(tol, "tol", lo=0.0, hi=math.inf, open_=False)
    max_iter = _check_int(max_iter, "max_iter", 1)
    undecided = c if undecided_label is None else _check_int(undecided_label, "undecided_label", 0)

    pats, inverse, counts = _label_patterns(stack, c)
    pi = _class_prior(pats, counts, c, prior)
    theta = _initial_confusion(pats, counts, c)
    theta, n_iter, converged = _multiclass_em(pats, counts, pi, theta, tol=tol, max_iter=max_iter)
    if not converged:
        logger.warning("multi-class STAPLE did not converge in %d iterations (tol=%g)", max_iter, tol)

    w = _posterior(pats, pi, theta)  # (P, C), normalised
    wmax = w.max(axis=1)
    lab = w.argmax(axis=1)
    tied = ((w == wmax[:, None]).sum(axis=1) > 1) | (wmax <= 0)
    lab = np.where(tied, undecided, lab).astype(np.int32)
    probability = np.ascontiguousarray(w[inverse].T).reshape(c, ny, nx)
    labels = lab[inverse].reshape(ny, nx)
    return MultiClassStapleResult(probability, labels, theta, pi, n_iter, converged, undecided)
