"""Probability map → labelled objects, and a per-object table.

:func:`label_instances` thresholds a foreground probability, labels 8-connected components (as Segebarth
et al. 2020 count objects), optionally keeps only the objects whose peak probability passes a second, object
threshold (:func:`foreground`: hysteresis), optionally splits touching objects with a marker-controlled
watershed, and drops objects smaller than ``min_size`` pixels. :func:`object_table` measures every object: area,
centroid, bounding box, mean image intensity, mean probability, mean and maximum uncertainty, and whether
it touches the image border.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._validate import as_label_image

__all__ = ["foreground", "resolve_thresholds", "label_instances", "object_table", "OBJECT_COLUMNS", "SPLITS"]

#: Watershed split modes of :func:`label_instances`.
SPLITS = ("none", "distance", "probability")

#: Columns of :func:`object_table`, in order.
OBJECT_COLUMNS = (
    "id",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "mean_intensity",
    "mean_probability",
    "mean_uncertainty",
    "max_uncertainty",
    "touches_border",
)

_EIGHT = np.ones((3, 3), bool)


def _as_prob_2d(probability: Any) -> np.ndarray:
    p = np.asarray(probability)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"probability must be a non-empty 2-D (Y, X) array; got shape {p.shape}")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer) or p.dtype == bool):
        raise TypeError(f"probability must be numeric; got dtype {p.dtype}")
    return p


def _check_thresholds(threshold: float, object_threshold: float | None) -> None:
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number; got {threshold}")
    if object_threshold is not None and not (math.isfinite(float(object_threshold))
                                             and float(object_threshold) >= float(threshold)):
        raise ValueError(f"object_threshold must be a number >= the threshold ({threshold}); got {object_threshold}")


def foreground(probability: Any, threshold: float = 0.5, object_threshold: float | None = None) -> np.ndarray:
    """The foreground mask: ``probability > threshold``, and with ``object_threshold`` only its 8-connected
    components whose peak probability is ``> object_threshold`` (hysteresis thresholding).

    The two thresholds answer two questions apart: ``object_threshold`` which objects count (labs differ in
    which nuclei their experts call positive), ``threshold`` how far each object extends (ROI-F1 matches
    objects at IoU > 0.5, so raising the one threshold to drop dim objects also shrinks the bright ones).
    ``object_threshold`` equal to ``threshold`` or None is the plain threshold.

    >>> p = np.array([[0.9, 0.6, 0.0, 0.6, 0.6]])
    >>> foreground(p, 0.5).astype(int), foreground(p, 0.5, 0.8).astype(int)
    (array([[1, 1, 0, 1, 1]]), array([[1, 1, 0, 0, 0]]))
    """
    p = _as_prob_2d(probability)
    _check_thresholds(threshold, object_threshold)
    fg = p > threshold
    if object_threshold is None or float(object_threshold) <= float(threshold):
        return fg
    labels, n = ndi.label(fg, structure=_EIGHT)
    if n == 0:
        return fg
    keep = np.zeros(n + 1, bool)
    keep[1:] = np.asarray(ndi.maximum(p, labels, np.arange(1, n + 1))) > float(object_threshold)
    return keep[labels]


def resolve_thresholds(model_threshold: float, model_object_threshold: float | None, threshold: float | None,
                       object_threshold: float | None) -> tuple[float, float | None]:
    """The (threshold, object threshold) a prediction uses: the model's, unless given. A threshold given
    alone is the plain threshold (the model's object threshold was chosen with its own threshold)."""
    thr = float(model_threshold if threshold is None else threshold)
    if object_threshold is not None:
        obj = float(object_threshold)
    else:
        obj = model_object_threshold if threshold is None else None
    if obj is not None and not obj >= thr:
        raise ValueError(f"object_threshold must be >= the threshold ({thr}); got {obj}")
    return thr, obj


def label_instances(
    probability: Any,
    *,
    threshold: float = 0.5,
    object_threshold: float | None = None,
    min_size: int = 0,
    split: str = "none",
    h: float | None = None,
    sigma: float = 1.0,
) -> np.ndarray:
    """Objects of a foreground probability map as an int32 label image (0 = background, 1..n objects).

    Steps: ``probability > threshold`` → 8-connected components (with ``object_threshold``: only those
    whose peak probability exceeds it, :func:`foreground`) → optional watershed split → objects
    with fewer than ``min_size`` pixels removed → labels renumbered 1..n in raster order of the objects'
    first pixel.

    Parameters
    ----------
    probability : array_like
        ``(Y, X)`` foreground probability (or any map where larger means "more foreground").
    threshold : float
        Foreground is ``probability > threshold`` (strict).
    object_threshold : float, optional
        Keep only the components whose peak probability is ``> object_threshold`` (>= ``threshold``);
        None keeps every component.
    min_size : int
        Smallest object area kept, in pixels (Segebarth's MIN_PIXEL: objects with area < min_size are
        dropped).
    split : {"none", "distance", "probability"}
        ``"distance"``: watershed on the negative Euclidean distance to the background;
        ``"probability"``: watershed on the negative probability smoothed by a Gaussian of ``sigma``
        pixels. Markers are the regional maxima of the h-maxima transform (morphological reconstruction
        of ``surface - h`` under ``surface``): peaks separated by a valley shallower than ``h`` become
        one marker, and so does a plateau. Every component keeps at
        least one marker, so a split never loses an object; flooding stays inside the foreground.
    h : float, optional
        Smallest depth of the valley between two objects for them to be split: pixels of distance
        (default 2) or probability (default 0.1). Larger values split less.
    sigma : float
        Smoothing of the probability before finding markers (``split="probability"``).

    Returns
    -------
    numpy.ndarray
        int32 ``(Y, X)`` labels.

    Examples
    --------
    >>> p = np.zeros((5, 7)); p[1:3, 1:3] = 0.9; p[3, 4] = 0.8; p[4, 5] = 0.7
    >>> label_instances(p)                          # the diagonal pair is one 8-connected object
    array([[0, 0, 0, 0, 0, 0, 0],
           [0, 1, 1, 0, 0, 0, 0],
           [0, 1, 1, 0, 0, 0, 0],
           [0, 0, 0, 0, 2, 0, 0],
           [0, 0, 0, 0, 0, 2, 0]], dtype=int32)
    >>> int(label_instances(p, min_size=3).max())
    1
    """
    p = _as_prob_2d(probability)
    _check_thresholds(threshold, object_threshold)
    if int(min_size) < 0:
        raise ValueError(f"min_size must be >= 0; got {min_size}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if h is None:
        h = 2.0 if split == "distance" else 0.1
    if not (math.isfinite(float(h)) and float(h) > 0):
        raise ValueError(f"h must be a positive number; got {h}")
    fg = foreground(p, threshold, object_threshold)
    labels, n = ndi.label(fg, structure=_EIGHT)
    labels = labels.astype(np.int32, copy=False)
    if n and split != "none":
        labels = _watershed_split(labels, n, p, fg, split=split, h=float(h), sigma=float(sigma))
        n = int(labels.max())
    if n == 0:
        return labels
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= max(int(min_size), 1)
    keep[0] = False
    # renumber in raster order of first pixel (stable, independent of how labels were produced)
    flat = labels.ravel()
    first = np.full(n + 1, flat.size, np.int64)
    np.minimum.at(first, flat, np.arange(flat.size))
    order = np.argsort(first[1:], kind="stable") + 1
    lut = np.zeros(n + 1, np.int32)
    kept = order[keep[order]]
    lut[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    return lut[labels]


def _watershed_split(
    labels: np.ndarray, n: int, p: np.ndarray, fg: np.ndarray, *, split: str, h: float, sigma: float
) -> np.ndarray:
    from skimage.morphology import local_maxima, reconstruction
    from skimage.segmentation import watershed

    if split == "distance":
        surface = ndi.distance_transform_edt(fg)
    else:
        surface = ndi.gaussian_filter(p.astype(np.float64), float(sigma)) if sigma > 0 else p.astype(np.float64)
        surface = np.where(fg, surface, 0.0)
    # markers: regional maxima of the h-maxima transform (Soille 2003, 6.3.4): maxima separated by a valley
    # shallower than h share one plateau, and a plateau is one marker
    hmax = reconstruction(surface - h, surface, method="dilation")
    peaks = local_maxima(hmax, connectivity=2, allow_borders=True) & fg
    markers, n_markers = ndi.label(peaks, structure=_EIGHT)
    # every component keeps at least one marker
    has = np.zeros(n + 1, bool)
    has[labels[peaks]] = True
    missing = np.flatnonzero(~has[1:]) + 1
    if missing.size:
        pos = ndi.maximum_position(surface, labels, missing)
        for k, (y, x) in enumerate(pos):
            markers[y, x] = n_markers + 1 + k
    out = watershed(-surface, markers, mask=fg, connectivity=2)
    return out.astype(np.int32, copy=False)


def object_table(
    labels: Any,
    *,
    image: Any | None = None,
    probability: Any | None = None,
    uncertainty: Any | None = None,
) -> list[dict[str, Any]]:
    """One row (dict) per object of a label image, sorted by id; columns :data:`OBJECT_COLUMNS`.

    Coordinates are pixel indices: ``centroid_y``/``centroid_x`` the mean row/column of the object's
    pixels (ImageJ's centroid is 0.5 larger: it measures pixel centres from the pixel's corner);
    ``bbox_y0, bbox_x0`` the first row/column and ``bbox_y1, bbox_x1`` one past the last (so the
    ImageJ bounding rectangle is ``x=bbox_x0, y=bbox_y0, width=bbox_x1-bbox_x0, height=bbox_y1-bbox_y0``).
    Means and maxima of maps that are not given are NaN. ``touches_border`` is true for objects with a
    pixel in the first or last row or column.

    Parameters
    ----------
    labels : array_like
        ``(Y, X)`` non-negative integer labels (0 = background).
    image, probability, uncertainty : array_like, optional
        ``(Y, X)`` maps to average over each object (``max_uncertainty`` too).

    Examples
    --------
    >>> L = np.array([[1, 1, 0], [0, 0, 0], [0, 2, 2]])
    >>> rows = object_table(L, uncertainty=np.array([[0.2, 0.4, 0], [0, 0, 0], [0, 0.1, 0.1]]))
    >>> [(r["id"], r["area"], r["centroid_x"], round(r["mean_uncertainty"], 3), r["max_uncertainty"])
    ...  for r in rows]
    [(1, 2, 0.5, 0.3, 0.4), (2, 2, 1.5, 0.1, 0.1)]
    """
    from skimage.measure import regionprops_table

    L = as_label_image(labels)
    maps: dict[str, np.ndarray] = {}
    for name, m in (("image", image), ("probability", probability), ("uncertainty", uncertainty)):
        if m is None:
            continue
        a = np.asarray(m)
        if a.shape != L.shape:
            raise ValueError(f"{name} must have the shape of labels {L.shape}; got {a.shape}")
        maps[name] = a  # stacked as float64 below, in one step (no float64 copy of each map first)
    if L.size == 0 or L.max() == 0:
        return []
    props = ["label", "area", "centroid", "bbox"]
    if maps:  # one channel per given map: intensity_mean-<c>, intensity_max-<c>
        props += ["intensity_mean", "intensity_max"]
    stacked = np.stack(list(maps.values()), axis=-1, dtype=np.float64) if maps else None
    t = regionprops_table(L, intensity_image=stacked, properties=props)
    del stacked
    nan = np.full(t["label"].shape, math.nan)
    channel = {name: c for c, name in enumerate(maps)}

    def col(prop: str, name: str) -> np.ndarray:
        return t[f"{prop}-{channel[name]}"] if name in channel else nan

    h, w = L.shape
    columns = {
        "id": t["label"],
        "area": t["area"],
        "centroid_y": t["centroid-0"],
        "centroid_x": t["centroid-1"],
        "bbox_y0": t["bbox-0"],
        "bbox_x0": t["bbox-1"],
        "bbox_y1": t["bbox-2"],
        "bbox_x1": t["bbox-3"],
        "mean_intensity": col("intensity_mean", "image"),
        "mean_probability": col("intensity_mean", "probability"),
        "mean_uncertainty": col("intensity_mean", "uncertainty"),
        "max_uncertainty": col("intensity_max", "uncertainty"),
        # a pixel in the first or last row or column <=> the bounding box reaches that edge
        "touches_border": (t["bbox-0"] == 0) | (t["bbox-1"] == 0) | (t["bbox-2"] == h) | (t["bbox-3"] == w),
    }
    kinds = {"touches_border": bool, **dict.fromkeys(("id", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"), int)}
    return [
        {k: kinds.get(k, float)(columns[k][i]) for k in OBJECT_COLUMNS} for i in range(len(t["label"]))
    ]
