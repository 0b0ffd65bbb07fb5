"""Tests of fiji_consensus.metrics against hand computations and textbook examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from fiji_consensus.metrics import (
    AP_THRESHOLDS,
    average_precision,
    cohen_kappa,
    count_objects,
    dice,
    fleiss_kappa,
    fleiss_kappa_from_counts,
    icc,
    iou,
    object_scores,
    pairwise_matrix,
    roi_f1,
    sensitivity_specificity,
)


def spans(*s: tuple[int, int], width: int = 120) -> np.ndarray:
    """A (1, width) bool row that is True on the half-open column spans."""
    out = np.zeros((1, width), dtype=bool)
    for a, b in s:
        out[0, a:b] = True
    return out


def blobs(rng: np.random.Generator, shape=(128, 128), q=0.8, sigma=2.0) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.random(shape), sigma)
    return noise > np.quantile(noise, q)


# --------------------------------------------------------------------------------------------------
# pixel Dice and IoU


def test_dice_and_iou_hand_computed() -> None:
    a = spans((0, 4), width=8)  # |A| = 4
    b = spans((2, 8), width=8)  # |B| = 6, |A ∩ B| = 2, |A ∪ B| = 8
    assert dice(a, b) == 2 * 2 / 10
    assert iou(a, b) == 2 / 8
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, ~a) == 0.0 and iou(a, ~a) == 0.0
    # 0/255 and 0/1 integer masks are accepted
    assert dice(a.astype(np.uint8) * 255, b.astype(np.int64)) == 0.4


def test_dice_iou_nan_when_both_empty() -> None:
    z = np.zeros((3, 3), dtype=bool)
    assert math.isnan(dice(z, z)) and math.isnan(iou(z, z))
    one = z.copy()
    one[0, 0] = True
    assert dice(one, z) == 0.0 and iou(one, z) == 0.0


def test_dice_iou_ignore() -> None:
    a = spans((0, 4), width=8)
    b = spans((2, 8), width=8)
    ignore = spans((6, 8), width=8)  # drops 2 pixels of B only
    assert dice(a, b, ignore=ignore) == 2 * 2 / (4 + 4)
    assert iou(a, b, ignore=ignore) == 2 / 6
    # ignoring everything leaves nothing to score
    assert math.isnan(dice(a, b, ignore=np.ones_like(a)))


def test_pixel_metric_errors() -> None:
    a = np.zeros((3, 3), dtype=bool)
    with pytest.raises(
        ValueError, match=r"a and b must have the same shape; got \(3, 3\) and \(3, 4\)"
    ):
        dice(a, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match=r"b must be binary \(0/1, 0/255 or bool\); got 3 distinct values"):
        dice(a, np.array([[0, 1, 2]] * 3))
    with pytest.raises(
        ValueError, match=r"ignore must have the same shape as the masks \(3, 3\); got \(2, 2\)"
    ):
        iou(a, a, ignore=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match=r"b must be binary"):
        cohen_kappa(a, np.full((3, 3), 0.7))


# --------------------------------------------------------------------------------------------------
# ROI-F1 and object scores


def test_roi_f1_hand_computed() -> None:
    ref = np.zeros((6, 12), dtype=bool)
    ref[1:4, 1:4] = True  # 9 px
    ref[1:4, 7:10] = True  # 9 px
    cand = np.zeros_like(ref)
    cand[1:4, 1:3] = True  # IoU 6/9 with the first
    cand[1:4, 9:11] = True  # IoU 3/15 with the second
    assert roi_f1(ref, cand) == 2 * 1 / (2 + 2)
    s = object_scores(ref, cand)
    assert s == pytest.approx(
        {
            "n_reference": 2,
            "n_candidate": 2,
            "tp": 1,
            "fp": 1,
            "fn": 1,
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "mean_matched_iou": 6 / 9,
        }
    )
    assert isinstance(s["tp"], int) and isinstance(s["f1"], float)


def test_roi_f1_nan_for_no_objects_and_zero_for_one_empty() -> None:
    z = np.zeros((5, 5), dtype=bool)
    one = z.copy()
    one[1:3, 1:3] = True
    assert math.isnan(roi_f1(z, z))
    assert roi_f1(one, z) == 0.0 and roi_f1(z, one) == 0.0
    s = object_scores(z, z)
    assert math.isnan(s["f1"]) and math.isnan(s["precision"]) and math.isnan(s["mean_matched_iou"])
    # all objects below min_size: nothing left to score
    assert math.isnan(roi_f1(one, one, min_size=5))


def test_roi_f1_threshold_is_strict() -> None:
    ref = spans((0, 10), width=20)
    cand = spans((0, 5), width=20)  # IoU exactly 0.5
    assert roi_f1(ref, cand) == 0.0
    cand6 = spans((0, 6), width=20)  # IoU 0.6
    assert roi_f1(ref, cand6) == 1.0
    assert roi_f1(ref, cand6, iou_threshold=0.6) == 0.0


def test_roi_f1_hungarian_not_greedy() -> None:
    # reference B = cols 0..43, A = 45..108; candidate X = 0..99, Y = 101..108 (objects separated
    # by one background column). IoU(A,X) = 55/109 > 0.5, IoU(A,Y) = 0.125, IoU(B,X) = 0.44:
    # the total-IoU optimum pairs A-Y and B-X, so no match survives; greedy would give F1 = 0.5.
    ref = spans((0, 44), (45, 109))
    cand = spans((0, 100), (101, 109))
    assert roi_f1(ref, cand) == 0.0
    assert object_scores(ref, cand)["n_reference"] == 2
    # and the score is symmetric
    assert roi_f1(cand, ref) == 0.0


def test_roi_f1_uses_8_connectivity() -> None:
    ref = np.zeros((4, 4), dtype=bool)
    ref[0, 0] = ref[1, 1] = True  # diagonal neighbours: one object with 8-connectivity
    cand = np.zeros_like(ref)
    cand[0, 0] = cand[1, 1] = cand[0, 1] = True
    s = object_scores(ref, cand)
    assert s["n_reference"] == 1 and s["n_candidate"] == 1
    assert s["f1"] == 1.0  # IoU 2/3
    assert count_objects(ref) == 1


def test_roi_f1_min_size() -> None:
    ref = spans((0, 40), (50, 79))  # areas 40 and 29
    cand = spans((0, 40))
    assert roi_f1(ref, cand) == 2 * 1 / 3
    assert roi_f1(ref, cand, min_size=30) == 1.0  # the 29-px object is dropped
    assert object_scores(ref, cand, min_size=30)["n_reference"] == 1
    assert count_objects(ref, min_size=29) == 2 and count_objects(ref, min_size=30) == 1


def test_roi_f1_ignore_zeroed_before_labelling() -> None:
    ref = spans((0, 21), width=40)  # one object of 21 px
    cand = spans((0, 10), (11, 21), width=40)  # two objects of 10 px
    ignore = spans((10, 11), width=40)
    assert roi_f1(ref, cand) == 2 * 0 / 3  # IoU 10/21 < 0.5 for both
    # with the middle pixel ignored the reference splits into two objects that match exactly
    assert roi_f1(ref, cand, ignore=ignore) == 1.0
    assert object_scores(ref, cand, ignore=ignore)["n_reference"] == 2
    # ignore can also push split objects below min_size
    assert math.isnan(roi_f1(ref, cand, ignore=ignore, min_size=11))
    # a false positive inside the ignore region does not count
    fp = cand | spans((30, 35), width=40)
    assert roi_f1(ref, fp, ignore=ignore | spans((29, 36), width=40)) == 1.0


def test_roi_f1_accepts_probabilities_and_0_255() -> None:
    ref = spans((0, 10), width=20)
    prob = np.where(ref, 0.9, 0.2)
    prob[0, 9] = 0.5  # not > 0.5: IoU 9/10
    assert roi_f1(ref.astype(np.uint8) * 255, prob) == 1.0
    assert object_scores(ref, prob)["mean_matched_iou"] == 0.9


def test_roi_f1_symmetric_and_consistent_with_scores() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = blobs(rng)
        b = np.roll(a, 1, axis=int(rng.integers(0, 2))) ^ (rng.random(a.shape) < 0.02)
        f = roi_f1(a, b, min_size=5)
        assert 0 < f < 1
        assert f == pytest.approx(roi_f1(b, a, min_size=5), abs=1e-15)
        s = object_scores(a, b, min_size=5)
        assert s["f1"] == f
        assert s["tp"] + s["fn"] == s["n_reference"] and s["tp"] + s["fp"] == s["n_candidate"]
        assert s["f1"] == pytest.approx(
            2 * s["precision"] * s["recall"] / (s["precision"] + s["recall"])
        )


def test_roi_f1_errors() -> None:
    a = np.zeros((3, 3), dtype=bool)
    with pytest.raises(ValueError, match=r"reference and candidate must have the same shape"):
        roi_f1(a, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match=r"candidate must be a 2-D \(Y, X\) array"):
        roi_f1(a, np.zeros((2, 3, 3), bool))
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]; got -0.1"):
        roi_f1(a, a, iou_threshold=-0.1)
    with pytest.raises(ValueError, match=r"min_size must be a non-negative integer; got -3"):
        object_scores(a, a, min_size=-3)


def test_roi_f1_speed_1024_400_objects() -> None:
    rng = np.random.default_rng(0)
    ref = np.zeros((1024, 1024), dtype=bool)
    yy, xx = np.mgrid[-6:7, -6:7]
    disk = yy**2 + xx**2 <= 30
    for y, x in rng.integers(10, 1014, size=(450, 2)):
        ref[y - 6 : y + 7, x - 6 : x + 7] |= disk
    cand = np.roll(ref, 1, axis=0) ^ (rng.random(ref.shape) < 0.002)
    assert count_objects(ref, min_size=30) > 300
    assert roi_f1(ref, cand, min_size=30) > 0.8  # timings: tests/benchmarks/bench_objects.py


# --------------------------------------------------------------------------------------------------
# average precision


def test_average_precision_hand_computed() -> None:
    ref = np.zeros((6, 12), dtype=bool)
    ref[1:4, 1:4] = True
    ref[1:4, 7:10] = True
    cand = np.zeros_like(ref)
    cand[1:4, 1:3] = True  # IoU 0.667
    cand[1:4, 7:10] = True  # IoU 1
    mean_ap, ap = average_precision(ref, cand, thresholds=[0.5, 0.6, 0.7, 1.0])
    # TP / (TP + FP + FN): 2/2, 2/2, 1/3, 0/4
    np.testing.assert_allclose(ap, [1.0, 1.0, 1 / 3, 0.0])
    assert mean_ap == pytest.approx((2 + 1 / 3) / 4)
    assert ap.dtype == np.float64 and ap.shape == (4,)


def test_average_precision_default_thresholds_and_f1_relation() -> None:
    assert AP_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    rng = np.random.default_rng(0)
    a, b = blobs(rng), blobs(rng)
    b = np.roll(a, 1, axis=1) | b & np.roll(a, 2, axis=0)
    mean_ap, ap = average_precision(a, b)
    assert ap.shape == (10,)
    assert np.all(np.diff(ap) <= 0)  # monotone in the threshold
    assert mean_ap == pytest.approx(ap.mean())
    f1 = roi_f1(a, b)
    assert f1 == pytest.approx(2 * ap[0] / (1 + ap[0]))
    # scalar threshold
    m, one = average_precision(a, b, thresholds=0.5)
    assert one.shape == (1,) and m == ap[0]


def test_average_precision_empty_and_errors() -> None:
    z = np.zeros((4, 4), dtype=bool)
    mean_ap, ap = average_precision(z, z)
    assert math.isnan(mean_ap) and ap.shape == (10,) and np.isnan(ap).all()
    one = z.copy()
    one[0, 0] = True
    mean_ap, ap = average_precision(one, z)
    assert mean_ap == 0.0 and (ap == 0).all()
    with pytest.raises(ValueError, match=r"thresholds must lie in \[0, 1\]; got \[0.5, 1.5\]"):
        average_precision(z, z, thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match=r"thresholds must be a non-empty 1-D sequence; got shape \(0,\)"):
        average_precision(z, z, thresholds=[])


# --------------------------------------------------------------------------------------------------
# kappa


def test_cohen_kappa_textbook() -> None:
    # Wikipedia "Cohen's kappa", example 1: 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15;
    # p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15, dtype=bool)[None]
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15, dtype=bool)[None]
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-15)
    assert cohen_kappa(b, a) == pytest.approx(0.4, abs=1e-15)


def test_cohen_kappa_general_formula_random() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((40, 50)) < 0.3
    b = a ^ (rng.random((40, 50)) < 0.2)
    # confusion table formula
    n = a.size
    table = np.array([[np.sum(~a & ~b), np.sum(~a & b)], [np.sum(a & ~b), np.sum(a & b)]]) / n
    po = np.trace(table)
    pe = float(table.sum(1) @ table.sum(0))
    assert cohen_kappa(a, b) == pytest.approx((po - pe) / (1 - pe), rel=1e-12)


def test_cohen_kappa_edge_cases() -> None:
    a = spans((0, 5), width=10)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa(a, ~a) == -1.0
    z = np.zeros((2, 2), dtype=bool)
    assert math.isnan(cohen_kappa(z, z))
    assert math.isnan(cohen_kappa(~z, ~z))
    assert cohen_kappa(z, ~z) == 0.0  # p_o = 0, p_e = 0
    # ignore: the disagreeing pixels are left out
    b = a.copy()
    b[0, 9] = True
    assert cohen_kappa(a, b) < 1.0
    assert cohen_kappa(a, b, ignore=spans((9, 10), width=10)) == 1.0
    assert math.isnan(cohen_kappa(a, b, ignore=np.ones_like(a)))


def test_fleiss_kappa_textbook_table() -> None:
    # Fleiss (1971) as worked in Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories;
    # P̄ = 0.378, P̄_e = 0.213, kappa = 0.210
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert counts.sum(0).tolist() == [20, 28, 39, 21, 32]  # the worked example's column totals
    p_j = counts.sum(0) / 140
    p_bar = ((counts * (counts - 1)).sum(1) / (14 * 13)).mean()
    p_e = (p_j**2).sum()
    assert round(p_bar, 3) == 0.378 and round(p_e, 3) == 0.213
    k = fleiss_kappa_from_counts(counts)
    assert k == pytest.approx((p_bar - p_e) / (1 - p_e), rel=1e-12)
    assert round(k, 3) == 0.210


def test_fleiss_kappa_binary_masks_hand_computed() -> None:
    # 3 raters, 4 pixels; votes per pixel 3, 0, 2, 1
    masks = np.array(
        [
            [[1, 0, 1, 1]],
            [[1, 0, 1, 0]],
            [[1, 0, 0, 0]],
        ],
        dtype=bool,
    )
    # P_i = (k1(k1-1) + k0(k0-1)) / 6 -> 1, 1, 1/3, 1/3; P̄ = 2/3
    # p1 = 6/12 = 0.5, P_e = 0.5; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert fleiss_kappa(masks) == pytest.approx(1 / 3, rel=1e-12)
    assert fleiss_kappa(masks.astype(np.uint8) * 255) == pytest.approx(1 / 3, rel=1e-12)
    # same as the general table form
    votes = masks.sum(0).ravel()
    table = np.stack([3 - votes, votes], axis=1)
    assert fleiss_kappa(masks) == pytest.approx(fleiss_kappa_from_counts(table), rel=1e-12)
    # ignore the two split pixels: perfect agreement
    assert fleiss_kappa(masks, ignore=np.array([[0, 0, 1, 1]], bool)) == 1.0


def test_fleiss_kappa_two_raters_is_scotts_pi() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((30, 30)) < 0.4
    b = a ^ (rng.random((30, 30)) < 0.25)
    po = np.mean(a == b)
    p = (a.mean() + b.mean()) / 2
    pe = p**2 + (1 - p) ** 2
    assert fleiss_kappa(np.stack([a, b])) == pytest.approx((po - pe) / (1 - pe), rel=1e-12)
    assert fleiss_kappa([a, b]) == fleiss_kappa(np.stack([a, b]))


def test_fleiss_kappa_edge_cases_and_errors() -> None:
    z = np.zeros((3, 4, 4), dtype=bool)
    assert math.isnan(fleiss_kappa(z))
    assert math.isnan(fleiss_kappa(~z))
    m = z.copy()
    m[:, 0, 0] = True
    assert fleiss_kappa(m) == 1.0
    with pytest.raises(ValueError, match=r"masks must hold at least 2 experts; got 1"):
        fleiss_kappa(z[:1])
    with pytest.raises(ValueError, match=r"masks must be \(n_experts, Y, X\)"):
        fleiss_kappa(z[0])
    with pytest.raises(ValueError, match=r"same number \(>= 2\) of raters"):
        fleiss_kappa_from_counts([[1, 1], [2, 1]])
    with pytest.raises(ValueError, match=r"counts must hold non-negative integers"):
        fleiss_kappa_from_counts([[1.5, 0.5]])


# --------------------------------------------------------------------------------------------------
# ICC

# Shrout & Fleiss (1979), Psychological Bulletin 86:420, Table 2: 6 targets rated by 4 judges
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
)


@pytest.mark.parametrize(
    ("form", "published"),
    [
        ("ICC(1,1)", 0.17),
        ("ICC(2,1)", 0.29),
        ("ICC(3,1)", 0.71),
        ("ICC(1,k)", 0.44),
        ("ICC(2,k)", 0.62),
        ("ICC(3,k)", 0.91),
    ],
)
def test_icc_shrout_fleiss_table(form: str, published: float) -> None:
    assert round(icc(SHROUT_FLEISS, form=form), 2) == published


def test_icc_mean_squares_by_hand() -> None:
    # the paper's Table 3: BMS = 11.24, WMS = 6.26, JMS = 32.49, EMS = 1.02 (n = 6, k = 4)
    x = SHROUT_FLEISS.astype(float)
    n, k = x.shape
    g = x.mean()
    bms = k * ((x.mean(1) - g) ** 2).sum() / (n - 1)
    jms = n * ((x.mean(0) - g) ** 2).sum() / (k - 1)
    wms = ((x - x.mean(1, keepdims=True)) ** 2).sum() / (n * (k - 1))
    ems = (((x - g) ** 2).sum() - bms * (n - 1) - jms * (k - 1)) / ((n - 1) * (k - 1))
    assert [round(v, 2) for v in (bms, wms, jms, ems)] == [11.24, 6.26, 32.49, 1.02]
    assert icc(x, form="ICC(1,1)") == pytest.approx((bms - wms) / (bms + (k - 1) * wms))
    assert icc(x, form="ICC(2,1)") == pytest.approx(
        (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    )
    assert icc(x, form="icc(3, 1)") == pytest.approx((bms - ems) / (bms + (k - 1) * ems))
    assert icc(x) == icc(x, form="ICC(2,1)")


def test_icc_edge_cases_and_errors() -> None:
    assert math.isnan(icc(np.ones((4, 3))))
    perfect = np.repeat(np.arange(5.0)[:, None], 3, axis=1)
    assert icc(perfect, form="ICC(1,1)") == pytest.approx(1.0)
    assert icc(perfect, form="ICC(2,1)") == pytest.approx(1.0)
    # a constant offset between raters: consistency 1, absolute agreement < 1
    shifted = perfect + np.array([0.0, 1.0, 2.0])
    assert icc(shifted, form="ICC(3,1)") == pytest.approx(1.0)
    assert icc(shifted, form="ICC(2,1)") < 1.0
    with pytest.raises(ValueError, match=r"form must be one of .*; got 'ICC\(4,1\)'"):
        icc(perfect, form="ICC(4,1)")
    with pytest.raises(
        ValueError, match=r"ratings must be a \(n_subjects, n_raters\) table .*got shape \(5,\)"
    ):
        icc(np.arange(5.0))
    with pytest.raises(ValueError, match=r"ratings must not contain NaN"):
        icc(np.array([[1.0, np.nan], [2.0, 3.0]]))


# --------------------------------------------------------------------------------------------------
# pairwise matrices and counts


def test_pairwise_matrix_pixel_metrics_hand_computed() -> None:
    m = np.array([[[1, 1, 0, 0]], [[0, 1, 1, 0]], [[0, 0, 0, 0]]], dtype=np.uint8)
    d = pairwise_matrix(m, "dice")
    np.testing.assert_array_equal(d, [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, np.nan]])
    j = pairwise_matrix(m, "iou")
    np.testing.assert_allclose(j, [[1.0, 1 / 3, 0.0], [1 / 3, 1.0, 0.0], [0.0, 0.0, np.nan]])
    k = pairwise_matrix(m, "kappa")
    assert k[0, 1] == cohen_kappa(m[0], m[1]) == 0.0
    assert k[0, 0] == 1.0 and math.isnan(k[2, 2])


def test_pairwise_matrix_agrees_with_single_functions() -> None:
    rng = np.random.default_rng(0)
    masks = np.stack([blobs(rng, shape=(64, 64)) for _ in range(4)])
    ignore = np.zeros((64, 64), dtype=bool)
    ignore[:10] = True
    funcs = {
        "dice": lambda a, b: dice(a, b, ignore=ignore),
        "iou": lambda a, b: iou(a, b, ignore=ignore),
        "kappa": lambda a, b: cohen_kappa(a, b, ignore=ignore),
        "roi_f1": lambda a, b: roi_f1(a, b, min_size=4, ignore=ignore),
    }
    for name, f in funcs.items():
        mat = pairwise_matrix(masks, name, min_size=4, ignore=ignore)
        assert mat.shape == (4, 4)
        np.testing.assert_array_equal(mat, mat.T)
        np.testing.assert_array_equal(np.diag(mat), 1.0)
        for i in range(4):
            for j in range(4):
                if i != j:
                    assert mat[i, j] == pytest.approx(f(masks[i], masks[j]), rel=1e-12)
    # min_size matters for roi_f1 only
    np.testing.assert_array_equal(
        pairwise_matrix(masks, "dice", min_size=50), pairwise_matrix(masks, "dice")
    )


def test_pairwise_matrix_roi_f1_diagonal_nan_without_objects() -> None:
    m = np.zeros((2, 5, 5), dtype=bool)
    m[0, 1:3, 1:3] = True
    mat = pairwise_matrix(m, "roi_f1")
    assert mat[0, 0] == 1.0 and math.isnan(mat[1, 1]) and mat[0, 1] == 0.0
    assert math.isnan(pairwise_matrix(m, "roi_f1", min_size=5)[0, 0])


def test_pairwise_matrix_errors() -> None:
    m = np.zeros((2, 3, 3), dtype=bool)
    with pytest.raises(
        ValueError, match=r"metric must be one of \('dice', 'iou', 'roi_f1', 'kappa'\); got 'f1'"
    ):
        pairwise_matrix(m, "f1")
    with pytest.raises(ValueError, match=r"masks must be \(n_experts, Y, X\)"):
        pairwise_matrix(m[0])
    with pytest.raises(ValueError, match=r"ignore must have the same shape as the masks \(3, 3\)"):
        pairwise_matrix(m, ignore=np.zeros((3, 4), bool))


def test_count_objects() -> None:
    m = np.zeros((8, 8), dtype=np.uint8)
    m[0:2, 0:2] = 255
    m[5:8, 5:8] = 255
    m[3, 0] = 255
    assert count_objects(m) == 3
    assert count_objects(m, min_size=4) == 2
    assert count_objects(m, min_size=5) == 1
    ignore = np.zeros((8, 8), dtype=bool)
    ignore[5:8, 5:8] = True
    assert count_objects(m, ignore=ignore) == 2
    assert count_objects(np.zeros((3, 3))) == 0


def test_sensitivity_specificity_by_hand_and_with_ignore():
    ref = np.array([[1, 1, 1, 0, 0, 0, 0, 0]], bool)
    cand = np.array([[1, 1, 0, 1, 0, 0, 0, 0]], bool)
    sens, spec = sensitivity_specificity(ref, cand)
    assert (sens, spec) == (pytest.approx(2 / 3), pytest.approx(4 / 5))  # TP 2, FN 1, FP 1, TN 4
    ign = np.array([[0, 0, 1, 1, 0, 0, 0, 0]], bool)  # the missed and the extra pixel left out
    assert sensitivity_specificity(ref, cand, ignore=ign) == (1.0, 1.0)
    s, p = sensitivity_specificity(np.zeros((2, 2)), np.ones((2, 2)))
    assert math.isnan(s) and p == 0.0
    with pytest.raises(ValueError, match="shape"):
        sensitivity_specificity(np.zeros((2, 2)), np.zeros((2, 3)))
