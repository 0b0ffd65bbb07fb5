"""Training data for the U-Net: normalisation, weight maps, patch sampling and seeded augmentation.

Everything here is numpy/scipy (no torch), seeded by a :class:`numpy.random.Generator` whose state can be
saved and restored, so an interrupted training run resumes on exactly the same patches.

Conventions
-----------
* images are 2-D ``(Y, X)`` arrays of any numeric dtype, normalised per image by percentiles
  (:func:`percentile_normalize`, the bioimage.io ``scale_range`` preprocessing with ``mode="per_sample"``);
* targets are float ``(Y, X)`` arrays in ``[0, 1]``: hard masks (0/1) or soft labels (expert fraction,
  STAPLE posterior);
* ``ignore`` masks are boolean; ignored pixels carry ``valid = 0`` and never contribute to the loss;
  patch centres are never drawn from them, and pixels that an augmentation maps from outside the image are
  invalid too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..config import AugmentOptions

__all__ = [
    "percentile_normalize",
    "compute_percentiles",
    "apply_percentiles",
    "pad_to_multiple",
    "border_weights",
    "sampling_weights",
    "AugmentConfig",
    "PatchSampler",
    "TrainingImage",
    "smooth_background",
]

_BLOCK = 4  # patch centres are drawn from 4x4 blocks (weights summed per block), then uniformly inside


def compute_percentiles(image: np.ndarray, *, low: float = 1.0, high: float = 99.8) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of ``image`` (numpy's default linear interpolation)."""
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got low={low}, high={high}")
    lo, hi = np.percentile(np.asarray(image, dtype=np.float64), [low, high])
    return float(lo), float(hi)


def apply_percentiles(image: np.ndarray, lo: float, hi: float, *, eps: float = 1e-6) -> np.ndarray:
    """``(image - lo) / (hi - lo + eps)`` as float32: bioimage.io's ``scale_range``."""
    return ((np.asarray(image, dtype=np.float64) - lo) / (hi - lo + eps)).astype(np.float32)


def percentile_normalize(
    image: np.ndarray, *, low: float = 1.0, high: float = 99.8, eps: float = 1e-6
) -> tuple[np.ndarray, tuple[float, float]]:
    """Normalise one image by its own percentiles.

    Returns the float32 image and the ``(lo, hi)`` values used.

    >>> img = np.arange(100, dtype=np.uint8).reshape(10, 10)
    >>> out, (lo, hi) = percentile_normalize(img, low=0, high=100)
    >>> float(out.min()), round(float(out.max()), 4), lo, hi
    (0.0, 1.0, 0.0, 99.0)
    """
    lo, hi = compute_percentiles(image, low=low, high=high)
    return apply_percentiles(image, lo, hi, eps=eps), (lo, hi)


def pad_to_multiple(image: np.ndarray, multiple: int, *, mode: str = "reflect") -> tuple[np.ndarray, tuple[int, int]]:
    """Pad a ``(..., Y, X)`` array at the bottom/right to multiples of ``multiple``; return it and the original (Y, X).

    Reflection needs the image to be larger than the padding; smaller images fall back to ``symmetric``.
    """
    y, x = image.shape[-2:]
    py, px = (-y) % multiple, (-x) % multiple
    if py == 0 and px == 0:
        return image, (y, x)
    pad = [(0, 0)] * (image.ndim - 2) + [(0, py), (0, px)]
    if mode == "reflect" and (py >= y or px >= x):
        mode = "symmetric"
    return np.pad(image, pad, mode=mode), (y, x)


