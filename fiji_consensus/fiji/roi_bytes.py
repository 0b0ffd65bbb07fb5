"""ROIs between Python and Java through the ROI file format: ``roifile.ImagejRoi`` objects are written and read
by roifile's public encoder (``tobytes`` / ``frombytes``), Java ROIs by ImageJ's ``RoiEncoder`` /
``RoiDecoder``, so a ROI keeps its name, colours, group, position and properties both ways and ImageJ alone
decides what the bytes mean.

One faster path stays, for writing: :func:`styled_bytes` encodes the common kinds (polygons, traced
outlines, composite shapes, rectangles, ovals) with two precompiled structs, giving exactly roifile's bytes
(checked against the installed roifile once per process; any difference switches it off). It makes pushing
ROIs about 2x faster (``tests/benchmarks/bench_roi_encoder.py``: roifile's ``copy`` + ``tobytes`` per ROI is
most of the time of a push). Reading stays with roifile: a hand-written decoder was only 1.2-1.3x faster end
to end.
"""

from __future__ import annotations

import copy
import functools
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .jvm import _cls, _is_java, _java

logger = logging.getLogger(__name__)


def _roifile() -> Any:
    import roifile

    return roifile


def _rois_from_bytes(blobs: Iterable[bytes]) -> list:
    """``roifile.ImagejRoi`` objects of ROI bytes."""
    frombytes = _roifile().ImagejRoi.frombytes
    return [frombytes(b) for b in blobs]


def _java_rois_to_bytes(jrois: Sequence[Any]) -> list[bytes]:
    """``RoiEncoder.saveAsByteArray`` of each Java ROI, in one stream (one Java array comes back)."""
    if not jrois:
        return []
    bos = _cls("java.io.ByteArrayOutputStream")(max(1024, 256 * len(jrois)))
    enc = _cls("ij.io.RoiEncoder")(bos)
    write, size = enc.write, bos.size
    ends = []
    for j in jrois:
        write(j)
        ends.append(size())
    data = bytes(memoryview(bos.toByteArray()))
    starts = [0, *ends[:-1]]
    return [data[a:b] for a, b in zip(starts, ends)]


def _java_roi_decoder() -> Callable[[bytes], Any]:
    """A function: ROI bytes -> the ``ij.gui.Roi`` that ImageJ's ``RoiDecoder`` makes of them (None when it
    cannot). Made once per batch: looking the Java method up is most of the time of one call."""
    jpype = _java()
    decode, JBytes = _cls("ij.io.RoiDecoder").openFromByteArray, jpype.JArray(jpype.JByte)
    return lambda data: decode(JBytes(data))


def to_java_roi(roi: Any) -> Any:
    """A ``roifile.ImagejRoi`` as an ``ij.gui.Roi`` (through its bytes); a Java ``Roi`` is returned as is."""
    _java()
    if _is_java(roi, "ij.gui.Roi"):
        return roi
    if not isinstance(roi, _roifile().ImagejRoi):
        raise TypeError(f"roi must be a roifile.ImagejRoi or an ij.gui.Roi; got {type(roi).__name__}")
    jroi = _java_roi_decoder()(roi.tobytes())
    if jroi is None:
        raise ValueError(f"ImageJ could not decode ROI {roi.name!r} (roitype {roi.roitype})")
    return jroi


def from_java_roi(jroi: Any) -> Any:
    """An ``ij.gui.Roi`` as a ``roifile.ImagejRoi`` (through its bytes)."""
    _java()
    if not _is_java(jroi, "ij.gui.Roi"):
        raise TypeError(f"jroi must be an ij.gui.Roi; got {type(jroi).__name__}")
    return _rois_from_bytes(_java_rois_to_bytes([jroi]))[0]


def styled_bytes(r: Any, changes: dict[str, Any]) -> bytes:
    """The bytes of ``roifile.ImagejRoi`` ``r`` with the fields in ``changes`` replaced (``name``, ``props``,
    ``stroke_color``, ``fill_color``, ``stroke_width``, ``float_stroke_width``, ``group``); ``r`` is not
    changed."""
    encode = _fast_encoder()
    if encode is not None:
        data = encode(r, **{**_own_style(r), **changes})
        if data is not None:
            return data
    if changes:
        r = copy.copy(r)
        for k, v in changes.items():
            setattr(r, k, v)
    return r.tobytes()


def _own_style(r: Any) -> dict[str, Any]:
    return dict(name=r.name, props=r.props, stroke_color=r.stroke_color, fill_color=r.fill_color,
                stroke_width=r.stroke_width, float_stroke_width=r.float_stroke_width, group=r.group)


@functools.lru_cache(maxsize=None)
def _fast_encoder() -> Callable[..., bytes | None] | None:
    """:func:`_encode` if it gives exactly the installed roifile's bytes for :func:`_probes`, else None."""
    roifile = _roifile()
    try:
        for r in _probes(roifile):
            if _encode(r, **_own_style(r)) != r.tobytes():
                raise ValueError(f"differs from roifile {roifile.__version__} on ROI {r.name!r}")
    except Exception as exc:  # e.g. another roifile version: roifile encodes everything
        logger.debug("fast ROI encoder off (%s); using roifile", exc)
        return None
    return _encode


