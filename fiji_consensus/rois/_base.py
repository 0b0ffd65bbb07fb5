"""What the ROI modules share: types, ImageJ constants, :class:`RoiError`, ROI names and kinds."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Union

import numpy as np
from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi

__all__ = ["RoiError", "SUPPORTED_TYPES", "roi_type_name"]

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
