"""The Java door: ImageJ/Fiji from Python, with ImageJ1 classes only.

Two ways in, one code path after that:

* a **pyimagej gateway** (``connect(ij)`` with a gateway from a user's script or napari-imagej, or
  ``connect(fiji_dir="Fiji.app")``, which starts one with pyimagej), or
* **plain ImageJ1** through JPype (``connect()``): ``ij.jar`` from ``ij_jar=``, the ``IJ_JAR`` environment
  variable (a jar, or an ImageJ/Fiji folder whose ``jars/ij-*.jar`` is used) or Debian's ``libij-java``.

Every image, ROI and overlay function below uses only ImageJ1 classes (``ij.ImagePlus``, processors,
``ij.gui.Roi``/``Overlay``, ``ij.io.RoiDecoder``/``RoiEncoder``), which are the same classes under a pyimagej
gateway, so the same code serves both. Java ROIs and :class:`roifile.ImagejRoi` objects are converted through
their bytes (``RoiEncoder`` / ``RoiDecoder.openFromByteArray``), the ROI file format, so a ROI keeps its name,
colours, group, position and properties both ways; ImageJ alone decides what the bytes mean. (For speed the
common ROI kinds are read and written without roifile's general code, giving exactly what roifile gives;
all ROIs of an overlay are encoded in one Java stream. 10,000 ROIs take about 0.2 s each way.)

``import fiji_consensus.fiji`` imports no Java module: jpype, scyjava and imagej are imported inside the
functions, and a JVM starts on the first call that needs one (``connect()`` with its defaults). A JVM can start
only once per process and cannot be restarted.

>>> from fiji_consensus import fiji                                          # doctest: +SKIP
>>> imp = fiji.to_imageplus(image, title="0001", pixel_size=0.5, unit="um")  # doctest: +SKIP
>>> fiji.consensus(imp, method="staple")   # the experts' ROIs are in imp's overlay  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import importlib
import logging
import os
import re
import shutil
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Calibration",
    "Connection",
    "connect",
    "connection",
    "find_ij_jar",
    "to_imageplus",
    "from_imageplus",
    "get_calibration",
    "to_java_roi",
    "from_java_roi",
    "pull_rois",
    "split_by_expert",
    "rasterize",
    "pull_experts",
    "push_rois",
    "push_labels",
    "push_consensus",
    "consensus",
    "predict",
    "probability_image",
    "save_tiff",
    "show",
    "install_macros",
    "write_macros",
    "macro_files",
    "macro_text",
    "model_summary",
    "MACROS",
    "TOOLSET",
]

logger = logging.getLogger(__name__)

_EXTRA = "fiji"
DEBIAN_IJ_JAR = Path("/usr/share/java/ij.jar")

#: The macros shipped in ``fiji_consensus/macros`` (installed into ``Fiji.app/plugins/Fiji_Consensus``).
MACROS = (
    "Next_Planned_Image.ijm",
    "Save_Expert_Annotations.ijm",
    "Compute_Consensus.ijm",
    "Train_Ensemble.ijm",
    "Predict_Ensemble.ijm",
    "Show_Results.ijm",
)
#: The toolset (installed as ``Fiji.app/macros/toolsets/Fiji Consensus.ijm``).
TOOLSET = "Fiji_Consensus_Toolset.ijm"
#: The one source of the macros' helper functions, appended to every macro when it is installed.
HELPERS = "helpers.ijm"
_HELPERS_MARKER = "// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----"
_TOOLSET_INSTALLED_NAME = "Fiji Consensus.ijm"
_PLUGINS_SUBDIR = "Fiji_Consensus"


def _require(module: str, *, package: str | None = None, purpose: str = "the Fiji bridge") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the Python package {package or module!r}, which is not installed: "
            f"pip install 'fiji-consensus[{_EXTRA}]'"
        ) from exc


# ============================================================================================ connecting


@dataclass(frozen=True)
class Connection:
    """How this process talks to ImageJ.

    Attributes
    ----------
    kind
        ``"pyimagej"`` (a pyimagej gateway: Fiji/ImageJ2) or ``"imagej1"`` (plain ImageJ1 through JPype).
    gateway
        The pyimagej gateway, or None on the ImageJ1 path.
    headless
        True when Java runs without a display (no windows, no ROI Manager).
    ij_jar
        The ``ij.jar`` the JVM was started with (ImageJ1 path), else None.
    fiji_dir
        The Fiji.app pyimagej was started from, else None.
    version
        ImageJ1's version (``IJ.getFullVersion()``), e.g. ``"1.53t99"``.
    """

    kind: str
    gateway: Any = field(default=None, repr=False)
    headless: bool = True
    ij_jar: Path | None = None
    fiji_dir: Path | None = None
    version: str = ""


_CONNECTION: Connection | None = None


def connection() -> Connection | None:
    """The current :class:`Connection`, or None if :func:`connect` has not run in this process."""
    return _CONNECTION


def _default_headless() -> bool:
    if sys.platform == "darwin":  # AWT needs the main thread there; pyimagej has its own way
        return True
    if sys.platform.startswith("win"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _jar_in_folder(folder: Path) -> Path | None:
    """``jars/ij-<version>.jar`` of a Fiji.app (newest version), or ``ij.jar`` of an ImageJ folder."""

    def version_key(p: Path) -> tuple:
        return tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in re.findall(r"\d+|[A-Za-z]+", p.stem[3:]))

    jars = sorted((folder / "jars").glob("ij-*.jar"), key=lambda p: (version_key(p), p.name))
    jars = [j for j in jars if re.fullmatch(r"ij-\d[\w.\-]*\.jar", j.name)]
    if jars:
        return jars[-1]
    if (folder / "ij.jar").is_file():
        return folder / "ij.jar"
    return None


def find_ij_jar(ij_jar: str | os.PathLike | None = None) -> Path:
    """Find the ``ij.jar`` for the ImageJ1 path.

    Looks at ``ij_jar`` (a jar, or an ImageJ/Fiji folder: its ``jars/ij-*.jar`` or ``ij.jar``), else at the
    ``IJ_JAR`` environment variable (the same), else at Debian's ``/usr/share/java/ij.jar`` (``apt-get install
    libij-java``). A jar that is asked for (``ij_jar`` or ``IJ_JAR``) and not found is an error, never
    silently replaced by another one.

    Raises
    ------
    FileNotFoundError
        Naming every place looked at.

    Examples
    --------
    >>> find_ij_jar("/usr/share/java/ij.jar")                       # doctest: +SKIP
    PosixPath('/usr/share/java/ij.jar')
    """
    tried: list[str] = []
    candidates: list[tuple[str, str | os.PathLike]] = []
    if ij_jar is not None:
        candidates.append(("ij_jar", ij_jar))
    elif os.environ.get("IJ_JAR"):
        candidates.append(("IJ_JAR", os.environ["IJ_JAR"]))
    if ij_jar is None and not os.environ.get("IJ_JAR"):
        candidates.append(("Debian libij-java", DEBIAN_IJ_JAR))
    for what, c in candidates:
        p = Path(c).expanduser()
        if p.is_file() and p.suffix.lower() == ".jar":
            return p.absolute()
        if p.is_dir():
            found = _jar_in_folder(p)
            if found is not None:
                return found.absolute()
            tried.append(f"{what}={p} (a folder without jars/ij-*.jar or ij.jar)")
        else:
            tried.append(f"{what}={p} (not found)")
        if what in ("ij_jar", "IJ_JAR"):  # an explicit choice is never silently replaced by another jar
            break
    raise FileNotFoundError(
        "no ij.jar found; looked at " + "; ".join(tried) + ". Install ImageJ (Debian: apt-get install "
        "libij-java), or pass ij_jar= / set IJ_JAR to an ij.jar or a Fiji.app folder"
    )


def _jvm_started() -> bool:
    jpype = sys.modules.get("jpype")
    return bool(jpype is not None and jpype.isJVMStarted())


def _check_fiji_dir(fiji_dir: str | os.PathLike) -> Path:
    p = Path(fiji_dir).expanduser()
    if not p.is_dir():
        raise ValueError(f"fiji_dir must be a Fiji.app folder; got {str(p)!r}, which is not a folder")
    if not (p / "jars").is_dir():
        raise ValueError(
            f"fiji_dir must be a Fiji.app folder (with a jars/ subfolder); got {str(p)!r}. For plain "
            "ImageJ1 without pyimagej use connect(ij_jar=...)"
        )
    return p.resolve()


def _java_home() -> str | None:
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        return None
    return str(Path(java).resolve().parent.parent)


def _start_pyimagej(fiji_dir: Path, headless: bool | None) -> Connection:
    # No ij.* class may be loaded before imagej.init() (pyimagej patches ImageJ1 classes at load time), and
    # pyimagej must start the JVM itself: refuse when one already runs, before importing anything.
    if _jvm_started():
        raise RuntimeError(
            "a JVM is already running in this process, so pyimagej cannot start Fiji: call "
            "connect(fiji_dir=...) before any other Java use, or pass an existing gateway: connect(ij)"
        )
    scyjava_config = _require("scyjava.config", package="scyjava", purpose="starting Fiji with pyimagej")
    # scyjava >= 1.10 downloads a JDK by default (fails offline); 'auto' fetches only when no Java is found
    # (pyimagej 1.8 crashes with 'never'), and JAVA_HOME spares scyjava's slow search for a JVM.
    home = _java_home()
    if home and not os.environ.get("JAVA_HOME"):
        os.environ["JAVA_HOME"] = home
    if hasattr(scyjava_config, "set_java_constraints"):  # (older scyjava never downloads a JDK)
        scyjava_config.set_java_constraints(fetch="auto")
    imagej = _require("imagej", package="pyimagej", purpose="starting Fiji with pyimagej")
    # Importing pyimagej makes imglyb ask scyjava for its helper jar from Maven, which needs the network even
    # with a local Fiji. A Fiji.app ships that jar in jars/: use it and resolve nothing from Maven.
    endpoints = getattr(scyjava_config, "endpoints", None)
    if endpoints is not None:
        if any((fiji_dir / "jars").glob("imglib2-imglyb-*.jar")):
            endpoints[:] = [e for e in endpoints if not str(e).startswith("net.imglib2:imglib2-imglyb")]
        elif endpoints:
            logger.warning("%s has no jars/imglib2-imglyb-*.jar: pyimagej will fetch %s from Maven (needs the "
                           "network); update Fiji to avoid it", fiji_dir, ", ".join(map(str, endpoints)))
    headless = _default_headless() if headless is None else headless
    try:
        gateway = imagej.init(str(fiji_dir), mode="headless" if headless else "interactive")
    except Exception as exc:
        raise RuntimeError(
            f"pyimagej could not start Fiji from {fiji_dir}: {type(exc).__name__}: {exc}. Is it a complete, "
            "up-to-date Fiji.app? For plain ImageJ1 without pyimagej use connect(ij_jar=...)"
        ) from exc
    if gateway is None:  # pyimagej logs the reason and returns None on some failures
        raise RuntimeError(f"pyimagej could not start Fiji from {fiji_dir} (see the log of the 'imagej' logger)")
    return Connection(
        kind="pyimagej", gateway=gateway, headless=headless, fiji_dir=fiji_dir, version=_ij_version()
    )


def _start_imagej1(ij_jar: str | os.PathLike | None, headless: bool | None) -> Connection:
    jpype = _require("jpype", package="jpype1", purpose="starting ImageJ from Python")
    if jpype.isJVMStarted():
        try:
            jpype.JClass("ij.ImagePlus")
        except Exception as exc:
            raise RuntimeError(
                "a JVM without ImageJ is already running in this process; a JVM cannot be restarted: "
                "call fiji.connect() before any other Java use"
            ) from exc
        gh = bool(jpype.JClass("java.awt.GraphicsEnvironment").isHeadless())
        if headless is not None and headless != gh:
            raise RuntimeError(f"the running JVM has headless={gh}; cannot switch to headless={headless}")
        return Connection(kind="imagej1", headless=gh, version=_ij_version())
    jar = find_ij_jar(ij_jar)
    headless = _default_headless() if headless is None else headless
    args = ["-Djava.awt.headless=true"] if headless else []
    try:
        jvm = jpype.getDefaultJVMPath()
    except Exception as exc:  # jpype.JVMNotFoundException
        raise RuntimeError(f"no Java found ({exc}); install a JDK (11 or newer) or set JAVA_HOME") from exc
    jpype.startJVM(jvm, *args, classpath=[str(jar)], convertStrings=False)
    logger.info("started ImageJ %s from %s (headless=%s)", _ij_version(), jar, headless)
    return Connection(kind="imagej1", headless=headless, ij_jar=jar, version=_ij_version())


def _ij_version() -> str:
    import jpype

    return str(jpype.JClass("ij.IJ").getFullVersion())


def _gateway_headless(ij: Any) -> bool:
    try:
        return bool(ij.ui().isHeadless())
    except Exception:
        return True


def connect(
    ij: Any = None,
    *,
    fiji_dir: str | os.PathLike | None = None,
    ij_jar: str | os.PathLike | None = None,
    headless: bool | None = None,
) -> Connection:
    """Connect this process to ImageJ, once; later calls return the same :class:`Connection`.

    Parameters
    ----------
    ij
        A pyimagej gateway that is already running (from ``imagej.init`` in a script, or napari-imagej).
    fiji_dir
        A Fiji.app folder: start a gateway with pyimagej (needs ``pip install 'fiji-consensus[fiji]'``).
        Must be the first Java use in the process.
    ij_jar
        Plain ImageJ1 through JPype with this ``ij.jar`` (or an ImageJ/Fiji folder). By default
        ``IJ_JAR`` or Debian's ``/usr/share/java/ij.jar`` (see :func:`find_ij_jar`).
    headless
        Start Java without a display. Default: headless unless ``DISPLAY`` is set (Linux).

    Give at most one of ``ij``, ``fiji_dir`` and ``ij_jar``. With none, plain ImageJ1 starts.

    Returns
    -------
    Connection

    Raises
    ------
    ValueError
        For conflicting or invalid arguments (checked before anything starts).
    RuntimeError
        When a JVM already runs and cannot serve the request (a JVM cannot be restarted).
    ImportError
        When jpype (ImageJ1) or pyimagej/scyjava (``fiji_dir``) is missing, naming the extra.

    Examples
    --------
    >>> conn = connect(headless=True)                                 # doctest: +SKIP
    >>> conn.kind, conn.version                                       # doctest: +SKIP
    ('imagej1', '1.53t99')
    """
    global _CONNECTION
    given = [n for n, v in (("ij", ij), ("fiji_dir", fiji_dir), ("ij_jar", ij_jar)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of ij, fiji_dir and ij_jar; got {' and '.join(given)}")
    if headless is not None and not isinstance(headless, bool):
        raise TypeError(f"headless must be True, False or None; got {headless!r}")
    if ij is not None:
        if not (hasattr(ij, "py") or hasattr(ij, "getVersion")):
            raise TypeError(f"ij must be a pyimagej gateway (from imagej.init); got {type(ij).__name__}")
        if _CONNECTION is not None and _CONNECTION.gateway is ij:
            return _CONNECTION
        _CONNECTION = Connection(kind="pyimagej", gateway=ij, headless=_gateway_headless(ij),
                                 version=_ij_version())
        return _CONNECTION
    fdir = _check_fiji_dir(fiji_dir) if fiji_dir is not None else None
    if _CONNECTION is not None:
        c = _CONNECTION
        if fdir is not None and c.fiji_dir != fdir:
            raise RuntimeError(
                f"already connected to ImageJ ({c.kind}, {c.fiji_dir or c.ij_jar}); a JVM cannot be restarted: "
                "connect(fiji_dir=...) must be the first Java use in a process"
            )
        if ij_jar is not None and c.ij_jar != find_ij_jar(ij_jar):
            raise RuntimeError(f"already connected with {c.ij_jar or c.kind}; cannot switch to {ij_jar}")
        if headless is not None and headless != c.headless:
            raise RuntimeError(f"already connected with headless={c.headless}; cannot switch to {headless}")
        return c
    if fdir is not None:
        _CONNECTION = _start_pyimagej(fdir, headless)
    else:
        _CONNECTION = _start_imagej1(ij_jar, headless)
    return _CONNECTION


@functools.lru_cache(maxsize=None)
def _cls(name: str) -> Any:
    import jpype

    return jpype.JClass(name)


def _java() -> Any:
    """Make sure ImageJ is reachable (connecting with the defaults if needed); return the jpype module."""
    if _CONNECTION is None:
        connect()
    import jpype

    return jpype


def _is_java(obj: Any, class_name: str) -> bool:
    if not _jvm_started():
        return False
    try:
        return isinstance(obj, _cls(class_name))
    except Exception:
        return False


def _check_imp(imp: Any, name: str = "imp") -> Any:
    _java()
    if not _is_java(imp, "ij.ImagePlus"):
        raise TypeError(f"{name} must be an ij.ImagePlus (see to_imageplus); got {type(imp).__name__}")
    return imp


# ============================================================================================ images


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
    # to ImageJ's order (T, Z, C, Y, X): channels vary fastest in its stack
    full = "TZCYX"
    missing = [a for a in full if a not in axes]
    arr5 = arr.reshape(arr.shape + (1,) * len(missing))
    arr5 = np.transpose(arr5, [(axes + "".join(missing)).index(a) for a in full])
    nt, nz, nc, h, w = arr5.shape
    planes = arr5.reshape(nt * nz * nc, h, w)
    jpype = _java()
    bits = _DTYPES[arr.dtype]
    if bits == 8:
        jtype, proc, view = jpype.JByte, _cls("ij.process.ByteProcessor"), np.int8
    elif bits == 16:
        jtype, proc, view = jpype.JShort, _cls("ij.process.ShortProcessor"), np.int16
    else:
        jtype, proc, view = jpype.JFloat, _cls("ij.process.FloatProcessor"), np.float32
    n = nt * nz * nc
    ImagePlus = _cls("ij.ImagePlus")
    stack = _cls("ij.ImageStack")(w, h)
    for k in range(n):
        pix = jpype.JArray(jtype)(np.ascontiguousarray(planes[k]).ravel().view(view))
        ip = proc(w, h, pix, None) if bits == 16 else proc(w, h, pix)  # (constructors set min/max)
        if n == 1:
            imp = ImagePlus(str(title), ip)
        else:
            stack.addSlice(ip)
    if n > 1:
        imp = ImagePlus(str(title), stack)
        imp.setDimensions(nc, nz, nt)
        if nc > 1:
            CompositeImage = _cls("ij.CompositeImage")
            imp = CompositeImage(imp, CompositeImage.COMPOSITE)
            imp.resetDisplayRanges()
        imp.setOpenAsHyperStack(True)
    cal = calibration
    if cal is not None and (pixel_size is not None or unit is not None):
        raise ValueError("give either calibration or pixel_size/unit, not both")
    if cal is None and (pixel_size is not None or unit is not None or sizes):
        if pixel_size is None:
            py, px = sizes.get("Y", 1.0), sizes.get("X", 1.0)
        elif np.ndim(pixel_size) == 0:
            py = px = pixel_size  # type: ignore[assignment]
        elif np.ndim(pixel_size) == 1 and len(pixel_size) == 2:  # type: ignore[arg-type]
            py, px = pixel_size  # type: ignore[misc]
        else:
            raise ValueError(f"pixel_size must be a number or (y, x); got {pixel_size!r}")
        cal = Calibration(pixel_width=float(px), pixel_height=float(py), pixel_depth=sizes.get("Z", 1.0),
                          unit=unit or "pixel", frame_interval=sizes.get("T", 0.0))
    if cal is not None:
        jc = imp.getCalibration()
        jc.pixelWidth, jc.pixelHeight, jc.pixelDepth = cal.pixel_width, cal.pixel_height, cal.pixel_depth
        jc.setUnit(cal.unit)
        jc.frameInterval = cal.frame_interval
        jc.setTimeUnit(cal.time_unit)
        imp.setCalibration(jc)
    return imp


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


# ============================================================================================ ROIs


def _roifile() -> Any:
    import roifile

    return roifile


# ---- ROI bytes, fast. Java's RoiEncoder/RoiDecoder remain the authority on what a ROI means; Python only reads
# and writes the ROI file format. roifile's general ``frombytes``/``tobytes`` cost 15-25 us per ROI (most of the
# time of pushing or pulling 10,000 ROIs), so the common kinds (polygon, freehand, traced, polyline, point ROIs,
# composite shapes, plain rectangles and ovals, no counters) are read and written here with precompiled structs,
# giving exactly what roifile gives: ``_codec()`` checks that once per process against the installed roifile
# and falls back to roifile for everything on any difference. Any other ROI always goes through roifile.
_H1 = struct.Struct(">hBxhhhhH16xhi4s4shhBBhii")  # bytes 4..64: version ... header2 offset
_H1_OUT = struct.Struct(">4shBxhhhhH16xhi4s4shhBBhii")
_H2 = struct.Struct(">4xiiiii4shBBifiii")  # the first 52 of header2's 64 bytes
_N_AT_18 = struct.Struct(">i")
_GROUP2 = struct.Struct(">H")
_ZEROS12 = b"\x00" * 12
_POLY = frozenset((0, 4, 5, 7, 8, 9, 10))  # POLYGON FREELINE POLYLINE FREEHAND TRACED ANGLE POINT
_RECT, _OVAL = 1, 2
_SUBPIXEL = 128  # ROI_OPTIONS.SUB_PIXEL_RESOLUTION


class _Codec:
    """roifile's enums and ImagejRoi defaults, for building ImagejRoi objects without its ``__init__``."""

    def __init__(self, roifile: Any) -> None:
        self.cls = roifile.ImagejRoi
        self.template = dict(vars(roifile.ImagejRoi()))
        self.types = {m.value: m for m in roifile.ROI_TYPE if m.value >= 0}
        self.subtypes = {m.value: m for m in roifile.ROI_SUBTYPE if m.value >= 0}
        self._options_cls = roifile.ROI_OPTIONS
        self._options: dict[int, Any] = {}

    def options(self, value: int) -> Any:
        o = self._options.get(value)
        if o is None:
            o = self._options[value] = self._options_cls(value)
        return o

    def tobytes(self, r: Any, *, name: str, props: str, stroke_color: bytes, fill_color: bytes,
                stroke_width: int, float_stroke_width: float, group: int) -> bytes | None:
        """``r.tobytes()`` with these fields replaced; None when roifile must do it."""
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
            head = _H1_OUT.pack(
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

    def frombytes(self, data: bytes) -> Any | None:
        """``ImagejRoi.frombytes(data)``; None when roifile must do it."""
        if len(data) < 64 or data[:4] != b"Iout":
            return None
        (version, rt, top, left, bottom, right, n, stroke_width, shape_roi_size, stroke, fill, st, opts,
         arrow_style, arrow_head, arc, position, h2) = _H1.unpack_from(data, 4)
        # (no coordinate unwrapping needed: roifile's rules leave these values alone)
        if top < -5000 or left < -5000 or bottom <= 0 or right <= 0:
            return None
        roitype, subtype = self.types.get(rt), self.subtypes.get(st)
        if roitype is None or subtype is None or st != 0:
            return None
        subpixel = version >= 222 and bool(opts & _SUBPIXEL)
        if n == 0:
            n = _N_AT_18.unpack_from(data, 18)[0]
        d = dict(self.template)
        if rt in _POLY:
            if 64 + n * (12 if subpixel else 4) > len(data):
                return None
            ic = np.ndarray((n, 2), ">i2", data, 64, order="F").astype(np.int32)
            ic[ic < 0] += 65536
            d["integer_coordinates"] = ic
            if subpixel:
                d["subpixel_coordinates"] = np.ndarray((n, 2), ">f4", data, 64 + n * 4, order="F").copy()
        elif rt in (_RECT, _OVAL):
            if version >= 223 and subpixel:
                return None
            if rt == _RECT and shape_roi_size > 0:
                if 64 + 4 * shape_roi_size > len(data):
                    return None
                d["multi_coordinates"] = np.ndarray(shape_roi_size, ">f4", data, 64).copy()
        else:
            return None
        d.update(version=version, roitype=roitype, subtype=subtype, options=self.options(opts), top=top,
                 left=left, bottom=bottom, right=right, n_coordinates=n, stroke_width=stroke_width,
                 shape_roi_size=shape_roi_size, stroke_color=stroke, fill_color=fill,
                 arrow_style_or_aspect_ratio=arrow_style, arrow_head_size=arrow_head, rounded_rect_arc_size=arc,
                 position=position)
        if 0 < h2 < len(data) - 52:
            (c, z, t, name_offset, name_length, label_color, font_size, group, opacity, image_size, fsw,
             props_offset, props_length, counters_offset) = _H2.unpack_from(data, h2)
            if counters_offset > 0:
                return None
            if version >= 229 and group == 0 and h2 + 54 <= len(data):
                group = _GROUP2.unpack_from(data, h2 + 52)[0]
            d.update(c_position=c, z_position=z, t_position=t, overlay_label_color=label_color,
                     overlay_font_size=font_size, group=group, image_opacity=opacity, image_size=image_size,
                     float_stroke_width=fsw)
            if name_offset > 0 and name_length > 0:
                end = name_offset + 2 * name_length
                if end > len(data):
                    return None
                d["name"] = data[name_offset:end].decode("utf-16-be")
            if props_offset > 0 and props_length > 0:
                end = props_offset + 2 * props_length
                if end > len(data):
                    return None
                d["props"] = data[props_offset:end].decode("utf-16-be")
        roi = object.__new__(self.cls)
        roi.__dict__.update(d)
        return roi


def _same_roi(a: Any, b: Any) -> bool:
    """Every field of two ImagejRoi equal (arrays by value and dtype)."""
    da, db = vars(a), vars(b)
    if da.keys() != db.keys():
        return False
    for k, va in da.items():
        vb = db[k]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if not (isinstance(va, np.ndarray) and isinstance(vb, np.ndarray) and va.dtype == vb.dtype
                    and va.shape == vb.shape and np.array_equal(va, vb)):
                return False
        elif type(va) is not type(vb) or va != vb:
            return False
    return True


def _own_style(r: Any) -> dict[str, Any]:
    return dict(name=r.name, props=r.props, stroke_color=r.stroke_color, fill_color=r.fill_color,
                stroke_width=r.stroke_width, float_stroke_width=r.float_stroke_width, group=r.group)


def _roi_bytes(r: Any) -> bytes:
    """``r.tobytes()`` of a roifile ROI."""
    codec = _codec()
    data = None if codec is None else codec.tobytes(r, **_own_style(r))
    return r.tobytes() if data is None else data


def _codec_probes(roifile: Any) -> list:
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


@functools.lru_cache(maxsize=None)
def _codec() -> _Codec | None:
    """The fast codec, if it gives exactly what the installed roifile gives on a set of probe ROIs."""
    roifile = _roifile()
    try:
        codec = _Codec(roifile)
        for r in _codec_probes(roifile):
            data = r.tobytes()
            mine = codec.tobytes(r, **_own_style(r))
            back = codec.frombytes(data)
            if mine != data or back is None or not _same_roi(back, roifile.ImagejRoi.frombytes(data)):
                raise ValueError(f"differs from roifile {roifile.__version__} on ROI {r.name!r}")
    except Exception as exc:  # e.g. another roifile version: use roifile throughout
        logger.debug("fast ROI codec off (%s); using roifile", exc)
        return None
    return codec


def _rois_from_bytes(blobs: Iterable[bytes]) -> list:
    """ImagejRoi objects from ROI bytes (as ``ImagejRoi.frombytes``)."""
    frombytes = _roifile().ImagejRoi.frombytes
    codec = _codec()
    if codec is None:
        return [frombytes(b) for b in blobs]
    fast = codec.frombytes
    out = []
    for b in blobs:
        r = fast(b)
        out.append(frombytes(b) if r is None else r)
    return out


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


def to_java_roi(roi: Any) -> Any:
    """A ``roifile.ImagejRoi`` as an ``ij.gui.Roi`` (through its bytes); a Java ``Roi`` is returned as is."""
    jpype = _java()
    if _is_java(roi, "ij.gui.Roi"):
        return roi
    if not isinstance(roi, _roifile().ImagejRoi):
        raise TypeError(f"roi must be a roifile.ImagejRoi or an ij.gui.Roi; got {type(roi).__name__}")
    jroi = _cls("ij.io.RoiDecoder").openFromByteArray(jpype.JArray(jpype.JByte)(_roi_bytes(roi)))
    if jroi is None:
        raise ValueError(f"ImageJ could not decode ROI {roi.name!r} (roitype {roi.roitype})")
    return jroi


def from_java_roi(jroi: Any) -> Any:
    """An ``ij.gui.Roi`` as a ``roifile.ImagejRoi`` (through its bytes)."""
    _java()
    if not _is_java(jroi, "ij.gui.Roi"):
        raise TypeError(f"jroi must be an ij.gui.Roi; got {type(jroi).__name__}")
    return _rois_from_bytes(_java_rois_to_bytes([jroi]))[0]


def _roi_manager(create: bool = False) -> Any | None:
    if bool(_cls("java.awt.GraphicsEnvironment").isHeadless()):
        return None
    rm = _cls("ij.plugin.frame.RoiManager").getInstance()
    if rm is None and create:
        rm = _cls("ij.plugin.frame.RoiManager")()
    return rm


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
        if bool(_cls("java.awt.GraphicsEnvironment").isHeadless()):
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
    ip = (_cls("ij.process.ShortProcessor") if n < 65536 else _cls("ij.process.FloatProcessor"))(w, h)
    skipped = 0
    for i, r in enumerate(jrois):
        if not r.isArea():
            skipped += 1
            continue
        ip.setValue(float(i + 1))
        ip.fill(r)
    if skipped:
        logger.warning("%d of %d ROIs are lines or points and were not rasterised", skipped, n)
    bits = 16 if n < 65536 else 32
    return _pixels(ip.getPixels(), bits).reshape(h, w).astype(np.int32)


def _read_roi_file(path: str | os.PathLike) -> list:
    from . import rois as _rois

    return list(_rois.read_rois(path))


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
    jpype = _java()
    _check_imp(imp)
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
    headless = bool(_cls("java.awt.GraphicsEnvironment").isHeadless())
    if roi_manager is True and headless:
        raise RuntimeError("roi_manager=True needs a display; Java runs headless here")
    ImagejRoi = _roifile().ImagejRoi
    decode = _cls("ij.io.RoiDecoder").openFromByteArray
    JBytes = jpype.JArray(jpype.JByte)
    Color = _cls("java.awt.Color")
    codec = _codec()
    merged_props: dict[str, str] = {}  # a ROI's props -> its props with ``properties`` added

    def with_props(old: str) -> str:
        new = merged_props.get(old)
        if new is None:
            scratch = ImagejRoi()
            scratch.props = old
            scratch.properties = {**(scratch.properties if old else {}), **props}
            new = merged_props[old] = scratch.props
        return new

    sw_int = int(round(stroke_width)) if stroke_width is not None else None
    sw_float = float(stroke_width) if stroke_width is not None and stroke_width != int(stroke_width) else None
    jrois = []
    for i, r in enumerate(rois):
        if isinstance(r, ImagejRoi):
            # the styled ROI's bytes, without copying or changing ``r``
            name = r.name
            if name_prefix:
                if not name:
                    name = f"{name_prefix}{i + 1:04d}"
                elif not name.startswith(name_prefix):
                    name = name_prefix + name
            styled = dict(
                name=name, props=with_props(r.props) if props else r.props,
                stroke_color=stroke if stroke is not None else r.stroke_color,
                fill_color=fill if fill is not None else r.fill_color,
                stroke_width=sw_int if sw_int is not None else r.stroke_width,
                float_stroke_width=sw_float if sw_float is not None else r.float_stroke_width,
                group=int(group) if group is not None else r.group,
            )
            data = None if codec is None else codec.tobytes(r, **styled)
            if data is None:
                r = copy.copy(r)
                for k, v in styled.items():
                    setattr(r, k, v)
                data = r.tobytes()
            j = decode(JBytes(data))
            if j is None:
                raise ValueError(f"ImageJ could not decode ROI {i} ({name!r}, roitype {r.roitype})")
        elif _is_java(r, "ij.gui.Roi"):
            j = r.clone()
            if name_prefix:
                nm = str(j.getName() or "")
                j.setName(nm if nm.startswith(name_prefix) else name_prefix + (nm or f"{i + 1:04d}"))
            if stroke is not None:
                j.setStrokeColor(Color(stroke[1], stroke[2], stroke[3], stroke[0]))
            if fill is not None:
                j.setFillColor(Color(fill[1], fill[2], fill[3], fill[0]))
            if stroke_width is not None:
                j.setStrokeWidth(float(stroke_width))
            if group is not None:
                j.setGroup(int(group))
            for k, v in props.items():
                j.setProperty(str(k), str(v))
        else:
            raise TypeError(f"ROI {i} must be a roifile.ImagejRoi or an ij.gui.Roi; got {type(r).__name__}")
        jrois.append(j)
    ov = None if replace else imp.getOverlay()
    if ov is None:
        ov = _cls("ij.gui.Overlay")()
    for j in jrois:
        ov.add(j)
    imp.setOverlay(ov)
    if roi_manager or (roi_manager is None and not headless):
        rm = _roi_manager(create=True)
        if replace:
            rm.reset()
        for j in jrois:
            rm.addRoi(j)
    return len(jrois)


def push_labels(imp: Any, labels: Any, **kwargs: Any) -> int:
    """Push the outlines of a label image (or a mask: its connected objects) as ROIs; see :func:`push_rois`.

    The outlines are made by :func:`fiji_consensus.rois.labels_to_rois` (the same ROIs as the CLI's files);
    ``name_prefix``, ``stroke_color`` and the other keywords are those of :func:`push_rois`.
    """
    from . import rois as _rois

    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be a (Y, X) label image or mask; got shape {arr.shape}")
    if arr.dtype == bool:
        from . import matching

        arr = matching.label_objects(arr)
    return push_rois(imp, _rois.labels_to_rois(arr), **kwargs)


def _palette() -> tuple[tuple[str, ...], str]:
    from .jobs import CONSENSUS_COLOR, EXPERT_COLORS

    return tuple(EXPERT_COLORS), CONSENSUS_COLOR


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
    palette, c_color = _palette()
    h, w = int(imp.getHeight()), int(imp.getWidth())
    n = 0
    first = True
    for k, (name, ann) in enumerate((experts or {}).items()):
        color = (colors or {}).get(name, palette[k % len(palette)])
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
                         stroke_color=consensus_color if consensus_color is not None else c_color,
                         replace=replace and first, roi_manager=roi_manager)
    return n


