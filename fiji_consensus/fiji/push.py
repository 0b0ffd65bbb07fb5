"""ROIs into ImageJ: ROIs, label images and a consensus with its experts pushed into an image's overlay
(headless-safe) and, with a display, the ROI Manager; named and coloured as the CLI's files."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..matching import label_objects
from ..rois import labels_to_rois
from ..style import CONSENSUS_COLOR, EXPERT_COLORS, object_roi_name
from .jvm import _check_imp, _cls, _headless, _is_java, _roi_manager
from . import roi_bytes
from .roi_bytes import _java_roi_decoder, _roifile


def _argb(color: Any, name: str) -> bytes:
    """A colour as roifile's 4 ARGB bytes: '#RRGGBB', '#AARRGGBB', (r, g, b[, a]) or 4 bytes."""
    if isinstance(color, (bytes, bytearray)) and len(color) == 4:
        return bytes(color)
    if isinstance(color, str):
        s = color.lstrip("#")
        if re.fullmatch(r"[0-9a-fA-F]{6}", s):
            return bytes.fromhex("ff" + s)
        if re.fullmatch(r"[0-9a-fA-F]{8}", s):
            return bytes.fromhex(s)
    elif isinstance(color, (tuple, list)) and len(color) in (3, 4) and all(
        isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in color
    ):
        r, g, b = color[:3]
        a = color[3] if len(color) == 4 else 255
        return bytes([a, r, g, b])
    raise ValueError(f"{name} must be '#RRGGBB', '#AARRGGBB' or (r, g, b[, a]) in 0..255; got {color!r}")


def push_rois(
    imp: Any,
    rois: Iterable[Any],
    *,
    name_prefix: str | None = None,
    stroke_color: Any = None,
    fill_color: Any = None,
    stroke_width: float | None = None,
    group: int | None = None,
    properties: Mapping[str, Any] | None = None,
    replace: bool = False,
    roi_manager: bool | None = None,
) -> int:
    """Add ROIs to an image's Overlay (headless-safe) and, with a display, to the ROI Manager.

    The ROIs (``roifile.ImagejRoi``, or ``ij.gui.Roi`` which are used as they are) are not modified: styled
    copies are pushed.

    Parameters
    ----------
    imp
        The image.
    rois
        The ROIs.
    name_prefix
        Prefixed to each ROI's name (unless it already starts with it); unnamed ROIs get ``<prefix>0001``...
    stroke_color, fill_color
        ``'#RRGGBB'``, ``'#AARRGGBB'`` or ``(r, g, b[, a])``.
    stroke_width
        Line width in pixels.
    group
        ROI group, 0-255. Note: ImageJ then strokes the ROI in the group's colour (from ``luts/Glasbey.lut``,
        which plain ImageJ1 lacks: it logs "LUT not found" for each ROI and uses yellow).
    properties
        ROI properties (``roi.getProperty(key)`` in ImageJ), e.g. ``{"expert": "A"}``.
    replace
        Start a new overlay instead of adding to the image's one.
    roi_manager
        Also add to the ROI Manager: None (default) when Java has a display, True (error when headless),
        False never.

    Returns
    -------
    int
        The number of ROIs pushed.
    """
    _check_imp(imp)
    style = _style_of(name_prefix, stroke_color, fill_color, stroke_width, group, properties)
    headless = _headless()
    if roi_manager is True and headless:
        raise RuntimeError("roi_manager=True needs a display; Java runs headless here")
    ImagejRoi = _roifile().ImagejRoi
    merged: dict[str, str] = {}  # a ROI's props -> its props with ``properties`` added
    decode = _java_roi_decoder()
    jrois = []
    for i, r in enumerate(rois):
        if isinstance(r, ImagejRoi):
            jrois.append(_java_of_roifile(r, i, style, merged, decode))
        elif _is_java(r, "ij.gui.Roi"):
            jrois.append(_java_restyled(r, i, style))
        else:
            raise TypeError(f"ROI {i} must be a roifile.ImagejRoi or an ij.gui.Roi; got {type(r).__name__}")
    _show(imp, jrois, replace=replace, roi_manager=bool(roi_manager or (roi_manager is None and not headless)))
    return len(jrois)


