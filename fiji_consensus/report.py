"""The evaluation report: one self-contained HTML file a biologist can read.

:func:`write_report` turns an :class:`~fiji_consensus.evaluate.Evaluation` into ``report.html``: every figure
is a PNG embedded as a ``data:`` URI (no network, no side files), tables are plain HTML, and the tool's
version and the full provenance (settings, package versions, reference, models) close the page. Figures are
drawn with matplotlib's object API on the Agg canvas, so no GUI backend and no global pyplot state is used.

Sections: summary; objectivity (agreement heat map of experts, consensus and models; per-expert STAPLE
sensitivity/specificity; every expert and model against the consensus per image; example outlines);
uncertainty vs expert disagreement (uncertainty per number of experts, reliability diagram, QUBIQ Dice);
validity (counts per group with effect sizes, outliers); reliability (agreement within strategies, spread
of effect sizes); provenance.

When every figure has loaded, a small script sets ``data-figures-loaded="<loaded>/<total>"`` on ``<body>``
(used by the tests, harmless otherwise).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import QUBIQ_THRESHOLDS, Evaluation
from .style import CONSENSUS_FIGURE_COLOR, EXPERT_COLORS, MODEL_COLORS

__all__ = ["write_report", "render_report", "MODEL_COLORS"]


def _require_mpl():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def _png(fig: Any) -> str:
    _, FigureCanvasAgg = _require_mpl()
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fig(w: float, h: float):
    Figure, _ = _require_mpl()
    return Figure(figsize=(w, h), layout="constrained")


def _colors(ev: Evaluation) -> dict[str, str]:
    c = {e: EXPERT_COLORS[i % len(EXPERT_COLORS)] for i, e in enumerate(ev.experts)}
    c["consensus"] = CONSENSUS_FIGURE_COLOR
    c.update({m: MODEL_COLORS[i % len(MODEL_COLORS)] for i, m in enumerate(ev.models)})
    return c


def _num(v: Any, digits: int = 3) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if not math.isfinite(f):
        return "–"
    if f != 0 and (abs(f) < 10 ** (-digits) or abs(f) >= 1e6):
        return f"{f:.{digits - 1}e}"
    return f"{f:.{digits}f}"


def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str], headers: Sequence[str] | None = None,
           *, max_rows: int = 200) -> str:
    if not rows:
        return "<p class='muted'>(none)</p>"
    headers = headers or cols
    out = ["<div class='scroll'><table><thead><tr>", *(f"<th>{html.escape(h)}</th>" for h in headers), "</tr></thead><tbody>"]
    for r in rows[:max_rows]:
        out.append("<tr>")
        for c in cols:
            v = r.get(c)
            out.append(f"<td>{html.escape(str(v)) if isinstance(v, str) else _num(v)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    if len(rows) > max_rows:
        out.append(f"<p class='muted'>{len(rows) - max_rows} more rows in the CSV file.</p>")
    return "".join(out)


def _figure(uri: str, caption: str, alt: str) -> str:
    return (f"<figure><img src='{uri}' alt='{html.escape(alt)}'>"
            f"<figcaption>{caption}</figcaption></figure>")


# --------------------------------------------------------------------------------------------- figures


def _fig_agreement(ev: Evaluation) -> str | None:
    rows = ev.tables["agreement"]
    raters = [*ev.experts, "consensus", *ev.models]
    if len(raters) < 2 or not rows:
        return None
    idx = {r: i for i, r in enumerate(raters)}
    fig = _fig(min(4.0 + 0.9 * len(raters), 16), 0.45 * len(raters) + 2.0)
    axes = fig.subplots(1, 2)
    for ax, metric, title in zip(axes, ("roi_f1", "dice"), ("ROI-F1 (objects)", "pixel Dice")):
        mat = np.eye(len(raters))
        for r in rows:
            i, j = idx[r["rater_a"]], idx[r["rater_b"]]
            mat[i, j] = mat[j, i] = r[metric]
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(raters)), raters, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(raters)), raters, fontsize=8)
        if len(raters) <= 16:
            for i in range(len(raters)):
                for j in range(len(raters)):
                    if math.isfinite(mat[i, j]):
                        ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if mat[i, j] < 0.6 else "black")
        ax.set_title(f"mean pairwise {title}", fontsize=10)
        for k in (len(ev.experts) - 0.5, len(ev.experts) + 0.5):
            ax.axhline(k, color="white", lw=1.5)
            ax.axvline(k, color="white", lw=1.5)
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return _png(fig)


def _fig_staple(ev: Evaluation) -> str | None:
    rows = [r for r in ev.tables["objectivity"] if r["kind"] == "expert" and r.get("staple_sensitivity") is not None]
    if not rows:
        return None
    colors = _colors(ev)
    fig = _fig(max(5.0, 1.1 * len(ev.experts) + 3), 3.2)
    axes = fig.subplots(1, 2)
    rng = np.random.default_rng(0)
    for ax, key, title in zip(axes, ("staple_sensitivity", "staple_specificity"), ("sensitivity", "specificity")):
        for i, e in enumerate(ev.experts):
            v = np.array([r[key] for r in rows if r["rater"] == e], dtype=float)
            v = v[np.isfinite(v)]
            if not v.size:
                continue
            ax.bar(i, v.mean(), color=colors[e], alpha=0.6, width=0.7)
            ax.scatter(i + rng.uniform(-0.2, 0.2, v.size), v, s=10, color="black", zorder=3)
        ax.set_xticks(range(len(ev.experts)), ev.experts, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"STAPLE {title} per expert", fontsize=10)
        if key == "staple_specificity":
            vals = np.array([r[key] for r in rows], dtype=float)
            lo = np.nanmin(vals) if np.isfinite(vals).any() else 0.99
            ax.set_ylim(max(0.0, lo - (1 - lo) * 0.5 - 1e-4), 1.0)
        else:
            ax.set_ylim(0, 1)
    return _png(fig)


def _fig_objectivity(ev: Evaluation) -> str | None:
    rows = ev.tables["objectivity"]
    if not rows:
        return None
    colors = _colors(ev)
    images = list(dict.fromkeys(r["image"] for r in rows))
    x = {im: i for i, im in enumerate(images)}
    fig = _fig(min(max(6.0, 0.28 * len(images) + 3), 16), 3.6)
    ax = fig.subplots()
    for im in images:
        ev_ = np.array([r["roi_f1"] for r in rows if r["image"] == im and r["kind"] == "expert"], dtype=float)
        ev_ = ev_[np.isfinite(ev_)]
        if ev_.size:
            ax.vlines(x[im], ev_.min(), ev_.max(), color="#BBBBBB", lw=6, zorder=1)
    for e in ev.experts:
        pts = [(x[r["image"]], r["roi_f1"]) for r in rows if r["rater"] == e]
        ax.scatter(*zip(*pts), s=14, color=colors[e], label=e, zorder=2, marker="o")
    for m in ev.models:
        pts = [(x[r["image"]], r["roi_f1"]) for r in rows if r["rater"] == m]
        ax.scatter(*zip(*pts), s=40, color=colors[m], label=m, zorder=3, marker="D", edgecolor="black", lw=0.5)
    ax.set_xticks(range(len(images)), images, rotation=90, fontsize=7)
    ax.set_ylabel("ROI-F1 vs consensus")
    ax.set_ylim(0, 1.02)
    ax.set_title("every expert (dots; grey bar = expert range) and model (diamonds) per image", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower left", framealpha=0.8)
    return _png(fig)


def _outline(ax: Any, mask: np.ndarray, color: str, lw: float = 1.0, ls: str = "-") -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=lw, linestyles=ls)


def _fig_example(ev: Evaluation) -> str | None:
    ex = ev.example
    if not ex:
        return None
    colors = _colors(ev)
    img = np.asarray(ex["image"], dtype=np.float64)
    lo, hi = np.percentile(img, (1, 99.8)) if img.size else (0, 1)
    unc_name = next(iter(ex.get("uncertainty", {})), None)
    n = 3 + (unc_name is not None)
    fig = _fig(3.3 * n, 3.6)
    axes = fig.subplots(1, n)
    thumb = np.asarray(ex["thumbnail"], dtype=np.float64)
    tlo, thi = np.percentile(thumb, (1, 99.8))
    axes[0].imshow(thumb, cmap="gray", vmin=tlo, vmax=thi if thi > tlo else tlo + 1)
    y0, y1, x0, x1 = ex["window"]
    s = ex["thumbnail_step"]
    from matplotlib.patches import Rectangle

    axes[0].add_patch(Rectangle((x0 / s, y0 / s), (x1 - x0) / s, (y1 - y0) / s, fill=False, ec="yellow", lw=1.5))
    axes[0].set_title(f"image {ex['image_id']}", fontsize=10)
    for ax in axes[1:3]:
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    for e in ev.experts:
        if e in ex["masks"]:  # experts may have annotated different images
            _outline(axes[1], ex["masks"][e], colors[e], 1.0)
    axes[1].set_title("experts", fontsize=10)
    _outline(axes[2], ex["masks"]["consensus"], "white", 2.0)
    for m in ev.models:
        _outline(axes[2], ex["masks"][m], colors[m], 1.2, "--")
    axes[2].set_title("consensus (white), models (dashed)", fontsize=10)
    if unc_name is not None:
        im = axes[3].imshow(ex["uncertainty"][unc_name], cmap="magma", vmin=0, vmax=1)
        _outline(axes[3], ex["masks"]["consensus"], "white", 0.8)
        axes[3].set_title(f"uncertainty of {unc_name}", fontsize=10)
        fig.colorbar(im, ax=axes[3], shrink=0.75)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)


def _fig_uncertainty(ev: Evaluation) -> str | None:
    frac = ev.tables["uncertainty_vs_fraction"]
    cal = ev.tables["calibration"]
    qub = ev.tables["qubiq"]
    if not frac:
        return None
    colors = _colors(ev)
    models = list(dict.fromkeys(r["model"] for r in frac))
    fig = _fig(16, 3.6)
    axes = fig.subplots(1, 4)
    for m in models:
        rs = [r for r in frac if r["model"] == m]
        k = [r["experts_marking"] for r in rs]
        u = [r["mean_uncertainty"] for r in rs]
        if any(math.isfinite(v) for v in u):
            axes[0].plot(k, u, "o-", color=colors[m], label=f"{m}: uncertainty")
        axes[0].plot(k, [r["mean_probability"] for r in rs], "s:", color=colors[m], alpha=0.6, label=f"{m}: probability")
    axes[0].set_xlabel(f"experts who marked the pixel (of {len(ev.experts)})")
    axes[0].set_ylabel("mean over pixels")
    axes[0].set_title("uncertainty vs expert disagreement", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].plot([0, 1], [0, 1], color="#999999", lw=1)
    for m in models:
        rs = [r for r in cal if r["model"] == m and r["n_pixels"] > 0]
        axes[1].plot([r["mean_probability"] for r in rs], [r["mean_fraction"] for r in rs], "o-", color=colors[m], label=m)
    axes[1].set_xlabel("model probability (bin mean)")
    axes[1].set_ylabel("fraction of experts (bin mean)")
    axes[1].set_title("reliability diagram", fontsize=10)
    axes[1].set_xlim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=7)
    for m in models:
        rs = [r for r in qub if r["model"] == m]
        if not rs:
            continue
        means = []
        for t in QUBIQ_THRESHOLDS:
            v = np.array([r[f"dice_{t:.1f}"] for r in rs], dtype=float)
            means.append(float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else math.nan)
        axes[2].plot(QUBIQ_THRESHOLDS, means, "o-", color=colors[m], label=m)
    axes[2].set_xlabel("threshold τ (probability and fraction > τ)")
    axes[2].set_ylabel("Dice (mean over images)")
    axes[2].set_ylim(0, 1)
    axes[2].set_title("QUBIQ thresholded Dice", fontsize=10)
    axes[2].legend(fontsize=7)
    obj = ev.tables["objectivity"]
    for m in models:
        rs = [r for r in obj if r["rater"] == m and math.isfinite(r.get("qa_score", math.nan))
              and math.isfinite(r.get("roi_f1", math.nan))]
        if rs:
            axes[3].plot([r["qa_score"] for r in rs], [r["roi_f1"] for r in rs], "o", color=colors[m], label=m)
    axes[3].set_xlabel("QA score (mean uncertainty over predicted foreground)")
    axes[3].set_ylabel("ROI-F1 against the consensus")
    axes[3].set_title("per-image QA score vs agreement", fontsize=10)
    axes[3].legend(fontsize=7)
    return _png(fig)


def _fig_validity(ev: Evaluation, measure: str = "count") -> str | None:
    rows = [r for r in ev.tables["counts"] if r.get("group") not in (None, "")]
    if not rows:
        return None
    tests = {(t["rater"], t["measure"]): t for t in ev.tables["validity_tests"]}
    panels = ["consensus", *ev.models][:6]
    groups = sorted({str(r["group"]) for r in rows}, key=_natural)
    colors = _colors(ev)
    fig = _fig(min(3.2 * len(panels) + 1, 16), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    rng = np.random.default_rng(0)
    key = f"{measure}_normalised" if any(f"{measure}_normalised" in r for r in rows) else measure
    for ax, rater in zip(axes, panels):
        data = [np.array([float(r.get(key, math.nan)) for r in rows if r["rater"] == rater and str(r["group"]) == g])
                for g in groups]
        data_f = [d[np.isfinite(d)] for d in data]
        ax.boxplot([d if d.size else [math.nan] for d in data_f], positions=range(len(groups)), widths=0.6,
                   showfliers=False, medianprops={"color": colors[rater] if rater != "consensus" else "black"})
        for i, g in enumerate(groups):
            rs = [r for r in rows if r["rater"] == rater and str(r["group"]) == g]
            vals = np.array([float(r.get(key, math.nan)) for r in rs])
            flags = np.array([bool(r.get(f"{measure}_outlier")) for r in rs], dtype=bool)
            xs = i + rng.uniform(-0.15, 0.15, vals.size)
            ax.scatter(xs[~flags], vals[~flags], s=10, color="black", zorder=3)
            if flags.any():
                ax.scatter(xs[flags], vals[flags], s=40, facecolor="none", edgecolor="red", zorder=4,
                           label="Grubbs outlier")
        t = tests.get((rater, measure))
        sub = f"\nKruskal-Wallis p={_num(t['p'])}, η²_H={_num(t['eta2_h'])}" if t else ""
        ax.set_title(f"{rater}{sub}", fontsize=9)
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_xlabel("group")
    axes[0].set_ylabel(f"{measure} per image" + (" (÷ control mean)" if key != measure else ""))
    return _png(fig)


def _fig_effects(ev: Evaluation, measure: str = "count") -> str | None:
    tests = [t for t in ev.tables["validity_tests"] if t["measure"] == measure]
    if not tests:
        return None
    colors = _colors(ev)
    fig = _fig(min(2 + 0.5 * len(tests), 14), 3.0)
    ax = fig.subplots()
    names = [t["rater"] for t in tests]
    vals = [t["eta2_h"] for t in tests]
    ax.bar(range(len(names)), [v if math.isfinite(v) else 0 for v in vals], color=[colors.get(n, "#777777") for n in names])
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("η²_H")
    ax.set_title(f"effect size of the group difference in {measure}, per rater (the spread across models = reliability)",
                 fontsize=9)
    return _png(fig)


def _validity_table(ev: Evaluation) -> str:
    """Kruskal-Wallis per rater (rows) and measure (column groups: H, p, η²_H)."""
    tests = ev.tables["validity_tests"]
    measures = list(dict.fromkeys(t["measure"] for t in tests))
    by = {(t["rater"], t["measure"]): t for t in tests}
    raters = list(dict.fromkeys(t["rater"] for t in tests))
    rows, cols, heads = [], ["rater", "n", "k"], ["rater", "N", "groups"]
    for m in measures:
        cols += [f"{m}:H", f"{m}:p", f"{m}:eta2_h"]
        heads += [f"{m}: H", f"{m}: p", f"{m}: η²_H"]
    for r in raters:
        row: dict[str, Any] = {"rater": r}
        for m in measures:
            t = by.get((r, m), {})
            row.update({"n": t.get("n"), "k": t.get("k"), f"{m}:H": t.get("H"), f"{m}:p": t.get("p"),
                        f"{m}:eta2_h": t.get("eta2_h")})
        rows.append(row)
    note = ""
    if tests and not any(math.isfinite(float(t["H"])) for t in tests):
        note = ("<p class='muted'>No test was possible: every group needs values and the images must outnumber "
                "the groups (N &gt; k).</p>")
    return _table(rows, cols, heads) + note


def _natural(s: str) -> tuple:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


# --------------------------------------------------------------------------------------------- page

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.muted{color:#777;font-size:.85em}.note{background:#fff7d6;border:1px solid #e6d58a;padding:.6em 1em;border-radius:4px}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em;max-height:30em}
.scroll{overflow-x:auto}.good{color:#1a7f37}.bad{color:#b42318}
"""

