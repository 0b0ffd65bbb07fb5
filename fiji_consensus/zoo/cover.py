"""The cover of a package: the test crop with the predicted objects outlined in their uncertainty colour
(:mod:`fiji_consensus.style`'s colour map, as the ROIs of ``predict``) next to the uncertainty map, with a
colour bar under each panel; and the choice of that crop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..style import uncertainty_rgb
from ..uncertainty import MEASURE_RANGE

__all__ = ["choose_crop", "cover", "cover_panels", "write_png"]


def choose_crop(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size``-pixel window with the most structure (largest 99th - 50th percentile)."""
    y, x = image.shape
    best, best_score = (max(0, (y - size) // 2), max(0, (x - size) // 2)), -math.inf
    step = max(16, size // 4)
    for y0 in range(0, max(1, y - size + 1), step):
        for x0 in range(0, max(1, x - size + 1), step):
            win = image[y0 : y0 + size, x0 : x0 + size]
            lo, med, hi = np.percentile(win, [1, 50, 99])
            score = float(hi - med) - 0.25 * float(med - lo)
            if score > best_score:
                best, best_score = (y0, x0), score
    return best


def cover(image: np.ndarray, prob: np.ndarray, unc: np.ndarray, *, measure: str, threshold: float,
          min_size: int) -> np.ndarray:
    """RGB uint8 cover, 2:1: the crop with object outlines coloured by mean uncertainty | the uncertainty map,
    with titles and a colour bar under each panel (:func:`cover_panels` without the legend)."""
    left, right = cover_panels(image, prob, unc, measure=measure, threshold=threshold, min_size=min_size)
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    rng = float(MEASURE_RANGE[measure])
    unit = " (bits)" if measure in ("entropy", "expected_entropy", "mutual_information") else ""
    t = np.linspace(0, 1, 256)
    outline_cmap = ListedColormap(uncertainty_rgb(t) / 255.0)
    map_cmap = ListedColormap(uncertainty_rgb(t) * t[:, None] / 255.0)
    fig = Figure(figsize=(8, 4), dpi=100, facecolor="black")
    FigureCanvasAgg(fig)
    text = {"color": "white", "fontsize": 9}
    for k, (panel, cmap, title, label) in enumerate([
        (left, outline_cmap, f"input; objects (probability > {threshold:g})",
         f"outline colour = mean {measure} of the object{unit}"),
        (right, map_cmap, f"uncertainty map: {measure}{unit}", f"{measure}{unit}, 0 = certain"),
    ]):
        ax = fig.add_axes([0.01 + 0.5 * k, 0.2, 0.48, 0.72])
        ax.imshow(panel, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, pad=3, **text)
        cax = fig.add_axes([0.06 + 0.5 * k, 0.1, 0.38, 0.035])
        cb = fig.colorbar(matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, rng), cmap=cmap),
                          cax=cax, orientation="horizontal")
        cb.set_label(label, labelpad=1, **text)
        cb.ax.tick_params(colors="white", labelsize=7, length=2, pad=1)
        cb.outline.set_edgecolor("white")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def cover_panels(image: np.ndarray, prob: np.ndarray, unc: np.ndarray, *, measure: str, threshold: float,
                 min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The two panels of the cover, RGB uint8: the crop with object outlines coloured by mean uncertainty,
    and the uncertainty map (dark where certain)."""
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    from ..instances import label_instances

    lo, hi = np.percentile(image, [1, 99.8])
    gray = np.clip((image.astype(np.float64) - lo) / (hi - lo + 1e-6), 0, 1)
    left = np.repeat((gray * 255)[..., None], 3, axis=2)
    labels = label_instances(prob, threshold=threshold, min_size=min_size)
    rng = MEASURE_RANGE[measure]
    bounds = find_boundaries(labels, mode="inner")
    if labels.max() > 0:
        idx = np.arange(1, labels.max() + 1)
        means = np.asarray(ndi.mean(unc, labels=labels, index=idx), np.float64) / rng
        left[bounds] = uncertainty_rgb(means)[labels[bounds] - 1]
    t = np.clip(unc / rng, 0, 1)
    right = uncertainty_rgb(t) * t[..., None]  # dark where certain, the ROI colours where not
    right[bounds] = 255 * 0.6 + right[bounds] * 0.4
    return left.round().astype(np.uint8), right.round().astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray, *, max_bytes: int = 500_000) -> None:
    """``rgb`` as a PNG under ``max_bytes`` (halved in size until it fits; bioimage.io's limit for covers)."""
    import imageio.v3 as iio

    arr = rgb
    while True:
        iio.imwrite(path, arr)
        if path.stat().st_size < max_bytes or min(arr.shape[:2]) < 64:
            return
        arr = arr[::2, ::2]