@dataclass(frozen=True)
class _Style:
    """What :func:`push_rois` sets on every ROI (None: the ROI keeps its own)."""

    name_prefix: str | None
    stroke: bytes | None  # ARGB
    fill: bytes | None  # ARGB
    width: float | None
    group: int | None
    props: dict[str, str]

    def name(self, name: str, i: int) -> str:
        """The pushed name of ROI ``i`` named ``name``: the prefix added (unless it is there), a number for
        an unnamed ROI."""
        if not self.name_prefix or name.startswith(self.name_prefix):
            return name
        return self.name_prefix + (name or object_roi_name(i + 1))


def _style_of(name_prefix: str | None, stroke_color: Any, fill_color: Any, stroke_width: float | None,
              group: int | None, properties: Mapping[str, Any] | None) -> _Style:
    """Step 1 of :func:`push_rois`: its style arguments checked (one-line errors naming what was given)."""
    stroke = _argb(stroke_color, "stroke_color") if stroke_color is not None else None
    fill = _argb(fill_color, "fill_color") if fill_color is not None else None
    if group is not None and not (isinstance(group, (int, np.integer)) and 0 <= group <= 255):
        raise ValueError(f"group must be an int in 0..255; got {group!r}")
    if stroke_width is not None and not (np.isfinite(stroke_width) and stroke_width >= 0):
        raise ValueError(f"stroke_width must be >= 0; got {stroke_width!r}")
    props = dict(properties or {})
    for k in props:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(k)):
            raise ValueError(f"property keys must be letters, digits, '_', '.', '-'; got {k!r}")
    return _Style(name_prefix or None, stroke, fill, stroke_width, None if group is None else int(group), props)


def _java_of_roifile(r: Any, i: int, style: _Style, merged: dict[str, str], decode: Callable[[bytes], Any]) -> Any:
    """Step 2 of :func:`push_rois` for a ``roifile.ImagejRoi``: the styled ROI's bytes
    (:func:`~fiji_consensus.fiji.roi_bytes.styled_bytes`; ``r`` is not changed) decoded by ImageJ."""
    changes: dict[str, Any] = {}
    name = style.name(r.name or "", i) if style.name_prefix else r.name
    if name != r.name:
        changes["name"] = name
    if style.props:
        new = merged.get(r.props)
        if new is None:  # (serialised once per distinct props string)
            scratch = _roifile().ImagejRoi()
            scratch.props = r.props
            scratch.properties = {**(scratch.properties if r.props else {}), **style.props}
            new = merged[r.props] = scratch.props
        changes["props"] = new
    if style.stroke is not None:
        changes["stroke_color"] = style.stroke
    if style.fill is not None:
        changes["fill_color"] = style.fill
    if style.width is not None:
        changes["stroke_width"] = int(round(style.width))
        if style.width != int(style.width):
            changes["float_stroke_width"] = float(style.width)
    if style.group is not None:
        changes["group"] = style.group
    j = decode(roi_bytes.styled_bytes(r, changes))
    if j is None:
        raise ValueError(f"ImageJ could not decode ROI {i} ({name!r}, roitype {r.roitype})")
    return j


def _java_restyled(j: Any, i: int, style: _Style) -> Any:
    """Step 2 of :func:`push_rois` for an ``ij.gui.Roi``: a styled clone."""
    j = j.clone()
    if style.name_prefix:
        j.setName(style.name(str(j.getName() or ""), i))
    Color = _cls("java.awt.Color")
    if style.stroke is not None:
        a, r, g, b = style.stroke
        j.setStrokeColor(Color(r, g, b, a))
    if style.fill is not None:
        a, r, g, b = style.fill
        j.setFillColor(Color(r, g, b, a))
    if style.width is not None:
        j.setStrokeWidth(float(style.width))
    if style.group is not None:
        j.setGroup(style.group)
    for k, v in style.props.items():
        j.setProperty(str(k), str(v))
    return j