_SCRIPT = """
<script>
(function(){
  function mark(){
    var imgs=Array.prototype.slice.call(document.images);
    var ok=imgs.filter(function(i){return i.complete && i.naturalWidth>0;}).length;
    document.body.setAttribute('data-figures-loaded', ok+'/'+imgs.length);
  }
  if(document.readyState==='complete'){mark();}else{window.addEventListener('load', mark);}
})();
</script>
"""


def _nth_worst(n: Any) -> str:
    """``1`` -> "worst", ``3`` -> "3rd worst"."""
    if not isinstance(n, int) or n < 1:
        return "? worst"
    if n == 1:
        return "worst"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} worst"


def render_report(ev: Evaluation) -> str:
    """The report as an HTML string (figures embedded as PNG ``data:`` URIs)."""
    s = ev.summary
    prov = ev.provenance
    parts: list[str] = []
    title = "fiji-consensus evaluation: objectivity, reliability, validity"
    parts.append(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
                 f"<style>{_CSS}</style></head><body>")
    parts.append(f"<h1>{title}</h1>")
    parts.append(f"<p class='muted'>fiji-consensus {html.escape(str(prov.get('version')))} · "
                 f"{html.escape(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))} · {s['n_images']} images · "
                 f"{len(ev.experts)} experts · {len(ev.models)} model(s) · reference: "
                 f"{html.escape(str(s['reference']))} · MIN_PIXEL {s['min_size']}</p>")
    if ev.note:
        parts.append(f"<p class='note'>{html.escape(ev.note)}</p>")
    for section in (_summary_section, _objectivity_section, _uncertainty_section,
                    _validity_section, _reliability_section, _provenance_section):
        parts += section(ev)
    parts.append(_SCRIPT)
    parts.append("</body></html>")
    return "".join(parts)


