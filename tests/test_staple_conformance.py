"""STAPLE conformance: est_GT pixel for pixel on the shared Segebarth data, and agreement with SimpleITK.

``labels/est_GT`` of Segebarth et al. (2020) is ``SimpleITK.STAPLE(expert_masks, 1.0) > 0.5``; our
:func:`fiji_consensus.consensus.staple` must reproduce it on every image of every lab, and its
probabilities, sensitivities and specificities must agree with ``SimpleITK.STAPLEImageFilter`` to 1e-4.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from fiji_consensus.consensus import staple

sitk = pytest.importorskip("SimpleITK")
iio = pytest.importorskip("imageio.v3")

LABS = {"lab-wue1": 36, "lab-inns1": 5, "lab-mue": 5}
ATOL = 1e-4


def _read_mask(path: Path) -> np.ndarray:
    a = iio.imread(path)
    return (a[..., 0] if a.ndim == 3 else a) > 0  # experts: RGB (or L) 0/255, est_GT: L 0/255


@functools.lru_cache(maxsize=None)
def _lab_images(root: Path, lab: str) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """(name, (R, Y, X) expert masks, est_GT) for every image of a lab; read once per test session."""
    experts = sorted(p for p in (root / lab / "labels").iterdir() if p.name.startswith("expert_"))
    return tuple(
        (f.stem, np.stack([_read_mask(e / f.name) for e in experts]), _read_mask(f))
        for f in sorted((root / lab / "labels" / "est_GT").glob("*.png"))
    )


def _sitk_staple(stack: np.ndarray, confidence_weight: float = 1.0):
    flt = sitk.STAPLEImageFilter()
    flt.SetForegroundValue(1.0)
    flt.SetConfidenceWeight(confidence_weight)
    out = flt.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in stack])
    return (sitk.GetArrayFromImage(out), np.array(flt.GetSensitivity()), np.array(flt.GetSpecificity()),
            flt.GetElapsedIterations())


def _assert_matches_sitk(stack: np.ndarray, res, confidence_weight: float = 1.0) -> None:
    prob, sens, spec, elapsed = _sitk_staple(stack, confidence_weight)
    np.testing.assert_allclose(res.probability, prob, rtol=0, atol=ATOL)
    np.testing.assert_allclose(res.sensitivity, sens, rtol=0, atol=ATOL)
    np.testing.assert_allclose(res.specificity, spec, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(res.mask(), prob > 0.5)
    assert res.converged and res.n_iter == elapsed + 1  # ITK reports the index of its last iteration


@pytest.mark.parametrize("lab", list(LABS))
def test_est_gt_pixel_for_pixel(shared_data: Path, lab: str) -> None:
    """Every image of the lab: staple(masks).mask() == est_GT exactly; SimpleITK on 3 images per lab."""
    n, mismatched = 0, []
    for i, (name, stack, gt) in enumerate(_lab_images(shared_data, lab)):
        res = staple(stack)
        n += 1
        diff = int((res.mask() != gt).sum())
        if diff:
            mismatched.append((name, diff))
        assert res.converged and 0 < res.prior < 1
        assert np.all(res.specificity >= 0.9) and np.all((res.sensitivity > 0) & (res.sensitivity <= 1))
        if i < 3:
            _assert_matches_sitk(stack, res)
    assert n == LABS[lab], f"expected {LABS[lab]} images in {lab}, found {n}"
    assert not mismatched, f"{len(mismatched)}/{n} images differ from est_GT (name, pixels): {mismatched}"


def test_wue1_sensitivity_matches_published_profile(shared_data: Path) -> None:
    """Mean per-expert sensitivity on lab-wue1 is about [0.38, 0.82, 0.79, 0.74, 0.74] (anchors.md)."""
    sens = np.mean([staple(stack).sensitivity for _, stack, _ in _lab_images(shared_data, "lab-wue1")],
                   axis=0)
    np.testing.assert_allclose(sens, [0.38, 0.82, 0.79, 0.74, 0.74], atol=0.03)


# ---- synthetic edge cases against SimpleITK --------------------------------------------------------


def _blobs(rng: np.random.Generator, shape=(48, 64), n=6) -> np.ndarray:
    truth = np.zeros(shape, bool)
    for _ in range(n):
        y, x = rng.integers(4, shape[0] - 8), rng.integers(4, shape[1] - 8)
        truth[y:y + rng.integers(3, 8), x:x + rng.integers(3, 8)] = True
    return truth


def _noisy_experts(rng: np.random.Generator, truth: np.ndarray, flips=(0.02, 0.05, 0.1, 0.03)):
    return np.stack([truth ^ (rng.random(truth.shape) < f) for f in flips])


def test_matches_sitk_noisy_synthetic() -> None:
    rng = np.random.default_rng(0)
    stack = _noisy_experts(rng, _blobs(rng))
    _assert_matches_sitk(stack, staple(stack))


def test_matches_sitk_all_experts_agree() -> None:
    truth = _blobs(np.random.default_rng(1))
    stack = np.stack([truth] * 3)
    res = staple(stack)
    _assert_matches_sitk(stack, res)
    np.testing.assert_array_equal(res.mask(), truth)
    np.testing.assert_array_equal(res.sensitivity, 1.0)
    np.testing.assert_array_equal(res.specificity, 1.0)


def test_matches_sitk_one_expert_empty() -> None:
    rng = np.random.default_rng(2)
    stack = _noisy_experts(rng, _blobs(rng), flips=(0.02, 0.05, 0.0))
    stack[2] = False
    res = staple(stack)
    _assert_matches_sitk(stack, res)
    assert res.sensitivity[2] == 0.0 and res.specificity[2] == 1.0


def test_given_prior_matches_sitk_confidence_weight() -> None:
    """A given prior g equals ITK's ConfidenceWeight g / mean(votes / R)."""
    rng = np.random.default_rng(3)
    stack = _noisy_experts(rng, _blobs(rng))
    g = 0.3
    res = staple(stack, prior=g)
    assert res.prior == g
    _assert_matches_sitk(stack, res, confidence_weight=g / stack.mean())
    res_cw = staple(stack, confidence_weight=0.7)
    _assert_matches_sitk(stack, res_cw, confidence_weight=0.7)


def test_all_empty_is_zero_where_sitk_gives_nan() -> None:
    """Documented deviation: ITK divides 0/0 (NaN everywhere); we return probability 0."""
    stack = np.zeros((3, 16, 16), bool)
    prob, _, _, _ = _sitk_staple(stack)
    assert np.all(np.isnan(prob))
    res = staple(stack)
    np.testing.assert_array_equal(res.probability, 0.0)
    assert not res.mask().any()
    assert np.all(np.isnan(res.sensitivity)) and np.all(res.specificity == 1.0)
    assert res.prior == 0.0 and res.converged
