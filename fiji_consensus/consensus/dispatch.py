"""The one consensus switch (:func:`consensus_of`) and the training targets of one image."""

from __future__ import annotations

from typing import Any

import numpy as np

from fiji_consensus.consensus.objects import object_consensus
from fiji_consensus.consensus.pooled import staple_posterior
from fiji_consensus.consensus.binary import staple
from fiji_consensus.consensus.voting import expert_fraction, majority_vote

__all__ = ["CONSENSUS_METHODS", "consensus_of", "training_targets"]


#: The consensus methods :func:`consensus_of` knows.
CONSENSUS_METHODS = ("staple", "majority", "objects")


def consensus_of(
    masks: Any,
    method: Any = "staple",
    *,
    threshold: float = 0.5,
    prior: float | None = None,
    max_iter: int = 1000,
    min_votes: int | None = None,
    min_experts: int | None = None,
    iou_threshold: float = 0.5,
    min_size: int = 0,
    ignore: Any = None,
    pooled: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> dict[str, Any]:
    """The consensus of one image's ``(R, Y, X)`` expert masks by ``method``: the one consensus switch.

    ``method`` is ``"staple"`` (posterior > ``threshold``), ``"majority"`` or ``"objects"``, or a
    :class:`~fiji_consensus.config.ConsensusConfig` (any object with the fields ``method``, ``threshold``,
    ``prior``, ``max_iter``, ``min_votes``, ``min_experts``, ``iou_threshold``, ``min_size``), whose fields
    then replace the keyword options. ``masks`` holds the experts who annotated this image (``R >= 2``).
    With ``pooled = (sensitivity, specificity, prior)`` of those experts (from :func:`staple_fit` over all
    images), the STAPLE posterior uses that pooled estimate instead of a per-image one.

    Returns a dict with ``mask`` (bool (Y, X)), ``labels`` (int32 (Y, X), one label per consensus
    object, ``min_size`` applied), ``probability`` (float32 (Y, X) for STAPLE, else None) and
    ``sensitivity``/``specificity`` (per expert, STAPLE only; ``prior``, and ``n_iter``/``converged``
    for a per-image STAPLE).

    >>> m = np.zeros((3, 4, 4), bool); m[:2, 1:3, 1:3] = True
    >>> out = consensus_of(m, "majority")
    >>> int(out["mask"].sum()), int(out["labels"].max())
    (4, 1)
    """
    if not isinstance(method, str):
        cfg = method
        method, threshold, prior, max_iter = cfg.method, cfg.threshold, cfg.prior, cfg.max_iter
        min_votes, min_experts, iou_threshold, min_size = (
            cfg.min_votes, cfg.min_experts, cfg.iou_threshold, cfg.min_size)
    if method not in CONSENSUS_METHODS:
        raise ValueError(f"method must be 'staple', 'majority' or 'objects'; got {method!r}")
    from fiji_consensus import matching

    out: dict[str, Any] = {"probability": None, "sensitivity": None, "specificity": None}
    if method == "staple" and pooled is not None:
        sens, spec, prior_ = pooled
        prob = staple_posterior(masks, sens, spec, prior_, ignore=ignore)
        out["probability"] = prob.astype(np.float32)
        out["mask"] = prob > threshold
        out["sensitivity"] = np.asarray(sens, dtype=float)
        out["specificity"] = np.asarray(spec, dtype=float)
        out["prior"] = float(prior_)
    elif method == "staple":
        res = staple(masks, prior=prior, max_iter=max_iter, ignore=ignore)
        out["probability"] = res.probability.astype(np.float32)
        out["mask"] = res.probability > threshold
        out["sensitivity"] = np.asarray(res.sensitivity, dtype=float)
        out["specificity"] = np.asarray(res.specificity, dtype=float)
        out["prior"] = float(res.prior)
        out["n_iter"] = int(res.n_iter)
        out["converged"] = bool(res.converged)
    elif method == "majority":
        out["mask"] = majority_vote(masks, min_votes=min_votes, ignore=ignore)
    else:
        res_o = object_consensus(masks, min_experts=min_experts, iou_threshold=iou_threshold, min_size=min_size)
        labels = np.asarray(res_o.labels, dtype=np.int32)
        if ignore is not None:
            labels = np.where(ignore, 0, labels)
        out["labels"] = labels
        out["mask"] = labels > 0
        return out
    out["labels"] = matching.label_objects(out["mask"], min_size=min_size)
    return out


def training_targets(masks: Any, kind: str, *, ignore: Any = None) -> np.ndarray:
    """Training targets of one image from its experts' ``(R, Y, X)`` masks, float32 in ``[0, 1]``.

    ``kind``: ``staple`` (posterior > 0.5, the published consensus), ``staple-soft`` (the posterior),
    ``fraction`` (fraction of experts per pixel) or ``majority`` (strict majority vote).

    >>> m = np.zeros((3, 4, 4), bool); m[:2, 1, 1] = True
    >>> round(float(training_targets(m, "fraction")[1, 1]), 4), float(training_targets(m, "majority")[1, 1])
    (0.6667, 1.0)
    """
    if kind == "fraction":
        return expert_fraction(masks, ignore=ignore).astype(np.float32)
    if kind == "majority":
        return majority_vote(masks, ignore=ignore).astype(np.float32)
    if kind not in ("staple", "staple-soft"):
        raise ValueError(f"kind must be one of staple, staple-soft, fraction, majority; got {kind!r}")
    res = staple(masks, ignore=ignore)
    if kind == "staple-soft":
        return res.probability.astype(np.float32)
    return (res.probability > 0.5).astype(np.float32)
