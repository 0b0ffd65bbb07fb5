"""Hand-checked tests of fiji_consensus.consensus: voting, STAPLE, multi-class STAPLE, object consensus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from fiji_consensus.consensus import (
    MultiClassStapleResult,
    ObjectConsensusResult,
    StapleResult,
    expert_fraction,
    majority_vote,
    object_consensus,
    staple,
    staple_multiclass,
)

SAMPLE = Path(__file__).resolve().parents[1] / "fiji_consensus" / "data" / "segebarth2020_wue1"


# ---- majority vote and soft labels --------------------------------------------------------------


def test_majority_vote_strict_majority_and_ties() -> None:
    # 4 experts; votes per pixel: 4, 3, 2 (tie), 1, 0
    m = np.array([[[1, 1, 1, 1, 0]], [[1, 1, 1, 0, 0]], [[1, 1, 0, 0, 0]], [[1, 0, 0, 0, 0]]], bool)
    np.testing.assert_array_equal(majority_vote(m), [[True, True, False, False, False]])
    np.testing.assert_array_equal(majority_vote(m, min_votes=2), [[True, True, True, False, False]])
    np.testing.assert_array_equal(majority_vote(m, min_votes=1), [[True, True, True, True, False]])
    np.testing.assert_array_equal(majority_vote(m, min_votes=4), [[True, False, False, False, False]])
    # odd number of experts: 2 of 3 is a majority
    np.testing.assert_array_equal(majority_vote(m[:3]), [[True, True, True, False, False]])


def test_majority_vote_accepts_0_255_lists_and_ignore() -> None:
    a = np.array([[255, 0], [255, 255]], np.uint8)
    b = np.array([[255, 255], [0, 255]], np.uint8)
    c = np.array([[0, 0], [255, 255]], np.uint8)
    np.testing.assert_array_equal(majority_vote([a, b, c]), [[True, False], [True, True]])
    ignore = np.array([[False, False], [False, True]])
    np.testing.assert_array_equal(majority_vote([a, b, c], ignore=ignore), [[True, False], [True, False]])


def test_expert_fraction() -> None:
    m = np.array([[[1, 1, 0]], [[1, 0, 0]], [[1, 1, 0]], [[1, 0, 0]]], np.uint8)
    out = expert_fraction(m)
    assert out.dtype == np.float32 and out.shape == (1, 3)
    np.testing.assert_array_equal(out, [[1.0, 0.5, 0.0]])


@pytest.mark.parametrize("bad", [0, 5, -1])
def test_bad_min_votes_value(bad: int) -> None:
    with pytest.raises(ValueError, match=r"min_votes must be between 1 and 4; got " + str(bad)):
        majority_vote(np.zeros((4, 3, 3), bool), min_votes=bad)


@pytest.mark.parametrize("bad", [1.5, True, "2"])
def test_bad_min_votes_type(bad) -> None:
    with pytest.raises(TypeError, match="min_votes must be an integer"):
        majority_vote(np.zeros((4, 3, 3), bool), min_votes=bad)


# ---- input validation --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [majority_vote, staple, object_consensus])
def test_shape_mismatch(fn) -> None:
    with pytest.raises(ValueError, match=r"must have the same shape; got shapes \[\(4, 4\), \(4, 5\)\]"):
        fn([np.zeros((4, 4), bool), np.zeros((4, 5), bool)])


@pytest.mark.parametrize("fn", [majority_vote, expert_fraction, staple, object_consensus])
def test_non_binary_values(fn) -> None:
    m = np.zeros((3, 4, 4), np.uint8)
    m[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"masks must be binary \(0/1, 0/255 or bool\); got 2 distinct values"):
        fn(m)


@pytest.mark.parametrize("fn", [majority_vote, staple, object_consensus])
def test_3d_input_rejected(fn) -> None:
    with pytest.raises(ValueError, match=r"masks must be \(n_experts, Y, X\).*got shape \(3, 2, 4, 4\)"):
        fn(np.zeros((3, 2, 4, 4), bool))


def test_single_2d_mask_rejected() -> None:
    with pytest.raises(ValueError, match=r"got a single 2-D mask of shape \(4, 4\)"):
        staple(np.zeros((4, 4), bool))


@pytest.mark.parametrize("fn", [staple, object_consensus])
def test_fewer_than_two_experts(fn) -> None:
    with pytest.raises(ValueError, match="masks must hold at least 2 experts; got 1"):
        fn(np.zeros((1, 4, 4), bool))


def test_bad_staple_arguments() -> None:
    m = np.zeros((3, 4, 4), bool)
    m[:, 1, 1] = True
    with pytest.raises(ValueError, match=r"prior must lie in \(0.0, 1.0\); got 1.5"):
        staple(m, prior=1.5)
    with pytest.raises(ValueError, match=r"max_iter must be >= 1; got 0"):
        staple(m, max_iter=0)
    with pytest.raises(ValueError, match=r"ignore must have the same shape as the masks \(4, 4\); got \(3, 3\)"):
        staple(m, ignore=np.zeros((3, 3), bool))


# ---- binary STAPLE against a plain pixel-wise EM ---------------------------------------------------


def reference_staple(d: np.ndarray, tol: float = 1e-7, max_iter: int = 10_000):
    """Warfield et al. 2004 EM written plainly, pixel by pixel (the algorithm of ITK's STAPLEImageFilter)."""
    d = d.reshape(d.shape[0], -1).astype(float)  # (R, N)
    r, n = d.shape
    w = d.mean(axis=0)
    g = w.mean()
    last_p = last_q = None
    for it in range(max_iter):
        p = np.array([(w * d[j]).sum() / w.sum() for j in range(r)])
        q = np.array([((1 - w) * (1 - d[j])).sum() / (1 - w).sum() for j in range(r)])
        a = np.ones(n)
        b = np.ones(n)
        for j in range(r):
            a *= np.where(d[j] == 1, p[j], 1 - p[j])
            b *= np.where(d[j] == 1, 1 - q[j], q[j])
        w = g * a / (g * a + (1 - g) * b)
        if it > 0 and np.all(np.abs(p - last_p) <= tol) and np.all(np.abs(q - last_q) <= tol):
            return w, p, q, g, it + 1
        last_p, last_q = p, q
    raise AssertionError("reference EM did not converge")


def _synthetic(rng: np.random.Generator, n_experts: int, shape=(24, 30)) -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros(shape, bool)
    truth[4:12, 5:14] = True
    truth[15:21, 18:27] = True
    flips = rng.uniform(0.01, 0.2, n_experts)
    return truth, np.stack([truth ^ (rng.random(shape) < f) for f in flips])


@pytest.mark.parametrize("n_experts", [2, 3, 5, 10, 20, 70])  # 10: uint16 codes; 20, 70: unique rows
def test_staple_equals_reference_em(n_experts: int) -> None:
    truth, d = _synthetic(np.random.default_rng(n_experts), n_experts)
    res = staple(d)
    w, p, q, g, n_iter = reference_staple(d)
    assert isinstance(res, StapleResult)
    assert res.probability.dtype == np.float64 and res.probability.shape == truth.shape
    np.testing.assert_allclose(res.probability.ravel(), w, atol=1e-10)
    np.testing.assert_allclose(res.sensitivity, p, atol=1e-12)
    np.testing.assert_allclose(res.specificity, q, atol=1e-12)
    assert res.prior == pytest.approx(g, abs=1e-15)
    assert res.n_iter == n_iter and res.converged
    np.testing.assert_array_equal(res.mask(), res.probability > 0.5)
    np.testing.assert_array_equal(res.mask(0.9), res.probability > 0.9)


def test_staple_hand_checked_tiny_case() -> None:
    # 2 experts on 4 pixels: both mark pixel 0, only expert 0 marks pixel 1.
    d = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]], bool)
    res = staple(d, max_iter=1)
    # iteration 1 from W0 = [1, .5, 0, 0], g = 1.5/4: p = [1.5/1.5, 1/1.5], q = [2/2.5, 2.5/2.5]
    np.testing.assert_allclose(res.sensitivity, [1.0, 2 / 3])
    np.testing.assert_allclose(res.specificity, [0.8, 1.0])
    assert res.prior == 0.375 and res.n_iter == 1 and not res.converged
    # pixel 1 (expert 0 only): a = 1 * (1 - 2/3), b = (1 - .8) * 1
    a, b, g = 1 / 3, 0.2, 0.375
    assert res.probability[0, 1] == pytest.approx(g * a / (g * a + (1 - g) * b))