#: The introductory paragraph of each section of the report (HTML).
_INTRO_OBJECTIVITY = (
    "Each expert and each model is compared with the consensus on every image: pixel Dice, ROI-F1 (objects "
    "matched by IoU &gt; 0.5, Segebarth et al. 2020) and average precision (IoU 0.5…0.95). A model is "
    "<i>above</i> the experts on an image when it agrees with the consensus better than the best expert, "
    "<i>below</i> when worse than the worst expert."
)

_INTRO_UNCERTAINTY = (
    "Where the experts disagree, a good model should be uncertain. Left: mean model uncertainty and "
    "probability by the number of experts who marked the pixel. Middle: calibration of the probability "
    "against the fraction of experts (ECE = expected calibration error; 'foreground' leaves out pixels that "
    "every expert and the model call background). Right: Dice of probability &gt; τ against fraction of "
    "experts &gt; τ (QUBIQ). Far right: each image's QA score (mean uncertainty over the predicted "
    "foreground, the order in which <code>predict</code> lists images to review) against the model's ROI-F1 "
    "on it; a good QA score falls as ROI-F1 rises (negative Spearman ρ)."
)

_INTRO_VALIDITY = (
    "Per image, objects inside the region (count, density per 10⁶ pixels, mean intensity); Kruskal-Wallis "
    "across groups with η²_H = (H − k + 1)/(N − k); pairwise Mann-Whitney U with η² = Z²/N, Bonferroni-"
    "corrected; the direction is the group with the larger median. Outliers (two-sided Grubbs test within "
    "each group) are flagged, never removed."
)

