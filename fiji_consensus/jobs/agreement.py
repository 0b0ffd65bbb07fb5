"""The agreement job: pairwise agreement of the experts and, with a reference, each expert against it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import io as fio
from ..config import AgreementConfig
from ._common import _config_record, _made_by_us, _mean_rows, _nanmean, _prepare_out, _progress, _resolve_dataset
from ._common import _warn_pairs_without_overlap, _write_design, design_of

logger = logging.getLogger(__name__)


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
    from .. import metrics

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


def run_agreement(config: AgreementConfig, *, progress: bool = False) -> dict[str, Any]:
    """Pairwise agreement of the experts and, with ``config.reference``, each expert vs that reference.

    Experts may have annotated different images: every pair is scored on the images both annotated
    (``n_images`` in the table; a pair without any shared image is reported, not scored).
    Nothing but the optional tables (``agreement.csv``, ``experts.csv``, ``annotations.csv``,
    ``summary.json``) is written. Returns the summary, which includes the mean pairwise table.
    """
    from .. import metrics

    ds = _resolve_dataset(config, missing_ok=True)
    ref_paths = (
        fio.pair_annotations(ds.images, config.reference, expert="reference") if config.reference else {}
    )
    design = design_of(ds)
    out = Path(config.out) if config.out is not None else None
    if out is not None:  # check the folder before the work
        from .._atomic import claim_folder

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
    _warn_pairs_without_overlap(design)
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