def consensus(
    imp: Any,
    *,
    method: str = "staple",
    threshold: float = 0.5,
    min_size: int = 0,
    min_votes: int | None = None,
    min_experts: int | None = None,
    iou_threshold: float = 0.5,
    source: str = "overlay",
    roisets: Mapping[str, str | os.PathLike] | None = None,
    by: str = "auto",
    experts: Sequence[str] | None = None,
    colors: Mapping[str, Any] | None = None,
    roi_manager: bool | None = None,
    return_result: bool = False,
) -> Any:
    """Consensus of the experts' ROIs of an open image, shown in its overlay; one call.

    Reads the experts' ROIs (:func:`pull_experts`), computes the consensus as ``fiji-consensus consensus``
    does, and replaces the overlay by each expert's outlines (one colour per expert) plus the consensus
    outlines (white, ``consensus:0001``...). Running it again on its output gives the same result (the
    consensus outlines are not taken for an expert).

    Parameters
    ----------
    imp
        The image (``ij.ImagePlus``), with the experts' ROIs in its overlay (or ROI Manager, or ``roisets``).
    method
        ``"staple"``, ``"majority"`` or ``"objects"``.
    threshold
        STAPLE posterior threshold.
    min_size
        Drop consensus objects smaller than this (pixels).
    min_votes, min_experts, iou_threshold
        Options of majority vote and object consensus (see :mod:`fiji_consensus.consensus`).
    source, roisets, by, experts
        Where the experts' ROIs are and how to tell them apart (see :func:`pull_experts`).
    colors, roi_manager
        See :func:`push_consensus`.
    return_result
        Also return a dict: ``experts``, ``masks`` (R, Y, X bool), ``consensus`` (bool), ``labels``,
        ``probability`` (STAPLE, else None), ``sensitivity``/``specificity`` (STAPLE).

    Returns
    -------
    ij.ImagePlus or (ij.ImagePlus, dict)
        The same image, its overlay replaced.

    Examples
    --------
    >>> imp = fiji.to_imageplus(image)                                          # doctest: +SKIP
    >>> fiji.push_consensus(imp, None, {"A": mask_a, "B": mask_b, "C": mask_c})  # doctest: +SKIP
    >>> imp, res = fiji.consensus(imp, return_result=True)                      # doctest: +SKIP
    """
    from . import consensus as cons
    from . import matching

    if method not in ("staple", "majority", "objects"):
        raise ValueError(f"method must be 'staple', 'majority' or 'objects'; got {method!r}")
    labels_by_expert = pull_experts(imp, source=source, roisets=roisets, by=by, experts=experts)
    names = list(labels_by_expert)
    if len(names) < 2:
        raise ValueError(f"a consensus needs at least 2 experts; found {len(names)}: {', '.join(names)}")
    masks = np.stack([labels_by_expert[e] > 0 for e in names])
    res: dict[str, Any] = {"experts": names, "masks": masks, "probability": None,
                           "sensitivity": None, "specificity": None}
    if method == "staple":
        st = cons.staple(masks)
        res.update(probability=np.asarray(st.probability, np.float32),
                   sensitivity=np.asarray(st.sensitivity, float), specificity=np.asarray(st.specificity, float))
        mask = res["probability"] > threshold
        labels = matching.label_objects(mask, min_size=min_size)
    elif method == "majority":
        mask = cons.majority_vote(masks, min_votes=min_votes)
        labels = matching.label_objects(mask, min_size=min_size)
    else:
        oc = cons.object_consensus(masks, min_experts=min_experts, iou_threshold=iou_threshold,
                                   min_size=min_size)
        labels = np.asarray(oc.labels, np.int32)
    res["labels"] = np.asarray(labels, np.int32)
    res["consensus"] = res["labels"] > 0
    push_consensus(imp, res["labels"], {e: labels_by_expert[e] for e in names}, colors=colors,
                   replace=True, roi_manager=roi_manager)
    imp.setProperty("fiji_consensus.method", method)
    return (imp, res) if return_result else imp


