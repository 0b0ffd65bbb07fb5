"""The README picture: a consensus opened in real ImageJ under Xvfb, saved as a screenshot (slow)."""

from __future__ import annotations

import shutil
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
def test_screenshot_of_consensus_in_imagej(tmp_path, ij_jar):
    for tool in ("Xvfb", "xdotool", "import"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: apt-get install xvfb xdotool imagemagick (make screenshot does)")
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_screenshot.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    img = iio.imread(out)
    assert img.ndim == 3 and img.shape[0] > 256 and img.shape[1] > 256
    # the consensus outlines are drawn in white on a dark fluorescence image
    white = np.all(img[..., :3] > 240, axis=-1)
    assert white.sum() > 500