def border_weights(target: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """Weights that emphasise background gaps between nearby objects (Ronneberger et al. 2015).

    ``w = 1 + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background pixels, with ``d1``, ``d2`` the
    distances to the nearest and second-nearest object (8-connected objects of ``target > 0.5``); 1 on
    objects. Distances are computed only within ``3 sigma`` of each object, where the term matters.
    """
    fg = np.asarray(target) > 0.5
    labels, n = ndi.label(fg, structure=np.ones((3, 3), bool))
    w = np.ones(fg.shape, np.float32)
    if n < 2 or w0 == 0:
        return w
    r = int(math.ceil(3 * sigma)) + 1
    d1 = np.full(fg.shape, np.inf, np.float32)
    d2 = np.full(fg.shape, np.inf, np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        ys = slice(max(sl[0].start - r, 0), min(sl[0].stop + r, fg.shape[0]))
        xs = slice(max(sl[1].start - r, 0), min(sl[1].stop + r, fg.shape[1]))
        d = ndi.distance_transform_edt(labels[ys, xs] != i).astype(np.float32)
        a, b = d1[ys, xs], d2[ys, xs]
        closer = d < a
        b[:] = np.where(closer, a, np.minimum(b, d))
        a[:] = np.where(closer, d, a)
    s = d1 + d2
    bg = ~fg & np.isfinite(s)
    w[bg] += (w0 * np.exp(-(s[bg] ** 2) / (2.0 * sigma**2))).astype(np.float32)
    return w


def _boundary(fg: np.ndarray, width: int = 2) -> np.ndarray:
    st = np.ones((3, 3), bool)
    return ndi.binary_dilation(fg, st, iterations=width) & ~ndi.binary_erosion(fg, st, iterations=width)


def sampling_weights(
    target: np.ndarray,
    valid: np.ndarray,
    *,
    foreground: float = 10.0,
    boundary: float = 10.0,
) -> np.ndarray:
    """Per-pixel weights for drawing patch centres: ``1 + foreground * target + boundary * [near an edge]``.

    Zero where ``valid`` is false (ignored pixels are never drawn as centres).
    """
    t = np.asarray(target, np.float32)
    w = 1.0 + foreground * t
    if boundary:
        w = w + boundary * _boundary(t > 0.5).astype(np.float32)
    return (w * np.asarray(valid, np.float32)).astype(np.float32)


#: The augmentation settings: one model, ``config.AugmentOptions`` (what ``TrainConfig.augment`` holds and the
#: CLI's augmentation options are made from); ``AugmentConfig`` is its name here.
AugmentConfig = AugmentOptions


def smooth_background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random smooth field in ``[0, 1]`` over ``shape``: a linear ramp plus a Gaussian bump, both wider than
    the patch (what a brighter tissue region or an uneven illumination looks like at patch scale).

    >>> f = smooth_background((64, 64), np.random.default_rng(0))
    >>> f.shape, float(f.min()) >= 0.0, round(float(f.max()), 6)
    ((64, 64), True, 1.0)
    """
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, h), np.linspace(-0.5, 0.5, w), indexing="ij")
    th = rng.uniform(0.0, 2.0 * math.pi)
    ramp = math.cos(th) * yy + math.sin(th) * xx
    cy, cx = rng.uniform(-1.0, 1.0, 2)
    sigma = rng.uniform(0.4, 1.5)
    bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma**2))
    f = rng.uniform(0.0, 1.0) * ramp + rng.uniform(0.0, 1.0) * bump
    f = f - f.min()
    m = f.max()
    return (f / m if m > 0 else f).astype(np.float32)


@dataclass
class TrainingImage:
    """One prepared training image: normalised image, target, validity, loss weights and sampling table."""

    image_id: str
    image: np.ndarray  # float32 normalised
    target: np.ndarray  # float32 in [0, 1]
    valid: np.ndarray  # float32 0/1 (0 = ignored)
    weight: np.ndarray | None  # float32 loss weights (border weighting) or None
    block_cdf: np.ndarray = field(repr=False)  # cumulative sampling weights over 4x4 blocks
    block_shape: tuple[int, int] = (0, 0)
    sample_weight: float = 1.0  # relative chance of being drawn (multi-lab training: 1 / images of its lab)

    @classmethod
    def prepare(
        cls,
        image_id: str,
        image: np.ndarray,
        target: np.ndarray,
        valid: np.ndarray,
        *,
        weight: np.ndarray | None = None,
        foreground: float = 10.0,
        boundary: float = 10.0,
    ) -> TrainingImage:
        sw = sampling_weights(target, valid, foreground=foreground, boundary=boundary)
        y, x = sw.shape
        by, bx = -(-y // _BLOCK), -(-x // _BLOCK)
        padded = np.zeros((by * _BLOCK, bx * _BLOCK), np.float64)
        padded[:y, :x] = sw
        blocks = padded.reshape(by, _BLOCK, bx, _BLOCK).sum(axis=(1, 3)).ravel()
        return cls(
            image_id=image_id,
            image=image,
            target=target,
            valid=valid,
            weight=weight,
            block_cdf=np.cumsum(blocks),
            block_shape=(by, bx),
        )

    @property
    def sampling_mass(self) -> float:
        return float(self.block_cdf[-1]) if self.block_cdf.size else 0.0


class PatchSampler:
    """Draws augmented training patches from a list of :class:`TrainingImage`, reproducibly.

    Each patch: an image chosen uniformly among those with anything valid to sample; a centre drawn from
    the image's sampling weights (foreground and boundaries favoured, ignored pixels never); a random
    affine/flip/rotation applied by resampling around the centre (image: mirror at borders; target,
    validity and weights: zero outside the image, so those pixels are excluded from the loss); then
    gamma/contrast/brightness on the image.

    The generator's state is available as JSON (:meth:`get_state`, :meth:`set_state`).
    """

    def __init__(
        self,
        images: list[TrainingImage],
        *,
        patch_size: int,
        seed: int,
        augment: AugmentConfig | None = None,
    ) -> None:
        usable = [im for im in images if im.sampling_mass > 0]
        if not usable:
            raise ValueError("no training image has any pixel left to sample (all are ignored)")
        self.images = usable
        w = np.array([im.sample_weight for im in usable], np.float64)
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"sample weights must be finite and > 0; got {w.tolist()}")
        # equal weights keep the original draw (rng.integers), so earlier runs resume bit for bit
        self._cdf = None if np.all(w == w[0]) else np.cumsum(w / w.sum())
        self.patch_size = int(patch_size)
        self.augment = augment or AugmentConfig()
        self.rng = np.random.default_rng(seed)
        g = np.arange(self.patch_size, dtype=np.float64) - self.patch_size // 2
        self._grid = np.stack(np.meshgrid(g, g, indexing="ij")).reshape(2, -1)  # (2, P*P) offsets

    def get_state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def set_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)

    def _centre(self, im: TrainingImage) -> tuple[float, float]:
        rng = self.rng
        k = int(np.searchsorted(im.block_cdf, rng.random() * im.block_cdf[-1], side="right"))
        k = min(k, im.block_cdf.size - 1)
        by, bx = divmod(k, im.block_shape[1])
        y = min(by * _BLOCK + int(rng.integers(_BLOCK)), im.image.shape[0] - 1)
        x = min(bx * _BLOCK + int(rng.integers(_BLOCK)), im.image.shape[1] - 1)
        return float(y), float(x)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """Return a batch: ``image``, ``target``, ``valid``, ``weight``, each float32 ``(B, 1, P, P)``."""
        p = self.patch_size
        out = {k: np.empty((batch_size, 1, p, p), np.float32) for k in ("image", "target", "valid", "weight")}
        for b in range(batch_size):
            patch = self._one()
            for k in out:
                out[k][b, 0] = patch[k]
        return out

    def _one(self) -> dict[str, np.ndarray]:
        rng, a = self.rng, self.augment
        if self._cdf is None:
            im = self.images[int(rng.integers(len(self.images)))]
        else:
            im = self.images[min(int(np.searchsorted(self._cdf, rng.random(), side="right")), len(self.images) - 1)]
        cy, cx = self._centre(im)
        m = np.eye(2)
        if a.flip and rng.random() < 0.5:
            m = m @ np.array([[1.0, 0.0], [0.0, -1.0]])
        if a.rotate90:
            k = int(rng.integers(4))
            r = np.array([[0.0, -1.0], [1.0, 0.0]])
            m = m @ np.linalg.matrix_power(r, k)
        if a.affine_p > 0 and rng.random() < a.affine_p:
            th = math.radians(rng.uniform(-a.rotation_deg, a.rotation_deg))
            s = 1.0 if a.zoom is not None else rng.uniform(1.0 - a.scale, 1.0 + a.scale)
            m = m @ (s * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]))
        if a.zoom is not None:
            lo, hi = a.zoom
            # sampling step in the source image = 1 / apparent size, drawn log-uniformly
            m = m * math.exp(-rng.uniform(math.log(lo), math.log(hi))) if hi > lo else m / lo
        coords = m @ self._grid
        coords[0] += cy
        coords[1] += cx
        integral = np.allclose(coords, np.round(coords))
        p = self.patch_size
        if integral:
            ci = np.round(coords).astype(np.intp)
            inside = (ci[0] >= 0) & (ci[0] < im.image.shape[0]) & (ci[1] >= 0) & (ci[1] < im.image.shape[1])
            ry = _reflect_index(ci[0], im.image.shape[0])
            rx = _reflect_index(ci[1], im.image.shape[1])
            image = im.image[ry, rx]
            target = np.where(inside, im.target[ry, rx], 0.0)
            valid = np.where(inside, im.valid[ry, rx], 0.0)
            weight = np.where(inside, im.weight[ry, rx], 0.0) if im.weight is not None else valid
        else:
            image = ndi.map_coordinates(im.image, coords, order=1, mode="mirror")
            target = ndi.map_coordinates(im.target, coords, order=1, mode="constant", cval=0.0)
            valid = ndi.map_coordinates(im.valid, coords, order=1, mode="constant", cval=0.0)
            valid = (valid > 0.999).astype(np.float32)  # a pixel next to an ignored one is not trusted
            if im.weight is not None:
                weight = ndi.map_coordinates(im.weight, coords, order=1, mode="constant", cval=0.0)
            else:
                weight = valid
        image = image.reshape(p, p).astype(np.float32)
        if a.gamma > 0:
            g = math.exp(rng.uniform(-math.log1p(a.gamma), math.log1p(a.gamma)))
            image = np.sign(image) * np.abs(image) ** g
        if a.contrast > 0 or a.brightness > 0:
            c = rng.uniform(1.0 - a.contrast, 1.0 + a.contrast)
            bshift = rng.uniform(-a.brightness, a.brightness)
            image = image * c + bshift
        if a.background > 0 and rng.random() < 0.5:
            peak = a.background * rng.uniform(0.0, 1.0)
            field = peak * smooth_background(image.shape, rng)
            image = image * (1.0 + field) if rng.random() < 0.5 else image + field
            if a.background_renormalize:  # the image's upper percentile rises with its background
                image = image / (1.0 + peak * rng.uniform(0.5, 1.0))
        if a.blur > 0 and rng.random() < 1.0 / 3.0:
            image = ndi.gaussian_filter(image, rng.uniform(0.0, a.blur), mode="mirror")
        if a.noise > 0:
            image = image + rng.normal(0.0, rng.uniform(0.0, a.noise), image.shape)
        return {
            "image": image.astype(np.float32, copy=False),
            "target": np.clip(target.reshape(p, p), 0.0, 1.0).astype(np.float32, copy=False),
            "valid": valid.reshape(p, p).astype(np.float32, copy=False),
            "weight": (weight.reshape(p, p) * valid.reshape(p, p)).astype(np.float32, copy=False),
        }


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Mirror indices into ``[0, n)`` (``mirror`` mode: ... 2 1 | 0 1 2 ... n-1 | n-2 ...)."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    j = np.mod(i, period)
    return np.where(j < n, j, period - j)


def describe(x: Any) -> str:
    """Short description of an array for error messages."""
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return type(x).__name__
