"""Is an image like the images a model was trained on? Per-image statistics and an out-of-domain check.

A model trained on one microscope can fail silently on another: a bright, uneven tissue background read as
nuclei, or nuclei a few grey levels above the background missed. :func:`image_stats` measures what differs
between labs on the model's own normalised scale (the per-image percentile normalisation it was trained
with): the background level, its unevenness and its texture at the objects' scale, the objects' contrast
above it, the foreground fraction, the object count and size. :func:`fit_reference` stores their range over
the training images (with their consensus as the foreground), and :func:`check` names every statistic of a
new image (with the prediction as the foreground) that lies outside that range widened by a quarter of its
width on each side (:data:`MARGIN`).

In the small example below the bright field's curvature also falls in the texture band; on the 1024-px
images of the three labs, the smooth backgrounds of ``tests/benchmarks/bench_background.py`` never do.

Core module: numpy and scipy only.

>>> rng = np.random.default_rng(0)
>>> imgs = [rng.normal(20, 3, (128, 128)) for _ in range(4)]
>>> fgs = [np.zeros((128, 128), bool) for _ in range(4)]
>>> for im, fg in zip(imgs, fgs):
...     fg[40:50, 40:50] = True
...     im[fg] += 15
>>> ref = fit_reference([image_stats(im, fg, percentiles=(1, 99.9)) for im, fg in zip(imgs, fgs)])
>>> check(image_stats(imgs[0], fgs[0], percentiles=(1, 99.9)), ref)
[]
>>> yy, xx = np.mgrid[:128, :128]
>>> bright = imgs[0] + 60 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / (2 * 40.0**2))
>>> [f["statistic"] for f in check(image_stats(bright, fgs[0], percentiles=(1, 99.9)), ref)]
['background_level', 'background_unevenness', 'object_contrast', 'background_texture']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["STATISTICS", "BACKGROUND_STATISTICS", "image_stats", "fit_reference", "check", "describe_flags",
           "background_above", "flagged_above", "missing_statistics", "suggested_background_radius",
           "TEXTURE_SIGMAS"]

STATISTICS = {
    "background_level": "median normalised intensity of the background",
    "background_unevenness": "spread (5th-95th percentile) of the background smoothed over ~32 px",
    "object_contrast": "median normalised intensity of the objects above the background level",
    "foreground_fraction": "fraction of the image marked as objects",
    "objects_per_megapixel": "number of objects per million pixels",
    "median_object_area": "median object area (pixels)",
    "background_texture": "spread (5th-95th percentile) of the background's structure between ~2 and ~16 px",
}
_LOG = {"foreground_fraction", "objects_per_megapixel", "median_object_area"}  # compared on a log scale
_SPREADS = {"background_unevenness", "background_texture"}  # never negative: the widened range starts at 0 or above
MARGIN = 0.25
"""The accepted range is the training range widened by this fraction of its width on each side."""


def normalization_percentiles(normalization: dict[str, Any] | None) -> tuple[float, float]:
    """The ``(low, high)`` percentiles of a model's ``scale_range`` normalisation (as ``ensemble.json`` and
    ``config.fiji_consensus`` store it), the scale of :func:`image_stats`."""
    norm = normalization or {}
    return float(norm.get("min_percentile", 1.0)), float(norm.get("max_percentile", 99.8))


def image_stats(
    image: np.ndarray, foreground: np.ndarray, *, percentiles: tuple[float, float] = (1.0, 99.9)
) -> dict[str, float]:
    """The statistics of :data:`STATISTICS` for one 2-D image and its foreground mask.

    ``percentiles`` are the model's normalisation (``scale_range``); the values are on that scale.
    """
    img = np.asarray(image, np.float64)
    fg = np.asarray(foreground, bool)
    if img.ndim != 2 or fg.shape != img.shape:
        raise ValueError(
            f"image_stats needs a 2-D image and a foreground mask of the same shape; got {img.shape} and {fg.shape}"
        )
    lo, hi = np.percentile(img, percentiles)
    x = (img - lo) / (hi - lo + 1e-6)
    bg = ~ndi.binary_dilation(fg, iterations=3) if fg.any() else np.ones_like(fg)
    if not bg.any():
        bg = np.ones_like(fg)
    level = float(np.median(x[bg]))
    # smooth background: block means (8 x 8) then a Gaussian of 4 blocks (about 32 px), over background blocks
    b = 8
    h, w = (x.shape[0] // b) * b, (x.shape[1] // b) * b
    if h >= b and w >= b:
        xs = np.where(bg, x, level)[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3))
        sm = ndi.gaussian_filter(xs, 4.0, mode="reflect")
        q5, q95 = np.percentile(sm, [5, 95])
        uneven = float(q95 - q5)
    else:
        uneven = 0.0
    labels, n = ndi.label(fg)
    areas = np.bincount(labels.ravel())[1:] if n else np.array([])
    return {
        "background_level": level,
        "background_unevenness": uneven,
        "object_contrast": float(np.median(x[fg]) - level) if fg.any() else float("nan"),
        "foreground_fraction": float(fg.mean()),
        "objects_per_megapixel": float(n / (fg.size / 1e6)),
        "median_object_area": float(np.median(areas)) if n else float("nan"),
        "background_texture": _texture(x, bg),
    }


TEXTURE_SIGMAS = (2.0, 16.0)
"""The band of :func:`image_stats`'s ``background_texture``: Gaussian sigmas (px) of its difference of Gaussians.
Finer than the objects (a nucleus of these labs is ~13 px across) is pixel noise, which the first smoothing
damps; coarser than 16 px is the smooth background that ``background_unevenness`` and a rolling ball see."""


def _texture(x: np.ndarray, bg: np.ndarray) -> float:
    """The 5th-95th percentile spread, over background pixels, of the background smoothed at the two
    :data:`TEXTURE_SIGMAS` (normalised convolution: objects and their rims left out) minus each other:
    tissue structure at the objects' scale (autofluorescent texture, vessels, folds) that no smooth
    background model removes. Zero for a flat background; NaN when too little background is left."""
    xb, w = np.where(bg, x, 0.0), bg.astype(np.float64)
    (fine, w_fine), (coarse, w_coarse) = ((ndi.gaussian_filter(xb, s, mode="reflect"),
                                           ndi.gaussian_filter(w, s, mode="reflect")) for s in TEXTURE_SIGMAS)
    ok = bg & (w_fine > 0.5) & (w_coarse > 0.5)
    if ok.sum() < 100:
        return float("nan")
    band = fine[ok] / w_fine[ok] - coarse[ok] / w_coarse[ok]
    q5, q95 = np.percentile(band, [5, 95])
    return float(q95 - q5)


def _t(name: str, v: float) -> float:
    if name in _LOG:
        return math.log10(max(v, 1e-6))
    return v


def fit_reference(stats: Sequence[dict[str, float]]) -> dict[str, Any]:
    """The training distribution: per statistic the number of images, min, median, max (finite values)."""
    if not stats:
        raise ValueError("fit_reference needs the statistics of at least one training image; got none")
    ref: dict[str, Any] = {"margin": MARGIN, "statistics": {}}
    for name in STATISTICS:
        vals = [s[name] for s in stats if name in s and s[name] is not None and math.isfinite(s[name])]
        if vals:
            ref["statistics"][name] = {
                "n": len(vals), "min": float(min(vals)), "median": float(np.median(vals)), "max": float(max(vals)),
            }
    return ref


def check(stats: dict[str, float], reference: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Statistics of one image outside the training range (widened by ``margin`` of its width per side;
    log scale for fraction, count and area). Returns ``[{statistic, value, low, high, direction}]``."""
    if not reference:
        return []
    margin = float(reference.get("margin", MARGIN))
    flags = []
    for name, r in reference.get("statistics", {}).items():
        v = stats.get(name)
        if v is None or not math.isfinite(v) or r.get("n", 0) < 2:
            continue
        a, b = _t(name, r["min"]), _t(name, r["max"])
        width = max(b - a, 1e-3 if name not in _LOG else 0.1)
        lo, hi = a - margin * width, b + margin * width
        if name in _SPREADS:
            lo = max(lo, 0.0)
        tv = _t(name, v)
        if tv < lo or tv > hi:
            inv = (lambda z: 10**z) if name in _LOG else (lambda z: z)
            flags.append({"statistic": name, "value": float(v), "low": float(inv(lo)), "high": float(inv(hi)),
                          "direction": "above" if tv > hi else "below"})
    return flags


