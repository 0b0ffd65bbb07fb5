"""Label images and masks <-> ImageJ ROIs, RoiSet zips and TIFF overlays, without a JVM.

Everything here works on :class:`roifile.ImagejRoi` objects, so ROIs read from a RoiSet zip, a single
``.roi`` file or the overlay of an ImageJ TIFF can be rasterised, and masks or label images can be turned
into ROIs that ImageJ/Fiji opens natively.

Rasterisation reproduces ImageJ 1.53t's ``ImageProcessor.fill(Roi)`` pixel for pixel. The ImageJ code that
decides which pixels an area ROI covers is ported here (and checked against the real ``ij.jar`` by the test
suite):

* ``ij.io.RoiDecoder`` -- how a ROI's bytes become bounds and coordinates (signed 16-bit header values,
  relative integer coordinates clamped at 0, absolute float coordinates when the sub-pixel flag is set
  and the file version is >= 222, sub-pixel rectangles and ovals from version 223);
* ``ij.gui.PolygonRoi`` -- integer bounds from float coordinates (``floor``/``ceil`` of the float32 bounds)
  and coordinates relative to them in float32;
* ``ij.process.PolygonFiller`` -- the even-odd scan-line filler with pixel centres at ``+0.5``,
  ``Math.round`` of the vertex y coordinates, ``x + 0.5 * slope + 1e-8`` start values, x positions
  updated by repeated addition of the slope (reproduced bit for bit) and ``(int)(x + 0.5)`` span ends;
* ``ij.gui.OvalRoi.getMask`` -- the analytic ellipse test on the integer bounds;
* ``ij.gui.ShapeRoi`` -- composite ROIs: a float32 ``java.awt.geom.GeneralPath`` (even-odd), its integer
  bounds, Java's ``FlatteningPathIterator`` (flatness 0.01, 10 levels) for curves, then the filler with
  one sub-polygon per sub-path; rounded rectangles go the same way (``RoundRectangle2D``).

Unsupported (a :class:`RoiError` names them): line-type ROIs (straight line, polyline, freeline, angle,
arrow), points, text and image ROIs, spline-fitted polygons, and ImageJ's ellipse and rotated-rectangle
ROIs (ImageJ regenerates those from parameters).
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import scipy.ndimage as ndi
import tifffile
from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fiji_consensus._atomic import atomic_path
from fiji_consensus._validate import as_binary, as_label_image

__all__ = [
    "RoiError",
    "SUPPORTED_TYPES",
    "read_rois",
    "read_overlay",
    "roi_to_mask",
    "rois_to_labels",
    "rois_to_mask",
    "labels_to_rois",
    "mask_to_rois",
    "write_roiset",
    "write_imagej_tiff",
    "set_stroke",
    "roi_type_name",
    "roi_bounds",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Color = Union[str, Sequence[int]]

#: ROI kinds that :func:`roi_to_mask` can rasterise (the names :func:`roi_type_name` returns).
SUPPORTED_TYPES = ("rectangle", "rounded rectangle", "oval", "polygon", "freehand", "traced", "composite")

_IJ_VERSION = 228  # the ROI file version ImageJ 1.53t writes
_SUBPIXEL = int(ROI_OPTIONS.SUB_PIXEL_RESOLUTION)
_SPLINE_FIT = int(ROI_OPTIONS.SPLINE_FIT)


class RoiError(ValueError):
    """A ROI source or ROI that cannot be read or rasterised; the message names the file/ROI."""


# --------------------------------------------------------------------------------------------------
# small helpers


def _i16(v: int) -> int:
    """The value ImageJ reads back from a 16-bit signed header field written from ``v``."""
    return ((int(v) + 32768) % 65536) - 32768


def _java_round(v: np.ndarray) -> np.ndarray:
    """``Math.round(double)``: floor(v + 1/2) computed exactly (no rounding of ``v + 0.5``)."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        f = np.floor(v)
        out = f + ((v - f) >= 0.5)
    out = np.nan_to_num(out, nan=0.0, posinf=2.0**31 - 1, neginf=-(2.0**31))
    return np.clip(out, -(2.0**31), 2.0**31 - 1).astype(np.int64)


def _d2i(v: float) -> int:
    """Java's ``(int)`` cast of a double: truncation, NaN -> 0, saturation."""
    if math.isnan(v):
        return 0
    if v >= 2**31 - 1:
        return 2**31 - 1
    if v <= -(2**31):
        return -(2**31)
    return int(v)


def _describe_roi(roi: ImagejRoi, index: int | None = None) -> str:
    parts = []
    if index is not None:
        parts.append(f"#{index}")
    if getattr(roi, "name", ""):
        parts.append(repr(roi.name))
    return "ROI " + " ".join(parts) if parts else "ROI"


