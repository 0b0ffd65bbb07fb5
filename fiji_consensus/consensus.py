"""Consensus of several experts' annotations: majority vote, soft labels, STAPLE and object-level consensus.

Every function takes the experts' annotations as one ``(R, Y, X)`` array (``R`` experts) or a sequence of
``R`` two-dimensional arrays, and returns arrays; nothing here reads or writes files.

* :func:`majority_vote` and :func:`expert_fraction`: pixel-wise voting and the soft label (fraction of
  experts marking a pixel).
* :func:`staple`: binary STAPLE (Warfield, Zou & Wells, IEEE TMI 23(7):903-921, 2004), a faithful
  replication of ITK's ``STAPLEImageFilter`` as wrapped by SimpleITK (``SimpleITK.STAPLE``): same
  initialisation, prior, update order and stopping rule, so ``staple(masks).mask()`` reproduces the
  published consensus ``est_GT`` of Segebarth et al. (eLife 2020) pixel for pixel. It also returns every
  expert's sensitivity and specificity.
* :func:`staple_pooled` (:func:`vote_patterns`, :func:`staple_fit`, :func:`staple_posterior`): binary STAPLE
  when experts annotated different images (missing raters): each expert's sensitivity and specificity pooled
  over the images that expert annotated, each image's posterior from its own experts.
* :func:`staple_multiclass`: multi-class STAPLE with per-expert confusion matrices, following ITK's
  ``MultiLabelSTAPLEImageFilter``.
* :func:`object_consensus`: an object-level consensus in which touching cells stay separate objects.

Speed
-----
For binary masks the STAPLE EM depends on a pixel only through its *vote pattern* (which experts marked
it). The stack is compressed to one pattern code per pixel (bit packing for up to 16 experts, unique
rows beyond), the patterns are counted once, the EM runs on at most ``2**R`` weighted patterns and the
posterior is expanded back with a lookup table. This gives the same numbers as the pixel-wise EM (up to
floating-point summation order) at a small fraction of the cost. The multi-class STAPLE is compressed
the same way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fiji_consensus._validate import as_binary, as_mask_stack

__all__ = [
    "majority_vote",
    "expert_fraction",
    "StapleResult",
    "staple",
    "vote_patterns",
    "StapleFit",
    "staple_fit",
    "staple_posterior",
    "PooledStapleResult",
    "staple_pooled",
    "MultiClassStapleResult",
    "staple_multiclass",
    "ObjectConsensusResult",
    "object_consensus",
    "CONSENSUS_METHODS",
    "consensus_of",
    "training_targets",
]

logger = logging.getLogger(__name__)

#: ITK's STAPLE stops when every sensitivity and specificity changed by at most this much between two
#: iterations (it compares the squared change with ``1e-14``).
STAPLE_TOL = 1e-7
#: Default iteration cap. SimpleITK's default is ``2**32 - 1`` (effectively unlimited); on real data the
#: EM converges in tens of iterations, and on ``<= 2**R`` patterns an iteration costs microseconds.
STAPLE_MAX_ITER = 10_000
#: Largest number of distinct pattern codes for which a dense ``bincount`` table is used.
_DENSE_PATTERNS = 1 << 16


# ----------------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------------


def _masks(masks: Any, *, min_raters: int, name: str = "masks") -> np.ndarray:
    """``(R, Y, X)`` C-contiguous bool stack; errors name the argument and what was got."""
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        raise ValueError(
            f"{name} must be (n_experts, Y, X) or a sequence of (Y, X) masks; got a single 2-D mask of "
            f"shape {masks.shape}. Stack the experts' masks along a new first axis"
        )
    if isinstance(masks, np.ndarray) and masks.ndim == 4:
        raise ValueError(
            f"{name} must be (n_experts, Y, X) binary masks (3-D/RGB stacks are not supported); got "
            f"shape {masks.shape}. For RGB masks take one channel, e.g. masks[..., 0] > 0"
        )
    stack = as_mask_stack(masks, name=name, min_raters=min_raters)
    return np.ascontiguousarray(stack)


def _ignore(ignore: Any, shape: tuple[int, int]) -> np.ndarray | None:
    if ignore is None:
        return None
    arr = np.asarray(ignore)
    if arr.shape != shape:
        raise ValueError(f"ignore must be a (Y, X) mask of shape {shape} like the masks; got shape {arr.shape}")
    return as_binary(arr, name="ignore")


def _check_int(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {rng}; got {value}")
    return value


def _check_float(value: Any, name: str, *, lo: float, hi: float, open_: bool = True) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r} ({type(value).__name__})") from None
    ok = (lo < out < hi) if open_ else (lo <= out <= hi)
    if not math.isfinite(out) or not ok:
        br = ("(", ")") if open_ else ("[", "]")
        raise ValueError(f"{name} must lie in {br[0]}{lo}, {hi}{br[1]}; got {value!r}")
    return out


# ----------------------------------------------------------------------------------------------------
# voting
# ----------------------------------------------------------------------------------------------------


def majority_vote(masks: Any, *, min_votes: int | None = None, ignore: Any = None) -> np.ndarray:
    """Pixel-wise vote of ``R`` experts.

    A pixel is foreground if ``votes > R / 2`` (strict majority; the default) or, with ``min_votes=k``,
    if ``votes >= k``. With an even number of experts a tie (``votes == R / 2``) is background, as in
    deepflash2; pass ``min_votes=R // 2`` to count ties as foreground.

    Parameters
    ----------
    masks : array_like, shape (R, Y, X), or sequence of R arrays of shape (Y, X)
        Binary masks (bool, 0/1 or 0/255), one per expert; ``R >= 1``.
    min_votes : int, optional
        Minimum number of experts, ``1 <= min_votes <= R``. ``1`` is the union, ``R`` the intersection.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels to leave out; they are background in the result.

    Returns
    -------
    numpy.ndarray of bool, shape (Y, X)

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[[1, 1, 0]], [[1, 0, 0]], [[1, 1, 1]], [[0, 1, 0]]], dtype=bool)  # 4 experts
    >>> majority_vote(m).astype(int)            # 3, 3 and 1 votes: ties (2 of 4) would be background
    array([[1, 1, 0]])
    >>> majority_vote(m, min_votes=1).astype(int)
    array([[1, 1, 1]])
    """
    stack = _masks(masks, min_raters=1)
    r = stack.shape[0]
    votes = stack.sum(axis=0, dtype=np.int32)
    if min_votes is None:
        out = 2 * votes > r
    else:
        k = _check_int(min_votes, "min_votes", 1, r)
        out = votes >= k
    ign = _ignore(ignore, stack.shape[1:])
    if ign is not None:
        out &= ~ign
    return out


def expert_fraction(masks: Any, *, ignore: Any = None) -> np.ndarray:
    """Soft label: the fraction of experts that marked each pixel.

    Parameters
    ----------
    masks : array_like, shape (R, Y, X), or sequence of R arrays of shape (Y, X)
        Binary masks, one per expert.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels to leave out; they get ``0``.

    Returns
    -------
    numpy.ndarray of float32, shape (Y, X)
        ``votes / R`` in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> expert_fraction(np.array([[[1, 0]], [[1, 1]]], dtype=bool))
    array([[1. , 0.5]], dtype=float32)
    """
    stack = _masks(masks, min_raters=1)
    frac = (stack.sum(axis=0, dtype=np.int32) / stack.shape[0]).astype(np.float32)
    ign = _ignore(ignore, stack.shape[1:])
    if ign is not None:
        frac[ign] = 0.0
    return frac


# ----------------------------------------------------------------------------------------------------
# vote patterns
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patterns:
    """Distinct vote patterns of a binary stack: ``bits[u, k]`` is expert ``k``'s vote in pattern ``u``."""

    bits: np.ndarray  # (P, R) bool
    counts: np.ndarray  # (P,) float64, number of pixels with pattern u
    index: np.ndarray | None  # (n_pixels,) pattern index of each pixel, or None when codes are used
    codes: np.ndarray | None  # (n_pixels,) dense code of each pixel
    code_to_pattern: np.ndarray | None  # (2**R,) dense code -> pattern index


