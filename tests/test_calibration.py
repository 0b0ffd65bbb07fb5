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


def test_the_object_threshold_drops_the_nuclei_only_some_experts_marked(masks):
    """Real consensus nuclei, sure inside (0.9) and less sure at their 2-px rim (0.6), and the nuclei that only
    some experts marked, as unsure as those rims (0.6): one threshold either keeps the doubtful nuclei or
    shrinks the consensus ones below IoU 0.5; the pair (threshold, object threshold) gets both right."""
    from scipy import ndimage

    from fiji_consensus.calibration import choose_thresholds, hysteresis_scores
    from fiji_consensus.instances import foreground

    probs, refs = [], []
    for gt, extra in masks:
        lab, n = ndimage.label(gt | extra, structure=np.ones((3, 3), bool))
        doubtful = np.isin(lab, np.setdiff1d(np.unique(lab[extra]), np.unique(lab[gt])))
        assert ndimage.label(doubtful)[1] >= 2  # nuclei no consensus pixel touches
        core = ndimage.binary_erosion(gt, iterations=2)
        probs.append(np.where(core, 0.9, np.where(gt | doubtful, 0.6, 0.0)))
        refs.append(gt)
    t, s, rows = choose_thresholds(probs, refs, min_size=30)
    assert (t, s) == (0.5, 0.6)  # ties: the threshold nearest 0.5, then the lowest object threshold
    best_one, table = choose_threshold(probs, refs, min_size=30)
    one = max(r["roi_f1"] for r in table)
    by_ts = {(r["threshold"], r["object_threshold"]): r for r in rows}
    assert by_ts[(t, s)]["roi_f1"] == pytest.approx(1.0) and one < 0.95
    for r in table:  # s = t is the one threshold
        assert by_ts[(r["threshold"], r["threshold"])]["roi_f1"] == pytest.approx(r["roi_f1"])
    direct = np.mean([roi_f1(r, foreground(p, 0.2, 0.7), min_size=30) for p, r in zip(probs, refs)])
    assert by_ts[(0.2, 0.7)]["roi_f1"] == pytest.approx(direct)
    assert len(rows) == len(DEFAULT_GRID) * (len(DEFAULT_GRID) + 1) // 2
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        hysteresis_scores(probs, refs, grid=(0.0, 0.5))


def test_a_model_sure_of_every_object_keeps_the_one_threshold(masks):
    """When every object is equally sure the object threshold buys nothing, and none is chosen."""
    from fiji_consensus.calibration import choose_thresholds

    probs = [0.3 * gt + 0.12 * extra for gt, extra in masks]
    t, s, _ = choose_thresholds(probs, [gt for gt, _ in masks], min_size=30)
    assert (t, s) == (choose_threshold(probs, [gt for gt, _ in masks], min_size=30)[0], None)
