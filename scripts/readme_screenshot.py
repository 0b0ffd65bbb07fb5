"""The README picture: experts, consensus and ensemble outlines in real ImageJ (under Xvfb).

Self-contained (``make screenshot``): from the bundled lab-wue1 sample it

1. makes a project of a 256 x 256 crop of image 0001 and runs ``fiji-consensus consensus`` on it: the overlay
   TIFF holds each expert's outlines (one colour per expert) and the STAPLE consensus (white);
2. trains a tiny ensemble with ``fiji-consensus train`` on the four *other* images (a few minutes on a
   2-core CPU; ``--model DIR`` uses an existing ensemble instead);
3. runs the ensemble on the crop through the Python-ImageJ bridge (``fiji_consensus.fiji.predict``, in-process
   ImageJ 1 via JPype): its objects are stroked by their uncertainty, cyan (certain) to red, as
   ``fiji-consensus predict`` colours them;
4. opens both images in ImageJ 1 (Debian libij-java) on a virtual display, takes a screenshot of each window
   and puts them side by side in ``docs/consensus_in_imagej.png``.

Needs: Java, ij.jar (``IJ_JAR`` or Debian's), xvfb, xdotool, imagemagick (``import``), the ``train`` extra.
Run: ``python scripts/readme_screenshot.py [--out PNG] [--model DIR] [--work DIR]``
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
SHOWN, CROP = "0001", (slice(256, 512), slice(448, 704))
TRAIN_CROP = (slice(None), slice(None))  # the whole 1024 x 1024 images
#: A tiny ensemble: about a minute per member on a 2-core CPU; unsure, but enough to show objects and their
#: uncertainty (a real one: ``fiji-consensus train`` with its defaults, see README).
TINY_TRAINING = ["--members", "3", "--iterations", "300", "--patch-size", "96", "--batch-size", "4",
                 "--depth", "2", "--base-channels", "8", "--validate-every", "150", "--learning-rate", "0.004",
                 "--threads", "2"]
TITLES = ("experts-and-consensus", "ensemble-by-uncertainty")


def _cli(*args: str) -> dict:
    """Run the fiji-consensus CLI with --json; its result line."""
    proc = subprocess.run([sys.executable, "-m", "fiji_consensus", *args, "--json", "--no-progress", "-q"],
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"fiji-consensus {args[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return json.loads(lines[-1])


def _project(root: Path, ids: list[str], crop: tuple[slice, slice]) -> Path:
    from fiji_consensus import datasets

    sample = datasets.load_sample()
    (root / "images").mkdir(parents=True)
    for image_id in ids:
        iio.imwrite(root / "images" / f"{image_id}.png", sample.image(image_id)[crop])
        masks = sample.masks(image_id)[:, crop[0], crop[1]]
        for k, e in enumerate(sample.experts):
            (root / "annotations" / e).mkdir(parents=True, exist_ok=True)
            iio.imwrite(root / "annotations" / e / f"{image_id}.png", masks[k].astype(np.uint8) * 255)
    return root


def _label(fiji, imp, text: str) -> None:
    """A caption at the top left of the image, in its overlay (a Java TextRoi)."""
    import jpype

    Font, Color = jpype.JClass("java.awt.Font"), jpype.JClass("java.awt.Color")
    t = jpype.JClass("ij.gui.TextRoi")(2, 1, text, Font("SansSerif", Font.BOLD, 8))
    t.setStrokeColor(Color.white)
    t.setFillColor(Color(0, 0, 0, 170))
    fiji.push_rois(imp, [t], name_prefix="caption:")


def make_images(work: Path, model: Path | None) -> tuple[Path, Path]:
    """The two overlay TIFFs to show: experts + consensus, and the ensemble's objects."""
    import jpype

    from fiji_consensus import datasets, fiji

    shown = _project(work / "shown", [SHOWN], CROP)
    res = _cli("consensus", "--project", str(shown), "--min-size", "30", "--out", str(shown / "consensus"))
    if not res.get("ok", False):
        raise RuntimeError(f"consensus failed: {res}")
    if model is None:
        others = [i for i in datasets.load_sample().ids if i != SHOWN]
        train = _project(work / "train", others, TRAIN_CROP)
        model = work / "models" / "tiny"
        t0 = time.perf_counter()
        _cli("train", "--project", str(train), "--out", str(model), *TINY_TRAINING)
        print(f"trained a tiny ensemble in {time.perf_counter() - t0:.0f} s: {model}")
    fiji.connect(headless=True)
    imp = jpype.JClass("ij.IJ").openImage(str(shown / "consensus" / "overlays" / f"{SHOWN}.tif"))
    _label(fiji, imp, "5 experts (colours) + consensus (white)")
    first = fiji.save_tiff(imp, work / f"{TITLES[0]}.tif", overwrite=True)
    image = iio.imread(shown / "images" / f"{SHOWN}.png")
    pred = fiji.to_imageplus(image, title=TITLES[1])
    _, out = fiji.predict(pred, model, tta="flips", min_size=30, return_result=True)
    print(f"ensemble: {len(out['objects'])} objects, mean uncertainty "
          f"{np.mean(out['object_uncertainty']) if len(out['objects']) else float('nan'):.3f} bits")
    _label(fiji, pred, "ensemble: cyan = certain ... red = uncertain")
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
            for _ in range(120):
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
    ap.add_argument("--model", type=Path, default=None, help="an ensemble folder (default: train a tiny one)")
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