def _pack_codes(stack: np.ndarray) -> np.ndarray:
    """Per-pixel code ``sum_k stack[k] << k`` for ``R <= 16`` (uint8 or uint16), shape (n_pixels,)."""
    r = stack.shape[0]
    flat = stack.reshape(r, -1).view(np.uint8)  # bool -> 0/1 bytes, no copy
    dtype = np.uint8 if r <= 8 else np.uint16
    codes = flat[0].astype(dtype)
    tmp = np.empty_like(codes)
    for k in range(1, r):
        np.left_shift(flat[k], k, out=tmp, dtype=dtype, casting="unsafe")
        np.bitwise_or(codes, tmp, out=codes)
    return codes


def _patterns(stack: np.ndarray, keep: np.ndarray | None = None) -> _Patterns:
    """Compress an ``(R, Y, X)`` bool stack (pixels where ``keep`` is False are not counted)."""
    r = stack.shape[0]
    if r <= 16:
        codes = _pack_codes(stack)
        hist = np.bincount(codes if keep is None else codes[keep.ravel()], minlength=1 << r)
        present = np.flatnonzero(hist)
        bits = ((present[:, None] >> np.arange(r)) & 1).astype(bool)
        code_to_pattern = np.full(1 << r, -1, dtype=np.int64)
        code_to_pattern[present] = np.arange(present.size)
        return _Patterns(bits, hist[present].astype(np.float64), None, codes, code_to_pattern)
    # many experts: unique rows of the packed bits (never allocates 2**R)
    flat = stack.reshape(r, -1)
    packed = np.packbits(flat, axis=0, bitorder="little").T  # (n, nbytes)
    nbytes = packed.shape[1]
    if nbytes <= 8:  # up to 64 experts: one uint64 key per pixel sorts fast
        buf = np.zeros((packed.shape[0], 8), dtype=np.uint8)
        buf[:, :nbytes] = packed
        rows = buf.view(np.uint64).ravel()
    else:
        buf = np.ascontiguousarray(packed)
        rows = buf.view(np.dtype((np.void, nbytes))).ravel()
    uniq, index = np.unique(rows, return_inverse=True)
    index = index.ravel()
    counts = np.bincount(index if keep is None else index[keep.ravel()], minlength=uniq.size)
    ubytes = np.frombuffer(uniq.tobytes(), dtype=np.uint8).reshape(uniq.size, -1)[:, :nbytes]
    bits = np.unpackbits(ubytes, axis=1, bitorder="little")[:, :r].astype(bool)
    return _Patterns(bits, counts.astype(np.float64), index, None, None)


