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

from .. import metrics
from .._util import sha256_file
from ..evaluate import (
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
from ..evaluate._common import _finite, _nanmean, _natural_key
from ..instances import foreground
from ..uncertainty import qa_score

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
    object_threshold: float | None = None  # predict's, when it kept only objects with a higher peak


def _open_model(name: str, folder: Path, ids: Sequence[str]) -> _ModelSource:
    from .. import io as fio

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
            obj = c.get("object_threshold") if cfg.is_file() else None
            first = folder / "per_image" / f"{ids[0]}.json" if ids else None
            if first is not None and first.is_file():
                rec = fio.read_json(first)
                threshold = float(rec.get("threshold") or threshold)
                obj = rec.get("object_threshold", obj)
            return _ModelSource(name, folder, "predict", paths, unc, measure, threshold,
                                None if obj is None else float(obj))
        return _ModelSource(name, folder, "masks", fio.pair_annotations(ids, folder, expert=name))
    except fio.AnnotationError as exc:
        raise fio.AnnotationError(f"model {name!r}: {exc}") from None


def _read_model(src: _ModelSource, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """Return ``(probability float32, is_soft, uncertainty or None)`` of one image."""
    from .. import io as fio

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


def _is_evaluate_folder(out: Path) -> bool:
    """An evaluation folder made before the owner file existed: its config.json says so."""
    from .. import io as fio

    try:
        return fio.read_json(out / "config.json").get("command") == "evaluate"
    except (OSError, ValueError, AttributeError):
        return False


def _prepare_out(out: Path, *, overwrite: bool) -> None:
    """Refuse a folder evaluate did not make (whatever it holds, also with ``overwrite``), and one it made
    unless ``overwrite``; then claim it (:func:`fiji_consensus._atomic.claim_folder`)."""
    from .._atomic import OWNER_FILE, claim_folder

    claim_folder(out, "evaluate", legacy=_is_evaluate_folder, create=False)
    if out.is_dir() and any(p.name != OWNER_FILE for p in out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {out} exists and is not empty; use --overwrite to replace its files or choose "
            "another folder"
        )
    claim_folder(out, "evaluate", legacy=_is_evaluate_folder)


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


@dataclass
class _Run:
    """One evaluation: what is read before the loop over images, and the tallies each image adds to."""

    config: Any
    ds: Any
    experts: list[str]
    ids: list[str]
    cons_paths: dict[str, Path]
    region_paths: dict[str, Path]
    groups: dict[str, str]
    models: dict[str, _ModelSource]
    strategies: dict[str, list[str]]
    example_id: str | None
    pooled_fit: Any = None  # the STAPLE fit pooled over the images each expert annotated (missing raters)
    obj_rows: list[dict[str, Any]] = field(default_factory=list)
    pair_rows: list[dict[str, Any]] = field(default_factory=list)
    count_rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, list[float]] = field(default_factory=dict)
    qubiq_rows: list[dict[str, Any]] = field(default_factory=list)
    frac_acc: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    cal_acc: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    cal_fg_acc: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    soft_models: dict[str, bool] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    example: dict[str, Any] = field(default_factory=dict)
    staple_meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = {r: [] for r in self.raters}

    @property
    def model_names(self) -> list[str]:
        return list(self.models)

    @property
    def raters(self) -> list[str]:
        return [*self.experts, "consensus", *self.model_names]

    @property
    def kinds(self) -> dict[str, str]:
        return {**{e: "expert" for e in self.experts}, "consensus": "consensus",
                **{m: "model" for m in self.model_names}}


@dataclass
class _Image:
    """One image as the scores see it: the binary masks of every rater who has one, and the maps."""

    image_id: str
    image: np.ndarray
    ignore: np.ndarray | None
    present: list[str]  # the experts who annotated it
    masks: np.ndarray  # (len(present), Y, X) bool
    staple: Any  # StapleResult or None (a given consensus and < 2 experts)
    reference: np.ndarray
    prob: dict[str, np.ndarray]
    unc: dict[str, np.ndarray | None]
    bin_masks: dict[str, np.ndarray]


def evaluate(config: Any, *, progress: bool = False) -> Evaluation:
    """:func:`run_evaluate`, returning the whole :class:`Evaluation` (tables, example crops) too."""
    from .. import io as fio
    from ._common import _progress

    out = Path(config.out)
    run = _open_run(config)
    _prepare_out(out, overwrite=config.overwrite)
    for image_id in _progress(run.ids, total=len(run.ids), enabled=progress, desc="evaluate"):
        im = _load_image(run, image_id)
        run.obj_rows += _objectivity_rows(run, im)
        _add_agreement(run, im)
        _add_measures(run, im)
        _add_uncertainty(run, im)
        if image_id == run.example_id:
            run.example = _example(run, im)
        _add_input_files(run, im)
    if not run.ds.complete:  # reliability of counts (ICC) over the images every expert annotated
        full = [k for k in range(len(run.ids)) if all(math.isfinite(run.counts[e][k]) for e in run.experts)]
        run.counts = {r: [v[k] for k in full] for r, v in run.counts.items()}
    tables = _aggregate(run)
    record = _provenance(run)
    summary = _summary(run, out, tables, record)
    ev = Evaluation(tables=tables, summary=summary, provenance=record, experts=run.experts, models=run.model_names,
                    strategies=run.strategies, example=run.example, note=config.note)
    over = bool(config.overwrite)
    fio.write_json(out / "config.json", record, overwrite=over)
    fio.write_csv(out / "inputs.csv", run.inputs, columns=["image", "role", "path", "bytes", "sha256"], overwrite=over)
    written = ["config.json", "inputs.csv"]
    for name, rows in tables.items():
        if name in ("counts",) or rows:
            fio.write_csv(out / f"{name}.csv", rows, columns=TABLE_COLUMNS[name], overwrite=over)
            written.append(f"{name}.csv")
    if config.report:
        from ..report import write_report

        write_report(ev, out / "report.html", overwrite=over)
        written.append("report.html")
    summary["files"] = written
    fio.write_json(out / "summary.json", summary, overwrite=over)
    logger.info("evaluation of %d images written to %s", len(run.ids), out)
    return ev


# ------------------------------------------------------------------------------------------ before the images


def _open_run(config: Any) -> _Run:
    """Check the inputs and pair every file with its image; nothing is written yet."""
    from .. import io as fio
    from ._common import _resolve_dataset

    ds = _resolve_dataset(config, missing_ok=True)  # experts may have annotated different images
    experts, ids = ds.expert_names, ds.ids
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
    pooled_fit = _pooled_staple(ds) if config.consensus is None and not ds.complete else None
    clash = sorted(set(config.models) & set(experts))
    if clash:
        raise ValueError(f"model names must differ from the expert names; got {clash}")
    cons_paths = fio.pair_annotations(ids, config.consensus, expert="consensus") if config.consensus else {}
    region_paths = fio.pair_annotations(ids, config.regions, expert="regions", required=False) if config.regions else {}
    groups = _groups(config, ids)
    models = {name: _open_model(name, Path(folder), ids) for name, folder in config.models.items()}
    strategies: dict[str, list[str]] = {k: list(v) for k, v in config.strategies.items()}
    if not strategies and len(models) >= 2:
        strategies = {"models": list(models)}
    example_id = config.example if config.example is not None else (ids[0] if ids else None)
    if example_id is not None and example_id not in ds.images:
        raise ValueError(f"example image {example_id!r} is not among the images: {', '.join(ids[:10])}")
    return _Run(config, ds, experts, ids, cons_paths, region_paths, groups, models, strategies, example_id,
                pooled_fit)


def _pooled_staple(ds: Any) -> Any:
    """Missing raters: STAPLE pooled over the images each expert annotated (as the consensus job does)."""
    from .. import consensus as cons

    pats = []
    for i in ds.ids:
        _, ann_i, ign_i = ds.load(i)
        pats.append(cons.vote_patterns(np.stack([ann_i[e] > 0 for e in ds.raters(i)]), ignore=ign_i))
    return cons.staple_fit(pats, [[ds.expert_names.index(e) for e in ds.raters(i)] for i in ds.ids],
                           n_experts=len(ds.expert_names))


def _groups(config: Any, ids: Sequence[str]) -> dict[str, str]:
    from ..io import read_groups

    if config.groups is None:
        return {}
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
    return groups


# ------------------------------------------------------------------------------------------ one image


def _load_image(run: _Run, image_id: str) -> _Image:
    """The image, its experts' masks, the reference (a given consensus or STAPLE > 0.5) and the models' maps."""
    from .. import consensus as cons
    from .. import io as fio

    image, ann, ignore = run.ds.load(image_id)
    shape = image.shape
    present = run.ds.raters(image_id)
    masks = np.stack([ann[e] > 0 for e in present])
    fit = run.pooled_fit
    if fit is not None:
        k_ = [run.experts.index(e) for e in present]
        g_ = float(fit.priors[run.ids.index(image_id)])
        st = cons.StapleResult(
            cons.staple_posterior(masks, fit.sensitivity[k_], fit.specificity[k_], g_, ignore=ignore),
            fit.sensitivity[k_], fit.specificity[k_], g_, fit.n_iter, fit.converged,
        )
    else:
        st = cons.staple(masks, ignore=ignore) if len(present) >= 2 else None
    if st is not None:
        run.staple_meta.append({"image": image_id, "n_iter": st.n_iter, "converged": st.converged, "prior": st.prior})
    reference = fio.read_mask(run.cons_paths[image_id], shape) if run.cons_paths else st.probability > 0.5
    if ignore is not None:
        reference = reference & ~ignore
    prob: dict[str, np.ndarray] = {}
    unc: dict[str, np.ndarray | None] = {}
    for name, src in run.models.items():
        prob[name], soft, unc[name] = _read_model(src, image_id, shape)
        run.soft_models[name] = run.soft_models.get(name, True) and soft
    bin_masks = {
        **{e: masks[k] for k, e in enumerate(present)},
        "consensus": reference,
        **{m: foreground(prob[m], run.models[m].threshold, run.models[m].object_threshold) for m in run.model_names},
    }
    return _Image(image_id, image, ignore, present, masks, st, reference, prob, unc, bin_masks)


def _objectivity_rows(run: _Run, im: _Image) -> list[dict[str, Any]]:
    """Every expert and model against the reference; models placed among the experts."""
    min_size, ignore, ref, kinds = int(run.config.min_size), im.ignore, im.reference, run.kinds
    rows = []
    for k_r, (name, m) in enumerate(im.bin_masks.items()):
        if name == "consensus":
            continue
        sens, spec = metrics.sensitivity_specificity(ref, m, ignore=ignore)
        obj = metrics.object_scores(ref, m, min_size=min_size, ignore=ignore)
        row = {
            "image": im.image_id, "rater": name, "kind": kinds[name],
            "dice": metrics.dice(ref, m, ignore=ignore), "roi_f1": obj["f1"],
            "average_precision": metrics.average_precision(ref, m, min_size=min_size, ignore=ignore)[0],
            "sensitivity": sens, "specificity": spec, "object_precision": obj["precision"],
            "object_recall": obj["recall"], "n_objects": obj["n_candidate"],
            "n_reference_objects": obj["n_reference"],
        }
        if kinds[name] == "expert" and im.staple is not None:
            row["staple_sensitivity"] = float(im.staple.sensitivity[k_r])
            row["staple_specificity"] = float(im.staple.specificity[k_r])
        if kinds[name] == "model":
            # the per-image QA score `predict` ranks images by (mean uncertainty over predicted foreground)
            unc = im.unc.get(name)
            row["qa_score"] = (qa_score(unc, im.prob[name], threshold=run.models[name].threshold)
                               if unc is not None else math.nan)
        rows.append(row)
    e_f1 = [r["roi_f1"] for r in rows if r["kind"] == "expert"]
    e_dice = [r["dice"] for r in rows if r["kind"] == "expert"]
    ef = _finite(e_f1)
    for r in rows:
        r["expert_min_roi_f1"] = float(ef.min()) if ef.size else math.nan
        r["expert_max_roi_f1"] = float(ef.max()) if ef.size else math.nan
        if r["kind"] == "model":
            r["class_roi_f1"] = classify_against_experts(r["roi_f1"], e_f1)
            r["class_dice"] = classify_against_experts(r["dice"], e_dice)
    return rows


def _add_agreement(run: _Run, im: _Image) -> None:
    """Dice and ROI-F1 of every pair of raters, only where both annotated this image."""
    raters = [r for r in run.raters if r in im.bin_masks]
    stack = np.stack([im.bin_masks[r] for r in raters])
    mat_f1 = metrics.pairwise_matrix(stack, "roi_f1", min_size=int(run.config.min_size), ignore=im.ignore)
    mat_dice = metrics.pairwise_matrix(stack, "dice", ignore=im.ignore)
    for i, j in combinations(range(len(raters)), 2):
        run.pair_rows.append({"image": im.image_id, "rater_a": raters[i], "rater_b": raters[j],
                              "dice": float(mat_dice[i, j]), "roi_f1": float(mat_f1[i, j])})


def _add_measures(run: _Run, im: _Image) -> None:
    """Per-image measures inside the region (validity) and object counts (reliability)."""
    from .. import io as fio

    min_size = int(run.config.min_size)
    region_path = run.region_paths.get(im.image_id)
    region = fio.read_mask(region_path, im.image.shape) if region_path is not None else None
    for name in run.raters:
        if name not in im.bin_masks:  # an expert who did not annotate this image
            run.counts[name].append(math.nan)
            continue
        meas = region_measures(im.bin_masks[name], im.image, region=region, ignore=im.ignore, min_size=min_size)
        run.count_rows.append({"image": im.image_id, "group": run.groups.get(im.image_id, ""), "rater": name,
                               "kind": run.kinds[name], **meas})
        n_obj = meas["count"] if region is None else metrics.count_objects(
            im.bin_masks[name], min_size=min_size, ignore=im.ignore)
        run.counts[name].append(float(n_obj))


def _accumulate(acc: dict[str, dict[str, np.ndarray]], name: str, table: dict[str, np.ndarray]) -> None:
    sums = acc.setdefault(name, {k: np.zeros_like(v) for k, v in table.items()})
    for k, v in table.items():
        sums[k] = sums[k] + v


def _add_uncertainty(run: _Run, im: _Image) -> None:
    """Uncertainty and probability against the fraction of experts (images every expert annotated)."""
    R = len(run.experts)
    if len(im.present) != R:  # expert fractions need every expert
        return
    votes = im.masks.sum(axis=0).astype(np.int64)
    fraction = votes / float(R)
    bins, ignore = run.config.calibration_bins, im.ignore
    for name in run.model_names:
        p = im.prob[name]
        _accumulate(run.frac_acc, name,
                    fraction_table(votes, R, probability=p, uncertainty=im.unc[name], ignore=ignore))
        _accumulate(run.cal_acc, name, calibration_table(p, fraction, bins=bins, ignore=ignore))
        fg_ignore = ~((fraction > 0) | (p >= 0.5))
        if ignore is not None:
            fg_ignore |= ignore
        _accumulate(run.cal_fg_acc, name, calibration_table(p, fraction, bins=bins, ignore=fg_ignore))
        qd = qubiq_dice(p, fraction, ignore=ignore)
        run.qubiq_rows.append({"image": im.image_id, "model": name,
                               **{f"dice_{t:.1f}": float(d) for t, d in zip(QUBIQ_THRESHOLDS, qd)},
                               "mean_dice": _nanmean(qd)})


def _example(run: _Run, im: _Image) -> dict[str, Any]:
    """The crops the report shows: the window with the most annotated pixels, every rater's outline."""
    shape, image = im.image.shape, im.image
    y0, y1, x0, x1 = _example_window(im.masks.any(axis=0) | im.reference)
    step = max(1, max(shape) // 512)
    return {
        "image_id": im.image_id,
        "window": (y0, y1, x0, x1),
        "thumbnail": image[::step, ::step],
        "thumbnail_step": step,
        "image": image[y0:y1, x0:x1],
        "masks": {r: im.bin_masks[r][y0:y1, x0:x1].copy() for r in run.raters if r in im.bin_masks},
        "uncertainty": {m: im.unc[m][y0:y1, x0:x1].copy() for m in run.model_names if im.unc[m] is not None},
        "probability": {m: im.prob[m][y0:y1, x0:x1].copy() for m in run.model_names if run.soft_models.get(m)},
    }


def _add_input_files(run: _Run, im: _Image) -> None:
    """Provenance: every input file of this image with its size and SHA-256."""
    i, ds = im.image_id, run.ds
    files = [("image", ds.images[i])] + [(f"expert:{e}", ds.experts[e][i]) for e in im.present]
    if i in ds.ignore:
        files.append(("ignore", ds.ignore[i]))
    if run.cons_paths:
        files.append(("consensus", run.cons_paths[i]))
    if i in run.region_paths:
        files.append(("region", run.region_paths[i]))
    for name, src in run.models.items():
        files.append((f"model:{name}", src.paths[i]))
        if i in src.uncertainty:
            files.append((f"uncertainty:{name}", src.uncertainty[i]))
    for role, path in files:
        run.inputs.append({"image": i, "role": role, "path": str(Path(path).resolve()),
                           "bytes": Path(path).stat().st_size, "sha256": sha256_file(path)})


# ------------------------------------------------------------------------------------------ after the images


def _provenance(run: _Run) -> dict[str, Any]:
    from ._common import _config_record

    config = run.config
    record = _config_record(config)
    record["command"] = "evaluate"
    try:
        import matplotlib

        record["matplotlib"] = matplotlib.__version__
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        pass
    record["reference"] = ("consensus folder " + str(config.consensus) if run.cons_paths
                           else "STAPLE of the experts, posterior > 0.5")
    if run.pooled_fit is not None:
        record["reference"] = ("STAPLE pooled over the images each expert annotated (experts annotated different "
                               "images), posterior > 0.5")
    record["annotated_by"] = {e: len(run.ds.experts[e]) for e in run.experts}
    record["models"] = {n: {"folder": str(s.root.resolve()), "kind": s.kind, "threshold": s.threshold,
                            "object_threshold": s.object_threshold,
                            "uncertainty": s.measure} for n, s in run.models.items()}
    record["staple"] = run.staple_meta
    return record


def _aggregate(run: _Run) -> dict[str, list[dict[str, Any]]]:
    config, experts = run.config, run.experts
    agree = []
    for a, b in combinations(run.raters, 2):  # agreement: mean over images
        ps = [p for p in run.pair_rows if p["rater_a"] == a and p["rater_b"] == b]
        agree.append({"rater_a": a, "rater_b": b, "n_images": len(ps), "dice": _nanmean([p["dice"] for p in ps]),
                      "roi_f1": _nanmean([p["roi_f1"] for p in ps])})
    rel_strategies = {"experts": list(experts), **run.strategies} if len(experts) >= 2 else dict(run.strategies)
    reliability = agreement_summary(run.pair_rows, run.counts, rel_strategies)
    tests: list[dict[str, Any]] = []
    pairwise: list[dict[str, Any]] = []
    outliers: list[dict[str, Any]] = []
    spread: list[dict[str, Any]] = []
    rows_out = run.count_rows
    if run.groups:  # validity
        vs = validity_statistics(run.count_rows, alpha=config.alpha, control=config.control,
                                 comparisons=config.comparisons)
        tests, pairwise, outliers, rows_out = vs["tests"], vs["pairwise"], vs["outliers"], vs["rows"]
        spread = effect_spread(tests, pairwise, rel_strategies)
    frac_rows, cal_rows, unc_summary = _uncertainty_tables(run)
    return {
        "objectivity": run.obj_rows, "objectivity_summary": _objectivity_summary(run), "agreement": agree,
        "agreement_per_image": run.pair_rows, "reliability": reliability, "counts": rows_out,
        "validity_tests": tests, "validity_pairwise": pairwise, "outliers": outliers, "effect_spread": spread,
        "uncertainty_vs_fraction": frac_rows, "calibration": cal_rows,
        "qubiq": [q for q in run.qubiq_rows if run.soft_models.get(q["model"])],
        "uncertainty_summary": unc_summary,
    }


def _objectivity_summary(run: _Run) -> list[dict[str, Any]]:
    summ = []
    mean_f1 = {}
    kinds = run.kinds
    for name in [*run.experts, *run.model_names]:
        rs = [r for r in run.obj_rows if r["rater"] == name]
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
                1 for e in run.experts if math.isfinite(mean_f1[e]) and mean_f1[e] < row["roi_f1"]
            )
    return summ


def _uncertainty_tables(run: _Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Uncertainty vs disagreement: per vote level, per calibration bin, and one summary row per model."""
    R = len(run.experts)
    frac_rows, cal_rows, unc_summary = [], [], []
    for name in run.model_names:
        if not run.soft_models.get(name):
            continue
        t = run.frac_acc[name]
        n = t["n_pixels"].astype(np.float64)
        has_u = bool(run.models[name].uncertainty)
        for k in range(R + 1):
            frac_rows.append({
                "model": name, "experts_marking": k, "fraction": k / R, "minority": min(k, R - k),
                "n_pixels": int(n[k]),
                "mean_probability": t["sum_probability"][k] / n[k] if n[k] else math.nan,
                "mean_uncertainty": t["sum_uncertainty"][k] / n[k] if n[k] and has_u else math.nan,
            })
        c = run.cal_acc[name]
        b = run.config.calibration_bins
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
            **qa_agreement([r for r in run.obj_rows if r["rater"] == name]),
            "model": name, "measure": run.models[name].measure,
            "mean_uncertainty_unanimous_background": u_bg, "mean_uncertainty_disagreement": u_dis,
            "mean_uncertainty_unanimous_foreground": u_fg,
            "uncertainty_rises_with_disagreement": rises if has_u else None,
            "mean_uncertainty_by_minority": by_d,
            "ece": expected_calibration_error(c), "ece_foreground": expected_calibration_error(run.cal_fg_acc[name]),
            "qubiq_mean_dice": _nanmean([q["mean_dice"] for q in run.qubiq_rows if q["model"] == name]),
        })
    return frac_rows, cal_rows, unc_summary


def _summary(run: _Run, out: Path, tables: dict[str, list[dict[str, Any]]], record: dict[str, Any]) -> dict[str, Any]:
    config, experts = run.config, run.experts
    summ = {r["rater"]: r for r in tables["objectivity_summary"]}
    models_out = {}
    for m in run.model_names:
        r = summ[m]
        models_out[m] = {
            "roi_f1": r["roi_f1"], "dice": r["dice"], "average_precision": r["average_precision"],
            "n_above": r["n_above"], "n_within": r["n_within"], "n_below": r["n_below"],
            "passes_selection": r["passes_selection"], "experts_below_mean_roi_f1": r["experts_below_mean_roi_f1"],
            "probability": bool(run.soft_models.get(m)),
        }
    for u in tables["uncertainty_summary"]:
        models_out[u["model"]].update({k: v for k, v in u.items() if k != "model"})
    validity: dict[str, dict[str, Any]] = {}
    for t in tables["validity_tests"]:
        validity.setdefault(t["rater"], {})[t["measure"]] = {"H": t["H"], "p": t["p"], "eta2_h": t["eta2_h"]}
    return {
        "ok": True,
        "command": "evaluate",
        "out": str(out.resolve()),
        "version": record["version"],
        "n_images": len(run.ids),
        "experts": experts,
        "models": models_out,
        "strategies": run.strategies,
        "reference": record["reference"],
        "annotated_by": record.get("annotated_by"),
        "min_size": int(config.min_size),
        "experts_scores": {e: {k: summ[e][k] for k in ("roi_f1", "dice", "average_precision",
                                                         "staple_sensitivity", "staple_specificity")}
                           for e in experts},
        "n_groups": len(set(run.groups.values())),
        "groups_note": config.note,
        "validity": validity,
        "reliability": tables["reliability"],
        "n_outliers": len(tables["outliers"]),
    }