_INTRO_RELIABILITY = (
    "Agreement within the experts and within each training strategy (e.g. ensemble members or repeated "
    "trainings with other seeds): mean pairwise ROI-F1 and Dice, per-image coefficient of variation of object"
    " counts, ICC(2,1) of the counts. The paper's reliability is the spread (SD) of an effect size across the"
    " models of one strategy."
)


def _section(title: str, intro: str) -> list[str]:
    """A section's heading and its introductory paragraph (HTML given as is)."""
    return [f"<h2>{title}</h2>", f"<p>{intro}</p>"]


def _summary_section(ev: Evaluation) -> list[str]:
    """The summary: the experts' range, and one verdict per model."""
    s = ev.summary
    parts: list[str] = []
    parts.append("<h2>Summary</h2><ul>")
    es = {e: v for e, v in s.get("experts_scores", {}).items() if v.get("roi_f1") is not None
          and math.isfinite(float(v["roi_f1"]))}
    if es:
        lo = min(es, key=lambda e: es[e]["roi_f1"])
        hi = max(es, key=lambda e: es[e]["roi_f1"])
        rel = next((r for r in ev.tables["reliability"] if r["strategy"] == "experts"), None)
        line = (f"<li><b>Experts</b> against the consensus: mean ROI-F1 from {_num(es[lo]['roi_f1'])} "
                f"({html.escape(lo)}) to {_num(es[hi]['roi_f1'])} ({html.escape(hi)})")
        if rel is not None:
            line += (f"; between experts: mean pairwise ROI-F1 {_num(rel['mean_pairwise_roi_f1'])}, ICC(2,1) of "
                     f"object counts {_num(rel['icc_counts'])}")
        parts.append(line + ".</li>")
    for m, r in s["models"].items():
        verdict = (f"above the best expert on {r['n_above']}, within the experts' range on {r['n_within']}, below "
                   f"the worst expert on {r['n_below']} of {s['n_images']} images (ROI-F1)")
        sel = ("<span class='good'>passes</span>" if r["passes_selection"] else "<span class='bad'>fails</span>")
        line = (f"<li><b>{html.escape(m)}</b>: mean ROI-F1 {_num(r['roi_f1'])}, Dice {_num(r['dice'])}; {verdict}; "
                f"better than {r['experts_below_mean_roi_f1']} of {len(ev.experts)} experts on average; {sel} the "
                f"paper's selection rule (ROI-F1 ≥ the lowest expert's on every image)")
        if r.get("uncertainty_rises_with_disagreement") is not None:
            rises = r["uncertainty_rises_with_disagreement"]
            line += (f"; uncertainty {'rises' if rises else 'does <b>not</b> rise steadily'} with expert disagreement "
                     f"(mean {_num(r.get('mean_uncertainty_unanimous_background'))} where all experts say background, "
                     f"{_num(r.get('mean_uncertainty_disagreement'))} where they disagree, "
                     f"{_num(r.get('mean_uncertainty_unanimous_foreground'))} where all mark the pixel)")
        if r.get("qa_n_images", 0) >= 3 and math.isfinite(r.get("qa_spearman_roi_f1", math.nan)):
            rho = r["qa_spearman_roi_f1"]
            line += (f"; its per-image QA score {'points at' if rho < 0 else '<b>does not</b> point at'} the images "
                     f"it gets wrong (Spearman ρ with ROI-F1 {_num(rho, 2)} over {r['qa_n_images']} images; the "
                     f"image it ranks first for review, {html.escape(str(r['qa_review_first']))}, is its "
                     f"{_nth_worst(r['qa_review_first_roi_f1_rank'])})")
        parts.append(line + "</li>")
    if not s["models"]:
        parts.append("<li>No model predictions were given: experts and consensus only.</li>")
    parts.append("</ul>")
    return parts


