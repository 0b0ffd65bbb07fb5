"""The README picture: experts, consensus and the zoo model's objects in real ImageJ (under Xvfb).

Self-contained (``make screenshot``): on a 256 x 256 crop of image 1051 of lab-mue, a lab whose images the zoo
model never saw (it was trained on lab-wue1), it

1. makes a project of the crop with the lab's four experts and runs ``fiji-consensus consensus`` on it: the
   overlay TIFF holds each expert's outlines (one colour per expert) and the STAPLE consensus (white);
2. runs the zoo model (``model_zoo/cfos-wue1/cfos-wue1.zip``, a bioimage.io package; ``--model`` takes another
   package or an ensemble folder) on the crop through the Python-ImageJ bridge (``fiji_consensus.fiji.predict``,
   in-process ImageJ 1 via JPype): its objects are stroked by their uncertainty, cyan (certain) to red, as
   ``fiji-consensus predict`` colours them;
3. opens both images in ImageJ 1 (Debian libij-java) on a virtual display, takes a screenshot of each window
   and puts them side by side in ``docs/consensus_in_imagej.png``.

Needs: Java, ij.jar (``IJ_JAR`` or Debian's), xvfb, xdotool, imagemagick (``import``), the ``zoo`` extra.
Run: ``python scripts/readme_screenshot.py [--out PNG] [--model ZIP_OR_DIR] [--work DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "data" / "segebarth2020" / "lab-mue"  # held out: the zoo model was trained on lab-wue1 only
SHOWN, CROP = "1051", (slice(128, 384), slice(512, 768))  # 77 nuclei in the lab's consensus (est_GT)
ZOO_MODEL = REPO / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
TITLES = ("experts-and-consensus", "zoo-model-by-uncertainty")


def _cli(*args: str) -> dict:
    """Run the fiji-consensus CLI with --json; its result line."""
    proc = subprocess.run([sys.executable, "-m", "fiji_consensus", *args, "--json", "--no-progress", "-q"],
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"fiji-consensus {args[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return json.loads(lines[-1])


def _experts() -> list[str]:
    return sorted(p.name for p in (LAB / "labels").glob("expert_*") if p.is_dir())


def _project(root: Path) -> Path:
    """A project of the crop of ``SHOWN``: its image and every expert's mask."""
    (root / "images").mkdir(parents=True)
    iio.imwrite(root / "images" / f"{SHOWN}.png", iio.imread(LAB / "images" / f"{SHOWN}.png")[CROP])
    for e in _experts():
        (root / "annotations" / e).mkdir(parents=True, exist_ok=True)
        mask = iio.imread(LAB / "labels" / e / f"{SHOWN}_cFOS.png")[CROP] > 0
        iio.imwrite(root / "annotations" / e / f"{SHOWN}.png", mask.astype(np.uint8) * 255)
    return root


def _label(fiji, imp, text: str) -> None:
    """A caption at the top left of the image, in its overlay (a Java TextRoi)."""
    import jpype

    Font, Color = jpype.JClass("java.awt.Font"), jpype.JClass("java.awt.Color")
    t = jpype.JClass("ij.gui.TextRoi")(2, 1, text, Font("SansSerif", Font.BOLD, 8))
    t.setStrokeColor(Color.white)
    t.setFillColor(Color(0, 0, 0, 170))
    fiji.push_rois(imp, [t], name_prefix="caption:")


def make_images(work: Path, model: Path) -> tuple[Path, Path]:
    """The two overlay TIFFs to show: experts + consensus, and the model's objects."""
    import jpype

    from fiji_consensus import fiji

    shown = _project(work / "shown")
    res = _cli("consensus", "--project", str(shown), "--min-size", "30", "--out", str(shown / "consensus"))
    if not res.get("ok", False):
        raise RuntimeError(f"consensus failed: {res}")
    fiji.connect(headless=True)
    imp = jpype.JClass("ij.IJ").openImage(str(shown / "consensus" / "overlays" / f"{SHOWN}.tif"))
    _label(fiji, imp, f"{len(_experts())} experts (colours) + consensus (white)")
    first = fiji.save_tiff(imp, work / f"{TITLES[0]}.tif", overwrite=True)
    image = iio.imread(shown / "images" / f"{SHOWN}.png")
    pred = fiji.to_imageplus(image, title=TITLES[1])
    t0 = time.perf_counter()
    _, out = fiji.predict(pred, str(model), return_result=True)
    print(f"model {model.name}: {len(out['objects'])} objects, mean uncertainty "
          f"{np.mean(out['object_uncertainty']) if len(out['objects']) else float('nan'):.3f} bits "
          f"({time.perf_counter() - t0:.0f} s)")
    _label(fiji, pred, "zoo model, unseen lab: cyan certain .. red unsure")
    second = fiji.save_tiff(pred, work / f"{TITLES[1]}.tif", overwrite=True)
    return first, second


