"""Binary STAPLE over many images that different experts annotated (missing raters)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fiji_consensus.consensus._common import (
    STAPLE_MAX_ITER, STAPLE_TOL, Convergence, _check_float, _check_int, _ignore, _masks, check_em_options,
)
from fiji_consensus.consensus.patterns import _expand, _patterns, vote_patterns

__all__ = ["StapleFit", "staple_fit", "staple_posterior", "PooledStapleResult", "staple_pooled"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StapleFit:
    """Experts' performance estimated by :func:`staple_fit` from all the images each expert annotated.

    Attributes
    ----------
    sensitivity, specificity : numpy.ndarray of float64, shape (R,)
        Per expert, pooled over the images that expert annotated (NaN for an expert whose images hold no
        foreground / no background at all).
    priors : numpy.ndarray of float64, shape (N,)
        Foreground prior of every image (ITK's rule on that image's own raters, or the given prior).
    raters : tuple of tuple of int
        The experts (indices into ``sensitivity``) who annotated each image.
    n_iter : int
        EM iterations performed.
    converged : bool
        Whether ITK's stopping rule was met within ``max_iter`` iterations.
    """

    sensitivity: np.ndarray
    specificity: np.ndarray
    priors: np.ndarray
    raters: tuple[tuple[int, ...], ...]
    n_iter: int
    converged: bool


def _posterior_patterns(bits: np.ndarray, p: np.ndarray, q: np.ndarray, g: float) -> np.ndarray:
    """``W = g a / (g a + (1 - g) b)`` per pattern (``bits`` (P, R) against the raters' ``p``, ``q``)."""
    if g <= 0.0:
        return np.zeros(bits.shape[0])
    if g >= 1.0:
        return np.ones(bits.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.prod(np.where(bits, p, 1.0 - p), axis=1)
        b = np.prod(np.where(bits, 1.0 - q, q), axis=1)
        num = g * a
        den = num + (1.0 - g) * b
        w = num / den
    return np.where((den > 0) & np.isfinite(w), w, g)


def _check_raters(raters: Any, n: int, widths: Sequence[int], n_experts: int | None) -> tuple[tuple[int, ...], ...]:
    if raters is None or len(raters) != n:
        got = "None" if raters is None else f"{len(raters)} entries"
        raise ValueError(f"raters must list the experts of each of the {n} images; got {got}")
    out = []
    for i, (rs, w) in enumerate(zip(raters, widths)):
        idx = tuple(int(r) for r in rs)
        if len(idx) != w:
            raise ValueError(f"raters[{i}] names {len(idx)} experts but image {i} has {w} masks")
        if len(set(idx)) != len(idx) or any(r < 0 for r in idx):
            raise ValueError(f"raters[{i}] must be distinct expert indices >= 0; got {list(idx)}")
        if n_experts is not None and any(r >= n_experts for r in idx):
            raise ValueError(f"raters[{i}] must be expert indices below n_experts={n_experts}; got {list(idx)}")
        out.append(idx)
    return tuple(out)


def staple_fit(
    patterns: Sequence[tuple[np.ndarray, np.ndarray]],
    raters: Sequence[Sequence[int]],
    *,
    n_experts: int | None = None,
    prior: float | None = None,
    confidence_weight: float = 1.0,
    tol: float = STAPLE_TOL,
    max_iter: int = STAPLE_MAX_ITER,
) -> StapleFit:
    r"""Binary STAPLE pooled over images that different experts annotated (missing raters).

    Every expert ``j`` has one sensitivity ``p_j`` and one specificity ``q_j``, estimated from all the
    images ``j`` annotated; the posterior of a pixel uses only the experts who annotated its image:

    * initialisation: ``W_i`` = the fraction of the image's raters marking pixel ``i``; the prior of image
      ``n`` is ``g_n = confidence_weight * mean_{i in n} W_i`` (ITK's rule, per image), then fixed;
    * M-step: ``p_j = sum_{n: j rated n} sum_i W_i D_ij / sum_{n: j rated n} sum_i W_i`` (``q_j`` alike);
    * E-step: ``W_i = g_n a_i / (g_n a_i + (1 - g_n) b_i)``, the products running over image ``n``'s raters;
    * ITK's stopping rule on every ``p_j`` and ``q_j``.

    With a single image this is exactly :func:`staple`. With several images it differs from running
    :func:`staple` per image (which re-estimates ``p_j`` and ``q_j`` on every image): it is the better
    estimate when an expert annotated few pixels of an image, and the only one that uses what is known
    about an expert from the other images. It does not reproduce Segebarth et al.'s per-image est_GT.

    Parameters
    ----------
    patterns : sequence of (bits, counts)
        One entry per image, from :func:`vote_patterns` of that image's raters' masks.
    raters : sequence of sequences of int
        The expert indices (columns of ``bits``, in order) of every image.
    n_experts : int, optional
        Number of experts ``R``; default the largest index + 1.
    prior, confidence_weight, tol, max_iter
        As in :func:`staple` (a given ``prior`` is used for every image).

    Returns
    -------
    StapleFit

    Examples
    --------
    >>> truth = np.zeros((8, 8), bool); truth[2:6, 2:6] = True
    >>> shifted = np.roll(truth, 1, axis=1)
    >>> pats = [vote_patterns(np.stack([truth, shifted])), vote_patterns(np.stack([truth, truth]))]
    >>> fit = staple_fit(pats, [(0, 2), (0, 1)])   # expert 1 and 2 never annotated the same image
    >>> fit.sensitivity.round(2).tolist(), fit.converged
    ([1.0, 1.0, 0.75], True)
    """
    n = len(patterns)
    if n == 0:
        raise ValueError("staple_fit needs at least one image; got none")
    widths = [np.asarray(b).shape[1] if np.asarray(b).ndim == 2 else -1 for b, _ in patterns]
    rs = _check_raters(raters, n, widths, n_experts)
    r = max(max(x) for x in rs if x) + 1 if n_experts is None else _check_int(n_experts, "n_experts", 1)
    prior, confidence_weight, tol, max_iter = check_em_options(prior, confidence_weight, tol, max_iter)
    bits_l = [np.asarray(b, dtype=bool) for b, _ in patterns]
    counts_l = [np.asarray(c, dtype=np.float64) for _, c in patterns]
    w_l = [b.sum(axis=1) / float(b.shape[1]) if b.shape[1] else np.zeros(b.shape[0]) for b in bits_l]
    if prior is None:
        g = np.array([float((c * w).sum() / c.sum()) * confidence_weight if c.sum() > 0 else 0.0
                      for c, w in zip(counts_l, w_l)])
    else:
        g = np.full(n, float(prior))
    p, q, n_iter, converged = _pooled_em(bits_l, counts_l, w_l, rs, g, r, tol=tol, max_iter=max_iter)
    if not converged:
        logger.warning("pooled STAPLE did not converge in %d iterations (tol=%g)", max_iter, tol)
    logger.debug("pooled STAPLE: %d images, %d experts, %d iterations", n, r, n_iter)
    return StapleFit(p, q, g, rs, n_iter, converged)


def _pooled_em(
    bits_l: list[np.ndarray], counts_l: list[np.ndarray], w_l: list[np.ndarray],
    raters: tuple[tuple[int, ...], ...], g: np.ndarray, r: int, *, tol: float, max_iter: int,
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """The pooled EM from the initial posteriors ``w_l``; returns (p, q, n_iter, converged), ITK's stopping rule."""
    idx_l = [np.asarray(x, dtype=np.intp) for x in raters]
    d_l = [b.astype(np.float64) for b in bits_l]
    stop = Convergence(r, tol, nan_equal=True)
    p = q = stop.last_p
    converged = False
    n_iter = 0
    for it in range(max_iter):
        p_num = np.zeros(r)
        p_den = np.zeros(r)
        q_num = np.zeros(r)
        q_den = np.zeros(r)
        for d, c, w, idx in zip(d_l, counts_l, w_l, idx_l):
            cw = c * w
            cv = c * (1.0 - w)
            p_num[idx] += cw @ d
            p_den[idx] += cw.sum()
            q_num[idx] += cv @ (1.0 - d)
            q_den[idx] += cv.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            p = p_num / p_den
            q = q_num / q_den
        w_l = [_posterior_patterns(b, p[idx], q[idx], float(gn)) for b, idx, gn in zip(bits_l, idx_l, g)]
        n_iter = it + 1
        if stop.reached(it, p, q):
            converged = True
            break
    return p, q, n_iter, converged


def staple_posterior(
    masks: Any, sensitivity: Any, specificity: Any, prior: float, *, ignore: Any = None
) -> np.ndarray:
    """Posterior ``P(T_i = 1)`` of one image from its raters' masks and their (pooled) performance.

    Parameters
    ----------
    masks : array_like, shape (R_n, Y, X)
        Masks of the experts who annotated this image.
    sensitivity, specificity : array_like, shape (R_n,)
        Those experts' sensitivity and specificity, e.g. ``fit.sensitivity[list(fit.raters[n])]``.
    prior : float
        The image's foreground prior (``fit.priors[n]``).
    ignore : array_like of bool, shape (Y, X), optional
        Pixels set to probability 0.

    Returns
    -------
    numpy.ndarray of float64, shape (Y, X)

    Examples
    --------
    >>> m = np.array([[[1, 1, 0]], [[1, 0, 0]]], dtype=bool)
    >>> staple_posterior(m, [0.9, 0.9], [0.9, 0.9], 0.5).round(2)
    array([[0.99, 0.5 , 0.01]])
    """
    stack = _masks(masks, min_raters=1)
    r = stack.shape[0]
    p = np.asarray(sensitivity, dtype=np.float64).ravel()
    q = np.asarray(specificity, dtype=np.float64).ravel()
    if p.shape != (r,) or q.shape != (r,):
        raise ValueError(f"sensitivity and specificity must hold one value per mask ({r}); got {p.size} and {q.size}")
    g = _check_float(prior, "prior", lo=0.0, hi=1.0, open_=False)
    ign = _ignore(ignore, stack.shape[1:])
    pat = _patterns(stack, None)
    prob = _expand(pat, _posterior_patterns(pat.bits, p, q, g), stack.shape[1:])
    if ign is not None:
        prob[ign] = 0.0
    return prob


@dataclass(frozen=True)
class PooledStapleResult:
    """Result of :func:`staple_pooled`: the :class:`StapleFit` and every image's posterior.

    Attributes
    ----------
    probability : list of numpy.ndarray of float64, shape (Y_n, X_n)
        Posterior of every image.
    fit : StapleFit
        Per-expert sensitivity and specificity, per-image priors, iterations.
    """

    probability: list[np.ndarray]
    fit: StapleFit

    @property
    def sensitivity(self) -> np.ndarray:
        return self.fit.sensitivity

    @property
    def specificity(self) -> np.ndarray:
        return self.fit.specificity

    def masks(self, threshold: float = 0.5) -> list[np.ndarray]:
        """Binary consensus of every image (``probability > threshold``)."""
        return [p > threshold for p in self.probability]


def staple_pooled(
    masks: Sequence[Any], raters: Sequence[Sequence[int]], *, n_experts: int | None = None,
    prior: float | None = None, confidence_weight: float = 1.0, tol: float = STAPLE_TOL,
    max_iter: int = STAPLE_MAX_ITER, ignore: Sequence[Any] | None = None,
) -> PooledStapleResult:
    """STAPLE over images annotated by different subsets of experts (:func:`staple_fit` + posteriors).

    Parameters
    ----------
    masks : sequence of N arrays, each (R_n, Y_n, X_n)
        Per image, the masks of the experts who annotated it (``R_n >= 1``; a consensus wants ``>= 2``).
    raters : sequence of N sequences of int
        The expert index of each of those masks.
    n_experts, prior, confidence_weight, tol, max_iter
        See :func:`staple_fit`.
    ignore : sequence of N (Y_n, X_n) bool arrays or None, optional
        Pixels left out of the estimate (probability 0).

    Returns
    -------
    PooledStapleResult
        Every image's posterior (``probability``) and the pooled fit (``fit``).

    Examples
    --------
    >>> truth = np.zeros((8, 8), bool); truth[2:6, 2:6] = True
    >>> res = staple_pooled([np.stack([truth, truth]), np.stack([truth, np.roll(truth, 1, 1)])],
    ...                     [(0, 1), (1, 2)])
    >>> [int(m.sum()) for m in res.masks()]
    [16, 16]
    """
    ignores = list(ignore) if ignore is not None else [None] * len(masks)
    if len(ignores) != len(masks):
        raise ValueError(f"ignore must hold one mask (or None) per image ({len(masks)}); got {len(ignores)}")
    stacks = [_masks(m, min_raters=1, name=f"masks[{i}]") for i, m in enumerate(masks)]
    pats = [vote_patterns(s, ignore=ig) for s, ig in zip(stacks, ignores)]
    fit = staple_fit(pats, raters, n_experts=n_experts, prior=prior, confidence_weight=confidence_weight,
                     tol=tol, max_iter=max_iter)
    probs = []
    for s, idx, g, ig in zip(stacks, fit.raters, fit.priors, ignores):
        ix = list(idx)
        probs.append(staple_posterior(s, fit.sensitivity[ix], fit.specificity[ix], float(g), ignore=ig))
    return PooledStapleResult(probs, fit)
