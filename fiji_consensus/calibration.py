"""A new lab's own decision threshold, from a few of its annotated images.

Labs differ less in how their images look than in what their experts call a positive nucleus: on the three
Segebarth et al. 2020 labs, an ensemble trained on two labs marks half of the third lab's consensus
foreground on one (lab-wue1: its experts also mark dim nuclei) and twice it on another (lab-inns1: its
experts mark only the brightest), while the probability maps rank the nuclei much as the experts do. The
cheapest adaptation is then the threshold: :func:`choose_threshold` scores the model's probability maps of
a few annotated images against their reference (the experts' consensus) at every threshold of a grid and
returns the one with the best mean ROI-F1 (ties: the one nearest 0.5), with the whole table, so the choice
can be reported. No training, seconds of work; see ``tests/benchmarks/bench_calibrate.py`` for what it buys
on each left-out lab.

:func:`choose_thresholds` chooses two thresholds instead (hysteresis, :func:`fiji_consensus.instances.foreground`):
``threshold`` for how far each object extends and ``object_threshold`` (its peak probability) for which
objects count. One threshold cannot do both: ROI-F1 matches objects at IoU > 0.5, so raising it to drop the
dim nuclei a lab does not count also shrinks the bright ones it does. Leave-one-lab-out, chosen on 2 images
and scored on the others, the pair gained 0.01-0.09 ROI-F1 over the one threshold on every lab
(``bench_calibrate.py --hysteresis``).

>>> import numpy as np
>>> ref = np.zeros((40, 40), bool); ref[5:15, 5:15] = True; ref[25:35, 25:35] = True
>>> prob = np.zeros((40, 40)); prob[5:15, 5:15] = 0.9; prob[25:35, 25:35] = 0.3  # one dim nucleus
>>> best, table = choose_threshold([prob], [ref], grid=(0.2, 0.5, 0.8))
>>> best, [round(r["roi_f1"], 2) for r in table]
(0.2, [1.0, 0.67, 0.67])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_GRID", "threshold_scores", "choose_threshold", "hysteresis_scores", "choose_thresholds"]

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(2, 20))
"""Thresholds tried: 0.10, 0.15, ..., 0.95."""


def _check(probs: Sequence[np.ndarray], refs: Sequence[np.ndarray], grid: Sequence[float]) -> None:
    if len(probs) == 0 or len(probs) != len(refs):
        raise ValueError(
            f"need one reference mask per probability map and at least one pair; got {len(probs)} maps and "
            f"{len(refs)} references"
        )
    for j, (p, r) in enumerate(zip(probs, refs)):
        if np.shape(p) != np.shape(r):
            raise ValueError(f"image {j}: probability map {np.shape(p)} and reference {np.shape(r)} differ in shape")
    bad = [t for t in grid if not 0.0 < float(t) < 1.0]
    if not len(grid) or bad:
        raise ValueError(f"thresholds must lie strictly between 0 and 1; got {list(grid)}")


def threshold_scores(
    probs: Sequence[np.ndarray], refs: Sequence[np.ndarray], *, min_size: int = 0,
    grid: Sequence[float] = DEFAULT_GRID,
) -> list[dict[str, Any]]:
    """Per threshold of ``grid``: the mean ROI-F1 and Dice of ``prob > threshold`` against the references
    (objects smaller than ``min_size`` pixels are ignored by ROI-F1, the paper's MIN_PIXEL) and the per-image
    ROI-F1 values."""
    from .metrics import dice, roi_f1

    _check(probs, refs, grid)
    refs_b = [np.asarray(r) > 0.5 if np.asarray(r).dtype.kind == "f" else np.asarray(r) > 0 for r in refs]
    rows = []
    for t in grid:
        f1 = [float(roi_f1(r, np.asarray(p) > t, min_size=min_size)) for p, r in zip(probs, refs_b)]
        dc = [float(dice(r, np.asarray(p) > t)) for p, r in zip(probs, refs_b)]
        rows.append({"threshold": float(t), "roi_f1": float(np.mean(f1)), "dice": float(np.mean(dc)),
                     "per_image_roi_f1": f1})
    return rows


def choose_threshold(
    probs: Sequence[np.ndarray], refs: Sequence[np.ndarray], *, min_size: int = 0,
    grid: Sequence[float] = DEFAULT_GRID,
) -> tuple[float, list[dict[str, Any]]]:
    """The threshold of ``grid`` with the best mean ROI-F1 on these annotated images (ties: nearest 0.5),
    and the table of :func:`threshold_scores`."""
    rows = threshold_scores(probs, refs, min_size=min_size, grid=grid)
    best = max(rows, key=lambda r: (round(r["roi_f1"], 12), -abs(r["threshold"] - 0.5)))
    return best["threshold"], rows


def hysteresis_scores(
    probs: Sequence[np.ndarray], refs: Sequence[np.ndarray], *, min_size: int = 0,
    grid: Sequence[float] = DEFAULT_GRID,
) -> list[dict[str, Any]]:
    """Per pair ``threshold <= object_threshold`` of ``grid``: the mean ROI-F1 and Dice of
    :func:`~fiji_consensus.instances.foreground` against the references, and the per-image ROI-F1 values
    (``object_threshold == threshold`` is the plain threshold)."""
    from scipy import ndimage

    from .metrics import dice, roi_f1

    _check(probs, refs, grid)
    refs_b = [np.asarray(r) > 0.5 if np.asarray(r).dtype.kind == "f" else np.asarray(r) > 0 for r in refs]
    eight = np.ones((3, 3), bool)
    scores: dict[tuple[float, float], list[tuple[float, float]]] = {}
    for p, r in zip(probs, refs_b):
        p = np.asarray(p)
        for t in grid:
            labels, n = ndimage.label(p > t, structure=eight)
            peak = np.zeros(n + 1)
            if n:
                peak[1:] = ndimage.maximum(p, labels, np.arange(1, n + 1))
            for s in (g for g in grid if g >= t):
                keep = peak > s
                keep[0] = False
                mask = keep[labels]
                scores.setdefault((float(t), float(s)), []).append(
                    (float(roi_f1(r, mask, min_size=min_size)), float(dice(r, mask))))
    return [{"threshold": t, "object_threshold": s, "roi_f1": float(np.mean([v[0] for v in vals])),
             "dice": float(np.mean([v[1] for v in vals])), "per_image_roi_f1": [v[0] for v in vals]}
            for (t, s), vals in scores.items()]


def choose_thresholds(
    probs: Sequence[np.ndarray], refs: Sequence[np.ndarray], *, min_size: int = 0,
    grid: Sequence[float] = DEFAULT_GRID,
) -> tuple[float, float | None, list[dict[str, Any]]]:
    """The ``(threshold, object_threshold)`` pair of ``grid`` with the best mean ROI-F1 on these annotated
    images (ties: the plain threshold first, then the threshold nearest 0.5, then the lower object
    threshold), and the table of :func:`hysteresis_scores`. ``object_threshold`` is None when the plain
    threshold is best.

    >>> ref = np.zeros((40, 40), bool); ref[5:15, 5:15] = True                  # the experts count one nucleus
    >>> prob = np.zeros((40, 40)); prob[5:15, 5:15] = 0.6; prob[7:13, 7:13] = 0.9  # its rim is less sure
    >>> prob[25:35, 25:35] = 0.6                                                  # a dim one they do not count
    >>> t, s, _ = choose_thresholds([prob], [ref], grid=(0.3, 0.5, 0.7))
    >>> t, s, choose_threshold([prob], [ref], grid=(0.3, 0.5, 0.7))[0]       # one threshold: keep both or shrink
    (0.5, 0.7, 0.5)
    """
    rows = hysteresis_scores(probs, refs, min_size=min_size, grid=grid)
    best = max(rows, key=lambda r: (round(r["roi_f1"], 12), r["object_threshold"] == r["threshold"],
                                    -abs(r["threshold"] - 0.5), -r["object_threshold"]))
    s = best["object_threshold"]
    return best["threshold"], (None if s == best["threshold"] else s), rows
