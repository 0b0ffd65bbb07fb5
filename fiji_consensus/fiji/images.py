"""numpy ↔ ImagePlus: arrays (or xarray DataArrays) to ``ij.ImagePlus`` hyperstacks and back, with their
calibration; the probability/uncertainty image as the CLI writes it; saving and showing an ImagePlus."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..style import uncertainty_lut
from ..uncertainty import MEASURE_RANGE
from . import jvm
from .jvm import _check_imp, _cls, _java, _require

@dataclass(frozen=True)
class Calibration:
    """Spatial and temporal calibration of an image (ImageJ's ``ij.measure.Calibration``).

    ``pixel_width`` is the size of a pixel along X, ``pixel_height`` along Y, ``pixel_depth`` along Z, all in
    ``unit``; ``frame_interval`` is in ``time_unit``.
    """

    pixel_width: float = 1.0
    pixel_height: float = 1.0
    pixel_depth: float = 1.0
    unit: str = "pixel"
    frame_interval: float = 0.0
    time_unit: str = "sec"

    def __post_init__(self) -> None:
        for name in ("pixel_width", "pixel_height", "pixel_depth"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {v!r}")
        if not (np.isfinite(self.frame_interval) and self.frame_interval >= 0):
            raise ValueError(f"frame_interval must be >= 0; got {self.frame_interval!r}")


_AXIS_NAMES = {
    "y": "Y", "row": "Y", "x": "X", "col": "X", "c": "C", "ch": "C", "channel": "C",
    "z": "Z", "pln": "Z", "plane": "Z", "t": "T", "time": "T",
}
_DTYPES = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}


def _default_axes(ndim: int) -> str:
    return {2: "YX", 3: "CYX", 4: "ZCYX", 5: "TZCYX"}.get(ndim, "")


def _xarray_parts(data: Any) -> tuple[np.ndarray, str, dict[str, float], str | None]:
    axes = ""
    for d in data.dims:
        a = _AXIS_NAMES.get(str(d).lower())
        if a is None:
            raise ValueError(
                f"image dims must be named from y/row, x/col, c/ch, z/pln, t/time; got {tuple(data.dims)}"
            )
        axes += a
    sizes: dict[str, float] = {}
    for d, a in zip(data.dims, axes):
        if a in "XYZT" and d in data.coords and data.sizes[d] > 1:
            c = np.asarray(data.coords[d].values, dtype=float)
            step = float(np.mean(np.diff(c)))
            if step > 0:
                sizes[a] = step
    unit = data.attrs.get("unit") if hasattr(data, "attrs") else None
    return np.asarray(data.values), axes, sizes, unit


def to_imageplus(
    image: Any,
    *,
    title: str = "image",
    axes: str | None = None,
    pixel_size: float | tuple[float, float] | None = None,
    unit: str | None = None,
    calibration: Calibration | None = None,
) -> Any:
    """Make an ``ij.ImagePlus`` of a numpy array (or an xarray ``DataArray``); pixels are copied once.

    Parameters
    ----------
    image
        uint8, uint16 or float32 (float64 is stored as float32, bool as uint8 0/255), shape ``(Y, X)``,
        ``(C, Y, X)`` or up to ``(T, Z, C, Y, X)`` as named by ``axes``. An ``xarray.DataArray`` gives axes
        from its dims (``y``/``row``, ``x``/``col``, ``c``/``ch``, ``z``/``pln``, ``t``/``time``), pixel sizes
        from its coordinates and the unit from ``attrs["unit"]``.
    title
        The image title.
    axes
        Letters from ``TZCYX`` in array order (any order, e.g. ``YXC``); default ``YX``, ``CYX``, ``ZCYX``,
        ``TZCYX``.
    pixel_size
        Pixel size in ``unit``: one number, or ``(y, x)``.
    unit
        Length unit, e.g. ``"um"`` (``"micron"``).
    calibration
        A full :class:`Calibration` (instead of ``pixel_size``/``unit``).

    Returns
    -------
    ij.ImagePlus
        A hyperstack (CompositeImage when there are several channels) when ``C``, ``Z`` or ``T`` > 1.

    Examples
    --------
    >>> imp = to_imageplus(np.zeros((2, 64, 64), np.uint16), pixel_size=0.5, unit="um")  # doctest: +SKIP
    >>> imp.getNChannels(), imp.getCalibration().pixelWidth                               # doctest: +SKIP
    (2, 0.5)
    """
    arr, axes, sizes, unit = _as_array(image, axes, unit)
    cal = _calibration_of(calibration, pixel_size, unit, sizes)
    imp = _new_imageplus(_planes_tzcyx(arr, axes), str(title))
    if cal is not None:
        _set_calibration(imp, cal)
    return imp


def _as_array(image: Any, axes: str | None, unit: str | None) -> tuple[np.ndarray, str, dict[str, float], str | None]:
    """Step 1 of :func:`to_imageplus`: the pixels in an ImageJ dtype, the axes (checked), the pixel sizes
    of an xarray's coordinates, the unit."""
    sizes: dict[str, float] = {}
    if type(image).__module__.startswith("xarray"):
        arr, xaxes, sizes, xunit = _xarray_parts(image)
        if axes is not None and axes.upper() != xaxes:
            raise ValueError(f"axes={axes!r} contradicts the DataArray's dims {tuple(image.dims)}")
        axes = xaxes
        unit = unit if unit is not None else xunit
    else:
        arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * np.uint8(255)
    elif arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in _DTYPES:
        raise ValueError(
            f"image dtype must be uint8, uint16 or float32 (ImageJ's 8/16/32-bit; float64 and bool are "
            f"converted); got {arr.dtype}: convert it first, e.g. image.astype(np.float32)"
        )
    axes = (axes or _default_axes(arr.ndim)).upper()
    if (
        len(axes) != arr.ndim
        or not {"Y", "X"} <= set(axes)
        or len(set(axes)) != len(axes)
        or not set(axes) <= set("TZCYX")
    ):
        raise ValueError(
            f"image must be (Y, X), (C, Y, X) or up to (T, Z, C, Y, X): axes are distinct letters of 'TZCYX' "
            f"including Y and X; "
            f"got shape {arr.shape} with axes {axes!r}"
        )
    if 0 in arr.shape:
        raise ValueError(f"image must not be empty; got shape {arr.shape}")
    return arr, axes, sizes, unit


def _calibration_of(calibration: Calibration | None, pixel_size: Any, unit: str | None,
                    sizes: dict[str, float]) -> Calibration | None:
    """Step 2 of :func:`to_imageplus`: the calibration asked for (or read off an xarray), None for none."""
    if calibration is not None:
        if pixel_size is not None or unit is not None:
            raise ValueError("give either calibration or pixel_size/unit, not both")
        return calibration
    if pixel_size is None and unit is None and not sizes:
        return None
    if pixel_size is None:
        py, px = sizes.get("Y", 1.0), sizes.get("X", 1.0)
    elif np.ndim(pixel_size) == 0:
        py = px = pixel_size
    elif np.ndim(pixel_size) == 1 and len(pixel_size) == 2:
        py, px = pixel_size
    else:
        raise ValueError(f"pixel_size must be a number or (y, x); got {pixel_size!r}")
    return Calibration(pixel_width=float(px), pixel_height=float(py), pixel_depth=sizes.get("Z", 1.0),
                       unit=unit or "pixel", frame_interval=sizes.get("T", 0.0))


def _planes_tzcyx(arr: np.ndarray, axes: str) -> np.ndarray:
    """Step 3 of :func:`to_imageplus`: the array in ImageJ's order ``(T, Z, C, Y, X)`` (channels vary fastest
    in its stack), missing axes of length 1."""
    full = "TZCYX"
    missing = [a for a in full if a not in axes]
    arr5 = arr.reshape(arr.shape + (1,) * len(missing))
    return np.transpose(arr5, [(axes + "".join(missing)).index(a) for a in full])


def _new_imageplus(arr5: np.ndarray, title: str) -> Any:
    """Step 4 of :func:`to_imageplus`: one processor per plane (pixels copied once), a hyperstack (a
    CompositeImage with several channels) when there is more than one plane."""
    jpype = _java()
    nt, nz, nc, h, w = arr5.shape
    planes = arr5.reshape(nt * nz * nc, h, w)
    bits = _DTYPES[arr5.dtype]
    if bits == 8:
        jtype, proc, view = jpype.JByte, _cls("ij.process.ByteProcessor"), np.int8
    elif bits == 16:
        jtype, proc, view = jpype.JShort, _cls("ij.process.ShortProcessor"), np.int16
    else:
        jtype, proc, view = jpype.JFloat, _cls("ij.process.FloatProcessor"), np.float32
    ImagePlus = _cls("ij.ImagePlus")
    stack = _cls("ij.ImageStack")(w, h)
    for plane in planes:
        pix = jpype.JArray(jtype)(np.ascontiguousarray(plane).ravel().view(view))
        ip = proc(w, h, pix, None) if bits == 16 else proc(w, h, pix)  # (constructors set min/max)
        if len(planes) == 1:
            return ImagePlus(title, ip)
        stack.addSlice(ip)
    imp = ImagePlus(title, stack)
    imp.setDimensions(nc, nz, nt)
    if nc > 1:
        CompositeImage = _cls("ij.CompositeImage")
        imp = CompositeImage(imp, CompositeImage.COMPOSITE)
        imp.resetDisplayRanges()
    imp.setOpenAsHyperStack(True)
    return imp


def _set_calibration(imp: Any, cal: Calibration) -> None:
    """Step 5 of :func:`to_imageplus`: the image's ``ij.measure.Calibration`` set from ``cal``."""
    jc = imp.getCalibration()
    jc.pixelWidth, jc.pixelHeight, jc.pixelDepth = cal.pixel_width, cal.pixel_height, cal.pixel_depth
    jc.setUnit(cal.unit)
    jc.frameInterval = cal.frame_interval
    jc.setTimeUnit(cal.time_unit)
    imp.setCalibration(jc)


def get_calibration(imp: Any) -> Calibration:
    """The :class:`Calibration` of an ``ij.ImagePlus``."""
    _check_imp(imp)
    c = imp.getCalibration()
    return Calibration(
        pixel_width=float(c.pixelWidth), pixel_height=float(c.pixelHeight), pixel_depth=float(c.pixelDepth),
        unit=str(c.getUnit()), frame_interval=float(c.frameInterval), time_unit=str(c.getTimeUnit()),
    )


def _pixels(jarr: Any, bits: int) -> np.ndarray:
    a = np.asarray(memoryview(jarr))
    if bits == 8:
        return a.view(np.uint8)
    if bits == 16:
        return a.view(np.uint16)
    if bits == 24:
        a = a.view(np.uint32)
        return np.stack([(a >> 16) & 0xFF, (a >> 8) & 0xFF, a & 0xFF], axis=-1).astype(np.uint8)
    return a.view(np.float32)


def from_imageplus(imp: Any, *, squeeze: bool = True, xarray: bool = False) -> Any:
    """The pixels of an ``ij.ImagePlus`` as a numpy array (a copy), in ``(T, Z, C, Y, X)`` order.

    Parameters
    ----------
    imp
        The image (8/16/32-bit, or RGB which gives a trailing axis of 3).
    squeeze
        Drop ``T``, ``Z`` and ``C`` when they are 1: a single plane is ``(Y, X)``, channels ``(C, Y, X)``.
    xarray
        Return an ``xarray.DataArray`` with dims ``t z c y x`` (those kept), coordinates from the
        calibration and ``attrs`` ``unit``, ``title`` (needs xarray installed).

    Examples
    --------
    >>> a = np.arange(12, dtype=np.float32).reshape(3, 4)
    >>> np.array_equal(from_imageplus(to_imageplus(a)), a)                  # doctest: +SKIP
    True
    """
    _check_imp(imp)
    bits = int(imp.getBitDepth())
    w, h = int(imp.getWidth()), int(imp.getHeight())
    nc, nz, nt = int(imp.getNChannels()), int(imp.getNSlices()), int(imp.getNFrames())
    stack = imp.getStack()
    n = int(stack.getSize())
    if n != nc * nz * nt:  # e.g. a stack whose dimensions were never set: treat as Z
        nc, nz, nt = 1, n, 1
    planes = [_pixels(stack.getPixels(k + 1), bits).reshape((h, w) + ((3,) if bits == 24 else ())) for k in range(n)]
    arr = np.stack(planes).reshape((nt, nz, nc, h, w) + ((3,) if bits == 24 else ()))
    axes = "TZCYX"
    if squeeze:
        keep = [i for i, s in enumerate(arr.shape[:3]) if s > 1]
        arr = arr.reshape(tuple(arr.shape[i] for i in keep) + arr.shape[3:])
        axes = "".join("TZC"[i] for i in keep) + "YX"
    if not xarray:
        return arr
    xr = _require("xarray", purpose="xarray output")
    cal = get_calibration(imp)
    step = {"X": cal.pixel_width, "Y": cal.pixel_height, "Z": cal.pixel_depth, "T": cal.frame_interval or 1.0}
    dims = [a.lower() for a in axes] + (["rgb"] if bits == 24 else [])
    coords = {a.lower(): np.arange(arr.shape[i]) * step[a] for i, a in enumerate(axes) if a in step}
    return xr.DataArray(arr, dims=dims, coords=coords,
                        attrs={"unit": cal.unit, "time_unit": cal.time_unit, "title": str(imp.getTitle())})


def _uncertainty_lut() -> Any:
    """The uncertainty colour map (:func:`fiji_consensus.style.uncertainty_lut`) as an ``ij.process.LUT``."""
    rgb = uncertainty_lut()
    jpype = _java()
    JB = jpype.JArray(jpype.JByte)
    return _cls("ij.process.LUT")(*(JB(rgb[c].view(np.int8)) for c in range(3)))


def probability_image(
    probability: Any,
    uncertainty: Any = None,
    *,
    image: Any = None,
    measure: str = "entropy",
    title: str = "probability",
    calibration: Calibration | None = None,
) -> Any:
    """Probability and uncertainty (and the image) as one float32 hyperstack, as ``fiji-consensus predict``
    writes ``overlays/<id>.tif``: channels ``image`` (gray), ``probability`` (green, 0..1) and
    ``uncertainty`` (cyan → yellow → red over the measure's absolute range, never rescaled per image).

    Parameters
    ----------
    probability
        ``(Y, X)`` mean foreground probability.
    uncertainty
        ``(Y, X)`` uncertainty map of ``measure``, or None.
    image
        ``(Y, X)`` image shown as the first channel, or None.
    measure
        The uncertainty measure (sets the display range: 0..1 bits for entropies, 0..0.5 for ``std``).
    title, calibration
        Title and calibration of the new image.

    Returns
    -------
    ij.ImagePlus
        A CompositeImage when there are several channels.
    """
    if measure not in MEASURE_RANGE:
        raise ValueError(f"measure must be one of {tuple(MEASURE_RANGE)}; got {measure!r}")
    planes, kinds = [], []
    for kind, p in (("image", image), ("probability", probability), ("uncertainty", uncertainty)):
        if p is not None:
            planes.append(np.asarray(p, np.float32))
            kinds.append(kind)
    if any(p.ndim != 2 or p.shape != planes[0].shape for p in planes):
        raise ValueError(
            f"image, probability and uncertainty must be (Y, X) of one shape; got {[p.shape for p in planes]}"
        )
    imp = to_imageplus(np.stack(planes) if len(planes) > 1 else planes[0], title=title, calibration=calibration)
    LutLoader, LUT = _cls("ij.plugin.LutLoader"), _cls("ij.process.LUT")
    for c, kind in enumerate(kinds):
        if kind == "image":
            lo, hi = float(planes[c].min()), float(planes[c].max())
            lut = LUT(LutLoader.getLut("grays"), lo, hi if hi > lo else lo + 1)
        elif kind == "probability":
            lut = LUT(LutLoader.getLut("green"), 0.0, 1.0)
        else:
            lut = _uncertainty_lut()
            lut.min, lut.max = 0.0, float(MEASURE_RANGE[measure])
        if len(planes) > 1:
            imp.setChannelLut(lut, c + 1)
            imp.setC(c + 1)
            imp.setDisplayRange(lut.min, lut.max)
        else:
            imp.getProcessor().setLut(lut)
            imp.setDisplayRange(lut.min, lut.max)
    if len(planes) > 1:
        imp.setC(1)
    return imp


def save_tiff(imp: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save an ImagePlus (with its overlay and calibration) as an ImageJ TIFF; never overwrites by default."""
    _check_imp(imp)
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass overwrite=True to replace it")
    p.parent.mkdir(parents=True, exist_ok=True)
    fs = _cls("ij.io.FileSaver")(imp)
    ok = fs.saveAsTiffStack(str(p)) if imp.getStackSize() > 1 else fs.saveAsTiff(str(p))
    if not ok:
        raise OSError(f"ImageJ could not save {p}")
    return p


def show(imp: Any) -> Any:
    """Show an image in the running ImageJ (a pyimagej UI, or ImageJ1's); an error when headless."""
    c = jvm.connection() or jvm.connect()
    _check_imp(imp)
    if c.headless or jvm._headless():
        raise RuntimeError("cannot show an image: Java runs headless (connect(headless=False) with a display)")
    if c.gateway is not None:
        c.gateway.ui().show(imp)
    else:
        imp.show()
    return imp


# ============================================================================================ macros
