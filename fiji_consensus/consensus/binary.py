"""Binary STAPLE, a faithful replication of ITK's ``STAPLEImageFilter`` (as SimpleITK wraps it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fiji_consensus.consensus._common import (
    STAPLE_MAX_ITER, STAPLE_TOL, Convergence, _ignore, _masks, check_em_options,
)
from fiji_consensus.consensus.patterns import _expand, _patterns

__all__ = ["StapleResult", "staple"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StapleResult:
    """What :func:`staple` returns.

    Attributes
    ----------
    probability : numpy.ndarray of float64, shape (Y, X)
        Posterior probability ``W_i = P(T_i = 1 | D, p, q)`` that pixel ``i`` is truly foreground.
    sensitivity : numpy.ndarray of float64, shape (R,)
        Per-expert sensitivity ``p_j = P(D_ij = 1 | T_i = 1)``.
    specificity : numpy.ndarray of float64, shape (R,)
        Per-expert specificity ``q_j = P(D_ij = 0 | T_i = 0)``.
    prior : float
        Foreground prior ``g`` used throughout the EM (estimated or given).
    n_iter : int
        Number of EM iterations performed (each one M-step for ``p, q`` and one E-step for ``W``).
        SimpleITK's ``GetElapsedIterations()`` reports ``n_iter - 1`` when the EM converged.
    converged : bool
        Whether the stopping rule was met within ``max_iter`` iterations.
    """

    probability: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray
    prior: float
    n_iter: int
    converged: bool

    def mask(self, threshold: float = 0.5) -> np.ndarray:
        """Binary consensus ``probability > threshold`` (bool, shape (Y, X)); ``0.5`` gives est_GT."""
        return self.probability > threshold


def _staple_em(
    bits: np.ndarray, counts: np.ndarray, *, prior: float | None, confidence_weight: float, tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int, bool]:
    """ITK's STAPLE EM on weighted vote patterns; returns (W per pattern, p, q, g, n_iter, converged)."""
    r = bits.shape[1]
    d = bits.astype(np.float64)  # (P, R)
    nd = 1.0 - d
    n_total = counts.sum()
    # initial W: the average of the segmentations; prior g = mean(W) * confidence weight (ITK)
    w = bits.sum(axis=1) / float(r)
    g = float((counts * w).sum() / n_total) * confidence_weight if prior is None else float(prior)
    stop = Convergence(r, tol)
    p = q = stop.last_p
    converged = False
    n_iter = 0
    for it in range(max_iter):
        # M-step: sensitivity and specificity of every expert from the current W
        cw = counts * w
        cv = counts * (1.0 - w)
        p_den = cw.sum()
        q_den = cv.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (cw @ d) / p_den
            q = (cv @ nd) / q_den
        # E-step: W = g a / (g a + (1 - g) b)
        a = np.prod(np.where(bits, p, 1.0 - p), axis=1)
        b = np.prod(np.where(bits, 1.0 - q, q), axis=1)
        num = g * a
        den = num + (1.0 - g) * b
        with np.errstate(invalid="ignore", divide="ignore"):
            w = num / den
        w = np.where(den > 0, w, g)  # no information at all (a = b = 0): fall back to the prior
        n_iter = it + 1
        if stop.reached(it, p, q):
            converged = True
            break
    return w, p, q, g, n_iter, converged


def _trivial_staple(
    full: bool, r: int, shape: tuple[int, int], ign: np.ndarray | None, prior: float | None
) -> StapleResult:
    """STAPLE when no expert marks any pixel (``full=False``) or every expert marks every pixel."""
    logger.warning("STAPLE: every expert marks %s pixel; the consensus is trivial", "every" if full else "no")
    prob = np.full(shape, 1.0 if full else 0.0)
    if ign is not None:
        prob[ign] = 0.0
    nan = np.full(r, np.nan)
    one = np.ones(r)
    g = float(prior) if prior is not None else (1.0 if full else 0.0)
    return StapleResult(prob, one if full else nan, nan if full else one, g, 0, True)


