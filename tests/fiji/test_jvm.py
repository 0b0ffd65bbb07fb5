"""JVM start (fiji/jvm.py) in real ImageJ 1.53t: connecting once per process, finding ij.jar, the pyimagej path.

One JVM per process: in-process tests share the session fixture ``ij``; tests that configure a JVM run in a
subprocess of their own. The pyimagej path cannot finish here: no Fiji (ImageJ2) can be installed offline. It
is tested twice: with the real scyjava and pyimagej on a fake Fiji.app holding the real ij.jar (pyimagej starts
the JVM, then fails for want of ImageJ2, as it must), and, to see what happens after ``imagej.init`` returns,
with a stand-in ``imagej`` module whose ``init`` only records how it was called and starts a real JVM with
the real ij.jar (acceptable here because no Fiji can start offline; the ImageJ side is never mocked).
"""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from fiji_consensus import fiji

from ._common import REPO, _run_py


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
    import importlib.util

    # find_spec, not importorskip: importing imagej here would touch the JVM that earlier tests of this process
    # started (imglyb looks its helper classes up at import); the test's own subprocess imports it
    if importlib.util.find_spec("imagej") is None:
        pytest.skip("pyimagej is in the test extra: pip install -e '.[test]'")
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
def test_connect_is_once_per_process(ij):
    assert ij.kind == "imagej1" and ij.headless and ij.version.startswith("1.")
    assert fiji.connect() is ij and fiji.connection() is ij
    with pytest.raises(RuntimeError, match="headless"):
        fiji.connect(headless=False)
