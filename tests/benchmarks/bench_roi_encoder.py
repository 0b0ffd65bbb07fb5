"""Is the fast ROI encoder of ``fiji/roi_bytes.py`` worth keeping? Reference (roifile's public encoder:
``copy.copy`` + ``tobytes`` per styled ROI) against ours (``roi_bytes._encode``), in one process, on the same
ROIs: styled encoding alone, and pushing them into an ImageJ overlay end to end (ImageJ's RoiDecoder included).

``python tests/benchmarks/bench_roi_encoder.py [--rois N] [--repeat R]``; prints the best of R interleaved
repeats of each and the ratio reference / ours, and checks that both give the same bytes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rois", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    import roifile

    from fiji_consensus import fiji
    from fiji_consensus.fiji import roi_bytes

    fiji.connect(headless=True)
    rng = np.random.default_rng(1)
    theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    rois = [roifile.ImagejRoi.frompoints(np.stack([c[0] + 6 * np.cos(theta), c[1] + 6 * np.sin(theta)], 1)
                                         .astype(np.float32), name=f"{i + 1:05d}")
            for i, c in enumerate(rng.uniform(10, 1010, (a.rois, 2)))]
    changes = {"name": "expert_1:", "stroke_color": bytes.fromhex("FFE69F00")}
    target = fiji.to_imageplus(np.zeros((1024, 1024), np.uint8))
    fast = roi_bytes._fast_encoder()
    assert fast is not None, "the fast encoder disagrees with the installed roifile"

    def encode():
        return [roi_bytes.styled_bytes(r, {**changes, "name": changes["name"] + r.name}) for r in rois]

    def push():
        fiji.push_rois(target, rois, name_prefix="expert_1:", stroke_color="#E69F00", replace=True)

    times: dict[tuple[str, str], list[float]] = {}
    out: dict[str, list[bytes]] = {}
    for _ in range(a.repeat + 1):  # (the first round warms up and is dropped)
        for path, switch in (("roifile", lambda: None), ("ours", lambda: fast)):
            roi_bytes._fast_encoder = switch  # (private: the reference path is roifile's encoder)
            try:
                for what, fn in (("encode", encode), ("push", push)):
                    t0 = time.perf_counter()
                    res = fn()
                    times.setdefault((path, what), []).append(time.perf_counter() - t0)
                    if what == "encode":
                        out[path] = res
            finally:
                roi_bytes._fast_encoder = lambda: fast
    assert out["roifile"] == out["ours"], "the fast encoder must give roifile's bytes"
    for what in ("encode", "push"):
        ref, ours = (min(times[(p, what)][1:]) for p in ("roifile", "ours"))
        print(f"{what} {a.rois} styled polygon ROIs: roifile {ref:.3f} s, ours {ours:.3f} s, "
              f"ratio {ref / ours:.2f}")


if __name__ == "__main__":
    main()
