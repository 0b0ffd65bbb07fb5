"""Benchmark: our binary STAPLE against SimpleITK's on all 36 lab-wue1 images (5 experts, 1024 x 1024).

Every image is read once (not timed). Then, in the same process and on the same masks:

* SimpleITK: ``SimpleITK.STAPLE(expert_images, 1.0)``, as Segebarth et al. made est_GT; timed is the call
  itself on ready ``sitk.Image`` objects (the numpy -> sitk conversion is timed separately and reported);
* ours: ``fiji_consensus.consensus.staple(stack)`` on the ``(5, Y, X)`` bool stack, including validation,
  pattern compression and expansion of the posterior to the full image.

Both results are checked against each other (max |probability difference|, identical ``> 0.5`` masks)
and against ``labels/est_GT``. Prints per-image times and the speed ratio.

Usage: python tests/benchmarks/bench_staple.py [--data DIR] [--repeat N] [--lab lab-wue1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fiji_consensus.consensus import staple  # noqa: E402


def read_mask(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    a = iio.imread(path)
    return (a[..., 0] if a.ndim == 3 else a) > 0


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "segebarth2020")
    ap.add_argument("--lab", default="lab-wue1")
    ap.add_argument("--repeat", type=int, default=1, help="time each call N times, keep the best")
    args = ap.parse_args()
    import SimpleITK as sitk

    lab = args.data / args.lab
    experts = sorted(p for p in (lab / "labels").iterdir() if p.name.startswith("expert_"))
    files = sorted((lab / "labels" / "est_GT").glob("*.png"))
    t0 = time.perf_counter()
    data = [(f.stem, np.stack([read_mask(e / f.name) for e in experts]), read_mask(f)) for f in files]
    print(f"read {len(data)} images of {args.lab} ({len(experts)} experts, {data[0][1].shape[1:]}) "
          f"in {time.perf_counter() - t0:.1f} s (not timed)")
    print(f"SimpleITK {sitk.Version.VersionString()}, threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}, "
          f"CPUs {os.cpu_count()}")
    print(f"{'image':14s} {'sitk ms':>8s} {'conv ms':>8s} {'ours ms':>8s} {'ratio':>6s} {'iters':>5s} "
          f"{'max|dP|':>9s} {'max|dSe/Sp|':>11s} {'same>0.5':>8s} {'=est_GT':>7s}")
    t_sitk, t_conv, t_ours, all_ok = [], [], [], True
    for name, stack, gt in data:
        tc, imgs = best_of(lambda: [sitk.GetImageFromArray(m.astype(np.uint8)) for m in stack], args.repeat)
        flt = sitk.STAPLEImageFilter()
        flt.SetForegroundValue(1.0)
        ts, _ = best_of(lambda: sitk.STAPLE(imgs, 1.0), args.repeat)  # as est_GT was made
        ref_img = flt.Execute(imgs)  # the filter object, for sensitivity/specificity (not timed)
        ref = sitk.GetArrayFromImage(ref_img)
        to, res = best_of(lambda: staple(stack), args.repeat)
        dp = float(np.abs(ref - res.probability).max())
        dse = max(float(np.abs(np.array(flt.GetSensitivity()) - res.sensitivity).max()),
                  float(np.abs(np.array(flt.GetSpecificity()) - res.specificity).max()))
        same = bool(np.array_equal(ref > 0.5, res.mask()))
        eq_gt = bool(np.array_equal(res.mask(), gt))
        all_ok &= same and eq_gt and dp < 1e-4 and dse < 1e-4
        t_sitk.append(ts)
        t_conv.append(tc)
        t_ours.append(to)
        print(f"{name:14s} {ts * 1e3:8.1f} {tc * 1e3:8.1f} {to * 1e3:8.1f} {ts / to:6.1f} {res.n_iter:5d} "
              f"{dp:9.2e} {dse:11.2e} {str(same):>8s} {str(eq_gt):>7s}")
    s, c, o = map(np.sum, (t_sitk, t_conv, t_ours))
    print(f"total: SimpleITK {s:.2f} s (+{c:.2f} s numpy->sitk conversion), ours {o:.3f} s; "
          f"speed-up {s / o:.1f}x (STAPLE call only), {(s + c) / o:.1f}x (incl. conversion); "
          f"median per image {np.median(t_sitk) * 1e3:.0f} ms vs {np.median(t_ours) * 1e3:.1f} ms")
    # 0/1 uint8 masks (as read from many files) are validated without a sort and converted to bool once
    stacks = [d[1] for d in data]
    t_bool = sum(best_of(lambda s=s: staple(s), args.repeat)[0] for s in stacks)
    u8 = [s.astype(np.uint8) for s in stacks]
    t_u8 = sum(best_of(lambda s=s: staple(s), args.repeat)[0] for s in u8)
    print(f"bool masks {t_bool / len(stacks) * 1e3:.1f} ms/image, 0/1 uint8 masks {t_u8 / len(stacks) * 1e3:.1f} "
          f"ms/image ({t_u8 / t_bool:.2f}x the bool time)")
    from fiji_consensus.consensus import staple_pooled

    tp, _ = best_of(lambda: staple_pooled(stacks, [range(s.shape[0]) for s in stacks]), args.repeat)
    print(f"STAPLE pooled over all {len(stacks)} images (missing-rater estimate, every expert present): {tp:.2f} s")
    print("agreement:", "all images agree (probability, sensitivity/specificity < 1e-4; masks; est_GT)"
          if all_ok else "DISAGREEMENT, see rows above")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
