"""Jobs: one call per CLI command, from a validated config to files in an output folder.

A job reads its inputs through :mod:`fiji_consensus.io`, computes with the array modules
(:mod:`~fiji_consensus.consensus`, :mod:`~fiji_consensus.metrics`), and writes Fiji-native outputs with
:mod:`~fiji_consensus.rois`. Every file is written atomically; the folder stores the config that made it;
an interrupted run is continued with ``resume=True`` (images whose ``per_image/<id>.json`` exists are done).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from . import io as fio
from .io import read_groups  # noqa: F401  (kept importable from jobs)
from .config import AgreementConfig, ConsensusConfig, TrainJobConfig

__all__ = [
    "run_consensus", "run_agreement", "run_train", "read_groups", "consensus_of", "score_raters", "EXPERT_COLORS",
    "design_of", "run_plan", "next_planned",
]

logger = logging.getLogger(__name__)

#: Stroke colours of the experts' outlines (colour-blind-safe Okabe-Ito palette, then more).
EXPERT_COLORS = (
    "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#999999",
    "#882255", "#44AA99", "#117733", "#AA4499",
)
CONSENSUS_COLOR = "#FFFFFF"

_PER_IMAGE = "per_image"


# --------------------------------------------------------------------------------------------- compute


from .consensus import consensus_of  # noqa: E402,F401  (the one consensus switch; kept importable from jobs)


def _confusion(expert: np.ndarray, reference: np.ndarray, keep: np.ndarray | None) -> tuple[float, float]:
    e, r = (expert, reference) if keep is None else (expert[keep], reference[keep])
    tp = np.count_nonzero(e & r)
    fn = np.count_nonzero(~e & r)
    fp = np.count_nonzero(e & ~r)
    tn = e.size - tp - fn - fp
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return sens, spec


def score_raters(
    raters: dict[str, np.ndarray],
    *,
    reference: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    min_size: int = 0,
    ignore: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score each rater's bool mask against a reference, and every pair of raters against each other.

    Returns ``(rows_vs_reference, pairwise_rows)``; the first is empty without a reference. Pixel scores
    exclude ``ignore``; object scores zero ignored pixels before labelling (Segebarth's rule).
    """
    from . import metrics

    rows: list[dict[str, Any]] = []
    keep = None if ignore is None else ~ignore
    if reference is not None:
        for name, m in raters.items():
            sens, spec = _confusion(m, reference, keep)
            obj = metrics.object_scores(reference, m, min_size=min_size, ignore=ignore)
            rows.append(
                {
                    "expert": name,
                    "sensitivity": sens,
                    "specificity": spec,
                    "dice": metrics.dice(reference, m, ignore=ignore),
                    "roi_f1": obj["f1"],
                    "average_precision": metrics.average_precision(
                        reference, m, min_size=min_size, ignore=ignore
                    )[0],
                    "object_precision": obj["precision"],
                    "object_recall": obj["recall"],
                    "n_objects": obj["n_candidate"],
                    "n_reference_objects": obj["n_reference"],
                }
            )
    names = list(raters)
    pairs: list[dict[str, Any]] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs.append(
                {
                    "rater_a": a,
                    "rater_b": b,
                    "dice": metrics.dice(raters[a], raters[b], ignore=ignore),
                    "iou": metrics.iou(raters[a], raters[b], ignore=ignore),
                    "roi_f1": metrics.roi_f1(raters[a], raters[b], min_size=min_size, ignore=ignore),
                    "cohen_kappa": metrics.cohen_kappa(raters[a], raters[b], ignore=ignore),
                }
            )
    return rows, pairs


# --------------------------------------------------------------------------------------------- folders


def _comparable(cfg_json: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg_json.items() if k not in ("overwrite", "resume")}


#: Per-image outputs of ``consensus`` (folder, suffix); ``per_image/<id>.json`` marks an image done.
_IMAGE_OUTPUTS = (
    ("masks", ".tif"), ("probability", ".tif"), ("labels", ".tif"), ("rois", ".zip"), ("overlays", ".tif"),
    ("per_image", ".json"),
)
#: What ``consensus`` / ``agreement`` write into their output folder (``--overwrite`` clears exactly these).
_CONSENSUS_DIRS = ("masks", "probability", "labels", "rois", "overlays", "per_image")
_OUTPUT_FILES = (
    "config.json", "summary.json", "experts.csv", "experts_summary.csv", "agreement.csv", "annotations.csv",
    "staple_fit.json", "agreement_matrix_dice.csv", "agreement_matrix_roi_f1.csv",
    "agreement_matrix_cohen_kappa.csv",
)