def test_staple_ignore_excludes_pixels_from_em() -> None:
    truth, d = _synthetic(np.random.default_rng(7), 4)
    ignore = np.zeros(truth.shape, bool)
    ignore[:, :8] = True
    res = staple(d, ignore=ignore)
    w, p, q, _, _ = reference_staple(d[:, :, 8:])
    np.testing.assert_array_equal(res.probability[ignore], 0.0)
    np.testing.assert_allclose(res.probability[:, 8:].ravel(), w, atol=1e-10)
    np.testing.assert_allclose(res.sensitivity, p, atol=1e-12)
    np.testing.assert_allclose(res.specificity, q, atol=1e-12)


def test_staple_everything_marked() -> None:
    res = staple(np.ones((3, 4, 4), bool))
    np.testing.assert_array_equal(res.probability, 1.0)
    np.testing.assert_array_equal(res.sensitivity, 1.0)
    assert np.all(np.isnan(res.specificity))


def test_staple_is_order_equivariant() -> None:
    _, d = _synthetic(np.random.default_rng(3), 5)
    res = staple(d)
    perm = [3, 0, 4, 2, 1]
    res_p = staple(d[perm])
    np.testing.assert_allclose(res_p.probability, res.probability, atol=1e-12)
    np.testing.assert_allclose(res_p.sensitivity, res.sensitivity[perm], atol=1e-12)


