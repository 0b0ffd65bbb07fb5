"""Label image or mask -> ImageJ ROIs: exact outlines along pixel edges (traced polygons, composite ROIs for
objects with holes), with names and colours: :func:`labels_to_rois`, :func:`mask_to_rois`, :func:`set_stroke`."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.ndimage as ndi
from roifile import ROI_OPTIONS, ROI_TYPE, ImagejRoi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fiji_consensus._validate import as_binary, as_label_image

from ._base import _IJ_VERSION, _SUBPIXEL, Color
from .filling import _CLOSE, _LINETO, _MOVETO

__all__ = ["labels_to_rois", "mask_to_rois", "set_stroke"]


# --------------------------------------------------------------------------------------------------
# labels -> ROIs (exact outlines along pixel edges)


def _trace_labels(labels: np.ndarray):
    """Closed outlines (pixel-corner vertices) of every label.

    Returns (label values, list per label of list of (k, 2) int vertex arrays (x, y)).
    Every pixel edge between a label and anything else is used exactly once, so the even-odd
    fill of each label's outlines is exactly its pixels; at diagonal pinch points the walk
    turns so that 8-connected pixels share one outline.
    """
    H, W = labels.shape
    top = int(labels.max())
    if top <= 4 * labels.size + 1024:  # dense enough for a lookup table (much faster than np.unique)
        present = np.bincount(labels.ravel(), minlength=top + 1) > 0
        present[0] = False
        fg_values = np.nonzero(present)[0]
        lut = np.full(top + 1, -1, dtype=np.int64)
        lut[fg_values] = np.arange(fg_values.size)
        rank = lut[labels]
    else:
        values, inv = np.unique(labels, return_inverse=True)
        inv = inv.reshape(H, W).astype(np.int64)
        has_bg = values[0] == 0
        rank = inv - 1 if has_bg else inv  # -1 = background
        fg_values = values[1:] if has_bg else values
    if fg_values.size == 0:
        return fg_values, []
    pad = np.full((H + 2, W + 2), -1, dtype=np.int64)
    pad[1:-1, 1:-1] = rank
    core = pad[1:-1, 1:-1]
    fg = core >= 0
    nv = (H + 1) * (W + 1)
    starts = []
    dirs = []
    lab = []
    # direction 0: right (top edge), 1: down (right edge), 2: left (bottom edge), 3: up (left edge)
    neigh = (pad[:-2, 1:-1], pad[1:-1, 2:], pad[2:, 1:-1], pad[1:-1, :-2])
    offs = ((0, 0), (1, 0), (1, 1), (0, 1))  # start vertex (dx, dy) relative to the pixel's corner
    for d in range(4):
        sel = fg & (neigh[d] != core)
        r, c = np.nonzero(sel)
        dx, dy = offs[d]
        starts.append((r + dy) * (W + 1) + (c + dx))
        dirs.append(np.full(r.size, d, dtype=np.int64))
        lab.append(core[r, c])
    start = np.concatenate(starts)
    direc = np.concatenate(dirs)
    lab = np.concatenate(lab)
    step = np.array([1, W + 1, -1, -(W + 1)], dtype=np.int64)
    end = start + step[direc]
    key_s = lab * nv + start
    order = np.argsort(key_s, kind="stable")
    start, direc, lab, end, key_s = start[order], direc[order], lab[order], end[order], key_s[order]
    key_e = lab * nv + end
    lo = np.searchsorted(key_s, key_e, side="left")
    hi = np.searchsorted(key_s, key_e, side="right")
    succ = lo.copy()
    two = (hi - lo) == 2
    if two.any():
        want = (direc[two] + 3) % 4  # turn left (towards the diagonal pixel): 8-connectivity
        first = lo[two]
        succ[two] = np.where(direc[first] == want, first, first + 1)
    n = start.size
    # cycles of the successor permutation
    g = coo_matrix((np.ones(n, dtype=np.int8), (np.arange(n), succ)), shape=(n, n))
    ncyc, cyc = connected_components(g, directed=True, connection="weak")
    # list ranking: break each cycle at its smallest edge index and measure distance to the tail
    head = np.full(ncyc, n, dtype=np.int64)
    np.minimum.at(head, cyc, np.arange(n))
    nxt = succ.copy()
    is_last = succ == head[cyc]
    nxt[is_last] = -1
    dist = (~is_last).astype(np.int64)
    active = np.nonzero(nxt >= 0)[0]
    while active.size:
        j = nxt[active]
        dist[active] += dist[j]
        nxt[active] = nxt[j]
        active = active[nxt[active] >= 0]
    pos = np.empty(n, dtype=np.int64)
    # order edges by (cycle, position from the head)
    o = np.lexsort((-dist, cyc))
    pos[o] = np.arange(n)
    pred = np.empty(n, dtype=np.int64)
    pred[succ] = np.arange(n)
    corner = direc != direc[pred]
    o = o[corner[o]]
    vx = start[o] % (W + 1)
    vy = start[o] // (W + 1)
    cyc_o = cyc[o]
    lab_o = lab[o]
    # split into cycles (o is sorted by cycle id)
    bounds = np.nonzero(np.diff(cyc_o))[0] + 1
    cuts = np.concatenate([[0], bounds, [o.size]])
    outlines: list[list[np.ndarray]] = [[] for _ in range(fg_values.size)]
    pts = np.stack([vx, vy], axis=1)
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b > a:
            outlines[int(lab_o[a])].append(pts[a:b])
    return fg_values, outlines


def _color_bytes(color: Color, what: str = "color") -> bytes:
    """ARGB bytes of '#RRGGBB', '#AARRGGBB' or an (r, g, b[, a]) tuple."""
    if isinstance(color, str):
        s = color.strip()
        if not re.fullmatch(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{8})", s):
            raise ValueError(f"{what} must be '#RRGGBB', '#AARRGGBB' or (r, g, b[, a]); got {color!r}")
        s = s.lstrip("#")
        if len(s) == 6:
            s = "ff" + s
        return bytes.fromhex(s)
    try:
        vals = [int(v) for v in color]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be '#RRGGBB', '#AARRGGBB' or (r, g, b[, a]); got {color!r}") from None
    if len(vals) not in (3, 4) or not all(0 <= v <= 255 for v in vals):
        raise ValueError(f"{what} must be (r, g, b[, a]) with values 0..255; got {color!r}")
    r, g, b = vals[:3]
    a = vals[3] if len(vals) == 4 else 255
    return bytes([a, r, g, b])


def set_stroke(roi: ImagejRoi, color: Color | None, width: float | None = None) -> ImagejRoi:
    """Return a copy of ``roi`` with a stroke (outline) colour and optionally a line width.

    Parameters
    ----------
    roi : roifile.ImagejRoi
        The ROI (not modified).
    color : str or tuple or None
        ``"#RRGGBB"``, ``"#AARRGGBB"`` or ``(r, g, b[, a])`` with values 0..255; None keeps the colour.
    width : float, optional
        Stroke width in pixels (> 0).

    Returns
    -------
    roifile.ImagejRoi
        The modified copy.

    Examples
    --------
    >>> r = set_stroke(ImagejRoi.frompoints([[0, 0], [3, 0], [3, 3]]), "#ff0000", 2)
    >>> r.stroke_color.hex(), r.stroke_width
    ('ffff0000', 2)
    """
    out = copy.deepcopy(roi)
    if color is not None:
        out.stroke_color = _color_bytes(color, "stroke color")
    if width is not None:
        w = float(width)
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"stroke width must be a positive number; got {width!r}")
        out.stroke_width = max(1, min(int(round(w)), 32767))
        out.float_stroke_width = w
    return out


def _outline_roi(loops: list[np.ndarray], name: str) -> ImagejRoi:
    roi = ImagejRoi()
    roi.version = _IJ_VERSION
    roi.name = name
    allpts = np.concatenate(loops)
    left, top = (int(v) for v in allpts.min(axis=0))
    right, bottom = (int(v) for v in allpts.max(axis=0))
    roi.left, roi.top, roi.right, roi.bottom = left, top, right, bottom
    if len(loops) == 1:
        pts = loops[0]
        roi.roitype = ROI_TYPE.TRACED
        roi.n_coordinates = len(pts)
        rel = pts - [left, top]
        roi.integer_coordinates = rel.astype(np.int32)
        if right > 32767 or bottom > 32767 or int(rel.max()) > 32767:
            roi.options = ROI_OPTIONS(int(roi.options) | _SUBPIXEL)
            roi.subpixel_coordinates = pts.astype(np.float32)
        return roi
    parts = []
    for pts in loops:
        k = len(pts)
        seg = np.empty((k, 3), dtype=np.float32)
        seg[:, 0] = _LINETO
        seg[0, 0] = _MOVETO
        seg[:, 1:] = pts
        parts.append(seg.ravel())
        parts.append(np.array([_CLOSE], dtype=np.float32))
    mc = np.concatenate(parts)
    roi.roitype = ROI_TYPE.RECT
    roi.shape_roi_size = int(mc.size)
    roi.multi_coordinates = mc
    return roi


def labels_to_rois(
    labels: np.ndarray,
    *,
    name_prefix: str = "",
    names: Sequence[str] | Mapping[int, str] | None = None,
    stroke_color: Color | None = None,
    stroke_width: float | None = None,
    position: int | None = None,
) -> list[ImagejRoi]:
    """Exact ImageJ ROIs of a label image: one ROI per label value, sorted by label.

    Outlines follow pixel edges: an object without holes becomes a traced polygon, an object with holes
    (or a label made of several pieces) a composite ROI with one sub-path per outline, filled even-odd.
    ``rois_to_labels(labels_to_rois(L), L.shape)`` gives ``L`` back exactly (any 2-D label image:
    diagonal touches, holes, objects inside holes, touching objects, image borders), and ImageJ's
    ``fill(roi)`` covers the same pixels.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Y, X)`` integer (or bool) label image; 0 is background.
    name_prefix : str
        ROI names default to ``f"{name_prefix}{label:04d}"``.
    names : sequence of str or mapping label -> str, optional
        Explicit names (one per label, in label order, or by label value).
    stroke_color : str or tuple, optional
        Outline colour for every ROI (see :func:`set_stroke`).
    stroke_width : float, optional
        Outline width for every ROI.
    position : int, optional
        1-based stack position stored in every ROI.

    Returns
    -------
    list of roifile.ImagejRoi
        One ROI per non-zero label value.

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D, not integer/bool, or holds negative values.

    Examples
    --------
    >>> from fiji_consensus.rois import roi_type_name, rois_to_labels
    >>> L = np.zeros((5, 5), np.int32); L[1:4, 1:4] = 7; L[2, 2] = 0
    >>> rois = labels_to_rois(L)
    >>> [r.name for r in rois], roi_type_name(rois[0])
    (['0007'], 'composite')
    >>> bool((rois_to_labels(rois, L.shape) > 0).sum() == 8)
    True
    """
    arr = as_label_image(labels)
    if position is not None and int(position) < 0:
        raise ValueError(f"position must be >= 0 (1-based, 0 = all); got {position}")
    values, outlines = _trace_labels(arr) if arr.size else (np.array([], dtype=np.int64), [])
    if names is not None and not isinstance(names, Mapping):
        names = list(names)
        if len(names) != len(values):
            raise ValueError(f"names must hold one name per label ({len(values)}); got {len(names)}")
    rois = []
    for i, (v, loops) in enumerate(zip(values.tolist(), outlines)):
        if names is None:
            name = f"{name_prefix}{v:04d}"
        elif isinstance(names, Mapping):
            name = str(names.get(v, f"{name_prefix}{v:04d}"))
        else:
            name = str(names[i])
        roi = _outline_roi(loops, name)
        if stroke_color is not None or stroke_width is not None:
            roi = set_stroke(roi, stroke_color, stroke_width)
        if position is not None:
            roi.position = int(position)
        rois.append(roi)
    return rois


def mask_to_rois(
    mask: np.ndarray,
    *,
    min_size: int = 0,
    name_prefix: str = "",
    stroke_color: Color | None = None,
    stroke_width: float | None = None,
    position: int | None = None,
) -> list[ImagejRoi]:
    """ROIs of the 8-connected objects of a binary mask (see :func:`labels_to_rois`).

    Parameters
    ----------
    mask : numpy.ndarray
        ``(Y, X)`` binary mask (bool, 0/1 or 0/255).
    min_size : int
        Objects with fewer pixels are dropped.
    name_prefix, stroke_color, stroke_width, position
        As in :func:`labels_to_rois`; objects are numbered 1, 2, ... in raster order of their first pixel.

    Returns
    -------
    list of roifile.ImagejRoi
        One ROI per kept object.

    Examples
    --------
    >>> m = np.zeros((6, 6), bool); m[1, 1] = m[2, 2] = True; m[4:6, 4:6] = True
    >>> len(mask_to_rois(m)), len(mask_to_rois(m, min_size=3))
    (2, 1)
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        extra = " (an RGB image? take one channel first)" if arr.ndim == 3 and arr.shape[-1] in (3, 4) else ""
        raise ValueError(f"mask must be a 2-D (Y, X) binary mask{extra}; got an array of shape {arr.shape}")
    if int(min_size) < 0:
        raise ValueError(f"min_size must be >= 0; got {min_size}")
    m = as_binary(arr, name="mask")
    lab, n = ndi.label(m, structure=np.ones((3, 3), dtype=bool))
    if n and min_size > 0:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        keep = sizes >= int(min_size)
        keep[0] = False
        newid = np.zeros(n + 1, dtype=np.int32)
        newid[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        lab = newid[lab]
    return labels_to_rois(
        lab,
        name_prefix=name_prefix,
        stroke_color=stroke_color,
        stroke_width=stroke_width,
        position=position,
    )