def _made_by_us(out: Path) -> bool:
    """A folder written before owner files existed: its config.json says fiji-consensus made it."""
    try:
        return fio.read_json(out / "config.json").get("tool") == "fiji-consensus"
    except (OSError, ValueError, AttributeError):
        return False


def _clear_outputs(out: Path, dirs: Sequence[str]) -> None:
    """Remove the outputs an earlier run of this command left (``--overwrite``), nothing else."""
    import shutil

    for d in dirs:
        if (out / d).is_dir() and not (out / d).is_symlink():
            shutil.rmtree(out / d)
    for f in _OUTPUT_FILES:
        (out / f).unlink(missing_ok=True)


def _prepare_out(
    out: Path, config_json: dict[str, Any], *, overwrite: bool, resume: bool, command: str = "consensus",
    dirs: Sequence[str] = _CONSENSUS_DIRS,
) -> set[str]:
    """Create/check the output folder; return the image ids already done (resume).

    Only a new or empty folder, or one this command made, is written into. ``overwrite`` first removes
    the previous run's outputs (so no stale mask or probability map is left beside the new ones);
    ``resume`` keeps them and removes the temporary files a killed run left.
    """
    from ._atomic import claim_folder, remove_temporary

    done: set[str] = set()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    claim_folder(out, command, legacy=_made_by_us, create=False)
    has_outputs = out.is_dir() and any(p.name in (*dirs, *_OUTPUT_FILES) for p in out.iterdir())
    if has_outputs:
        if resume:
            cfg_file = out / "config.json"
            if not cfg_file.is_file():
                raise FileExistsError(
                    f"cannot resume in {out}: it has no config.json from an earlier run"
                )
            previous = fio.read_json(cfg_file)
            if _comparable(previous.get("config", {})) != _comparable(config_json):
                raise ValueError(
                    f"cannot resume in {out}: it was made with other settings "
                    f"(see {cfg_file}); use the same settings, or --overwrite, or a new folder"
                )
            remove_temporary(out)
            done = {p.stem for p in (out / _PER_IMAGE).glob("*.json")}
        elif overwrite:
            remove_temporary(out)
            _clear_outputs(out, dirs)
        else:
            hint = ", --resume to continue an interrupted run," if command == "consensus" else ""
            raise FileExistsError(
                f"output folder {out} exists and is not empty; use --overwrite to replace its files{hint} "
                "or choose another folder"
            )
    claim_folder(out, command, legacy=_made_by_us)
    return done


def _discard_failed(out: Path, existed: bool) -> None:
    """After a failure before any image was finished: remove what the run wrote (its config.json, empty
    output folders, the owner file, the folder itself if the run created it), so that the corrected rerun
    needs no --overwrite or --resume."""
    from ._atomic import OWNER_FILE, remove_temporary

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


