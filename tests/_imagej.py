"""ImageJ 1 (``ij.jar``) in-process through JPype, as the reference in tests. Not collected by pytest.

The JVM is started once per test session (JPype cannot restart it), with ``convertStrings=False``.
"""

from __future__ import annotations

import types

import numpy as np

_IJ: types.SimpleNamespace | None = None


def start(jar: str) -> types.SimpleNamespace:
    """Start the JVM with ``jar`` on the class path (once) and return the ImageJ classes and helpers."""
    global _IJ
    if _IJ is not None:
        return _IJ
    import jpype

    if not jpype.isJVMStarted():
        jpype.startJVM(classpath=[jar], convertStrings=False)
    try:
        IJ = jpype.JClass("ij.IJ")
    except TypeError as exc:  # pragma: no cover - a JVM started elsewhere without ij.jar
        raise RuntimeError(f"a JVM was started without {jar} on its class path") from exc
    JArray, JByte = jpype.JArray, jpype.JByte
    ns = types.SimpleNamespace(
        jpype=jpype,
        IJ=IJ,
        RoiDecoder=jpype.JClass("ij.io.RoiDecoder"),
        RoiEncoder=jpype.JClass("ij.io.RoiEncoder"),
        ByteProcessor=jpype.JClass("ij.process.ByteProcessor"),
        ShortProcessor=jpype.JClass("ij.process.ShortProcessor"),
        ShapeRoi=jpype.JClass("ij.gui.ShapeRoi"),
        PolygonRoi=jpype.JClass("ij.gui.PolygonRoi"),
        OvalRoi=jpype.JClass("ij.gui.OvalRoi"),
        Roi=jpype.JClass("ij.gui.Roi"),
        JFloat=jpype.JFloat,
        JArray=JArray,
    )

    def decode(data: bytes):
        """A Java Roi from ROI bytes (``RoiDecoder.openFromByteArray``)."""
        return ns.RoiDecoder.openFromByteArray(JArray(JByte)(np.frombuffer(data, dtype=np.int8)))

    def encode(jroi) -> bytes:
        return bytes(np.array(ns.RoiEncoder.saveAsByteArray(jroi), dtype=np.int8).view(np.uint8))

    def fill(roi, shape) -> np.ndarray:
        """``ByteProcessor.fill(Roi)`` of a roifile ROI, as a (Y, X) bool array."""
        ip = ns.ByteProcessor(int(shape[1]), int(shape[0]))
        ip.setValue(255.0)
        ip.fill(decode(roi.tobytes()))
        return np.array(ip.getPixels(), dtype=np.int8).reshape(shape) != 0

    def fill_labels(rois, shape) -> np.ndarray:
        """ROI i filled with value i + 1 on a ShortProcessor, later ROIs on top."""
        ip = ns.ShortProcessor(int(shape[1]), int(shape[0]))
        for i, roi in enumerate(rois):
            ip.setValue(float(i + 1))
            ip.fill(decode(roi.tobytes()))
        px = np.array(ip.getPixels(), dtype=np.int16).view(np.uint16)
        return px.reshape(shape).astype(np.int32)

    ns.decode, ns.encode, ns.fill, ns.fill_labels = decode, encode, fill, fill_labels
    _IJ = ns
    return ns
