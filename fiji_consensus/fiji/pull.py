"""ROIs from ImageJ: the ROIs of an overlay or of the ROI Manager as ``roifile.ImagejRoi`` objects, sorted by
expert, and rasterised by ImageJ itself into label images."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..rois import read_rois
from ..style import MAX_UINT16_LABEL
from .images import _pixels
from .jvm import _check_imp, _cls, _headless, _java, _roi_manager
from .roi_bytes import _java_rois_to_bytes, _rois_from_bytes, to_java_roi

logger = logging.getLogger(__name__)


def pull_rois(imp: Any = None, *, source: str = "overlay") -> list:
    """The ROIs of an image's overlay, or of the ROI Manager, as ``roifile.ImagejRoi`` objects.

    Parameters
    ----------
    imp
        The image (needed for ``source="overlay"``).
    source
        ``"overlay"`` or ``"roi_manager"`` (needs a display; an error when headless or not open).
    """
    _java()
    if source == "overlay":
        _check_imp(imp)
        ov = imp.getOverlay()
        jrois = list(ov.toArray()) if ov is not None else []
    elif source == "roi_manager":
        if _headless():
            raise RuntimeError("the ROI Manager needs a display; Java runs headless here (use the overlay)")
        rm = _roi_manager()
        if rm is None:
            raise RuntimeError("the ROI Manager is not open")
        jrois = list(rm.getRoisAsArray())
    else:
        raise ValueError(f"source must be 'overlay' or 'roi_manager'; got {source!r}")
    return _rois_from_bytes(_java_rois_to_bytes(jrois))


_PREFIX = re.compile(r"^(?P<expert>[^:]+):.+$")


def _expert_of(roi: Any, by: str, experts: Sequence[str] | None, property_key: str,
               group_names: Mapping[int, str] | None) -> str | None:
    if by == "property":
        v = roi.properties.get(property_key) if roi.props else None
        return None if v is None else str(v)
    if by == "group":
        g = int(roi.group or 0)
        if g == 0:
            return None
        return (group_names or {}).get(g, f"group{g}")
    name = roi.name or ""
    if experts:
        for e in sorted(experts, key=len, reverse=True):
            if name.startswith(e + ":") or name.startswith(e + "_"):
                return e
        return None
    m = _PREFIX.match(name)
    if m:
        return m.group("expert")
    if "_" in name.strip("_"):
        return name.rsplit("_", 1)[0]
    return None


def split_by_expert(
    rois: Iterable[Any],
    *,
    by: str = "auto",
    experts: Sequence[str] | None = None,
    property_key: str = "expert",
    group_names: Mapping[int, str] | None = None,
    exclude: Sequence[str] = ("consensus", "prediction"),
) -> dict[str, list]:
    """Sort ROIs by expert.

    Parameters
    ----------
    rois
        ``roifile.ImagejRoi`` objects (e.g. from :func:`pull_rois`).
    by
        ``"property"`` (the ROI property ``property_key``), ``"group"`` (the ROI group, 1-255),
        ``"prefix"`` (the name before the first ``:``, else before the last ``_``: ``expertA:0001``,
        ``expertA_0001``), or ``"auto"``: for each ROI its property, else its name prefix, else its group.
    experts
        Known expert names: with ``by="prefix"`` a name must start with ``<expert>:`` or ``<expert>_``; the
        result is in this order and lists every one of them (possibly with no ROI).
    property_key
        The property that names the expert.
    group_names
        Group number → expert name (default ``group<n>``).
    exclude
        Experts to leave out, and ROIs named ``<x>:...``/``<x>_...`` for them (by default ``consensus`` and
        ``prediction``: the outlines :func:`consensus` and :func:`predict` push).

    Returns
    -------
    dict
        expert → list of ROIs, experts in order of first appearance (or of ``experts``).

    Raises
    ------
    ValueError
        When a ROI has no expert by the chosen rule (the message shows examples and the rules).
    """
    rois = list(rois)
    if by not in ("auto", "property", "group", "prefix"):
        raise ValueError(f"by must be 'auto', 'property', 'group' or 'prefix'; got {by!r}")
    skip = tuple(f"{x}:" for x in exclude) + tuple(f"{x}_" for x in exclude)
    out: dict[str, list] = {e: [] for e in experts} if experts else {}
    unassigned = []
    for r in rois:
        if skip and (r.name or "").startswith(skip):
            continue
        if by == "auto":
            e = None
            for rule in ("property", "prefix", "group"):
                e = _expert_of(r, rule, experts, property_key, group_names)
                if e is not None:
                    break
        else:
            e = _expert_of(r, by, experts, property_key, group_names)
        if e is not None and e in exclude:
            continue
        if e is None:
            unassigned.append(r)
            continue
        out.setdefault(e, []).append(r)
    if unassigned:
        shown = ", ".join(repr(r.name or "(no name)") for r in unassigned[:5])
        raise ValueError(
            f"{len(unassigned)} of {len(rois)} ROIs have no expert by {by!r} (e.g. {shown}); name them "
            f"'<expert>:<n>' or '<expert>_<n>', set the ROI group or the property {property_key!r}, or give "
            "one RoiSet per expert"
        )
    return out


def _shape2d(shape: Any) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (Y, X); got {shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"shape must be (Y, X) with Y, X >= 1; got {shape!r}")
    return h, w


def rasterize(rois: Sequence[Any], shape: tuple[int, int]) -> np.ndarray:
    """Fill ROIs into a label image with ImageJ itself (``ImageProcessor.fill(Roi)``).

    ROI ``i`` becomes label ``i + 1``; later ROIs overwrite earlier ones where they overlap. Line and point
    ROIs enclose no area and are skipped (a warning is logged).

    Parameters
    ----------
    rois
        ``roifile.ImagejRoi`` or ``ij.gui.Roi`` objects.
    shape
        ``(Y, X)`` of the image.

    Returns
    -------
    numpy.ndarray
        int32 ``(Y, X)``, 0 = background.
    """
    h, w = _shape2d(shape)
    _java()
    jrois = [to_java_roi(r) for r in rois]
    n = len(jrois)
    bits = 16 if n <= MAX_UINT16_LABEL else 32  # (ImageJ fills labels above 65,535 into a float image)
    ip = _cls("ij.process.ShortProcessor" if bits == 16 else "ij.process.FloatProcessor")(w, h)
    skipped = 0
    for i, r in enumerate(jrois):
        if not r.isArea():
            skipped += 1
            continue
        ip.setValue(float(i + 1))
        ip.fill(r)
    if skipped:
        logger.warning("%d of %d ROIs are lines or points and were not rasterised", skipped, n)
    return _pixels(ip.getPixels(), bits).reshape(h, w).astype(np.int32)


def _read_roi_file(path: str | os.PathLike) -> list:
    return list(read_rois(path))


def pull_experts(
    imp: Any,
    *,
    source: str = "overlay",
    roisets: Mapping[str, str | os.PathLike] | None = None,
    by: str = "auto",
    experts: Sequence[str] | None = None,
    property_key: str = "expert",
    group_names: Mapping[int, str] | None = None,
    exclude: Sequence[str] = ("consensus", "prediction"),
) -> dict[str, np.ndarray]:
    """The experts' annotations of an image as label images, rasterised by ImageJ.

    Parameters
    ----------
    imp
        The image (its size is the size of the label images; its overlay is read for ``source="overlay"``).
    source
        ``"overlay"`` or ``"roi_manager"``; ignored when ``roisets`` is given.
    roisets
        Expert → RoiSet ``.zip`` / ``.roi`` / overlay TIFF: one file per expert.
    by, experts, property_key, group_names, exclude
        How to tell the experts apart in one set of ROIs (see :func:`split_by_expert`).

    Returns
    -------
    dict
        expert → int32 ``(Y, X)`` label image (ROI ``i`` of that expert is label ``i + 1``). Stack them for
        the consensus functions: ``np.stack([m > 0 for m in result.values()])``.
    """
    _check_imp(imp)
    shape = (int(imp.getHeight()), int(imp.getWidth()))
    if roisets is not None:
        groups = {str(e): _read_roi_file(p) for e, p in roisets.items()}
    else:
        groups = split_by_expert(pull_rois(imp, source=source), by=by, experts=experts,
                                 property_key=property_key, group_names=group_names, exclude=exclude)
    if not groups:
        raise ValueError(
            f"image {str(imp.getTitle())!r} has no expert ROIs in its {source.replace('_', ' ')}"
        )
    return {e: rasterize(r, shape) for e, r in groups.items()}