def predict(
    imp: Any,
    model: Any,
    *,
    tta: str | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    split: str = "none",
    measure: str = "entropy",
    channel: int | None = None,
    replace: bool = True,
    roi_manager: bool | None = None,
    return_result: bool = False,
) -> Any:
    """Run an ensemble on an open image and show its objects, stroked by their uncertainty, in the overlay.

    The objects are those ``fiji-consensus predict`` writes: the same names (``0007_u0.132``: object id and
    mean uncertainty, here prefixed ``prediction:``), the same colours (:func:`fiji_consensus.predict.
    uncertainty_color`: cyan = certain, yellow, red = maximally uncertain, on the measure's absolute scale)
    and the ROI property ``uncertainty``.

    Parameters
    ----------
    imp
        The image: one 2-D plane, or a multi-channel image with ``channel``.
    model
        What ``fiji-consensus predict --model`` accepts: an ensemble folder or a loaded
        :class:`fiji_consensus.nn.Ensemble` (run by :func:`fiji_consensus.nn.predict.predict` with tiling and
        test-time augmentation; needs the ``train`` extra), a bioimage.io package (``.zip``, ``rdf.yaml`` or its
        folder; several in a list are one ensemble; run by :func:`fiji_consensus.zoo.predict_packages`, needs the
        ``zoo`` extra), or any callable ``image (Y, X) float32 -> (M, Y, X)`` member probabilities (or ``(Y, X)``).
    tta
        Test-time augmentation: ``"none"``, ``"flips"`` or ``"dihedral"``; default as the CLI's: flips for an
        ensemble, none for packages (ours hold their views inside).
    threshold, min_size
        Foreground threshold on the mean probability and the smallest object (pixels); default the
        ensemble's (0.5 and 0 for a callable).
    split
        Watershed split of touching objects: ``"none"``, ``"distance"`` or ``"probability"``.
    measure
        The uncertainty that colours the objects (:data:`fiji_consensus.uncertainty.MEASURES`).
    channel
        0-based channel of a multi-channel image (ROIs are pushed for every channel).
    replace, roi_manager
        See :func:`push_rois` (``replace=False`` adds the objects to, e.g., a consensus overlay; the objects of
        an earlier ``predict`` on this image, named ``prediction:...``, are replaced, never doubled).
    return_result
        Also return a dict: ``probability`` (mean), ``uncertainty`` (``measure``), ``labels``, ``objects``
        (:data:`fiji_consensus.instances.OBJECT_COLUMNS` rows), ``object_uncertainty`` (mean per object),
        ``measure``, ``threshold``.

    Returns
    -------
    ij.ImagePlus or (ij.ImagePlus, dict)
        The same image with the objects in its overlay.

    Examples
    --------
    >>> fiji.predict(imp, "models/wue1")                                       # doctest: +SKIP
    >>> fiji.predict(imp, lambda x: np.stack([x / 255.0, x / 200.0]))          # doctest: +SKIP
    """
    from . import instances, uncertainty
    from . import rois as _rois
    from .predict import uncertainty_color

    _check_imp(imp)
    nc, nz, nt = int(imp.getNChannels()), int(imp.getNSlices()), int(imp.getNFrames())
    if nz * nt != 1 or int(imp.getBitDepth()) == 24:
        raise ValueError(
            f"predict needs a 2-D grayscale image (channels allowed); got {nz} slices, {nt} frames, "
            f"{int(imp.getBitDepth())}-bit"
        )
    if channel is not None and not (isinstance(channel, (int, np.integer)) and 0 <= channel < nc):
        raise ValueError(f"channel must be an int in 0..{nc - 1} (0-based); got {channel!r}")
    if nc > 1 and channel is None:
        raise ValueError(f"the image has {nc} channels; choose one with channel= (0-based)")
    image = np.asarray(from_imageplus(imp, squeeze=False)[0, 0, channel or 0], dtype=np.float32)
    if measure not in uncertainty.MEASURES:
        raise ValueError(f"measure must be one of {uncertainty.MEASURES}; got {measure!r}")
    paths = [model] if isinstance(model, (str, os.PathLike)) else model if isinstance(model, (list, tuple)) else None
    packages = None
    if paths is not None and paths and all(isinstance(m, (str, os.PathLike)) for m in paths):
        from .zoo import is_package

        kinds = [is_package(m) for m in paths]
        if all(kinds):  # one loader for what the CLI accepts: packages here, ensemble folders below
            from .zoo import load_package

            packages = [load_package(m) for m in paths]
        elif len(paths) == 1:
            from .nn import load_ensemble

            model = load_ensemble(paths[0])
        else:
            raise ValueError(f"several models must all be bioimage.io packages (.zip); got {[str(m) for m in paths]}")
    if packages is not None:
        from .zoo import predict_packages

        res = predict_packages(packages, image, tta=tta or "none", threshold=threshold, min_size=min_size,
                               split=split, measure=measure)
        prob, unc, labels, objects, thr = res.probability, res.uncertainty, res.labels, res.objects, res.threshold
    elif hasattr(model, "predict_members") and hasattr(model, "members"):
        from .nn.predict import predict as nn_predict

        res = nn_predict(model, image, tta=tta or "flips", threshold=threshold, min_size=min_size, split=split,
                         measure=measure)
        prob, unc, labels, objects, thr = res.probability, res.uncertainty, res.labels, res.objects, res.threshold
    elif callable(model):
        stack = np.asarray(model(image), dtype=np.float32)
        if stack.shape == image.shape:
            stack = stack[None]
        if stack.ndim != 3 or stack.shape[1:] != image.shape:
            raise ValueError(
                f"model must return (Y, X) or (M, Y, X) probabilities for a {image.shape} image; got {stack.shape}"
            )
        stats = uncertainty.ensemble_statistics(stack)
        prob, unc = stats["mean"], stats[measure]
        thr = 0.5 if threshold is None else float(threshold)
        labels = instances.label_instances(prob, threshold=thr, min_size=int(min_size or 0), split=split)
        objects = instances.object_table(labels, image=image, probability=prob, uncertainty=unc)
    else:
        raise TypeError(
            f"model must be an ensemble folder, a bioimage.io package, an Ensemble or a callable; got {type(model).__name__}"
        )
    names = {r["id"]: f"{r['id']:04d}_u{r['mean_uncertainty']:.3f}" for r in objects}
    rois = _rois.labels_to_rois(labels, names=names)
    for roi, r in zip(rois, objects):
        roi.stroke_color = _argb(uncertainty_color(r["mean_uncertainty"], measure), "stroke_color")
        roi.properties = {"uncertainty": f"{r['mean_uncertainty']:.4f}", "measure": measure}
    if not replace:  # an earlier prediction's objects are replaced (predicting twice must not double them)
        ov = imp.getOverlay()
        if ov is not None:
            for i in reversed(range(int(ov.size()))):
                if str(ov.get(i).getName() or "").startswith("prediction:"):
                    ov.remove(i)
    push_rois(imp, rois, name_prefix="prediction:", replace=replace, roi_manager=roi_manager)
    result = {"probability": prob, "uncertainty": unc, "labels": labels, "objects": objects,
              "object_uncertainty": np.array([r["mean_uncertainty"] for r in objects], float),
              "measure": measure, "threshold": thr}
    return (imp, result) if return_result else imp