def _config_record(config: Any) -> dict[str, Any]:
    import platform

    import numpy
    import scipy

    return {
        "tool": "fiji-consensus",
        "version": __version__,
        "config": config.model_dump(mode="json"),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def _resolve_dataset(
    config: ConsensusConfig | AgreementConfig | TrainJobConfig, *, missing_ok: bool = False
) -> fio.ExpertDataset:
    """The images and experts a job config names: a project folder, image + expert folders, or images only.

    ``missing_ok``: experts may have annotated only some of the images (see :func:`design_of`).
    """
    if config.project is not None:
        ds = fio.open_project(config.project, missing_ok=missing_ok)
    elif config.experts:
        return fio.open_dataset(
            config.images, config.experts, ignore=config.ignore, expert_names=config.expert_names,
            missing_ok=missing_ok,
        )
    else:
        ds = fio.ExpertDataset(images=fio.list_images(config.images), experts={})
    if config.ignore is not None:
        ds.ignore = fio.pair_annotations(ds.images, config.ignore, expert="ignore", required=False)
    return ds


def _nanmean(values: Sequence[Any]) -> float:
    """Mean of the finite values (``None`` counts as missing); NaN, without a warning, when there are none."""
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def design_of(ds: fio.ExpertDataset, ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Who annotated what: per-image raters, images per expert, and images shared by every pair.

    Returns ``{"raters": {id: [experts]}, "annotated_by": {expert: n}, "overlap": [{"rater_a", "rater_b",
    "n_images"}], "complete": bool, "pairs_without_overlap": [[a, b], ...]}``.
    """
    ids = ds.ids if ids is None else list(ids)
    experts = ds.expert_names
    raters = {i: ds.raters(i) for i in ids}
    overlap = []
    for a_i, a in enumerate(experts):
        for b in experts[a_i + 1:]:
            n = sum(1 for i in ids if a in raters[i] and b in raters[i])
            overlap.append({"rater_a": a, "rater_b": b, "n_images": n})
    return {
        "raters": raters,
        "annotated_by": {e: sum(1 for i in ids if e in raters[i]) for e in experts},
        "overlap": overlap,
        "complete": all(len(r) == len(experts) for r in raters.values()),
        "pairs_without_overlap": [[o["rater_a"], o["rater_b"]] for o in overlap if o["n_images"] == 0],
    }


def _write_design(out: Path, design: dict[str, Any], experts: Sequence[str], *, overwrite: bool) -> None:
    rows = [{"image": i, "n_experts": len(r), **{e: int(e in r) for e in experts}}
            for i, r in design["raters"].items()]
    fio.write_csv(out / "annotations.csv", rows, columns=["image", "n_experts", *experts], overwrite=overwrite)


def _mean_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str], by: Sequence[str]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(by, key))
        row["n_images"] = len(rs)
        for k in keys:
            vals = np.array([r[k] for r in rs if r.get(k) is not None], dtype=float)
            row[k] = float(np.nanmean(vals)) if vals.size and np.isfinite(vals).any() else float("nan")
        out.append(row)
    return out


def _progress(iterable, *, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="image")


# --------------------------------------------------------------------------------------------- jobs


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


def _fit_pooled(
    ds: fio.ExpertDataset, ids: Sequence[str], *, prior: float | None = None, max_iter: int = 1000, progress: bool
) -> Any:
    """Pass 1 of a pooled STAPLE: every image's vote patterns (no image kept in memory), then the fit."""
    from . import consensus

    experts = ds.expert_names
    pats, raters = [], []
    for image_id in _progress(ids, total=len(ids), enabled=progress, desc="STAPLE fit"):
        _, ann, ignore = ds.load(image_id)
        names = ds.raters(image_id)
        pats.append(consensus.vote_patterns(np.stack([ann[e] > 0 for e in names]), ignore=ignore))
        raters.append([experts.index(e) for e in names])
    return consensus.staple_fit(pats, raters, n_experts=len(experts), prior=prior, max_iter=max_iter)


def run_consensus(config: ConsensusConfig, *, progress: bool = False) -> dict[str, Any]:
    """Consensus of every image, per-expert scores and pairwise agreement, written to ``config.out``.

    Experts may have annotated different images (at least 2 per image). With every expert on every image,
    STAPLE runs per image (SimpleITK's filter, the published est_GT pixel for pixel); with missing raters it
    estimates every expert's sensitivity and specificity pooled over the images that expert annotated and
    each image's posterior from its own raters (``config.staple_estimate`` chooses). Majority and object
    consensus use each image's own raters.

    Writes ``masks/<id>.tif`` (uint8 0/255), ``probability/<id>.tif`` (float32, STAPLE),
    ``labels/<id>.tif`` (uint16 objects), ``rois/<id>.zip``, ``overlays/<id>.tif`` (the image with
    consensus and expert outlines), ``per_image/<id>.json``, ``experts.csv``, ``experts_summary.csv``,
    ``agreement.csv``, ``annotations.csv`` (who annotated what), ``staple_fit.json`` (pooled STAPLE),
    ``summary.json`` and ``config.json``. Returns the summary.
    """
    from . import metrics, rois
    from ._atomic import commit_staged, staging_path

    ds = _resolve_dataset(config, missing_ok=True)
    if len(ds.experts) < 2:
        raise ValueError(
            f"a consensus needs at least 2 experts; got {len(ds.experts)}: {', '.join(ds.experts)}"
        )
    ids, skipped = _consensus_images(ds, config)
    design = design_of(ds, ids)
    estimate = _staple_estimate(config, design)
    out = Path(config.out)
    record = _config_record(config)
    existed = out.exists()
    done = _prepare_out(out, record["config"], overwrite=config.overwrite, resume=config.resume)
    experts = ds.expert_names
    try:
        fio.write_json(out / "config.json", record, overwrite=True)
        fit = (_fit_pooled(ds, ids, prior=config.prior, max_iter=config.max_iter, progress=progress)
               if estimate == "pooled" else None)
        if fit is not None:
            fio.write_json(out / "staple_fit.json", {
                "estimate": "pooled over images", "experts": experts,
                "sensitivity": fit.sensitivity.tolist(), "specificity": fit.specificity.tolist(),
                "images_per_expert": design["annotated_by"], "n_iter": fit.n_iter, "converged": fit.converged,
                "priors": dict(zip(ids, fit.priors.tolist())),
            }, overwrite=True)
        colors = {e: EXPERT_COLORS[i % len(EXPERT_COLORS)] for i, e in enumerate(experts)}
        todo = [i for i in ids if i not in done]
        if done:
            logger.info("resuming: %d of %d images already done", len(done & set(ids)), len(ids))
        for image_id in _progress(todo, total=len(todo), enabled=progress, desc="consensus"):
            # an image's outputs are written under hidden names and moved into place together, its
            # per_image record last: a kill leaves either all of them or nothing that looks finished
            for d, suffix in _IMAGE_OUTPUTS:  # left by a run killed while moving them: not finished
                (out / d / f"{image_id}{suffix}").unlink(missing_ok=True)
            staged: list[tuple[Path, Path]] = []

            def stage(d: str, suffix: str, _staged: list = staged, _id: str = image_id) -> Path:
                target = out / d / f"{_id}{suffix}"
                _staged.append((staging_path(target), target))
                return _staged[-1][0]

            image, ann, ignore = ds.load(image_id)
            names = ds.raters(image_id)
            masks = np.stack([ann[e] > 0 for e in names])
            pooled = None
            if fit is not None:
                n, k = ids.index(image_id), [experts.index(e) for e in names]
                pooled = (fit.sensitivity[k], fit.specificity[k], float(fit.priors[n]))
            res = consensus_of(masks, config, ignore=ignore, pooled=pooled)
            cmask = res["mask"]
            if ignore is not None:
                cmask = cmask & ~ignore
            fio.write_tiff(stage("masks", ".tif"), cmask.astype(np.uint8) * 255, overwrite=True)
            if res["probability"] is not None:
                fio.write_tiff(stage("probability", ".tif"), res["probability"], overwrite=True)
            labels = res["labels"]
            fio.write_tiff(
                stage("labels", ".tif"), labels.astype(np.uint16 if labels.max() < 65536 else np.int32),
                overwrite=True,
            )
            c_rois = rois.labels_to_rois(labels, name_prefix="consensus:", stroke_color=CONSENSUS_COLOR)
            rois.write_roiset(stage("rois", ".zip"), c_rois, overwrite=True)
            if config.write_overlays:
                overlay = []
                for k, e in enumerate(names):
                    overlay += rois.mask_to_rois(masks[k], name_prefix=f"{e}:", stroke_color=colors[e])
                overlay += [rois.set_stroke(r, CONSENSUS_COLOR, 2) for r in c_rois]  # drawn last, on top
                rois.write_imagej_tiff(stage("overlays", ".tif"), image, rois=overlay, overwrite=True)
            raters = {e: masks[k] for k, e in enumerate(names)}
            rows, _ = score_raters(raters, reference=cmask, min_size=config.min_size, ignore=ignore)
            for k, r in enumerate(rows):
                r["image"] = image_id
                r["staple_sensitivity"] = None if res["sensitivity"] is None else float(res["sensitivity"][k])
                r["staple_specificity"] = None if res["specificity"] is None else float(res["specificity"][k])
            _, pairs = score_raters({**raters, "consensus": cmask}, min_size=config.min_size, ignore=ignore)
            for p in pairs:
                p["image"] = image_id
            record_img = {
                "image": image_id,
                "raters": names,
                "experts": rows,
                "pairs": pairs,
                "fleiss_kappa": metrics.fleiss_kappa(masks, ignore=ignore),
                "consensus_objects": int(labels.max()),
                "expert_objects": {r["expert"]: r["n_objects"] for r in rows},
                "staple": {k: res[k] for k in ("prior", "n_iter", "converged") if k in res},
            }
            fio.write_json(stage(_PER_IMAGE, ".json"), record_img, overwrite=True)
            try:
                commit_staged(staged)
            finally:
                for tmp, _ in staged:
                    tmp.unlink(missing_ok=True)
    except BaseException:
        _discard_failed(out, existed)
        raise
    return _finish_consensus(
        out, ds, config, overwrite=True, ids=ids, design=design, estimate=estimate, fit=fit, skipped=skipped
    )


_EXPERT_COLS = [
    "image", "expert", "staple_sensitivity", "staple_specificity", "sensitivity", "specificity",
    "dice", "roi_f1", "average_precision", "object_precision", "object_recall", "n_objects",
    "n_reference_objects",
]
_PAIR_COLS = ["rater_a", "rater_b", "dice", "iou", "roi_f1", "cohen_kappa"]


def _write_matrices(out: Path, pair_summary: list[dict[str, Any]], raters: list[str], *, overwrite: bool) -> None:
    """Write ``agreement_matrix_<metric>.csv``: a symmetric rater × rater matrix (diagonal 1) per metric;
    a pair of experts who never annotated the same image is NaN."""
    index = {r: i for i, r in enumerate(raters)}
    for metric in ("dice", "roi_f1", "cohen_kappa"):
        mat = np.full((len(raters), len(raters)), np.nan)
        np.fill_diagonal(mat, 1.0)
        for p in pair_summary:
            i, j = index[p["rater_a"]], index[p["rater_b"]]
            mat[i, j] = mat[j, i] = p[metric]
        rows = [{"rater": a, **{b: mat[i, j] for j, b in enumerate(raters)}} for i, a in enumerate(raters)]
        fio.write_csv(out / f"agreement_matrix_{metric}.csv", rows, columns=["rater", *raters], overwrite=overwrite)


def _icc_counts(per_image: list[dict[str, Any]], experts: list[str]) -> float:
    """ICC(2,1) of the experts' object counts over the images every expert annotated (NaN if < 2)."""
    from . import metrics

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
    if design["pairs_without_overlap"]:
        logger.warning("%d pair(s) of experts never annotated the same image (no agreement for them): %s",
                       len(design["pairs_without_overlap"]),
                       ", ".join(f"{a}-{b}" for a, b in design["pairs_without_overlap"][:6]))
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


def run_agreement(config: AgreementConfig, *, progress: bool = False) -> dict[str, Any]:
    """Pairwise agreement of the experts and, with ``config.reference``, each expert vs that reference.

    Experts may have annotated different images: every pair is scored on the images both annotated
    (``n_images`` in the table; a pair without any shared image is reported, not scored).
    Nothing but the optional tables (``agreement.csv``, ``experts.csv``, ``annotations.csv``,
    ``summary.json``) is written. Returns the summary, which includes the mean pairwise table.
    """
    from . import metrics

    ds = _resolve_dataset(config, missing_ok=True)
    ref_paths = (
        fio.pair_annotations(ds.images, config.reference, expert="reference") if config.reference else {}
    )
    design = design_of(ds)
    out = Path(config.out) if config.out is not None else None
    if out is not None:  # check the folder before the work
        from ._atomic import claim_folder

        claim_folder(out, "agreement", legacy=_made_by_us, create=False)
    expert_rows, pair_rows, kappas = [], [], []
    for image_id in _progress(ds.ids, total=len(ds.ids), enabled=progress, desc="agreement"):
        image, ann, ignore = ds.load(image_id)
        raters = {e: ann[e] > 0 for e in ds.raters(image_id)}
        reference = fio.read_mask(ref_paths[image_id], image.shape) if ref_paths else None
        rows, pairs = score_raters(raters, reference=reference, min_size=config.min_size, ignore=ignore)
        for r in rows + pairs:
            r["image"] = image_id
        expert_rows += rows
        pair_rows += pairs
        if len(raters) >= 2:
            kappas.append(metrics.fleiss_kappa(np.stack(list(raters.values())), ignore=ignore))
    pair_summary = _mean_rows(pair_rows, _PAIR_COLS[2:], by=["rater_a", "rater_b"])
    score_keys = [c for c in _EXPERT_COLS[4:]]
    expert_summary = _mean_rows(expert_rows, score_keys, by=["expert"]) if expert_rows else []
    if design["pairs_without_overlap"]:
        logger.warning("%d pair(s) of experts never annotated the same image (no agreement for them): %s",
                       len(design["pairs_without_overlap"]),
                       ", ".join(f"{a}-{b}" for a, b in design["pairs_without_overlap"][:6]))
    summary = {
        "ok": True,
        "command": "agreement",
        "n_images": len(ds.ids),
        "experts": ds.expert_names,
        "design": "every expert on every image" if design["complete"] else "experts annotated different images",
        "annotated_by": design["annotated_by"],
        "pair_overlap": design["overlap"],
        "pairs_without_overlap": design["pairs_without_overlap"],
        "mean_fleiss_kappa": _nanmean(kappas),
        "pairwise": pair_summary,
        "vs_reference": expert_summary,
    }
    if out is not None:
        _prepare_out(out, {}, overwrite=config.overwrite, resume=False, command="agreement", dirs=())
        fio.write_json(out / "config.json", _config_record(config), overwrite=config.overwrite)
        fio.write_csv(
            out / "agreement.csv", pair_summary, columns=_PAIR_COLS[:2] + ["n_images"] + _PAIR_COLS[2:],
            overwrite=config.overwrite,
        )
        _write_matrices(out, pair_summary, ds.expert_names, overwrite=config.overwrite)
        _write_design(out, design, ds.expert_names, overwrite=config.overwrite)
        if expert_rows:
            cols = ["image", "expert"] + score_keys
            fio.write_csv(out / "experts.csv", expert_rows, columns=cols, overwrite=config.overwrite)
        summary["out"] = str(out.resolve())
        fio.write_json(out / "summary.json", summary, overwrite=config.overwrite)
    return summary


# --------------------------------------------------------------------------------------------- plans


_PLAN_COLS = ["order", "image", "expert", "reason", "priority"]


def _plan_priority(config: Any, ds: fio.ExpertDataset) -> tuple[dict[str, float], str]:
    """Per-image priority: the model's QA score / mean uncertainty, else the experts' disagreement."""
    import csv

    from . import metrics

    if config.predictions is not None:
        folder = Path(config.predictions)
        table = folder / "images.csv"
        if table.is_file():
            with open(table, encoding="utf-8", newline="") as fh:
                rows = {r.get("image", ""): r.get("qa_score", "") for r in csv.DictReader(fh)}
            prio = {}
            for i in ds.ids:
                try:
                    prio[i] = float(rows[i])
                except (KeyError, ValueError):
                    prio[i] = float("nan")
            if not any(np.isfinite(v) for v in prio.values()):
                raise ValueError(f"{table} has no qa_score for any of the project's images ({len(ds.ids)})")
            return prio, "model QA score"
        maps = folder / "uncertainty" if (folder / "uncertainty").is_dir() else folder
        paths = fio.pair_annotations(ds.ids, maps, expert="uncertainty", required=False)
        prio = {}
        for i in ds.ids:
            if i in paths:
                u = fio.read_image(paths[i]).astype(np.float64)
                prio[i] = float(np.nanmean(u)) if np.isfinite(u).any() else float("nan")
            else:
                prio[i] = float("nan")
        return prio, "mean model uncertainty"
    prio = {}
    for i in ds.ids:
        names = ds.raters(i)
        if len(names) < 2:
            prio[i] = float("nan")
            continue
        _, ann, ignore = ds.load(i)
        dice = [metrics.dice(ann[a] > 0, ann[b] > 0, ignore=ignore)
                for k, a in enumerate(names) for b in names[k + 1:]]
        prio[i] = 1.0 - _nanmean(dice) if np.isfinite(_nanmean(dice)) else 0.0
    return prio, "expert disagreement (1 - mean pairwise Dice)"


def _plan_dataset(project: Path) -> fio.ExpertDataset:
    """The project's images and whatever annotations exist (expert folders may be missing or empty)."""
    project = Path(project)
    if not project.is_dir():
        raise FileNotFoundError(f"project folder {project} does not exist")
    images = fio.list_images(project / "images")
    experts: dict[str, dict[str, Path]] = {}
    ann = project / "annotations"
    for d in sorted(ann.iterdir()) if ann.is_dir() else []:
        if d.is_dir() and not d.name.startswith(".") and any(d.iterdir()):
            experts[d.name] = fio.pair_annotations(images, d, expert=d.name, required=False)
    ign = project / "ignore"
    ignore = fio.pair_annotations(images, ign, expert="ignore", required=False) if ign.is_dir() and any(ign.iterdir()) else {}
    return fio.ExpertDataset(images=images, experts=experts, ignore=ignore)


def run_plan(config: Any) -> dict[str, Any]:
    """Write an annotation plan for a project: ``plan.csv`` (order, image, expert, reason) and a summary.

    Images the model is least sure about (``config.predictions``), or the experts disagree on most, come
    first; every image gets experts up to ``config.target``; the design keeps every pair of experts on at
    least one shared image; ``config.budget`` caps the new annotations. See :mod:`fiji_consensus.plan`.
    """
    from ._atomic import claim_folder
    from .plan import make_plan

    project = Path(config.project)
    ds = _plan_dataset(project)
    experts = list(config.experts) or ds.expert_names
    if len(experts) < 2:
        raise ValueError(
            f"a plan needs at least 2 experts; got {len(experts)} ({', '.join(experts) or 'none'}): name them "
            "with --experts (the project's annotations/<expert>/ folders are used by default)"
        )
    if config.target > len(experts):
        raise ValueError(f"--target {config.target} exceeds the {len(experts)} experts: {', '.join(experts)}")
    out = Path(config.out) if config.out is not None else project / "plan"
    claim_folder(out, "plan", create=False)
    if (out / "plan.csv").exists() and not config.overwrite:
        raise FileExistsError(f"{out / 'plan.csv'} exists; use --overwrite to replace the plan")
    priority, source = _plan_priority(config, ds)
    annotated = {i: ds.raters(i) for i in ds.ids}
    plan = make_plan(ds.ids, experts, annotated=annotated, priority=priority, priority_name=source,
                     target=config.target, budget=config.budget)
    claim_folder(out, "plan")
    fio.write_json(out / "config.json", _config_record(config), overwrite=True)
    fio.write_csv(out / "plan.csv", plan.rows, columns=_PLAN_COLS, overwrite=True)
    summary = {
        "ok": True,
        "command": "plan",
        "out": str(out.resolve()),
        "plan": str((out / "plan.csv").resolve()),
        "n_images": len(ds.ids),
        "experts": experts,
        "target": config.target,
        "budget": config.budget,
        "priority": source,
        "annotations_existing": sum(len(r) for r in annotated.values()),
        "annotations_planned": len(plan.rows),
        "planned_per_expert": {e: plan.per_expert().get(e, 0) for e in experts},
        "images_at_target": len(ds.ids) - len(plan.short),
        "images_below_target": plan.short,
        "pairs_without_overlap": [list(p) for p in plan.pairs_without_overlap],
        "min_pair_overlap": min(plan.overlap.values()) if plan.overlap else 0,
    }
    fio.write_json(out / "summary.json", summary, overwrite=True)
    return summary


def next_planned(project: str | os.PathLike, expert: str, *, plan: str | os.PathLike | None = None) -> dict[str, Any]:
    """The next image the project's plan gives ``expert`` that ``expert`` has not annotated yet.

    Returns ``{"ok": True, "image": id or None, "path": absolute image path or None, "remaining": n}``,
    ``remaining`` counting the planned images of that expert still to do (the returned one included).
    """
    import csv

    project = Path(project)
    plan_file = Path(plan) if plan is not None else project / "plan" / "plan.csv"
    if not plan_file.is_file():
        raise FileNotFoundError(
            f"no annotation plan at {plan_file}: make one with `fiji-consensus plan --project {project}`"
        )
    images = fio.list_images(project / "images")
    with open(plan_file, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("expert") == expert]
    folder = project / "annotations" / expert
    done: set[str] = set()
    if folder.is_dir() and any(folder.iterdir()):
        done = set(fio.pair_annotations(images, folder, expert=expert, required=False))
    todo = [r["image"] for r in sorted(rows, key=lambda r: int(r["order"])) if r["image"] not in done]
    missing = [i for i in todo if i not in images]
    if missing:
        raise ValueError(f"the plan {plan_file} names images that are not in {project / 'images'}: {', '.join(missing[:5])}")
    image = todo[0] if todo else None
    return {
        "ok": True,
        "command": "plan next",
        "expert": expert,
        "image": image,
        "path": str(images[image].resolve()) if image else None,
        "remaining": len(todo),
        "planned": len(rows),
    }


# --------------------------------------------------------------------------------------------- training


def _train_targets(masks: np.ndarray, kind: str, ignore: np.ndarray | None) -> np.ndarray:
    from .consensus import training_targets

    return training_targets(masks, kind, ignore=ignore)



def _dask_member_runner(config: TrainJobConfig, *, progress: bool) -> Any:
    """With ``config.dask``: a runner that trains the members in parallel on Dask (else None)."""
    if config.dask is None:
        return None
    import functools

    from .distributed import train_members

    return functools.partial(train_members, options=config.dask, progress=progress)


def run_train(config: TrainJobConfig, *, progress: bool = False) -> dict[str, Any]:
    """Train a U-Net ensemble (``fiji_consensus.nn``, needs the ``train`` extra) as ``config`` says.

    The targets are the masks of ``config.labels`` or, without them, the experts' consensus of kind
    ``config.targets``; experts' masks, when given, are passed on for the paper's member selection and the
    per-image expert scores. An interrupted run resumes in ``config.out`` (same settings); ``overwrite``
    starts over. Returns the training summary.
    """
    from ._validate import require

    require("torch", extra="train")
    from ._atomic import claim_folder
    from .nn.train import _is_ensemble_folder, train_ensemble

    claim_folder(config.out, "train", legacy=_is_ensemble_folder, create=False)  # before the images: fail fast
    init = _load_init(config.init) if config.init is not None else None  # before the images: fail fast
    if config.labs:
        return _run_train_labs(config, init, progress=progress)
    ds = _resolve_dataset(config, missing_ok=True)  # experts may have annotated different images
    label_paths = fio.pair_annotations(ds.images, config.labels, expert="labels") if config.labels else {}
    if not label_paths and len(ds.experts) < 2:
        raise ValueError(
            f"computing consensus targets needs at least 2 experts; got {len(ds.experts)}"
        )
    experts = ds.expert_names
    complete = ds.complete
    fit = None
    if not label_paths:
        few = [i for i in ds.ids if len(ds.raters(i)) < 2]
        if few:
            raise ValueError(
                f"{len(few)} image(s) have fewer than 2 experts' annotations for a consensus target: "
                + ", ".join(f"{i} ({', '.join(ds.raters(i)) or 'nobody'})" for i in few[:8])
                + "; have them annotated (`fiji-consensus plan`) or train on --labels"
            )
        if not complete and config.targets in ("staple", "staple-soft"):
            fit = _fit_pooled(ds, ds.ids, progress=progress)
    if not complete and config.train.paper_selection:
        raise ValueError(
            "--paper-selection compares each member with every expert on every validation image; here the "
            "experts annotated different images: train without it"
        )
    groups = read_groups(config.groups) if config.groups else None
    images, targets, ignores = [], [], []
    expert_masks: dict[str, list[np.ndarray]] = {e: [] for e in experts}
    for n, image_id in enumerate(_progress(ds.ids, total=len(ds.ids), enabled=progress, desc="reading")):
        image, ann, ign = ds.load(image_id)
        names = ds.raters(image_id)
        if label_paths:
            target = fio.read_mask(label_paths[image_id], image.shape).astype(np.float32)
        elif fit is not None:  # missing raters: pooled STAPLE posterior from this image's own experts
            k = [experts.index(e) for e in names]
            from . import consensus

            prob = consensus.staple_posterior(np.stack([ann[e] > 0 for e in names]), fit.sensitivity[k],
                                              fit.specificity[k], float(fit.priors[n]), ignore=ign)
            target = (prob if config.targets == "staple-soft" else prob > 0.5).astype(np.float32)
        else:
            target = _train_targets(np.stack([ann[e] > 0 for e in names]), config.targets, ign)
        images.append(image)
        targets.append(target)
        ignores.append(ign)
        if complete:
            for e in experts:
                expert_masks[e].append(ann[e] > 0)
    provenance = {
        "tool": "fiji-consensus",
        "version": __version__,
        "job": config.model_dump(mode="json", exclude={"train"}),
        "targets": f"labels folder {config.labels}" if label_paths else (
            f"{config.targets} of {len(experts)} experts"
            + ("" if complete else " (experts annotated different images; STAPLE pooled over images)")),
        "experts": experts,
    }
    summary = train_ensemble(
        images, targets, config.out, config.train,
        image_ids=ds.ids,
        ignore=ignores if any(i is not None for i in ignores) else None,
        groups=groups,
        expert_masks=expert_masks if experts and complete else None,  # per-image expert scores need all
        provenance=provenance,
        progress=progress,
        resume=not config.overwrite,
        member_runner=_dask_member_runner(config, progress=progress),
        init=init,
    )
    return {"ok": True, "command": "train", "out": str(Path(config.out).resolve()), **summary}


def _run_train_labs(config: TrainJobConfig, init: Any, *, progress: bool) -> dict[str, Any]:
    """Multi-lab training: every lab's own consensus and experts, labs balanced in sampling."""
    from .crossval import load_lab, multi_lab_inputs
    from .nn.train import train_ensemble

    sizes = config.lab_min_sizes or {}
    labs = [load_lab(p, min_size=sizes.get(Path(p).name)) for p in config.labs]
    if config.train.min_size:
        for lab in labs:  # labs named in neither lab_min_sizes nor the published table: the config's
            if lab.name not in sizes and lab.name not in ("lab-wue1", "lab-mue", "lab-inns1"):
                lab.min_size = config.train.min_size
    kw = multi_lab_inputs(labs, config.targets)
    groups = read_groups(config.groups) if config.groups else None
    provenance = {
        "tool": "fiji-consensus", "version": __version__, "job": config.model_dump(mode="json", exclude={"train"}),
        "targets": f"{config.targets} of each lab's own experts",
        "experts": sorted(kw["expert_masks"]),
    }
    summary = train_ensemble(
        kw["images"], kw["targets"], config.out, config.train, image_ids=kw["image_ids"],
        groups=groups if groups else (kw["groups"] if config.train.split == "group_kfold" else None),
        expert_masks=kw["expert_masks"], labs=kw["labs"], min_sizes=kw["min_sizes"], provenance=provenance,
        progress=progress, resume=not config.overwrite, member_runner=_dask_member_runner(config, progress=progress),
        init=init,
    )
    return {"ok": True, "command": "train", "out": str(Path(config.out).resolve()), **summary}


def _load_init(path: Path) -> Any:
    """The ensemble to fine-tune from: an ensemble folder or one of our bioimage.io packages."""
    from .nn.ensemble import load_ensemble
    from .zoo import ensemble_from_package, is_package

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--init {p}: no such ensemble folder or package")
    return ensemble_from_package(p) if is_package(p) else load_ensemble(p)
