"""ROI -> mask exactly as ImageJ 1.53t fills it: ``ij.process.PolygonFiller`` (vectorised), Java's
``GeneralPath``/``FlatteningPathIterator`` for composite and rounded-rectangle ROIs, ``OvalRoi.getMask``; the
public :func:`roi_to_mask`, :func:`rois_to_labels`, :func:`rois_to_mask` and :func:`roi_bounds`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from roifile import ROI_SUBTYPE, ROI_TYPE, ImagejRoi

from ._base import RoiError, _d2i, _describe_roi, _i16, _java_round, _SPLINE_FIT, _SUBPIXEL, _unsupported

__all__ = ["roi_to_mask", "rois_to_labels", "rois_to_mask", "roi_bounds"]


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


def _mid(a: float, b: float) -> float:
    """The midpoint ``(a + b) / 2`` (Java's ``FlatteningPathIterator`` subdivision, same rounding)."""
    return (a + b) / 2.0


def _flatten_quad(c: list[float], level: int, sqflat: float, out: list[tuple[float, float]]) -> None:
    if level < 10 and _ptseg_dist_sq(c[0], c[1], c[4], c[5], c[2], c[3]) >= sqflat:
        x1, y1, cx, cy, x2, y2 = c
        x1, y1, x2, y2 = _mid(x1, cx), _mid(y1, cy), _mid(x2, cx), _mid(y2, cy)
        cx, cy = _mid(x1, x2), _mid(y1, y2)
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
        x1, y1, x2, y2 = _mid(x1, cx1), _mid(y1, cy1), _mid(x2, cx2), _mid(y2, cy2)
        mx, my = _mid(cx1, cx2), _mid(cy1, cy2)
        cx1, cy1, cx2, cy2 = _mid(x1, mx), _mid(y1, my), _mid(x2, mx), _mid(y2, my)
        mx, my = _mid(cx1, cx2), _mid(cy1, cy2)
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


def _paste(out: np.ndarray, r: _Raster, value: Any) -> None:
    """Set the pixels of raster ``r`` in ``out`` to ``value``, clipped to the image."""
    height, width = out.shape
    x0, y0 = max(r.x, 0), max(r.y, 0)
    x1, y1 = min(r.x + r.w, width), min(r.y + r.h, height)
    if x1 <= x0 or y1 <= y0:
        return
    img = (slice(y0, y1), slice(x0, x1))
    if r.mask is None:
        out[img] = value
    else:
        out[img][r.mask[y0 - r.y : y1 - r.y, x0 - r.x : x1 - r.x]] = value


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
    out = np.zeros(_check_shape(shape), dtype=bool)
    _paste(out, _roi_raster(roi), True)
    return out


def rois_to_labels(rois: Iterable[ImagejRoi], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise area ROIs (see :func:`roi_to_mask`) into a ``shape`` = ``(Y, X)`` int32 label image.

    ROI ``i`` gets label ``i + 1``; later ROIs overwrite earlier ones; 0 is the background.

    Examples
    --------
    >>> a = ImagejRoi.frompoints([[0, 0], [3, 0], [3, 3], [0, 3]])
    >>> b = ImagejRoi.frompoints([[2, 2], [5, 2], [5, 5], [2, 5]])
    >>> int(rois_to_labels([a, b], (6, 6))[2, 2])
    2
    """
    out = np.zeros(_check_shape(shape), dtype=np.int32)
    for i, roi in enumerate(rois):
        _paste(out, _roi_raster(roi, i), i + 1)
    return out


def rois_to_mask(rois: Iterable[ImagejRoi], shape: tuple[int, int]) -> np.ndarray:
    """The union of the area ROIs' masks (see :func:`roi_to_mask`): a ``shape`` = ``(Y, X)`` bool mask.

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