def _uncertainty_lut(measure: str) -> Any:
    """The CLI's uncertainty colour map (cyan → yellow → red) as an ``ij.process.LUT`` over the measure's range."""
    from .predict import uncertainty_color
    from .uncertainty import MEASURE_RANGE

    top = MEASURE_RANGE[measure]
    rgb = np.array([[int(h[k:k + 2], 16) for k in (1, 3, 5)]
                    for h in (uncertainty_color(i / 255 * top, measure) for i in range(256))], np.uint8)
    jpype = _java()
    JB = jpype.JArray(jpype.JByte)
    return _cls("ij.process.LUT")(*(JB(rgb[:, c].view(np.int8)) for c in range(3)))


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
    from .uncertainty import MEASURE_RANGE

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
            lut = _uncertainty_lut(measure)
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
    c = connect() if _CONNECTION is None else _CONNECTION
    _check_imp(imp)
    if c.headless or bool(_cls("java.awt.GraphicsEnvironment").isHeadless()):
        raise RuntimeError("cannot show an image: Java runs headless (connect(headless=False) with a display)")
    if c.gateway is not None:
        c.gateway.ui().show(imp)
    else:
        imp.show()
    return imp


# ============================================================================================ macros


def macro_files() -> dict[str, Path]:
    """The shipped macro sources: file name → path in the installed package (the macros, the toolset and
    :data:`HELPERS`). A macro's source ends with a marker line where :func:`macro_text` appends the helpers."""
    from importlib import resources

    root = Path(str(resources.files("fiji_consensus") / "macros"))
    return {name: root / name for name in (*MACROS, TOOLSET, HELPERS)}