def _objectivity_section(ev: Evaluation) -> list[str]:
    """Objectivity: experts and models against the consensus (table and figures)."""
    parts = _section("Objectivity: experts and models against the consensus", _INTRO_OBJECTIVITY)
    cols = ["rater", "kind", "n_images", "roi_f1", "dice", "average_precision", "sensitivity", "specificity",
            "staple_sensitivity", "staple_specificity"]
    if ev.models:
        cols += ["n_above", "n_within", "n_below", "passes_selection"]
    parts.append(_table(ev.tables["objectivity_summary"], cols))
    for fn, cap, alt in (
        (_fig_agreement, "Mean pairwise agreement over images of experts, consensus and models (white lines "
         "separate the experts, the consensus and the models).", "agreement heat map"),
        (_fig_staple, "Per-expert sensitivity and specificity estimated by STAPLE (bars: mean, dots: images).",
         "STAPLE sensitivity and specificity per expert"),
        (_fig_objectivity, "ROI-F1 against the consensus on every image.", "ROI-F1 per image"),
        (_fig_example, "Example: the experts' outlines, the consensus and the models on the part of the image "
         "with most annotations (yellow box).", "example outlines"),
    ):
        uri = fn(ev)
        if uri:
            parts.append(_figure(uri, cap, alt))
    return parts


