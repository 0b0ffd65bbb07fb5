"""The consensus job: every image's consensus of its experts, per-expert scores and pairwise agreement."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import io as fio
from ..config import ConsensusConfig
from ..consensus import consensus_of
from ..style import CONSENSUS_COLOR, EXPERT_COLORS, as_label_output
from ._common import _CONSENSUS_DIRS, _PER_IMAGE, _config_record, _fit_pooled, _mean_rows, _nanmean, _prepare_out
from ._common import _progress, _resolve_dataset, _warn_pairs_without_overlap, _write_design, design_of
from .agreement import _EXPERT_COLS, _PAIR_COLS, _write_matrices, score_raters

logger = logging.getLogger(__name__)


#: Per-image outputs of ``consensus`` (folder, suffix); ``per_image/<id>.json`` marks an image done.
_IMAGE_OUTPUTS = (
    ("masks", ".tif"), ("probability", ".tif"), ("labels", ".tif"), ("rois", ".zip"), ("overlays", ".tif"),
    ("per_image", ".json"),
)


def _discard_failed(out: Path, existed: bool) -> None:
    """After a failure before any image was finished: remove what the run wrote (its config.json, empty
    output folders, the owner file, the folder itself if the run created it), so that the corrected rerun
    needs no --overwrite or --resume."""
    from .._atomic import OWNER_FILE, remove_temporary

    if any((out / _PER_IMAGE).glob("*.json")):
        return  # finished images stay: the rerun continues with --resume
    remove_temporary(out)
    for d in _CONSENSUS_DIRS:
        p = out / d
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    leftovers = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if leftovers <= {"config.json", OWNER_FILE}:
        for name in leftovers:
            (out / name).unlink(missing_ok=True)
        if not existed and out.is_dir():
            out.rmdir()


def _consensus_images(ds: fio.ExpertDataset, config: ConsensusConfig) -> tuple[list[str], list[str]]:
    """The images to build a consensus of, and those left out (fewer than 2 raters, --skip-incomplete)."""
    few = {i: ds.raters(i) for i in ds.ids if len(ds.raters(i)) < 2}
    if few and not config.skip_incomplete:
        items = list(few.items())
        shown = "; ".join(f"{i} ({', '.join(r) or 'nobody'})" for i, r in items[:8])
        raise ValueError(
            f"{len(few)} image(s) have fewer than 2 experts' annotations: {shown}{' ...' if len(items) > 8 else ''}; "
            "a consensus needs at least 2 per image: have them annotated (`fiji-consensus plan` proposes "
            "by whom) or pass --skip-incomplete to leave them out"
        )
    ids = [i for i in ds.ids if i not in few]
    if not ids:
        raise ValueError(f"none of the {len(ds.ids)} images has annotations by at least 2 experts")
    need = {"majority": ("min_votes", config.min_votes), "objects": ("min_experts", config.min_experts)}
    name, value = need.get(config.method, (None, None))
    if value is not None:
        low = [i for i in ids if len(ds.raters(i)) < value]
        if low:
            raise ValueError(
                f"--{name.replace('_', '-')} {value} but {len(low)} image(s) have fewer experts' annotations: "
                + ", ".join(f"{i} ({len(ds.raters(i))})" for i in low[:8])
                + "; lower it or leave it at its default (a strict majority of each image's experts)"
            )
    return ids, sorted(few)


def _staple_estimate(config: ConsensusConfig, design: dict[str, Any]) -> str | None:
    """'image' (STAPLE per image, as SimpleITK and the published est_GT) or 'pooled' (missing raters)."""
    if config.method != "staple":
        return None
    if config.staple_estimate == "auto":
        return "image" if design["complete"] else "pooled"
    return config.staple_estimate


@dataclass
class _ConsensusRun:
    """What every step of one consensus run reads: the config, the dataset, the images and how STAPLE runs."""

    config: ConsensusConfig
    ds: fio.ExpertDataset
    ids: list[str]
    skipped: list[str]
    design: dict[str, Any]
    estimate: str | None
    out: Path
    colors: dict[str, str] = field(default_factory=dict)
    fit: Any = None  # the pooled STAPLE fit (missing raters), else None


def run_consensus(config: ConsensusConfig, *, progress: bool = False) -> dict[str, Any]:
    """Consensus of every image, per-expert scores and pairwise agreement, written to ``config.out``.

    Experts may have annotated different images (at least 2 per image). With every expert on every image,
    STAPLE runs per image (SimpleITK's filter, the published est_GT pixel for pixel); with missing raters it
    estimates every expert's sensitivity and specificity pooled over the images that expert annotated and
    each image's posterior from its own raters (``config.staple_estimate`` chooses). Majority and object
    consensus use each image's own raters.

    Writes ``masks/<id>.tif`` (uint8 0/255), ``probability/<id>.tif`` (float32, STAPLE),
    ``labels/<id>.tif`` (uint16 objects; int32 above 65,535), ``rois/<id>.zip``, ``overlays/<id>.tif`` (the
    image with consensus and expert outlines), ``per_image/<id>.json``, ``experts.csv``,
    ``experts_summary.csv``, ``agreement.csv``, ``annotations.csv`` (who annotated what), ``staple_fit.json``
    (pooled STAPLE), ``summary.json`` and ``config.json``. Every TIFF keeps the input image's calibration.
    Returns the summary.
    """
    run = _open_run(config)
    record = _config_record(config)
    existed = run.out.exists()
    done = _prepare_out(run.out, record["config"], overwrite=config.overwrite, resume=config.resume)
    try:
        fio.write_json(run.out / "config.json", record, overwrite=True)
        run.fit = _pooled_fit(run, progress=progress)
        todo = [i for i in run.ids if i not in done]
        if done:
            logger.info("resuming: %d of %d images already done", len(done & set(run.ids)), len(run.ids))
        for image_id in _progress(todo, total=len(todo), enabled=progress, desc="consensus"):
            _consensus_image(run, image_id)
    except BaseException:
        _discard_failed(run.out, existed)
        raise
    return _finish_consensus(
        run.out, run.ds, config, overwrite=True, ids=run.ids, design=run.design, estimate=run.estimate, fit=run.fit,
        skipped=run.skipped,
    )


def _open_run(config: ConsensusConfig) -> _ConsensusRun:
    """The dataset, the images with at least 2 experts, who annotated what and how STAPLE estimates."""
    ds = _resolve_dataset(config, missing_ok=True)
    if len(ds.experts) < 2:
        raise ValueError(
            f"a consensus needs at least 2 experts; got {len(ds.experts)}: {', '.join(ds.experts)}"
        )
    ids, skipped = _consensus_images(ds, config)
    design = design_of(ds, ids)
    colors = {e: EXPERT_COLORS[i % len(EXPERT_COLORS)] for i, e in enumerate(ds.expert_names)}
    return _ConsensusRun(config, ds, ids, skipped, design, _staple_estimate(config, design), Path(config.out), colors)


def _pooled_fit(run: _ConsensusRun, *, progress: bool) -> Any:
    """With missing raters: STAPLE's expert parameters pooled over the images, written to ``staple_fit.json``."""
    if run.estimate != "pooled":
        return None
    fit = _fit_pooled(run.ds, run.ids, prior=run.config.prior, max_iter=run.config.max_iter, progress=progress)
    fio.write_json(run.out / "staple_fit.json", {
        "estimate": "pooled over images", "experts": run.ds.expert_names,
        "sensitivity": fit.sensitivity.tolist(), "specificity": fit.specificity.tolist(),
        "images_per_expert": run.design["annotated_by"], "n_iter": fit.n_iter, "converged": fit.converged,
        "priors": dict(zip(run.ids, fit.priors.tolist())),
    }, overwrite=True)
    return fit


def _consensus_image(run: _ConsensusRun, image_id: str) -> None:
    """One image: its consensus, files and per-image record.

    The outputs are written under hidden names and moved into place together, the per_image record last: a
    kill leaves either all of them or nothing that looks finished.
    """
    from .._atomic import commit_staged, staging_path

    out = run.out
    for d, suffix in _IMAGE_OUTPUTS:  # left by a run killed while moving them: not finished
        (out / d / f"{image_id}{suffix}").unlink(missing_ok=True)
    staged: list[tuple[Path, Path]] = []

    def stage(d: str, suffix: str) -> Path:
        target = out / d / f"{image_id}{suffix}"
        staged.append((staging_path(target), target))
        return staged[-1][0]

    try:
        image, ann, ignore = run.ds.load(image_id)
        names = run.ds.raters(image_id)
        masks = np.stack([ann[e] > 0 for e in names])
        res = consensus_of(masks, run.config, ignore=ignore, pooled=_pooled_for(run, image_id, names))
        cmask = res["mask"] if ignore is None else res["mask"] & ~ignore
        calibration = fio.read_calibration(run.ds.images[image_id])
        c_rois = _write_consensus_files(stage, res, cmask, calibration)
        if run.config.write_overlays:
            _write_overlay(stage("overlays", ".tif"), image, masks, names, c_rois, run.colors, calibration)
        record = _image_record(run.config, image_id, names, masks, cmask, res, ignore)
        fio.write_json(stage(_PER_IMAGE, ".json"), record, overwrite=True)
        commit_staged(staged)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def _pooled_for(run: _ConsensusRun, image_id: str, names: list[str]) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The pooled (sensitivity, specificity, prior) of this image's experts, or None (STAPLE per image)."""
    if run.fit is None:
        return None
    k = [run.ds.expert_names.index(e) for e in names]
    return run.fit.sensitivity[k], run.fit.specificity[k], float(run.fit.priors[run.ids.index(image_id)])


def _write_consensus_files(stage: Any, res: dict[str, Any], cmask: np.ndarray, calibration: dict[str, Any]) -> list:
    """The mask, probability (STAPLE), label image and RoiSet of one consensus; returns its ROIs."""
    from .. import rois

    fio.write_tiff(stage("masks", ".tif"), cmask.astype(np.uint8) * 255, overwrite=True, calibration=calibration)
    if res["probability"] is not None:
        fio.write_tiff(stage("probability", ".tif"), res["probability"], overwrite=True, calibration=calibration)
    labels = res["labels"]
    fio.write_tiff(stage("labels", ".tif"), as_label_output(labels), overwrite=True, calibration=calibration)
    c_rois = rois.labels_to_rois(labels, name_prefix="consensus:", stroke_color=CONSENSUS_COLOR)
    rois.write_roiset(stage("rois", ".zip"), c_rois, overwrite=True)
    return c_rois


def _write_overlay(
    path: Path, image: np.ndarray, masks: np.ndarray, names: list[str], c_rois: list, colors: dict[str, str],
    calibration: dict[str, Any],
) -> None:
    """The image with every expert's outlines in the expert's colour and the consensus on top."""
    from .. import rois

    overlay = []
    for k, e in enumerate(names):
        overlay += rois.mask_to_rois(masks[k], name_prefix=f"{e}:", stroke_color=colors[e])
    overlay += [rois.set_stroke(r, CONSENSUS_COLOR, 2) for r in c_rois]  # drawn last, on top
    rois.write_imagej_tiff(path, image, rois=overlay, overwrite=True, spacing=calibration["spacing"],
                           unit=calibration["unit"])


def _image_record(
    config: ConsensusConfig, image_id: str, names: list[str], masks: np.ndarray, cmask: np.ndarray,
    res: dict[str, Any], ignore: np.ndarray | None,
) -> dict[str, Any]:
    """``per_image/<id>.json``: each expert vs the consensus, every pair (consensus included), kappa, counts."""
    from .. import metrics

    raters = {e: masks[k] for k, e in enumerate(names)}
    rows, _ = score_raters(raters, reference=cmask, min_size=config.min_size, ignore=ignore)
    for k, r in enumerate(rows):
        r["image"] = image_id
        r["staple_sensitivity"] = None if res["sensitivity"] is None else float(res["sensitivity"][k])
        r["staple_specificity"] = None if res["specificity"] is None else float(res["specificity"][k])
    _, pairs = score_raters({**raters, "consensus": cmask}, min_size=config.min_size, ignore=ignore)
    for p in pairs:
        p["image"] = image_id
    return {
        "image": image_id,
        "raters": names,
        "experts": rows,
        "pairs": pairs,
        "fleiss_kappa": metrics.fleiss_kappa(masks, ignore=ignore),
        "consensus_objects": int(res["labels"].max()),
        "expert_objects": {r["expert"]: r["n_objects"] for r in rows},
        "staple": {k: res[k] for k in ("prior", "n_iter", "converged") if k in res},
    }


def _icc_counts(per_image: list[dict[str, Any]], experts: list[str]) -> float:
    """ICC(2,1) of the experts' object counts over the images every expert annotated (NaN if < 2)."""
    from .. import metrics

    full = [img for img in per_image if all(e in img["expert_objects"] for e in experts)]
    if len(full) < 2:
        return float("nan")
    counts = np.array([[img["expert_objects"][e] for e in experts] for img in full], dtype=float)
    return float(metrics.icc(counts, form="ICC(2,1)"))


def _finish_consensus(
    out: Path, ds: fio.ExpertDataset, config: ConsensusConfig, *, overwrite: bool,
    ids: Sequence[str] | None = None, design: dict[str, Any] | None = None, estimate: str | None = None,
    fit: Any = None, skipped: Sequence[str] = (),
) -> dict[str, Any]:
    ids = ds.ids if ids is None else list(ids)
    design = design_of(ds, ids) if design is None else design
    per_image = [fio.read_json(out / _PER_IMAGE / f"{i}.json") for i in ids]
    expert_rows = [r for img in per_image for r in img["experts"]]
    pair_rows = [p for img in per_image for p in img["pairs"]]
    fio.write_csv(out / "experts.csv", expert_rows, columns=_EXPERT_COLS, overwrite=overwrite)
    score_keys = [c for c in _EXPERT_COLS if c not in ("image", "expert")]
    expert_summary = _mean_rows(expert_rows, score_keys, by=["expert"])
    fio.write_csv(
        out / "experts_summary.csv", expert_summary, columns=["expert", "n_images"] + score_keys,
        overwrite=overwrite,
    )
    pair_summary = _mean_rows(pair_rows, _PAIR_COLS[2:], by=["rater_a", "rater_b"])
    fio.write_csv(
        out / "agreement.csv", pair_summary, columns=_PAIR_COLS[:2] + ["n_images"] + _PAIR_COLS[2:],
        overwrite=overwrite,
    )
    _write_matrices(out, pair_summary, [*ds.expert_names, "consensus"], overwrite=overwrite)
    _write_design(out, design, ds.expert_names, overwrite=overwrite)
    staple_info: dict[str, Any] | None = None
    if estimate == "image":
        staple_info = {"estimate": "per image (SimpleITK's STAPLE filter on each image; the published est_GT)"}
    elif estimate == "pooled":
        staple_info = {
            "estimate": "pooled: each expert's sensitivity/specificity from all images that expert annotated; "
            "each image's posterior from its own experts",
            "n_iter": None if fit is None else fit.n_iter,
            "converged": None if fit is None else fit.converged,
        }
    _warn_pairs_without_overlap(design)
    summary = {
        "ok": True,
        "command": "consensus",
        "method": config.method,
        "out": str(out.resolve()),
        "n_images": len(ids),
        "experts": ds.expert_names,
        "design": "every expert on every image" if design["complete"] else "experts annotated different images",
        "annotated_by": design["annotated_by"],
        "pair_overlap": design["overlap"],
        "skipped_images": list(skipped),
        "staple": staple_info,
        "mean_fleiss_kappa": _nanmean([img["fleiss_kappa"] for img in per_image]),
        "icc_object_counts": _icc_counts(per_image, ds.expert_names),
        "mean_consensus_objects": _nanmean([img["consensus_objects"] for img in per_image]),
        "expert_scores": {r["expert"]: {k: r[k] for k in ("dice", "roi_f1", "sensitivity")}
                          for r in expert_summary},
    }
    fio.write_json(out / "summary.json", summary, overwrite=overwrite)
    logger.info("consensus of %d images written to %s", len(ids), out)
    return summary