def macro_text(name: str) -> str:
    """The installable text of a shipped macro: its source with the helper block (:data:`HELPERS`, kept once)
    appended in place of its marker line, so that the file runs on its own in ImageJ and Fiji.

    Parameters
    ----------
    name
        One of :data:`MACROS` or :data:`TOOLSET` (returned as is: the toolset needs no helpers).

    Examples
    --------
    >>> "function fcPython()" in macro_text("Compute_Consensus.ijm")
    True
    """
    files = macro_files()
    if name not in (*MACROS, TOOLSET):
        raise ValueError(f"name must be one of {(*MACROS, TOOLSET)}; got {name!r}")
    for n in (name, HELPERS):
        if not files[n].is_file():
            raise FileNotFoundError(f"shipped macro {files[n]} is missing: reinstall fiji-consensus")
    text = files[name].read_text("ascii")
    if name == TOOLSET:
        return text
    lines = text.splitlines(keepends=True)
    marks = [i for i, ln in enumerate(lines) if ln.rstrip("\r\n") == _HELPERS_MARKER]
    if len(marks) != 1:
        raise ValueError(f"{files[name]} must end with the marker line {_HELPERS_MARKER!r} once; got {len(marks)}")
    return "".join(lines[:marks[0]]) + files[HELPERS].read_text("ascii")