def _uncertainty_section(ev: Evaluation) -> list[str]:
    """Uncertainty against expert disagreement (only with probability maps)."""
    parts: list[str] = []
    if ev.tables["uncertainty_summary"]:
        parts += _section("Uncertainty vs expert disagreement", _INTRO_UNCERTAINTY)
        uri = _fig_uncertainty(ev)
        if uri:
            parts.append(_figure(uri, "Uncertainty, calibration and thresholded Dice against the experts.",
                                 "uncertainty vs disagreement"))
        parts.append(_table(ev.tables["uncertainty_summary"],
                            ["model", "measure", "mean_uncertainty_unanimous_background",
                             "mean_uncertainty_disagreement", "mean_uncertainty_unanimous_foreground",
                             "uncertainty_rises_with_disagreement", "ece", "ece_foreground", "qubiq_mean_dice",
                             "qa_spearman_roi_f1"],
                            ["model", "measure", "U (all: background)", "U (experts disagree)",
                             "U (all: foreground)", "rises", "ECE", "ECE (foreground)", "QUBIQ Dice",
                             "ρ(QA score, ROI-F1)"]))
    return parts


def _validity_section(ev: Evaluation) -> list[str]:
    """Validity: objects per group (only with groups)."""
    parts: list[str] = []
    if ev.tables["validity_tests"]:
        parts += _section("Validity: objects per group", _INTRO_VALIDITY)
        for uri, cap, alt in ((_fig_validity(ev), "Object counts per image and group (red circles: Grubbs "
                               "outliers).", "counts per group"),
                              (_fig_effects(ev), "Effect size η²_H of the group difference for every rater.",
                               "effect sizes")):
            if uri:
                parts.append(_figure(uri, cap, alt))
        parts.append(_validity_table(ev))
        sig = [p for p in ev.tables["validity_pairwise"] if p["significant"]]
        parts.append(f"<p>{len(sig)} of {len(ev.tables['validity_pairwise'])} pairwise comparisons are significant "
                     "after Bonferroni correction" + (":" if sig else ".") + "</p>")
        if sig:
            parts.append(_table(sig, ["rater", "measure", "group_a", "group_b", "U", "Z", "p", "p_bonferroni",
                                      "eta2", "direction"]))
        parts.append("<h3>Outliers (flagged, kept in every statistic)</h3>")
        parts.append(_table(ev.tables["outliers"], ["rater", "measure", "group", "image", "value", "G", "G_crit", "n"]))
    return parts


