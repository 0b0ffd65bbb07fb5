"""Screenshot of a consensus result in real ImageJ (under Xvfb) for the README.

Makes a small project from a crop of the bundled sample, runs `fiji-consensus consensus`, opens the overlay TIFF
in ImageJ 1 (Debian libij-java) on a virtual display, and saves the window as docs/consensus_in_imagej.png.
Needs: xvfb, xdotool, imagemagick (`import`), Java, ij.jar. Run: python scripts/readme_screenshot.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from fiji_consensus import datasets

REPO = Path(__file__).resolve().parents[1]
IMAGE_ID, CROP = "0001", (slice(256, 512), slice(448, 704))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "consensus_in_imagej.png")
    out_png = ap.parse_args(argv).out
    jar = os.environ.get("IJ_JAR", "/usr/share/java/ij.jar")
    for tool in ("Xvfb", "xdotool", "import", "java"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install xvfb xdotool imagemagick default-jre-headless", file=sys.stderr)
            return 1
    sample = datasets.load_sample()
    with tempfile.TemporaryDirectory() as tmp:
        proj = Path(tmp) / "project"
        (proj / "images").mkdir(parents=True)
        iio.imwrite(proj / "images" / f"{IMAGE_ID}.png", sample.image(IMAGE_ID)[CROP])
        for k, e in enumerate(sample.experts):
            d = proj / "annotations" / e
            d.mkdir(parents=True)
            iio.imwrite(d / f"{IMAGE_ID}.png", sample.masks(IMAGE_ID)[k][CROP].astype(np.uint8) * 255)
        res = proj / "consensus"
        subprocess.run([sys.executable, "-m", "fiji_consensus", "consensus", "--project", str(proj),
                        "--min-size", "30", "--out", str(res), "--no-progress", "-q"], check=True)
        macro = Path(tmp) / "show.ijm"
        macro.write_text(
            f'open("{res / "overlays" / (IMAGE_ID + ".tif")}");\n'
            'run("Set... ", "zoom=200 x=128 y=128");\n'
            'rename("consensus-and-experts");\n'
        )
        display = ":97"
        xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1000x800x24"])
        env = {**os.environ, "DISPLAY": display, "LC_ALL": "C.UTF-8"}
        ij = None
        try:
            time.sleep(1.0)
            ij = subprocess.Popen(["java", "-jar", jar, "-macro", str(macro)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wid = None
            for _ in range(60):
                time.sleep(0.5)
                r = subprocess.run(["xdotool", "search", "--name", "consensus-and-experts"], env=env,
                                   capture_output=True, text=True)
                if r.stdout.strip():
                    wid = r.stdout.split()[-1]
                    break
            if wid is None:
                print("the ImageJ window did not appear", file=sys.stderr)
                return 1
            time.sleep(1.5)
            out_png.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["import", "-window", wid, str(out_png)], env=env, check=True)
        finally:
            if ij is not None:
                ij.kill()
            xvfb.kill()
    print(f"wrote {out_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