def _install_plan(root: Path) -> dict[Path, str]:
    """Target path → text of every installed file under a Fiji.app-like ``root``."""
    plan = {root / "plugins" / _PLUGINS_SUBDIR / name: macro_text(name) for name in MACROS}
    plan[root / "macros" / "toolsets" / _TOOLSET_INSTALLED_NAME] = macro_text(TOOLSET)
    return plan


def _write_plan(plan: dict[Path, str], overwrite: bool) -> list[Path]:
    differ = [dst for dst, text in plan.items() if dst.exists() and dst.read_bytes() != text.encode("ascii")]
    if differ and not overwrite:
        raise FileExistsError(
            "these files exist with other content (pass overwrite=True / --overwrite to replace them): "
            + ", ".join(str(d) for d in differ)
        )
    written = []
    for dst, text in plan.items():
        data = text.encode("ascii")
        if dst.exists() and dst.read_bytes() == data:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
        written.append(dst)
    return written


def install_macros(fiji_dir: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Install the macros and the toolset into a Fiji.app (or ImageJ) folder.

    The macros go to ``<fiji_dir>/plugins/Fiji_Consensus/`` (menu *Plugins > Fiji Consensus* after a
    restart or *Help > Refresh Menus*), the toolset to ``<fiji_dir>/macros/toolsets/Fiji Consensus.ijm``
    (toolbar ``>>`` menu). Each macro is written with the helper block appended (:func:`macro_text`). Files
    that exist with other content are never replaced silently.

    Parameters
    ----------
    fiji_dir
        The Fiji.app (or ImageJ) folder: it must hold ``jars/``, ``plugins/``, ``macros/`` or ``ij.jar``.
    overwrite
        Replace files that differ from the shipped ones.

    Returns
    -------
    list of Path
        The files written (files already identical are not rewritten and not listed).

    Raises
    ------
    FileExistsError
        When a file differs and ``overwrite`` is false (nothing is written then).
    """
    root = Path(fiji_dir).expanduser()
    if not root.is_dir() or not any((root / x).exists() for x in ("jars", "plugins", "ij.jar", "macros")):
        raise ValueError(
            f"fiji_dir must be a Fiji.app or ImageJ folder (with jars/, plugins/, macros/ or ij.jar); got {str(root)!r}"
        )
    return _write_plan(_install_plan(root), overwrite)


def write_macros(out: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Write the installable macros into ``out`` laid out as in a Fiji.app, for copying by hand:
    ``out/plugins/Fiji_Consensus/*.ijm`` and ``out/macros/toolsets/Fiji Consensus.ijm`` (copy ``out``'s
    ``plugins`` and ``macros`` folders into Fiji.app). ``out`` is created if needed.

    Returns the files written; raises FileExistsError for files with other content unless ``overwrite``.
    """
    root = Path(out).expanduser()
    if root.exists() and not root.is_dir():
        raise ValueError(f"out must be a folder; got the file {str(root)!r}")
    return _write_plan(_install_plan(root), overwrite)


def model_summary(model: str | os.PathLike) -> dict[str, Any]:
    """An ensemble's validation scores next to the experts', and whether it is useful, from its
    ``ensemble.json`` (what Train Ensemble shows when training ends).

    Returns
    -------
    dict
        ``val_roi_f1`` and ``val_dice`` (mean over members; NaN if not validated), ``expert_roi_f1``
        (median over validation images and experts of each expert's ROI-F1 against the consensus; NaN without
        experts), ``useless`` (True when the validation ROI-F1 or Dice is below 0.2, or the ROI-F1 below half
        the experts'), ``text`` (one sentence, with a warning when useless).
    """
    path = Path(model).expanduser()
    meta_file = path / "ensemble.json" if path.is_dir() else path
    if not meta_file.is_file() or meta_file.name != "ensemble.json":
        raise ValueError(f"model must be an ensemble folder holding ensemble.json; got {str(path)!r}")
    import json

    meta = json.loads(meta_file.read_text("utf-8"))
    members = meta.get("members") or []

    def mean(key: str) -> float:
        vals = [float(m[key]) for m in members if isinstance(m.get(key), (int, float))]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    f1, dice = mean("val_roi_f1"), mean("val_dice")
    per_image = (meta.get("provenance") or {}).get("expert_roi_f1") or {}
    val_ids = {i for m in members for i in (m.get("val_ids") or [])}
    experts = [float(v) for iid, scores in per_image.items() if not val_ids or iid in val_ids
               for v in (scores or {}).values() if isinstance(v, (int, float)) and np.isfinite(v)]
    ef1 = float(np.median(experts)) if experts else float("nan")
    useless = bool((np.isfinite(f1) and f1 < 0.2) or (np.isfinite(dice) and dice < 0.2)
                   or (np.isfinite(f1) and np.isfinite(ef1) and f1 < 0.5 * ef1))
    fmt = lambda v: "n/a" if not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
    text = (f"Validation (images each member did not train on): ROI-F1 {fmt(f1)}, Dice {fmt(dice)}; "
            f"experts against the consensus: ROI-F1 {fmt(ef1)} (median).")
    if useless:
        text += (" WARNING: this model is not useful yet (it misses or invents most objects): train longer "
                 "(more minutes or iterations), on more annotated images, or fine-tune a zoo model.")
    return {"val_roi_f1": round(f1, 4) if np.isfinite(f1) else None,
            "val_dice": round(dice, 4) if np.isfinite(dice) else None,
            "expert_roi_f1": round(ef1, 4) if np.isfinite(ef1) else None,
            "useless": useless, "text": text, "model": str(meta_file.parent)}
