"""A new lab's threshold from a few annotated images (fiji_consensus.calibration), on real expert masks."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from fiji_consensus.calibration import DEFAULT_GRID, choose_threshold, threshold_scores
from fiji_consensus.io import read_mask
from fiji_consensus.metrics import roi_f1


@pytest.fixture(scope="module")
def masks(shared_data):
    lab = shared_data / "lab-wue1" / "labels"
    out = []
    for iid in ("0001", "0004"):
        gt = iio.imread(lab / "est_GT" / f"{iid}_cFOS.png")[:512, :512] > 0
        union = np.any([read_mask(lab / f"expert_{k}" / f"{iid}_cFOS.png")[:512, :512] for k in range(1, 6)], 0)
        out.append((gt, union & ~gt))
    return out


def test_the_threshold_that_matches_the_consensus_is_chosen(masks):
    # a model that is sure of nothing: consensus objects at 0.3, pixels only some expert marked at 0.12
    probs = [0.3 * gt + 0.12 * extra for gt, extra in masks]
    refs = [gt for gt, _ in masks]
    assert all(r.sum() > 100 for r in refs) and all(e.sum() > 100 for _, e in masks)
    best, table = choose_threshold(probs, refs, min_size=30)
    assert best == 0.25  # 0.15-0.25 tie at the consensus itself; nearest 0.5 wins
    by_t = {r["threshold"]: r for r in table}
    assert by_t[0.25]["roi_f1"] == pytest.approx(1.0) and by_t[0.5]["roi_f1"] == 0.0
    assert by_t[0.1]["roi_f1"] < 1.0  # the union of the experts is not the consensus
    assert [r["threshold"] for r in table] == list(DEFAULT_GRID)
    direct = np.mean([roi_f1(r, p > 0.1, min_size=30) for p, r in zip(probs, refs)])
    assert by_t[0.1]["roi_f1"] == pytest.approx(direct)


def test_bad_inputs_are_one_line_errors(masks):
    gt = masks[0][0]
    with pytest.raises(ValueError, match="one reference mask per probability map"):
        threshold_scores([gt * 0.5], [])
    with pytest.raises(ValueError, match=r"differ in shape"):
        threshold_scores([gt[:10] * 0.5], [gt])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        threshold_scores([gt * 0.5], [gt], grid=(0.5, 1.0))
