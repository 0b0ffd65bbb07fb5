"""Vote patterns: a binary ``(R, Y, X)`` stack compressed to its distinct per-pixel vote patterns.

For binary masks the STAPLE EM depends on a pixel only through its *vote pattern* (which experts marked
it): one pattern code per pixel (bit packing for up to 16 experts, unique rows beyond), the patterns
counted once, values per pattern expanded back with a lookup table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fiji_consensus.consensus._common import _ignore, _masks

__all__ = ["vote_patterns"]


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
