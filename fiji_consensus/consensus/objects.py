"""Object-level consensus: objects that enough experts annotated, kept apart even where they touch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fiji_consensus.consensus._common import _check_float, _check_int, _ignore, _masks

__all__ = ["ObjectConsensusResult", "object_consensus"]

logger = logging.getLogger(__name__)

#: 8-connectivity, as ImageJ traces and the experts' objects are labelled.
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ObjectConsensusResult:
    """The consensus objects of :func:`object_consensus` and every expert's objects.

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


@dataclass(frozen=True)
class _ExpertObjects:
    """Every expert's objects, numbered globally: object ``i`` is ``local_id[i]`` in ``labels[expert_of[i]]``."""

    labels: np.ndarray  # (R, Y, X) int32
    expert_of: np.ndarray  # (n,) expert of every object
    local_id: np.ndarray  # (n,) its label in that expert's image
    offsets: np.ndarray  # (R + 1,) global index of every expert's first object


def _expert_objects(stack: np.ndarray, min_size: int, ign: np.ndarray | None) -> _ExpertObjects:
    """Step 1: label every expert's mask into 8-connected objects (``min_size``, ``ignore`` applied)."""
    from fiji_consensus import matching

    r = stack.shape[0]
    labels = np.stack(
        [matching.label_objects(stack[k], min_size=min_size, connectivity=8, ignore=ign) for k in range(r)]
    ).astype(np.int32)
    n_obj = labels.reshape(r, -1).max(axis=1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_obj)])
    expert_of = np.repeat(np.arange(r), n_obj)
    local_id = np.concatenate([np.arange(1, n + 1) for n in n_obj]) if n_obj.sum() else np.zeros(0, int)
    return _ExpertObjects(labels, expert_of, local_id, offsets)


def _kept_groups(objs: _ExpertObjects, iou_threshold: float, min_experts: int) -> list[np.ndarray]:
    """Steps 2-4: pairwise Hungarian matching, groups joined by decreasing IoU (one object per expert), the
    groups that at least ``min_experts`` experts annotated, in paint order (more support first)."""
    from fiji_consensus import matching

    r = objs.labels.shape[0]
    edges: list[tuple[float, int, int]] = []
    for a in range(r):
        for b in range(a + 1, r):
            mt = matching.match_objects(objs.labels[a], objs.labels[b], iou_threshold=iou_threshold)
            for ra, cb, iou in zip(mt.ref_ids.tolist(), mt.cand_ids.tolist(), mt.ious.tolist()):
                edges.append((-iou, int(objs.offsets[a] + ra - 1), int(objs.offsets[b] + cb - 1)))
    edges.sort()
    groups = _Groups(objs.expert_of)
    for _, i, j in edges:
        groups.union(i, j)
    roots = np.array([groups.find(i) for i in range(objs.expert_of.size)], dtype=np.int64)

    order = np.argsort(roots, kind="stable")
    uniq_roots, starts = np.unique(roots[order], return_index=True)
    member_lists = np.split(order, starts[1:]) if order.size else []
    kept = [mem for mem in member_lists if len(mem) >= min_experts]
    kept.sort(key=lambda mem: (-len(mem), int(mem.min())))  # paint order: more support first
    logger.debug("object consensus: %s expert objects, %d groups, %d kept", np.diff(objs.offsets).tolist(),
                 len(member_lists), len(kept))
    return kept


def _paint_groups(
    objs: _ExpertObjects, kept: list[np.ndarray], pixel_min_votes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 5-6: every kept group's pixel vote painted where its vote fraction is the largest; returns the
    painted label image (group ``g`` as ``g + 1``) and the members table ``(groups, R)``."""
    from scipy import ndimage

    r, ny, nx = objs.labels.shape
    boxes = [ndimage.find_objects(objs.labels[k]) for k in range(r)]
    score = np.zeros((ny, nx), dtype=np.float64)
    out = np.zeros((ny, nx), dtype=np.int32)
    members_tab = np.zeros((len(kept), r), dtype=np.int32)
    for gi, mem in enumerate(kept):
        m = len(mem)
        need = min(m // 2 + 1 if pixel_min_votes is None else pixel_min_votes, m)
        sl = [boxes[objs.expert_of[i]][objs.local_id[i] - 1] for i in mem]
        y0 = min(s[0].start for s in sl)
        y1 = max(s[0].stop for s in sl)
        x0 = min(s[1].start for s in sl)
        x1 = max(s[1].stop for s in sl)
        votes = np.zeros((y1 - y0, x1 - x0), dtype=np.int32)
        for i in mem:
            k = int(objs.expert_of[i])
            members_tab[gi, k] = int(objs.local_id[i])
            votes += objs.labels[k, y0:y1, x0:x1] == objs.local_id[i]
        frac = np.where(votes >= need, votes / m, 0.0)
        sub_score = score[y0:y1, x0:x1]
        win = frac > sub_score
        sub_score[win] = frac[win]
        out[y0:y1, x0:x1][win] = gi + 1
    return out, members_tab


def _number_objects(out: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The largest 8-connected part of every painted object, size filter, numbered ``1..n`` in raster order
    of the first pixel; returns (labels, the painted group index of every final object in order)."""
    from scipy import ndimage

    ny, nx = out.shape
    final = np.zeros((ny, nx), dtype=np.int32)
    obj_boxes = ndimage.find_objects(out)
    keep_ids: list[int] = []
    parts: list[tuple[tuple[slice, slice], np.ndarray]] = []
    for gi, box in enumerate(obj_boxes):
        if box is None:
            continue
        obj = out[box] == gi + 1
        lab, n = ndimage.label(obj, structure=_EIGHT)
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
    return final, sel


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
    >>> from fiji_consensus.consensus import majority_vote
    >>> ndimage.label(majority_vote(m))[1]           # the pixel-wise consensus merges the two cells
    1
    >>> object_consensus(m).n_objects
    2
    """
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

    objs = _expert_objects(stack, min_size, ign)
    kept = _kept_groups(objs, iou_threshold, min_experts)
    out, members_tab = _paint_groups(objs, kept, pixel_min_votes)
    final, sel = _number_objects(out, min_size)
    members_out = members_tab[sel] if sel.size else np.zeros((0, r), np.int32)
    support = (members_out > 0).sum(axis=1).astype(np.int32)
    return ObjectConsensusResult(final, support, members_out, objs.labels)
