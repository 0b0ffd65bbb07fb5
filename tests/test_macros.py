"""The Fiji macros, run end to end in ImageJ 1.53t under Xvfb: ``java -jar ij.jar -batch macro.ijm ARGS``, and
clicked through their dialogs as a user would (ImageJ's GUI on an Xvfb display, xdotool).

ImageJ exits 0 even after a macro error and hangs on an error dialog, so every run has a timeout, must print
the sentinel ``FIJI_CONSENSUS_DONE`` (or, for expected failures, ``FIJI_CONSENSUS_ERROR: ...``) and must not
print "Exception". The project folder's path has spaces, a quote and non-ASCII characters; the macros call
this venv's Python (``sys.executable``) through ``exec()``. The macros run are the installed ones (the sources
with the helper block appended, as ``fiji-consensus fiji install-macros`` writes them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile
from scipy import ndimage as ndi

from fiji_consensus import datasets, fiji, matching, rois

from _imagej import Display, run_gui

CROPS = {"0015": (128, 128), "0001": (256, 384)}  # 160 x 160 crops
SIZE = 160
EXPERTS = 3
_BUILT: Path | None = None


def built(name: str) -> Path:
    """The installed form of a shipped macro (written once per test session into a temporary Fiji.app)."""
    global _BUILT
    if _BUILT is None:
        _BUILT = Path(tempfile.mkdtemp(prefix="fc-macros-"))
        fiji.write_macros(_BUILT)
    if name == fiji.TOOLSET:
        return _BUILT / "macros" / "toolsets" / "Fiji Consensus.ijm"
    return _BUILT / "plugins" / "Fiji_Consensus" / name


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} not found: install Java 17 and xvfb (apt-get install xvfb xauth)")


def run_macro(macro: str | Path, args: dict[str, str], *, ij_jar: str, home: Path, timeout: int = 150) -> str:
    """Run one macro non-interactively; return its output (stdout + stderr). Fails on a hang (the timeout
    only catches hangs: a 2-core machine shared with trainings needs minutes for what takes seconds)."""
    _need("xvfb-run")
    _need("java")
    arg = "\n".join(f"{k}={v}" for k, v in args.items())
    cmd = ["xvfb-run", "-a", "timeout", "-k", "5", str(timeout), "java", f"-Duser.home={home}",
           "-jar", ij_jar, "-batch", str(built(macro) if isinstance(macro, str) else macro), arg]
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}  # Java needs a UTF-8 locale for such paths
    r = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", timeout=timeout + 30, env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 124, f"{macro} hung (a macro error dialog?) after {timeout} s:\n{out}"
    assert "Exception" not in out, f"{macro} raised:\n{out}"
    return out


def done_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith("FIJI_CONSENSUS_DONE")]
    assert len(lines) == 1 and "FIJI_CONSENSUS_ERROR" not in out, out
    return lines[0]


def error_line(out: str) -> str:
    assert "FIJI_CONSENSUS_DONE" not in out, out
    m = re.search(r"^FIJI_CONSENSUS_ERROR: (.*)", out, re.M | re.S)
    assert m, out
    return m.group(1)


def _expert_rois(mask: np.ndarray, expert: str) -> list:
    return rois.labels_to_rois(matching.label_objects(mask), name_prefix=f"{expert}:")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder from crops of the bundled sample, in a path with spaces, a quote and non-ASCII."""
    root = tmp_path_factory.mktemp("macros") / "fiji cons 'ü é" / "project ñ"
    s = datasets.load_sample()
    for image_id, (y, x) in CROPS.items():
        (root / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "images" / f"{image_id}.tif", s.image(image_id)[y:y + SIZE, x:x + SIZE])
        masks = s.masks(image_id)[:EXPERTS, y:y + SIZE, x:x + SIZE]
        for k, e in enumerate(s.experts[:EXPERTS]):
            (root / "annotations" / e).mkdir(parents=True, exist_ok=True)
            rois.write_roiset(root / "annotations" / e / f"{image_id}.zip", _expert_rois(masks[k], e))
    return root


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")  # ImageJ's preferences go here, not into the user's home


# ============================================================================================ static checks (no Java)

_FUNCTION = re.compile(r"^function (fc\w+)\(", re.M)


def test_the_helpers_exist_once_and_every_installed_macro_carries_them():
    files = fiji.macro_files()
    assert set(files) == {*fiji.MACROS, fiji.TOOLSET, fiji.HELPERS}
    helpers = files[fiji.HELPERS].read_text("ascii")
    defined = _FUNCTION.findall(helpers)
    assert {"fcInit", "fcPython", "fcProject", "fcNum", "fcImageId", "fcJsonGet"} <= set(defined)
    for name in fiji.MACROS:
        source = files[name].read_text("ascii")
        assert not _FUNCTION.findall(source), f"{name} defines helpers of its own: keep them in {fiji.HELPERS}"
        assert source.rstrip().endswith("appended from helpers.ijm when installed ----"), name
        text = fiji.macro_text(name)
        assert text.endswith(helpers) and _FUNCTION.findall(text) == defined
        assert built(name).read_text("ascii") == text
    n_helper_lines = len(helpers.splitlines())
    total = sum(len(files[n].read_text("ascii").splitlines()) for n in files)
    assert n_helper_lines > 150 and total < 1100  # the block is kept once, not pasted into every macro


