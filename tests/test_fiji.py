"""The Java door (fiji.py) in real ImageJ 1.53t: in-process JPype + ij.jar, headless.

One JVM per process: in-process tests share the session fixture ``ij``; tests that configure a JVM run in a
subprocess of their own. The pyimagej path cannot finish here: no Fiji (ImageJ2) can be installed offline. It
is tested twice: with the real scyjava and pyimagej on a fake Fiji.app holding the real ij.jar (pyimagej starts
the JVM, then fails for want of ImageJ2, as it must), and, to see what happens after ``imagej.init`` returns,
with a stand-in ``imagej`` module whose ``init`` only records how it was called and starts a real JVM with
the real ij.jar (acceptable here because no Fiji can start offline; the ImageJ side is never mocked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile

from fiji_consensus import datasets, fiji, matching, rois

REPO = Path(__file__).resolve().parents[1]
CROP = ("0015", slice(128, 320), slice(128, 320))  # 192 x 192, ~25 objects per expert


def _run_py(code: str, *, env: dict | None = None, timeout: int = 60, display: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", textwrap.dedent(code)]
    if display:
        cmd = ["xvfb-run", "-a", *cmd]
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if not display:
        e.pop("DISPLAY", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


@pytest.fixture(scope="session")
def ij(ij_jar):
    return fiji.connect(ij_jar=ij_jar, headless=True)


@pytest.fixture(scope="module")
def sample_crop():
    s = datasets.load_sample()
    i, ys, xs = CROP
    return s.experts, s.image(i)[ys, xs], s.masks(i)[:, ys, xs]


# ============================================================================================ no JVM


def test_import_starts_no_java():
    r = _run_py("""
        import sys, fiji_consensus, fiji_consensus.fiji
        bad = [m for m in ("jpype", "scyjava", "imagej") if m in sys.modules]
        assert not bad, bad
        print("OK")
    """)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def test_connect_checks_arguments_before_starting_anything(tmp_path):
    with pytest.raises(ValueError, match="at most one of ij, fiji_dir and ij_jar"):
        fiji.connect(fiji_dir=tmp_path, ij_jar="/x/ij.jar")
    with pytest.raises(TypeError, match="headless must be"):
        fiji.connect(headless="yes")
    with pytest.raises(TypeError, match="pyimagej gateway"):
        fiji.connect(object())
    with pytest.raises(ValueError, match="Fiji.app folder"):
        fiji.connect(fiji_dir=tmp_path)  # no jars/
    with pytest.raises(ValueError, match="not a folder"):
        fiji.connect(fiji_dir=tmp_path / "missing")


def test_find_ij_jar(tmp_path, monkeypatch):
    fiji_app = tmp_path / "Fiji.app"
    (fiji_app / "jars").mkdir(parents=True)
    for v in ("1.53t", "1.54f", "1.9.0"):
        (fiji_app / "jars" / f"ij-{v}.jar").write_bytes(b"")
    (fiji_app / "jars" / "ij1-patcher-1.2.jar").write_bytes(b"")
    assert fiji.find_ij_jar(fiji_app).name == "ij-1.54f.jar"
    monkeypatch.setenv("IJ_JAR", str(fiji_app))
    assert fiji.find_ij_jar().name == "ij-1.54f.jar"
    with pytest.raises(FileNotFoundError, match="ij_jar=.*not found"):
        fiji.find_ij_jar(tmp_path / "nope.jar")
    with pytest.raises(FileNotFoundError, match="without jars"):
        fiji.find_ij_jar(tmp_path)  # an explicit folder without a jar is not replaced by another jar
    # an IJ_JAR that does not exist is an error, not a silent fall-back to Debian's jar (issue 16)
    monkeypatch.setenv("IJ_JAR", str(tmp_path / "missing" / "ij.jar"))
    with pytest.raises(FileNotFoundError, match=r"IJ_JAR=.*missing.*not found"):
        fiji.find_ij_jar()


def test_install_macros(tmp_path):
    app = tmp_path / "Fiji.app"
    (app / "jars").mkdir(parents=True)
    written = fiji.install_macros(app)
    names = sorted(p.name for p in written)
    assert names == sorted([*fiji.MACROS, "Fiji Consensus.ijm"])
    helpers = fiji.macro_files()[fiji.HELPERS].read_text("ascii")
    for name in fiji.MACROS:
        installed = (app / "plugins" / "Fiji_Consensus" / name).read_text("ascii")
        assert installed == fiji.macro_text(name) and installed.endswith(helpers)  # helpers appended, once
        assert installed.count("function fcPython()") == 1
    assert not (app / "plugins" / "Fiji_Consensus" / fiji.HELPERS).exists()
    assert (app / "macros" / "toolsets" / "Fiji Consensus.ijm").read_bytes() == \
        fiji.macro_files()[fiji.TOOLSET].read_bytes()
    assert fiji.install_macros(app) == []  # identical files are left alone
    target = app / "plugins" / "Fiji_Consensus" / "Compute_Consensus.ijm"
    target.write_text("// edited by the user\n")
    with pytest.raises(FileExistsError, match="Compute_Consensus.ijm"):
        fiji.install_macros(app)
    assert target.read_text() == "// edited by the user\n"
    assert fiji.install_macros(app, overwrite=True) == [target]
    with pytest.raises(ValueError, match="Fiji.app or ImageJ folder"):
        fiji.install_macros(tmp_path / "empty")


# ============================================================================================ JVM configuration (own processes)


@pytest.mark.imagej
def test_pyimagej_path_refuses_a_running_jvm(ij_jar, tmp_path):
    (tmp_path / "Fiji.app" / "jars").mkdir(parents=True)
    r = _run_py(f"""
        import jpype
        jpype.startJVM(classpath=[{ij_jar!r}])
        from fiji_consensus import fiji
        try:
            fiji.connect(fiji_dir={str(tmp_path / "Fiji.app")!r})
        except RuntimeError as e:
            print("REFUSED", e)
    """)
    assert "REFUSED a JVM is already running" in r.stdout, r.stderr


@pytest.mark.imagej
def test_pyimagej_path_without_pyimagej_names_the_extra_and_starts_nothing(tmp_path):
    (tmp_path / "Fiji.app" / "jars").mkdir(parents=True)
    r = _run_py(f"""
        import sys
        sys.modules["scyjava"] = None; sys.modules["imagej"] = None   # not installed
        from fiji_consensus import fiji
        try:
            fiji.connect(fiji_dir={str(tmp_path / "Fiji.app")!r})
        except ImportError as e:
            print("IMPORTERROR", e)
        import jpype
        print("JVM", jpype.isJVMStarted())
    """)
    assert "IMPORTERROR" in r.stdout and "fiji-consensus[fiji]" in r.stdout, r.stdout + r.stderr
    assert "JVM False" in r.stdout


def _fake_fiji_app(root: Path, ij_jar: str, *, imglyb: bool) -> Path:
    """A Fiji.app folder with the real ij.jar (and an empty imglib2-imglyb jar): all that can exist offline."""
    import zipfile

    app = root / "Fiji app \u00e9" / "Fiji.app"
    (app / "jars").mkdir(parents=True)
    (app / "plugins").mkdir()
    shutil.copyfile(ij_jar, app / "jars" / "ij-1.53t.jar")
    if imglyb:
        with zipfile.ZipFile(app / "jars" / "imglib2-imglyb-1.1.0.jar", "w") as z:
            z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    return app


@pytest.mark.imagej
def test_pyimagej_path_with_the_real_pyimagej(ij_jar, tmp_path):
    """The real scyjava and pyimagej on a Fiji.app: no JDK download (fetch='auto' with JAVA_HOME), nothing
    resolved from Maven (imglyb's helper jar comes from the Fiji.app), no JVM before imagej.init, which
    starts it with the Fiji.app's jars; without ImageJ2 it then fails, and connect says so clearly."""
    pytest.importorskip("imagej", reason="pyimagej is in the test extra: pip install -e '.[test]'")
    app = _fake_fiji_app(tmp_path, ij_jar, imglyb=True)
    r = _run_py(f"""
        import sys, jpype
        from fiji_consensus import fiji
        import imagej
        calls = []
        real_init = imagej.init
        def init(*args, **kw):
            import scyjava.config as c
            calls.append((args, kw, jpype.isJVMStarted(), c.get_fetch_java(), list(c.endpoints)))
            return real_init(*args, **kw)
        imagej.init = init   # a recorder around the real init
        try:
            fiji.connect(fiji_dir={str(app)!r}, headless=True)
        except RuntimeError as e:
            print("ERROR", e)
            print("CAUSE", type(e.__cause__).__name__)
        (args, kw, jvm_before, fetch, endpoints), = calls
        print("INIT", args, kw, jvm_before, fetch, endpoints)
        cp = str(jpype.JClass("java.lang.System").getProperty("java.class.path"))
        print("CLASSPATH_HAS_FIJI_IJ", {str(app / "jars" / "ij-1.53t.jar")!r} in cp)
        print("CONNECTION", fiji.connection())
    """, env={"JAVA_HOME": ""}, timeout=120)
    out = r.stdout + r.stderr
    assert f"INIT ({str(app)!r},) {{'mode': 'headless'}} False auto []" in r.stdout, out
    assert "ERROR pyimagej could not start Fiji from" in r.stdout and "net.imglib2.python.Helpers" in r.stdout, out
    assert "CAUSE" in r.stdout and "ConnectionError" not in out and "maven" not in r.stdout.lower(), out
    assert "CLASSPATH_HAS_FIJI_IJ True" in r.stdout and "CONNECTION None" in r.stdout, out


@pytest.mark.imagej
@pytest.mark.parametrize("headless", [True, False])
def test_pyimagej_path_order_and_shared_code(ij_jar, tmp_path, headless):
    """connect(fiji_dir) sets scyjava up, then calls imagej.init with no ij.* class loaded; afterwards the
    ImageJ1 code path works unchanged on the JVM that init started (with the Fiji.app's real ij jar)."""
    app = _fake_fiji_app(tmp_path, ij_jar, imglyb=False)
    stubs = tmp_path / "stubs"
    (stubs / "scyjava").mkdir(parents=True)
    (stubs / "scyjava" / "__init__.py").write_text("")
    (stubs / "scyjava" / "config.py").write_text(
        "CALLS = []\ndef set_java_constraints(**kw):\n    CALLS.append(kw)\n"
    )
    (stubs / "imagej").mkdir()
    (stubs / "imagej" / "__init__.py").write_text(textwrap.dedent("""
        import glob, os, jpype, scyjava.config
        class _UI:
            def __init__(self, headless): self.headless = headless
            def isHeadless(self): return self.headless
        class Gateway:
            py = object()
            def __init__(self, headless): self._ui = _UI(headless)
            def ui(self): return self._ui
        MODES = []
        def init(ij_dir, mode="headless"):
            assert not jpype.isJVMStarted(), "the JVM (and so ij.* classes) must not exist before imagej.init"
            assert scyjava.config.CALLS == [{"fetch": "auto"}], scyjava.config.CALLS
            assert os.environ.get("JAVA_HOME"), "JAVA_HOME must be set"
            MODES.append(mode)
            jars = glob.glob(os.path.join(ij_dir, "jars", "*.jar"))
            jpype.startJVM("-Djava.awt.headless=true", classpath=jars, convertStrings=False)
            return Gateway(mode == "headless")
    """))
    r = _run_py(f"""
        import numpy as np, imagej
        from fiji_consensus import fiji
        c = fiji.connect(fiji_dir={str(app)!r}, headless={headless})
        print("KIND", c.kind, c.headless, c.version, imagej.MODES)
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        print("ROUNDTRIP", np.array_equal(fiji.from_imageplus(fiji.to_imageplus(a)), a))
        print("SAME", fiji.connect() is c, fiji.connect(c.gateway) is c)
        try:
            fiji.connect(ij_jar={ij_jar!r})
        except RuntimeError as e:
            print("SWITCH", e)
        other = imagej.Gateway(True)        # a gateway from the user's own imagej.init (napari-imagej)
        c2 = fiji.connect(other)
        print("GATEWAY", c2.kind, c2.gateway is other, c2.headless, fiji.connection() is c2)
    """, env={"PYTHONPATH": f"{stubs}{os.pathsep}{REPO}"})
    mode = "headless" if headless else "interactive"
    assert f"KIND pyimagej {headless} 1.53t99 ['{mode}']" in r.stdout, r.stdout + r.stderr
    assert "ROUNDTRIP True" in r.stdout and "SAME True True" in r.stdout
    assert "SWITCH already connected" in r.stdout
    assert "GATEWAY pyimagej True True True" in r.stdout


@pytest.mark.imagej
@pytest.mark.xvfb
def test_roi_manager_with_a_display(ij_jar, tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run not found: apt-get install xvfb xauth")
    r = _run_py(f"""
        import numpy as np
        from fiji_consensus import fiji, rois
        c = fiji.connect(ij_jar={ij_jar!r})
        assert not c.headless
        lab = np.zeros((40, 40), np.int32); lab[2:9, 3:7] = 1; lab[20:30, 20:35] = 2
        imp = fiji.to_imageplus(np.zeros((40, 40), np.uint8))
        n = fiji.push_rois(imp, rois.labels_to_rois(lab), name_prefix="A:", stroke_color="#00ff00")
        pulled = fiji.pull_rois(source="roi_manager")
        print("RM", n, len(pulled), [r.name for r in pulled], imp.getOverlay().size())
        print("EQ", np.array_equal(fiji.rasterize(pulled, (40, 40)), lab), flush=True)
        fiji.show(imp)
        print("SHOWN", imp.getWindow() is not None and imp.getWindow().isVisible(), flush=True)
        import jpype
        jpype.JClass("java.lang.System").exit(0)  # AWT threads would keep the process alive
    """, display=True, timeout=60)
    assert "RM 2 2 ['A:0001', 'A:0002'] 2" in r.stdout, r.stdout + r.stderr
    assert "EQ True" in r.stdout and "SHOWN True" in r.stdout


# ============================================================================================ in-process, headless


@pytest.mark.imagej
def test_connect_is_once_per_process(ij):
    assert ij.kind == "imagej1" and ij.headless and ij.version.startswith("1.")
    assert fiji.connect() is ij and fiji.connection() is ij
    with pytest.raises(RuntimeError, match="headless"):
        fiji.connect(headless=False)


@pytest.mark.imagej
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape,axes", [((37, 53), None), ((3, 37, 53), "CYX"), ((2, 3, 37, 53), "ZCYX"),
                                        ((4, 37, 53), "TYX"), ((37, 53, 2), "YXC")])
