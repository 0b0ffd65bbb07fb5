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

__all__ = ["DEFAULT_GRID", "threshold_scores", "choose_threshold"]

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
