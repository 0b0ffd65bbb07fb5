"""Ensemble uncertainty: hand-computed values, decomposition, absolute scale, p = 0/1, QA scores, ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fiji_consensus import uncertainty as U


def H(p):
    """Binary entropy in bits, by hand."""
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_two_members_that_disagree_by_hand():
    s = U.ensemble_statistics(np.array([[[0.9]], [[0.1]]]))
    assert s["mean"][0, 0] == pytest.approx(0.5)
    assert s["std"][0, 0] == pytest.approx(0.4)
    assert s["entropy"][0, 0] == pytest.approx(1.0)
    assert s["expected_entropy"][0, 0] == pytest.approx(H(0.9))  # 0.46900
    assert s["expected_entropy"][0, 0] == pytest.approx(0.468996, abs=1e-6)
    assert s["mutual_information"][0, 0] == pytest.approx(1 - 0.468996, abs=1e-6)
    assert s["deepflash2"][0, 0] == pytest.approx(1.0)


def test_agreeing_members_have_no_epistemic_uncertainty():
    stack = np.full((3, 2, 2), 0.2)
    s = U.ensemble_statistics(stack)
    np.testing.assert_allclose(s["std"], 0.0, atol=1e-12)
    np.testing.assert_allclose(s["mutual_information"], 0.0, atol=1e-12)
    np.testing.assert_allclose(s["entropy"], H(0.2))  # 0.72193
    np.testing.assert_allclose(s["expected_entropy"], H(0.2))
    np.testing.assert_allclose(s["deepflash2"], 4 * 0.2 * 0.8)


def test_three_samples_by_hand():
    p = [0.2, 0.5, 0.8]
    s = U.ensemble_statistics(np.array(p)[:, None, None])
    m = sum(p) / 3
    assert s["mean"][0, 0] == pytest.approx(m)
    assert s["std"][0, 0] == pytest.approx(math.sqrt(sum((q - m) ** 2 for q in p) / 3))
    assert s["entropy"][0, 0] == pytest.approx(H(m))
    assert s["expected_entropy"][0, 0] == pytest.approx(sum(H(q) for q in p) / 3)
    assert s["mutual_information"][0, 0] == pytest.approx(H(m) - sum(H(q) for q in p) / 3)


def test_exact_zero_and_one_are_safe():
    """p = 0/1 needs 0 log 0 = 0; pytest turns any RuntimeWarning into an error."""
    stack = np.array([[[0.0, 1.0, 0.0]], [[1.0, 1.0, 0.0]]], dtype=np.float32)
    s = U.ensemble_statistics(stack)
    for k, v in s.items():
        assert np.all(np.isfinite(v)), k
        assert v.dtype == np.float32, k
    np.testing.assert_array_equal(s["entropy"][0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(s["expected_entropy"][0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(s["mutual_information"][0], [1.0, 0.0, 0.0])  # maximal disagreement
    assert not np.signbit(s["entropy"]).any()
    assert U.binary_entropy([0.0, 1.0]).tolist() == [0.0, 0.0]


def test_decomposition_and_bounds_on_random_stacks():
    rng = np.random.default_rng(0)
    stack = rng.beta(0.5, 0.5, size=(7, 40, 30))
    s = U.ensemble_statistics(stack)
    np.testing.assert_allclose(s["entropy"], s["expected_entropy"] + s["mutual_information"], atol=1e-12)
    assert s["mutual_information"].min() >= 0
    for k, top in U.MEASURE_RANGE.items():
        assert 0 <= s[k].min() and s[k].max() <= top + 1e-12, k
    # the separate functions agree with the one-pass result
    np.testing.assert_allclose(U.mean_probability(stack), s["mean"])
    np.testing.assert_allclose(U.member_std(stack), s["std"])
    np.testing.assert_allclose(U.predictive_entropy(stack), s["entropy"])
    np.testing.assert_allclose(U.expected_entropy(stack), s["expected_entropy"])
    np.testing.assert_allclose(U.mutual_information(stack), s["mutual_information"])
    np.testing.assert_allclose(U.deepflash2_uncertainty(stack), s["deepflash2"])
    np.testing.assert_allclose(U.uncertainty_map(stack, "std"), s["std"])


def test_absolute_scale_never_normalised_per_image():
    """A crop's maps are the crop of the image's maps, and a confident image keeps small values."""
    rng = np.random.default_rng(1)
    stack = rng.uniform(0.0, 0.05, size=(4, 20, 20))  # confident background everywhere
    full = U.ensemble_statistics(stack)
    crop = U.ensemble_statistics(stack[:, 5:9, 3:7])
    for k in full:
        np.testing.assert_allclose(crop[k], full[k][5:9, 3:7])
    assert full["entropy"].max() < 0.3 and full["deepflash2"].max() < 0.2


def test_qa_score_and_review_order():
    u = np.array([[0.2, 0.8], [0.0, 1.0]])
    p = np.array([[0.9, 0.6], [0.1, 0.5]])
    assert U.qa_score(u, p) == pytest.approx(0.5)  # 0.5 itself is not foreground (strict)
    assert U.qa_score(u, p, threshold=0.05) == pytest.approx((0.2 + 0.8 + 0.0 + 1.0) / 4)
    assert math.isnan(U.qa_score(u, np.zeros_like(p)))
    assert U.review_order({"a": 0.1, "b": float("nan"), "c": 0.3, "d": 0.3}) == ["c", "d", "a", "b"]
    assert U.review_order([("x", None), ("y", 0.0)]) == ["y", "x"]


@pytest.mark.parametrize(
    "bad,err,match",
    [
        (np.zeros((4, 4)), ValueError, r"\(M, Y, X\).*got an array of shape \(4, 4\)"),
        (np.full((2, 3, 3), 1.5), ValueError, r"\[0, 1\]; got values in \[1.5, 1.5\]"),
        (np.full((2, 3, 3), np.nan), ValueError, "NaN"),
        (np.zeros((0, 3, 3)), ValueError, "at least one"),
        (np.array([[["a"]]]), TypeError, "probabilities"),
    ],
)
def test_bad_stacks_say_what_they_got(bad, err, match):
    with pytest.raises(err, match=match):
        U.ensemble_statistics(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="measure must be one of"):
        U.uncertainty_map(np.zeros((1, 2, 2)), "variance")
    with pytest.raises(ValueError, match="same shape"):
        U.qa_score(np.zeros((2, 2)), np.zeros((2, 3)))