def _reliability_section(ev: Evaluation) -> list[str]:
    """Reliability: agreement within the experts and within each strategy."""
    parts = _section("Reliability", _INTRO_RELIABILITY)
    parts.append(_table(ev.tables["reliability"], ["strategy", "n_raters", "mean_pairwise_roi_f1",
                                                   "mean_pairwise_dice", "mean_count_cv", "icc_counts"]))
    kw_spread = [r for r in ev.tables["effect_spread"] if r["comparison"] == "kruskal-wallis"]
    if kw_spread:
        parts.append(_table(kw_spread, ["strategy", "measure", "effect", "n_raters", "mean", "sd", "min", "max",
                                        "n_significant"]))
    return parts


def _provenance_section(ev: Evaluation) -> list[str]:
    """Provenance: versions and the settings."""
    prov = ev.provenance
    parts: list[str] = []
    parts.append("<h2>Provenance</h2>")
    parts.append(f"<p>Made by fiji-consensus {html.escape(str(prov.get('version')))} (Python "
                 f"{html.escape(str(prov.get('python')))}, numpy {html.escape(str(prov.get('numpy')))}, scipy "
                 f"{html.escape(str(prov.get('scipy')))}, matplotlib {html.escape(str(prov.get('matplotlib')))}). "
                 "Every input file with its SHA-256 is listed in <code>inputs.csv</code>; every number of this page "
                 "is in the CSV tables beside it. The settings:</p>")
    shown = {k: v for k, v in prov.items() if k != "staple"}
    parts.append(f"<pre>{html.escape(json.dumps(shown, indent=2, default=str))}</pre>")
    return parts


def write_report(ev: Evaluation, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the HTML report of an evaluation atomically (refusing to replace a file unless ``overwrite``).

    Parameters
    ----------
    ev : Evaluation
        From :func:`fiji_consensus.evaluate.evaluate`.
    path : str or Path
        The HTML file.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
    """
    from ._atomic import atomic_open, check_writable

    path = check_writable(path, overwrite=overwrite)  # fail before drawing the figures
    text = render_report(ev)
    with atomic_open(path, "w", overwrite=overwrite) as fh:
        fh.write(text)
    return path