def roi_type_name(roi: ImagejRoi) -> str:
    """Return a human-readable name of a ROI's kind, as ImageJ would decode it.

    Parameters
    ----------
    roi : roifile.ImagejRoi
        The ROI.

    Returns
    -------
    str
        One of ``"rectangle"``, ``"rounded rectangle"``, ``"oval"``, ``"polygon"``, ``"freehand"``,
        ``"traced"``, ``"composite"`` (the rasterisable kinds, see :data:`SUPPORTED_TYPES`) or
        ``"line"``, ``"arrow"``, ``"polyline"``, ``"freeline"``, ``"angle"``, ``"point"``, ``"text"``,
        ``"image"``, ``"ellipse"``, ``"rotated rectangle"``, ``"spline-fitted polygon"`` ... or
        ``"unknown type N"``.

    Examples
    --------
    >>> roi_type_name(ImagejRoi.frompoints([[0, 0], [4, 0], [4, 4]]))
    'freehand'
    """
    t = int(roi.roitype)
    st = int(roi.subtype)
    if int(roi.shape_roi_size) > 0:
        return "composite" if t == int(ROI_TYPE.RECT) else f"composite of invalid type {t}"
    if st == int(ROI_SUBTYPE.TEXT):
        return "text"
    if st == int(ROI_SUBTYPE.IMAGE):
        return "image"
    if t == int(ROI_TYPE.RECT):
        return "rounded rectangle" if _i16(roi.rounded_rect_arc_size) > 0 else "rectangle"
    if t == int(ROI_TYPE.OVAL):
        return "oval"
    if t == int(ROI_TYPE.LINE):
        return "arrow" if st == int(ROI_SUBTYPE.ARROW) else "line"
    if t == int(ROI_TYPE.FREEHAND) and st == int(ROI_SUBTYPE.ELLIPSE):
        return "ellipse"
    if t == int(ROI_TYPE.FREEHAND) and st == int(ROI_SUBTYPE.ROTATED_RECT):
        return "rotated rectangle"
    names = {
        int(ROI_TYPE.POLYGON): "polygon",
        int(ROI_TYPE.FREEHAND): "freehand",
        int(ROI_TYPE.TRACED): "traced",
        int(ROI_TYPE.POLYLINE): "polyline",
        int(ROI_TYPE.FREELINE): "freeline",
        int(ROI_TYPE.ANGLE): "angle",
        int(ROI_TYPE.POINT): "point",
        int(ROI_TYPE.NOROI): "no-ROI",
    }
    name = names.get(t, f"unknown type {t}")
    if name in ("polygon", "freehand", "traced") and int(roi.options) & _SPLINE_FIT:
        return f"spline-fitted {name}"
    if name in ("polyline", "freeline") and (roi.stroke_width > 1 or roi.float_stroke_width > 1):
        return f"{name} with width"
    return name


def _unsupported(roi: ImagejRoi, index: int | None, where: str) -> RoiError:
    kind = roi_type_name(roi)
    prefix = f"{where}: " if where else ""
    return RoiError(
        f"{prefix}{_describe_roi(roi, index)} is a {kind} ROI, which has no area ImageJ fills the same "
        f"way; supported ROI types are: {', '.join(SUPPORTED_TYPES)}"
    )


# --------------------------------------------------------------------------------------------------
# ij.process.PolygonFiller (1.53t), vectorised


def _fill_polygon(xs: np.ndarray, ys: np.ndarray, width: int, height: int) -> np.ndarray:
    """Port of ImageJ 1.53t ``PolygonFiller.getMask(width, height)`` (float mode).

    ``xs``/``ys`` are float64 vertex coordinates relative to the mask origin (offsets already added);
    a NaN in ``xs`` separates sub-polygons, each closed implicitly. Integer coordinates give the same
    result as ImageJ's integer mode. Returns a (height, width) bool array.
    """
    mask = np.zeros((max(height, 0), max(width, 0)), dtype=bool)
    n = xs.size
    if n == 0 or width <= 0 or height <= 0:
        return mask
    idx = np.arange(n)
    isn = np.isnan(xs)
    # index where the sub-polygon containing i starts (after the last NaN at or before i)
    start = np.maximum.accumulate(np.where(isn, idx + 1, 0))
    nxt = idx + 1
    nxt[-1] = start[-1]
    wrap = np.zeros(n, dtype=bool)
    wrap[:-1] = isn[1:]
    nxt[wrap] = start[wrap]
    valid = ~isn
    i1 = idx[valid]
    i2 = nxt[valid]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        y1f = ys[i1]
        y2f = ys[i2]
        x1f = xs[i1]
        x2f = xs[i2]
        y1 = _java_round(y1f)
        y2 = _java_round(y2f)
        keep = (y1 != y2) & ~((y1 <= 0) & (y2 <= 0))
        y1, y2, y1f, y2f, x1f, x2f = (a[keep] for a in (y1, y2, y1f, y2f, x1f, x2f))
        if y1.size == 0:
            return mask
        swap = y1 > y2
        y1, y2 = np.where(swap, y2, y1), np.where(swap, y1, y2)
        y1f, y2f = np.where(swap, y2f, y1f), np.where(swap, y1f, y2f)
        x1f, x2f = np.where(swap, x2f, x1f), np.where(swap, x1f, x2f)
        slope = (x2f - x1f) / (y2f - y1f)
        ex = x1f + ((y1.astype(np.float64) - y1f) + 0.5) * slope + 1e-8
    y_min = int(y1.min())
    y_max = int(y2.max())
    start_y = max(y_min, 0)
    y_end = min(height, y_max + 1)
    if start_y >= y_end:
        return mask
    if y_min != 0:  # shiftXValuesAndActivate
        sh = (y1 < start_y) & (y2 >= start_y)
        with np.errstate(invalid="ignore", over="ignore"):
            ex[sh] = ex[sh] + slope[sh] * (start_y - y1[sh]).astype(np.float64)
    s = np.maximum(y1, start_y)
    length = np.minimum(y2, y_end) - s
    ok = length > 0
    if not ok.any():
        return mask
    s, length, ex, slope = s[ok], length[ok], ex[ok], slope[ok]
    rows, vals = _edge_positions(s, length, ex, slope)
    with np.errstate(invalid="ignore", over="ignore"):
        xv = vals + 0.5
        xv = np.nan_to_num(xv, nan=0.0, posinf=float(width), neginf=0.0)
        xi = np.clip(np.trunc(np.clip(xv, -1.0, width + 1.0)), 0, width).astype(np.int64)
    counts = np.bincount(rows * (width + 1) + xi, minlength=height * (width + 1))
    counts = counts.reshape(height, width + 1)
    parity = np.cumsum(counts, axis=1, dtype=np.int64) & 1
    return parity[:, :width].astype(bool)


