"""How the object-level consensus differs from the published pixel-wise consensus est_GT.

For every image of lab-wue1, lab-inns1 and lab-mue of the shared Segebarth et al. (2020) data, and for
``min_experts`` = the default (strict majority) and 2, prints:

* objects per image in est_GT and in the object consensus (both with the lab's MIN_PIXEL: objects with
  area < MIN_PIXEL are dropped; est_GT labelled with 8-connectivity as in the paper);
* ROI-F1 of the object consensus against est_GT (Hungarian assignment on IoU, match if IoU > 0.5);
* merges: est_GT objects that hold two or more object-consensus objects (an object-consensus object
  counts for the est_GT object that covers more than half of its pixels);
* the same ROI-F1 for the binarised object consensus re-labelled as the paper would (touching objects
  merge), to separate "different objects" from "same pixels, split differently".

Usage: python tests/benchmarks/report_object_consensus.py [--data DIR] [--per-image]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fiji_consensus.consensus import object_consensus  # noqa: E402
from fiji_consensus.matching import label_objects, match_objects  # noqa: E402

MIN_PIXEL = {"lab-wue1": 30, "lab-inns1": 16, "lab-mue": 30}


def read_mask(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    a = iio.imread(path)
    return (a[..., 0] if a.ndim == 3 else a) > 0


def load_lab(lab_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    experts = sorted(p for p in (lab_dir / "labels").iterdir() if p.name.startswith("expert_"))
    out = []
    for f in sorted((lab_dir / "labels" / "est_GT").glob("*.png")):
        stack = np.stack([read_mask(e / f.name) for e in experts])
        out.append((f.stem, stack, read_mask(f)))
    return out


def drop_small(labels: np.ndarray, min_px: int) -> np.ndarray:
    areas = np.bincount(labels.ravel())
    small = areas < min_px
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def merges(gt_labels: np.ndarray, oc_labels: np.ndarray) -> int:
    """est_GT objects covering more than half of each of >= 2 object-consensus objects."""
    if oc_labels.max() == 0 or gt_labels.max() == 0:
        return 0
    fg = oc_labels > 0
    pair = np.stack([oc_labels[fg], gt_labels[fg]])
    pairs, inter = np.unique(pair, axis=1, return_counts=True)
    oc_area = np.bincount(oc_labels.ravel())
    inside = (pairs[1] > 0) & (inter * 2 > oc_area[pairs[0]])
    per_gt = np.bincount(pairs[1][inside])
    return int((per_gt >= 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "segebarth2020")
    ap.add_argument("--per-image", action="store_true", help="print one row per image too")
    args = ap.parse_args()

    header = (f"{'lab':10s} {'min_exp':>7s} {'imgs':>4s} {'gt obj/img':>10s} {'oc obj/img':>10s} "
              f"{'ROI-F1':>7s} {'F1 relab':>8s} {'merges/img':>10s} {'merges %gt':>10s} {'s/img':>6s}")
    rows = []
    for lab in MIN_PIXEL:
        data = load_lab(args.data / lab)
        r = data[0][1].shape[0]
        for min_exp in (None, 2):
            n_gt, n_oc, f1s, f1r, mg, secs = [], [], [], [], [], []
            for name, stack, gt in data:
                mp = MIN_PIXEL[lab]
                gt_lab = label_objects(gt, min_size=mp)
                t = time.perf_counter()
                res = object_consensus(stack, min_experts=min_exp)
                secs.append(time.perf_counter() - t)
                oc = drop_small(res.labels, mp)
                m = match_objects(gt_lab, oc)
                m2 = match_objects(gt_lab, label_objects(oc > 0, min_size=mp))
                n_gt.append(m.n_ref)
                n_oc.append(m.n_cand)
                f1s.append(m.f1)
                f1r.append(m2.f1)
                mg.append(merges(gt_lab, oc))
                if args.per_image:
                    print(f"  {lab} {name} min_experts={min_exp or r // 2 + 1}: gt {m.n_ref} oc {m.n_cand} "
                          f"F1 {m.f1:.3f} F1-relabelled {m2.f1:.3f} merges {mg[-1]}")
            rows.append(
                f"{lab:10s} {min_exp or r // 2 + 1:>7d} {len(data):>4d} {np.mean(n_gt):>10.1f} "
                f"{np.mean(n_oc):>10.1f} {np.nanmean(f1s):>7.3f} {np.nanmean(f1r):>8.3f} "
                f"{np.mean(mg):>10.2f} {100 * np.sum(mg) / np.sum(n_gt):>9.2f}% {np.mean(secs):>6.3f}"
            )
    print(header)
    print("\n".join(rows))
    print("min_exp: experts needed per object (default: strict majority of the lab's experts); obj/img with "
          "MIN_PIXEL applied; ROI-F1 vs est_GT (IoU > 0.5, Hungarian); 'F1 relab': object consensus "
          "binarised and re-labelled as in the paper; merges: est_GT objects holding >= 2 object-consensus "
          "objects.")


if __name__ == "__main__":
    main()