def screenshot(tiffs: tuple[Path, Path], out_png: Path, ij_jar: str, work: Path) -> None:
    """Open the TIFFs in ImageJ on a virtual display and save both windows side by side."""
    macro = work / "show.ijm"
    lines = []
    for k, (tif, title) in enumerate(zip(tiffs, TITLES)):
        lines += [f"open({json.dumps(str(tif))});", f'rename("{title}");', 'run("Enhance Contrast", "saturated=0.2");',
                  'run("Set... ", "zoom=200 x=128 y=128");', f"setLocation({20 + 560 * k}, 120);"]
    macro.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Xvfb picks a free display number and writes it to a pipe (-displayfd)
    rfd, wfd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1200x760x24", "-nolisten", "tcp"],
                            pass_fds=(wfd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        number = f.readline().strip()
    if not number:
        xvfb.kill()
        raise RuntimeError("Xvfb did not start")
    display = f":{number}"
    env = {**os.environ, "DISPLAY": display, "LC_ALL": "C.UTF-8"}
    ij = None
    try:
        ij = subprocess.Popen(["java", "-jar", ij_jar, "-macro", str(macro)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shots = []
        for title in TITLES:
            wid = None
            for _ in range(480):  # up to 4 minutes: ImageJ starts slowly on a busy machine
                r = subprocess.run(["xdotool", "search", "--name", f"^{title}"], env=env, capture_output=True,
                                   text=True)
                if r.stdout.strip():
                    wid = r.stdout.split()[-1]
                    break
                time.sleep(0.5)
            if wid is None:
                raise RuntimeError(f"the ImageJ window {title!r} did not appear")
            shots.append(wid)
        parts = []
        for k, wid in enumerate(shots):
            # ImageJ paints a zoomed window in steps (slowly on a busy machine): take the window once two
            # grabs a second apart are the same
            png, previous = work / f"window{k}.png", None
            for _ in range(60):
                time.sleep(1.0)
                subprocess.run(["import", "-window", wid, str(png)], env=env, check=True)
                grab = iio.imread(png)[..., :3]
                if previous is not None and grab.shape == previous.shape and np.array_equal(grab, previous):
                    break
                previous = grab
            else:
                raise RuntimeError(f"the ImageJ window {TITLES[k]!r} kept changing")
            parts.append(grab)
    finally:
        if ij is not None:
            ij.kill()
            ij.wait()
        xvfb.kill()
        xvfb.wait()
    h = max(p.shape[0] for p in parts)
    gap = np.full((h, 12, 3), 255, np.uint8)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in parts]
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(out_png.name + ".tmp.png")
    iio.imwrite(tmp, np.concatenate([padded[0], gap, padded[1]], axis=1))
    os.replace(tmp, out_png)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "consensus_in_imagej.png")
    ap.add_argument("--model", type=Path, default=ZOO_MODEL,
                    help="a bioimage.io package or an ensemble folder (default: the zoo's cfos-wue1.zip)")
    ap.add_argument("--work", type=Path, default=None, help="keep the intermediate files here")
    a = ap.parse_args(argv)
    from fiji_consensus import fiji

    try:
        ij_jar = str(fiji.find_ij_jar())
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    for tool in ("Xvfb", "xdotool", "import", "java"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install xvfb xdotool imagemagick default-jre-headless", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tiffs = make_images(work, a.model)
        screenshot(tiffs, a.out, ij_jar, work)
    print(f"wrote {a.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
