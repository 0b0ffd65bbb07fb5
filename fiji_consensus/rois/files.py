"""ROI files: read RoiSet zips, ``.roi`` files and ImageJ TIFF overlays (:func:`read_rois`,
:func:`read_overlay`); write RoiSet zips (:func:`write_roiset`) and ImageJ TIFFs with an overlay
(:func:`write_imagej_tiff`)."""

from __future__ import annotations

import copy
import io
import logging
import math
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from roifile import ImagejRoi

from fiji_consensus._atomic import atomic_path

from ._base import _SUBPIXEL, SUPPORTED_TYPES, PathLike, RoiError, _describe_roi, _unsupported, roi_type_name
from .filling import _path_from_array

__all__ = ["read_rois", "read_overlay", "write_roiset", "write_imagej_tiff"]

logger = logging.getLogger(__name__)


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
        Replace an existing file; without it an existing ``path`` is a ``FileExistsError``.

    Returns
    -------
    pathlib.Path
        ``path``.
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
