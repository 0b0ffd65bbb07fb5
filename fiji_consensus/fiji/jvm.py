"""JVM start: connecting this process to ImageJ once (a pyimagej gateway, or plain ImageJ1 through JPype), and
the small helpers every other module of :mod:`fiji_consensus.fiji` uses to reach Java classes.

``import`` of this module imports no Java module; a JVM starts on the first call that needs one.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_EXTRA = "fiji"
DEBIAN_IJ_JAR = Path("/usr/share/java/ij.jar")


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


def _headless() -> bool:
    """True when the running JVM has no display (no windows, no ROI Manager)."""
    return bool(_cls("java.awt.GraphicsEnvironment").isHeadless())


def _roi_manager(create: bool = False) -> Any | None:
    """ImageJ's ROI Manager (None when headless, or when it is not open and ``create`` is false)."""
    if _headless():
        return None
    rm = _cls("ij.plugin.frame.RoiManager").getInstance()
    if rm is None and create:
        rm = _cls("ij.plugin.frame.RoiManager")()
    return rm