def staple(
    masks: Any,
    *,
    prior: float | None = None,
    confidence_weight: float = 1.0,
    tol: float = STAPLE_TOL,
    max_iter: int = STAPLE_MAX_ITER,
    ignore: Any = None,
) -> StapleResult:
    r"""Binary STAPLE (Warfield et al. 2004), replicating SimpleITK's ``STAPLEImageFilter``.

    Simultaneous truth and performance level estimation: an EM algorithm that estimates the hidden true
    segmentation ``T`` together with every expert's sensitivity ``p_j`` and specificity ``q_j``.
    With expert decisions ``D_ij`` and the posterior ``W_i = P(T_i = 1)``:

    * initialisation: ``W_i = (1/R) sum_j D_ij`` (the average segmentation); the prior
      ``g = confidence_weight * mean_i W_i`` is estimated once and then kept fixed (ITK);
    * M-step: ``p_j = sum_i W_i D_ij / sum_i W_i``, ``q_j = sum_i (1 - W_i)(1 - D_ij) / sum_i (1 - W_i)``;
    * E-step: ``W_i = g a_i / (g a_i + (1 - g) b_i)`` with
      ``a_i = prod_j p_j^D_ij (1 - p_j)^(1 - D_ij)`` and ``b_i = prod_j (1 - q_j)^D_ij q_j^(1 - D_ij)``;
    * stop after the first iteration (but never the first) in which every ``p_j`` and ``q_j`` changed by
      at most ``tol`` (ITK: squared change ``<= 1e-14``), or after ``max_iter`` iterations.

    The returned ``probability``, ``sensitivity`` and ``specificity`` agree with
    ``SimpleITK.STAPLEImageFilter`` (foreground value 1, defaults) to floating-point summation order, and
    ``result.mask()`` (``probability > 0.5``) reproduces Segebarth et al.'s ``est_GT``
    (``SimpleITK.STAPLE(masks, 1.0) > 0.5``). The EM runs on the distinct vote patterns (at most
    ``2**R``), so it is much faster than the pixel-wise filter.

    Differences from SimpleITK, all in degenerate cases where ITK returns NaN: if no expert marks any
    (non-ignored) pixel the probability is 0, sensitivities NaN and specificities 1; if every expert marks
    every pixel the probability is 1, sensitivities 1 and specificities NaN; a pattern for which both
    likelihoods vanish (``a = b = 0``) gets the prior instead of ``0/0``. The default ``max_iter`` is finite
    (SimpleITK: ``2**32 - 1``).

    Parameters
    ----------
    masks : array_like, shape (R, Y, X), or sequence of R arrays of shape (Y, X)
        Binary masks (bool, 0/1 or 0/255), one per expert, ``R >= 2``.
    prior : float, optional
        Foreground prior ``g`` in ``(0, 1)``. Default: estimated as above (SimpleITK's behaviour).
    confidence_weight : float
        ITK's ``ConfidenceWeight``, multiplies the estimated prior (ignored when ``prior`` is given).
    tol : float
        Convergence threshold on the absolute change of every sensitivity and specificity; the default
        ``1e-7`` is ITK's.
    max_iter : int
        Maximum number of EM iterations.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels excluded from the EM (not counted in the prior, sensitivities or specificities); they get
        probability ``0``. Note: Segebarth et al. applied their ignore masks *after* STAPLE; to reproduce
        that, call ``staple`` without ``ignore`` and zero the ignored pixels of the result.

    Returns
    -------
    StapleResult

    References
    ----------
    S. K. Warfield, K. H. Zou, W. M. Wells, "Simultaneous truth and performance level estimation (STAPLE):
    an algorithm for the validation of image segmentation", IEEE TMI 23(7):903-921, 2004.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((8, 8), bool); truth[2:6, 2:6] = True
    >>> experts = np.stack([truth, truth, np.roll(truth, 1, axis=1)])
    >>> res = staple(experts)
    >>> int(res.mask().sum()), res.converged
    (16, True)
    >>> np.round(res.sensitivity, 2)
    array([1.  , 1.  , 0.75])
    """
    stack = _masks(masks, min_raters=2)
    r, ny, nx = stack.shape
    prior, confidence_weight, tol, max_iter = check_em_options(prior, confidence_weight, tol, max_iter)
    ign = _ignore(ignore, (ny, nx))
    keep = None if ign is None else ~ign

    pat = _patterns(stack, keep)
    present = pat.counts > 0
    bits, counts = pat.bits[present], pat.counts[present]
    if counts.size == 0:
        raise ValueError("ignore must leave at least one pixel for STAPLE; got an ignore mask covering all")
    n_fg_votes = float((counts[:, None] * bits).sum())
    if n_fg_votes == 0 or np.all(bits):  # degenerate: nothing marked, or everything marked by everyone
        return _trivial_staple(bool(np.all(bits)), r, (ny, nx), ign, prior)

    w, p, q, g, n_iter, converged = _staple_em(
        bits, counts, prior=prior, confidence_weight=confidence_weight, tol=tol, max_iter=max_iter
    )
    if not converged:
        logger.warning("STAPLE did not converge in %d iterations (tol=%g)", max_iter, tol)
    w_all = np.zeros(pat.counts.size)
    w_all[present] = w
    prob = _expand(pat, w_all, (ny, nx))
    if ign is not None:
        prob[ign] = 0.0
    logger.debug("STAPLE: %d experts, %d patterns, prior %.6g, %d iterations", r, counts.size, g, n_iter)
    return StapleResult(prob, p, q, g, n_iter, converged)
