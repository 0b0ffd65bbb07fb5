"""Validation of a member (pixel Dice and ROI-F1 on its held-out images), the selection key of its
checkpoints, and the paper's rule selecting members against the experts."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..config import TrainConfig
from .data import pad_to_multiple

__all__ = ["predict_full"]

log = logging.getLogger("fiji_consensus.nn.train")


def predict_full(net, image: np.ndarray, *, depth: int, device) -> np.ndarray:
    """Probability map of one normalised 2-D image in one piece (mirror-padded to a multiple of 2**depth)."""
    import torch

    xp, (y, x) = pad_to_multiple(image, 2**depth)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(xp, np.float32))[None, None].to(device)
        p = net(t)[0, 0, :y, :x].float().cpu().numpy()
    net.train(was_training)
    return p


class _ValImage:
    def __init__(
        self, iid: str, image: np.ndarray, reference: np.ndarray, ignore: np.ndarray | None, min_size: int | None = None
    ):
        self.id, self.image, self.reference, self.ignore = iid, image, reference, ignore
        self.min_size = min_size  # the image's lab's MIN_PIXEL (multi-lab training); None = the config's


def _validate(net, val: list[_ValImage], c: TrainConfig, depth: int, device) -> dict[str, dict[str, float]]:
    from ..metrics import dice, roi_f1

    out = {}
    for v in val:
        pred = predict_full(net, v.image, depth=depth, device=device) > c.threshold
        out[v.id] = {
            "dice": float(dice(v.reference, pred, ignore=v.ignore)),
            "roi_f1": float(roi_f1(v.reference, pred, min_size=_min_size(v, c), ignore=v.ignore)),
        }
    return out


def _min_size(v: _ValImage, c: TrainConfig) -> int:
    return c.min_size if v.min_size is None else v.min_size


def _mean(scores: dict[str, dict[str, float]], key: str) -> float:
    vals = [s[key] for s in scores.values() if s[key] is not None and math.isfinite(s[key])]
    return float(np.mean(vals)) if vals else float("nan")


def _score(scores: dict[str, dict[str, float]], metric: str) -> list[float]:
    """Selection key: the metric's mean over images, then the other metric's as a tie-break (NaN = -inf)."""
    other = "dice" if metric == "roi_f1" else "roi_f1"
    key = [_mean(scores, metric), _mean(scores, other)]
    return [v if math.isfinite(v) else -math.inf for v in key]


def _expert_roi_f1(
    image_ids: list[str], val_images: dict[str, _ValImage], experts: dict[str, list], igns: list, c: TrainConfig
) -> dict[str, dict[str, float]]:
    """Every expert's ROI-F1 against the training target of every image that expert annotated."""
    from ..metrics import roi_f1

    out: dict[str, dict[str, float]] = {}
    for j, iid in enumerate(image_ids):
        out[iid] = {
            name: float(roi_f1(val_images[iid].reference, masks[j], min_size=_min_size(val_images[iid], c),
                               ignore=igns[j]))
            for name, masks in experts.items()
            if masks[j] is not None
        }
    return out


def _select_members(
    results: list[dict[str, Any]], c: TrainConfig, experts: dict[str, list], expert_f1: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Mark every member ``selected`` (the paper's rule: on none of its validation images below the lowest
    expert's ROI-F1; all kept when none passes) and record the lowest expert's score; returns the selection."""
    selection: dict[str, Any] = {"rule": "paper" if c.paper_selection else "none"}
    for res in results:
        res["selected"] = True
        if experts:
            res["lowest_expert_roi_f1"] = {
                i: min(expert_f1[i].values()) if expert_f1[i] else float("nan") for i in res["val_ids"]
            }
        if c.paper_selection:
            ok = True
            for i in res["val_ids"]:
                mine = res["val_per_image"][i]["roi_f1"]
                low = res["lowest_expert_roi_f1"][i]
                if math.isfinite(mine) and math.isfinite(low) and mine < low:
                    ok = False
                elif not math.isfinite(mine) and math.isfinite(low):
                    ok = False
            res["selected"] = ok
    if c.paper_selection and not any(r["selected"] for r in results):
        log.warning("no member passed the paper's selection rule; keeping all %d members", len(results))
        for r in results:
            r["selected"] = True
        selection["fallback"] = "no member passed; all kept"
    selection["selected"] = [r["index"] for r in results if r["selected"]]
    return selection
