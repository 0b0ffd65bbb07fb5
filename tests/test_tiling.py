"""predict_tiled with plain callables: exactness against whole-image results, seams, sizes, batching, errors."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage as ndi

from fiji_consensus.tiling import blend_weights, predict_tiled, tile_grid

SAMPLE = Path(__file__).resolve().parents[1] / "fiji_consensus" / "data" / "segebarth2020_wue1" / "images"


@pytest.fixture(scope="module")
def crop():
    return iio.imread(SAMPLE / "0001.png")[300:397, 350:471]  # 97 x 121: odd sizes


def box_filter(r):
    """A local predictor: (2r+1)^2 mean per channel, 'valid' inside the window, edges kept as is."""

    def f(x):
        out = x.copy()
        if r:
            for n in range(x.shape[0]):
                for c in range(x.shape[1]):
                    out[n, c] = ndi.uniform_filter(x[n, c], size=2 * r + 1, mode="constant")
        return out

    return f


def whole(image, predictor, halo, mode="reflect"):
    """The whole-image reference: predictor on the image padded by ``halo``, halo cropped."""
    x = image[None] if image.ndim == 2 else image
    xp = np.pad(x.astype(np.float32), [(0, 0), (halo, halo), (halo, halo)], mode=mode)
    out = predictor(xp[None])[0]
    return out[:, halo : halo + x.shape[1], halo : halo + x.shape[2]]


@pytest.mark.parametrize("blending", ["cosine", "gaussian", "constant"])
@pytest.mark.parametrize("shape", [(97, 121), (1, 1), (5, 300), (64, 64), (13, 7)])
def test_identity_times_two_any_size(shape, blending):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65535, shape).astype(np.uint16)
    out = predict_tiled(img, lambda x: 2 * x, tile=48, halo=8, overlap=0.25, blending=blending)
    assert out.shape == (1, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 2.0 * img, rtol=1e-6)


@pytest.mark.parametrize("r,halo", [(3, 4), (4, 4), (2, 8)])
@pytest.mark.parametrize("overlap", [0.0, 0.3])
def test_local_filter_equals_whole_image(crop, r, halo, overlap):
    f = box_filter(r)
    out = predict_tiled(crop, f, tile=32, halo=halo, overlap=overlap, batch_size=3)
    ref = whole(crop, f, halo)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)


def test_halo_too_small_is_visible(crop):
    """The test above can fail: a filter that sees beyond the halo differs from the whole-image result."""
    f = box_filter(6)
    out = predict_tiled(crop, f, tile=32, halo=2, overlap=0.0)
    ref = whole(crop, f, 2)
    assert np.abs(out - ref).max() > 1.0


def test_multichannel_input_and_outputs(crop):
    img = np.stack([crop, 255 - crop]).astype(np.float32)

    def f(x):  # 3 outputs mixing channels
        return np.concatenate([x[:, :1] + x[:, 1:], x, x[:, :1] * 0.5], axis=1)

    out = predict_tiled(img, f, tile=40, halo=0, overlap=0.2)
    assert out.shape == (4, *crop.shape)
    np.testing.assert_allclose(out[0], 255.0, rtol=1e-6)
    np.testing.assert_allclose(out[1:3], img, rtol=1e-6)
    np.testing.assert_allclose(out[3], img[0] * 0.5, rtol=1e-6)


def test_three_dim_predictor_output_gives_2d(crop):
    out = predict_tiled(crop, lambda x: x[:, 0] + 1, tile=40, halo=4)
    assert out.shape == crop.shape
    np.testing.assert_allclose(out, crop + 1.0, rtol=1e-6)


def _max_jump(a):
    return max(np.abs(np.diff(a, axis=0)).max(), np.abs(np.diff(a, axis=1)).max())


def test_no_measurable_seams_with_a_non_local_predictor():
    """A predictor that adds a different constant per window: blending hides the windows, averaging does not."""
    img = np.zeros((150, 170), np.float32)

    def per_window(counter):
        def f(x):
            out = np.empty_like(x)
            for n in range(x.shape[0]):
                counter[0] += 1
                out[n] = (counter[0] * 7919) % 13  # a different offset (0..12) per window
            return out

        return f

    cosine = predict_tiled(img, per_window([0]), tile=64, halo=8, overlap=0.5, blending="cosine")[0]
    gauss = predict_tiled(img, per_window([0]), tile=64, halo=8, overlap=0.5, blending="gaussian")[0]
    hard = predict_tiled(img, per_window([0]), tile=64, halo=8, overlap=0.0, blending="constant")[0]
    assert _max_jump(hard) >= 5  # a seam of several units between windows
    # smooth: the step between two windows (up to 12) is spread over the ~24 shared pixels
    assert _max_jump(cosine) < 1.0
    # MONAI/deepflash2-style Gaussian weights (sigma = core / 8) blend over fewer pixels
    assert _max_jump(gauss) < 2.5


def test_cosine_ramps_are_a_partition_of_unity():
    for core, ov in [(40, 10), (33, 7), (16, 8)]:
        a = blend_weights(core, ov, "cosine", lead=False, trail=True)
        b = blend_weights(core, ov, "cosine", lead=True, trail=False)
        np.testing.assert_allclose(a[core - ov :] + b[:ov], 1.0, atol=1e-12)
        assert a[0] == 1.0 and b[-1] == 1.0  # no ramp at the image edge


def test_batching_and_window_sizes(crop):
    calls = []

    def f(x):
        calls.append(x.shape)
        assert x.dtype == np.float32 and x.flags.c_contiguous
        return x * 3

    ref = predict_tiled(crop, lambda x: x * 3, tile=32, halo=8, batch_size=1, multiple=8)
    out = predict_tiled(crop, f, tile=32, halo=8, batch_size=4, multiple=8)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    wy, cy, sy, ny = tile_grid(crop.shape[0], tile=32, halo=8, overlap=0.125, multiple=8)
    wx, cx, sx, nx = tile_grid(crop.shape[1], tile=32, halo=8, overlap=0.125, multiple=8)
    assert len(calls) == -(-(ny * nx) // 4)
    assert all(n <= 4 and h == wy and w == wx and h % 8 == 0 and w % 8 == 0 and h <= 32 for n, _, h, w in calls)


def test_small_image_runs_in_one_smaller_window():
    calls = []

    def f(x):
        calls.append(x.shape)
        return x

    img = np.ones((10, 12), np.uint8)
    out = predict_tiled(img, f, tile=256, halo=16, multiple=16)
    np.testing.assert_array_equal(out[0], 1.0)
    assert calls == [(1, 1, 48, 48)]  # 10 + 2 * 16 rounded up to 16, not 256


def test_tile_grid_covers_minimally():
    for multiple in (1, 4, 8):
        for halo in (0, 8, 24):
            for tile in (64, 100 // multiple * multiple, 128):
                for overlap in (0.0, 0.25, 0.5):
                    for length in (1, 7, 50, 63, 64, 65, 200, 513):
                        w, c, s, n = tile_grid(length, tile=tile, halo=halo, overlap=overlap, multiple=multiple)
                        assert w == c + 2 * halo <= tile and w % multiple == 0 and s % multiple == 0
                        assert (n - 1) * s + c >= length  # covered
                        assert 0 < s <= c
                        # minimal: one tile fewer with the largest core does not cover
                        cmax = (tile - 2 * halo) // multiple * multiple
                        smax = max(multiple, (cmax - int(round(overlap * cmax))) // multiple * multiple)
                        assert n == 1 or (n - 2) * smax + cmax < length


def test_memory_stays_bounded():
    """The predictor never sees more than batch_size windows of at most tile pixels."""
    seen = []

    def f(x):
        seen.append(x.nbytes)
        return x[:, :1]

    img = np.zeros((700, 650), np.uint8)
    predict_tiled(img, f, tile=128, halo=16, batch_size=2)
    assert max(seen) <= 2 * 128 * 128 * 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(tile=32, halo=16), "tile must be larger"),
        (dict(overlap=1.0), "overlap must be >= 0 and < 1"),
        (dict(batch_size=0), "batch_size"),
        (dict(blending="hann"), "blending"),
        (dict(tile=30, multiple=8), "tile must be a multiple"),
        (dict(halo=4, multiple=8), "halo must be a multiple"),
        (dict(tile=(32, 32, 32)), "tile must be an int or a pair"),
    ],
)
def test_bad_arguments_say_what_they_got(kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_tiled(np.zeros((40, 40)), lambda x: x, **kwargs)


def test_bad_inputs_and_outputs():
    with pytest.raises(ValueError, match=r"\(Y, X\) or \(C, Y, X\); got an array of shape \(2, 3, 4, 5\)"):
        predict_tiled(np.zeros((2, 3, 4, 5)), lambda x: x)
    with pytest.raises(TypeError, match="callable"):
        predict_tiled(np.zeros((4, 4)), "model")
    with pytest.raises(ValueError, match=r"must return \(N, K, h, w\).*got shape \(1, 1, 8, 8\)"):
        predict_tiled(np.zeros((20, 20)), lambda x: np.zeros((1, 1, 8, 8)), tile=16, halo=0)
    k = iter([1, 2, 2, 2])
    with pytest.raises(ValueError, match="same number of channels"):
        predict_tiled(np.zeros((40, 40)), lambda x: np.repeat(x, next(k), axis=1), tile=16, halo=0)