def test_numpy_imageplus_roundtrip_exact(ij, dtype, shape, axes):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    a = (rng.integers(0, info.max, shape, endpoint=True) if info else rng.normal(size=shape)).astype(dtype)
    imp = fiji.to_imageplus(a, axes=axes, title="t")
    assert imp.getBitDepth() == {np.uint8: 8, np.uint16: 16, np.float32: 32}[dtype]
    assert (imp.getWidth(), imp.getHeight()) == (53, 37)
    b = fiji.from_imageplus(imp)
    expected = np.moveaxis(a, -1, 0) if axes == "YXC" else a
    assert b.dtype == a.dtype and np.array_equal(b, expected)
    if axes in ("CYX", "YXC"):
        assert imp.getNChannels() == expected.shape[0] and imp.isComposite()
    if axes == "ZCYX":
        assert (imp.getNChannels(), imp.getNSlices()) == (3, 2)
        assert fiji.from_imageplus(imp, squeeze=False).shape == (1, 2, 3, 37, 53)
    if axes == "TYX":
        assert imp.getNFrames() == 4


@pytest.mark.imagej
def test_conversions_convert_and_validate(ij):
    m = np.zeros((5, 6), bool)
    m[1:3, 2:4] = True
    assert np.array_equal(fiji.from_imageplus(fiji.to_imageplus(m)), m.astype(np.uint8) * 255)
    d = np.linspace(0, 1, 30).reshape(5, 6)
    assert fiji.from_imageplus(fiji.to_imageplus(d)).dtype == np.float32
    with pytest.raises(ValueError, match="dtype must be uint8, uint16 or float32.*got int32"):
        fiji.to_imageplus(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match=r"got shape \(4, 4\) with axes 'CYX'"):
        fiji.to_imageplus(np.zeros((4, 4), np.uint8), axes="CYX")
    with pytest.raises(ValueError, match="either calibration or pixel_size"):
        fiji.to_imageplus(np.zeros((4, 4), np.uint8), pixel_size=1, calibration=fiji.Calibration())
    with pytest.raises(TypeError, match="ij.ImagePlus"):
        fiji.from_imageplus(np.zeros((4, 4)))


