"""Fiji's *Process › Subtract Background* (rolling ball) in numpy: a bright, uneven background removed before
a model sees the image.

A model whose input is normalised per image by percentiles sees the nuclei on a bright tissue background with
about half their usual contrast, and a single-lab model may read the tissue itself as nuclei
(``tests/benchmarks/bench_background.py``). Subtracting the background first is what a Fiji user does by hand
(*Process › Subtract Background...*); :func:`subtract_background` does the same computation, so ``predict
--subtract-background R`` and the Fiji command on a 32-bit image give the same input to the model
(``tests/test_background.py`` compares both with ImageJ 1.53t itself).

The algorithm (Sternberg's rolling ball as ImageJ implements it, default options: no sliding paraboloid,
smoothing on): the image is smoothed by a 3 x 3 mean; for radii above 10 pixels it is shrunk by taking the
minimum of 2 x 2 (radius <= 30), 4 x 4 (<= 100) or 8 x 8 blocks; a patch of a ball (the central part of a
sphere of the shrunk radius, trimmed by 24-40 %) is rolled under the surface, which is a grayscale opening with
that non-flat structuring element, the ball allowed to hang over the image's edges; the result is enlarged
again by bilinear interpolation. The background is what the ball reaches; the corrected image is the image
minus it (float, not clipped: negative values stay, as in ImageJ on a 32-bit image).

Core module: numpy and scipy only.

>>> yy, xx = np.mgrid[:96, :128]
>>> field = 50.0 + 0.5 * xx + 30.0 * np.exp(-((yy - 48) ** 2 + (xx - 64) ** 2) / (2 * 40.0**2))
>>> img = field.copy()
>>> img[40:46, 60:66] += 100.0                      # one bright 6 x 6 object on the uneven field
>>> out = subtract_background(img, 15)
>>> round(float(out[43, 63]) / 100, 1), bool(np.median(np.abs(out)) < 1)   # the object kept, the field gone
(1.0, True)
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage as ndi

__all__ = ["rolling_ball_background", "subtract_background", "ball_patch"]


def ball_patch(radius: float) -> tuple[np.ndarray, int]:
    """ImageJ's rolling ball for ``radius`` (pixels): ``(heights, shrink factor)``.

    The heights (float32, odd square) are those of the top of a sphere of radius ``radius / shrink`` over a
    square patch trimmed by 24 % (radius <= 30), 32 % (<= 100) or 40 % of that radius on each side.
    """
    if not (isinstance(radius, numbers.Real) and not isinstance(radius, bool) and math.isfinite(radius)
            and radius > 0):
        raise ValueError(f"the rolling ball radius must be a positive number of pixels; got {radius!r}")
    if radius <= 10:
        shrink, trim = 1, 24
    elif radius <= 30:
        shrink, trim = 2, 24
    elif radius <= 100:
        shrink, trim = 4, 32
    else:
        shrink, trim = 8, 40
    small = max(radius / shrink, 1.0)
    xtrim = int(trim * small) // 100
    half = int(math.floor(small - xtrim + 0.5))  # Java's Math.round
    d = np.arange(-half, half + 1, dtype=np.float64)
    r2 = small * small - d[:, None] ** 2 - d[None, :] ** 2
    return np.where(r2 > 0, np.sqrt(np.maximum(r2, 0)), 0.0).astype(np.float32), shrink


def _interpolation(length: int, small_length: int, shrink: int) -> tuple[np.ndarray, np.ndarray]:
    """Index of the left small-image pixel and its weight for each full-size pixel (ImageJ's enlargement)."""
    i = np.arange(length)
    idx = np.trunc((i - shrink // 2) / shrink).astype(np.int64)  # Java's integer division truncates
    idx = np.minimum(idx, small_length - 2)
    weight = 1.0 - ((i + 0.5) / shrink - (idx + 0.5))
    return idx, weight.astype(np.float32)


def rolling_ball_background(image: np.ndarray, radius: float, *, light_background: bool = False,
                            smooth: bool = True) -> np.ndarray:
    """The background of a 2-D image under a rolling ball of ``radius`` pixels (float32, the image's shape).

    ``light_background``: the objects are darker than the background (the ball rolls from above);
    ``smooth``: the 3 x 3 mean before the ball (ImageJ's default; off = "Disable smoothing").
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"subtract_background needs a 2-D image; got shape {img.shape}")
    balls, shrink = ball_patch(radius)
    if min(img.shape) < 2 * shrink:
        raise ValueError(
            f"an image of {img.shape[1]} x {img.shape[0]} pixels is too small for a rolling ball of radius "
            f"{radius:g} (expected at least {2 * shrink} pixels on each side)"
        )
    x = img.astype(np.float32, copy=True)
    if not np.isfinite(x).all():
        raise ValueError("subtract_background needs finite pixel values; the image holds NaN or infinity")
    if light_background:
        x = -x
    if smooth:
        x = ndi.uniform_filter1d(x, 3, axis=1, mode="nearest")
        x = ndi.uniform_filter1d(x, 3, axis=0, mode="nearest")
    h, w = x.shape
    if shrink > 1:
        sh, sw = -(-h // shrink), -(-w // shrink)
        pad = np.full((sh * shrink, sw * shrink), np.inf, np.float32)
        pad[:h, :w] = x
        small = pad.reshape(sh, shrink, sw, shrink).min(axis=(1, 3))
    else:
        small = x
    # the rolling ball = opening with the ball's heights; the ball's centre may lie up to its half width
    # outside the image (where it touches only the pixels inside)
    half = balls.shape[0] // 2
    big = np.pad(small, half, mode="constant", constant_values=np.inf)
    eroded = ndi.grey_erosion(big, structure=balls, mode="constant", cval=np.inf)
    opened = ndi.grey_dilation(eroded, structure=balls, mode="constant", cval=-np.inf)
    bg_small = opened[half:-half, half:-half] if half else opened
    if shrink > 1:
        yi, yw = _interpolation(h, bg_small.shape[0], shrink)
        xi, xw = _interpolation(w, bg_small.shape[1], shrink)
        rows = bg_small[:, xi] * xw + bg_small[:, xi + 1] * (1 - xw)
        bg = rows[yi] * yw[:, None] + rows[yi + 1] * (1 - yw[:, None])
    else:
        bg = bg_small
    bg = bg.astype(np.float32, copy=False)
    return -bg if light_background else bg


def subtract_background(image: np.ndarray, radius: float, *, light_background: bool = False,
                        smooth: bool = True) -> np.ndarray:
    """``image`` minus its :func:`rolling_ball_background` (float32; ImageJ's *Subtract Background* on a
    32-bit image, also with ``light_background``: the background then goes to about 0 from above)."""
    img = np.asarray(image)
    bg = rolling_ball_background(img, radius, light_background=light_background, smooth=smooth)
    return img.astype(np.float32) - bg
