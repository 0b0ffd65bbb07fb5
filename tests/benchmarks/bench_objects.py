"""Object-level speed: ROI-F1, label -> ROIs, ROIs -> labels, ours vs naive baselines, in one process.

Baselines (what one writes without thinking about it):
- ROI-F1: a loop over object pairs whose bounding boxes overlap (IoU from boolean crops), dense Hungarian;
- label -> ROIs: skimage.measure.find_contours per object (not exact: sub-pixel contours, no holes);
- ROIs -> labels: skimage.draw.polygon per ROI (not exact against ImageJ).

Run: python tests/benchmarks/bench_objects.py [--data data/segebarth2020]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from fiji_consensus import metrics, rois

REPO = Path(__file__).resolve().parents[2]


def naive_roi_f1(ref: np.ndarray, cand: np.ndarray, min_size: int) -> float:
    def lab(m):
        lbl, n = ndimage.label(m, structure=np.ones((3, 3)))
        sizes = ndimage.sum(np.ones_like(lbl), lbl, range(1, n + 1))
        keep = [i + 1 for i, s in enumerate(sizes) if s >= min_size]
        boxes = ndimage.find_objects(lbl)
        return lbl, [(k, boxes[k - 1]) for k in keep]

    (rl, r), (cl, c) = lab(ref), lab(cand)
    if not r and not c:
        return float("nan")
    iou = np.zeros((len(r), len(c)))
    for i, (ka, sa) in enumerate(r):
        for j, (kb, sb) in enumerate(c):
            y0, y1 = min(sa[0].start, sb[0].start), max(sa[0].stop, sb[0].stop)
            x0, x1 = min(sa[1].start, sb[1].start), max(sa[1].stop, sb[1].stop)
            if sa[0].stop <= sb[0].start or sb[0].stop <= sa[0].start:
                continue
            if sa[1].stop <= sb[1].start or sb[1].stop <= sa[1].start:
                continue
            a = rl[y0:y1, x0:x1] == ka
            b = cl[y0:y1, x0:x1] == kb
            inter = np.count_nonzero(a & b)
            if inter:
                iou[i, j] = inter / np.count_nonzero(a | b)
    rows, cols = linear_sum_assignment(-iou)
    tp = int(np.sum(iou[rows, cols] > 0.5))
    return 2 * tp / (len(r) + len(c))


def timeit(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=REPO / "data" / "segebarth2020")
    args = ap.parse_args()
    lab = args.data / "lab-mue"
    image_id = sorted(p.stem for p in (lab / "images").glob("*.png"))[0]
    ref = iio.imread(lab / "labels" / "est_GT" / f"{image_id}_cFOS.png") > 0
    cand = iio.imread(lab / "labels" / "expert_3" / f"{image_id}_cFOS.png")
    cand = (cand[..., 0] if cand.ndim == 3 else cand) > 0
    print(f"lab-mue {image_id}: {ref.shape}, est_GT vs expert_3, MIN_PIXEL 30")

    t_ours, f_ours = timeit(lambda: metrics.roi_f1(ref, cand, min_size=30))
    t_naive, f_naive = timeit(lambda: naive_roi_f1(ref, cand, 30), repeat=1)
    assert abs(f_ours - f_naive) < 1e-12, (f_ours, f_naive)
    print(f"roi_f1          ours {t_ours * 1e3:8.1f} ms  naive loops {t_naive * 1e3:9.1f} ms  "
          f"ratio {t_naive / t_ours:7.1f}x  (F1 {f_ours:.4f} both)")

    labels = ndimage.label(ref, structure=np.ones((3, 3)))[0]
    n = labels.max()
    t_ours, roi_list = timeit(lambda: rois.labels_to_rois(labels))

    def naive_trace():
        from skimage import measure

        return [measure.find_contours(labels == k, 0.5) for k in range(1, n + 1)]

    t_naive, _ = timeit(naive_trace, repeat=1)
    print(f"labels_to_rois  ours {t_ours * 1e3:8.1f} ms  find_contours {t_naive * 1e3:7.1f} ms  "
          f"ratio {t_naive / t_ours:7.1f}x  ({n} objects; ours exact, baseline not)")

    t_ours, back = timeit(lambda: rois.rois_to_labels(roi_list, labels.shape))
    assert np.array_equal(back > 0, labels > 0)

    def naive_fill():
        from skimage import draw

        out = np.zeros(labels.shape, np.int32)
        for i, r in enumerate(roi_list):
            for xy in ([r.coordinates()] if r.multi_coordinates is None else []):
                rr, cc = draw.polygon(xy[:, 1], xy[:, 0], labels.shape)
                out[rr, cc] = i + 1
        return out

    t_naive, _ = timeit(naive_fill, repeat=1)
    print(f"rois_to_labels  ours {t_ours * 1e3:8.1f} ms  skimage.draw {t_naive * 1e3:8.1f} ms  "
          f"ratio {t_naive / t_ours:7.1f}x  ({len(roi_list)} ROIs; ours ImageJ-exact, baseline not)")


if __name__ == "__main__":
    main()