@pytest.mark.imagej
def test_rgb_imageplus(ij):
    import jpype

    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3)).astype(np.uint8)
    packed = (rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]).astype(np.int32)
    cp = jpype.JClass("ij.process.ColorProcessor")(9, 7, jpype.JArray(jpype.JInt)(packed.ravel()))
    imp = jpype.JClass("ij.ImagePlus")("rgb", cp)
    assert np.array_equal(fiji.from_imageplus(imp), rgb)


@pytest.mark.imagej
def test_calibration_kept_and_saved(ij, tmp_path):
    a = np.arange(2 * 20 * 30, dtype=np.uint16).reshape(2, 20, 30)
    imp = fiji.to_imageplus(a, pixel_size=(0.5, 0.25), unit="um")
    cal = fiji.get_calibration(imp)
    assert (cal.pixel_height, cal.pixel_width) == (0.5, 0.25) and cal.unit in ("um", "\u00b5m", "micron")
    full = fiji.Calibration(pixel_width=0.1, pixel_height=0.2, pixel_depth=2.0, unit="mm",
                            frame_interval=3.0, time_unit="min")
    assert fiji.get_calibration(fiji.to_imageplus(a, calibration=full)) == full
    p = fiji.save_tiff(imp, tmp_path / "cal.tif")
    with tifffile.TiffFile(p) as t:
        page = t.pages[0]
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        assert np.isclose(xres[1] / xres[0], 0.25) and np.isclose(yres[1] / yres[0], 0.5)
        assert t.imagej_metadata["channels"] == 2
        assert np.array_equal(t.asarray(), a)
    with pytest.raises(FileExistsError):
        fiji.save_tiff(imp, p)
    with pytest.raises(ValueError, match="pixel_width must be"):
        fiji.Calibration(pixel_width=0)