def test_installed_macros_are_ascii_and_avoid_imagej_traps():
    for name in (*fiji.MACROS, fiji.TOOLSET):
        text = built(name).read_text("ascii")  # ImageJ reads macro files in the platform charset: keep them ASCII
        for call in re.findall(r"\bexec\((.*?)\);", text):
            assert "," in call, f"{name}: exec() with one string goes through a tokenizer; use exec(a, b, ...)"
        # ImageJ 1.53t traps that hang a macro: a user function's result in a comparison, and
        # getFileList(...).length
        assert not re.search(r"\bfc[A-Za-z]+\([^;{]*\)\s*[!=]=", text), name
        assert not re.search(r"[!=]=\s*fc[A-Za-z]+\(", text), name
        assert not re.search(r"getFileList\([^)]*\)\.length", text), name
        assert not re.search(r"\bDialog\.\w+\([^;]*[!=]=", text), f"{name}: a comparison as a Dialog argument"
        assert not re.search(r"\breturn\s+fc[A-Za-z]+\(", text), name
        # ... and as the first term of an expression: x = fcF(a) + "b" hangs; x = fcF(a); x = x + "b" does not
        assert not re.search(r"=\s*fc[A-Za-z]+\([^;]*\)\s*[-+*/]", text), f"{name}: a user function's result then an operator"
        # "" + Dialog.getNumber() gives "5.0": numbers from dialogs go through fcNum (issue 16, bug 1)
        assert not re.search(r'"\s*\+\s*Dialog\.getNumber', text), name
        # ImageJ shows "_" in a dialog label as a space ("letters, digits,   . -"; issue 16, bug 8)
        for label in re.findall(r'(?:Dialog\.add(?:String|Number|Choice|Checkbox)|getString)\("([^"]*)"', text):
            assert "_" not in label, f"{name}: dialog label {label!r} loses its underscore in ImageJ"


def test_toolset_commands_name_shipped_macros():
    text = fiji.macro_files()[fiji.TOOLSET].read_text("ascii")
    items = re.search(r'newMenu\("Fiji Consensus Menu Tool", newArray\((.*?)\)\)', text).group(1)
    commands = [c for c in re.findall(r'"([^"]+)"', items) if c not in ("-", "Settings...", "About")]
    assert sorted(c.replace(" ", "_") + ".ijm" for c in commands) == sorted(fiji.MACROS)
    assert "Next Planned Image" in commands
    for name in re.findall(r'fcRunMacro\("([^"]+)"\)', text):
        assert name in fiji.MACROS


# ============================================================================================ under Xvfb




@pytest.mark.imagej
@pytest.mark.xvfb
def test_compute_consensus_and_show_results(project, home, ij_jar):
    args = {"python": sys.executable, "project": str(project), "method": "staple", "min_size": "20",
            "image": "0015"}
    out = run_macro("Compute_Consensus.ijm", args, ij_jar=ij_jar, home=home)
    line = done_line(out)
    cdir = project / "consensus" / "staple"
    assert f"FIJI_CONSENSUS_DONE consensus {cdir} image=0015" in line
    summary = json.loads((cdir / "summary.json").read_text("utf-8"))
    assert summary["n_images"] == 2 and summary["experts"] == [f"expert_{k}" for k in range(1, EXPERTS + 1)]
    assert summary["out"] == str(cdir)
    for image_id in CROPS:
        assert tifffile.imread(cdir / "masks" / f"{image_id}.tif").shape == (SIZE, SIZE)
    with tifffile.TiffFile(cdir / "overlays" / "0015.tif") as t:
        names = [roifile.ImagejRoi.frombytes(b).name for b in t.imagej_metadata["Overlays"]]
    assert int(re.search(r"overlay=(\d+)", line).group(1)) == len(names)  # ImageJ opened it with the overlay
    counts = {}
    for n in names:
        counts[n.split(":")[0]] = counts.get(n.split(":")[0], 0) + 1
    assert counts["consensus"] > 0 and len(counts) == EXPERTS + 1

    # never replaces silently; overwrite=1 does
    err = error_line(run_macro("Compute_Consensus.ijm", args, ij_jar=ij_jar, home=home))
    assert "exists and is not empty" in err
    done_line(run_macro("Compute_Consensus.ijm", {**args, "overwrite": "1"}, ij_jar=ij_jar, home=home))

    show = done_line(run_macro("Show_Results.ijm", {"project": str(project), "result": "consensus/staple",
                                                     "image": "0015"}, ij_jar=ij_jar, home=home))
    shown = {k: int(v) for k, v in re.findall(r"(\S+)=(\d+)", show.split(".tif", 1)[1])}
    assert shown == counts


@pytest.mark.imagej
@pytest.mark.xvfb
def test_compute_consensus_shows_the_cli_error(project, home, ij_jar, tmp_path):
    bad = tmp_path / "bad 'proj' ü"
    shutil.copytree(project / "images", bad / "images")
    for e in ("expert_1", "expert_2"):
        shutil.copytree(project / "annotations" / e, bad / "annotations" / e)
    (bad / "annotations" / "expert_2" / "0001.zip").unlink()
    out = run_macro("Compute_Consensus.ijm", {"python": sys.executable, "project": str(bad)},
                    ij_jar=ij_jar, home=home)
    err = error_line(out)
    assert "fiji-consensus consensus failed" in err and "0001" in err  # the CLI's own message, naming the image
    assert not (bad / "consensus" / "staple").exists()  # a failed run leaves no folder behind
    err = error_line(run_macro("Compute_Consensus.ijm", {"python": sys.executable, "project": str(bad),
                                                         "method": "vote"}, ij_jar=ij_jar, home=home))
    assert "method must be staple, majority or objects" in err


@pytest.mark.imagej
@pytest.mark.xvfb
def test_a_python_without_fiji_consensus_is_reported(project, home, ij_jar, tmp_path):
    fake = tmp_path / "not python"
    fake.write_text("#!/bin/sh\necho 'this is not fiji-consensus'\n")
    fake.chmod(0o755)
    err = error_line(run_macro("Compute_Consensus.ijm", {"python": str(fake), "project": str(project)},
                               ij_jar=ij_jar, home=home))
    assert f"fiji-consensus does not run with {fake}" in err and "this is not fiji-consensus" in err
    err = error_line(run_macro("Compute_Consensus.ijm", {"python": str(tmp_path / "nope"),
                                                         "project": str(project)}, ij_jar=ij_jar, home=home))
    assert "does not exist" in err


@pytest.mark.imagej
@pytest.mark.xvfb
def test_train_rejects_a_bad_model_name(project, home, ij_jar):
    err = error_line(run_macro("Train_Ensemble.ijm", {"python": sys.executable, "project": str(project),
                                                      "name": "../escape"}, ij_jar=ij_jar, home=home))
    assert "is not valid" in err


