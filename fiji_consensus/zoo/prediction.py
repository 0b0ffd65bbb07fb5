"""One image through one or several bioimage.io packages (x test-time views applied outside them): the
packages' probabilities are the samples of an ensemble, with the same uncertainty measures and the same
:class:`~fiji_consensus.nn.predict.Prediction` as our own ensembles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..uncertainty import MEASURES
from .runtime import Package

__all__ = ["predict_packages"]

#: The test-time views on a 2-D numpy array: name -> (forward, inverse).
_VIEW_NP = {
    "identity": (lambda a: a, lambda a: a),
    "flip_y": (lambda a: a[::-1], lambda a: a[::-1]),
    "flip_x": (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    "rot180": (lambda a: a[::-1, ::-1], lambda a: a[::-1, ::-1]),
    "rot90": (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
    "rot270": (lambda a: np.rot90(a, -1), lambda a: np.rot90(a, 1)),
    "transpose": (lambda a: a.T, lambda a: a.T),
    "antitranspose": (lambda a: a[::-1, ::-1].T, lambda a: a.T[::-1, ::-1]),
}


def predict_packages(
    packages: Sequence[Package], image: Any, *, tta: str | Sequence[str] | bool | None = "none", tile: int = 1152,
    threshold: float | None = None, min_size: int | None = None, split: str = "none", measure: str = "entropy",
    channel: int | None = None, keep_stack: bool = False, progress: bool = False,
    object_threshold: float | None = None,
) -> Any:
    """Predict one image with one or several bioimage.io packages: the same :class:`Prediction` as
    :func:`fiji_consensus.nn.predict.predict` (probability, uncertainty, objects, QA score).

    Every package (x every view of ``tta``, applied to the whole image outside the package) gives one
    foreground-probability sample; with several samples the probability is their mean and the uncertainty
    maps are :func:`fiji_consensus.uncertainty.ensemble_statistics` over them, exactly as for our own
    ensembles. With a single sample, ``entropy`` and ``deepflash2`` are computed from its probability and a
    fiji-consensus package's own ``uncertainty`` output (over its members x views) gives its measure; the
    spread-based measures that one sample cannot give are NaN maps (asking for one of them is an error).
    ``threshold``/``min_size``/``object_threshold`` default to the first package's (0.5 / 0 / None for
    foreign packages; a ``threshold`` given alone is the plain threshold).
    """
    from .. import uncertainty as _unc
    from ..instances import resolve_thresholds
    from ..nn.predict import _assemble_prediction, _image_2d, resolve_views

    if not packages:
        raise ValueError("give at least one package")
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}; got {measure!r}")
    arr, template = _image_2d(image, channel)
    views = resolve_views(tta)
    samples, unc_own = _samples(packages, arr, views, tile=tile, progress=progress)
    stack = np.stack(samples).astype(np.float32)
    stats = _unc.ensemble_statistics(stack)
    prob = stats.pop("mean")
    if len(samples) == 1:
        _one_sample_statistics(stats, packages[0], unc_own, measure, prob.shape)
    thr, obj = resolve_thresholds(packages[0].threshold, packages[0].object_threshold, threshold, object_threshold)
    ms = int(packages[0].min_size if min_size is None else min_size)
    return _assemble_prediction(
        prob, stats, arr, template, threshold=thr, min_size=ms, split=split, measure=measure, views=views,
        n_members=len(packages), stack=stack if keep_stack else None, object_threshold=obj,
    )


def _samples(packages: Sequence[Package], arr: np.ndarray, views: Sequence[str], *, tile: int,
             progress: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    """One probability per package x view (checked to be one), and a lone package's own uncertainty map."""
    samples, unc_own = [], None
    for pkg in packages:
        for v in views:
            fwd, inv = _VIEW_NP[v]
            p, u = pkg.predict(np.ascontiguousarray(fwd(arr)), tile=tile, progress=progress)
            p = np.ascontiguousarray(inv(p))
            lo, hi = float(p.min()), float(p.max())
            if lo < -1e-4 or hi > 1 + 1e-4 or not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(
                    f"output {pkg.probability_output!r} of package {pkg.name} is not a probability (values in "
                    f"[{lo:.3g}, {hi:.3g}]); fiji-consensus needs a foreground probability in [0, 1]"
                )
            samples.append(np.clip(p, 0.0, 1.0, out=p))
            if u is not None and len(packages) == 1 and len(views) == 1:
                unc_own = np.ascontiguousarray(inv(u))
    return samples, unc_own


def _one_sample_statistics(stats: dict[str, np.ndarray], pkg: Package, unc_own: np.ndarray | None, measure: str,
                           shape: tuple[int, ...]) -> None:
    """With one sample: NaN for the spread-based measures, the package's own measure where it has one."""
    nan = np.full(shape, np.nan, np.float32)
    for k in ("std", "mutual_information", "expected_entropy"):
        stats[k] = nan
    own = pkg.measure if unc_own is not None else None
    if own is not None and own in stats:
        stats[own] = unc_own.astype(np.float32)
    if np.isnan(stats[measure]).all():
        raise ValueError(
            f"the {measure!r} uncertainty needs several samples (the spread of members/views): give several "
            f"packages (--model A.zip --model B.zip), test-time views (tta), or a package whose own "
            f"uncertainty output is {measure!r}"
            + (f" (this one's is {pkg.measure!r})" if pkg.measure else "")
        )