@pytest.mark.imagej
def test_xarray_in_and_out(ij):
    xr = pytest.importorskip("xarray")
    da = xr.DataArray(np.ones((2, 4, 5), np.float32), dims=("c", "y", "x"),
                      coords={"y": np.arange(4) * 0.5, "x": np.arange(5) * 0.5}, attrs={"unit": "um"})
    imp = fiji.to_imageplus(da)
    assert imp.getNChannels() == 2 and fiji.get_calibration(imp).pixel_width == 0.5
    back = fiji.from_imageplus(imp, xarray=True)
    assert back.dims == ("c", "y", "x") and np.allclose(back.coords["x"], da.coords["x"])


def _sample_rois(masks, experts):
    out = {}
    for k, e in enumerate(experts):
        out[e] = rois.labels_to_rois(matching.label_objects(masks[k]), name_prefix=f"{e}:",
                                     stroke_color="#E69F00")
    return out


@pytest.mark.imagej
def test_roi_bytes_roundtrip(ij):
    lab = np.zeros((30, 30), np.int32)
    lab[2:20, 2:20] = 1
    lab[8:12, 8:12] = 0  # a hole: a composite ROI
    lab[22:28, 5:9] = 2
    for r in [*rois.labels_to_rois(lab, name_prefix="A:", stroke_color="#56B4E9"),
              roifile.ImagejRoi.frompoints(np.array([[1.5, 2.25], [10.0, 3.0], [6.0, 12.5]], np.float32),
                                           name="sub\u00e9pixel")]:
        j = fiji.to_java_roi(r)
        assert str(j.getName()) == r.name
        back = fiji.from_java_roi(j)
        assert back.name == r.name and back.roitype == r.roitype
        assert np.allclose(back.coordinates(), r.coordinates())
        assert np.array_equal(rois.roi_to_mask(back, (30, 30)), rois.roi_to_mask(r, (30, 30)))
    with pytest.raises(TypeError, match="roifile.ImagejRoi or an ij.gui.Roi"):
        fiji.to_java_roi("not a roi")


def _java_roi_zoo():
    """ROIs of most ImageJ kinds, made by ImageJ's own classes, with names, colours, positions and groups."""
    import jpype

    J = jpype.JClass
    JF, JI = jpype.JArray(jpype.JFloat), jpype.JArray(jpype.JInt)
    Roi, PolygonRoi, ShapeRoi = J("ij.gui.Roi"), J("ij.gui.PolygonRoi"), J("ij.gui.ShapeRoi")
    Color = J("java.awt.Color")
    FloatPolygon = J("ij.process.FloatPolygon")
    zoo = [
        Roi(3, 4, 20, 10), Roi(3, 4, 20, 10, 6), J("ij.gui.OvalRoi")(5, 6, 12, 9),
        PolygonRoi(FloatPolygon(JF([1.5, 30.25, 12.0]), JF([2.0, 5.5, 28.75])), Roi.POLYGON),
        PolygonRoi(JI([1, 30, 12, 4]), JI([2, 5, 28, 20]), 4, Roi.POLYLINE),
        PolygonRoi(JI([1, 9, 9, 1]), JI([1, 1, 9, 9]), 4, Roi.TRACED_ROI),
        PolygonRoi(FloatPolygon(JF([1.0, 9.0, 5.0]), JF([1.0, 1.0, 7.0])), Roi.FREEROI),
        J("ij.gui.Line")(1.5, 2.5, 20.25, 10.0), J("ij.gui.Arrow")(1.0, 2.0, 20.0, 10.0),
        J("ij.gui.PointRoi")(JI([3, 8, 20]), JI([4, 9, 2]), 3), J("ij.gui.TextRoi")(5, 5, "text \u00e9"),
        J("ij.gui.EllipseRoi")(1.0, 1.0, 20.0, 10.0, 0.5),
        ShapeRoi(Roi(0, 0, 12, 12)).xor(ShapeRoi(Roi(3, 3, 4, 4))),
    ]
    for k, j in enumerate(zoo):
        j.setName(f"expert \u00e9 {k}:{k + 1:04d}")
        j.setStrokeColor(Color(10 * k, 200, 30, 255 - k))
        if k % 3 == 0:
            j.setFillColor(Color(1, 2, 3, 40))
        if k in (1, 5):  # (a point ROI's stroke width is its marker size: left alone)
            j.setStrokeWidth(2.5)
        if k % 2:
            j.setPosition(1 + k % 2, 2, 3)
        else:
            j.setPosition(k + 1)
        j.setProperty("expert", f"E{k}")
    zoo[5].setGroup(3)
    return zoo