def _show(imp: Any, jrois: list, *, replace: bool, roi_manager: bool) -> None:
    """Step 3 of :func:`push_rois`: the ROIs added to the image's overlay (a new one with ``replace``) and,
    when asked, to the ROI Manager."""
    ov = None if replace else imp.getOverlay()
    if ov is None:
        ov = _cls("ij.gui.Overlay")()
    for j in jrois:
        ov.add(j)
    imp.setOverlay(ov)
    if roi_manager:
        rm = _roi_manager(create=True)
        if replace:
            rm.reset()
        for j in jrois:
            rm.addRoi(j)


def push_labels(imp: Any, labels: Any, **kwargs: Any) -> int:
    """Push the outlines of a label image (or a mask: its connected objects) as ROIs; see :func:`push_rois`.

    The outlines are made by :func:`fiji_consensus.rois.labels_to_rois` (the same ROIs as the CLI's files);
    ``name_prefix``, ``stroke_color`` and the other keywords are those of :func:`push_rois`.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be a (Y, X) label image or mask; got shape {arr.shape}")
    if arr.dtype == bool:
        arr = label_objects(arr)
    return push_rois(imp, labels_to_rois(arr), **kwargs)


def push_consensus(
    imp: Any,
    consensus: Any,
    experts: Mapping[str, Any] | None = None,
    *,
    colors: Mapping[str, Any] | None = None,
    consensus_color: Any = None,
    replace: bool = True,
    roi_manager: bool | None = None,
) -> int:
    """Show a consensus and the experts' annotations as outlines in the image's overlay.

    Consensus outlines are named ``consensus:0001``...; each expert's are named ``<expert>:0001``..., have one
    colour per expert and the property ``expert=<name>``, so :func:`pull_experts` reads them back. (ROI groups
    are not set: in plain ImageJ1, without Fiji's ``luts/Glasbey.lut``, a group resets the stroke colour.)

    Parameters
    ----------
    imp
        The image.
    consensus
        ``(Y, X)`` label image or bool mask (its connected objects), or None for experts only.
    experts
        Expert → label image, bool mask, or list of ROIs.
    colors
        Expert → colour (default: the package's colour-blind-safe palette, as in the CLI's overlays).
    consensus_color
        Default white.
    replace
        Replace the image's overlay (default) instead of adding to it.
    roi_manager
        See :func:`push_rois`.

    Returns
    -------
    int
        The number of ROIs pushed.
    """
    _check_imp(imp)
    h, w = int(imp.getHeight()), int(imp.getWidth())
    n = 0
    first = True
    for k, (name, ann) in enumerate((experts or {}).items()):
        color = (colors or {}).get(name, EXPERT_COLORS[k % len(EXPERT_COLORS)])
        kw = dict(name_prefix=f"{name}:", stroke_color=color,
                  properties={"expert": name}, replace=replace and first, roi_manager=roi_manager)
        if isinstance(ann, (list, tuple)):
            n += push_rois(imp, ann, **kw)
        else:
            a = np.asarray(ann)
            if a.shape != (h, w):
                raise ValueError(f"expert {name!r}: annotation must have the image's shape {(h, w)}; got {a.shape}")
            n += push_labels(imp, a, **kw)
        first = False
    if consensus is not None:
        c = np.asarray(consensus)
        if c.shape != (h, w):
            raise ValueError(f"consensus must have the image's shape {(h, w)}; got {c.shape}")
        n += push_labels(imp, c, name_prefix="consensus:",
                         stroke_color=consensus_color if consensus_color is not None else CONSENSUS_COLOR,
                         replace=replace and first, roi_manager=roi_manager)
    return n
