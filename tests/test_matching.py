"""Tests of fiji_consensus.matching: labelling, IoU matrices, Hungarian matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from fiji_consensus.matching import (
    Matching,
    iou_matrix,
    label_objects,
    match_objects,
    overlap_pairs,
)


def row(*spans: tuple[int, int], width: int = 120, value: int = 1) -> np.ndarray:
    """A (1, width) image with ``value`` on the half-open column spans."""
    out = np.zeros((1, width), dtype=np.int32)
    for a, b in spans:
        out[0, a:b] = value
    return out


def labelled_row(*spans: tuple[int, int], width: int = 120) -> np.ndarray:
    """A (1, width) label image: span k gets label k + 1 (spans may touch)."""
    out = np.zeros((1, width), dtype=np.int32)
    for k, (a, b) in enumerate(spans, start=1):
        out[0, a:b] = k
    return out


def random_labels(rng: np.random.Generator, shape=(96, 96), p=0.55, sigma=1.5) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.random(shape), sigma)
    return label_objects(noise > np.quantile(noise, p), connectivity=4)


# --------------------------------------------------------------------------------------------------
# label_objects


def test_label_objects_8_vs_4_connectivity_diagonal() -> None:
    m = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    assert label_objects(m).max() == 1
    assert label_objects(m, connectivity=8).max() == 1
    lab4 = label_objects(m, connectivity=4)
    assert lab4.max() == 2
    np.testing.assert_array_equal(lab4, [[1, 0, 0], [0, 2, 0], [0, 0, 0]])


def test_label_objects_dtype_and_sequential_after_min_size() -> None:
    m = np.zeros((10, 20), dtype=np.uint8)
    m[0:2, 0:2] = 255  # area 4  -> dropped with min_size=5
    m[4:7, 0:2] = 255  # area 6  -> kept
    m[0, 10] = 255  # area 1  -> dropped
    m[8:10, 10:13] = 255  # area 6 -> kept
    lab = label_objects(m, min_size=5)
    assert lab.dtype == np.int32
    assert sorted(np.unique(lab).tolist()) == [0, 1, 2]
    assert np.count_nonzero(lab == 1) == 6 and np.count_nonzero(lab == 2) == 6
    assert label_objects(m, min_size=6).max() == 2
    assert label_objects(m, min_size=7).max() == 0
    assert label_objects(m).max() == 4
    assert label_objects(m, min_size=1).max() == 4


def test_label_objects_min_size_boundary_is_inclusive() -> None:
    m = row((0, 29), (40, 70))  # areas 29 and 30
    lab = label_objects(m, min_size=30)
    assert lab.max() == 1
    assert np.count_nonzero(lab) == 30


@pytest.mark.parametrize(
    "mask",
    [
        np.array([[0, 1, 1, 0, 1]], dtype=bool),
        np.array([[0, 1, 1, 0, 1]], dtype=np.uint8),
        np.array([[0, 255, 255, 0, 255]], dtype=np.uint8),
        np.array([[0.1, 0.9, 0.51, 0.5, 0.7]]),  # probabilities: strictly > 0.5
    ],
)
def test_label_objects_input_kinds(mask: np.ndarray) -> None:
    np.testing.assert_array_equal(label_objects(mask), [[0, 1, 1, 0, 2]])


def test_label_objects_threshold() -> None:
    p = np.array([[0.2, 0.6, 0.8, 0.4, 0.9]])
    np.testing.assert_array_equal(label_objects(p, threshold=0.7), [[0, 0, 1, 0, 2]])


def test_label_objects_ignore_applied_before_labelling() -> None:
    m = np.zeros((3, 9), dtype=bool)
    m[1, 0:9] = True  # one object of 9 pixels
    ignore = np.zeros_like(m)
    ignore[:, 4] = True  # cut it in the middle
    lab = label_objects(m, ignore=ignore)
    assert lab.max() == 2
    assert not lab[1, 4]
    # the two halves (4 px each) fall below min_size 5 only because the ignore region cut them
    assert label_objects(m, min_size=5).max() == 1
    assert label_objects(m, min_size=5, ignore=ignore).max() == 0


def test_label_objects_errors_name_the_argument() -> None:
    m = np.zeros((4, 4), dtype=bool)
    with pytest.raises(ValueError, match=r"connectivity must be 4 or 8; got 6"):
        label_objects(m, connectivity=6)
    with pytest.raises(ValueError, match=r"min_size must be a non-negative integer; got -1"):
        label_objects(m, min_size=-1)
    with pytest.raises(ValueError, match=r"min_size .* got 2\.5"):
        label_objects(m, min_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mask must be a 2-D \(Y, X\) array.*shape \(2, 4, 4\)"):
        label_objects(np.zeros((2, 4, 4)))
    with pytest.raises(
        ValueError, match=r"ignore must have the same shape as the masks \(4, 4\); got \(4, 5\)"
    ):
        label_objects(m, ignore=np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match=r"ignore must be binary"):
        label_objects(m, ignore=np.full((4, 4), 3))
    with pytest.raises(ValueError, match=r"mask must not contain NaN"):
        label_objects(np.full((4, 4), np.nan))
    with pytest.raises(TypeError, match=r"mask must be a boolean, integer or floating-point array"):
        label_objects(np.full((4, 4), "a"))
    with pytest.raises(TypeError, match=r"threshold must be a number; got 'x'"):
        label_objects(m, threshold="x")  # type: ignore[arg-type]


def test_label_objects_does_not_modify_input() -> None:
    m = np.ones((3, 3), dtype=bool)
    ignore = np.zeros((3, 3), dtype=bool)
    ignore[1, 1] = True
    label_objects(m, ignore=ignore, min_size=2)
    assert m.all()


# --------------------------------------------------------------------------------------------------
# overlap_pairs / iou_matrix


def test_iou_matrix_hand_computed() -> None:
    r = labelled_row((0, 4), (6, 8), width=12)  # areas 4, 2
    c = labelled_row((2, 7), (10, 12), width=12)  # areas 5, 2
    # r1 ∩ c1 = cols 2,3 -> 2 / (4 + 5 - 2) = 2/7; r2 ∩ c1 = col 6 -> 1 / (2 + 5 - 1) = 1/6
    expected = np.array([[2 / 7, 0.0], [1 / 6, 0.0]])
    got = iou_matrix(r, c)
    assert got.dtype == np.float64 and got.shape == (2, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    ri, ci, inter, ra, ca = overlap_pairs(r, c)
    assert ri.tolist() == [1, 2] and ci.tolist() == [1, 1] and inter.tolist() == [2, 1]
    assert ra.tolist() == [6, 4, 2] and ca.tolist() == [5, 5, 2]


def test_iou_matrix_matches_per_object_loop() -> None:
    rng = np.random.default_rng(0)
    r = random_labels(rng)
    c = random_labels(rng)
    got = iou_matrix(r, c)
    assert got.shape == (r.max(), c.max())
    expected = np.zeros_like(got)
    for i in range(1, r.max() + 1):
        a = r == i
        for j in np.unique(c[a]):
            if j == 0:
                continue
            b = c == j
            expected[i - 1, j - 1] = np.count_nonzero(a & b) / np.count_nonzero(a | b)
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)


def test_iou_matrix_empty_and_gaps() -> None:
    z = np.zeros((3, 3), dtype=np.int32)
    assert iou_matrix(z, z).shape == (0, 0)
    one = z.copy()
    one[0, 0] = 1
    assert iou_matrix(one, z).shape == (1, 0)
    gap = z.copy()
    gap[2, 2] = 3  # labels 1 and 2 absent: zero rows
    np.testing.assert_array_equal(iou_matrix(gap, gap), [[0, 0, 0], [0, 0, 0], [0, 0, 1.0]])


def test_iou_matrix_errors() -> None:
    z = np.zeros((3, 3), dtype=np.int32)
    with pytest.raises(
        ValueError,
        match=r"ref_labels and cand_labels must have the same shape; got \(3, 3\) and \(3, 4\)",
    ):
        iou_matrix(z, np.zeros((3, 4), np.int32))
    with pytest.raises(TypeError, match=r"cand_labels must be an integer label image.*float64"):
        iou_matrix(z, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"ref_labels must hold non-negative label ids; got minimum -1"):
        iou_matrix(z - 1, z)


# --------------------------------------------------------------------------------------------------
# match_objects


def test_match_objects_hand_computed() -> None:
    r = labelled_row((0, 2), (3, 5), (6, 7), width=10)
    c = labelled_row((0, 3), (4, 5), width=10)
    m = match_objects(r, c)
    # IoU(r1, c1) = 2/3 matches; IoU(r2, c2) = 1/2 is not > 0.5; r3 overlaps nothing
    assert m.ref_ids.tolist() == [1] and m.cand_ids.tolist() == [1]
    np.testing.assert_allclose(m.ious, [2 / 3])
    assert (m.n_ref, m.n_cand, m.tp, m.fp, m.fn) == (3, 2, 1, 1, 2)
    assert m.precision == 0.5 and m.recall == 1 / 3 and m.f1 == 2 / 5


def test_match_objects_threshold_is_strict() -> None:
    r = labelled_row((0, 2), width=4)
    c = labelled_row((0, 1), width=4)  # IoU exactly 0.5
    assert match_objects(r, c).tp == 0
    assert match_objects(r, c, iou_threshold=0.49).tp == 1
    assert match_objects(r, r, iou_threshold=1.0).tp == 0  # IoU 1 is not > 1
    assert match_objects(r, r, iou_threshold=0.999).tp == 1


def test_match_objects_hungarian_differs_from_greedy() -> None:
    # candidate X = cols 0..99, Y = 101..108; reference B = 0..43, A = 45..108
    # IoU(A, X) = 55/109 = 0.505 (> 0.5), IoU(A, Y) = 8/64 = 0.125, IoU(B, X) = 44/100 = 0.44.
    # Maximising total IoU takes A-Y + B-X (0.565 > 0.505), so no pair is above 0.5, whereas
    # greedy matching (best pair first) would match A with X.
    ref = labelled_row((0, 44), (45, 109))  # B = 1, A = 2
    cand = labelled_row((0, 100), (101, 109))  # X = 1, Y = 2
    ious = iou_matrix(ref, cand)
    np.testing.assert_allclose(ious, [[0.44, 0.0], [55 / 109, 8 / 64]])
    assert ious.max() > 0.5  # greedy would find one match
    m = match_objects(ref, cand)
    assert m.tp == 0 and m.f1 == 0.0
    m0 = match_objects(ref, cand, iou_threshold=0.0)
    assert sorted(zip(m0.ref_ids.tolist(), m0.cand_ids.tolist())) == [(1, 1), (2, 2)]


def test_match_objects_is_optimal_like_dense_hungarian() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        r = random_labels(rng)
        c = random_labels(rng)
        dense = iou_matrix(r, c)
        rows, cols = linear_sum_assignment(dense, maximize=True)
        best = dense[rows, cols].sum()
        m = match_objects(r, c, iou_threshold=0.0)
        # one-to-one, only overlapping pairs, same optimum
        assert len(set(m.ref_ids.tolist())) == m.tp and len(set(m.cand_ids.tolist())) == m.tp
        assert np.all(m.ious > 0)
        np.testing.assert_allclose(m.ious, dense[m.ref_ids - 1, m.cand_ids - 1])
        assert m.ious.sum() == pytest.approx(best, rel=1e-12)
        # at the default threshold: pairs above 0.5 of that optimal assignment
        m5 = match_objects(r, c)
        assert m5.tp == int(np.count_nonzero(m.ious > 0.5))


def test_match_objects_empty() -> None:
    z = np.zeros((4, 4), dtype=np.int32)
    m = match_objects(z, z)
    assert (m.n_ref, m.n_cand, m.tp) == (0, 0, 0)
    assert math.isnan(m.f1) and math.isnan(m.precision) and math.isnan(m.recall)
    one = z.copy()
    one[1:3, 1:3] = 1
    m = match_objects(one, z)
    assert m.f1 == 0.0 and m.recall == 0.0 and math.isnan(m.precision)
    assert (m.fn, m.fp) == (1, 0)


def test_match_objects_counts_distinct_ids_and_accepts_bool() -> None:
    r = np.zeros((1, 10), dtype=np.int32)
    r[0, 0:3] = 5
    r[0, 6:9] = 9
    c = r > 0
    m = match_objects(r, c)
    # c is a bool image with one label (1) covering both objects: IoU 3/6 = 0.5 for each pair -> none
    assert (m.n_ref, m.n_cand, m.tp) == (2, 1, 0)
    m = match_objects(r, r)
    assert m.ref_ids.tolist() == [5, 9] and m.cand_ids.tolist() == [5, 9] and m.f1 == 1.0


def test_match_objects_threshold_errors() -> None:
    z = np.zeros((2, 2), dtype=np.int32)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]; got 1.5"):
        match_objects(z, z, iou_threshold=1.5)
    with pytest.raises(TypeError, match=r"iou_threshold must be a number in \[0, 1\]; got 'a'"):
        match_objects(z, z, iou_threshold="a")  # type: ignore[arg-type]


def test_matching_is_frozen() -> None:
    m = Matching(np.array([1]), np.array([1]), np.array([1.0]), n_ref=1, n_cand=1)
    with pytest.raises(AttributeError):
        m.n_ref = 3  # type: ignore[misc]


def test_match_objects_fast_on_many_objects() -> None:
    import time

    rng = np.random.default_rng(0)
    # ~400 blobs on 1024 x 1024, candidate = reference shifted by a pixel plus noise
    ref = np.zeros((1024, 1024), dtype=bool)
    yy, xx = np.mgrid[-6:7, -6:7]
    disk = yy**2 + xx**2 <= 30
    centres = rng.integers(10, 1014, size=(450, 2))
    for y, x in centres:
        ref[y - 6 : y + 7, x - 6 : x + 7] |= disk
    cand = np.roll(ref, 1, axis=1) ^ (rng.random(ref.shape) < 0.002)
    rl, cl = label_objects(ref, min_size=30), label_objects(cand, min_size=30)
    assert rl.max() > 300
    m = match_objects(rl, cl)
    assert m.tp > 0.8 * rl.max()
