"""The job behind ``fiji-consensus evaluate``: reads experts, an optional consensus, model predictions, groups
and regions; computes the statistics of :mod:`fiji_consensus.evaluate` (objectivity, reliability, validity,
uncertainty against disagreement); writes the CSV tables, ``summary.json``, ``config.json``, ``inputs.csv``
(every input file with its SHA-256) and ``report.html`` (:mod:`fiji_consensus.report`).

This module is the only one that joins the statistics and the report: :mod:`fiji_consensus.evaluate` never
imports it, so there is no ``evaluate <-> report`` cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from ._util import sha256_file
from .evaluate import (
    QUBIQ_THRESHOLDS,
    Evaluation,
    agreement_summary,
    calibration_table,
    classify_against_experts,
    effect_spread,
    expected_calibration_error,
    fraction_table,
    qa_agreement,
    qubiq_dice,
    region_measures,
    validity_statistics,
)
from .evaluate._common import _finite, _nanmean, _natural_key
from .uncertainty import qa_score

__all__ = ["TABLE_COLUMNS", "evaluate", "run_evaluate"]

logger = logging.getLogger(__name__)


@dataclass
class _ModelSource:
    name: str
    root: Path
    kind: str  # "predict" or "masks"
    paths: dict[str, Path]
    uncertainty: dict[str, Path] = field(default_factory=dict)
    measure: str | None = None
    threshold: float = 0.5


def _open_model(name: str, folder: Path, ids: Sequence[str]) -> _ModelSource:
    from . import io as fio

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prediction folder of model {name!r} does not exist: {folder}")
    try:
        if (folder / "probability").is_dir():
            paths = fio.pair_annotations(ids, folder / "probability", expert=name)
            unc = {}
            if (folder / "uncertainty").is_dir():
                unc = fio.pair_annotations(ids, folder / "uncertainty", expert=name, required=False)
            measure, threshold = None, 0.5
            cfg = folder / "config.json"
            if cfg.is_file():
                c = fio.read_json(cfg).get("config", {})
                measure = c.get("uncertainty")
                threshold = float(c.get("threshold") or 0.5)
            first = folder / "per_image" / f"{ids[0]}.json" if ids else None
            if first is not None and first.is_file():
                threshold = float(fio.read_json(first).get("threshold") or threshold)
            return _ModelSource(name, folder, "predict", paths, unc, measure, threshold)
        return _ModelSource(name, folder, "masks", fio.pair_annotations(ids, folder, expert=name))
    except fio.AnnotationError as exc:
        raise fio.AnnotationError(f"model {name!r}: {exc}") from None


def _read_model(src: _ModelSource, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """Return ``(probability float32, is_soft, uncertainty or None)`` of one image."""
    from . import io as fio

    path = src.paths[image_id]
    prob: np.ndarray | None = None
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = np.squeeze(np.asarray(tifffile.imread(path)))
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isin(arr, (0.0, 1.0))):
            if arr.shape != tuple(shape):
                raise fio.AnnotationError(
                    f"model {src.name!r}: {path} has shape {arr.shape}, but its image has shape {tuple(shape)}"
                )
            if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
                raise fio.AnnotationError(
                    f"model {src.name!r}: {path} holds values outside [0, 1]; expected a probability map or a mask"
                )
            prob = arr.astype(np.float32)
    soft = prob is not None
    if prob is None:
        try:
            prob = fio.read_mask(path, shape).astype(np.float32)
        except fio.AnnotationError as exc:
            raise fio.AnnotationError(f"model {src.name!r}: {exc}") from None
    unc = None
    if image_id in src.uncertainty:
        unc = fio.read_image(src.uncertainty[image_id]).astype(np.float32)
        if unc.shape != prob.shape:
            raise fio.AnnotationError(
                f"model {src.name!r}: uncertainty {src.uncertainty[image_id]} has shape {unc.shape}; expected {prob.shape}"
            )
    return prob, soft, unc


def _example_window(any_mask: np.ndarray, size: int = 256) -> tuple[int, int, int, int]:
    """The ``size``-square window (stride size/8) with the most annotated pixels: ``(y0, y1, x0, x1)``."""
    h, w = any_mask.shape
    sy, sx = min(size, h), min(size, w)
    ii = np.pad(any_mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(size // 8, 1)
    best, pos = -1, (0, 0)
    for y in list(range(0, h - sy + 1, step)) or [0]:
        for x in list(range(0, w - sx + 1, step)) or [0]:
            s = ii[y + sy, x + sx] - ii[y, x + sx] - ii[y + sy, x] + ii[y, x]
            if s > best:
                best, pos = int(s), (y, x)
    return pos[0], pos[0] + sy, pos[1], pos[1] + sx


# ------------------------------------------------------------------------------------------ the job


#: The CSV tables and their columns (in this order).
TABLE_COLUMNS: dict[str, list[str]] = {
    "objectivity": [
        "image", "rater", "kind", "dice", "roi_f1", "average_precision", "sensitivity", "specificity",
        "object_precision", "object_recall", "n_objects", "n_reference_objects", "staple_sensitivity",
        "staple_specificity", "class_roi_f1", "class_dice", "expert_min_roi_f1", "expert_max_roi_f1", "qa_score",
    ],
    "objectivity_summary": [
        "rater", "kind", "n_images", "dice", "roi_f1", "average_precision", "sensitivity", "specificity",
        "staple_sensitivity", "staple_specificity", "n_above", "n_within", "n_below", "passes_selection",
        "experts_below_mean_roi_f1",
    ],
    "agreement": ["rater_a", "rater_b", "n_images", "dice", "roi_f1"],
    "agreement_per_image": ["image", "rater_a", "rater_b", "dice", "roi_f1"],
    "reliability": [
        "strategy", "n_raters", "raters", "mean_pairwise_roi_f1", "mean_pairwise_dice", "mean_count_cv",
        "icc_counts",
    ],
    "counts": [
        "image", "group", "rater", "kind", "count", "region_area", "density", "mean_intensity",
        "count_normalised", "density_normalised", "mean_intensity_normalised", "count_outlier",
        "density_outlier", "mean_intensity_outlier",
    ],
    "validity_tests": ["rater", "measure", "test", "n", "k", "H", "df", "p", "eta2_h", "significant"],
    "validity_pairwise": [
        "rater", "measure", "group_a", "group_b", "n_a", "n_b", "median_a", "median_b", "U", "Z", "p", "m",
        "alpha_bonferroni", "p_bonferroni", "eta2", "significant", "direction",
    ],
    "outliers": ["rater", "measure", "group", "image", "value", "G", "G_crit", "n"],
    "effect_spread": [
        "strategy", "measure", "comparison", "effect", "n_raters", "mean", "sd", "min", "max", "n_significant",
    ],
    "uncertainty_vs_fraction": [
        "model", "experts_marking", "fraction", "minority", "n_pixels", "mean_probability", "mean_uncertainty",
    ],
    "calibration": ["model", "bin_low", "bin_high", "n_pixels", "mean_probability", "mean_fraction"],
    "qubiq": ["image", "model", *[f"dice_{t:.1f}" for t in QUBIQ_THRESHOLDS], "mean_dice"],
    "uncertainty_summary": [
        "model", "measure", "mean_uncertainty_unanimous_background", "mean_uncertainty_disagreement",
        "mean_uncertainty_unanimous_foreground", "uncertainty_rises_with_disagreement", "ece",
        "ece_foreground", "qubiq_mean_dice", "qa_n_images", "qa_spearman_roi_f1", "qa_spearman_dice",
        "qa_review_first", "qa_review_first_roi_f1_rank",
    ],
}


def _prepare_out(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {out} exists and is not empty; use --overwrite to replace its files or choose "
            "another folder"
        )
    out.mkdir(parents=True, exist_ok=True)


def run_evaluate(config: Any, *, progress: bool = False) -> dict[str, Any]:
    """Objectivity, reliability, validity and uncertainty analyses; tables and report in ``config.out``.

    Parameters
    ----------
    config : EvaluateConfig
        Experts (project folder or images + expert folders), optional consensus, model predictions,
        groups, regions, control, output folder.
    progress : bool
        Progress bar over images (stderr).

    Returns
    -------
    dict
        The summary, also written to ``summary.json``.

    Examples
    --------
    >>> from fiji_consensus.config import EvaluateConfig
    >>> cfg = EvaluateConfig(project="project", models={"ens": "predictions/ens"},
    ...                      groups="groups.csv", out="reports/eval")      # doctest: +SKIP
    >>> run_evaluate(cfg)["models"]["ens"]["passes_selection"]             # doctest: +SKIP
    True
    """
    return evaluate(config, progress=progress).summary


def evaluate(config: Any, *, progress: bool = False) -> Evaluation:
    """:func:`run_evaluate`, returning the whole :class:`Evaluation` (tables, example crops) too."""
    from . import consensus as cons
    from . import io as fio
    from .jobs import _config_record, _progress, _resolve_dataset, read_groups

    out = Path(config.out)
    ds = _resolve_dataset(config, missing_ok=True)  # experts may have annotated different images
    experts = ds.expert_names
    ids = ds.ids
    if config.consensus is None and len(experts) < 2:
        raise ValueError(
            f"a STAPLE consensus needs at least 2 experts; got {len(experts)}: give --consensus or more experts"
        )
    few = [i for i in ids if len(ds.raters(i)) < (1 if config.consensus is not None else 2)]
    if few:
        raise ValueError(
            f"{len(few)} image(s) have too few experts' annotations for the evaluation: "
            + ", ".join(f"{i} ({', '.join(ds.raters(i)) or 'nobody'})" for i in few[:8])
            + " (each needs 2 for its STAPLE reference, or give --consensus)"
        )
    complete = ds.complete
    pooled_fit = None
    if config.consensus is None and not complete:
        # missing raters: STAPLE pooled over the images each expert annotated (as the consensus job does)
        pats = []
        for i in ids:
            _, ann_i, ign_i = ds.load(i)
            pats.append(cons.vote_patterns(np.stack([ann_i[e] > 0 for e in ds.raters(i)]), ignore=ign_i))
        pooled_fit = cons.staple_fit(pats, [[experts.index(e) for e in ds.raters(i)] for i in ids],
                                     n_experts=len(experts))
    clash = sorted(set(config.models) & set(experts))
    if clash:
        raise ValueError(f"model names must differ from the expert names; got {clash}")
    cons_paths = fio.pair_annotations(ids, config.consensus, expert="consensus") if config.consensus else {}
    region_paths = fio.pair_annotations(ids, config.regions, expert="regions", required=False) if config.regions else {}
    groups: dict[str, str] = {}
    if config.groups is not None:
        all_groups = read_groups(config.groups)
        groups = {i: all_groups[i] for i in ids if i in all_groups}
        missing = [i for i in ids if i not in all_groups]
        if missing:
            logger.warning("%d image(s) have no group in %s and are left out of the group statistics: %s",
                           len(missing), config.groups, ", ".join(missing[:10]))
        if config.control is not None and config.control not in set(groups.values()):
            raise ValueError(
                f"control group {config.control!r} is not among the groups of the images: "
                f"{sorted(set(groups.values()), key=_natural_key)}"
            )
    models = {name: _open_model(name, Path(folder), ids) for name, folder in config.models.items()}
    model_names = list(models)
    strategies: dict[str, list[str]] = {k: list(v) for k, v in config.strategies.items()}
    if not strategies and len(model_names) >= 2:
        strategies = {"models": list(model_names)}
    example_id = config.example if config.example is not None else (ids[0] if ids else None)
    if example_id is not None and example_id not in ds.images:
        raise ValueError(f"example image {example_id!r} is not among the images: {', '.join(ids[:10])}")
    _prepare_out(out, overwrite=config.overwrite)

    R = len(experts)
    raters = [*experts, "consensus", *model_names]
    kinds = {**{e: "expert" for e in experts}, "consensus": "consensus", **{m: "model" for m in model_names}}
    obj_rows: list[dict[str, Any]] = []
    pair_rows: list[dict[str, Any]] = []
    count_rows: list[dict[str, Any]] = []
    counts: dict[str, list[float]] = {r: [] for r in raters}
    qubiq_rows: list[dict[str, Any]] = []
    frac_acc: dict[str, dict[str, np.ndarray]] = {}
    cal_acc: dict[str, dict[str, np.ndarray]] = {}
    cal_fg_acc: dict[str, dict[str, np.ndarray]] = {}
    soft_models: dict[str, bool] = {}
    inputs: list[dict[str, Any]] = []
    example: dict[str, Any] = {}
    staple_meta: list[dict[str, Any]] = []
    min_size = int(config.min_size)

    for image_id in _progress(ids, total=len(ids), enabled=progress, desc="evaluate"):
        image, ann, ignore = ds.load(image_id)
        shape = image.shape
        present = ds.raters(image_id)  # the experts who annotated this image
        masks = np.stack([ann[e] > 0 for e in present])
        if pooled_fit is not None:
            k_ = [experts.index(e) for e in present]
            g_ = float(pooled_fit.priors[ids.index(image_id)])
            st = cons.StapleResult(
                cons.staple_posterior(masks, pooled_fit.sensitivity[k_], pooled_fit.specificity[k_], g_,
                                      ignore=ignore),
                pooled_fit.sensitivity[k_], pooled_fit.specificity[k_], g_, pooled_fit.n_iter, pooled_fit.converged,
            )
        else:
            st = cons.staple(masks, ignore=ignore) if len(present) >= 2 else None
        if st is not None:
            staple_meta.append({"image": image_id, "n_iter": st.n_iter, "converged": st.converged, "prior": st.prior})
        if cons_paths:
            reference = fio.read_mask(cons_paths[image_id], shape)
        else:
            reference = st.probability > 0.5
        if ignore is not None:
            reference = reference & ~ignore
        model_prob: dict[str, np.ndarray] = {}
        model_unc: dict[str, np.ndarray | None] = {}
        for name, src in models.items():
            prob, soft, unc = _read_model(src, image_id, shape)
            model_prob[name] = prob
            model_unc[name] = unc
            soft_models[name] = soft_models.get(name, True) and soft
        bin_masks = {
            **{e: masks[k] for k, e in enumerate(present)},
            "consensus": reference,
            **{m: model_prob[m] > models[m].threshold for m in model_names},
        }
        # objectivity: every expert and model against the consensus
        img_rows = []
        for k_r, (name, m) in enumerate(bin_masks.items()):
            if name == "consensus":
                continue
            sens, spec = metrics.sensitivity_specificity(reference, m, ignore=ignore)
            obj = metrics.object_scores(reference, m, min_size=min_size, ignore=ignore)
            row = {
                "image": image_id, "rater": name, "kind": kinds[name],
                "dice": metrics.dice(reference, m, ignore=ignore), "roi_f1": obj["f1"],
                "average_precision": metrics.average_precision(reference, m, min_size=min_size, ignore=ignore)[0],
                "sensitivity": sens, "specificity": spec, "object_precision": obj["precision"],
                "object_recall": obj["recall"], "n_objects": obj["n_candidate"],
                "n_reference_objects": obj["n_reference"],
            }
            if kinds[name] == "expert" and st is not None:
                row["staple_sensitivity"] = float(st.sensitivity[k_r])
                row["staple_specificity"] = float(st.specificity[k_r])
            if kinds[name] == "model":
                # the per-image QA score `predict` ranks images by (mean uncertainty over predicted foreground)
                unc = model_unc.get(name)
                row["qa_score"] = (qa_score(unc, model_prob[name], threshold=models[name].threshold)
                                   if unc is not None else math.nan)
            img_rows.append(row)
        e_f1 = [r["roi_f1"] for r in img_rows if r["kind"] == "expert"]
        e_dice = [r["dice"] for r in img_rows if r["kind"] == "expert"]
        ef = _finite(e_f1)
        for r in img_rows:
            r["expert_min_roi_f1"] = float(ef.min()) if ef.size else math.nan
            r["expert_max_roi_f1"] = float(ef.max()) if ef.size else math.nan
            if r["kind"] == "model":
                r["class_roi_f1"] = classify_against_experts(r["roi_f1"], e_f1)
                r["class_dice"] = classify_against_experts(r["dice"], e_dice)
        obj_rows += img_rows
        # agreement between every pair of raters
        img_raters = [r for r in raters if r in bin_masks]  # pairs only where both annotated this image
        stack = np.stack([bin_masks[r] for r in img_raters])
        mat_f1 = metrics.pairwise_matrix(stack, "roi_f1", min_size=min_size, ignore=ignore)
        mat_dice = metrics.pairwise_matrix(stack, "dice", ignore=ignore)
        for i, j in combinations(range(len(img_raters)), 2):
            pair_rows.append({"image": image_id, "rater_a": img_raters[i], "rater_b": img_raters[j],
                              "dice": float(mat_dice[i, j]), "roi_f1": float(mat_f1[i, j])})
        # per-image measures (validity) and counts (reliability)
        region = fio.read_mask(region_paths[image_id], shape) if image_id in region_paths else None
        for name in raters:
            if name not in bin_masks:  # an expert who did not annotate this image
                counts[name].append(math.nan)
                continue
            meas = region_measures(bin_masks[name], image, region=region, ignore=ignore, min_size=min_size)
            count_rows.append({"image": image_id, "group": groups.get(image_id, ""), "rater": name,
                               "kind": kinds[name], **meas})
            n_obj = meas["count"] if region is None else metrics.count_objects(
                bin_masks[name], min_size=min_size, ignore=ignore)
            counts[name].append(float(n_obj))
        # uncertainty vs disagreement
        votes = masks.sum(axis=0).astype(np.int64)
        fraction = votes / float(R)
        for name in model_names if len(present) == R else ():  # expert fractions need every expert
            p = model_prob[name]
            t = fraction_table(votes, R, probability=p, uncertainty=model_unc[name], ignore=ignore)
            acc = frac_acc.setdefault(name, {k: np.zeros_like(v) for k, v in t.items()})
            for k_, v in t.items():
                acc[k_] = acc[k_] + v
            c = calibration_table(p, fraction, bins=config.calibration_bins, ignore=ignore)
            acc = cal_acc.setdefault(name, {k: np.zeros_like(v) for k, v in c.items()})
            for k_, v in c.items():
                acc[k_] = acc[k_] + v
            fg_ignore = ~((fraction > 0) | (p >= 0.5))
            if ignore is not None:
                fg_ignore |= ignore
            c = calibration_table(p, fraction, bins=config.calibration_bins, ignore=fg_ignore)
            acc = cal_fg_acc.setdefault(name, {k: np.zeros_like(v) for k, v in c.items()})
            for k_, v in c.items():
                acc[k_] = acc[k_] + v
            qd = qubiq_dice(p, fraction, ignore=ignore)
            qubiq_rows.append({"image": image_id, "model": name,
                               **{f"dice_{t:.1f}": float(d) for t, d in zip(QUBIQ_THRESHOLDS, qd)},
                               "mean_dice": _nanmean(qd)})
        if image_id == example_id:
            y0, y1, x0, x1 = _example_window(masks.any(axis=0) | reference)
            example = {
                "image_id": image_id,
                "window": (y0, y1, x0, x1),
                "thumbnail": image[:: max(1, max(shape) // 512), :: max(1, max(shape) // 512)],
                "thumbnail_step": max(1, max(shape) // 512),
                "image": image[y0:y1, x0:x1],
                "masks": {r: bin_masks[r][y0:y1, x0:x1].copy() for r in raters if r in bin_masks},
                "uncertainty": {m: model_unc[m][y0:y1, x0:x1].copy() for m in model_names if model_unc[m] is not None},
                "probability": {m: model_prob[m][y0:y1, x0:x1].copy() for m in model_names if soft_models.get(m)},
            }
        # provenance: every input file
        files = [("image", ds.images[image_id])] + [(f"expert:{e}", ds.experts[e][image_id]) for e in present]
        if image_id in ds.ignore:
            files.append(("ignore", ds.ignore[image_id]))
        if cons_paths:
            files.append(("consensus", cons_paths[image_id]))
        if image_id in region_paths:
            files.append(("region", region_paths[image_id]))
        for name, src in models.items():
            files.append((f"model:{name}", src.paths[image_id]))
            if image_id in src.uncertainty:
                files.append((f"uncertainty:{name}", src.uncertainty[image_id]))
        for role, path in files:
            inputs.append({"image": image_id, "role": role, "path": str(Path(path).resolve()),
                           "bytes": Path(path).stat().st_size, "sha256": sha256_file(path)})

    if not complete:  # reliability of counts (ICC) over the images every expert annotated
        full = [k for k in range(len(ids)) if all(math.isfinite(counts[e][k]) for e in experts)]
        counts = {r: [v[k] for k in full] for r, v in counts.items()}
    tables = _aggregate(
        config, experts, model_names, raters, kinds, strategies, obj_rows, pair_rows, count_rows, counts,
        qubiq_rows, frac_acc, cal_acc, cal_fg_acc, soft_models, models, groups,
    )
    record = _config_record(config)
    record["command"] = "evaluate"
    try:
        import matplotlib

        record["matplotlib"] = matplotlib.__version__
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        pass
    record["reference"] = "consensus folder " + str(config.consensus) if cons_paths else "STAPLE of the experts, posterior > 0.5"
    if pooled_fit is not None:
        record["reference"] = ("STAPLE pooled over the images each expert annotated (experts annotated different "
                               "images), posterior > 0.5")
    record["annotated_by"] = {e: len(ds.experts[e]) for e in experts}
    record["models"] = {n: {"folder": str(s.root.resolve()), "kind": s.kind, "threshold": s.threshold,
                            "uncertainty": s.measure} for n, s in models.items()}
    record["staple"] = staple_meta
    summary = _summary(config, out, ids, experts, model_names, strategies, tables, record, groups, soft_models)
    ev = Evaluation(tables=tables, summary=summary, provenance=record, experts=experts, models=model_names,
                    strategies=strategies, example=example, note=config.note)
    over = bool(config.overwrite)
    fio.write_json(out / "config.json", record, overwrite=over)
    fio.write_csv(out / "inputs.csv", inputs, columns=["image", "role", "path", "bytes", "sha256"], overwrite=over)
    written = ["config.json", "inputs.csv"]
    for name, rows in tables.items():
        if name in ("counts",) or rows:
            fio.write_csv(out / f"{name}.csv", rows, columns=TABLE_COLUMNS[name], overwrite=over)
            written.append(f"{name}.csv")
    if config.report:
        from .report import write_report

        write_report(ev, out / "report.html", overwrite=over)
        written.append("report.html")
    summary["files"] = written
    fio.write_json(out / "summary.json", summary, overwrite=over)
    logger.info("evaluation of %d images written to %s", len(ids), out)
    return ev


def _aggregate(
    config: Any, experts, model_names, raters, kinds, strategies, obj_rows, pair_rows, count_rows, counts,
    qubiq_rows, frac_acc, cal_acc, cal_fg_acc, soft_models, models, groups,
) -> dict[str, list[dict[str, Any]]]:
    R = len(experts)
    # objectivity summary
    summ = []
    mean_f1 = {}
    for name in [*experts, *model_names]:
        rs = [r for r in obj_rows if r["rater"] == name]
        row: dict[str, Any] = {"rater": name, "kind": kinds[name], "n_images": len(rs)}
        for k in ("dice", "roi_f1", "average_precision", "sensitivity", "specificity",
                  "staple_sensitivity", "staple_specificity"):
            row[k] = _nanmean([r.get(k, math.nan) for r in rs])
        mean_f1[name] = row["roi_f1"]
        if kinds[name] == "model":
            cls = [r["class_roi_f1"] for r in rs]
            row["n_above"], row["n_within"], row["n_below"] = (cls.count(c) for c in ("above", "within", "below"))
            # the paper's selection rule: ROI-F1 >= the lowest expert's on every image
            row["passes_selection"] = all(
                not math.isfinite(r["roi_f1"]) or not math.isfinite(r["expert_min_roi_f1"])
                or r["roi_f1"] >= r["expert_min_roi_f1"] for r in rs
            )
        summ.append(row)
    for row in summ:
        if row["kind"] == "model":
            row["experts_below_mean_roi_f1"] = sum(
                1 for e in experts if math.isfinite(mean_f1[e]) and mean_f1[e] < row["roi_f1"]
            )
    # agreement (mean over images)
    agree = []
    for a, b in combinations(raters, 2):
        ps = [p for p in pair_rows if p["rater_a"] == a and p["rater_b"] == b]
        agree.append({"rater_a": a, "rater_b": b, "n_images": len(ps), "dice": _nanmean([p["dice"] for p in ps]),
                      "roi_f1": _nanmean([p["roi_f1"] for p in ps])})
    rel_strategies = {"experts": list(experts), **strategies} if R >= 2 else dict(strategies)
    reliability = agreement_summary(pair_rows, counts, rel_strategies)
    # validity
    tests: list[dict[str, Any]] = []
    pairwise: list[dict[str, Any]] = []
    outliers: list[dict[str, Any]] = []
    spread: list[dict[str, Any]] = []
    rows_out = count_rows
    if groups:
        vs = validity_statistics(count_rows, alpha=config.alpha, control=config.control,
                                 comparisons=config.comparisons)
        tests, pairwise, outliers, rows_out = vs["tests"], vs["pairwise"], vs["outliers"], vs["rows"]
        spread = effect_spread(tests, pairwise, rel_strategies)
    # uncertainty vs disagreement
    frac_rows, cal_rows, unc_summary = [], [], []
    for name in model_names:
        if not soft_models.get(name):
            continue
        t = frac_acc[name]
        n = t["n_pixels"].astype(np.float64)
        has_u = bool(models[name].uncertainty)
        for k in range(R + 1):
            frac_rows.append({
                "model": name, "experts_marking": k, "fraction": k / R, "minority": min(k, R - k),
                "n_pixels": int(n[k]),
                "mean_probability": t["sum_probability"][k] / n[k] if n[k] else math.nan,
                "mean_uncertainty": t["sum_uncertainty"][k] / n[k] if n[k] and has_u else math.nan,
            })
        c = cal_acc[name]
        b = config.calibration_bins
        for i in range(b):
            cn = int(c["n_pixels"][i])
            cal_rows.append({
                "model": name, "bin_low": i / b, "bin_high": (i + 1) / b, "n_pixels": cn,
                "mean_probability": c["sum_probability"][i] / cn if cn else math.nan,
                "mean_fraction": c["sum_target"][i] / cn if cn else math.nan,
            })
        u = t["sum_uncertainty"]
        dis = slice(1, R)
        u_bg = u[0] / n[0] if n[0] and has_u else math.nan
        u_fg = u[R] / n[R] if n[R] and has_u else math.nan
        u_dis = u[dis].sum() / n[dis].sum() if n[dis].sum() and has_u else math.nan
        # mean uncertainty by minority size d = min(k, R - k): 0 = unanimous, larger = more disagreement
        by_d = []
        for d in range(R // 2 + 1):
            ks = [k for k in range(R + 1) if min(k, R - k) == d]
            nn = n[ks].sum()
            by_d.append(u[ks].sum() / nn if nn and has_u else math.nan)
        rises = bool(has_u and all(math.isfinite(x) for x in by_d) and len(by_d) >= 2
                     and all(b_ > a_ for a_, b_ in zip(by_d, by_d[1:])))
        unc_summary.append({
            **qa_agreement([r for r in obj_rows if r["rater"] == name]),
            "model": name, "measure": models[name].measure,
            "mean_uncertainty_unanimous_background": u_bg, "mean_uncertainty_disagreement": u_dis,
            "mean_uncertainty_unanimous_foreground": u_fg,
            "uncertainty_rises_with_disagreement": rises if has_u else None,
            "mean_uncertainty_by_minority": by_d,
            "ece": expected_calibration_error(c), "ece_foreground": expected_calibration_error(cal_fg_acc[name]),
            "qubiq_mean_dice": _nanmean([q["mean_dice"] for q in qubiq_rows if q["model"] == name]),
        })
    qubiq = [q for q in qubiq_rows if soft_models.get(q["model"])]
    return {
        "objectivity": obj_rows, "objectivity_summary": summ, "agreement": agree,
        "agreement_per_image": pair_rows, "reliability": reliability, "counts": rows_out,
        "validity_tests": tests, "validity_pairwise": pairwise, "outliers": outliers, "effect_spread": spread,
        "uncertainty_vs_fraction": frac_rows, "calibration": cal_rows, "qubiq": qubiq,
        "uncertainty_summary": unc_summary,
    }


def _summary(config, out, ids, experts, model_names, strategies, tables, record, groups, soft_models) -> dict[str, Any]:
    summ = {r["rater"]: r for r in tables["objectivity_summary"]}
    models_out = {}
    for m in model_names:
        r = summ[m]
        models_out[m] = {
            "roi_f1": r["roi_f1"], "dice": r["dice"], "average_precision": r["average_precision"],
            "n_above": r["n_above"], "n_within": r["n_within"], "n_below": r["n_below"],
            "passes_selection": r["passes_selection"], "experts_below_mean_roi_f1": r["experts_below_mean_roi_f1"],
            "probability": bool(soft_models.get(m)),
        }
    for u in tables["uncertainty_summary"]:
        models_out[u["model"]].update({k: v for k, v in u.items() if k != "model"})
    validity = {}
    for t in tables["validity_tests"]:
        validity.setdefault(t["rater"], {})[t["measure"]] = {"H": t["H"], "p": t["p"], "eta2_h": t["eta2_h"]}
    return {
        "ok": True,
        "command": "evaluate",
        "out": str(out.resolve()),
        "version": record["version"],
        "n_images": len(ids),
        "experts": experts,
        "models": models_out,
        "strategies": strategies,
        "reference": record["reference"],
        "annotated_by": record.get("annotated_by"),
        "min_size": int(config.min_size),
        "experts_scores": {e: {k: summ[e][k] for k in ("roi_f1", "dice", "average_precision",
                                                         "staple_sensitivity", "staple_specificity")}
                           for e in experts},
        "n_groups": len(set(groups.values())),
        "groups_note": config.note,
        "validity": validity,
        "reliability": tables["reliability"],
        "n_outliers": len(tables["outliers"]),
    }