@pytest.mark.imagej
def test_roi_bytes_come_through_one_java_stream(ij):
    """pull reads all ROIs of an overlay from one RoiEncoder stream: the same bytes as one RoiEncoder call per
    ROI, read by roifile's public decoder."""
    import jpype

    from fiji_consensus.fiji import roi_bytes

    jzoo = _java_roi_zoo()
    enc = jpype.JClass("ij.io.RoiEncoder").saveAsByteArray
    java_bytes = [bytes(memoryview(enc(j))) for j in jzoo]
    assert roi_bytes._java_rois_to_bytes(jzoo) == java_bytes and roi_bytes._java_rois_to_bytes([]) == []
    pulled = roi_bytes._rois_from_bytes(java_bytes)
    assert [r.name for r in pulled] == [str(j.getName()) for j in jzoo]
    assert [r.tobytes() for r in pulled] == [roifile.ImagejRoi.frombytes(b).tobytes() for b in java_bytes]


@pytest.mark.imagej
def test_fast_encoder_gives_roifile_bytes(ij, sample_crop):
    """push writes the common ROI kinds with a small struct encoder (2x faster, bench_roi_encoder.py): for
    every kind of ROI and every style push sets, it gives roifile's bytes or leaves the ROI to roifile."""
    import copy

    import jpype

    from fiji_consensus.fiji import roi_bytes

    assert roi_bytes._fast_encoder() is not None, "the fast ROI encoder disagrees with the installed roifile"
    _, _, masks = sample_crop
    enc = jpype.JClass("ij.io.RoiEncoder").saveAsByteArray
    blobs = [bytes(memoryview(enc(j))) for j in _java_roi_zoo()]
    blobs += [r.tobytes() for r in rois.labels_to_rois(matching.label_objects(masks[0]))]
    styles = [{}, {"name": "B:x \u00e9", "stroke_color": b"\x80\x11\x22\x33", "group": 4},
              {"props": "expert: B\nscore: 0.5\n", "fill_color": b"\xff\x01\x02\x03", "stroke_width": 2,
               "float_stroke_width": 1.5}]
    fast = 0
    for b in blobs:
        ref = roifile.ImagejRoi.frombytes(b)
        for changes in styles:
            expected = copy.copy(ref)
            for k, v in changes.items():
                setattr(expected, k, v)
            mine = roi_bytes._encode(ref, **{**roi_bytes._own_style(ref), **changes})
            fast += mine is not None
            assert mine is None or mine == expected.tobytes(), (ref, changes)
            assert roi_bytes.styled_bytes(ref, changes) == expected.tobytes()
        assert ref.tobytes() == roifile.ImagejRoi.frombytes(b).tobytes()  # (the ROI itself is not changed)
    # the kinds pushed most (polygons, traced outlines, composite shapes, rectangles, ovals) are fast
    assert fast >= len(styles) * (len(blobs) - 6)


@pytest.mark.imagej
def test_fast_encoder_turns_itself_off_when_roifile_differs(ij, monkeypatch):
    from fiji_consensus.fiji import roi_bytes

    roi_bytes._fast_encoder.cache_clear()
    try:
        monkeypatch.setattr(roi_bytes, "_encode", lambda r, **kw: b"not roifile's bytes")
        assert roi_bytes._fast_encoder() is None
        imp = fiji.to_imageplus(np.zeros((20, 20), np.uint8))
        lab = np.zeros((20, 20), np.int32)
        lab[2:6, 3:9] = 1
        fiji.push_labels(imp, lab, name_prefix="A:")
        assert [r.name for r in fiji.pull_rois(imp)] == ["A:0001"]
    finally:
        monkeypatch.undo()
        roi_bytes._fast_encoder.cache_clear()
    assert roi_bytes._fast_encoder() is not None


@pytest.mark.imagej
def test_push_pull_keep_every_roi_field(ij):
    """Names, colours, stroke widths, positions, groups and properties of ImageJ's own ROIs survive
    pull -> push -> pull exactly; push styles copies (roifile's encoder), never the caller's ROIs."""
    import jpype

    jzoo = _java_roi_zoo()
    imp = fiji.to_imageplus(np.zeros((40, 40), np.uint8))
    ov = jpype.JClass("ij.gui.Overlay")()
    for j in jzoo:
        ov.add(j)
    imp.setOverlay(ov)
    first = fiji.pull_rois(imp)
    assert len(first) == len(jzoo)
    target = fiji.to_imageplus(np.zeros((40, 40), np.uint8))
    fiji.push_rois(target, first)
    again = fiji.pull_rois(target)
    # (ImageJ itself may add subpixel bounds to a decoded TextRoi, index 10: compared by name and text)
    assert [r.tobytes() for k, r in enumerate(again) if k != 10] == [r.tobytes() for k, r in enumerate(first)
                                                                      if k != 10]
    assert (again[10].name, again[10].text) == (first[10].name, first[10].text)
    assert (first[10].name, first[10].text.rstrip("\n")) == (str(jzoo[10].getName()), "text \u00e9")
    for k, (r, j) in enumerate(zip(first, jzoo)):
        assert r.name == str(j.getName()) and r.properties == {"expert": f"E{k}"}
        assert r.group == int(j.getGroup())
        if k % 2:
            assert (r.c_position, r.z_position, r.t_position) == (2, 2, 3)
        elif k not in (9, 10):  # (ImageJ keeps no plain position for point and text ROIs here)
            assert r.position == k + 1, k
        if k != 5:  # (a group sets the stroke colour from a LUT that plain ImageJ lacks)
            c = j.getStrokeColor()
            assert r.stroke_color == bytes([c.getAlpha(), c.getRed(), c.getGreen(), c.getBlue()]), k
    assert first[1].float_stroke_width == 2.5 and first[5].group == 3
    styled = dict(name_prefix="B:", stroke_color="#80112233", fill_color=(1, 2, 3), stroke_width=1.5,
                  properties={"expert": "B", "score": 0.5}, replace=True)
    before = [r.tobytes() for r in first]
    fiji.push_rois(target, first, **styled)
    pushed = fiji.pull_rois(target)
    assert [r.tobytes() for r in first] == before  # push styles copies, never the caller's ROIs
    b = pushed[0]
    assert b.name == "B:" + first[0].name and b.stroke_color == bytes.fromhex("80112233")
    assert b.fill_color == bytes.fromhex("FF010203") and b.float_stroke_width == 1.5
    assert b.properties == {"expert": "B", "score": 0.5}
    # a group (ImageJ then strokes the ROI in the group's colour)
    fiji.push_rois(target, first[:3], group=9, replace=True)
    assert [r.group for r in fiji.pull_rois(target)] == [9, 9, 9]


