"""Object labelling, IoU matrices and one-to-one matching of objects between two label images.

This module is the object-level core of the package. It turns masks into label images
(:func:`label_objects`), measures how much every pair of objects overlaps (:func:`iou_matrix`) and
assigns reference objects to candidate objects one to one (:func:`match_objects`), exactly as
Segebarth et al. (eLife 2020) do for their ROI-level F1 score:

1. binarise (``> 0.5``), label with 8-connectivity, drop objects smaller than ``min_size`` pixels;
2. pixels under an ``ignore`` mask are set to background *before* labelling;
3. IoU for every pair of overlapping objects, Hungarian assignment maximising the total IoU;
4. an assigned pair counts as a match only if its IoU is strictly greater than the threshold.

Label images follow the scikit-image convention: ``0`` is background and objects carry positive
integer ids. Every function works on overlapping pairs only (a sparse representation), so images with
hundreds or thousands of objects are cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fiji_consensus._validate import as_image_2d, check_same_shape, ignore_mask

__all__ = [
    "Matching",
    "label_objects",
    "iou_matrix",
    "match_objects",
    "overlap_pairs",
]

_STRUCTURES = {
    4: ndimage.generate_binary_structure(2, 1),
    8: ndimage.generate_binary_structure(2, 2),
}


def _foreground(mask: Any, *, threshold: float, name: str) -> np.ndarray:
    """Binarise a bool / integer / float 2-D mask: ``mask > threshold`` (bool masks as they are)."""
    arr = as_image_2d(mask, name=name)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(
            f"{name} must be a boolean, integer or floating-point array; got dtype {arr.dtype}"
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must not contain NaN or infinite values")
    return arr > threshold


def _as_labels(labels: Any, *, name: str) -> np.ndarray:
    """Validate a 2-D label image (non-negative integers or bool) and return it as an integer array."""
    arr = as_image_2d(labels, name=name)
    if arr.dtype == bool:
        return arr.astype(np.int32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must be an integer label image (0 = background, 1..n = objects); got dtype "
            f"{arr.dtype}. Use label_objects() to turn a mask or probability map into labels"
        )
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must hold non-negative label ids; got minimum {arr.min()}")
    if arr.dtype == np.uint64:
        if arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds label ids too large for int64; got {arr.max()}")
        return arr.astype(np.int64)
    return arr


def label_objects(
    mask: Any,
    *,
    min_size: int = 0,
    connectivity: int = 8,
    ignore: Any = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """Label the connected objects of a mask, dropping small ones.

    Parameters
    ----------
    mask : array_like, shape (Y, X)
        Binary mask (bool, 0/1 or 0/255) or foreground probability; foreground is ``mask > threshold``
        (a bool mask is used as it is). An integer label image is binarised too, so touching objects
        merge.
    min_size : int, optional
        Objects with fewer than ``min_size`` pixels (area ``< min_size``) are removed, after the
        ``ignore`` pixels have been zeroed. ``0`` keeps everything.
    connectivity : {8, 4}, optional
        8 (default, as in Segebarth et al. 2020): diagonal neighbours join; 4: only edge neighbours.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels set to background **before** labelling (so an object cut by the ignore region may split
        in two or fall below ``min_size``).
    threshold : float, optional
        Binarisation threshold for numeric masks (strict ``>``), default 0.5.

    Returns
    -------
    labels : ndarray of int32, shape (Y, X)
        ``0`` for background, ``1..n`` for the objects, numbered sequentially in raster order of their
        first pixel.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[1, 0, 0, 0],
    ...               [0, 1, 0, 1],
    ...               [0, 0, 0, 1]])
    >>> label_objects(m)
    array([[1, 0, 0, 0],
           [0, 1, 0, 2],
           [0, 0, 0, 2]], dtype=int32)
    >>> label_objects(m, connectivity=4).max()
    np.int32(3)
    >>> label_objects(m, min_size=2)
    array([[1, 0, 0, 0],
           [0, 1, 0, 2],
           [0, 0, 0, 2]], dtype=int32)
    >>> label_objects(m, connectivity=4, min_size=2).max()
    np.int32(1)
    """
    return _label_objects(
        mask, min_size=min_size, connectivity=connectivity, ignore=ignore, threshold=threshold,
        name="mask",
    )


def _label_objects(
    mask: Any, *, min_size: int, connectivity: int, ignore: Any, threshold: float, name: str
) -> np.ndarray:
    """:func:`label_objects` with the argument name to use in error messages."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
        raise TypeError(f"threshold must be a number; got {threshold!r}")
    fg = _foreground(mask, threshold=threshold, name=name)
    if connectivity not in _STRUCTURES:
        raise ValueError(f"connectivity must be 4 or 8; got {connectivity!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
        raise ValueError(f"min_size must be a non-negative integer; got {min_size!r}")
    ign = ignore_mask(ignore, fg.shape)
    if ign is not None:
        fg = fg & ~ign
    labels, n = ndimage.label(fg, structure=_STRUCTURES[connectivity])
    labels = labels.astype(np.int32, copy=False)
    if n == 0 or min_size <= 1:
        return labels
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= min_size
    keep[0] = False
    if keep[1:].all():
        return labels
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def _n_labels(labels: np.ndarray) -> int:
    return int(labels.max()) if labels.size else 0


def overlap_pairs(
    ref_labels: Any, cand_labels: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse overlap table of two label images: every pair of objects that share at least one pixel.

    Parameters
    ----------
    ref_labels, cand_labels : array_like of int, shape (Y, X)
        Label images (0 = background).

    Returns
    -------
    ref_ids, cand_ids : ndarray of int64, shape (P,)
        Label ids of the ``P`` overlapping pairs, sorted by ``ref_ids`` then ``cand_ids``.
    intersections : ndarray of int64, shape (P,)
        Shared pixels of each pair.
    ref_areas : ndarray of int64, shape (n_ref + 1,)
        Pixel count of each reference id (index = label id; index 0 is the background).
    cand_areas : ndarray of int64, shape (n_cand + 1,)
        Same for the candidate.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1, 1, 0, 2]])
    >>> c = np.array([[0, 1, 1, 1]])
    >>> ri, ci, inter, ra, ca = overlap_pairs(r, c)
    >>> ri.tolist(), ci.tolist(), inter.tolist(), ra.tolist(), ca.tolist()
    ([1, 2], [1, 1], [1, 1], [1, 2, 1], [1, 3])
    """
    ref = _as_labels(ref_labels, name="ref_labels")
    cand = _as_labels(cand_labels, name="cand_labels")
    check_same_shape(ref, cand, names=("ref_labels", "cand_labels"))
    n_ref, n_cand = _n_labels(ref), _n_labels(cand)
    ref_areas = np.bincount(ref.ravel(), minlength=n_ref + 1).astype(np.int64)
    cand_areas = np.bincount(cand.ravel(), minlength=n_cand + 1).astype(np.int64)
    both = (ref > 0) & (cand > 0)
    codes = ref[both].astype(np.int64) * np.int64(n_cand + 1) + cand[both].astype(np.int64)
    if (n_ref + 1) * (n_cand + 1) <= 4 * codes.size + 1_000_000:
        counts = np.bincount(codes, minlength=0)
        pair_codes = np.flatnonzero(counts)
        inter = counts[pair_codes].astype(np.int64)
    else:  # very many labels: avoid a huge dense histogram
        pair_codes, inter = np.unique(codes, return_counts=True)
        inter = inter.astype(np.int64)
    ref_ids = pair_codes // (n_cand + 1)
    cand_ids = pair_codes % (n_cand + 1)
    return ref_ids, cand_ids, inter, ref_areas, cand_areas


def _pair_ious(
    inter: np.ndarray,
    ref_ids: np.ndarray,
    cand_ids: np.ndarray,
    ref_areas: np.ndarray,
    cand_areas: np.ndarray,
) -> np.ndarray:
    union = ref_areas[ref_ids] + cand_areas[cand_ids] - inter
    return inter / union  # union >= intersection >= 1 for every listed pair


def iou_matrix(ref_labels: Any, cand_labels: Any) -> np.ndarray:
    """Intersection over union of every reference object with every candidate object.

    Computed sparsely: a single histogram over the pixels where both images are foreground gives the
    intersections of all overlapping pairs; non-overlapping pairs are 0.

    Parameters
    ----------
    ref_labels, cand_labels : array_like of int, shape (Y, X)
        Label images (0 = background, ``1..n`` objects).

    Returns
    -------
    iou : ndarray of float64, shape (n_ref, n_cand)
        ``iou[i, j]`` is the IoU of reference label ``i + 1`` with candidate label ``j + 1``, where
        ``n_ref`` and ``n_cand`` are the largest label ids (ids absent from an image give rows or
        columns of zeros).

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1, 1, 0, 2, 2]])
    >>> c = np.array([[1, 1, 1, 0, 2]])
    >>> iou_matrix(r, c)
    array([[0.66666667, 0.        ],
           [0.        , 0.5       ]])
    """
    ref_ids, cand_ids, inter, ref_areas, cand_areas = overlap_pairs(ref_labels, cand_labels)
    out = np.zeros((ref_areas.size - 1, cand_areas.size - 1), dtype=np.float64)
    out[ref_ids - 1, cand_ids - 1] = _pair_ious(inter, ref_ids, cand_ids, ref_areas, cand_areas)
    return out


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


@dataclass(frozen=True)
class Matching:
    """The result of :func:`match_objects`: the matched pairs and the object counts.

    Attributes
    ----------
    ref_ids, cand_ids : ndarray of int64, shape (tp,)
        Label ids of the matched pairs (IoU above the threshold), sorted by ``ref_ids``.
    ious : ndarray of float64, shape (tp,)
        IoU of each matched pair.
    n_ref, n_cand : int
        Number of objects in the reference and in the candidate.

    Properties ``tp``, ``fp``, ``fn``, ``precision``, ``recall`` and ``f1`` follow; a 0/0 ratio is NaN
    (e.g. the F1 of two empty images), never 0 or 1.

    Examples
    --------
    >>> import numpy as np
    >>> m = Matching(np.array([1]), np.array([2]), np.array([0.8]), n_ref=2, n_cand=3)
    >>> m.tp, m.fp, m.fn, m.precision, m.recall, m.f1
    (1, 2, 1, 0.3333333333333333, 0.5, 0.4)
    """

    ref_ids: np.ndarray
    cand_ids: np.ndarray
    ious: np.ndarray
    n_ref: int
    n_cand: int

    @property
    def tp(self) -> int:
        """Matched pairs (true positives)."""
        return int(len(self.ref_ids))

    @property
    def fp(self) -> int:
        """Unmatched candidate objects (false positives)."""
        return int(self.n_cand - self.tp)

    @property
    def fn(self) -> int:
        """Unmatched reference objects (false negatives)."""
        return int(self.n_ref - self.tp)

    @property
    def precision(self) -> float:
        """``tp / n_cand``; NaN when the candidate has no objects."""
        return _ratio(self.tp, self.n_cand)

    @property
    def recall(self) -> float:
        """``tp / n_ref``; NaN when the reference has no objects."""
        return _ratio(self.tp, self.n_ref)

    @property
    def f1(self) -> float:
        """``2 tp / (n_ref + n_cand)``; NaN when both images are empty."""
        return _ratio(2 * self.tp, self.n_ref + self.n_cand)


def _assign(ref_ids: np.ndarray, cand_ids: np.ndarray, ious: np.ndarray) -> np.ndarray:
    """Indices into the pair list of a one-to-one assignment maximising the summed IoU.

    The bipartite overlap graph is split into connected blocks. A block in which one object overlaps
    all the others keeps its best pair; any other block is solved with
    :func:`scipy.optimize.linear_sum_assignment` on its dense (small) IoU sub-matrix. Because the
    objective is a sum over blocks, this is the optimum of the full assignment problem.
    """
    n_pairs = ref_ids.size
    if n_pairs == 0:
        return np.zeros(0, dtype=np.int64)
    # compact ids: reference nodes 0..nr-1, candidate nodes nr..nr+nc-1
    r_u, r_idx = np.unique(ref_ids, return_inverse=True)
    c_u, c_idx = np.unique(cand_ids, return_inverse=True)
    nr, nc = r_u.size, c_u.size
    graph = coo_matrix(
        (np.ones(n_pairs, dtype=np.int8), (r_idx, nr + c_idx)), shape=(nr + nc, nr + nc)
    )
    n_comp, comp = connected_components(graph, directed=False)
    pair_comp = comp[r_idx]
    # a block whose pairs all share one reference or one candidate object (a "star", including a
    # single pair) can keep only one pair: the one with the largest IoU
    refs_per_block = np.bincount(comp[:nr], minlength=n_comp)
    cands_per_block = np.bincount(comp[nr:], minlength=n_comp)
    star = (refs_per_block == 1) | (cands_per_block == 1)
    in_star = np.flatnonzero(star[pair_comp])
    by_block = in_star[np.lexsort((-ious[in_star], pair_comp[in_star]))]
    first = np.ones(by_block.size, dtype=bool)
    first[1:] = pair_comp[by_block[1:]] != pair_comp[by_block[:-1]]
    chosen = [by_block[first]]
    multi = np.flatnonzero(~star[pair_comp])
    if multi.size:
        order = multi[np.argsort(pair_comp[multi], kind="stable")]
        bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
        for block in np.split(order, bounds):
            br, bri = np.unique(r_idx[block], return_inverse=True)
            bc, bci = np.unique(c_idx[block], return_inverse=True)
            cost = np.zeros((br.size, bc.size), dtype=np.float64)
            cost[bri, bci] = ious[block]
            rows, cols = linear_sum_assignment(cost, maximize=True)
            lookup = np.full((br.size, bc.size), -1, dtype=np.int64)
            lookup[bri, bci] = block
            picked = lookup[rows, cols]
            chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def _check_threshold(value: Any, name: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1]; got {value!r}") from None
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
    return t


@dataclass(frozen=True)
class _Assignment:
    """Threshold-free result of the Hungarian assignment (internal; reused across thresholds)."""

    ref_ids: np.ndarray
    cand_ids: np.ndarray
    ious: np.ndarray
    n_ref: int
    n_cand: int

    def at(self, threshold: float) -> Matching:
        keep = self.ious > threshold
        return Matching(
            ref_ids=self.ref_ids[keep],
            cand_ids=self.cand_ids[keep],
            ious=self.ious[keep],
            n_ref=self.n_ref,
            n_cand=self.n_cand,
        )


def _count_ids(areas: np.ndarray) -> int:
    return int(np.count_nonzero(areas[1:]))


def _assign_objects(ref_labels: Any, cand_labels: Any) -> _Assignment:
    """Hungarian assignment of overlapping objects maximising the total IoU, before any threshold.

    Internal building block of :func:`match_objects`, exposed so that several thresholds (average
    precision) reuse one assignment. The object counts are the numbers of distinct non-zero ids.
    """
    ref_ids, cand_ids, inter, ref_areas, cand_areas = overlap_pairs(ref_labels, cand_labels)
    ious = _pair_ious(inter, ref_ids, cand_ids, ref_areas, cand_areas)
    idx = _assign(ref_ids, cand_ids, ious)
    return _Assignment(
        ref_ids=ref_ids[idx],
        cand_ids=cand_ids[idx],
        ious=ious[idx],
        n_ref=_count_ids(ref_areas),
        n_cand=_count_ids(cand_areas),
    )


def match_objects(ref_labels: Any, cand_labels: Any, *, iou_threshold: float = 0.5) -> Matching:
    """Match the objects of two label images one to one (Hungarian assignment on IoU).

    Among all pairs of overlapping objects, the one-to-one assignment with the largest **total IoU** is
    found (:func:`scipy.optimize.linear_sum_assignment`, solved per connected block of the overlap
    graph), and an assigned pair counts as a match only if its IoU is **strictly** greater than
    ``iou_threshold``. This is the matching of Segebarth et al. (2020). Note that maximising the total
    IoU may give up a pair above the threshold for two weaker pairs, so it can find fewer matches than
    greedy matching or than counting every pair above the threshold.

    Parameters
    ----------
    ref_labels, cand_labels : array_like of int, shape (Y, X)
        Label images (0 = background), e.g. from :func:`label_objects`.
    iou_threshold : float, optional
        A pair is a match if its IoU is ``> iou_threshold`` (default 0.5).

    Returns
    -------
    Matching
        Matched pairs and object counts (the number of distinct non-zero ids in each image), with
        ``tp``, ``fp``, ``fn``, ``precision``, ``recall`` and ``f1``.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[1, 1, 0, 2, 2, 0, 3]])
    >>> c = np.array([[1, 1, 1, 0, 2, 0, 0]])
    >>> m = match_objects(r, c)
    >>> m.ref_ids.tolist(), m.cand_ids.tolist(), m.ious.round(3).tolist()
    ([1], [1], [0.667])
    >>> m.tp, m.fp, m.fn, round(m.f1, 3)
    (1, 1, 2, 0.4)
    """
    t = _check_threshold(iou_threshold, "iou_threshold")
    return _assign_objects(ref_labels, cand_labels).at(t)