def _edge_positions(first_row: np.ndarray, length: np.ndarray, x0: np.ndarray, slope: np.ndarray):
    """Rows and x positions of every edge on the rows it is active, as PolygonFiller computes them.

    ImageJ updates x by repeated addition (``x += slope`` once per row), not ``x0 + k * slope``; a
    row-wise cumulative sum reproduces those roundings bit for bit. Edges are grouped by length
    (powers of two) so that the padding of the 2-D cumsum stays bounded. ``length`` must be > 0.
    """
    if not np.any(slope[length > 1]):
        return np.repeat(first_row, length) + _ramp(length), np.repeat(x0, length)
    rows_list = []
    vals_list = []
    bucket = np.floor(np.log2(length)).astype(np.int64)
    for b in np.unique(bucket):
        sel = bucket == b
        ln = length[sel]
        lmax = int(ln.max())
        m = np.empty((ln.size, lmax), dtype=np.float64)
        m[:, 0] = x0[sel]
        m[:, 1:] = slope[sel, None]
        with np.errstate(invalid="ignore", over="ignore"):
            np.cumsum(m, axis=1, out=m)
        take = np.arange(lmax)[None, :] < ln[:, None]
        vals_list.append(m[take])
        rows_list.append((first_row[sel, None] + np.arange(lmax)[None, :])[take])
    return np.concatenate(rows_list), np.concatenate(vals_list)


def _ramp(length: np.ndarray) -> np.ndarray:
    """Concatenation of arange(l) for every l in ``length``."""
    total = int(length.sum())
    out = np.ones(total, dtype=np.int64)
    out[0] = 0
    ends = np.cumsum(length)[:-1]
    out[ends] = 1 - length[:-1]
    return np.cumsum(out)


# --------------------------------------------------------------------------------------------------
# java.awt.geom paths (GeneralPath = Path2D.Float, FlatteningPathIterator), as ShapeRoi uses them

_MOVETO, _LINETO, _QUADTO, _CUBICTO, _CLOSE = 0, 1, 2, 3, 4
_NCOORDS = {_MOVETO: 2, _LINETO: 2, _QUADTO: 4, _CUBICTO: 6, _CLOSE: 0}


def _path_from_array(arr: np.ndarray, what: str) -> tuple[list[int], np.ndarray]:
    """``ShapeRoi.makeShapeFromArray``: segment types and float32 coordinates of a GeneralPath."""
    arr = np.asarray(arr, dtype=np.float32).ravel()
    types: list[int] = []
    coords: list[float] = []
    i = 0
    n = arr.size
    while i < n:
        tv = float(arr[i])
        t = _d2i(tv)
        i += 1
        if t not in _NCOORDS:
            raise RoiError(f"{what}: composite ROI path holds an invalid segment type {tv!r}")
        nc = _NCOORDS[t]
        if i + nc > n:
            break
        seg = [float(v) for v in arr[i : i + nc]]
        i += nc
        if t == _MOVETO:
            if types and types[-1] == _MOVETO:
                coords[-2:] = seg
            else:
                types.append(t)
                coords.extend(seg)
        elif t == _CLOSE:
            if not types or types[-1] != _CLOSE:
                types.append(t)
        else:
            if not types:
                raise RoiError(f"{what}: composite ROI path starts with a line or curve, not a move-to")
            types.append(t)
            coords.extend(seg)
    return types, np.asarray(coords, dtype=np.float32)


def _ptseg_dist_sq(x1, y1, x2, y2, px, py) -> float:
    """``java.awt.geom.Line2D.ptSegDistSq``."""
    x2 -= x1
    y2 -= y1
    px -= x1
    py -= y1
    dot = px * x2 + py * y2
    if dot <= 0.0:
        proj = 0.0
    else:
        px = x2 - px
        py = y2 - py
        dot = px * x2 + py * y2
        proj = 0.0 if dot <= 0.0 else dot * dot / (x2 * x2 + y2 * y2)
    d = px * px + py * py - proj
    return 0.0 if d < 0 else d


def _flatten_quad(c: list[float], level: int, sqflat: float, out: list[tuple[float, float]]) -> None:
    if level < 10 and _ptseg_dist_sq(c[0], c[1], c[4], c[5], c[2], c[3]) >= sqflat:
        x1, y1, cx, cy, x2, y2 = c
        x1 = (x1 + cx) / 2.0
        y1 = (y1 + cy) / 2.0
        x2 = (x2 + cx) / 2.0
        y2 = (y2 + cy) / 2.0
        cx = (x1 + x2) / 2.0
        cy = (y1 + y2) / 2.0
        _flatten_quad([c[0], c[1], x1, y1, cx, cy], level + 1, sqflat, out)
        _flatten_quad([cx, cy, x2, y2, c[4], c[5]], level + 1, sqflat, out)
    else:
        out.append((c[4], c[5]))


def _flatten_cubic(c: list[float], level: int, sqflat: float, out: list[tuple[float, float]]) -> None:
    flat = max(
        _ptseg_dist_sq(c[0], c[1], c[6], c[7], c[2], c[3]),
        _ptseg_dist_sq(c[0], c[1], c[6], c[7], c[4], c[5]),
    )
    if level < 10 and flat >= sqflat:
        x1, y1, cx1, cy1, cx2, cy2, x2, y2 = c
        x1 = (x1 + cx1) / 2.0
        y1 = (y1 + cy1) / 2.0
        x2 = (x2 + cx2) / 2.0
        y2 = (y2 + cy2) / 2.0
        mx = (cx1 + cx2) / 2.0
        my = (cy1 + cy2) / 2.0
        cx1 = (x1 + mx) / 2.0
        cy1 = (y1 + my) / 2.0
        cx2 = (x2 + mx) / 2.0
        cy2 = (y2 + my) / 2.0
        mx = (cx1 + cx2) / 2.0
        my = (cy1 + cy2) / 2.0
        _flatten_cubic([c[0], c[1], x1, y1, cx1, cy1, mx, my], level + 1, sqflat, out)
        _flatten_cubic([mx, my, cx2, cy2, x2, y2, c[6], c[7]], level + 1, sqflat, out)
    else:
        out.append((c[6], c[7]))