BACKGROUND_STATISTICS = ("background_level", "background_unevenness")
"""The statistics that say the background differs (a remedy: :mod:`fiji_consensus.background`)."""


def flagged_above(flags: Sequence[dict[str, Any]], statistics: Sequence[str]) -> bool:
    """Whether :func:`check` found one of ``statistics`` above its training range."""
    return any(f["statistic"] in statistics and f["direction"] == "above" for f in flags)


def background_above(flags: Sequence[dict[str, Any]]) -> bool:
    """Whether :func:`check` found the background brighter or more uneven than in training."""
    return flagged_above(flags, BACKGROUND_STATISTICS)


def missing_statistics(reference: dict[str, Any] | None) -> list[str]:
    """The statistics of :data:`STATISTICS` whose range ``reference`` (a stored training range) lacks: all of
    them without a range, the newer ones for a model trained before they were added."""
    stored = (reference or {}).get("statistics") or {}
    return [n for n in STATISTICS if n not in stored]


def suggested_background_radius(reference: dict[str, Any] | None) -> int | None:
    """A rolling-ball radius for :mod:`fiji_consensus.background` from the objects a model was trained on:
    twice the diameter of a disc of the training images' median object area, rounded up to a multiple of 5
    (30 for the cFOS nuclei of the three Segebarth labs). None without that statistic.

    >>> suggested_background_radius({"statistics": {"median_object_area": {"n": 46, "min": 64.0, "median": 137.5,
    ...                                                                     "max": 208.0}}})
    30
    """
    area = ((reference or {}).get("statistics") or {}).get("median_object_area", {}).get("median")
    if area is None or not math.isfinite(area) or area <= 0:
        return None
    diameter = 2.0 * math.sqrt(area / math.pi)
    return int(5 * math.ceil(2.0 * diameter / 5.0))


def describe_flags(flags: Sequence[dict[str, Any]]) -> str:
    """One line: ``background_level 0.41 above the training range [0.02, 0.19]; ...``.

    Three significant digits, more where the value would print as the limit it crossed:

    >>> describe_flags([{"statistic": "median_object_area", "value": 348.4, "low": 10.7, "high": 348.2,
    ...                  "direction": "above"}])
    'median_object_area 348.4 above the training range [10.7, 348.2]'
    """
    parts = []
    for f in flags:
        limit = f["high"] if f["direction"] == "above" else f["low"]
        d = 3
        while d < 8 and f"{f['value']:.{d}g}" == f"{limit:.{d}g}":
            d += 1
        parts.append(f"{f['statistic']} {f['value']:.{d}g} {f['direction']} the training range "
                     f"[{f['low']:.{d}g}, {f['high']:.{d}g}]")
    return "; ".join(parts)
