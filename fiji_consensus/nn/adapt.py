"""Label-free adaptation to a new lab: re-estimate the batch-normalisation statistics on its images.

A U-Net with batch normalisation stores, for every layer, the mean and variance of its features over the
training images. On another microscope those statistics shift (brighter background, dimmer nuclei), and
every layer then normalises with the wrong numbers. :func:`recalibrate_batchnorm` replaces them by the
statistics of the new lab's own images (AdaBN, Li et al. 2018) without any annotation and without changing
a single learned weight: the images are cut into patches, passed through each member once in training
mode with gradients off, and the running statistics are the plain average over all patches.

:func:`adapt_ensemble` does it for every member of an ensemble folder and writes a new ensemble folder
(provenance records the images and the base ensemble's checksum). Cheap: one forward pass per patch.

:func:`calibrate_ensemble` is the cheapest adaptation that uses annotations: it predicts a few annotated
images of the new lab and stores the probability threshold and the object threshold that best match their
experts' consensus (:func:`fiji_consensus.calibration.choose_thresholds`) in a new ensemble folder; weights
unchanged.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["recalibrate_batchnorm", "adapt_ensemble", "calibrate_ensemble"]


def _patches(images: Sequence[np.ndarray], size: int, per_image: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        h, w = img.shape
        ph, pw = min(size, h), min(size, w)
        for _ in range(per_image):
            y = int(rng.integers(0, h - ph + 1))
            x = int(rng.integers(0, w - pw + 1))
            out.append(np.ascontiguousarray(img[y:y + ph, x:x + pw], np.float32))
    return out


def recalibrate_batchnorm(
    member: Any, images: Sequence[np.ndarray], *, patch_size: int = 256, patches_per_image: int = 16,
    batch_size: int = 8, seed: int = 0, multiple: int = 8,
) -> int:
    """Replace the running mean/variance of every BatchNorm layer of ``member`` (a torch module) by their
    average over patches of ``images`` (already normalised as the model expects). Learned weights are not
    changed. Returns the number of patches used; raises if the member has no batch normalisation."""
    import torch

    bns = [m for m in member.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError("the member has no batch-normalisation layer: nothing to re-estimate (group norm?)")
    if not images:
        raise ValueError("recalibrate_batchnorm needs at least one image; got none")
    size = max(multiple, (patch_size // multiple) * multiple)
    patches = _patches(images, size, patches_per_image, seed)
    patches = [p[: (p.shape[0] // multiple) * multiple, : (p.shape[1] // multiple) * multiple] for p in patches]
    patches = [p for p in patches if p.size]
    saved = {m: (m.momentum, m.training) for m in bns}
    was_training = member.training
    member.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    try:
        with torch.no_grad():
            by_shape: dict[tuple[int, int], list[np.ndarray]] = {}
            for p in patches:
                by_shape.setdefault(p.shape, []).append(p)
            for group in by_shape.values():
                for i in range(0, len(group), batch_size):
                    x = torch.from_numpy(np.stack(group[i:i + batch_size]))[:, None]
                    member(x)
    finally:
        for m, (mom, tr) in saved.items():
            m.momentum = mom
            m.train(tr)
        member.train(was_training)
    return len(patches)


def adapt_ensemble(
    model: str | os.PathLike, images: Sequence[np.ndarray], out_dir: str | os.PathLike, *,
    image_ids: Sequence[str] | None = None, patch_size: int = 256, patches_per_image: int = 16, seed: int = 0,
    subtract_background: float | None = None,
) -> Path:
    """Re-estimate the batch-norm statistics of every member of the ensemble folder ``model`` on
    ``images`` (raw images of the new lab, normalised here as the ensemble does) and write the adapted
    ensemble to ``out_dir`` (a new folder). Returns the path of its ``ensemble.json``.
    ``subtract_background``: a rolling-ball radius; the statistics are those of the images after Fiji's
    Subtract Background, the input ``predict --subtract-background`` gives the model (recorded)."""
    from .._util import sha256_file
    from .ensemble import ENSEMBLE_JSON, load_ensemble, save_ensemble

    out = Path(out_dir)
    _new_folder(out)
    t0 = time.perf_counter()
    ens = load_ensemble(model)
    images = _model_inputs(images, subtract_background)
    xs = [ens.normalize(np.asarray(im)) for im in images]
    meta = copy.deepcopy(ens.metadata)
    states, n = {}, 0
    for k, member in zip(ens.indices, ens.members):
        n = recalibrate_batchnorm(member, xs, patch_size=patch_size, patches_per_image=patches_per_image,
                                  seed=seed, multiple=ens.tile_multiple)
        states[k] = member.state_dict()
    meta["members"] = [m for m in meta["members"] if int(m["index"]) in states]
    meta.setdefault("provenance", {})["adaptation"] = {
        "method": "batch-norm statistics re-estimated on unannotated images (AdaBN); weights unchanged",
        "base_ensemble": str(Path(model)),
        "base_sha256": sha256_file(Path(model) / ENSEMBLE_JSON) if Path(model).is_dir() else None,
        "images": list(image_ids) if image_ids is not None else len(images),
        "patches": n, "patch_size": patch_size, "seed": seed, "subtract_background": subtract_background,
        "seconds": time.perf_counter() - t0,
    }
    meta.pop("format", None)
    meta.pop("format_version", None)
    return save_ensemble(out, states, meta)


def _model_inputs(images: Sequence[np.ndarray], subtract_background: float | None) -> Sequence[np.ndarray]:
    """The images as ``predict`` gives them to the model: after the rolling ball when a radius is given."""
    if subtract_background is None:
        return images
    from ..background import subtract_background as subtract

    return [subtract(np.asarray(im), subtract_background) for im in images]


def _new_folder(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder for the adapted ensemble")


def calibrate_ensemble(
    model: str | os.PathLike | Any, images: Sequence[np.ndarray], references: Sequence[np.ndarray],
    out_dir: str | os.PathLike, *, image_ids: Sequence[str] | None = None, min_size: int = 0,
    tta: str = "flips", grid: Sequence[float] | None = None, subtract_background: float | None = None,
    objects: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Choose the probability threshold of ``model`` (an ensemble folder or a loaded
    :class:`~fiji_consensus.nn.ensemble.Ensemble`) on a new lab's annotated ``images`` (``references``: the
    experts' consensus of each, a 0/1 mask) and write the ensemble with that threshold to ``out_dir`` (a new
    folder; weights unchanged). Returns the path of its ``ensemble.json`` and the calibration record (the
    chosen threshold, the table of mean ROI-F1 / Dice per threshold, the images), also kept in the
    ensemble's provenance. ``subtract_background``: a rolling-ball radius; the images are predicted after
    Fiji's Subtract Background (:mod:`fiji_consensus.background`), as ``predict --subtract-background`` will
    predict the lab's other images (the threshold belongs to that input; the record keeps the radius).
    ``objects``: also choose the object threshold (the peak probability an object must exceed; hysteresis,
    :func:`fiji_consensus.calibration.choose_thresholds`); False chooses the one threshold and drops any
    object threshold the model had. The record's ``table`` has, per threshold, the best object threshold."""
    from ..calibration import DEFAULT_GRID, choose_threshold, choose_thresholds
    from .._util import sha256_file
    from .ensemble import ENSEMBLE_JSON, load_ensemble, save_ensemble
    from .predict import predict

    out = Path(out_dir)
    _new_folder(out)
    if len(images) != len(references):
        raise ValueError(f"need one reference per image; got {len(images)} images and {len(references)} references")
    t0 = time.perf_counter()
    from_path = isinstance(model, (str, os.PathLike))
    ens = load_ensemble(model) if from_path else model  # a loaded Ensemble (e.g. from one of our packages)
    images = _model_inputs(images, subtract_background)
    probs = []
    for j, im in enumerate(images):
        log.info("calibration: predicting image %d/%d", j + 1, len(images))
        probs.append(predict(ens, im, tta=tta).probability)
    refs = [np.asarray(r) for r in references]
    grid = tuple(grid) if grid is not None else DEFAULT_GRID
    if objects:
        best, best_obj, rows = choose_thresholds(probs, refs, min_size=min_size, grid=grid)
    else:
        (best, rows), best_obj = choose_threshold(probs, refs, min_size=min_size, grid=grid), None
        rows = [{**r, "object_threshold": r["threshold"]} for r in rows]
    at = {(round(r["threshold"], 6), round(r["object_threshold"], 6)): r for r in rows}
    table = [max((r for r in rows if r["threshold"] == t), key=lambda r: (round(r["roi_f1"], 12),
                                                                          -r["object_threshold"])) for t in grid]
    old, old_obj = float(ens.threshold), ens.object_threshold
    old_row = at.get((round(old, 6), round(old if old_obj is None else old_obj, 6)))
    chosen = at[(round(best, 6), round(best if best_obj is None else best_obj, 6))]
    plain = max((r for r in rows if r["object_threshold"] == r["threshold"]), key=lambda r: round(r["roi_f1"], 12))
    record = {
        "method": "probability threshold" + (" and object threshold (peak probability; hysteresis)" if objects else "")
                  + " chosen on annotated images of the new lab (best mean ROI-F1 against their consensus); "
                  "weights unchanged",
        "base_ensemble": str(Path(model) if from_path else ens.path),
        "base_sha256": sha256_file(Path(model) / ENSEMBLE_JSON) if from_path and Path(model).is_dir() else None,
        "images": list(image_ids) if image_ids is not None else len(images),
        "min_size": int(min_size), "tta": tta, "subtract_background": subtract_background,
        "previous_threshold": old, "threshold": best,
        "previous_object_threshold": old_obj, "object_threshold": best_obj,
        "roi_f1_at_previous": old_row["roi_f1"] if old_row else None, "roi_f1": chosen["roi_f1"],
        "roi_f1_one_threshold": plain["roi_f1"],
        "table": [{k: r[k] for k in ("threshold", "object_threshold", "roi_f1", "dice")} for r in table],
        "seconds": time.perf_counter() - t0,
    }
    log.info("calibration: threshold %.2f -> %.2f, object threshold %s -> %s (mean ROI-F1 on %d annotated "
             "image(s) %s -> %.3f)", old, best, old_obj, best_obj, len(images),
             f"{old_row['roi_f1']:.3f}" if old_row else "n/a", record["roi_f1"])
    meta = copy.deepcopy(ens.metadata)
    meta["threshold"] = best
    if best_obj is None:
        meta.pop("object_threshold", None)
    else:
        meta["object_threshold"] = best_obj
    meta.setdefault("provenance", {}).setdefault("calibrations", []).append(record)
    meta.pop("format", None)
    meta.pop("format_version", None)
    states = {k: m.state_dict() for k, m in zip(ens.indices, ens.members)}
    meta["members"] = [m for m in meta["members"] if int(m["index"]) in states]
    return save_ensemble(out, states, meta), record
