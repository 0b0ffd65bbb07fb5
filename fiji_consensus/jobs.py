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
from .config import AgreementConfig, ConsensusConfig, TrainJobConfig

__all__ = [
    "run_consensus", "run_agreement", "run_train", "read_groups", "consensus_of", "score_raters", "EXPERT_COLORS",
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


def consensus_of(
    masks: np.ndarray,
    config: ConsensusConfig,
    *,
    ignore: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compute the consensus of one image's ``(R, Y, X)`` expert masks as ``config`` asks.

    Returns a dict with ``mask`` (bool (Y, X)), ``labels`` (int32 (Y, X), one label per consensus
    object, ``min_size`` applied), ``probability`` (float32 (Y, X) for STAPLE, else None) and
    ``sensitivity``/``specificity`` (per expert, STAPLE only).
    """
    from . import consensus, matching

    out: dict[str, Any] = {"probability": None, "sensitivity": None, "specificity": None}
    if config.method == "staple":
        res = consensus.staple(masks, prior=config.prior, max_iter=config.max_iter, ignore=ignore)
        out["probability"] = res.probability.astype(np.float32)
        out["mask"] = res.probability > config.threshold
        out["sensitivity"] = np.asarray(res.sensitivity, dtype=float)
        out["specificity"] = np.asarray(res.specificity, dtype=float)
        out["prior"] = float(res.prior)
        out["n_iter"] = int(res.n_iter)
        out["converged"] = bool(res.converged)
        out["labels"] = matching.label_objects(out["mask"], min_size=config.min_size)
    elif config.method == "majority":
        out["mask"] = consensus.majority_vote(masks, min_votes=config.min_votes, ignore=ignore)
        out["labels"] = matching.label_objects(out["mask"], min_size=config.min_size)
    else:
        res = consensus.object_consensus(
            masks,
            min_experts=config.min_experts,
            iou_threshold=config.iou_threshold,
            min_size=config.min_size,
        )
        labels = np.asarray(res.labels, dtype=np.int32)
        if ignore is not None:
            labels = np.where(ignore, 0, labels)
        out["labels"] = labels
        out["mask"] = labels > 0
    return out


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


def _prepare_out(out: Path, config_json: dict[str, Any], *, overwrite: bool, resume: bool) -> set[str]:
    """Create/check the output folder; return the image ids already done (resume)."""
    done: set[str] = set()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
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
            done = {p.stem for p in (out / _PER_IMAGE).glob("*.json")}
        elif not overwrite:
            raise FileExistsError(
                f"output folder {out} exists and is not empty; use --overwrite to replace its files, "
                "--resume to continue an interrupted run, or choose another folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    return done


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


def _resolve_dataset(config: ConsensusConfig | AgreementConfig | TrainJobConfig) -> fio.ExpertDataset:
    """The images and experts a job config names: a project folder, image + expert folders, or images only."""
    if config.project is not None:
        ds = fio.open_project(config.project)
    elif config.experts:
        return fio.open_dataset(
            config.images, config.experts, ignore=config.ignore, expert_names=config.expert_names
        )
    else:
        ds = fio.ExpertDataset(images=fio.list_images(config.images), experts={})
    if config.ignore is not None:
        ds.ignore = fio.pair_annotations(ds.images, config.ignore, expert="ignore", required=False)
    return ds


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


def run_consensus(config: ConsensusConfig, *, progress: bool = False) -> dict[str, Any]:
    """Consensus of every image, per-expert scores and pairwise agreement, written to ``config.out``.

    Writes ``masks/<id>.tif`` (uint8 0/255), ``probability/<id>.tif`` (float32, STAPLE),
    ``labels/<id>.tif`` (uint16 objects), ``rois/<id>.zip``, ``overlays/<id>.tif`` (the image with
    consensus and expert outlines), ``per_image/<id>.json``, ``experts.csv``, ``experts_summary.csv``,
    ``agreement.csv``, ``summary.json`` and ``config.json``. Returns the summary.
    """
    from . import metrics, rois

    ds = _resolve_dataset(config)
    if len(ds.experts) < 2:
        raise ValueError(
            f"a consensus needs at least 2 experts; got {len(ds.experts)}: {', '.join(ds.experts)}"
        )
    out = Path(config.out)
    record = _config_record(config)
    done = _prepare_out(out, record["config"], overwrite=config.overwrite, resume=config.resume)
    fio.write_json(out / "config.json", record, overwrite=True)
    write_over = config.overwrite or config.resume
    experts = ds.expert_names
    colors = {e: EXPERT_COLORS[i % len(EXPERT_COLORS)] for i, e in enumerate(experts)}
    todo = [i for i in ds.ids if i not in done]
    if done:
        logger.info("resuming: %d of %d images already done", len(done & set(ds.ids)), len(ds.ids))
    for image_id in _progress(todo, total=len(todo), enabled=progress, desc="consensus"):
        image, ann, ignore = ds.load(image_id)
        masks = np.stack([ann[e] > 0 for e in experts])
        res = consensus_of(masks, config, ignore=ignore)
        cmask = res["mask"]
        if ignore is not None:
            cmask = cmask & ~ignore
        fio.write_tiff(out / "masks" / f"{image_id}.tif", cmask.astype(np.uint8) * 255, overwrite=write_over)
        if res["probability"] is not None:
            fio.write_tiff(
                out / "probability" / f"{image_id}.tif", res["probability"], overwrite=write_over
            )
        labels = res["labels"]
        fio.write_tiff(
            out / "labels" / f"{image_id}.tif", labels.astype(np.uint16 if labels.max() < 65536 else np.int32),
            overwrite=write_over,
        )
        c_rois = rois.labels_to_rois(labels, name_prefix="consensus:", stroke_color=CONSENSUS_COLOR)
        rois.write_roiset(out / "rois" / f"{image_id}.zip", c_rois, overwrite=write_over)
        if config.write_overlays:
            overlay = []
            for k, e in enumerate(experts):
                overlay += rois.mask_to_rois(masks[k], name_prefix=f"{e}:", stroke_color=colors[e])
            overlay += [rois.set_stroke(r, CONSENSUS_COLOR, 2) for r in c_rois]  # drawn last, on top
            rois.write_imagej_tiff(out / "overlays" / f"{image_id}.tif", image, rois=overlay, overwrite=write_over)
        raters = {e: masks[k] for k, e in enumerate(experts)}
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
            "experts": rows,
            "pairs": pairs,
            "fleiss_kappa": metrics.fleiss_kappa(masks, ignore=ignore),
            "consensus_objects": int(labels.max()),
            "expert_objects": {r["expert"]: r["n_objects"] for r in rows},
            "staple": {k: res[k] for k in ("prior", "n_iter", "converged") if k in res},
        }
        fio.write_json(out / _PER_IMAGE / f"{image_id}.json", record_img, overwrite=True)
    return _finish_consensus(out, ds, config, overwrite=True)


_EXPERT_COLS = [
    "image", "expert", "staple_sensitivity", "staple_specificity", "sensitivity", "specificity",
    "dice", "roi_f1", "average_precision", "object_precision", "object_recall", "n_objects",
    "n_reference_objects",
]
_PAIR_COLS = ["rater_a", "rater_b", "dice", "iou", "roi_f1", "cohen_kappa"]


def _write_matrices(out: Path, pair_summary: list[dict[str, Any]], raters: list[str], *, overwrite: bool) -> None:
    """Write ``agreement_matrix_<metric>.csv``: a symmetric rater × rater matrix (diagonal 1) per metric."""
    index = {r: i for i, r in enumerate(raters)}
    for metric in ("dice", "roi_f1", "cohen_kappa"):
        mat = np.eye(len(raters))
        for p in pair_summary:
            i, j = index[p["rater_a"]], index[p["rater_b"]]
            mat[i, j] = mat[j, i] = p[metric]
        rows = [{"rater": a, **{b: mat[i, j] for j, b in enumerate(raters)}} for i, a in enumerate(raters)]
        fio.write_csv(out / f"agreement_matrix_{metric}.csv", rows, columns=["rater", *raters], overwrite=overwrite)


def _icc_counts(per_image: list[dict[str, Any]], experts: list[str]) -> float:
    from . import metrics

    if len(per_image) < 2:
        return float("nan")
    counts = np.array([[img["expert_objects"][e] for e in experts] for img in per_image], dtype=float)
    return float(metrics.icc(counts, form="ICC(2,1)"))


def _finish_consensus(
    out: Path, ds: fio.ExpertDataset, config: ConsensusConfig, *, overwrite: bool
) -> dict[str, Any]:
    per_image = [fio.read_json(out / _PER_IMAGE / f"{i}.json") for i in ds.ids]
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
    summary = {
        "ok": True,
        "command": "consensus",
        "method": config.method,
        "out": str(out.resolve()),
        "n_images": len(ds.ids),
        "experts": ds.expert_names,
        "mean_fleiss_kappa": float(np.nanmean([img["fleiss_kappa"] for img in per_image])),
        "icc_object_counts": _icc_counts(per_image, ds.expert_names),
        "mean_consensus_objects": float(np.mean([img["consensus_objects"] for img in per_image])),
        "expert_scores": {r["expert"]: {k: r[k] for k in ("dice", "roi_f1", "sensitivity")}
                          for r in expert_summary},
    }
    fio.write_json(out / "summary.json", summary, overwrite=overwrite)
    logger.info("consensus of %d images written to %s", len(ds.ids), out)
    return summary


def run_agreement(config: AgreementConfig, *, progress: bool = False) -> dict[str, Any]:
    """Pairwise agreement of the experts and, with ``config.reference``, each expert vs that reference.

    Nothing but the optional tables (``agreement.csv``, ``experts.csv``, ``summary.json``) is written.
    Returns the summary, which includes the mean pairwise table.
    """
    from . import metrics

    ds = _resolve_dataset(config)
    ref_paths = (
        fio.pair_annotations(ds.images, config.reference, expert="reference") if config.reference else {}
    )
    expert_rows, pair_rows, kappas = [], [], []
    for image_id in _progress(ds.ids, total=len(ds.ids), enabled=progress, desc="agreement"):
        image, ann, ignore = ds.load(image_id)
        raters = {e: ann[e] > 0 for e in ds.expert_names}
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
    summary = {
        "ok": True,
        "command": "agreement",
        "n_images": len(ds.ids),
        "experts": ds.expert_names,
        "mean_fleiss_kappa": float(np.nanmean(kappas)) if kappas else float("nan"),
        "pairwise": pair_summary,
        "vs_reference": expert_summary,
    }
    if config.out is not None:
        out = Path(config.out)
        _prepare_out(out, {}, overwrite=config.overwrite, resume=False)
        fio.write_json(out / "config.json", _config_record(config), overwrite=config.overwrite)
        fio.write_csv(
            out / "agreement.csv", pair_summary, columns=_PAIR_COLS[:2] + ["n_images"] + _PAIR_COLS[2:],
            overwrite=config.overwrite,
        )
        _write_matrices(out, pair_summary, ds.expert_names, overwrite=config.overwrite)
        if expert_rows:
            cols = ["image", "expert"] + score_keys
            fio.write_csv(out / "experts.csv", expert_rows, columns=cols, overwrite=config.overwrite)
        summary["out"] = str(out.resolve())
        fio.write_json(out / "summary.json", summary, overwrite=config.overwrite)
    return summary


# --------------------------------------------------------------------------------------------- training


def read_groups(path: str | os.PathLike) -> dict[str, str]:
    """Read a CSV mapping image id -> group (first two columns; a header row is allowed).

    Ids are kept as written (``0001`` stays ``0001``).
    """
    import csv
    import io as _io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    groups: dict[str, str] = {}
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the groups CSV as UTF-8"
        ) from None
    for i, row in enumerate(csv.reader(_io.StringIO(text, newline=""))):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ValueError(f"{path}, line {i + 1}: expected 'image id, group'; got {row}")
        image_id, group = row[0].strip(), row[1].strip()
        if i == 0 and image_id.lower() in ("file_id", "image", "image_id", "id"):
            continue
        if image_id in groups and groups[image_id] != group:
            raise ValueError(f"{path}: image {image_id!r} is in two groups ({groups[image_id]}, {group})")
        groups[image_id] = group
    if not groups:
        raise ValueError(f"{path} holds no 'image id, group' rows")
    return groups


def _train_targets(masks: np.ndarray, kind: str, ignore: np.ndarray | None) -> np.ndarray:
    from . import consensus

    if kind == "fraction":
        return consensus.expert_fraction(masks, ignore=ignore).astype(np.float32)
    if kind == "majority":
        return consensus.majority_vote(masks, ignore=ignore).astype(np.float32)
    res = consensus.staple(masks, ignore=ignore)
    if kind == "staple-soft":
        return res.probability.astype(np.float32)
    return (res.probability > 0.5).astype(np.float32)


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
    ds = _resolve_dataset(config)
    label_paths = fio.pair_annotations(ds.images, config.labels, expert="labels") if config.labels else {}
    if not label_paths and len(ds.experts) < 2:
        raise ValueError(
            f"computing consensus targets needs at least 2 experts; got {len(ds.experts)}"
        )
    groups = read_groups(config.groups) if config.groups else None
    images, targets, ignores = [], [], []
    experts = ds.expert_names
    expert_masks: dict[str, list[np.ndarray]] = {e: [] for e in experts}
    for image_id in _progress(ds.ids, total=len(ds.ids), enabled=progress, desc="reading"):
        image, ann, ign = ds.load(image_id)
        if label_paths:
            target = fio.read_mask(label_paths[image_id], image.shape).astype(np.float32)
        else:
            target = _train_targets(np.stack([ann[e] > 0 for e in experts]), config.targets, ign)
        images.append(image)
        targets.append(target)
        ignores.append(ign)
        for e in experts:
            expert_masks[e].append(ann[e] > 0)
    provenance = {
        "tool": "fiji-consensus",
        "version": __version__,
        "job": config.model_dump(mode="json", exclude={"train"}),
        "targets": f"labels folder {config.labels}" if label_paths else f"{config.targets} of {len(experts)} experts",
        "experts": experts,
    }
    summary = train_ensemble(
        images, targets, config.out, config.train,
        image_ids=ds.ids,
        ignore=ignores if any(i is not None for i in ignores) else None,
        groups=groups,
        expert_masks=expert_masks if experts else None,
        provenance=provenance,
        progress=progress,
        resume=not config.overwrite,
        member_runner=_dask_member_runner(config, progress=progress),
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