# ---- multi-class STAPLE --------------------------------------------------------------------------


def _three_class_case(n_experts: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((30, 40), np.uint8)
    truth[4:14, 4:24] = 1
    truth[18:28, 10:36] = 2
    experts = []
    for p in (0.05, 0.15, 0.25, 0.1, 0.2)[:n_experts]:
        x = truth.copy()
        flip = rng.random(truth.shape) < p
        x[flip] = rng.integers(0, 3, flip.sum())
        experts.append(x)
    return truth, np.stack(experts)


@pytest.mark.parametrize("n_experts", [3, 4, 5])
def test_multiclass_matches_sitk(n_experts: int) -> None:
    sitk = pytest.importorskip("SimpleITK")
    truth, labels = _three_class_case(n_experts)
    res = staple_multiclass(labels)
    flt = sitk.MultiLabelSTAPLEImageFilter()
    out = sitk.GetArrayFromImage(flt.Execute([sitk.GetImageFromArray(x) for x in labels]))
    assert isinstance(res, MultiClassStapleResult)
    assert res.probability.shape == (3, 30, 40) and res.confusion.shape == (n_experts, 3, 3)
    np.testing.assert_array_equal(res.labels, out)
    for k in range(n_experts):
        cm = np.array(flt.GetConfusionMatrix(k)).reshape(4, 3)  # ITK: (C + 1) rows, the last for "undecided"
        # ITK computes in single precision and seeds vote ties differently: agreement to ~1e-4
        np.testing.assert_allclose(res.confusion[k], cm[:3], atol=2e-4)
        np.testing.assert_array_equal(cm[3], 0.0)
    np.testing.assert_allclose(res.confusion.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(res.probability.sum(axis=0), 1.0, atol=1e-12)
    assert (res.labels == truth).mean() > 0.97
    assert res.converged and res.undecided_label == 3
    np.testing.assert_allclose(res.prior, np.bincount(labels.ravel(), minlength=3) / labels.size)


def test_multiclass_binary_case_is_staple_like() -> None:
    """Two classes: the posterior of class 1 is a STAPLE-type consensus with sensible confusion."""
    truth, d = _synthetic(np.random.default_rng(11), 4)
    res = staple_multiclass(d)
    assert res.probability.shape == (2, *truth.shape)
    assert (res.labels == truth).mean() > 0.95
    assert np.all(res.sensitivity > 0.7)


def test_multiclass_undecided_on_exact_tie() -> None:
    # two identical experts disagreeing with each other everywhere on two pixels: a perfect tie
    a = np.array([[0, 1, 1, 0]])
    b = np.array([[1, 0, 1, 0]])
    res = staple_multiclass([a, b], undecided_label=255)
    assert res.labels[0, 2] == 1 and res.labels[0, 3] == 0
    assert res.labels[0, 0] == 255 and res.labels[0, 1] == 255


def test_multiclass_errors() -> None:
    with pytest.raises(TypeError, match="label_masks must hold integer class labels 0..C-1; got dtype float64"):
        staple_multiclass(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="label_masks must hold class labels >= 0; got minimum -1"):
        staple_multiclass(-np.ones((3, 4, 4), int))
    with pytest.raises(ValueError, match="label_masks must hold at least 2 experts; got 1"):
        staple_multiclass(np.zeros((1, 4, 4), int))
    with pytest.raises(ValueError, match="n_classes must exceed the largest label 2; got n_classes=2"):
        staple_multiclass(np.full((2, 4, 4), 2), n_classes=2)
    with pytest.raises(ValueError, match=r"label_masks must be \(n_experts, Y, X\) label images"):
        staple_multiclass(np.zeros((2, 2, 4, 4), int))


# ---- object consensus ------------------------------------------------------------------------------


def _touching_cells() -> np.ndarray:
    """3 experts, 2 cells side by side; each expert leaves a 1-px gap, but at a different column."""
    m = np.zeros((3, 12, 26), bool)
    m[0, 2:10, 1:12] = m[0, 2:10, 13:24] = True  # gap at column 12
    m[1, 2:10, 1:13] = m[1, 2:10, 14:24] = True  # gap at column 13
    m[2, 2:10, 1:14] = m[2, 2:10, 15:24] = True  # gap at column 14
    return m


def test_touching_cells_merge_in_staple_but_not_in_object_consensus() -> None:
    m = _touching_cells()
    for k in range(3):
        assert ndimage.label(m[k], structure=np.ones((3, 3)))[1] == 2
    st = staple(m).mask()
    assert ndimage.label(st, structure=np.ones((3, 3)))[1] == 1  # pixel-wise consensus: one object
    res = object_consensus(m)
    assert isinstance(res, ObjectConsensusResult)
    assert res.labels.dtype == np.int32 and res.n_objects == 2
    np.testing.assert_array_equal(res.support, [3, 3])
    np.testing.assert_array_equal(res.members, [[1, 1, 1], [2, 2, 2]])
    # each object is the 2-of-3 vote of its members
    left = np.zeros((12, 26), bool)
    left[2:10, 1:13] = True
    np.testing.assert_array_equal(res.labels == 1, left)


def test_touching_objects_keep_separate_labels() -> None:
    m = _touching_cells()
    res = object_consensus(m, pixel_min_votes=1)  # union of the members: the two cells touch
    assert res.n_objects == 2
    a, b = res.labels == 1, res.labels == 2
    assert not (a & b).any()
    assert (ndimage.binary_dilation(a, np.ones((3, 3))) & b).any()  # they touch...
    assert ndimage.label(res.mask(), structure=np.ones((3, 3)))[1] == 1  # ...and merge if binarised
    assert a.sum() + b.sum() == m.any(axis=0).sum()


def test_object_consensus_min_experts_and_same_expert_constraint() -> None:
    m = np.zeros((4, 10, 30), bool)
    m[:, 2:6, 2:6] = True  # cell A: all 4 experts
    m[0, 2:6, 10:14] = m[1, 2:6, 10:14] = True  # cell B: 2 experts (a tie, not a majority of 4)
    m[2, 2:6, 20:24] = True  # cell C: 1 expert
    assert object_consensus(m).n_objects == 1  # default: strict majority, 3 of 4
    res2 = object_consensus(m, min_experts=2)
    assert res2.n_objects == 2 and sorted(res2.support.tolist()) == [2, 4]
    assert object_consensus(m, min_experts=1).n_objects == 3
    # an expert that splits a cell in two never contributes both halves to one group
    s = np.zeros((2, 8, 12), bool)
    s[0, 2:6, 1:11] = True
    s[1, 2:6, 1:6] = s[1, 2:6, 7:11] = True
    res = object_consensus(s, min_experts=1, iou_threshold=0.3)
    assert res.n_objects == 2 and res.members.max(axis=0)[1] <= 2
    with pytest.raises(ValueError, match="min_experts must be between 1 and 4; got 5"):
        object_consensus(m, min_experts=5)
    with pytest.raises(ValueError, match=r"iou_threshold must lie in \[0, 1\); got 1.0"):
        object_consensus(m, iou_threshold=1.0)


def test_object_consensus_min_size_and_empty() -> None:
    m = np.zeros((3, 10, 10), bool)
    m[:, 1:3, 1:3] = True  # 4 px
    m[:, 5:9, 5:9] = True  # 16 px
    assert object_consensus(m).n_objects == 2
    assert object_consensus(m, min_size=5).n_objects == 1
    empty = object_consensus(np.zeros((3, 5, 5), bool))
    assert empty.n_objects == 0 and empty.labels.max() == 0 and empty.members.shape == (0, 3)


def _read_sample(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    iio = pytest.importorskip("imageio.v3")

    def read(p: Path) -> np.ndarray:
        a = iio.imread(p)
        return (a[..., 0] if a.ndim == 3 else a) > 0

    experts = sorted(p for p in (SAMPLE / "labels").iterdir() if p.name.startswith("expert_"))
    return (np.stack([read(e / f"{image_id}_cFOS.png") for e in experts]),
            read(SAMPLE / "labels" / "est_GT" / f"{image_id}_cFOS.png"))


def test_object_consensus_on_real_sample() -> None:
    from fiji_consensus.matching import label_objects, match_objects

    stack, gt = _read_sample("0001")
    gt_labels = label_objects(gt, min_size=30)
    res = object_consensus(stack, min_experts=2, min_size=30)
    m = match_objects(gt_labels, res.labels)
    assert abs(res.n_objects - gt_labels.max()) <= 0.15 * gt_labels.max()
    assert m.f1 > 0.8
    assert np.all(res.support >= 2)
    # every object is one 8-connected piece
    for i, sl in enumerate(ndimage.find_objects(res.labels), start=1):
        assert ndimage.label(res.labels[sl] == i, structure=np.ones((3, 3)))[1] == 1
    # the default (3 of 5 experts) keeps fewer objects
    assert object_consensus(stack, min_size=30).n_objects < res.n_objects


# ---- missing raters: STAPLE pooled over images, jobs on a real project with annotations removed ---------


def _naive_pooled_em(stacks, raters, r, iters=200):
    """Pixel-wise EM of STAPLE with missing raters, written from the model (no pattern compression)."""
    d = [s.reshape(s.shape[0], -1).astype(float) for s in stacks]
    w = [x.mean(axis=0) for x in d]
    g = [float(x.mean()) for x in w]
    for _ in range(iters):
        pn, pd, qn, qd = np.zeros(r), np.zeros(r), np.zeros(r), np.zeros(r)
        for x, wi, idx in zip(d, w, raters):
            for k, j in enumerate(idx):
                pn[j] += (wi * x[k]).sum()
                pd[j] += wi.sum()
                qn[j] += ((1 - wi) * (1 - x[k])).sum()
                qd[j] += (1 - wi).sum()
        p, q = pn / pd, qn / qd
        w = []
        for x, gi, idx in zip(d, g, raters):
            a = np.prod([np.where(x[k] > 0, p[j], 1 - p[j]) for k, j in enumerate(idx)], axis=0)
            b = np.prod([np.where(x[k] > 0, 1 - q[j], q[j]) for k, j in enumerate(idx)], axis=0)
            w.append(gi * a / (gi * a + (1 - gi) * b))
    return p, q, w


def test_consensus_of_dispatches_with_options_and_config() -> None:
    from fiji_consensus.config import ConsensusConfig
    from fiji_consensus.consensus import consensus_of

    rng = np.random.default_rng(3)
    masks = rng.random((3, 24, 24)) < 0.4
    st = consensus_of(masks, "staple", threshold=0.3, prior=0.2, max_iter=5)
    ref = staple(masks, prior=0.2, max_iter=5)
    np.testing.assert_array_equal(st["mask"], ref.probability > 0.3)
    assert st["labels"].dtype == np.int32 and st["n_iter"] == ref.n_iter <= 5
    ign = np.zeros((24, 24), bool)
    ign[:5] = True
    mv = consensus_of(masks, "majority", min_votes=1, ignore=ign)
    np.testing.assert_array_equal(mv["mask"], majority_vote(masks, min_votes=1, ignore=ign))
    assert mv["probability"] is None
    ob = consensus_of(masks, "objects", min_experts=3, ignore=ign)
    assert not ob["labels"][:5].any() and (ob["mask"] == (ob["labels"] > 0)).all()
    # a ConsensusConfig gives the same as its fields as keywords
    cfg = ConsensusConfig(images="i", experts=["a", "b", "c"], out="o", method="staple", threshold=0.3, prior=0.2, max_iter=5)
    np.testing.assert_array_equal(consensus_of(masks, cfg)["probability"], st["probability"])
    with pytest.raises(ValueError, match="method must be .*got 'vote'"):
        consensus_of(masks, "vote")
    from fiji_consensus import jobs

    assert jobs.consensus_of is consensus_of


def test_pooled_staple_matches_naive_em_with_missing_raters() -> None:
    from fiji_consensus.consensus import staple_pooled

    rng = np.random.default_rng(0)
    truth = [rng.random((20, 24)) < f for f in (0.2, 0.35, 0.1)]
    sens, spec = np.array([0.9, 0.7, 0.8, 0.95]), np.array([0.95, 0.9, 0.97, 0.85])
    raters = [(0, 1, 2), (1, 3), (0, 2, 3)]  # every pair of experts shares an image
    stacks = [
        np.stack([np.where(t, rng.random(t.shape) < sens[j], rng.random(t.shape) > spec[j]) for j in idx])
        for t, idx in zip(truth, raters)
    ]
    res = staple_pooled(stacks, raters, tol=1e-12)
    p, q, w = _naive_pooled_em(stacks, raters, 4)
    np.testing.assert_allclose(res.sensitivity, p, atol=1e-8)
    np.testing.assert_allclose(res.specificity, q, atol=1e-8)
    for prob, wi in zip(res.probability, w):
        np.testing.assert_allclose(prob.ravel(), wi, atol=1e-8)
    # the posterior of an image depends on its own raters only: adding an expert to another image changes
    # the pooled p/q but image 0 is still computed from experts 0, 1, 2
    assert res.fit.raters == ((0, 1, 2), (1, 3), (0, 2, 3))


def test_pooled_staple_on_one_full_image_is_staple(shared_data: Path) -> None:
    """One image, every expert: the pooled estimate is exactly ITK's STAPLE (real lab-wue1 image)."""
    from _design_data import lab_masks

    from fiji_consensus.consensus import staple_pooled

    m = lab_masks("0004")
    a, b = staple(m), staple_pooled([m], [range(5)])
    np.testing.assert_array_equal(a.probability, b.probability[0])
    np.testing.assert_array_equal(a.sensitivity, b.sensitivity)
    assert a.n_iter == b.fit.n_iter and float(a.prior) == float(b.fit.priors[0])


def test_pooled_staple_errors() -> None:
    from fiji_consensus.consensus import staple_fit, staple_pooled

    m = np.zeros((2, 4, 4), bool)
    with pytest.raises(ValueError, match=r"raters must list the experts of each of the 1 images; got 2"):
        staple_pooled([m], [(0, 1), (0, 1)])
    with pytest.raises(ValueError, match=r"raters\[0\] names 3 experts but image 0 has 2 masks"):
        staple_pooled([m], [(0, 1, 2)])
    with pytest.raises(ValueError, match=r"distinct expert indices"):
        staple_pooled([m], [(1, 1)])
    with pytest.raises(ValueError, match="at least one image"):
        staple_fit([], [])


DESIGN_IDS = ["0001", "0004", "0006", "0007", "0008"]
# 3 of 5 experts per image, every pair of experts shares at least one image
DESIGN = {
    "0001": ["expert_1", "expert_2", "expert_3"],
    "0004": ["expert_3", "expert_4", "expert_5"],
    "0006": ["expert_1", "expert_4", "expert_5"],
    "0007": ["expert_2", "expert_4", "expert_5"],
    "0008": ["expert_1", "expert_2", "expert_3"],
}


def _read_tif(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


def test_consensus_full_design_unchanged(tmp_path: Path, shared_data: Path) -> None:
    """Every expert on every image: STAPLE per image, masks exactly staple(masks).mask() (est_GT's rule)."""
    from _design_data import lab_masks, make_project

    from fiji_consensus.config import ConsensusConfig
    from fiji_consensus.jobs import run_consensus

    ids = DESIGN_IDS[:3]
    window = (slice(384, 640), slice(384, 640))
    proj = make_project(tmp_path / "p", ids, window=window)
    s = run_consensus(ConsensusConfig(project=proj, out=tmp_path / "c", write_overlays=False))
    assert s["staple"]["estimate"].startswith("per image") and s["design"] == "every expert on every image"
    assert not (tmp_path / "c" / "staple_fit.json").exists()
    for i in ids:
        np.testing.assert_array_equal(_read_tif(tmp_path / "c" / "masks" / f"{i}.tif") > 0,
                                      staple(lab_masks(i, window)).mask())


def test_consensus_missing_raters_real_data(tmp_path: Path, shared_data: Path) -> None:
    """3 of 5 experts per image (annotations removed by design): pooled STAPLE, scores only where present."""
    import csv

    from _design_data import EXPERTS, lab_masks, make_project

    from fiji_consensus.config import ConsensusConfig
    from fiji_consensus.consensus import staple_pooled
    from fiji_consensus.jobs import run_consensus

    window = (slice(384, 640), slice(384, 640))
    proj = make_project(tmp_path / "p", DESIGN_IDS, DESIGN, window=window)
    s = run_consensus(ConsensusConfig(project=proj, out=tmp_path / "c", write_overlays=False))
    assert s["n_images"] == 5 and s["staple"]["estimate"].startswith("pooled")
    assert s["annotated_by"] == {"expert_1": 3, "expert_2": 3, "expert_3": 3, "expert_4": 3, "expert_5": 3}
    assert all(p["n_images"] >= 1 for p in s["pair_overlap"])
    # the same numbers as the array API on the same masks
    stacks = [lab_masks(i, window)[[EXPERTS.index(e) for e in DESIGN[i]]] for i in DESIGN_IDS]
    raters = [[EXPERTS.index(e) for e in DESIGN[i]] for i in DESIGN_IDS]
    ref = staple_pooled(stacks, raters, max_iter=1000)
    for i, m in zip(DESIGN_IDS, ref.masks()):
        np.testing.assert_array_equal(_read_tif(tmp_path / "c" / "masks" / f"{i}.tif") > 0, m)
    fit = (tmp_path / "c" / "staple_fit.json").read_text()
    assert "pooled" in fit
    # pooled differs from a per-image STAPLE of the same raters on at least one image (it is not a relabel)
    per_image = [staple(st).mask() for st in stacks]
    assert any((a != b).any() for a, b in zip(per_image, ref.masks()))
    # experts.csv: one row per expert and image annotated, with the pooled STAPLE sensitivity
    rows = list(csv.DictReader(open(tmp_path / "c" / "experts.csv")))
    assert sorted((r["image"], r["expert"]) for r in rows) == sorted((i, e) for i in DESIGN_IDS for e in DESIGN[i])
    e1 = [float(r["staple_sensitivity"]) for r in rows if r["expert"] == "expert_1"]
    assert np.allclose(e1, ref.sensitivity[0], atol=1e-5)
    # agreement.csv: each pair averaged over the images both annotated
    pairs = {(r["rater_a"], r["rater_b"]): int(r["n_images"]) for r in csv.DictReader(open(tmp_path / "c" / "agreement.csv"))}
    assert pairs[("expert_1", "expert_2")] == 2 and pairs[("expert_4", "expert_5")] == 3
    ann = list(csv.DictReader(open(tmp_path / "c" / "annotations.csv")))
    assert [r["n_experts"] for r in ann] == ["3"] * 5 and ann[0]["expert_4"] == "0"
    # majority and objects: each image's own raters (2 of 3 needed)
    s2 = run_consensus(ConsensusConfig(project=proj, out=tmp_path / "m", method="majority", write_overlays=False))
    assert s2["staple"] is None
    for i, st in zip(DESIGN_IDS, stacks):
        np.testing.assert_array_equal(_read_tif(tmp_path / "m" / "masks" / f"{i}.tif") > 0, majority_vote(st))
    s3 = run_consensus(ConsensusConfig(project=proj, out=tmp_path / "o", method="objects", write_overlays=False))
    assert s3["n_images"] == 5 and s3["mean_consensus_objects"] > 0


def test_consensus_fewer_than_two_raters(tmp_path: Path, shared_data: Path) -> None:
    from _design_data import make_project

    from fiji_consensus.config import ConsensusConfig
    from fiji_consensus.jobs import run_consensus

    design = {"0001": ["expert_1", "expert_2"], "0004": ["expert_3"], "0006": ["expert_4", "expert_5"]}
    proj = make_project(tmp_path / "p", list(design), design, window=(slice(0, 96), slice(0, 96)))
    with pytest.raises(ValueError, match=r"1 image\(s\) have fewer than 2 experts' annotations: 0004 \(expert_3\);"):
        run_consensus(ConsensusConfig(project=proj, out=tmp_path / "c"))
    assert not (tmp_path / "c").exists()  # refused before anything was written
    s = run_consensus(ConsensusConfig(project=proj, out=tmp_path / "c", skip_incomplete=True, write_overlays=False))
    assert s["skipped_images"] == ["0004"] and s["n_images"] == 2
    with pytest.raises(ValueError, match=r"--min-votes 3 but 2 image\(s\) have fewer experts' annotations: 0001 \(2\)"):
        run_consensus(ConsensusConfig(project=proj, out=tmp_path / "d", method="majority", min_votes=3,
                                      skip_incomplete=True))


def test_agreement_missing_raters_scores_only_overlaps(tmp_path: Path, shared_data: Path) -> None:
    from _design_data import lab_masks, make_project

    from fiji_consensus import metrics
    from fiji_consensus.config import AgreementConfig
    from fiji_consensus.jobs import run_agreement

    window = (slice(384, 640), slice(384, 640))
    design = {"0001": ["expert_1", "expert_2", "expert_3"], "0004": ["expert_1", "expert_2"],
              "0006": ["expert_3", "expert_4"]}
    proj = make_project(tmp_path / "p", list(design), design, window=window)
    s = run_agreement(AgreementConfig(project=proj, out=tmp_path / "a"))
    pw = {(p["rater_a"], p["rater_b"]): p for p in s["pairwise"]}
    assert pw[("expert_1", "expert_2")]["n_images"] == 2
    want = np.mean([metrics.dice(lab_masks(i, window)[0], lab_masks(i, window)[1]) for i in ("0001", "0004")])
    assert pw[("expert_1", "expert_2")]["dice"] == pytest.approx(want, abs=1e-9)
    assert ("expert_1", "expert_4") not in pw and ["expert_1", "expert_4"] in s["pairs_without_overlap"]
    assert "expert_5" not in s["annotated_by"] and s["annotated_by"]["expert_3"] == 2
    mat = (tmp_path / "a" / "agreement_matrix_dice.csv").read_text().splitlines()
    assert mat[1].split(",")[4] == "nan"  # expert_1 vs expert_4: never on the same image


def test_evaluate_with_missing_raters(tmp_path: Path, shared_data: Path) -> None:
    """evaluate on a project where experts annotated different images: pooled STAPLE reference, each expert
    scored on its own images, pairs only where both annotated, a model scored on every image."""
    import csv

    import tifffile
    from _design_data import EXPERTS, lab_masks, make_project

    from fiji_consensus.config import EvaluateConfig
    from fiji_consensus.consensus import staple_pooled
    from fiji_consensus.evaluate_job import run_evaluate

    window = (slice(384, 640), slice(384, 640))
    proj = make_project(tmp_path / "p", DESIGN_IDS, DESIGN, window=window)
    model = tmp_path / "model"
    model.mkdir()
    for i in DESIGN_IDS:  # a 'model' that copies expert_2 (annotated by it or not)
        tifffile.imwrite(model / f"{i}_mask.tif", lab_masks(i, window)[1].astype(np.uint8) * 255)
    s = run_evaluate(EvaluateConfig(project=proj, models={"copy": model}, out=tmp_path / "e"))
    assert s["reference"].startswith("STAPLE pooled") and s["annotated_by"]["expert_4"] == 3
    rows = list(csv.DictReader(open(tmp_path / "e" / "objectivity.csv")))
    assert sorted((r["image"], r["rater"]) for r in rows if r["kind"] == "expert") == \
        sorted((i, e) for i in DESIGN_IDS for e in DESIGN[i])
    assert len([r for r in rows if r["rater"] == "copy"]) == 5
    stacks = [lab_masks(i, window)[[EXPERTS.index(e) for e in DESIGN[i]]] for i in DESIGN_IDS]
    ref = staple_pooled(stacks, [[EXPERTS.index(e) for e in DESIGN[i]] for i in DESIGN_IDS], max_iter=10_000)
    from fiji_consensus import metrics

    want = metrics.dice(ref.masks()[0], lab_masks("0001", window)[1])
    got = [float(r["dice"]) for r in rows if r["rater"] == "copy" and r["image"] == "0001"][0]
    assert got == pytest.approx(want, abs=1e-5)
    agree = {(r["rater_a"], r["rater_b"]): int(r["n_images"]) for r in csv.DictReader(open(tmp_path / "e" / "agreement.csv"))}
    assert agree[("expert_1", "expert_2")] == 2 and agree[("expert_1", "copy")] == 3


@pytest.mark.slow
def test_train_with_missing_raters(tmp_path: Path, shared_data: Path) -> None:
    """train on a project whose experts annotated different images: targets from the pooled STAPLE."""
    pytest.importorskip("torch")
    from _design_data import make_project

    from fiji_consensus.cli import main

    window = (slice(384, 512), slice(384, 512))
    proj = make_project(tmp_path / "p", DESIGN_IDS[:4], DESIGN, window=window)
    out = tmp_path / "m"
    code = main(["train", "--project", str(proj), "--members", "2", "--iterations", "2", "--patch-size", "64",
                 "--batch-size", "1", "--out", str(out), "--json", "--no-progress"])
    assert code == 0
    meta = json.loads((out / "ensemble.json").read_text())
    assert "STAPLE pooled over images" in json.dumps(meta)
    code = main(["train", "--project", str(proj), "--members", "2", "--iterations", "2", "--patch-size", "64",
                 "--paper-selection", "--out", str(tmp_path / "m2"), "--json", "--no-progress"])
    assert code == 1 and not (tmp_path / "m2").exists()
