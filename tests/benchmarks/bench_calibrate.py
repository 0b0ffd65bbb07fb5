"""What the cheapest annotated adaptation buys on a lab the model never saw: the threshold from 2 images.

For each fold of a leave-one-lab-out run (``bench_crossval.py --out DIR``; its cached probability maps of the
left-out lab are read, nothing is trained or predicted here): for every pair of the left-out lab's images
(all pairs, or ``--pairs`` drawn at random), choose the threshold with the best mean ROI-F1 against those two
images' consensus (``fiji_consensus.calibration.choose_threshold``, what ``fiji-consensus calibrate`` does)
and score the lab's OTHER images with it. Prints per lab: the zero-shot score (the ensemble's own threshold)
on all images, the calibrated score on the other images (mean, lowest and highest over the pairs), the median
and lowest expert on the same other images, the paper's rule, and the threshold chosen. ``--predictions
predictions_adabn`` scores the AdaBN-adapted maps of ``bench_crossval.py --adabn`` the same way.

``--hysteresis`` also chooses an object-level threshold on the same images: foreground is then the
8-connected components of ``prob > t`` whose peak probability is above ``s >= t`` (``s = t``: the plain
threshold), so which nuclei count (``s``) and how large they are (``t``; ROI-F1 matches at IoU > 0.5) are
chosen apart; (t, s) with the best mean ROI-F1 on the annotated images (ties: plain first, then t nearest 0.5).
It then also asks whether one fixed pair, chosen without any image of the lab, would do as a model's default:
for each left-out lab, the pair (and, to compare, the one threshold) with the best zero-shot mean ROI-F1 over
the OTHER left-out labs' images, scored on this lab's images (leave-one-lab-out over the choice itself).

Run: python tests/benchmarks/bench_calibrate.py --crossval out/crossval [--pairs 60] [--hysteresis]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("FIJI_CONSENSUS_DATA", REPO / "data" / "segebarth2020"))


def hysteresis_table(probs, refs, ids, min_size: int, grid) -> dict:
    """ROI-F1 per image of every (t, s), s >= t on ``grid``: components of prob > t with peak prob > s."""
    from fiji_consensus.calibration import hysteresis_scores

    rows = hysteresis_scores(probs, refs, min_size=min_size, grid=grid)
    return {(r["threshold"], r["object_threshold"]): dict(zip(ids, r["per_image_roi_f1"])) for r in rows}


def lab_tables(crossval: Path, lab_name: str, predictions: str, grid, hysteresis: bool = False):
    """ROI-F1 of the model at every threshold and of every expert, per image, against the consensus."""
    from fiji_consensus.calibration import threshold_scores
    from fiji_consensus.jobs.crossval import load_lab
    from fiji_consensus.metrics import roi_f1

    lab = load_lab(DATA / lab_name)
    folder = crossval / f"without_{lab_name}" / predictions
    missing = [i for i in lab.ids if not (folder / f"{i}.npy").is_file()]
    if missing:
        raise SystemExit(f"{folder} lacks the maps of {missing}; run bench_crossval.py --out {crossval} first")
    probs = [np.load(folder / f"{i}.npy") for i in lab.ids]
    refs = [c > 0.5 for c in lab.consensus("staple")]
    model = {r["threshold"]: dict(zip(lab.ids, r["per_image_roi_f1"]))
             for r in threshold_scores(probs, refs, min_size=lab.min_size, grid=grid)}
    if hysteresis:
        model = {"plain": model, "hysteresis": hysteresis_table(probs, refs, lab.ids, lab.min_size, grid)}
    experts = {e: {i: float(roi_f1(refs[j], ms[j], min_size=lab.min_size))
                   for j, i in enumerate(lab.ids) if ms[j] is not None} for e, ms in lab.experts.items()}
    threshold = json.loads((crossval / f"without_{lab_name}" / "model" / "ensemble.json").read_text())["threshold"]
    return lab, model, experts, float(threshold)


def main(argv: list[str] | None = None) -> int:
    from fiji_consensus.calibration import DEFAULT_GRID

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crossval", type=Path, default=REPO / "out" / "crossval")
    ap.add_argument("--labs", nargs="+", default=None, help="left-out labs (default: every fold in --crossval)")
    ap.add_argument("--annotated", type=int, default=2, help="annotated images the threshold is chosen on")
    ap.add_argument("--pairs", type=int, default=60, help="at most this many image sets per lab (random, seed 0)")
    ap.add_argument("--predictions", default="predictions", help="maps folder of each fold (predictions_adabn: AdaBN)")
    ap.add_argument("--hysteresis", action="store_true",
                    help="also choose an object-level threshold s >= t (peak probability) on the same images")
    args = ap.parse_args(argv)
    grid = tuple(t for t in DEFAULT_GRID)
    labs = args.labs or sorted(p.name.removeprefix("without_") for p in args.crossval.glob("without_*"))
    if not labs:
        raise SystemExit(f"no fold folders without_<lab> in {args.crossval}; run bench_crossval.py first")
    print(f"threshold chosen on {args.annotated} annotated image(s) of the left-out lab, scored on its other images "
          f"(ROI-F1 vs consensus; maps: {args.crossval}/without_<lab>/{args.predictions})")
    print(f"{'lab':<10} {'zero-shot':>9} {'calibrated (min-max)':>22} {'median expert':>13} {'lowest':>7} "
          f"{'rule':>9} {'threshold':>10}")
    zero_tables: dict = {}
    for name in labs:
        lab, model, experts, thr0 = lab_tables(args.crossval, name, args.predictions, grid, args.hysteresis)
        if args.hysteresis:
            model, hyst = model["plain"], model["hysteresis"]
        ids = lab.ids
        sets = list(itertools.combinations(range(len(ids)), args.annotated))
        if len(sets) > args.pairs:
            rng = np.random.default_rng(0)
            sets = [sets[k] for k in sorted(rng.choice(len(sets), args.pairs, replace=False))]
        zero = float(np.mean([model[min(grid, key=lambda t: abs(t - thr0))][i] for i in ids]))
        if args.hysteresis:
            zero_tables[name] = {ts: float(np.mean([v[i] for i in ids])) for ts, v in hyst.items()}
        cal, med, low, rule, chosen, hcal, hchosen, hrule = [], [], [], [], [], [], [], []
        for s in sets:
            train = [ids[k] for k in s]
            rest = [i for i in ids if i not in train]
            best = max(grid, key=lambda t: (np.mean([model[t][i] for i in train]), -abs(t - 0.5)))
            chosen.append(best)
            cal.append(np.mean([model[best][i] for i in rest]))
            means = [np.mean([v[i] for i in rest if i in v]) for v in experts.values() if any(i in v for i in rest)]
            med.append(np.median(means))
            low.append(min(means))
            rule.append(np.mean([model[best][i] >= min(v[i] for v in experts.values() if i in v) for i in rest]))
            if args.hysteresis:
                hb = max(hyst, key=lambda ts: (np.mean([hyst[ts][i] for i in train]), ts[0] == ts[1],
                                               -abs(ts[0] - 0.5), -ts[1]))
                hchosen.append(hb)
                hcal.append(np.mean([hyst[hb][i] for i in rest]))
                hrule.append(np.mean([hyst[hb][i] >= min(v[i] for v in experts.values() if i in v) for i in rest]))
        print(f"{name:<10} {zero:>9.3f} {np.mean(cal):>8.3f} ({np.min(cal):.3f}-{np.max(cal):.3f}) "
              f"{np.mean(med):>13.3f} {np.mean(low):>7.3f} {100 * np.mean(rule):>8.0f}% "
              f"{np.median(chosen):>5.2f} ({min(chosen):.2f}-{max(chosen):.2f})  [{len(sets)} sets]")
        if args.hysteresis:
            print(f"{'':<10} {'hysteresis':>9} {np.mean(hcal):>8.3f} ({np.min(hcal):.3f}-{np.max(hcal):.3f}) "
                  f"rule {100 * np.mean(hrule):.0f}%; gain {np.mean(hcal) - np.mean(cal):+.3f}; (t, s) chosen: "
                  f"{sorted(set(hchosen), key=hchosen.count, reverse=True)[:4]} "
                  f"(plain in {sum(t == s for t, s in hchosen)}/{len(hchosen)} sets)")
    print("rule: share of the other images where the calibrated model's ROI-F1 >= that image's lowest expert")
    if len(zero_tables) >= 2:
        print("\na fixed default, chosen on the other left-out labs' zero-shot scores (no image of this lab):")
        for name, table in zero_tables.items():
            others = [zero_tables[o] for o in zero_tables if o != name]

            def pick(cands):
                return max(cands, key=lambda ts: (np.mean([o[ts] for o in others]), ts[0] == ts[1], -abs(ts[0] - 0.5)))

            one = pick([ts for ts in table if ts[0] == ts[1]])
            pair = pick(list(table))
            print(f"{name:<10} threshold 0.50: {table[(0.5, 0.5)]:.3f}; one threshold {one[0]:.2f}: {table[one]:.3f}; "
                  f"pair {pair}: {table[pair]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
