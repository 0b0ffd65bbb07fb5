"""Pixel-wise voting: the majority vote and the soft label (fraction of experts per pixel)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fiji_consensus.consensus._common import _check_int, _ignore, _masks

__all__ = ["majority_vote", "expert_fraction"]


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