@pytest.mark.imagej
def test_pulled_rois_equal_the_file_rois(ij, sample_crop, tmp_path):
    experts, image, masks = sample_crop
    file_rois = _sample_rois(masks, experts)[experts[0]]
    zip_path = tmp_path / "RoiSet.zip"
    rois.write_roiset(zip_path, file_rois)
    from_file = rois.read_rois(zip_path)
    imp = fiji.to_imageplus(image)
    assert fiji.push_rois(imp, from_file) == len(from_file) > 10
    pulled = fiji.pull_rois(imp)
    assert [r.name for r in pulled] == [r.name for r in from_file]
    for a, b in zip(pulled, from_file):
        assert a.roitype == b.roitype and a.stroke_color == b.stroke_color
        assert (a.left, a.top, a.right, a.bottom) == (b.left, b.top, b.right, b.bottom)
        assert np.array_equal(a.coordinates(), b.coordinates())
    # rasterised by ImageJ itself == by roifile (rois.py) == the expert's mask
    by_ij = fiji.rasterize(pulled, image.shape)
    assert np.array_equal(by_ij, rois.rois_to_labels(from_file, image.shape))
    assert np.array_equal(by_ij > 0, masks[0])


@pytest.mark.imagej
def test_pull_experts_from_an_overlay_tiff(ij, sample_crop, tmp_path):
    """The CLI's overlay TIFFs (ROIs named 'expert_1:0003') opened by ImageJ give back each expert's mask."""
    import jpype

    experts, image, masks = sample_crop
    by_expert = _sample_rois(masks, experts)
    path = tmp_path / "with overlay.tif"
    rois.write_imagej_tiff(path, image, rois=[r for e in experts for r in by_expert[e]])
    imp = jpype.JClass("ij.IJ").openImage(str(path))
    got = fiji.pull_experts(imp)
    assert list(got) == experts
    for k, e in enumerate(experts):
        assert got[e].dtype == np.int32 and np.array_equal(got[e] > 0, masks[k])
        assert got[e].max() == len(by_expert[e])
    # one RoiSet per expert
    sets = {}
    for e in experts[:2]:
        sets[e] = tmp_path / f"{e}.zip"
        rois.write_roiset(sets[e], by_expert[e])
    got2 = fiji.pull_experts(fiji.to_imageplus(image), roisets=sets)
    assert list(got2) == experts[:2] and np.array_equal(got2[experts[1]] > 0, masks[1])


@pytest.mark.imagej
def test_split_by_expert_rules(ij):
    def roi(name, **kw):
        r = roifile.ImagejRoi.frompoints(np.array([[0, 0], [4, 0], [4, 4]], np.float32), name=name)
        for k, v in kw.items():
            setattr(r, k, v)
        return r

    by_prefix = fiji.split_by_expert([roi("A:1"), roi("expert_1_0003"), roi("A:2"), roi("consensus:0001")])
    assert {k: len(v) for k, v in by_prefix.items()} == {"A": 2, "expert_1": 1}
    p = roi("x")
    p.properties = {"expert": "Bob"}
    assert list(fiji.split_by_expert([p])) == ["Bob"]
    g = roi("0001-0002", group=3)
    assert list(fiji.split_by_expert([g], group_names={3: "Carol"})) == ["Carol"]
    assert list(fiji.split_by_expert([g], by="group")) == ["group3"]
    known = fiji.split_by_expert([roi("expert_1_0003")], experts=["expert_1", "expert_2"])
    assert {k: len(v) for k, v in known.items()} == {"expert_1": 1, "expert_2": 0}
    with pytest.raises(ValueError, match="1 of 2 ROIs have no expert"):
        fiji.split_by_expert([roi("A:1"), roi("0001-0002")])
    with pytest.raises(ValueError, match="by must be"):
        fiji.split_by_expert([], by="colour")


@pytest.mark.imagej
def test_pushed_overlay_reads_back_from_the_saved_tiff(ij, sample_crop, tmp_path):
    from fiji_consensus.jobs import CONSENSUS_COLOR, EXPERT_COLORS

    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image, title="crop")
    cons = masks.sum(0) >= 3
    n = fiji.push_consensus(imp, cons, {e: masks[k] for k, e in enumerate(experts)})
    p = fiji.save_tiff(imp, tmp_path / "pushed.tif")
    with tifffile.TiffFile(p) as t:
        back = [roifile.ImagejRoi.frombytes(b) for b in t.imagej_metadata["Overlays"]]
        assert np.array_equal(t.asarray(), image)
    assert len(back) == n
    counts = {}
    for r in back:
        src = r.name.split(":")[0]
        counts[src] = counts.get(src, 0) + 1
        color = CONSENSUS_COLOR if src == "consensus" else EXPERT_COLORS[experts.index(src)]
        assert r.stroke_color == bytes.fromhex("FF" + color.lstrip("#")), (r.name, r.stroke_color)
        if src != "consensus":
            assert r.properties["expert"] == src
    for k, e in enumerate(experts):
        assert counts[e] == matching.label_objects(masks[k]).max()
    c_labels = matching.label_objects(cons)
    assert counts["consensus"] == c_labels.max()
    # bounds of each consensus ROI are those of its object
    c_rois = [r for r in back if r.name.startswith("consensus:")]
    for r in c_rois:
        ys, xs = np.nonzero(c_labels == int(r.name.split(":")[1]))
        assert (r.top, r.left, r.bottom, r.right) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