@pytest.mark.imagej
@pytest.mark.xvfb
def test_train_ensemble_macro_end_to_end(project, home, ij_jar):
    pytest.importorskip("torch")
    args = {"python": sys.executable, "project": str(project), "name": "tiny", "members": "2",
            "iterations": "2", "patch": "64"}
    line = done_line(run_macro("Train_Ensemble.ijm", args, ij_jar=ij_jar, home=home, timeout=600))
    model = project / "models" / "tiny"
    assert str(model) in line
    meta = json.loads((model / "ensemble.json").read_text())
    assert len(meta["members"]) == 2 and meta["provenance"]["experts"] == [f"expert_{k}" for k in (1, 2, 3)]
    err = error_line(run_macro("Train_Ensemble.ijm", args, ij_jar=ij_jar, home=home))
    assert "exists; choose another name" in err
    err = error_line(run_macro("Train_Ensemble.ijm", {**args, "name": "t2", "members": "zero"},
                               ij_jar=ij_jar, home=home))
    assert "whole number" in err

    # predict one image of the project with the new model; the overlay is opened in ImageJ
    image = project / "images" / "0015.tif"
    line = done_line(run_macro("Predict_Ensemble.ijm", {"python": sys.executable, "project": str(project),
                                                         "model": "tiny", "image": str(image)},
                               ij_jar=ij_jar, home=home, timeout=600))
    pred = project / "predictions" / "tiny"
    n_rois = len(rois.read_overlay(pred / "overlays" / "0015.tif"))
    assert "image=0015" in line and f"overlay={n_rois}" in line
    assert tifffile.imread(pred / "probability" / "0015.tif").shape == (SIZE, SIZE)
    err = error_line(run_macro("Predict_Ensemble.ijm", {"python": sys.executable, "project": str(project),
                                                        "model": "missing", "image": str(image)},
                               ij_jar=ij_jar, home=home))
    assert "missing" in err

    # Show Results offers the result finished last (this prediction, not the alphabetically first consensus)
    # and counts the CLI's unprefixed object names as "prediction" (issue 16, bug 8)
    show = done_line(run_macro("Show_Results.ijm", {"project": str(project), "image": "0015"},
                               ij_jar=ij_jar, home=home))
    assert f"show {pred / 'overlays' / '0015.tif'} prediction={n_rois}" in show


@pytest.mark.imagej
@pytest.mark.xvfb
def test_save_expert_annotations(home, ij_jar, tmp_path):
    s = datasets.load_sample()
    proj = tmp_path / "new 'project' é"
    src = tmp_path / "elsewhere ü"
    src.mkdir()
    image = s.image("0076")[512:512 + SIZE, 384:384 + SIZE]
    mask = s.masks("0076")[0, 512:512 + SIZE, 384:384 + SIZE]
    tifffile.imwrite(src / "0076.tif", image)
    given = _expert_rois(mask, "x")
    assert len(given) > 3
    rois.write_roiset(src / "RoiSet.zip", given)
    args = {"project": str(proj), "image": str(src / "0076.tif"), "rois": str(src / "RoiSet.zip"),
            "expert": "anna"}
    line = done_line(run_macro("Save_Expert_Annotations.ijm", args, ij_jar=ij_jar, home=home))
    saved = proj / "annotations" / "anna" / "0076.zip"
    assert f"saved {len(given)} {saved}" in line
    back = rois.read_rois(saved)
    assert [r.name for r in back] == [r.name for r in given]
    assert np.array_equal(rois.rois_to_labels(back, image.shape) > 0, mask)
    assert np.array_equal(tifffile.imread(proj / "images" / "0076.tif"), image)  # the image was copied

    before = saved.read_bytes()
    err = error_line(run_macro("Save_Expert_Annotations.ijm", args, ij_jar=ij_jar, home=home))
    assert "exists; not replaced" in err and saved.read_bytes() == before
    done_line(run_macro("Save_Expert_Annotations.ijm", {**args, "overwrite": "1"}, ij_jar=ij_jar, home=home))

    # without a RoiSet, the image's overlay is saved
    rois.write_imagej_tiff(src / "with overlay.tif", image, rois=given[:3])
    line = done_line(run_macro("Save_Expert_Annotations.ijm",
                               {"project": str(proj), "image": str(src / "with overlay.tif"), "expert": "ben"},
                               ij_jar=ij_jar, home=home))
    assert "saved 3 " in line and (proj / "annotations" / "ben" / "with overlay.zip").is_file()

    err = error_line(run_macro("Save_Expert_Annotations.ijm", {**args, "expert": "a/b"}, ij_jar=ij_jar, home=home))
    assert "not valid" in err
    (proj / "annotations" / "anna" / "0076_old.png").write_bytes(b"")
    err = error_line(run_macro("Save_Expert_Annotations.ijm", {**args, "overwrite": "1"}, ij_jar=ij_jar, home=home))
    assert "already has another annotation of image 0076" in err


