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


# ============================================================================ ImageJ with its GUI under Xvfb


class Display:
    """An Xvfb display of its own (``Xvfb -displayfd``), for ImageJ windows and xdotool clicks."""

    def __init__(self) -> None:
        import os
        import shutil
        import subprocess

        for tool in ("Xvfb", "xdotool", "java"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} not found: run scripts/install-system-deps.sh (xvfb, xdotool, Java)")
        r, w = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                                     pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            number = f.readline().strip()
        if not number:
            self.proc.kill()
            raise RuntimeError("Xvfb did not start")
        self.name = f":{number}"
        self.env = {**os.environ, "DISPLAY": self.name, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def xdotool(self, *args: str) -> str:
        import subprocess

        r = subprocess.run(["xdotool", *args], capture_output=True, text=True, env=self.env, timeout=20)
        return r.stdout.strip()

    def windows(self) -> dict[str, str]:
        """Visible windows: id -> title."""
        ids = self.xdotool("search", "--onlyvisible", "--maxdepth", "1", "--name", ".").split()  # top level
        return {i: self.xdotool("getwindowname", i) for i in ids}

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


#: Windows of ImageJ itself (not dialogs); image windows are told apart by the test's own titles.
_NOT_DIALOGS = ("ImageJ", "Log", "ROI Manager", "Results", "Content window", "FocusProxy")


def _press(display: Display, wid: str, keys=(("key", "Return"),)) -> None:
    """Click into a window's corner (AWT takes keys only after a click) and send ``keys``."""
    import time

    geo = dict(ln.split("=", 1) for ln in display.xdotool("getwindowgeometry", "--shell", wid).splitlines())
    time.sleep(0.5)
    display.xdotool("mousemove", str(int(geo["X"]) + 5), str(int(geo["Y"]) + 5), "click", "1")
    time.sleep(0.3)
    for k in keys:
        display.xdotool(*k)


def run_gui(display: Display, ij_jar: str, home, macro, *, log, steps=(), open_images=(), timeout: int = 180,
            ijpath=None, driver_code: str | None = None, ignore: str = r"\.(tif|png|zip)$| - "):
    """Run ``macro`` as a user would: ImageJ with its GUI on ``display``, the macro started without arguments
    (so it shows its dialogs), each dialog answered by xdotool as ``steps`` say.

    ``steps`` is a sequence of ``(title_regex, actions)``: wait for a visible window whose title matches (None:
    any window but ImageJ's own and those whose title matches ``ignore``, e.g. images), click
    into it (focus; AWT takes keys only after a click), run the xdotool ``actions`` (lists of arguments; default
    press Return = OK), and wait until it has closed. A driver macro opens ``open_images`` first (a .zip: into the ROI Manager), runs the macro
    with ``runMacro`` (which returns ``[aborted]`` if the macro stops with an error), prints ``DRIVER <result>
    images=<n> rois=<ROI Manager count> title=<title>`` and saves the Log to ``log``. Returns ``(log text,
    titles of the dialogs handled)``.
    """
    import re
    import subprocess
    import time
    from pathlib import Path

    log = Path(log)
    driver = log.with_suffix(".driver.ijm")
    driver.write_text(driver_code or (
        'a = split(getArgument(), "\\n");\n'
        'for (i = 2; i < a.length; i++) { if (endsWith(a[i], ".zip")) roiManager("Open", a[i]); else open(a[i]); }\n'
        't = "none"; if (nImages > 0) t = getTitle();\n'
        'print("DRIVER_BEFORE images=" + nImages + " title=" + t);\n'
        'r = runMacro(a[0], "");\n'
        't = "none"; if (nImages > 0) t = getTitle();\n'
        'print("DRIVER " + r + " images=" + nImages + " rois=" + roiManager("count") + " title=" + t);\n'
        'File.saveString(getInfo("log"), a[1]);\n'), "ascii")
    arg = "\n".join([str(macro), str(log), *map(str, open_images)])
    cmd = ["java", f"-Duser.home={home}", "-jar", ij_jar]
    if ijpath is not None:
        cmd += ["-ijpath", str(ijpath)]
    cmd += ["-macro", str(driver), arg]
    log.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=display.env, text=True)
    handled: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for title_re, *rest in steps:
            actions = rest[0] if rest else [["key", "Return"]]
            wid = None
            while wid is None:
                if time.monotonic() > deadline or proc.poll() is not None or log.exists():
                    raise AssertionError(f"no window {title_re!r} appeared; windows: {display.windows()}; "
                                         f"handled: {handled}; log: {log.read_text('utf-8') if log.exists() else ''}")
                wins = display.windows()
                err = next((i for i, t in wins.items() if t in ("Macro", "Macro Error")), None)
                if err is not None and (title_re is None or not re.search(title_re, wins[err])):
                    _press(display, err)  # a macro error: dismiss it so the driver saves the Log
                    for _ in range(40):
                        if log.exists():
                            break
                        time.sleep(0.25)
                    raise AssertionError(f"a macro error instead of {title_re!r}; handled: {handled}; "
                                         f"log: {log.read_text('utf-8') if log.exists() else ''}")
                if title_re is None:  # any dialog: a window that is neither ImageJ's own nor an image
                    wid = next((i for i, t in wins.items() if t not in _NOT_DIALOGS and not re.search(ignore + "|^sun-awt", t)), None)
                else:
                    wid = next((i for i, t in wins.items() if re.search(title_re, t)), None)
                time.sleep(0.3)
            handled.append(display.xdotool("getwindowname", wid))
            _press(display, wid, [])
            for act in actions:
                display.xdotool(*act)
                time.sleep(0.2)
            while wid in display.windows():
                if time.monotonic() > deadline:
                    raise AssertionError(f"window {handled[-1]!r} did not close; windows: {display.windows()}")
                time.sleep(0.2)
        while not log.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                wins = display.windows()
                raise AssertionError(f"the macro did not finish; open windows: {wins}; handled: {handled}")
            time.sleep(0.3)
        time.sleep(0.3)
        return log.read_text("utf-8"), handled
    finally:
        proc.kill()
        proc.wait()
