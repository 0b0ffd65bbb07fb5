"""The README picture: experts, consensus and the zoo model's outlines on an image of a lab it never saw, in
real ImageJ under Xvfb (slow: runs the bioimage.io package)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.xvfb
@pytest.mark.imagej
def test_screenshot_of_experts_consensus_and_ensemble_in_imagej(tmp_path, ij_jar):
    pytest.importorskip("bioimageio.core")
    for tool in ("Xvfb", "xdotool", "import"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: apt-get install xvfb xdotool imagemagick (make screenshot does)")
    out = tmp_path / "shot.png"
    # its own process group: on a timeout the training, ImageJ and Xvfb it started are stopped too
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "readme_screenshot.py"), "--out", str(out),
                             "--work", str(tmp_path / "work")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"readme_screenshot.py took more than 900 s:\n{stdout}{stderr}")
    assert proc.returncode == 0, stdout + stderr
    assert "model cfos-wue1.zip:" in stdout and "objects" in stdout
    img = iio.imread(out)[..., :3].astype(int)
    assert img.ndim == 3 and img.shape[0] > 500 and img.shape[1] > 1000  # two zoomed 256 x 256 windows
    half = img.shape[1] // 2
    left, right = img[:, :half], img[:, half:]
    # left window: the consensus outlines in white, the experts' in colour
    assert np.all(left > 240, axis=-1).sum() > 500
    assert (np.ptp(left, axis=-1) > 150).sum() > 1000
    # right window: coloured outlines (the image and the caption are gray), all on the uncertainty colour map
    # cyan (0, 255, 255) -> yellow (255, 255, 0) -> red (255, 0, 0)
    coloured = np.ptp(right, axis=-1) > 150
    r, g, b = (right[..., k][coloured] for k in range(3))
    assert coloured.sum() > 500
    assert np.mean((g > 230) | ((r > 230) & (b < 30))) > 0.95
    # the ImageJ windows show the image pixels of the crop (not blank windows)
    assert left.std() > 10 and right.std() > 10
    # the TIFFs ImageJ opened hold the overlays the picture shows
    import roifile
    import tifffile

    work = tmp_path / "work"
    with tifffile.TiffFile(work / "experts-and-consensus.tif") as t:
        names = [roifile.ImagejRoi.frombytes(x).name for x in t.imagej_metadata["Overlays"]]
    assert sum(n.startswith("consensus:") for n in names) > 10
    assert {n.split(":")[0] for n in names} >= {f"expert_{k}" for k in (1, 3, 4, 5)}  # lab-mue's experts
    with tifffile.TiffFile(work / "zoo-model-by-uncertainty.tif") as t:
        rois = [roifile.ImagejRoi.frombytes(x) for x in t.imagej_metadata["Overlays"]]
    pred = [r for r in rois if r.name.startswith("prediction:")]
    assert len(pred) > 5 and all("uncertainty" in r.properties for r in pred)