def _path_bounds(coords: np.ndarray) -> tuple[int, int, int, int]:
    """``Path2D.Float.getBounds()`` (Java 17: all coordinates, control points included)."""
    if coords.size == 0:
        return 0, 0, 0, 0
    xs = coords[0::2]
    ys = coords[1::2]
    with np.errstate(invalid="ignore"):
        x1, x2 = np.float32(np.nanmin(xs)), np.float32(np.nanmax(xs))
        y1, y2 = np.float32(np.nanmin(ys)), np.float32(np.nanmax(ys))
    w = float(np.float32(x2 - x1))
    h = float(np.float32(y2 - y1))
    if w < 0 or h < 0:
        return 0, 0, 0, 0
    fx = math.floor(float(x1))
    fy = math.floor(float(y1))
    cx = math.ceil(float(x1) + w)
    cy = math.ceil(float(y1) + h)
    return _d2i(fx), _d2i(fy), _d2i(cx - fx), _d2i(cy - fy)


def _path_polygon(types: list[int], coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ShapeRoi.getFloatPolygon(0.01, true, false, false)`` of a (relative) float32 path.

    Returns float32 x and y arrays with NaN between sub-paths (trailing NaN dropped).
    """
    sqflat = 0.01 * 0.01
    xs: list[float] = []
    ys: list[float] = []
    c = coords.astype(np.float64).tolist()
    k = 0
    start = 0
    curx = cury = 0.0
    movx = movy = 0.0
    nan = float("nan")

    def add(x: float, y: float) -> None:
        xs.append(float(np.float32(x)))
        ys.append(float(np.float32(y)))

    for t in types:
        if t == _MOVETO:
            if xs and not math.isnan(xs[-1]):
                xs.append(nan)
                ys.append(nan)
            start = len(xs)
            curx, cury = movx, movy = c[k], c[k + 1]
            k += 2
            add(curx, cury)
        elif t == _LINETO:
            curx, cury = c[k], c[k + 1]
            k += 2
            add(curx, cury)
        elif t in (_QUADTO, _CUBICTO):
            nc = _NCOORDS[t]
            pts: list[tuple[float, float]] = []
            seg = [curx, cury, *c[k : k + nc]]
            k += nc
            (_flatten_quad if t == _QUADTO else _flatten_cubic)(seg, 0, sqflat, pts)
            for px, py in pts:
                add(px, py)
            curx, cury = seg[-2], seg[-1]
        else:  # close
            curx, cury = movx, movy
            if xs and start < len(xs):
                if xs[-1] == xs[start] and ys[-1] == ys[start]:
                    del xs[-1]
                    del ys[-1]
            if xs and not math.isnan(xs[-1]):
                xs.append(nan)
                ys.append(nan)
    if xs and math.isnan(xs[-1]):
        del xs[-1]
        del ys[-1]
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.float32)


def _shape_raster(types: list[int], coords: np.ndarray) -> _Raster:
    """``new ShapeRoi(shape)`` + ``getMask()`` for a float32 path in absolute coordinates."""
    x, y, w, h = _path_bounds(coords)
    rel = coords.astype(np.float64).copy()
    rel[0::2] -= x
    rel[1::2] -= y
    rel = rel.astype(np.float32)
    px, py = _path_polygon(types, rel)
    mask = _fill_polygon(px.astype(np.float64), py.astype(np.float64), w, h)
    return _Raster(x, y, w, h, mask)


# RoundRectangle2D path (java.awt.geom.RoundRectIterator)
_RR_A = 1.0 - math.cos(math.pi / 4.0)
_RR_B = math.tan(math.pi / 4.0)
_RR_C = math.sqrt(1.0 + _RR_B * _RR_B) - 1 + _RR_A
_RR_CV = 4.0 / 3.0 * _RR_A * _RR_B / _RR_C
_RR_ACV = (1.0 - _RR_CV) / 2.0
_RR_CTRL = (
    (0.0, 0.0, 0.0, 0.5),
    (0.0, 0.0, 1.0, -0.5),
    (0.0, 0.0, 1.0, -_RR_ACV, 0.0, _RR_ACV, 1.0, 0.0, 0.0, 0.5, 1.0, 0.0),
    (1.0, -0.5, 1.0, 0.0),
    (1.0, -_RR_ACV, 1.0, 0.0, 1.0, 0.0, 1.0, -_RR_ACV, 1.0, 0.0, 1.0, -0.5),
    (1.0, 0.0, 0.0, 0.5),
    (1.0, 0.0, 0.0, _RR_ACV, 1.0, -_RR_ACV, 0.0, 0.0, 1.0, -0.5, 0.0, 0.0),
    (0.0, 0.5, 0.0, 0.0),
    (0.0, _RR_ACV, 0.0, 0.0, 0.0, 0.0, 0.0, _RR_ACV, 0.0, 0.0, 0.0, 0.5),
)
_RR_TYPES = (_MOVETO, _LINETO, _CUBICTO, _LINETO, _CUBICTO, _LINETO, _CUBICTO, _LINETO, _CUBICTO)


def _rounded_rect_raster(x: int, y: int, w: int, h: int, diameter: int) -> _Raster:
    """``Roi.getMask()`` with a corner diameter: ShapeRoi of a ``RoundRectangle2D.Float``."""
    fx, fy, fw, fh = (float(np.float32(v)) for v in (x, y, w, h))
    arc = float(np.float32(diameter))
    aw = min(fw, abs(arc))
    ah = min(fh, abs(arc))
    # ShapeRoi(Shape): bounds of the rectangle, then the path translated by (-x, -y) in double
    # and stored as float32 (GeneralPath).
    bx, by = math.floor(fx), math.floor(fy)
    bw, bh = math.ceil(fx + fw) - bx, math.ceil(fy + fh) - by
    types: list[int] = []
    rel: list[float] = []
    if fw >= 0 and fh >= 0:
        for t, ctrl in zip(_RR_TYPES, _RR_CTRL):
            types.append(t)
            for i in range(0, len(ctrl), 4):
                px = fx + ctrl[i] * fw + ctrl[i + 1] * aw
                py = fy + ctrl[i + 2] * fh + ctrl[i + 3] * ah
                rel.append(px + (-float(bx)))
                rel.append(py + (-float(by)))
        types.append(_CLOSE)
    relf = np.asarray(rel, dtype=np.float32)
    px_, py_ = _path_polygon(types, relf)
    mask = _fill_polygon(px_.astype(np.float64), py_.astype(np.float64), bw, bh)
    return _Raster(_d2i(bx), _d2i(by), bw, bh, mask)


# --------------------------------------------------------------------------------------------------
# ROI -> local mask, as ImageJ decodes and fills it


@dataclass
class _Raster:
    x: int
    y: int
    w: int
    h: int
    mask: np.ndarray | None  # (h, w) bool, or None: the whole bounding rectangle


def _roi_raster(roi: ImagejRoi, index: int | None = None, where: str = "") -> _Raster:
    if not isinstance(roi, ImagejRoi):
        raise TypeError(f"expected a roifile.ImagejRoi; got {type(roi).__name__}")
    what = f"{where + ': ' if where else ''}{_describe_roi(roi, index)}"
    t = int(roi.roitype)
    st = int(roi.subtype)
    version = int(roi.version)
    options = int(roi.options)
    subpixel = version >= 222 and bool(options & _SUBPIXEL)
    if int(roi.shape_roi_size) > 0:
        if t != int(ROI_TYPE.RECT):
            raise RoiError(
                f"{what}: composite ROI of invalid type {t} (ImageJ: 'Invalid composite ROI type')"
            )
        if roi.multi_coordinates is None:
            raise RoiError(f"{what}: composite ROI without path data")
        types, coords = _path_from_array(roi.multi_coordinates, what)
        return _shape_raster(types, coords)
    if st in (int(ROI_SUBTYPE.TEXT), int(ROI_SUBTYPE.IMAGE)):
        raise _unsupported(roi, index, where)
    top, left, bottom, right = (_i16(v) for v in (roi.top, roi.left, roi.bottom, roi.right))
    if t in (int(ROI_TYPE.RECT), int(ROI_TYPE.OVAL)):
        if version >= 223 and subpixel:
            x, y = _d2i(float(np.float32(roi.xd))), _d2i(float(np.float32(roi.yd)))
            w = _d2i(math.ceil(float(np.float32(roi.widthd))))
            h = _d2i(math.ceil(float(np.float32(roi.heightd))))
        else:
            x, y, w, h = left, top, right - left, bottom - top
        w, h = max(w, 1), max(h, 1)
        if t == int(ROI_TYPE.OVAL):
            return _Raster(x, y, w, h, _oval_mask(w, h))
        diameter = _i16(roi.rounded_rect_arc_size)
        if diameter > 0:
            return _rounded_rect_raster(x, y, w, h, diameter)
        return _Raster(x, y, w, h, None)
    if t not in (int(ROI_TYPE.POLYGON), int(ROI_TYPE.FREEHAND), int(ROI_TYPE.TRACED)):
        raise _unsupported(roi, index, where)
    if t == int(ROI_TYPE.FREEHAND) and st in (int(ROI_SUBTYPE.ELLIPSE), int(ROI_SUBTYPE.ROTATED_RECT)):
        raise _unsupported(roi, index, where)
    if options & _SPLINE_FIT:
        raise _unsupported(roi, index, where)
    n = int(roi.n_coordinates)
    if subpixel:
        c = roi.subpixel_coordinates
        if c is None or len(c) < n:
            got = 0 if c is None else len(c)
            raise RoiError(f"{what}: sub-pixel flag set but {got} float coordinates for n={n}")
        c = np.asarray(c, dtype=np.float32)[:n]
        if n == 0:
            return _Raster(0, 0, 0, 0, np.zeros((0, 0), bool))
        xf, yf = c[:, 0], c[:, 1]
        # PolygonRoi(float[], float[], n, type) -> finishPolygon() -> setIntBounds()
        minx, maxx = np.float32(xf.min()), np.float32(xf.max())
        miny, maxy = np.float32(yf.min()), np.float32(yf.max())
        bw = float(np.float32(maxx - minx))
        bh = float(np.float32(maxy - miny))
        xbase, ybase = float(minx), float(miny)
        x, y = _d2i(math.floor(xbase)), _d2i(math.floor(ybase))
        w = _d2i(math.ceil(xbase + bw)) - x
        h = _d2i(math.ceil(ybase + bh)) - y
        xrel = (xf - minx).astype(np.float32)
        yrel = (yf - miny).astype(np.float32)
        xs = xrel.astype(np.float64) + (xbase - x)
        ys = yrel.astype(np.float64) + (ybase - y)
        return _Raster(x, y, w, h, _fill_polygon(xs, ys, w, h))
    c = roi.integer_coordinates
    if c is None or len(c) < n:
        raise RoiError(f"{what}: {0 if c is None else len(c)} coordinates for n={n}")
    if n == 0:
        return _Raster(0, 0, 0, 0, np.zeros((0, 0), bool))
    c = np.asarray(c, dtype=np.int64)[:n]
    c = ((c + 32768) % 65536) - 32768  # as ImageJ reads the 16-bit values
    xp = left + np.maximum(c[:, 0], 0)
    yp = top + np.maximum(c[:, 1], 0)
    x, y = int(xp.min()), int(yp.min())
    w, h = int(xp.max()) - x, int(yp.max()) - y
    xs = (xp - x).astype(np.float64)
    ys = (yp - y).astype(np.float64)
    return _Raster(x, y, w, h, _fill_polygon(xs, ys, w, h))


def _oval_mask(w: int, h: int) -> np.ndarray:
    """``OvalRoi.getMask()`` of ImageJ 1.53t."""
    a = w / 2.0
    b = h / 2.0
    a2 = a * a
    b2 = b * b
    a -= 0.5
    b -= 0.5
    xx = np.arange(w, dtype=np.float64) - a
    yy = np.arange(h, dtype=np.float64) - b
    return (xx * xx / a2)[None, :] + (yy * yy / b2)[:, None] <= 1.0


def _paste_window(r: _Raster, shape: tuple[int, int]):
    """Clipped (image slice, local slice) of a raster, or None when it misses the image."""
    height, width = shape
    x0, y0 = max(r.x, 0), max(r.y, 0)
    x1, y1 = min(r.x + r.w, width), min(r.y + r.h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    img = (slice(y0, y1), slice(x0, x1))
    loc = (slice(y0 - r.y, y1 - r.y), slice(x0 - r.x, x1 - r.x))
    return img, loc


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        shp = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be (Y, X); got {shape!r}") from None
    if len(shp) != 2 or shp[0] < 0 or shp[1] < 0:
        raise ValueError(f"shape must be two non-negative integers (Y, X); got {shape!r}")
    return shp  # type: ignore[return-value]


def roi_to_mask(roi: ImagejRoi, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise one area ROI exactly as ImageJ 1.53t's ``ImageProcessor.fill(Roi)`` does.

    Parameters
    ----------
    roi : roifile.ImagejRoi
        A rectangle (also sub-pixel and rounded), oval, polygon, freehand, traced or composite ROI.
        Parts outside the image (also negative coordinates) are clipped.
    shape : tuple of int
        ``(Y, X)`` of the image.

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` bool mask.

    Raises
    ------
    RoiError
        For ROI types without an area (lines, points, ...), text/image ROIs and other unsupported kinds.

    Examples
    --------
    >>> roi = ImagejRoi.frompoints([[1, 1], [5, 1], [5, 4], [1, 4]])
    >>> int(roi_to_mask(roi, (6, 6)).sum())
    12
    """
    shp = _check_shape(shape)
    out = np.zeros(shp, dtype=bool)
    r = _roi_raster(roi)
    win = _paste_window(r, shp)
    if win is not None:
        img, loc = win
        out[img] = True if r.mask is None else r.mask[loc]
    return out


def rois_to_labels(rois: Iterable[ImagejRoi], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise ROIs into a label image: ROI ``i`` gets label ``i + 1``; later ROIs overwrite earlier ones.

    Parameters
    ----------
    rois : iterable of roifile.ImagejRoi
        Area ROIs (see :func:`roi_to_mask`).
    shape : tuple of int
        ``(Y, X)`` of the image.

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` int32 label image, 0 = background.

    Examples
    --------
    >>> a = ImagejRoi.frompoints([[0, 0], [3, 0], [3, 3], [0, 3]])
    >>> b = ImagejRoi.frompoints([[2, 2], [5, 2], [5, 5], [2, 5]])
    >>> int(rois_to_labels([a, b], (6, 6))[2, 2])
    2
    """
    shp = _check_shape(shape)
    out = np.zeros(shp, dtype=np.int32)
    for i, roi in enumerate(rois):
        r = _roi_raster(roi, i)
        win = _paste_window(r, shp)
        if win is None:
            continue
        img, loc = win
        if r.mask is None:
            out[img] = i + 1
        else:
            out[img][r.mask[loc]] = i + 1
    return out


def rois_to_mask(rois: Iterable[ImagejRoi], shape: tuple[int, int]) -> np.ndarray:
    """Union of the ROIs' masks (see :func:`roi_to_mask`).

    Parameters
    ----------
    rois : iterable of roifile.ImagejRoi
        Area ROIs.
    shape : tuple of int
        ``(Y, X)`` of the image.

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` bool mask.

    Examples
    --------
    >>> rois_to_mask([], (2, 3)).shape
    (2, 3)
    """
    return rois_to_labels(rois, shape) > 0


def roi_bounds(roi: ImagejRoi) -> tuple[int, int, int, int]:
    """Integer bounds ``(x, y, width, height)`` of a ROI as ImageJ computes them (``Roi.getBounds()``).

    Examples
    --------
    >>> roi_bounds(ImagejRoi.frompoints([[1, 2], [5, 2], [5, 7]]))
    (1, 2, 4, 5)
    """
    r = _roi_raster(roi)
    return r.x, r.y, r.w, r.h


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


# --------------------------------------------------------------------------------------------------
# reading


def _parse_roi(data: bytes, what: str) -> ImagejRoi:
    if len(data) < 64 or data[:4] != b"Iout":
        raise RoiError(
            f"{what}: not an ImageJ ROI (expected the 'Iout' header and >= 64 bytes; "
            f"got {len(data)} bytes starting {data[:4]!r})"
        )
    try:
        return ImagejRoi.frombytes(data)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise RoiError(f"{what}: corrupt ImageJ ROI ({type(exc).__name__}: {exc})") from exc


def _check_supported(rois: list[ImagejRoi], where: str) -> list[ImagejRoi]:
    """Raise RoiError for the first ROI that :func:`roi_to_mask` could not rasterise (cheap checks)."""
    for i, roi in enumerate(rois):
        kind = roi_type_name(roi)
        if kind not in SUPPORTED_TYPES:
            raise _unsupported(roi, i, where)
        what = f"{where}: {_describe_roi(roi, i)}"
        if kind == "composite":
            if roi.multi_coordinates is None:
                raise RoiError(f"{what}: composite ROI without path data")
            _path_from_array(roi.multi_coordinates, what)
        elif kind in ("polygon", "freehand", "traced"):
            n = int(roi.n_coordinates)
            sub = int(roi.version) >= 222 and bool(int(roi.options) & _SUBPIXEL)
            c = roi.subpixel_coordinates if sub else roi.integer_coordinates
            if c is None or len(c) < n:
                raise RoiError(f"{what}: {0 if c is None else len(c)} coordinates stored for n={n}")
    return rois


def _read_zip(data: bytes, where: str, max_bytes: int, max_entries: int) -> list[ImagejRoi]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise RoiError(f"{where}: not a readable zip archive ({exc})") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > max_entries:
            raise RoiError(f"{where}: {len(infos)} entries, more than max_entries={max_entries}")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise RoiError(f"{where}: {total} bytes uncompressed, more than max_bytes={max_bytes}")
        rois = []
        budget = max_bytes
        for info in infos:
            ename = info.filename
            if not ename.lower().endswith(".roi"):
                raise RoiError(
                    f"{where}: entry {ename!r} is not an ImageJ ROI (a RoiSet zip holds only .roi entries)"
                )
            try:
                with zf.open(info) as fh:
                    raw = fh.read(budget + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
                raise RoiError(f"{where}: entry {ename!r} cannot be read ({exc})") from exc
            if len(raw) > budget:
                raise RoiError(f"{where}: entry {ename!r} exceeds max_bytes={max_bytes} when unpacked")
            budget -= len(raw)
            roi = _parse_roi(raw, f"{where}: entry {ename!r}")
            if not roi.name:
                roi.name = ename[:-4].rsplit("/", 1)[-1]
            rois.append(roi)
    return rois


def _read_tiff(path: Path, where: str, max_bytes: int, max_entries: int) -> list[ImagejRoi]:
    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata
    except Exception as exc:  # noqa: BLE001
        raise RoiError(f"{where}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    if not meta:
        return []
    blobs: list[bytes] = []
    for key in ("Overlays", "ROI"):
        val = meta.get(key)
        if val is None:
            continue
        if isinstance(val, (bytes, bytearray)):
            blobs.append(bytes(val))
        else:
            blobs.extend(bytes(v) for v in val)
    if len(blobs) > max_entries:
        raise RoiError(f"{where}: overlay holds {len(blobs)} ROIs, more than max_entries={max_entries}")
    if sum(len(b) for b in blobs) > max_bytes:
        raise RoiError(f"{where}: overlay ROI data exceeds max_bytes={max_bytes}")
    return [_parse_roi(b, f"{where}: overlay ROI #{i}") for i, b in enumerate(blobs)]


def read_rois(
    source: PathLike | bytes,
    *,
    max_bytes: int = 256 * 2**20,
    max_entries: int = 100_000,
) -> list[ImagejRoi]:
    """Read area ROIs from a ``.roi`` file, a RoiSet ``.zip``, an ImageJ TIFF overlay, or ROI bytes.

    Zips are read in memory (never extracted); their size, entry count and entries are checked.

    Parameters
    ----------
    source : path or bytes
        A ``.roi`` file, a RoiSet ``.zip`` (only ``.roi`` entries), a TIFF whose ImageJ overlay
        (or single ROI) holds the ROIs, or the bytes of one ``.roi``. The kind is recognised by content.
    max_bytes : int
        Largest file / total unpacked size accepted.
    max_entries : int
        Largest number of ROIs accepted.

    Returns
    -------
    list of roifile.ImagejRoi
        In file order (a TIFF without overlay gives an empty list).

    Raises
    ------
    RoiError
        Missing, oversized, corrupt or foreign files and entries, and ROI types that have no area
        (lines, points, text, ...): the message names the file, entry/ROI and what was expected.

    Examples
    --------
    >>> roi = ImagejRoi.frompoints([[0, 0], [4, 0], [4, 4]])
    >>> [r.n_coordinates for r in read_rois(roi.tobytes())]
    [3]
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        where = "ROI bytes"
        if len(data) > max_bytes:
            raise RoiError(f"{where}: {len(data)} bytes, more than max_bytes={max_bytes}")
        return _check_supported([_parse_roi(data, where)], where)
    path = Path(source)
    where = str(path)
    if not path.is_file():
        raise RoiError(f"{where}: no such file (expected a .roi, a RoiSet .zip or an ImageJ TIFF)")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _check_supported(_read_tiff(path, where, max_bytes, max_entries), where)
    if size > max_bytes:
        raise RoiError(f"{where}: {size} bytes, more than max_bytes={max_bytes}")
    data = path.read_bytes()
    if head[:2] == b"PK" or path.suffix.lower() == ".zip":
        return _check_supported(_read_zip(data, where, max_bytes, max_entries), where)
    roi = _parse_roi(data, where)
    if not roi.name:
        roi.name = path.stem
    return _check_supported([roi], where)


def read_overlay(path: PathLike) -> list[ImagejRoi]:
    """ROIs of an ImageJ TIFF's overlay (and its single saved selection, if any).

    Parameters
    ----------
    path : path
        An ImageJ TIFF.

    Returns
    -------
    list of roifile.ImagejRoi
        Empty when the file has no overlay. Overlay ROIs of any type are returned (no area check).

    Raises
    ------
    RoiError
        If the file is missing, not a TIFF, or holds corrupt ROI data.
    """
    p = Path(path)
    if not p.is_file():
        raise RoiError(f"{p}: no such file (expected an ImageJ TIFF)")
    return _read_tiff(p, str(p), 2**62, 2**62)


# --------------------------------------------------------------------------------------------------
# writing


def _unique_names(rois: Sequence[ImagejRoi]) -> list[str]:
    used: set[str] = set()
    out = []
    for i, roi in enumerate(rois):
        base = (roi.name or f"{i + 1:04d}").replace("/", "_").replace("\\", "_")
        if base.lower().endswith(".roi"):
            base = base[:-4]
        name = base
        k = 2
        while name.lower() in used:
            name = f"{base}-{k}"
            k += 1
        used.add(name.lower())
        out.append(name)
    return out


def write_roiset(path: PathLike, rois: Iterable[ImagejRoi], *, overwrite: bool = False) -> Path:
    """Write ROIs to a RoiSet ``.zip`` that ImageJ's ROI Manager opens (atomically).

    Entry names (and the names stored in the ROIs) are made unique by appending ``-2``, ``-3`` ...

    Parameters
    ----------
    path : path
        Target ``.zip`` file.
    rois : iterable of roifile.ImagejRoi
        The ROIs (not modified).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    rois = list(rois)
    for i, r in enumerate(rois):
        if not isinstance(r, ImagejRoi):
            raise TypeError(f"rois[{i}] must be a roifile.ImagejRoi; got {type(r).__name__}")
    names = _unique_names(rois)
    target = Path(path)
    with atomic_path(target, overwrite=overwrite) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for roi, name in zip(rois, names):
                if roi.name != name:
                    roi = copy.deepcopy(roi)
                    roi.name = name
                # a fixed time stamp: the same ROIs always give the same bytes (reproducible, comparable runs)
                info = zipfile.ZipInfo(name + ".roi", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, roi.tobytes())
    logger.debug("wrote %d ROIs to %s", len(rois), target)
    return target


_LUT_COLORS = {
    "gray": (1, 1, 1),
    "grays": (1, 1, 1),
    "grey": (1, 1, 1),
    "red": (1, 0, 0),
    "green": (0, 1, 0),
    "blue": (0, 0, 1),
    "cyan": (0, 1, 1),
    "magenta": (1, 0, 1),
    "yellow": (1, 1, 0),
}


def _lut(spec: Any, what: str) -> np.ndarray:
    if isinstance(spec, str):
        key = spec.lower()
        if key not in _LUT_COLORS:
            raise ValueError(
                f"{what} must be one of {sorted(_LUT_COLORS)} or a (3, 256) uint8 array; got {spec!r}"
            )
        ramp = np.arange(256, dtype=np.uint8)
        return np.stack([ramp * c for c in _LUT_COLORS[key]]).astype(np.uint8)
    arr = np.asarray(spec)
    if arr.shape != (3, 256):
        raise ValueError(f"{what} must be a colour name or a (3, 256) uint8 array; got shape {arr.shape}")
    return arr.astype(np.uint8)


def _ij_dtype(image: np.ndarray) -> np.ndarray:
    if image.dtype == bool:
        return image.astype(np.uint8) * np.uint8(255)
    if image.dtype in (np.uint8, np.uint16, np.float32):
        return image
    if np.issubdtype(image.dtype, np.integer):
        lo = int(image.min()) if image.size else 0
        hi = int(image.max()) if image.size else 0
        if lo >= 0 and hi <= 255:
            return image.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return image.astype(np.uint16)
        if abs(lo) > 2**24 or abs(hi) > 2**24:
            raise ValueError(
                f"image values {lo}..{hi} cannot be stored exactly in an ImageJ TIFF (uint8, uint16, float32)"
            )
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32)
    raise ValueError(f"image dtype {image.dtype} cannot be written to an ImageJ TIFF")


def write_imagej_tiff(
    path: PathLike,
    image: np.ndarray,
    *,
    rois: Iterable[ImagejRoi] = (),
    overwrite: bool = False,
    channel_names: Sequence[str] | None = None,
    spacing: float | tuple[float, float] | None = None,
    unit: str | None = None,
    luts: Sequence[Any] | None = None,
) -> Path:
    """Write an ImageJ TIFF (a channel hyperstack for ``(C, Y, X)``) with ROIs as overlay, atomically.

    Parameters
    ----------
    path : path
        Target ``.tif`` file.
    image : numpy.ndarray
        ``(Y, X)`` or ``(C, Y, X)``; bool is written as 0/255 uint8, other integers as the smallest of
        uint8/uint16 that holds them (else float32), floats as float32.
    rois : iterable of roifile.ImagejRoi
        Stored as the image overlay (any ROI type ImageJ knows).
    overwrite : bool
        Replace an existing file.
    channel_names : sequence of str, optional
        One label per channel (ImageJ slice labels).
    spacing : float or (float, float), optional
        Pixel size, ``dx`` or ``(dy, dx)``, in ``unit`` (ImageJ calibration).
    unit : str, optional
        Calibration unit, e.g. ``"um"``.
    luts : sequence, optional
        One LUT per channel: a colour name (``"gray"``, ``"red"``, ``"green"``, ``"blue"``, ``"cyan"``,
        ``"magenta"``, ``"yellow"``) or a ``(3, 256)`` uint8 array.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        For images that are not 2-D/3-D, or lists whose length does not match the channels.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"image must be (Y, X) or (C, Y, X); got an array of shape {img.shape}")
    img = _ij_dtype(img)
    n_ch = img.shape[0] if img.ndim == 3 else 1
    meta: dict[str, Any] = {"axes": "CYX" if img.ndim == 3 else "YX"}
    if img.ndim == 3:
        meta["mode"] = "composite" if luts is not None and n_ch > 1 else "grayscale"
    if channel_names is not None:
        labels = [str(c) for c in channel_names]
        if len(labels) != n_ch:
            raise ValueError(f"channel_names must hold {n_ch} names; got {len(labels)}")
        meta["Labels"] = labels
    if luts is not None:
        luts = list(luts)
        if len(luts) != n_ch:
            raise ValueError(f"luts must hold {n_ch} entries (one per channel); got {len(luts)}")
        meta["LUTs"] = [_lut(l, f"luts[{i}]") for i, l in enumerate(luts)]
    resolution = None
    if spacing is not None:
        sp = (float(spacing), float(spacing)) if np.ndim(spacing) == 0 else tuple(float(s) for s in spacing)
        if len(sp) != 2 or not all(math.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"spacing must be a positive dx or (dy, dx); got {spacing!r}")
        resolution = (1.0 / sp[1], 1.0 / sp[0])
    if unit is not None:
        meta["unit"] = str(unit)
    roi_list = list(rois)
    for i, r in enumerate(roi_list):
        if not isinstance(r, ImagejRoi):
            raise TypeError(f"rois[{i}] must be a roifile.ImagejRoi; got {type(r).__name__}")
    if roi_list:
        meta["Overlays"] = [r.tobytes() for r in roi_list]
    target = Path(path)
    with atomic_path(target, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, img, imagej=True, metadata=meta, resolution=resolution)
    logger.debug("wrote %s %s with %d overlay ROIs to %s", img.shape, img.dtype, len(roi_list), target)
    return target