_H1 = struct.Struct(">4shBxhhhhH16xhi4s4shhBBhii")  # bytes 0..64: magic, version ... header2 offset
_H2 = struct.Struct(">4xiiiii4shBBifiii")  # the first 52 of header2's 64 bytes
_ZEROS12 = b"\x00" * 12
_POLY = frozenset((0, 4, 5, 7, 8, 9, 10))  # POLYGON FREELINE POLYLINE FREEHAND TRACED ANGLE POINT
_RECT, _OVAL = 1, 2
_SUBPIXEL = 128  # ROI_OPTIONS.SUB_PIXEL_RESOLUTION


def _encode(r: Any, *, name: str, props: str, stroke_color: bytes, fill_color: bytes, stroke_width: int,
            float_stroke_width: float, group: int) -> bytes | None:
    """``r.tobytes()`` with these fields replaced, for the common kinds; None for any other ROI (roifile
    then encodes it)."""
    rt, st, version = int(r.roitype), int(r.subtype), r.version
    n, opts = r.n_coordinates, int(r.options)
    if r.byteorder != ">" or st != 0 or r.counters is not None or n >= 65536 or group > 255:
        return None
    if rt in _POLY:
        ic, sc = r.integer_coordinates, r.subpixel_coordinates
        ext = b""
        if ic is not None:
            if ic.shape != (n, 2):
                return None
            ext = ic.astype(">i2", copy=False).tobytes(order="F")
        if sc is not None:
            if sc.shape != (n, 2):
                return None
            ext += sc.astype(">f4", copy=False).tobytes(order="F")
    elif rt in (_RECT, _OVAL):
        if version >= 223 and opts & _SUBPIXEL:  # a subpixel rectangle
            return None
        ext = b""
        if rt == _RECT and r.shape_roi_size > 0:
            if r.multi_coordinates is None:
                return None
            ext = r.multi_coordinates.astype(">f4", copy=False).tobytes()
    else:
        return None
    top, left, bottom, right = r.top, r.left, r.bottom, r.right
    if not all(-32768 <= v <= 32767 for v in (top, left, bottom, right)):
        return None
    h2 = 64 + len(ext)
    name_offset = h2 + 64 if name else 0
    props_offset = h2 + 64 + 2 * len(name) if props else 0
    try:
        head = _H1.pack(
            b"Iout", version, rt, top, left, bottom, right, n, stroke_width, r.shape_roi_size,
            stroke_color, fill_color, st, opts, r.arrow_style_or_aspect_ratio, r.arrow_head_size,
            r.rounded_rect_arc_size, r.position, h2,
        )
        head2 = _H2.pack(
            r.c_position, r.z_position, r.t_position, name_offset, len(name), r.overlay_label_color,
            r.overlay_font_size, group, r.image_opacity, r.image_size, float_stroke_width, props_offset,
            len(props), 0,
        )
    except struct.error:
        return None
    return b"".join((head, ext, head2, _ZEROS12, name.encode("utf-16-be"), props.encode("utf-16-be")))


def _probes(roifile: Any) -> list:
    """ROIs of every kind :func:`_encode` writes, with names, properties, colours and positions."""
    T = roifile.ROI_TYPE
    composite = roifile.ImagejRoi(  # a square with a square hole, as rois.labels_to_rois writes it
        roitype=T.RECT, name="A:0001", version=228, top=2, left=2, bottom=20, right=20, shape_roi_size=26,
        stroke_color=b"\xff\x56\xb4\xe9",
        multi_coordinates=np.array([0, 2, 2, 1, 20, 2, 1, 20, 20, 1, 2, 20, 4,
                                    0, 8, 8, 1, 8, 12, 1, 12, 12, 1, 12, 8, 4], np.float32))
    traced = roifile.ImagejRoi(roitype=T.TRACED, name="A:0002", version=228, top=22, left=5, bottom=28, right=9,
                               n_coordinates=4, integer_coordinates=np.array([[0, 0], [4, 0], [4, 6], [0, 6]],
                                                                             np.int32))
    sub = roifile.ImagejRoi.frompoints(np.array([[1.5, 2.25], [30.0, 3.0], [6.0, 32.5]], np.float32),
                                       name="sub\u00e9pixel \u6587", c=1, z=2, t=3)
    sub.properties = {"expert": "B", "uncertainty": "0.1250"}
    sub.group, sub.float_stroke_width, sub.fill_color = 7, 1.5, b"\x80\x10\x20\x30"
    rect = roifile.ImagejRoi(roitype=T.RECT, top=3, left=4, bottom=9, right=15, name="r")
    oval = roifile.ImagejRoi(roitype=T.OVAL, top=1, left=1, bottom=5, right=8, position=2)
    return [composite, traced, sub, rect, oval]
