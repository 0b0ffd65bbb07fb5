"""Validity and reliability: per-image measures inside a region, group differences per rater (Kruskal-Wallis,
pairwise Mann-Whitney with Bonferroni, Grubbs outliers), the spread of effect sizes across the raters of
a strategy and agreement within a strategy."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from .. import metrics
from ._common import _finite, _float, _nanmean, _nansd, _natural_key
from .stats import bonferroni, grubbs, kruskal_wallis, mann_whitney

__all__ = ["MEASURES", "region_measures", "validity_statistics", "effect_spread", "agreement_summary"]

#: Per-image measures of the validity analysis (objects inside the region).
MEASURES = ("count", "density", "mean_intensity")


# ------------------------------------------------------------------------------------------ validity


def region_measures(
    mask: Any,
    image: Any,
    *,
    region: Any = None,
    ignore: Any = None,
    min_size: int = 0,
) -> dict[str, float]:
    """Objects of a mask inside a region: count, density and mean intensity.

    Pixels outside ``region`` and inside ``ignore`` are set to background **before** labelling
    (8-connectivity, objects of area ``< min_size`` dropped), as the study treats ignore masks.

    Parameters
    ----------
    mask : array_like, shape (Y, X)
        Binary mask or probability (foreground ``> 0.5``).
    image : array_like, shape (Y, X)
        The intensity image.
    region : array_like of bool, shape (Y, X), optional
        Where to count (default: the whole image).
    ignore : array_like of bool, shape (Y, X), optional
        Pixels left out (also of the region's area).
    min_size : int
        Smallest object area kept.

    Returns
    -------
    dict
        ``count`` (objects), ``region_area`` (pixels), ``density`` (objects per 10⁶ pixels of region) and
        ``mean_intensity`` (mean over objects of each object's mean intensity; NaN without objects).

    Examples
    --------
    >>> m = np.zeros((4, 6), bool); m[0, 0] = m[2:4, 3:5] = True
    >>> img = np.arange(24, dtype=float).reshape(4, 6)
    >>> r = region_measures(m, img)
    >>> r["count"], r["mean_intensity"]     # (0 + mean(15, 16, 21, 22)) / 2
    (2, 9.25)
    """
    from scipy import ndimage

    from ..matching import label_objects

    img = np.asarray(image)
    shape = np.shape(mask)
    if img.shape != shape:
        raise ValueError(f"image and mask must have the same shape; got {img.shape} and {shape}")
    keep = np.ones(shape, dtype=bool)
    if region is not None:
        reg = np.asarray(region)
        if reg.shape != shape:
            raise ValueError(f"region must have the mask's shape {shape}; got {reg.shape}")
        keep &= reg.astype(bool)
    if ignore is not None:
        keep &= ~np.asarray(ignore, dtype=bool)
    labels = label_objects(mask, min_size=min_size, ignore=~keep)
    n = int(labels.max(initial=0))
    area = int(keep.sum())
    if n:
        means = ndimage.mean(img.astype(np.float64), labels, index=np.arange(1, n + 1))
        mean_int = float(np.mean(means))
    else:
        mean_int = math.nan
    return {
        "count": n,
        "region_area": area,
        "density": n / area * 1e6 if area else math.nan,
        "mean_intensity": mean_int,
    }


def validity_statistics(
    rows: Sequence[Mapping[str, Any]],
    *,
    measures: Sequence[str] = MEASURES,
    alpha: float = 0.05,
    control: str | None = None,
    comparisons: str = "all",
) -> dict[str, list[dict[str, Any]]]:
    """Group differences per rater: Kruskal-Wallis, pairwise Mann-Whitney (Bonferroni), Grubbs outliers.

    Parameters
    ----------
    rows : sequence of dict
        One row per image and rater with keys ``image``, ``group``, ``rater`` and every ``measure``.
        Rows with an empty group are left out.
    measures : sequence of str
        Columns to analyse.
    alpha : float
        Family-wise significance level (Bonferroni over the pairwise comparisons of one rater and measure)
        and level of Grubbs' test.
    control : str, optional
        The control group: adds ``<measure>_normalised`` (value / control mean of that rater) to the rows.
    comparisons : {"all", "control"}
        All pairs of groups, or each group against ``control``.

    Returns
    -------
    dict
        ``tests`` (Kruskal-Wallis per rater and measure), ``pairwise`` (Mann-Whitney per pair of groups),
        ``outliers`` (Grubbs within each group: one row per flagged value) and ``rows`` (copies of the
        input rows with ``<measure>_outlier`` flags and, with a control, normalised values).
    """
    if comparisons not in ("all", "control"):
        raise ValueError(f"comparisons must be 'all' or 'control'; got {comparisons!r}")
    if comparisons == "control" and control is None:
        raise ValueError("comparisons='control' needs a control group")
    out_rows = [dict(r) for r in rows]
    used = [r for r in out_rows if r.get("group") not in (None, "")]
    raters = list(dict.fromkeys(r["rater"] for r in used))
    groups = sorted({str(r["group"]) for r in used}, key=_natural_key)
    if control is not None and used and control not in groups:
        raise ValueError(f"control group {control!r} is not among the groups {groups}")
    tests: list[dict[str, Any]] = []
    pairwise: list[dict[str, Any]] = []
    outliers: list[dict[str, Any]] = []
    for rater in raters:
        rr = [r for r in used if r["rater"] == rater]
        for measure in measures:
            by_group = {g: [r for r in rr if str(r["group"]) == g] for g in groups}
            vals = {g: np.array([_float(r.get(measure)) for r in by_group[g]]) for g in groups}
            kw = kruskal_wallis([vals[g] for g in groups])
            tests.append({
                "rater": rater, "measure": measure, "test": "kruskal-wallis", "n": kw.n, "k": kw.k,
                "H": kw.h, "df": kw.df, "p": kw.p, "eta2_h": kw.eta2_h,
                "significant": bool(kw.p < alpha) if math.isfinite(kw.p) else False,
            })
            if control is not None:
                cmean = _nanmean(vals[control])
                for r in rr:
                    v = _float(r.get(measure))
                    r[f"{measure}_normalised"] = v / cmean if cmean and math.isfinite(cmean) else math.nan
            if comparisons == "control":
                pairs = [(control, g) for g in groups if g != control]
            else:
                pairs = list(combinations(groups, 2))
            m = max(len(pairs), 1)
            for ga, gb in pairs:
                mw = mann_whitney(vals[ga], vals[gb])
                p_adj = bonferroni(mw.p, m) if math.isfinite(mw.p) else math.nan
                sig = bool(math.isfinite(mw.p) and mw.p <= alpha / m)
                direction = ""
                if sig:
                    direction = ga if mw.median1 > mw.median2 else gb if mw.median2 > mw.median1 else ""
                pairwise.append({
                    "rater": rater, "measure": measure, "group_a": ga, "group_b": gb, "n_a": mw.n1,
                    "n_b": mw.n2, "median_a": mw.median1, "median_b": mw.median2, "U": mw.u, "Z": mw.z,
                    "p": mw.p, "m": m, "alpha_bonferroni": alpha / m, "p_bonferroni": p_adj,
                    "eta2": mw.eta2, "significant": sig, "direction": direction,
                })
            for g in groups:
                gres = grubbs(vals[g], alpha=alpha)
                for r, flag in zip(by_group[g], gres.outlier):
                    r[f"{measure}_outlier"] = bool(flag)
                for s in gres.steps:
                    if gres.outlier[s["index"]]:
                        r = by_group[g][s["index"]]
                        outliers.append({
                            "rater": rater, "measure": measure, "group": g, "image": r["image"],
                            "value": s["value"], "G": s["G"], "G_crit": s["G_crit"], "n": int(np.isfinite(vals[g]).sum()),
                        })
    return {"tests": tests, "pairwise": pairwise, "outliers": outliers, "rows": out_rows}


def effect_spread(
    tests: Sequence[Mapping[str, Any]],
    pairwise: Sequence[Mapping[str, Any]],
    strategies: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """Reliability as in the paper: the spread (SD, ``ddof = 1``) of each effect size across the raters of
    one strategy.

    Parameters
    ----------
    tests, pairwise
        The ``tests`` and ``pairwise`` tables of :func:`validity_statistics`.
    strategies
        Strategy name → rater names (e.g. ``{"experts": [...], "seeds": ["m0", "m1", "m2"]}``);
        strategies with fewer than 2 raters get NaN spreads.

    Returns
    -------
    list of dict
        One row per strategy, measure and comparison (``"kruskal-wallis"`` or ``"<a> vs <b>"``):
        ``effect`` (``eta2_h`` or ``eta2``), ``n_raters``, ``mean``, ``sd``, ``min``, ``max`` and
        ``n_significant`` (raters whose test was significant).
    """
    rows: list[dict[str, Any]] = []
    for strategy, members in strategies.items():
        members = list(members)
        kw: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for t in tests:
            if t["rater"] in members:
                kw.setdefault((t["measure"], "kruskal-wallis"), []).append(t)
        for p in pairwise:
            if p["rater"] in members:
                kw.setdefault((p["measure"], f"{p['group_a']} vs {p['group_b']}"), []).append(p)
        for (measure, comparison), items in kw.items():
            effect = "eta2_h" if comparison == "kruskal-wallis" else "eta2"
            vals = _finite([it[effect] for it in items])
            rows.append({
                "strategy": strategy, "measure": measure, "comparison": comparison, "effect": effect,
                "n_raters": len(items), "mean": float(vals.mean()) if vals.size else math.nan,
                "sd": _nansd(vals), "min": float(vals.min()) if vals.size else math.nan,
                "max": float(vals.max()) if vals.size else math.nan,
                "n_significant": int(sum(bool(it["significant"]) for it in items)),
            })
    return rows


# ------------------------------------------------------------------------------------------ reliability


def agreement_summary(
    pair_rows: Sequence[Mapping[str, Any]],
    counts: Mapping[str, Sequence[float]],
    strategies: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """Agreement within each strategy: pairwise ROI-F1/Dice, count CV per image, ICC(2,1) of counts.

    Parameters
    ----------
    pair_rows
        Per-image pairwise rows with ``rater_a``, ``rater_b``, ``roi_f1``, ``dice``.
    counts
        Rater → object count per image (same image order for every rater).
    strategies
        Strategy name → rater names.

    Returns
    -------
    list of dict
        One row per strategy: ``n_raters``, ``mean_pairwise_roi_f1``, ``mean_pairwise_dice`` (over pairs
        and images), ``mean_count_cv`` (mean over images of SD/mean of the raters' counts, ``ddof = 1``),
        ``icc_counts`` (ICC(2,1), images × raters; NaN with < 2 images or raters).
    """
    rows = []
    for strategy, members in strategies.items():
        members = [m for m in members if m in counts]
        ms = set(members)
        prs = [p for p in pair_rows if p["rater_a"] in ms and p["rater_b"] in ms]
        table = np.array([counts[m] for m in members], dtype=np.float64).T if members else np.zeros((0, 0))
        cvs = []
        for row in table:
            mu = row.mean() if row.size else math.nan
            cvs.append(row.std(ddof=1) / mu if row.size >= 2 and mu > 0 else math.nan)
        icc = math.nan
        if table.ndim == 2 and table.shape[0] >= 2 and table.shape[1] >= 2:
            icc = float(metrics.icc(table, form="ICC(2,1)"))
        rows.append({
            "strategy": strategy,
            "n_raters": len(members),
            "raters": " ".join(members),
            "mean_pairwise_roi_f1": _nanmean([p["roi_f1"] for p in prs]),
            "mean_pairwise_dice": _nanmean([p["dice"] for p in prs]),
            "mean_count_cv": _nanmean(cvs),
            "icc_counts": icc,
        })
    return rows
