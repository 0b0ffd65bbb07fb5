"""Training data: normalisation, sampling (foreground-weighted, never ignored), augmentation, loss masking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import imageio.v3 as iio  # noqa: E402

from fiji_consensus.nn.data import (  # noqa: E402
    AugmentConfig,
    PatchSampler,
    TrainingImage,
    border_weights,
    pad_to_multiple,
    percentile_normalize,
    sampling_weights,
)
from fiji_consensus.nn.train import masked_bce_dice_loss  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "fiji_consensus" / "data" / "segebarth2020_wue1"
NO_AUG = AugmentConfig(flip=False, rotate90=False, affine_p=0.0, gamma=0.0, contrast=0.0, brightness=0.0)




@pytest.fixture(scope="module")
def crop():
    win = np.s_[320:448, 384:512]  # a 128 px window of image 0001 with 15 objects
    img = iio.imread(SAMPLE / "images" / "0001.png")[win]
    tgt = (iio.imread(SAMPLE / "labels" / "est_GT" / "0001_cFOS.png")[win] > 0).astype(np.float32)
    assert 0.001 < tgt.mean() < 0.3  # the crop holds some objects
    return img, tgt


def _prepared(img, tgt, ignore=None, **kw):
    x, _ = percentile_normalize(img)
    valid = np.ones(img.shape, np.float32) if ignore is None else (~ignore).astype(np.float32)
    return TrainingImage.prepare("a", x, tgt * valid, valid, **kw)


def test_percentile_normalize(crop):
    img, _ = crop
    x, (lo, hi) = percentile_normalize(img, low=1, high=99.8)
    assert x.dtype == np.float32 and x.shape == img.shape
    assert (lo, hi) == tuple(np.percentile(img.astype(float), [1, 99.8]))
    np.testing.assert_allclose(x, (img - lo) / (hi - lo + 1e-6), rtol=1e-6)
    with pytest.raises(ValueError, match="low < high"):
        percentile_normalize(img, low=50, high=10)


def test_pad_to_multiple():
    a = np.arange(30, dtype=float).reshape(5, 6)
    p, shape = pad_to_multiple(a, 4)
    assert p.shape == (8, 8) and shape == (5, 6)
    np.testing.assert_array_equal(p[:5, :6], a)
    q, _ = pad_to_multiple(np.ones((1, 3)), 8)  # smaller than the padding: falls back to symmetric
    assert q.shape == (8, 8)


def test_sampler_is_seeded_and_resumable(crop):
    img, tgt = crop
    im = _prepared(img, tgt)
    a = PatchSampler([im], patch_size=32, seed=3)
    b = PatchSampler([im], patch_size=32, seed=3)
    first = a.sample(4)
    np.testing.assert_array_equal(first["image"], b.sample(4)["image"])
    state = a.get_state()
    nxt = a.sample(4)
    c = PatchSampler([im], patch_size=32, seed=99)
    c.set_state(state)
    again = c.sample(4)
    for k in nxt:
        np.testing.assert_array_equal(nxt[k], again[k])
    assert not np.array_equal(first["image"], nxt["image"])


def test_sampling_favours_foreground(crop):
    img, tgt = crop
    im = _prepared(img, tgt, foreground=10.0, boundary=10.0)
    s = PatchSampler([im], patch_size=16, seed=0, augment=NO_AUG)
    centres = s.sample(400)["target"][:, 0, 8, 8]
    assert centres.mean() > 2 * tgt.mean()
    plain = PatchSampler([_prepared(img, tgt, foreground=0.0, boundary=0.0)], patch_size=16, seed=0, augment=NO_AUG)
    assert plain.sample(400)["target"][:, 0, 8, 8].mean() < centres.mean()


def test_ignored_pixels_never_sampled_as_targets(crop):
    img, tgt = crop
    ignore = np.zeros(tgt.shape, bool)
    ignore[:, :64] = True  # the left half, foreground included, is ignored
    assert tgt[:, :64].sum() > 0
    im = _prepared(img, tgt, ignore=ignore)
    s = PatchSampler([im], patch_size=32, seed=0)
    b = s.sample(64)
    assert np.all(b["target"] * b["valid"] <= 1)
    # no ignored foreground reaches the loss: every valid foreground pixel comes from the right half
    centres_valid = b["valid"][:, 0, 16, 16]
    assert np.all(centres_valid == 1)  # centres are never drawn from ignored pixels
    assert np.all(b["weight"][b["valid"] == 0] == 0)
    # without geometric augmentation, the valid mask of each patch is exactly the non-ignored part of its
    # window: an image whose value is each pixel's index tells where every patch pixel came from
    h, w = tgt.shape
    code = np.arange(h * w, dtype=np.float32).reshape(h, w)
    s2 = PatchSampler([TrainingImage.prepare("a", code, im.target, im.valid)], patch_size=32, seed=0, augment=NO_AUG)
    b2 = s2.sample(64)
    straddling = 0
    for img_p, valid_p in zip(b2["image"][:, 0], b2["valid"][:, 0]):
        cy, cx = divmod(int(img_p[16, 16]), w)  # the patch centre
        yy, xx = np.mgrid[cy - 16 : cy + 16, cx - 16 : cx + 16]
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.testing.assert_array_equal(img_p[inside], (yy * w + xx)[inside])  # the window, unmoved
        expected = inside & ~ignore[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        np.testing.assert_array_equal(valid_p, expected.astype(np.float32))
        straddling += bool(expected.any() and (inside & ~expected).any())
    assert straddling > 0  # some windows reach into the ignored half
    assert np.all(b2["target"][b2["valid"] == 0] == 0)


def test_fully_ignored_image_is_an_error(crop):
    img, tgt = crop
    im = _prepared(img, tgt, ignore=np.ones(tgt.shape, bool))
    with pytest.raises(ValueError, match="all are ignored"):
        PatchSampler([im], patch_size=16, seed=0)


def test_augmentation_keeps_image_and_target_aligned(crop):
    _, tgt = crop
    soft = np.clip(tgt * 0.8 + 0.1, 0, 1).astype(np.float32)  # image == target: any misalignment shows
    im = TrainingImage.prepare("a", soft.copy(), soft.copy(), np.ones_like(soft))
    aug = AugmentConfig(affine_p=1.0, gamma=0.0, contrast=0.0, brightness=0.0)
    b = PatchSampler([im], patch_size=32, seed=1, augment=aug).sample(16)
    v = b["valid"] > 0
    assert v.mean() > 0.5
    np.testing.assert_allclose(b["image"][v], b["target"][v], atol=1e-6)
    assert b["target"].min() >= 0 and b["target"].max() <= 1


def test_rot90_and_flip_are_exact(crop):
    img, tgt = crop
    im = _prepared(img, tgt)
    aug = AugmentConfig(affine_p=0.0, gamma=0.0, contrast=0.0, brightness=0.0)
    b = PatchSampler([im], patch_size=32, seed=2, augment=aug).sample(8)
    values = set(np.unique(im.image).tolist())
    assert set(np.unique(b["image"]).tolist()) <= values  # no interpolation
    assert set(np.unique(b["target"]).tolist()) <= {0.0, 1.0}


def test_intensity_augmentation_changes_only_the_image(crop):
    img, tgt = crop
    im = _prepared(img, tgt)
    geo = AugmentConfig(affine_p=0.0, gamma=0.0, contrast=0.0, brightness=0.0, noise=0.0)
    full = AugmentConfig(affine_p=0.0, gamma=0.3, contrast=0.2, brightness=0.1, noise=0.0)
    a = PatchSampler([im], patch_size=32, seed=5, augment=geo).sample(1)
    b = PatchSampler([im], patch_size=32, seed=5, augment=full).sample(1)
    np.testing.assert_array_equal(a["target"], b["target"])
    assert not np.array_equal(a["image"], b["image"])


def test_sampling_weights_zero_where_ignored(crop):
    _, tgt = crop
    valid = np.ones_like(tgt)
    valid[:10] = 0
    w = sampling_weights(tgt, valid, foreground=5, boundary=0)
    assert np.all(w[:10] == 0)
    assert np.all(w[10:][tgt[10:] > 0.5] == 6) and np.all(w[10:][tgt[10:] == 0] == 1)


def test_border_weights_highlight_gaps():
    t = np.zeros((40, 60), np.float32)
    t[10:20, 10:20] = 1
    t[10:20, 23:33] = 1  # 3-pixel gap
    w = border_weights(t, w0=10, sigma=3)
    assert w[15, 21] > 5  # in the gap
    assert w[35, 55] == pytest.approx(1.0, abs=1e-3)  # far away
    assert np.all(w[t > 0] == 1)
    np.testing.assert_array_equal(border_weights(t[:, :22], w0=10), 1)  # one object: no weighting


def test_loss_ignores_masked_pixels_exactly(crop):
    _, tgt = crop
    rng = np.random.default_rng(0)
    t = torch.from_numpy(tgt[None, None, :64, :64].copy())
    valid = torch.ones_like(t)
    valid[..., :, :20] = 0
    logits = torch.from_numpy(rng.normal(size=t.shape).astype(np.float32)).requires_grad_(True)
    w = torch.from_numpy(rng.uniform(1, 3, size=t.shape).astype(np.float32))
    loss = masked_bce_dice_loss(logits, t, valid, w)
    loss.backward()
    g = logits.grad
    assert torch.count_nonzero(g[valid == 0]) == 0
    assert torch.count_nonzero(g[valid == 1]) > 0
    # the targets (and logits) inside the ignore region do not matter at all
    t2 = t.clone()
    t2[valid == 0] = 1 - t2[valid == 0]
    l2 = logits.detach().clone()
    l2[valid == 0] = 50.0
    assert masked_bce_dice_loss(l2, t2, valid, w).item() == loss.item()


def test_loss_soft_targets_and_perfect_prediction():
    t = torch.zeros(1, 1, 8, 8)
    t[..., 2:5, 2:5] = 1
    v = torch.ones_like(t)
    good = masked_bce_dice_loss((t * 2 - 1) * 20, t, v)
    bad = masked_bce_dice_loss((1 - t * 2) * 20, t, v)
    assert good.item() < 1e-3 < bad.item()
    soft = torch.full_like(t, 0.3)  # soft labels are accepted; BCE is minimal at logit(0.3)
    lg = torch.zeros_like(t, requires_grad=True)
    masked_bce_dice_loss(lg, soft, v, dice_weight=0).backward()
    assert torch.all(lg.grad > 0)  # sigmoid(0) = 0.5 > 0.3: gradient pushes the logits down


def test_zoom_shrinks_objects_as_asked(crop):
    """zoom=(0.5, 0.5) shows every object at half its size: the foreground fraction of a patch drops ~4x."""
    _, tgt = crop
    big = np.tile(tgt, (4, 4))  # room to zoom out without leaving the image
    im = TrainingImage.prepare("a", big.copy(), big.copy(), np.ones_like(big), foreground=0.0, boundary=0.0)
    plain = AugmentConfig(flip=False, rotate90=False, affine_p=0.0, gamma=0.0, contrast=0.0, brightness=0.0)
    half = AugmentConfig(flip=False, rotate90=False, affine_p=0.0, gamma=0.0, contrast=0.0, brightness=0.0,
                         zoom=(0.5, 0.5))
    a = PatchSampler([im], patch_size=64, seed=3, augment=plain).sample(64)
    b = PatchSampler([im], patch_size=64, seed=3, augment=half).sample(64)
    # same fraction of foreground overall (a zoomed-out patch sees 4x the area) ...
    assert abs(b["target"].mean() - a["target"].mean()) < 0.3 * a["target"].mean()
    # ... but objects are smaller: the number of foreground pixels per connected object drops to about a quarter
    from scipy import ndimage as ndi

    def mean_area(t):
        areas = []
        for p in t[:, 0] > 0.5:
            lab, n = ndi.label(p)
            areas += list(np.bincount(lab.ravel())[1:])
        return np.mean(areas)

    ratio = mean_area(b["target"]) / mean_area(a["target"])
    assert 0.15 < ratio < 0.4, ratio
    v = b["valid"] > 0  # outside the image the image is mirrored and the target is 0 (excluded from the loss)
    np.testing.assert_allclose(b["image"][v], b["target"][v], atol=1e-6)  # image and target stay aligned


def test_blur_and_noise_change_only_the_image(crop):
    img, tgt = crop
    im = _prepared(img, tgt)
    geo = AugmentConfig(affine_p=0.0, gamma=0.0, contrast=0.0, brightness=0.0)
    aug = AugmentConfig(affine_p=0.0, gamma=0.0, contrast=0.0, brightness=0.0, blur=2.0, noise=0.1)
    a = PatchSampler([im], patch_size=32, seed=5, augment=geo).sample(1)  # later patches: other random draws
    b = PatchSampler([im], patch_size=32, seed=5, augment=aug).sample(1)
    np.testing.assert_array_equal(a["target"], b["target"])
    assert not np.array_equal(a["image"], b["image"])


def test_zoom_option_is_validated():
    from pydantic import ValidationError

    from fiji_consensus.config import AugmentOptions

    assert AugmentOptions(zoom=(0.5, 1.3)).zoom == (0.5, 1.3)
    with pytest.raises(ValidationError, match="zoom"):
        AugmentOptions(zoom=(1.3, 0.5))