@pytest.mark.imagej
def test_consensus_in_one_call(ij, sample_crop):
    from fiji_consensus import consensus as cons

    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image)
    fiji.push_consensus(imp, None, {e: masks[k] for k, e in enumerate(experts)})
    out, res = fiji.consensus(imp, min_size=30, return_result=True)
    assert out is imp and res["experts"] == experts
    expected = matching.label_objects(cons.staple(masks).probability > 0.5, min_size=30)
    assert np.array_equal(res["labels"], expected)
    names = [r.name for r in fiji.pull_rois(imp)]
    assert sum(nm.startswith("consensus:") for nm in names) == expected.max() > 0
    # idempotent: the consensus outlines are not taken for an expert
    _, res2 = fiji.consensus(imp, min_size=30, return_result=True)
    assert res2["experts"] == experts and np.array_equal(res2["labels"], res["labels"])
    _, maj = fiji.consensus(imp, method="majority", return_result=True)
    assert np.array_equal(maj["consensus"], matching.label_objects(cons.majority_vote(masks)) > 0)
    _, obj = fiji.consensus(imp, method="objects", min_size=30, return_result=True)
    assert obj["labels"].max() > 0 and obj["probability"] is None
    lone = fiji.to_imageplus(image)
    fiji.push_consensus(lone, None, {"A": masks[0]})
    with pytest.raises(ValueError, match="at least 2 experts"):
        fiji.consensus(lone)
    with pytest.raises(ValueError, match="has no expert ROIs"):
        fiji.consensus(fiji.to_imageplus(image))
    with pytest.raises(ValueError, match="method must be"):
        fiji.consensus(imp, method="vote")


@pytest.mark.imagej
def test_consensus_options_reach_the_consensus(ij, sample_crop):
    """fiji.consensus goes through the one switch, consensus.consensus_of: STAPLE's prior and max_iter and the
    ignore regions now count (issue 18: fiji's own copy of the switch took none of them)."""
    from fiji_consensus import consensus as cons

    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image)
    fiji.push_consensus(imp, None, {e: masks[k] for k, e in enumerate(experts)})
    _, default = fiji.consensus(imp, return_result=True)
    _, res = fiji.consensus(imp, prior=0.6, max_iter=2, return_result=True)
    expected = cons.staple(masks, prior=0.6, max_iter=2)
    assert np.allclose(res["probability"], expected.probability, atol=1e-6)
    assert np.allclose(res["sensitivity"], expected.sensitivity)
    assert not np.allclose(res["probability"], default["probability"], atol=1e-3)
    assert np.array_equal(res["labels"], matching.label_objects(expected.probability > 0.5))
    h, w = image.shape
    ignore = np.zeros((h, w), bool)
    ignore[:, : w // 2] = True
    for method in ("staple", "majority", "objects"):
        _, ign = fiji.consensus(imp, method=method, ignore=ignore, return_result=True)
        assert np.array_equal(ign["labels"], cons.consensus_of(masks, method, ignore=ignore)["labels"]), method
        assert ign["labels"][ignore].max() == 0 and ign["labels"].max() > 0, method
    # ignore regions given as ROIs are filled by ImageJ: the same as the mask
    left = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.RECT, top=0, left=0, bottom=h, right=w // 2)
    _, by_roi = fiji.consensus(imp, method="majority", ignore=[left], return_result=True)
    assert np.array_equal(by_roi["labels"], cons.consensus_of(masks, "majority", ignore=ignore)["labels"])
    with pytest.raises(ValueError, match="ignore must be a mask of the image's shape"):
        fiji.consensus(imp, ignore=np.zeros((3, 3), bool))


@pytest.mark.imagej
def test_predict_with_a_callable_ensemble(ij, sample_crop):
    """Objects named and coloured as `fiji-consensus predict` writes them, on the measure's absolute scale."""
    from fiji_consensus import instances, uncertainty
    from fiji_consensus.style import uncertainty_color

    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image)
    x = image.astype(np.float32) / 255.0

    def ensemble(img):
        base = img / 255.0
        return np.stack([base, np.clip(base * 1.5, 0, 1), np.sqrt(base)])

    members = np.stack([x, np.clip(x * 1.5, 0, 1), np.sqrt(x)])
    stats = uncertainty.ensemble_statistics(members)
    colours = {}
    for measure in ("entropy", "std"):
        out, res = fiji.predict(imp, ensemble, threshold=0.3, min_size=20, measure=measure, return_result=True)
        assert out is imp and res["measure"] == measure
        assert np.allclose(res["probability"], stats["mean"], atol=1e-6)
        assert np.allclose(res["uncertainty"], stats[measure], atol=1e-6)
        expected = instances.label_instances(stats["mean"], threshold=0.3, min_size=20)
        assert np.array_equal(res["labels"], expected) and expected.max() > 3
        pulled = fiji.pull_rois(imp)
        assert len(pulled) == expected.max() == len(res["objects"])
        for r, row in zip(pulled, res["objects"]):
            u = row["mean_uncertainty"]
            assert r.name == f"prediction:{row['id']:04d}_u{u:.3f}"
            assert r.stroke_color == bytes.fromhex("FF" + uncertainty_color(u, measure)[1:])
            assert np.isclose(float(r.properties["uncertainty"]), u, atol=1e-4)
        # ImageJ fills each outline exactly as the object
        assert np.array_equal(fiji.rasterize(pulled, image.shape), expected)
        colours[measure] = {r.stroke_color for r in pulled}
    assert len(colours["entropy"]) > 2  # stroked by uncertainty, not one colour
    # a channel of a multi-channel image
    two = fiji.to_imageplus(np.stack([np.zeros_like(image), image]))
    with pytest.raises(ValueError, match="2 channels; choose one with channel="):
        fiji.predict(two, ensemble)
    _, res2 = fiji.predict(two, ensemble, channel=1, threshold=0.3, min_size=20, return_result=True)
    assert np.array_equal(res2["labels"], expected) and two.getOverlay().size() == expected.max()
    # added to a consensus overlay, the predictions are not taken for an expert
    fiji.push_consensus(imp, None, {e: masks[k] for k, e in enumerate(experts)})
    n_consensus = imp.getOverlay().size()
    fiji.predict(imp, ensemble, threshold=0.3, min_size=20, replace=False)
    # predicting again replaces the earlier prediction's objects, never doubles them (issue 16, bug 7)
    fiji.predict(imp, ensemble, threshold=0.3, min_size=20, replace=False)
    assert imp.getOverlay().size() == n_consensus + expected.max()
    _, cres = fiji.consensus(imp, return_result=True)
    assert cres["experts"] == experts
    with pytest.raises(ValueError, match="model must return"):
        fiji.predict(imp, lambda im: im[:10])
    with pytest.raises(TypeError, match="model must be"):
        fiji.predict(imp, 42)
    with pytest.raises(ValueError, match="measure must be one of"):
        fiji.predict(imp, ensemble, measure="variance")
    # probability and uncertainty as channels with the CLI's LUTs and absolute display ranges
    pimp = fiji.probability_image(res["probability"], res["uncertainty"], image=image, measure="std")
    assert pimp.getNChannels() == 3 and pimp.isComposite()
    assert np.allclose(fiji.from_imageplus(pimp), np.stack([image, res["probability"], res["uncertainty"]]))
    luts = pimp.getLuts()
    assert (luts[1].min, luts[1].max, luts[2].min, luts[2].max) == (0.0, 1.0, 0.0, 0.5)
    def rgb(lut, i):
        return tuple(int(b) & 0xFF for b in (lut.getBytes()[i], lut.getBytes()[256 + i], lut.getBytes()[512 + i]))

    assert [rgb(luts[2], 0), rgb(luts[2], 255)] == [(0, 255, 255), (255, 0, 0)]  # cyan certain .. red uncertain
    assert rgb(luts[1], 255) == (0, 255, 0) and rgb(luts[0], 255) == (255, 255, 255)


