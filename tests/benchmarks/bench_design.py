"""How few annotations reach the full recipe's consensus? Designs with k of 5 experts per image on lab-wue1.

For every k in 2..5, ``--designs`` balanced designs are drawn with :func:`fiji_consensus.plan.make_plan`
(each image gets k of the 5 experts, the experts' load differs by at most one image, every pair of experts
shares images), the other experts' annotations are removed, and the consensus of what is left is compared
with the full 5-expert est_GT of Segebarth et al. (labels/est_GT, = STAPLE of all five per image): pixel
Dice and ROI-F1 (IoU > 0.5, MIN_PIXEL 30 as in the paper for lab-wue1), mean over the 36 images, then mean
and range over the designs. Consensus methods:

* ``pooled``: STAPLE with each expert's sensitivity/specificity pooled over the images that expert
  annotated (what ``consensus`` does with missing raters);
* ``per-image``: STAPLE of each image's own k experts alone (SimpleITK's filter on the subset);
* ``majority``: strict majority of each image's k experts (ties background).

``k = 1`` (one expert per image, rotating) is the single-annotation baseline. Expert time is counted as
annotations made (an annotation = one expert x one image; the full recipe makes 5 x 36 = 180).

    python tests/benchmarks/bench_design.py [--designs 5] [--json out.json]

Part (b) of issue 20 (ensembles trained on each design, out-of-fold and cross-lab) is not run here: it
needs 4 x 5 ensemble trainings (hours of CPU) -- see the README section.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from _design_data import EXPERTS, LAB, lab_masks, read_gray  # noqa: E402

from fiji_consensus import consensus, metrics  # noqa: E402
from fiji_consensus.plan import make_plan, pair_overlap  # noqa: E402

MIN_SIZE = 30  # Segebarth's MIN_PIXEL for lab-wue1


def designs(ids: list[str], k: int, n: int) -> list[dict[str, list[str]]]:
    """``n`` balanced designs with ``k`` experts per image (random image order and expert order per seed)."""
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        experts = list(rng.permutation(EXPERTS))
        if k == 1:
            order = list(rng.permutation(ids))
            out.append({i: [experts[j % 5]] for j, i in enumerate(order)})
            continue
        prio = dict(zip(ids, rng.random(len(ids)).tolist()))
        plan = make_plan(ids, experts, priority=prio, target=k)
        assert not plan.pairs_without_overlap and all(len(r) == k for r in plan.raters.values())
        out.append(plan.raters)
    return out


def score(masks: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> tuple[float, float]:
    dice = [metrics.dice(ref[i], masks[i]) for i in ref]
    f1 = [metrics.roi_f1(ref[i], masks[i], min_size=MIN_SIZE) for i in ref]
    return float(np.nanmean(dice)), float(np.nanmean(f1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--designs", type=int, default=5, help="random balanced designs per k (default 5)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ids = sorted(p.stem for p in (LAB / "images").glob("*.png"))
    stacks = {i: lab_masks(i) for i in ids}
    est_gt = {i: read_gray(LAB / "labels" / "est_GT" / f"{i}_cFOS.png") > 0 for i in ids}
    print(f"lab-wue1: {len(ids)} images, {len(EXPERTS)} experts (read in {time.perf_counter() - t0:.1f} s)")
    # sanity: per-image STAPLE of all five is est_GT
    assert all((consensus.staple(stacks[i]).mask() == est_gt[i]).all() for i in ids[:3])

    rows = []
    for k in (1, 2, 3, 4, 5):
        n = 1 if k == 5 else args.designs
        res: dict[str, list[tuple[float, float]]] = {}
        overlaps = []
        for design in designs(ids, k, n):
            idx = {i: [EXPERTS.index(e) for e in design[i]] for i in ids}
            sub = {i: stacks[i][idx[i]] for i in ids}
            if k == 1:
                res.setdefault("single expert", []).append(score({i: sub[i][0] for i in ids}, est_gt))
                continue
            overlaps.append(min(pair_overlap(design, EXPERTS).values()))
            pooled = consensus.staple_pooled([sub[i] for i in ids], [idx[i] for i in ids])
            res.setdefault("pooled", []).append(score(dict(zip(ids, pooled.masks())), est_gt))
            res.setdefault("per-image", []).append(score({i: consensus.staple(sub[i]).mask() for i in ids}, est_gt))
            res.setdefault("majority", []).append(score({i: consensus.majority_vote(sub[i]) for i in ids}, est_gt))
        for method, vals in res.items():
            v = np.array(vals)
            rows.append({
                "experts_per_image": k, "method": method, "annotations": k * len(ids),
                "fraction_of_full": k / 5, "designs": len(vals),
                "min_pair_overlap": int(min(overlaps)) if overlaps else None,
                "dice": float(v[:, 0].mean()), "dice_min": float(v[:, 0].min()), "dice_max": float(v[:, 0].max()),
                "roi_f1": float(v[:, 1].mean()), "roi_f1_min": float(v[:, 1].min()),
                "roi_f1_max": float(v[:, 1].max()),
            })
            r = rows[-1]
            print(f"k={k} {method:13s} annotations {r['annotations']:3d} ({100 * k / 5:3.0f}%)  "
                  f"Dice {r['dice']:.3f} [{r['dice_min']:.3f}-{r['dice_max']:.3f}]  "
                  f"ROI-F1 {r['roi_f1']:.3f} [{r['roi_f1_min']:.3f}-{r['roi_f1_max']:.3f}]", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"lab": "lab-wue1", "reference": "est_GT (STAPLE of 5 experts per image)",
                                         "min_size": MIN_SIZE, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