def _expand(pat: _Patterns, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-pattern ``values`` back to a ``shape`` image."""
    if pat.codes is not None:
        lut = np.zeros(pat.code_to_pattern.size, dtype=values.dtype)
        present = pat.code_to_pattern >= 0
        lut[present] = values[pat.code_to_pattern[present]]
        return lut[pat.codes].reshape(shape)
    return values[pat.index].reshape(shape)


# ----------------------------------------------------------------------------------------------------
# binary STAPLE
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StapleResult:
    """Result of :func:`staple`.

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
    min_sq = 1e-14 if tol == STAPLE_TOL else tol * tol  # ITK's literal threshold on the squared change
    last_p = np.full(r, -10.0)
    last_q = np.full(r, -10.0)
    p = q = last_p
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
        if it != 0 and np.all((p - last_p) ** 2 <= min_sq) and np.all((q - last_q) ** 2 <= min_sq):
            converged = True
            break
        last_p, last_q = p, q
    return w, p, q, g, n_iter, converged


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
    if prior is not None:
        prior = _check_float(prior, "prior", lo=0.0, hi=1.0)
    confidence_weight = _check_float(confidence_weight, "confidence_weight", lo=0.0, hi=math.inf)
    tol = _check_float(tol, "tol", lo=0.0, hi=math.inf, open_=False)
    max_iter = _check_int(max_iter, "max_iter", 1)
    ign = _ignore(ignore, (ny, nx))
    keep = None if ign is None else ~ign

    pat = _patterns(stack, keep)
    present = pat.counts > 0
    bits, counts = pat.bits[present], pat.counts[present]
    if counts.size == 0:
        raise ValueError("ignore must leave at least one pixel for STAPLE; got an ignore mask covering all")
    n_fg_votes = float((counts[:, None] * bits).sum())
    if n_fg_votes == 0 or np.all(bits):  # degenerate: nothing marked, or everything marked by everyone
        full = bool(np.all(bits))
        logger.warning("STAPLE: every expert marks %s pixel; the consensus is trivial",
                       "every" if full else "no")
        prob = np.full((ny, nx), 1.0 if full else 0.0)
        if ign is not None:
            prob[ign] = 0.0
        nan = np.full(r, np.nan)
        one = np.ones(r)
        g = float(prior) if prior is not None else (1.0 if full else 0.0)
        return StapleResult(prob, one if full else nan, nan if full else one, g, 0, True)

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


# ----------------------------------------------------------------------------------------------------
# STAPLE over many images with missing raters (experts annotate different images)
# ----------------------------------------------------------------------------------------------------


def vote_patterns(masks: Any, *, ignore: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct vote patterns of one image's ``(R, Y, X)`` masks and how many pixels have each.

    This is all that binary STAPLE needs to know about an image, so an estimate pooled over many images
    can be fitted from these small tables (:func:`staple_fit`) without holding the images in memory.

    Parameters
    ----------
    masks : array_like, shape (R, Y, X), or sequence of R arrays of shape (Y, X)
        Binary masks of the experts who annotated this image, ``R >= 1``.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels not counted.

    Returns
    -------
    bits : numpy.ndarray of bool, shape (P, R)
        ``bits[u, k]``: expert ``k``'s vote in pattern ``u`` (``P <= 2**R``).
    counts : numpy.ndarray of float64, shape (P,)
        Number of (non-ignored) pixels with pattern ``u``; every count is positive.

    Examples
    --------
    >>> import numpy as np
    >>> bits, counts = vote_patterns(np.array([[[1, 1, 0]], [[1, 0, 0]]], dtype=bool))
    >>> bits.astype(int).tolist(), counts.tolist()
    ([[0, 0], [1, 0], [1, 1]], [1.0, 1.0, 1.0])
    """
    stack = _masks(masks, min_raters=1)
    ign = _ignore(ignore, stack.shape[1:])
    pat = _patterns(stack, None if ign is None else ~ign)
    present = pat.counts > 0
    return pat.bits[present], pat.counts[present]


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
    >>> import numpy as np
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
    if prior is not None:
        prior = _check_float(prior, "prior", lo=0.0, hi=1.0)
    confidence_weight = _check_float(confidence_weight, "confidence_weight", lo=0.0, hi=math.inf)
    tol = _check_float(tol, "tol", lo=0.0, hi=math.inf, open_=False)
    max_iter = _check_int(max_iter, "max_iter", 1)
    bits_l = [np.asarray(b, dtype=bool) for b, _ in patterns]
    counts_l = [np.asarray(c, dtype=np.float64) for _, c in patterns]
    idx_l = [np.asarray(x, dtype=np.intp) for x in rs]
    d_l = [b.astype(np.float64) for b in bits_l]
    w_l = [b.sum(axis=1) / float(b.shape[1]) if b.shape[1] else np.zeros(b.shape[0]) for b in bits_l]
    if prior is None:
        g = np.array([float((c * w).sum() / c.sum()) * confidence_weight if c.sum() > 0 else 0.0
                      for c, w in zip(counts_l, w_l)])
    else:
        g = np.full(n, float(prior))
    min_sq = 1e-14 if tol == STAPLE_TOL else tol * tol
    last_p = np.full(r, -10.0)
    last_q = np.full(r, -10.0)
    p = q = last_p
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
        if it != 0:
            dp = np.where(np.isnan(p) & np.isnan(last_p), 0.0, p - last_p)
            dq = np.where(np.isnan(q) & np.isnan(last_q), 0.0, q - last_q)
            if np.all(dp ** 2 <= min_sq) and np.all(dq ** 2 <= min_sq):
                converged = True
                break
        last_p, last_q = p, q
    if not converged:
        logger.warning("pooled STAPLE did not converge in %d iterations (tol=%g)", max_iter, tol)
    logger.debug("pooled STAPLE: %d images, %d experts, %d iterations", n, r, n_iter)
    return StapleFit(p, q, g, rs, n_iter, converged)


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
    >>> import numpy as np
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
    masks: Sequence[Any],
    raters: Sequence[Sequence[int]],
    *,
    n_experts: int | None = None,
    prior: float | None = None,
    confidence_weight: float = 1.0,
    tol: float = STAPLE_TOL,
    max_iter: int = STAPLE_MAX_ITER,
    ignore: Sequence[Any] | None = None,
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

    Examples
    --------
    >>> import numpy as np
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


# ----------------------------------------------------------------------------------------------------
# multi-class STAPLE
# ----------------------------------------------------------------------------------------------------


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


def staple_multiclass(
    label_masks: Any,
    *,
    n_classes: int | None = None,
    prior: Sequence[float] | None = None,
    tol: float = 1e-5,
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

    # compress to label patterns
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
    pats = pats.astype(np.intp)
    n_pat = pats.shape[0]

    # prior: label frequencies over all experts (ITK), fixed during the EM
    if prior is None:
        freq = np.zeros(c)
        for k in range(r):
            freq += np.bincount(pats[:, k], weights=counts, minlength=c)
        pi = freq / freq.sum()
    else:
        pi = np.asarray(prior, dtype=np.float64).ravel()
        if pi.shape != (c,) or not np.all(np.isfinite(pi)) or np.any(pi < 0) or pi.sum() <= 0:
            raise ValueError(f"prior must be {c} non-negative numbers (one per class); got {prior!r}")
        pi = pi / pi.sum()

    # initialisation from the majority vote (ties not counted), rows normalised (ITK)
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

    def e_step(th: np.ndarray) -> np.ndarray:
        w = np.broadcast_to(pi, (n_pat, c)).copy()
        for k in range(r):
            w *= th[k][pats[:, k]]
        s = w.sum(axis=1, keepdims=True)
        np.divide(w, s, out=w, where=s != 0)
        return w

    converged = False
    n_iter = 0
    for it in range(max_iter):
        w = e_step(theta) * counts[:, None]
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
    if not converged:
        logger.warning("multi-class STAPLE did not converge in %d iterations (tol=%g)", max_iter, tol)

    w = e_step(theta)  # (P, C), normalised
    wmax = w.max(axis=1)
    lab = w.argmax(axis=1)
    tied = ((w == wmax[:, None]).sum(axis=1) > 1) | (wmax <= 0)
    lab = np.where(tied, undecided, lab).astype(np.int32)
    probability = np.ascontiguousarray(w[inverse].T).reshape(c, ny, nx)
    labels = lab[inverse].reshape(ny, nx)
    return MultiClassStapleResult(probability, labels, theta, pi, n_iter, converged, undecided)


# ----------------------------------------------------------------------------------------------------
# object-level consensus
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectConsensusResult:
    """Result of :func:`object_consensus`.

    Attributes
    ----------
    labels : numpy.ndarray of int32, shape (Y, X)
        ``0`` background, ``1..n`` the consensus objects; touching objects keep distinct labels.
    support : numpy.ndarray of int32, shape (n,)
        Number of experts who annotated object ``i + 1``.
    members : numpy.ndarray of int32, shape (n, R)
        ``members[i, k]`` is the id of object ``i + 1``'s counterpart in ``expert_labels[k]`` (0: expert
        ``k`` did not annotate it).
    expert_labels : numpy.ndarray of int32, shape (R, Y, X)
        Every expert's objects (8-connected components of the mask, ``min_size`` applied).
    """

    labels: np.ndarray
    support: np.ndarray
    members: np.ndarray
    expert_labels: np.ndarray = field(repr=False)

    @property
    def n_objects(self) -> int:
        """Number of consensus objects."""
        return int(self.support.size)

    def mask(self) -> np.ndarray:
        """Binary consensus mask ``labels > 0`` (bool, shape (Y, X)); note that it merges touching objects."""
        return self.labels > 0


class _Groups:
    """Union-find over expert objects that never joins two objects of the same expert."""

    def __init__(self, expert_of: np.ndarray) -> None:
        self.parent = np.arange(expert_of.size)
        self.experts = [1 << int(e) for e in expert_of]  # bit set of experts per root (Python ints: any R)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, i: int, j: int) -> bool:
        ri, rj = self.find(i), self.find(j)
        if ri == rj or self.experts[ri] & self.experts[rj]:
            return False
        if rj < ri:
            ri, rj = rj, ri
        self.parent[rj] = ri
        self.experts[ri] |= self.experts[rj]
        return True


def object_consensus(
    masks: Any,
    *,
    min_experts: int | None = None,
    iou_threshold: float = 0.5,
    min_size: int = 0,
    pixel_min_votes: int | None = None,
    ignore: Any = None,
) -> ObjectConsensusResult:
    """Object-level consensus: objects that enough experts annotated, kept apart even where they touch.

    Pixel-wise consensus (majority vote, STAPLE) fuses cells that touch in the consensus mask into one
    object, even when every expert drew them as separate cells. This consensus works on objects instead:

    1. every expert's mask is labelled into objects (8-connectivity; objects smaller than ``min_size``
       pixels and pixels under ``ignore`` are dropped), see :func:`fiji_consensus.matching.label_objects`;
    2. every pair of experts is matched one to one by Hungarian assignment on IoU, a pair matching if its
       IoU is ``> iou_threshold`` (:func:`fiji_consensus.matching.match_objects`);
    3. matched pairs are joined into groups in order of decreasing IoU (single linkage), never letting a
       group take two objects of the same expert, so a group holds at most one object per expert;
    4. a group is kept if at least ``min_experts`` experts annotated it;
    5. its shape is the pixel vote of its ``m`` members: pixels marked by at least ``pixel_min_votes``
       of them (default: a strict majority of the members, ``m // 2 + 1``; clamped to ``m``);
    6. pixels claimed by two objects go to the one with the larger vote fraction there (ties: the object
       with more support, then the lower id); each object keeps its largest 8-connected part, objects
       smaller than ``max(min_size, 1)`` pixels are dropped, and the rest are numbered ``1..n`` in
       raster order of their first pixel.

    The result is a label image: touching objects keep separate labels and never merge.

    Parameters
    ----------
    masks : array_like, shape (R, Y, X), or sequence of R arrays of shape (Y, X)
        Binary masks, one per expert, ``R >= 2``.
    min_experts : int, optional
        Minimum number of experts per object, ``1 <= min_experts <= R``; default strict majority
        ``R // 2 + 1``.
    iou_threshold : float
        Objects of two experts are the same object if their IoU is strictly greater than this
        (in ``[0, 1)``; default 0.5 as in Segebarth et al.'s ROI-F1).
    min_size : int
        Minimum object area in pixels, for each expert's objects and for the consensus objects.
    pixel_min_votes : int, optional
        Minimum number of a group's members that must mark a pixel for it to belong to the object.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels set to background in every expert's mask before labelling.

    Returns
    -------
    ObjectConsensusResult

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((3, 6, 12), bool)
    >>> m[0, 1:5, 0:5] = m[0, 1:5, 6:11] = True      # expert 0: two cells with a gap
    >>> m[1, 1:5, 0:6] = m[1, 1:5, 7:11] = True      # expert 1: the gap one pixel further right
    >>> m[2, 1:5, 0:7] = m[2, 1:5, 8:11] = True      # expert 2: ... and further still
    >>> from scipy import ndimage
    >>> ndimage.label(majority_vote(m))[1]           # the pixel-wise consensus merges the two cells
    1
    >>> object_consensus(m).n_objects
    2
    """
    from scipy import ndimage

    from fiji_consensus import matching

    stack = _masks(masks, min_raters=2)
    r, ny, nx = stack.shape
    min_experts = r // 2 + 1 if min_experts is None else _check_int(min_experts, "min_experts", 1, r)
    iou_threshold = _check_float(iou_threshold, "iou_threshold", lo=0.0, hi=1.0, open_=False)
    if iou_threshold >= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1); got {iou_threshold!r}")
    min_size = _check_int(min_size, "min_size", 0)
    if pixel_min_votes is not None:
        pixel_min_votes = _check_int(pixel_min_votes, "pixel_min_votes", 1, r)
    ign = _ignore(ignore, (ny, nx))

    expert_labels = np.stack(
        [matching.label_objects(stack[k], min_size=min_size, connectivity=8, ignore=ign) for k in range(r)]
    ).astype(np.int32)
    n_obj = expert_labels.reshape(r, -1).max(axis=1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_obj)])
    expert_of = np.repeat(np.arange(r), n_obj)
    local_id = np.concatenate([np.arange(1, n + 1) for n in n_obj]) if n_obj.sum() else np.zeros(0, int)

    # pairwise Hungarian matching -> edges between expert objects
    edges: list[tuple[float, int, int]] = []
    for a in range(r):
        for b in range(a + 1, r):
            mt = matching.match_objects(expert_labels[a], expert_labels[b], iou_threshold=iou_threshold)
            for ra, cb, iou in zip(mt.ref_ids.tolist(), mt.cand_ids.tolist(), mt.ious.tolist()):
                edges.append((-iou, int(offsets[a] + ra - 1), int(offsets[b] + cb - 1)))
    edges.sort()
    groups = _Groups(expert_of)
    for _, i, j in edges:
        groups.union(i, j)
    roots = np.array([groups.find(i) for i in range(expert_of.size)], dtype=np.int64)

    # members of every group that enough experts annotated
    order = np.argsort(roots, kind="stable")
    uniq_roots, starts = np.unique(roots[order], return_index=True)
    member_lists = np.split(order, starts[1:]) if order.size else []
    kept = [mem for mem in member_lists if len(mem) >= min_experts]
    kept.sort(key=lambda mem: (-len(mem), int(mem.min())))  # paint order: more support first
    logger.debug("object consensus: %s expert objects, %d groups, %d kept", n_obj.tolist(),
                 len(member_lists), len(kept))

    boxes = [ndimage.find_objects(expert_labels[k]) for k in range(r)]
    score = np.zeros((ny, nx), dtype=np.float64)
    out = np.zeros((ny, nx), dtype=np.int32)
    members_tab = np.zeros((len(kept), r), dtype=np.int32)
    for gi, mem in enumerate(kept):
        m = len(mem)
        need = min(m // 2 + 1 if pixel_min_votes is None else pixel_min_votes, m)
        sl = [boxes[expert_of[i]][local_id[i] - 1] for i in mem]
        y0 = min(s[0].start for s in sl)
        y1 = max(s[0].stop for s in sl)
        x0 = min(s[1].start for s in sl)
        x1 = max(s[1].stop for s in sl)
        votes = np.zeros((y1 - y0, x1 - x0), dtype=np.int32)
        for i in mem:
            k = int(expert_of[i])
            members_tab[gi, k] = int(local_id[i])
            votes += expert_labels[k, y0:y1, x0:x1] == local_id[i]
        frac = np.where(votes >= need, votes / m, 0.0)
        sub_score = score[y0:y1, x0:x1]
        win = frac > sub_score
        sub_score[win] = frac[win]
        out[y0:y1, x0:x1][win] = gi + 1

    # largest 8-connected part per object, size filter, sequential relabelling in raster order
    eight = np.ones((3, 3), dtype=bool)
    final = np.zeros((ny, nx), dtype=np.int32)
    obj_boxes = ndimage.find_objects(out)
    keep_ids: list[int] = []
    parts: list[tuple[tuple[slice, slice], np.ndarray]] = []
    for gi, box in enumerate(obj_boxes):
        if box is None:
            continue
        obj = out[box] == gi + 1
        lab, n = ndimage.label(obj, structure=eight)
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            obj = lab == (int(np.argmax(sizes)) + 1)
        if obj.sum() < max(min_size, 1):
            continue
        keep_ids.append(gi)
        parts.append((box, obj))
    firsts = []
    for box, obj in parts:
        ys, xs = np.nonzero(obj)
        j = int(np.argmin(ys * nx + xs))
        firsts.append((ys[j] + box[0].start) * nx + xs[j] + box[1].start)
    rank = np.argsort(np.asarray(firsts, dtype=np.int64), kind="stable")
    for new_id, idx in enumerate(rank.tolist(), start=1):
        box, obj = parts[idx]
        final[box][obj] = new_id
    sel = np.asarray(keep_ids, dtype=np.int64)[rank] if keep_ids else np.zeros(0, np.int64)
    members_out = members_tab[sel] if sel.size else np.zeros((0, r), np.int32)
    support = (members_out > 0).sum(axis=1).astype(np.int32)
    return ObjectConsensusResult(final, support, members_out, expert_labels)


def training_targets(masks: Any, kind: str, *, ignore: Any = None) -> np.ndarray:
    """Training targets of one image from its experts' ``(R, Y, X)`` masks, float32 in ``[0, 1]``.

    ``kind``: ``staple`` (posterior > 0.5, the published consensus), ``staple-soft`` (the posterior),
    ``fraction`` (fraction of experts per pixel) or ``majority`` (strict majority vote).

    >>> m = np.zeros((3, 4, 4), bool); m[:2, 1, 1] = True
    >>> round(float(training_targets(m, "fraction")[1, 1]), 4), float(training_targets(m, "majority")[1, 1])
    (0.6667, 1.0)
    """
    if kind == "fraction":
        return expert_fraction(masks, ignore=ignore).astype(np.float32)
    if kind == "majority":
        return majority_vote(masks, ignore=ignore).astype(np.float32)
    if kind not in ("staple", "staple-soft"):
        raise ValueError(f"kind must be one of staple, staple-soft, fraction, majority; got {kind!r}")
    res = staple(masks, ignore=ignore)
    if kind == "staple-soft":
        return res.probability.astype(np.float32)
    return (res.probability > 0.5).astype(np.float32)


#: The consensus methods :func:`consensus_of` knows.
CONSENSUS_METHODS = ("staple", "majority", "objects")


def consensus_of(
    masks: Any,
    method: Any = "staple",
    *,
    threshold: float = 0.5,
    prior: float | None = None,
    max_iter: int = 1000,
    min_votes: int | None = None,
    min_experts: int | None = None,
    iou_threshold: float = 0.5,
    min_size: int = 0,
    ignore: Any = None,
    pooled: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> dict[str, Any]:
    """The consensus of one image's ``(R, Y, X)`` expert masks by ``method``: the one consensus switch.

    ``method`` is ``"staple"`` (posterior > ``threshold``), ``"majority"`` or ``"objects"``, or a
    :class:`~fiji_consensus.config.ConsensusConfig` (any object with the fields ``method``, ``threshold``,
    ``prior``, ``max_iter``, ``min_votes``, ``min_experts``, ``iou_threshold``, ``min_size``), whose fields
    then replace the keyword options. ``masks`` holds the experts who annotated this image (``R >= 2``).
    With ``pooled = (sensitivity, specificity, prior)`` of those experts (from :func:`staple_fit` over all
    images), the STAPLE posterior uses that pooled estimate instead of a per-image one.

    Returns a dict with ``mask`` (bool (Y, X)), ``labels`` (int32 (Y, X), one label per consensus
    object, ``min_size`` applied), ``probability`` (float32 (Y, X) for STAPLE, else None) and
    ``sensitivity``/``specificity`` (per expert, STAPLE only; ``prior``, and ``n_iter``/``converged``
    for a per-image STAPLE).

    >>> m = np.zeros((3, 4, 4), bool); m[:2, 1:3, 1:3] = True
    >>> out = consensus_of(m, "majority")
    >>> int(out["mask"].sum()), int(out["labels"].max())
    (4, 1)
    """
    if not isinstance(method, str):
        cfg = method
        method, threshold, prior, max_iter = cfg.method, cfg.threshold, cfg.prior, cfg.max_iter
        min_votes, min_experts, iou_threshold, min_size = (
            cfg.min_votes, cfg.min_experts, cfg.iou_threshold, cfg.min_size)
    if method not in CONSENSUS_METHODS:
        raise ValueError(f"method must be 'staple', 'majority' or 'objects'; got {method!r}")
    from fiji_consensus import matching

    out: dict[str, Any] = {"probability": None, "sensitivity": None, "specificity": None}
    if method == "staple" and pooled is not None:
        sens, spec, prior_ = pooled
        prob = staple_posterior(masks, sens, spec, prior_, ignore=ignore)
        out["probability"] = prob.astype(np.float32)
        out["mask"] = prob > threshold
        out["sensitivity"] = np.asarray(sens, dtype=float)
        out["specificity"] = np.asarray(spec, dtype=float)
        out["prior"] = float(prior_)
    elif method == "staple":
        res = staple(masks, prior=prior, max_iter=max_iter, ignore=ignore)
        out["probability"] = res.probability.astype(np.float32)
        out["mask"] = res.probability > threshold
        out["sensitivity"] = np.asarray(res.sensitivity, dtype=float)
        out["specificity"] = np.asarray(res.specificity, dtype=float)
        out["prior"] = float(res.prior)
        out["n_iter"] = int(res.n_iter)
        out["converged"] = bool(res.converged)
    elif method == "majority":
        out["mask"] = majority_vote(masks, min_votes=min_votes, ignore=ignore)
    else:
        res_o = object_consensus(masks, min_experts=min_experts, iou_threshold=iou_threshold, min_size=min_size)
        labels = np.asarray(res_o.labels, dtype=np.int32)
        if ignore is not None:
            labels = np.where(ignore, 0, labels)
        out["labels"] = labels
        out["mask"] = labels > 0
        return out
    out["labels"] = matching.label_objects(out["mask"], min_size=min_size)
    return out