@pytest.mark.imagej
def test_headless_refuses_the_roi_manager(ij, sample_crop):
    _, image, masks = sample_crop
    imp = fiji.to_imageplus(image)
    with pytest.raises(RuntimeError, match="display"):
        fiji.push_labels(imp, masks[0], roi_manager=True)
    with pytest.raises(RuntimeError, match="display"):
        fiji.pull_rois(source="roi_manager")
    with pytest.raises(RuntimeError, match="headless"):
        fiji.show(imp)
    with pytest.raises(ValueError, match="stroke_color must be"):
        fiji.push_labels(imp, masks[0], stroke_color="blue-ish")


@pytest.mark.imagej
@pytest.mark.slow
def test_predict_takes_a_bioimageio_package_as_the_cli_does(ij, sample_crop):
    """Issue 16, bug 7: ``fiji.predict(imp, "model.zip")`` refused the zoo package that the CLI accepts."""
    pytest.importorskip("bioimageio.core")
    from fiji_consensus import zoo

    package = REPO / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image[:128, :128])
    out, res = fiji.predict(imp, str(package), return_result=True)
    expected = zoo.predict_packages([zoo.load_package(package)], image[:128, :128])
    assert np.allclose(res["probability"], expected.probability, atol=1e-5)
    assert np.array_equal(res["labels"], expected.labels) and expected.labels.max() > 0
    assert out.getOverlay().size() == len(expected.objects)


def test_fiji_commands_name_themselves_in_json_and_errors(tmp_path):
    """Issue 16, bug 8: ``install-macros --json`` reported ``"command": "fiji"`` on failure."""
    r = subprocess.run([sys.executable, "-m", "fiji_consensus", "fiji", "install-macros", str(tmp_path / "nope"),
                        "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["ok"] is False and res["command"] == "fiji install-macros" and "nope" in res["error"]
    assert "fiji-consensus fiji install-macros: error:" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fiji_consensus", "fiji", "model-summary", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=120)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["command"] == "fiji model-summary" and "ensemble.json" in res["error"]


def test_model_summary_puts_validation_next_to_the_experts_and_warns(tmp_path):
    """What Train Ensemble shows at the end (issue 16): a model far below the experts is called useless."""
    def write(f1s, dices, experts):
        meta = {"members": [{"val_roi_f1": f, "val_dice": d, "val_ids": ["a", "b"]} for f, d in zip(f1s, dices)],
                "provenance": {"expert_roi_f1": experts}}
        (tmp_path / "ensemble.json").write_text(json.dumps(meta))
        return fiji.model_summary(tmp_path)

    experts = {"a": {"e1": 0.8, "e2": 0.7}, "b": {"e1": 0.9, "e2": 0.6}, "c": {"e1": 0.0}}  # c: not validated
    good = write([0.7, 0.74], [0.8, 0.8], experts)
    assert good["val_roi_f1"] == 0.72 and good["expert_roi_f1"] == 0.75 and good["useless"] is False
    assert "ROI-F1 0.720" in good["text"] and "0.750" in good["text"] and "WARNING" not in good["text"]
    bad = write([0.007], [0.01], experts)
    assert bad["useless"] is True and "WARNING: this model is not useful yet" in bad["text"]
    assert write([0.3], [0.5], experts)["useless"] is True  # below half the experts' ROI-F1
    none = write([None], [None], {})
    assert none["val_roi_f1"] is None and none["useless"] is False and "n/a" in none["text"]
    with pytest.raises(ValueError, match="ensemble.json"):
        fiji.model_summary(tmp_path / "nope")