@pytest.mark.imagej
@pytest.mark.xvfb
def test_installed_toolset_and_macros_run_in_imagej(project, home, ij_jar, tmp_path):
    """install_macros() into an ImageJ folder; ImageJ (with its GUI, under Xvfb) installs the toolset and
    runs an installed macro."""
    app = tmp_path / "Fiji app"
    (app / "plugins").mkdir(parents=True)
    fiji.install_macros(app)
    # its own project and consensus (made by the CLI), so it runs alone and after any other test
    project = _copy_project(project, tmp_path / "toolset ü")
    made = subprocess.run([sys.executable, "-m", "fiji_consensus", "consensus", "--project", str(project),
                           "--method", "staple", "--min-size", "20", "--out", str(project / "consensus" / "staple"),
                           "--no-progress", "--json"], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0 and (project / "consensus" / "staple" / "overlays").is_dir(), made.stderr
    log = tmp_path / "log.txt"
    driver = tmp_path / "driver.ijm"
    driver.write_text(
        'a = split(getArgument(), "\\n");\n'
        'run("Install...", "install=[" + a[0] + "]");\n'
        'runMacro(a[1], "project=" + a[2]);\n'
        'close("*");\n'
        'print("DRIVER_DONE");\n'
        'File.saveString(getInfo("log"), a[3]);\n'
        'run("Quit");\n', "ascii")
    arg = "\n".join([str(app / "macros" / "toolsets" / "Fiji Consensus.ijm"),
                     str(app / "plugins" / "Fiji_Consensus" / "Show_Results.ijm"), str(project), str(log)])
    r = subprocess.run(["xvfb-run", "-a", "timeout", "-k", "5", "60", "java", f"-Duser.home={home}", "-jar", ij_jar,
                        "-ijpath", str(app), "-macro", str(driver), arg], capture_output=True, text=True,
                       timeout=90, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert r.returncode != 124, "ImageJ hung"
    text = log.read_text("utf-8")
    assert "Exception" not in r.stdout + r.stderr + text
    assert "DRIVER_DONE" in text and "FIJI_CONSENSUS_DONE show" in text, text


# ============================================================================================ clicked through (xdotool)


@pytest.fixture(scope="module")
def display():
    d = Display()
    yield d
    d.close()


def _prefs(home: Path, **prefs: str) -> Path:
    """ImageJ preferences (``~/.imagej/IJ_Prefs.txt``) holding the macros' settings, as a user's earlier runs
    leave them; non-ASCII as Java properties escapes."""
    (home / ".imagej").mkdir(parents=True, exist_ok=True)
    esc = lambda s: "".join(c if 32 <= ord(c) < 127 and c != "\\" else f"\\u{ord(c):04x}" for c in str(s))  # noqa: E731
    (home / ".imagej" / "IJ_Prefs.txt").write_text(
        "".join(f".fiji_consensus.{k}={esc(v)}\n" for k, v in prefs.items()), "ascii")
    return home


def _copy_project(project: Path, dest: Path) -> Path:
    for sub in ("images", "annotations"):
        shutil.copytree(project / sub, dest / sub)
    return dest


def _project_with_zoo_model(project: Path, dest: Path) -> Path:
    """A copy of the project with the zoo package cfos-wue1 in its models/."""
    proj = _copy_project(project, dest)
    (proj / "models").mkdir()
    shutil.copyfile(Path(__file__).resolve().parents[1] / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip",
                    proj / "models" / "cfos-wue1.zip")
    return proj


def _done(log: str, kind: str) -> str:
    assert "FIJI_CONSENSUS_ERROR" not in log and "Exception" not in log, log
    lines = [ln for ln in log.splitlines() if ln.startswith(f"FIJI_CONSENSUS_DONE {kind}")]
    assert len(lines) == 1, log
    return lines[0]


@pytest.mark.imagej
@pytest.mark.xvfb
def test_save_clicked_with_a_second_window_of_the_image(display, ij_jar, tmp_path):
    """Issue 16, bugs 2 and 8: ImageJ titles a second window of one file "0076-1.tif"; the id is the file's
    ("0076"), and after Save the ROI Manager is empty for the next expert. The expert name is pre-filled
    from Next Planned Image's expert, never from the last expert who saved."""
    s = datasets.load_sample()
    src = tmp_path / "src ü"
    src.mkdir()
    image = s.image("0076")[512:512 + SIZE, 384:384 + SIZE]
    tifffile.imwrite(src / "0076.tif", image)
    given = _expert_rois(s.masks("0076")[1, 512:512 + SIZE, 384:384 + SIZE], "x")
    rois.write_roiset(src / "RoiSet.zip", given)
    proj = tmp_path / "proj é"
    proj.mkdir()
    home = _prefs(tmp_path / "home", project=proj, planned_expert="dora", expert="someone_else")
    log, dialogs = run_gui(display, ij_jar, home, built("Save_Expert_Annotations.ijm"), log=tmp_path / "log.txt",
                           steps=[(None,)], open_images=[src / "0076.tif", src / "0076.tif", src / "RoiSet.zip"])
    assert "DRIVER_BEFORE images=2 title=0076-1.tif" in log  # ImageJ renamed the second window
    line = _done(log, "saved")
    saved = proj / "annotations" / "dora" / "0076.zip"
    assert f"saved {len(given)} {saved} image=0076 expert=dora" in line
    assert [r.name for r in rois.read_rois(saved)] == [r.name for r in given]
    assert sorted(p.name for p in (proj / "images").iterdir()) == ["0076.tif"]
    assert sorted(p.name for p in (proj / "annotations" / "dora").iterdir()) == ["0076.zip"]
    assert re.search(r"^DRIVER 0? ?images=2 rois=0 ", log, re.M), log  # the ROI Manager was cleared


@pytest.mark.imagej
@pytest.mark.xvfb
def test_compute_consensus_clicked_shows_scores_and_a_visible_image(project, display, ij_jar, tmp_path):
    """The Compute Consensus dialog clicked with its remembered settings: the Results table holds every
    expert's scores, the image is shown with a display range that fits it, the window says what it is."""
    proj = _copy_project(project, tmp_path / "clicked ü")
    home = _prefs(tmp_path / "home", python=sys.executable, project=proj, method="majority", min_size="10")
    log, dialogs = run_gui(display, ij_jar, home, built("Compute_Consensus.ijm"), log=tmp_path / "log.txt",
                           steps=[("Compute Consensus",)])
    line = _done(log, "consensus")
    cdir = proj / "consensus" / "majority"
    assert json.loads((cdir / "config.json").read_text("utf-8"))["config"]["min_size"] == 10
    assert f"results={EXPERTS}" in line  # one row per expert in the Results table
    first = sorted(CROPS)[0]
    lo, hi = map(float, re.search(r"display=([\d.]+)-([\d.]+)", line).groups())
    img = tifffile.imread(proj / "images" / f"{first}.tif")
    assert img.min() <= lo < hi <= img.max() < 255  # not 0-255: the dim 8-bit image is visible
    assert f"title={first} - consensus (majority) and experts" in log


@pytest.mark.imagej
@pytest.mark.xvfb
def test_train_clicked_passes_whole_numbers_and_reports_validation(project, display, ij_jar, tmp_path):
    """Issue 16, bug 1: numbers from the Train dialog reached the CLI as "1.0" (argparse refused them). Tiny
    run: 1 member, 3 iterations on 64-pixel patches; it ends with the validation score next to the experts'
    and a warning that such a model is not useful."""
    pytest.importorskip("torch")
    proj = _copy_project(project, tmp_path / "train ü")
    home = _prefs(tmp_path / "home", python=sys.executable, project=proj, model_name="clicked", train_members="1",
                  train_minutes="1", train_iterations="3", train_patch="64")
    log, dialogs = run_gui(display, ij_jar, home, built("Train_Ensemble.ijm"), log=tmp_path / "log.txt",
                           steps=[("Train Ensemble",), ("not useful",)], timeout=480)
    line = _done(log, "train")
    meta = json.loads((proj / "models" / "clicked" / "ensemble.json").read_text("utf-8"))
    assert len(meta["members"]) == 1 and meta["members"][0]["iterations"] == 3
    assert "useless=true" in line and re.search(r"val_roi_f1=[\d.]+ ", line), line
    assert "WARNING: this model is not useful yet" in log
    assert "Validation (images each member did not train on)" in log  # a bootstrap split: out of bag


@pytest.mark.imagej
@pytest.mark.xvfb
def test_train_clicked_fine_tunes_a_zoo_package(project, display, ij_jar, tmp_path):
    """The Train dialog's "Start from" choice (remembered: the zoo package in models/) fine-tunes it on the
    project's images: every member on all of them, at the fine-tuning rate, on the experts' fraction, rehearsing
    the labs of the dialog's rehearsal folder; the Log says what to do next. Batch mode: init= names it, and a
    model or a rehearsal folder that is not there is a one-line error."""
    pytest.importorskip("torch")
    proj = _project_with_zoo_model(project, tmp_path / "tune ü")
    labs = tmp_path / "labs é"  # a folder of labs to rehearse (cfos-wue1 names none: every lab in it)
    _copy_project(project, labs / "lab x")
    home = _prefs(tmp_path / "home", python=sys.executable, project=proj, model_name="tuned", train_members="1",
                  train_minutes="1", train_iterations="3", train_patch="64", train_init="cfos-wue1.zip",
                  train_rehearse=str(labs))
    log, dialogs = run_gui(display, ij_jar, home, built("Train_Ensemble.ijm"), log=tmp_path / "log.txt",
                           steps=[("Train Ensemble",)], timeout=480)
    line = _done(log, "train")
    assert "useless=false" in line, line  # three gentle steps from a model trained on this lab: still useful
    meta = json.loads((proj / "models" / "tuned" / "ensemble.json").read_text("utf-8"))
    assert meta["provenance"]["split"] == "all" and meta["provenance"]["init"]["weights_sha256"]
    assert meta["training"]["learning_rate"] == 0.0005 and meta["members"][0]["iterations"] == 3
    # every annotated image, and as many of the rehearsed lab, which gets the other half of the patches
    assert len(meta["provenance"]["splits"][0]["train"]) == 2 * len(CROPS)
    assert sorted(meta["provenance"]["labs"]) == ["lab x", "tune ü"]
    assert meta["provenance"]["lab_weights"] == {"tune ü": 1.0} and meta["training"]["validate_every"] == 3
    assert f"fine-tuned from {proj / 'models' / 'cfos-wue1.zip'}; next: Calibrate Model" in log
    assert f"rehearsed the labs of {labs}" in log
    assert "Validation (images it was also trained on (split 'all', as in fine-tuning): optimistic" in log
    args = {"python": sys.executable, "project": str(proj), "name": "t2", "members": "1", "iterations": "2",
            "patch": "64", "init": "nope.zip"}
    err = error_line(run_macro("Train_Ensemble.ijm", args, ij_jar=ij_jar, home=home))
    assert "the model nope.zip does not exist" in err and not (proj / "models" / "t2").exists()
    args.update(init="cfos-wue1.zip", rehearse=str(tmp_path / "nolabs"))
    err = error_line(run_macro("Train_Ensemble.ijm", args, ij_jar=ij_jar, home=home))
    assert f"the rehearsal folder {tmp_path / 'nolabs'} does not exist" in err and not (proj / "models" / "t2").exists()


@pytest.mark.imagej
@pytest.mark.xvfb
@pytest.mark.slow
def test_predict_clicked_with_a_zoo_package(project, display, ij_jar, tmp_path):
    """Issue 16, bug 7: the Predict dialog offers a bioimage.io package (.zip) in models/, not only folders."""
    pytest.importorskip("bioimageio.core")
    proj = _project_with_zoo_model(project, tmp_path / "predict ü")
    home = _prefs(tmp_path / "home", python=sys.executable, project=proj, predict_model="cfos-wue1.zip")
    log, dialogs = run_gui(display, ij_jar, home, built("Predict_Ensemble.ijm"), log=tmp_path / "log.txt",
                           steps=[("Predict",)], open_images=[proj / "images" / "0015.tif"], timeout=240)
    line = _done(log, "predict")
    assert line.endswith(" subtracted=") and "background" not in line  # a training lab's crop: not subtracted
    n = int(re.search(r"overlay=(\d+)", line).group(1))
    assert n == len(rois.read_overlay(proj / "predictions" / "cfos-wue1" / "overlays" / "0015.tif")) > 0
    assert "title=0015 - prediction (cfos-wue1)" in log
    # the dialog's background radius (remembered from an earlier run: 30) reaches predict
    home = _prefs(tmp_path / "home2", python=sys.executable, project=proj, predict_model="cfos-wue1.zip",
                  predict_subtract="30")
    log, _ = run_gui(display, ij_jar, home, built("Predict_Ensemble.ijm"), log=tmp_path / "log2.txt",
                     steps=[("Predict",)], open_images=[proj / "images" / "0015.tif"], timeout=240)
    line = _done(log, "predict")
    record = json.loads((proj / "predictions" / "cfos-wue1-bg30" / "per_image" / "0015.json").read_text())
    assert record["subtract_background"] == 30 and "cfos-wue1-bg30" in line
    # and its checkbox "only where flagged" (remembered: on): this crop's background is not flagged
    home = _prefs(tmp_path / "home3", python=sys.executable, project=proj, predict_model="cfos-wue1.zip",
                  predict_subtract="30", predict_ifflagged="1")
    log, _ = run_gui(display, ij_jar, home, built("Predict_Ensemble.ijm"), log=tmp_path / "log3.txt",
                     steps=[("Predict",)], open_images=[proj / "images" / "0015.tif"], timeout=240)
    line = _done(log, "predict")
    record = json.loads((proj / "predictions" / "cfos-wue1-bgflagged30" / "per_image" / "0015.json").read_text())
    assert record["subtract_background"] is None and line.endswith(" subtracted=")


# ============================================================================================ issue 16 bugs (batch)


@pytest.mark.imagej
@pytest.mark.xvfb
def test_an_expert_who_finds_no_cells_saves_an_empty_annotation(project, home, ij_jar, tmp_path):
    """Issue 16, bug 4: an empty ROI Manager is a valid answer (after a confirmation: argument empty=1); the
    consensus then counts the expert's "no objects" instead of refusing the project."""
    proj = _copy_project(project, tmp_path / "empty ü")
    shutil.rmtree(proj / "annotations" / "expert_3")
    (proj / "annotations" / "expert_3").mkdir()
    rois.write_roiset(proj / "annotations" / "expert_3" / "0001.zip",
                      rois.read_rois(project / "annotations" / "expert_3" / "0001.zip"))
    args = {"project": str(proj), "image": str(proj / "images" / "0015.tif"), "expert": "expert_3"}
    err = error_line(run_macro("Save_Expert_Annotations.ijm", args, ij_jar=ij_jar, home=home))
    assert "the ROI Manager is empty" in err and "empty=1" in err
    line = done_line(run_macro("Save_Expert_Annotations.ijm", {**args, "empty": "1"}, ij_jar=ij_jar, home=home))
    saved = proj / "annotations" / "expert_3" / "0015.zip"
    assert f"saved 0 {saved} image=0015" in line and rois.read_rois(saved) == []
    line = done_line(run_macro("Compute_Consensus.ijm", {"python": sys.executable, "project": str(proj),
                                                         "method": "majority"}, ij_jar=ij_jar, home=home))
    assert "results=3" in line


@pytest.mark.imagej
@pytest.mark.xvfb
def test_a_failed_consensus_leaves_nothing_that_blocks_the_next(project, home, ij_jar, tmp_path):
    """Issue 16, bug 5: a run that fails half-way (a corrupt RoiSet) left config.json and partial outputs; the
    next run said "exists and is not empty" and Show Results offered the partial result."""
    proj = _copy_project(project, tmp_path / "fails ü")
    good = proj / "annotations" / "expert_2" / "0015.zip"
    keep = good.read_bytes()
    good.write_bytes(b"PK\x03\x04 this is not a RoiSet")
    args = {"python": sys.executable, "project": str(proj), "method": "staple"}
    err = error_line(run_macro("Compute_Consensus.ijm", args, ij_jar=ij_jar, home=home))
    assert "fiji-consensus consensus failed" in err and "0015" in err
    assert not (proj / "consensus" / "staple").exists()
    err = error_line(run_macro("Show_Results.ijm", {"project": str(proj)}, ij_jar=ij_jar, home=home))
    assert "no finished results" in err
    good.write_bytes(keep)
    line = done_line(run_macro("Compute_Consensus.ijm", args, ij_jar=ij_jar, home=home))  # no overwrite=1 needed
    assert "results=3" in line and (proj / "consensus" / "staple" / "summary.json").is_file()
    # an unfinished result (no summary.json: a killed run) is not shown, and is replaced without asking
    (proj / "consensus" / "staple" / "summary.json").unlink()
    err = error_line(run_macro("Show_Results.ijm", {"project": str(proj)}, ij_jar=ij_jar, home=home))
    assert "no finished results" in err
    done_line(run_macro("Compute_Consensus.ijm", args, ij_jar=ij_jar, home=home))
    assert (proj / "consensus" / "staple" / "summary.json").is_file()


@pytest.mark.imagej
@pytest.mark.xvfb
def test_compute_consensus_refuses_an_unknown_image(project, home, ij_jar, tmp_path):
    """Issue 16, bug 2: image=9999 opened the first image silently."""
    proj = _copy_project(project, tmp_path / "unknown")
    err = error_line(run_macro("Compute_Consensus.ijm", {"python": sys.executable, "project": str(proj),
                                                         "method": "majority", "image": "9999"},
                               ij_jar=ij_jar, home=home))
    assert "no image 9999" in err


@pytest.mark.imagej
@pytest.mark.xvfb
def test_python_may_be_the_script_the_venv_or_the_interpreter(project, home, ij_jar, tmp_path):
    """Issue 16, bug 6: the fiji-consensus script and the venv folder are accepted; a program that says
    nothing on stdout gets a message that says so (exec() drops stderr)."""
    venv_bin = Path(sys.executable).parent
    script = venv_bin / "fiji-consensus"
    if not script.is_file():
        pytest.skip(f"no fiji-consensus script beside {sys.executable}")
    proj = _copy_project(project, tmp_path / "py")
    base = {"project": str(proj), "method": "majority", "image": "0015"}
    done_line(run_macro("Compute_Consensus.ijm", {**base, "python": str(script)}, ij_jar=ij_jar, home=home))
    done_line(run_macro("Compute_Consensus.ijm", {**base, "python": str(venv_bin.parent) + "/", "overwrite": "1"},
                        ij_jar=ij_jar, home=home))
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\necho 'No module named fiji_consensus' >&2\nexit 1\n")
    silent.chmod(0o755)
    err = error_line(run_macro("Compute_Consensus.ijm", {**base, "python": str(silent)}, ij_jar=ij_jar, home=home))
    assert f"fiji-consensus does not run with {silent}" in err and "nothing on its standard output" in err
    assert "-m pip install" in err and f"{tmp_path} -m pip" not in err
    err = error_line(run_macro("Compute_Consensus.ijm", {**base, "python": str(tmp_path)}, ij_jar=ij_jar, home=home))
    assert "holds no Python interpreter" in err


@pytest.mark.imagej
@pytest.mark.xvfb
def test_next_planned_image_reports_a_missing_plan_command(project, home, ij_jar, tmp_path):
    """A fiji-consensus without the `plan` command (or one that fails) gives a clear message, no hang."""
    fake = tmp_path / "old fiji-consensus python"
    fake.write_text("#!/bin/sh\nif [ \"$4\" = --version ]; then echo 'fiji-consensus 0.1'; exit 0; fi\n"
                    "echo \"fiji-consensus: error: argument COMMAND: invalid choice: 'plan'\"\nexit 2\n")
    fake.chmod(0o755)
    err = error_line(run_macro("Next_Planned_Image.ijm", {"python": str(fake), "project": str(project),
                                                          "expert": "dora"}, ij_jar=ij_jar, home=home))
    assert "no annotation plans ('plan' command)" in err


def _plan_available() -> bool:
    r = subprocess.run([sys.executable, "-m", "fiji_consensus", "plan", "--help"], capture_output=True, timeout=120)
    return r.returncode == 0


@pytest.mark.imagej
@pytest.mark.xvfb
def test_next_planned_image_opens_the_experts_next_image(project, home, ij_jar, tmp_path):
    """The toolset's Next Planned Image: `fiji-consensus plan next --project P --expert E --json` names the
    image; the macro opens it (contract with issue 20)."""
    if not _plan_available():
        pytest.skip("`fiji-consensus plan --help` fails: this fiji-consensus has no annotation plans (issue 20)")
    proj = _copy_project(project, tmp_path / "plan ü")
    (proj / "annotations" / "expert_1" / "0001.zip").unlink()  # expert_1 still has to annotate 0001
    r = subprocess.run([sys.executable, "-m", "fiji_consensus", "plan", "--project", str(proj), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "fiji_consensus", "plan", "next", "--project", str(proj), "--expert",
                        "expert_1", "--json"], capture_output=True, text=True, timeout=120)
    expected = json.loads(r.stdout.strip().splitlines()[-1])
    out = run_macro("Next_Planned_Image.ijm", {"python": sys.executable, "project": str(proj),
                                               "expert": "expert_1"}, ij_jar=ij_jar, home=home)
    line = done_line(out)
    if expected.get("image") is None:
        assert "FIJI_CONSENSUS_DONE plan none expert=expert_1" in line
    else:
        assert f"plan image={expected['image']} expert=expert_1 remaining={expected['remaining']}" in line
        assert f"title={Path(expected['path']).name}" in line


_TOOLSET_DRIVER = (  # installs the toolset (+ one menu macro that calls its fcRunMacro) and runs that macro
    'a = split(getArgument(), "\\n");\n'
    'run("Install...", "install=[" + a[0] + "]");\n'
    'r = call("ij.plugin.MacroInstaller.runMacroCommand", "FC Test Save");\n'
    'for (i = 0; i < 200 && indexOf(getInfo("log"), "FIJI_CONSENSUS_") < 0; i++) wait(100);\n'
    'print("DRIVER " + r);\n'
    'File.saveString(getInfo("log"), a[1]);\n'
)


@pytest.mark.imagej
@pytest.mark.xvfb
@pytest.mark.parametrize("how", ["install-macros", "write-macros, copied by hand", "flat copy into plugins"])
def test_the_toolset_finds_the_macros_however_they_were_installed(display, ij_jar, tmp_path, how):
    """Issue 16, bug 3: after the README's manual install every toolset entry said "... was not found in
    Fiji.app/plugins/Fiji_Consensus/". The toolset's Save button runs the installed Save macro, which (no image
    open) answers with its own message."""
    app = tmp_path / "Fiji app"
    (app / "plugins").mkdir(parents=True)
    (app / "macros").mkdir()
    if how == "install-macros":
        fiji.install_macros(app)
    else:
        out = tmp_path / "written"
        r = subprocess.run([sys.executable, "-m", "fiji_consensus", "fiji", "write-macros", str(out), "--json"],
                           capture_output=True, text=True, timeout=120)
        assert json.loads(r.stdout)["command"] == "fiji write-macros", r.stdout + r.stderr
        if how.startswith("write-macros"):  # README: copy OUT's plugins/ and macros/ folders into Fiji.app
            shutil.copytree(out / "plugins", app / "plugins", dirs_exist_ok=True)
            shutil.copytree(out / "macros", app / "macros", dirs_exist_ok=True)
        else:  # the macros straight into plugins/, the toolset into macros/toolsets/
            for f in (out / "plugins" / "Fiji_Consensus").iterdir():
                shutil.copy(f, app / "plugins" / f.name)
            shutil.copytree(out / "macros", app / "macros", dirs_exist_ok=True)
    toolset = app / "macros" / "toolsets" / "Fiji Consensus.ijm"  # listed as "Fiji Consensus" in >>
    assert toolset.is_file() and not list(app.rglob("*Toolset*")) and not list(app.rglob(fiji.HELPERS))
    (tmp_path / "proj").mkdir()
    home = _prefs(tmp_path / "home", project=tmp_path / "proj")
    driven = tmp_path / "toolset and a test entry.ijm"  # the installed toolset, plus a menu entry that a macro
    driven.write_text(toolset.read_text("ascii") +  # can run (toolbar buttons cannot be run by name)
                      '\nmacro "FC Test Save" {\n\tfcRunMacro("Save_Expert_Annotations.ijm");\n}\n', "ascii")
    log, dialogs = run_gui(display, ij_jar, home, driven, log=tmp_path / "log.txt", ijpath=app,
                           steps=[("^Macro$",)], driver_code=_TOOLSET_DRIVER)  # the macro's own error
    assert "FIJI_CONSENSUS_ERROR: open the image you annotated first" in log, (log, dialogs)
    assert "was not found" not in log


@pytest.mark.imagej
@pytest.mark.xvfb
def test_predict_macro_says_out_of_domain_and_subtracts_the_background(shared_data, home, ij_jar, tmp_path):
    """Issue 14: the Fiji macro, not only the CLI, says when an image looks unlike the model's training images,
    names the remedy for a bright background, and applies it (Subtract Background's rolling ball) on request."""
    import imageio.v3 as iio

    proj = tmp_path / "bright ü"
    (proj / "models").mkdir(parents=True)
    (proj / "images").mkdir()
    shutil.copyfile(Path(__file__).resolve().parents[1] / "model_zoo" / "cfos-3labs" / "cfos-3labs.zip",
                    proj / "models" / "cfos-3labs.zip")
    im = iio.imread(shared_data / "lab-mue" / "images" / "1049.png")[128:384, 128:384].astype(np.float64)
    yy, xx = np.mgrid[:256, :256]
    field = 1.2 * np.percentile(im, 99.9) * (0.7 * np.exp(-((yy - 128) ** 2 + (xx - 140) ** 2) / (2 * 77.0**2))
                                             + 0.3 * xx / 256)
    tifffile.imwrite(proj / "images" / "bright.tif", np.clip(im + field, 0, 255).astype(np.uint8))
    args = {"python": sys.executable, "project": str(proj), "model": "cfos-3labs.zip",
            "image": str(proj / "images" / "bright.tif")}
    out = run_macro("Predict_Ensemble.ijm", args, ij_jar=ij_jar, home=home, timeout=300)
    line = done_line(out)
    assert "out_of_domain=" in line and "background" in line.split("out_of_domain=")[1], line
    assert "WARNING: bright looks unlike cfos-3labs's training images" in out
    assert "predict again with 'Subtract background'" in out
    out = run_macro("Predict_Ensemble.ijm", {**args, "subtract": "30"}, ij_jar=ij_jar, home=home, timeout=300)
    line = done_line(out)
    pred = proj / "predictions" / "cfos-3labs-bg30"
    assert f"FIJI_CONSENSUS_DONE predict {pred} image=bright" in line and "Subtract background'" not in out
    assert json.loads((pred / "per_image" / "bright.json").read_text())["subtract_background"] == 30
    # the overlay keeps the user's image as it was (the subtraction is only the model's input)
    assert np.array_equal(tifffile.imread(pred / "overlays" / "bright.tif")[0],
                          tifffile.imread(proj / "images" / "bright.tif").astype(np.float32))
    assert "subtracted=30" in line
    # only where flagged, with the model's suggested radius (this image is flagged: 30)
    line = done_line(run_macro("Predict_Ensemble.ijm", {**args, "ifflagged": "1"}, ij_jar=ij_jar, home=home,
                               timeout=300))
    assert f"predict {proj / 'predictions' / 'cfos-3labs-bgflagged'} image=bright" in line
    assert "subtracted=30" in line and "out_of_domain= " in line
    err = error_line(run_macro("Predict_Ensemble.ijm", {**args, "subtract": "-5"}, ij_jar=ij_jar, home=home))
    assert "subtract-background" in err and "greater than 0 (got -5.0)" in err
    # tissue texture at the nuclei's scale: the rolling ball leaves it, and the Log says so (no false remedy)
    tissue = ndi.gaussian_filter(np.random.default_rng(1).normal(size=im.shape), 6.0)
    tissue *= 0.2 * np.percentile(im, 99.9) / tissue.std()
    tifffile.imwrite(proj / "images" / "tissue.tif", np.clip(im + field + tissue, 0, 255).astype(np.uint8))
    out = run_macro("Predict_Ensemble.ijm", {**args, "image": str(proj / "images" / "tissue.tif"), "ifflagged": "1"},
                    ij_jar=ij_jar, home=home, timeout=300)
    line = done_line(out)
    assert "subtracted=30" in line and "background_texture" in line.split("out_of_domain=")[1], line
    assert "textured at the objects' scale" in out and "predict again with 'Subtract background'" not in out


@pytest.mark.imagej
@pytest.mark.xvfb
def test_calibrate_clicked_then_predict_applies_both_thresholds(project, display, ij_jar, tmp_path):
    """Calibrate Model, clicked with its defaults: a zoo package gets this project's threshold and object
    threshold (chosen on the experts' annotated images) as a new model in models/, which Predict then offers
    first and applies; a used name, an unknown model and the one-threshold option in batch mode."""
    pytest.importorskip("bioimageio.core")
    proj = _project_with_zoo_model(project, tmp_path / "calibrate ü")
    home = _prefs(tmp_path / "home", python=sys.executable, project=proj, predict_model="cfos-wue1.zip")
    driver = ('a = split(getArgument(), "\\n");\n'
              'r = runMacro(a[0], "");\n'
              'print("DRIVER " + r + " predict_model=" + call("ij.Prefs.get", "fiji_consensus.predict_model", ""));\n'
              'File.saveString(getInfo("log"), a[1]);\n')
    log, dialogs = run_gui(display, ij_jar, home, built("Calibrate_Model.ijm"), log=tmp_path / "log.txt",
                           steps=[("Calibrate Model",)], timeout=300, driver_code=driver)
    line = _done(log, "calibrate")
    out = proj / "models" / "cfos-wue1-calibrated"
    meta = json.loads((out / "ensemble.json").read_text("utf-8"))
    cal = meta["provenance"]["calibrations"][-1]
    assert cal["images"] == sorted(CROPS) and cal["previous_threshold"] == 0.5
    obj = "none" if meta.get("object_threshold") is None else str(meta["object_threshold"])
    assert f"threshold={meta['threshold']} object_threshold={obj} " in line
    assert f"the best single threshold: {cal['roi_f1_one_threshold']:.3f}" in log
    assert "predict_model=cfos-wue1-calibrated" in log  # Predict offers it first
    # Predict with the calibrated model applies its thresholds
    pred = done_line(run_macro("Predict_Ensemble.ijm", {"python": sys.executable, "project": str(proj),
                                                        "model": "cfos-wue1-calibrated",
                                                        "image": str(proj / "images" / "0015.tif")},
                               ij_jar=ij_jar, home=home, timeout=300))
    rec = json.loads((proj / "predictions" / "cfos-wue1-calibrated" / "per_image" / "0015.json").read_text())
    assert "overlay=" in pred and rec["threshold"] == meta["threshold"]
    assert rec["object_threshold"] == meta.get("object_threshold")
    args = {"python": sys.executable, "project": str(proj), "model": "cfos-wue1.zip"}
    err = error_line(run_macro("Calibrate_Model.ijm", {**args, "name": "cfos-wue1-calibrated"}, ij_jar=ij_jar,
                               home=home))
    assert "exists; choose another name" in err
    err = error_line(run_macro("Calibrate_Model.ijm", {**args, "model": "nope.zip"}, ij_jar=ij_jar, home=home))
    assert "the model nope.zip does not exist" in err
    line = done_line(run_macro("Calibrate_Model.ijm", {**args, "name": "one", "only_threshold": "1"},
                               ij_jar=ij_jar, home=home, timeout=300))
    assert "object_threshold=none" in line
    assert "object_threshold" not in json.loads((proj / "models" / "one" / "ensemble.json").read_text("utf-8"))
