"""Tiled inference with any callable: halo cropping, smooth blending, any image size, bounded memory.

:func:`predict_tiled` cuts an image into overlapping windows, runs a *predictor* on batches of windows,
crops a ``halo`` from every side of each output window and blends the overlapping remainders ("cores")
with smooth weights. It knows nothing about deep learning frameworks; the predictor is any callable
(MONAI's ``sliding_window_inference`` and stardist's tiled prediction follow the same idea).

The predictor contract
----------------------
``predictor(batch)`` receives a C-contiguous ``float32`` numpy array of shape ``(N, C, h, w)``
(``1 <= N <= batch_size``; every window of one call has the same ``h, w``; ``h`` and ``w`` are multiples
of ``multiple``) and must return an array-like (numpy array, or anything :func:`numpy.asarray` accepts)
of shape ``(N, K, h, w)`` -- ``K`` output channels, the same ``K`` for every call -- or ``(N, h, w)``
for a single output channel. The output is returned as ``(K, Y, X)`` or ``(Y, X)`` respectively.

Windows are read from the image padded by ``halo`` on every side (``pad_mode``, numpy's
:func:`numpy.pad` modes), and window origins lie on a grid of ``multiple`` pixels, so a predictor that is
local (its output at a pixel depends only on inputs within ``halo`` pixels) and equivariant to shifts by
``multiple`` -- such as a U-Net with batch normalisation in eval mode and ``multiple = 2**depth`` --
gives exactly the whole-image result of ``predictor(pad(image, halo))``, whatever the tile size. For
predictors that see more than their halo (group normalisation, attention), the overlap is blended with
weights that fall smoothly to zero towards the shared edge of two cores, so no seam is visible.

Memory: :func:`iter_tiled` yields the result band by band (a band is final once no later tile reaches it)
and holds one padded copy of the input, the accumulators of one row of tiles (``K`` float32 planes of
about a window's height times the image width) and one batch of windows with its outputs; a caller that
reduces or writes each band (as :func:`fiji_consensus.nn.predict.predict` does) never holds the ``K``
full-size planes. :func:`predict_tiled` collects the bands into the ``(K, Y, X)`` result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["predict_tiled", "iter_tiled", "tile_grid", "blend_weights", "BLENDINGS"]

logger = logging.getLogger(__name__)

#: Blending modes of :func:`predict_tiled`.
BLENDINGS = ("cosine", "gaussian", "constant")

_GAUSS_FLOOR = 1e-4  # smallest Gaussian weight (relative to the centre), so every pixel has weight > 0


def _pair(v: Any, name: str) -> tuple[int, int]:
    if np.ndim(v) == 0:
        v = (v, v)
    try:
        vals = tuple(int(x) for x in v)
        ok = len(vals) == 2 and all(float(x) == int(x) for x in v)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an int or a pair of ints (y, x); got {v!r}")
    return vals  # type: ignore[return-value]


def _round_up(v: int, m: int) -> int:
    return int(math.ceil(v / m) * m)


def tile_grid(
    length: int, *, tile: int, halo: int, overlap: float, multiple: int = 1
) -> tuple[int, int, int, int]:
    """The tiling of one axis: ``(window, core, stride, n_tiles)``.

    ``window = core + 2 * halo`` is the size fed to the predictor (at most ``tile``, a multiple of
    ``multiple``); cores of ``n_tiles`` windows placed every ``stride`` pixels cover ``length`` pixels,
    neighbouring cores sharing ``core - stride`` pixels (about ``overlap * core``). The number of tiles is
    the smallest that covers the axis with windows of at most ``tile`` pixels, and the window is then
    shrunk to the smallest size that still covers the axis with that many tiles (balanced tiles: little
    computation is wasted on padding, and images smaller than a tile are run in one smaller window).

    >>> tile_grid(1000, tile=256, halo=32, overlap=0.25, multiple=8)
    (248, 184, 136, 7)
    >>> tile_grid(50, tile=256, halo=32, overlap=0.25, multiple=8)
    (120, 56, 40, 1)
    """
    core_max = tile - 2 * halo
    if core_max < multiple:
        raise ValueError(
            f"tile must be larger than 2 * halo + multiple = {2 * halo + multiple} so that something is "
            f"left after cropping the halo; got tile={tile}, halo={halo}, multiple={multiple}"
        )

    def stride_for(core: int) -> int:
        ov = int(round(overlap * core))
        return max(multiple, ((core - ov) // multiple) * multiple)

    core = (core_max // multiple) * multiple
    stride = stride_for(core)
    n = 1 if length <= core else 1 + int(math.ceil((length - core) / stride))
    # shrink the core to the smallest multiple that still covers the axis with n tiles
    best = core
    c = core
    while c - multiple >= multiple:
        c -= multiple
        s = stride_for(c)
        if (n - 1) * s + c >= length:
            best = c
        else:
            break
    core = best
    stride = stride_for(core)
    return core + 2 * halo, core, stride, n


def _ramp_weights(core: int, ov: int, lead: bool, trail: bool) -> np.ndarray:
    """Raised-cosine ramps over the ``ov`` shared pixels at each side that has a neighbour.

    Neighbouring ramps are ``sin^2`` and ``cos^2`` of the same argument, so they sum to exactly 1 in the
    overlap (a partition of unity) and the blend is continuous with a continuous derivative.
    """
    w = np.ones(core, np.float64)
    if ov > 0:
        t = (np.arange(ov) + 0.5) / ov
        up = np.sin(0.5 * np.pi * t) ** 2
        if lead:
            w[:ov] = up
        if trail:
            w[core - ov :] = up[::-1]
    return w


def _gauss_weights(core: int, sigma_scale: float) -> np.ndarray:
    c = (core - 1) / 2.0
    sigma = max(sigma_scale * core, 1e-6)
    w = np.exp(-0.5 * ((np.arange(core) - c) / sigma) ** 2)
    return np.maximum(w / w.max(), _GAUSS_FLOOR)


def blend_weights(
    core: int, ov: int, blending: str, *, lead: bool = True, trail: bool = True, sigma_scale: float = 0.125
) -> np.ndarray:
    """1-D blending weights over one core (the 2-D weights are outer products).

    ``"cosine"``: 1 inside, raised-cosine ramps over the ``ov`` pixels shared with a neighbour (only on
    sides that have one); ``"gaussian"``: a Gaussian of standard deviation ``sigma_scale * core`` centred
    on the core, floored at 1e-4 (as MONAI and deepflash2 blend); ``"constant"``: plain averaging.
    """
    if blending == "cosine":
        return _ramp_weights(core, ov, lead, trail)
    if blending == "gaussian":
        return _gauss_weights(core, sigma_scale)
    if blending == "constant":
        return np.ones(core, np.float64)
    raise ValueError(f"blending must be one of {BLENDINGS}; got {blending!r}")


def predict_tiled(
    image: np.ndarray,
    predictor: Callable[[np.ndarray], Any],
    *,
    tile: int | tuple[int, int] = 512,
    halo: int | tuple[int, int] = 32,
    overlap: float = 0.125,
    batch_size: int = 4,
    blending: str = "cosine",
    sigma_scale: float = 0.125,
    multiple: int = 1,
    pad_mode: str = "reflect",
    progress: bool = False,
) -> np.ndarray:
    """Run ``predictor`` over overlapping tiles of ``image`` and blend the results.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` or ``(C, Y, X)``; any real dtype (converted to float32 for the predictor); any size,
        also smaller than a tile.
    predictor : callable
        ``(N, C, h, w)`` float32 → ``(N, K, h, w)`` or ``(N, h, w)`` (see the module docstring).
    tile : int or (int, int)
        Largest window (including the halo) fed to the predictor, per axis; a multiple of ``multiple``.
        Actual windows may be smaller (balanced tiles, see :func:`tile_grid`).
    halo : int or (int, int)
        Pixels cropped from every side of each output window (at least the predictor's receptive-field
        radius for exact results). The image is padded by ``halo`` (``pad_mode``) so its border pixels
        are predicted with the same context as in a whole-image run.
    overlap : float
        Fraction of a core shared with each neighbour, ``0 <= overlap < 1``.
    batch_size : int
        Windows per predictor call.
    blending : {"cosine", "gaussian", "constant"}
        Weights in the overlaps (:func:`blend_weights`).
    sigma_scale : float
        Gaussian blending only: standard deviation as a fraction of the core.
    multiple : int
        Window sizes and origins are multiples of this (``2**depth`` for a U-Net); ``halo`` must be one too.
    pad_mode : str
        :func:`numpy.pad` mode for the padding outside the image (``"reflect"``, ``"symmetric"``,
        ``"constant"``, ``"edge"``, ...).
    progress : bool
        Show a progress bar over the batches (tqdm).

    Returns
    -------
    numpy.ndarray
        float32 ``(K, Y, X)``, or ``(Y, X)`` when the predictor returns ``(N, h, w)``.

    See Also
    --------
    iter_tiled : the same result as finished bands of rows, for outputs reduced or written band by band.

    Examples
    --------
    >>> img = np.arange(70 * 90, dtype=np.float32).reshape(70, 90)
    >>> out = predict_tiled(img, lambda x: 2 * x, tile=32, halo=4)
    >>> out.shape, bool(np.allclose(out, 2 * img[None]))
    ((1, 70, 90), True)
    """
    result: np.ndarray | None = None
    squeeze = False
    for y0, y1, band, sq in _bands(
        image, predictor, tile=tile, halo=halo, overlap=overlap, batch_size=batch_size, blending=blending,
        sigma_scale=sigma_scale, multiple=multiple, pad_mode=pad_mode, progress=progress,
    ):
        if result is None:
            arr = np.asarray(image)
            result = np.empty((band.shape[0], *arr.shape[-2:]), np.float32)
            squeeze = sq
        result[:, y0:y1] = band
    assert result is not None
    return result[0] if squeeze else result


def iter_tiled(
    image: np.ndarray,
    predictor: Callable[[np.ndarray], Any],
    **kwargs: Any,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """:func:`predict_tiled` as a stream: ``(y0, y1, band)`` for consecutive bands of finished rows.

    ``band`` is the float32 ``(K, y1 - y0, X)`` result of rows ``y0:y1`` (``(y1 - y0, X)`` for a predictor
    returning ``(N, h, w)``), bit for bit what :func:`predict_tiled` returns there. A band is yielded as
    soon as no later tile can change it, so memory stays bounded by the padded input, one row of tiles
    (``K`` float32 planes of about a window's height times the image width) and one batch, whatever
    the image height; the caller reduces or writes each band and drops it. Keyword arguments are those of
    :func:`predict_tiled`.

    Examples
    --------
    >>> img = np.arange(70 * 90, dtype=np.float32).reshape(70, 90)
    >>> bands = list(iter_tiled(img, lambda x: 2 * x, tile=32, halo=4))
    >>> [(y0, y1) for y0, y1, _ in bands][:3], bool(np.allclose(np.concatenate([b for *_, b in bands], 1), 2 * img))
    ([(0, 17), (17, 34), (34, 51)], True)
    """
    bands = _bands(image, predictor, **kwargs)
    del image  # only the tiler's padded copy stays alive
    for y0, y1, band, sq in bands:
        yield y0, y1, (band[0] if sq else band)


def _check_tiling(
    arr: np.ndarray, predictor: Any, *, tile: Any, halo: Any, overlap: float, batch_size: int, blending: str,
    sigma_scale: float, multiple: int,
) -> tuple[tuple[int, int], tuple[int, int], int]:
    """The arguments of :func:`predict_tiled` checked; returns (tile, halo) per axis and ``multiple``."""
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must be (Y, X) or (C, Y, X); got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"image must not be empty; got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise TypeError(f"image must hold real numbers; got dtype {arr.dtype}")
    if not callable(predictor):
        raise TypeError(f"predictor must be callable; got {type(predictor).__name__}")
    tile_yx = _pair(tile, "tile")
    halo_yx = _pair(halo, "halo")
    multiple = int(multiple)
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1; got {multiple}")
    if any(h < 0 for h in halo_yx):
        raise ValueError(f"halo must be >= 0; got {halo}")
    if any(h % multiple for h in halo_yx):
        raise ValueError(f"halo must be a multiple of multiple={multiple}; got {halo}")
    if any(t % multiple for t in tile_yx):
        raise ValueError(f"tile must be a multiple of multiple={multiple}; got {tile}")
    if not (0.0 <= float(overlap) < 1.0):
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if blending not in BLENDINGS:
        raise ValueError(f"blending must be one of {BLENDINGS}; got {blending!r}")
    if blending == "gaussian" and not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0; got {sigma_scale}")
    return tile_yx, halo_yx, multiple


def _predict_batch(
    predictor: Callable[[np.ndarray], Any], xp: np.ndarray, batch: list[tuple[int, int]],
    step: tuple[int, int], window: tuple[int, int],
) -> tuple[np.ndarray, bool]:
    """The predictor on one batch of windows of the padded image: ``(N, K, h, w)`` and whether it returned
    ``(N, h, w)`` (then given a channel axis)."""
    (sy, sx), (wy, wx) = step, window
    win = np.stack([xp[:, i * sy : i * sy + wy, j * sx : j * sx + wx] for i, j in batch])
    out = np.asarray(predictor(np.ascontiguousarray(win)))
    del win
    if out.ndim == 3:
        out = out[:, None]
        sq = True
    else:
        sq = False
    if out.ndim != 4 or out.shape[0] != len(batch) or out.shape[2:] != (wy, wx):
        raise ValueError(
            f"predictor must return (N, K, h, w) or (N, h, w) for an input of shape "
            f"{(len(batch), xp.shape[0], wy, wx)}; got shape {np.shape(out)}"
        )
    return out, sq


class _Rows:
    """A rolling window of the blend accumulators: rows ``base .. base + len``; rows before ``base`` were
    yielded. Holds one row of tiles (K float32 planes of about a window's height times the width)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.base = 0
        self.weight = np.zeros((0, width), np.float32)
        self.acc: np.ndarray | None = None
        self.squeeze: bool | None = None

    def channels(self, out: np.ndarray, sq: bool) -> None:
        """The first batch fixes the number of channels (and the squeeze); later batches must match."""
        if self.acc is None:
            self.squeeze = sq
            self.acc = np.zeros((out.shape[1], 0, self.width), np.float32)
        elif out.shape[1] != self.acc.shape[0] or sq != self.squeeze:
            raise ValueError(
                f"predictor returned {out.shape[1]} channels, earlier {self.acc.shape[0]}; it must return the "
                "same number of channels for every batch"
            )

    def grow(self, end: int) -> None:
        """Grow the window to row ``end``: a new zeroed window holding the rows carried over."""
        if end > self.base + self.weight.shape[0]:
            kept = self.weight.shape[0]
            bigger = np.zeros((self.acc.shape[0], end - self.base, self.width), np.float32)
            bigger[:, :kept] = self.acc
            self.acc = bigger
            wbig = np.zeros((end - self.base, self.width), np.float32)
            wbig[:kept] = self.weight
            self.weight = wbig
            del bigger, wbig

    def add(self, core: np.ndarray, w2: np.ndarray, y0: int, x0: int) -> None:
        """Add one tile's weighted core at image row ``y0``, column ``x0``."""
        ys = slice(y0 - self.base, y0 - self.base + w2.shape[0])
        xs = slice(x0, x0 + w2.shape[1])
        for c in range(core.shape[0]):  # channel by channel: a temporary of one plane, not of K
            self.acc[c, ys, xs] += core[c] * w2
        self.weight[ys, xs] += w2

    def finished(self, final: int, width: int) -> np.ndarray:
        """Rows ``base .. final`` blended (divided by their weight in place: they are final), ``width`` columns."""
        n = final - self.base
        band = self.acc[:, :n, :width]
        band /= self.weight[None, :n, :width]
        return band

    def drop(self, final: int) -> None:
        """Forget the rows before ``final`` (yielded)."""
        n = final - self.base
        self.acc, self.weight = self.acc[:, n:].copy(), self.weight[n:].copy()
        self.base = final


def _bands(
    image: np.ndarray, predictor: Callable[[np.ndarray], Any], *, tile: int | tuple[int, int] = 512,
    halo: int | tuple[int, int] = 32, overlap: float = 0.125, batch_size: int = 4, blending: str = "cosine",
    sigma_scale: float = 0.125, multiple: int = 1, pad_mode: str = "reflect", progress: bool = False,
) -> Iterator[tuple[int, int, np.ndarray, bool]]:
    """The engine of :func:`predict_tiled` and :func:`iter_tiled`: ``(y0, y1, (K, rows, X) band, squeeze)``."""
    arr = np.asarray(image)
    tile_yx, halo_yx, multiple = _check_tiling(
        arr, predictor, tile=tile, halo=halo, overlap=overlap, batch_size=batch_size, blending=blending,
        sigma_scale=sigma_scale, multiple=multiple,
    )
    x = arr[None] if arr.ndim == 2 else arr
    C, Y, X = x.shape
    grids = [
        tile_grid(n, tile=t, halo=h, overlap=float(overlap), multiple=multiple)
        for n, t, h in zip((Y, X), tile_yx, halo_yx)
    ]
    (wy, cy, sy, ny), (wx, cx, sx, nx) = grids
    hy, hx = halo_yx
    # padded extent: halo before, enough after for every window (core region >= image)
    ly, lx = (ny - 1) * sy + wy, (nx - 1) * sx + wx
    pad = [(0, 0), (hy, ly - Y - hy), (hx, lx - X - hx)]
    xp = np.pad(x.astype(np.float32, copy=False), pad, mode=pad_mode)
    del arr, x, image  # the padded copy is all that is read from now on (a caller may drop its own)
    logger.debug(
        "predict_tiled: image %s, windows %dx%d, cores %dx%d, %dx%d tiles", (C, Y, X), wy, wx, cy, cx, ny, nx
    )

    ovy, ovx = cy - sy, cx - sx
    wts_y = [blend_weights(cy, ovy, blending, lead=i > 0, trail=i < ny - 1, sigma_scale=sigma_scale)
             for i in range(ny)]
    wts_x = [blend_weights(cx, ovx, blending, lead=j > 0, trail=j < nx - 1, sigma_scale=sigma_scale)
             for j in range(nx)]
    oy, ox = (ny - 1) * sy + cy, (nx - 1) * sx + cx  # extent of the core region (>= image)
    rows = _Rows(ox)
    positions = [(i, j) for i in range(ny) for j in range(nx)]
    batches = [positions[k : k + int(batch_size)] for k in range(0, len(positions), int(batch_size))]
    it: Any = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="tiles", unit="batch", leave=False)
    n_done = 0
    for batch in it:
        out, sq = _predict_batch(predictor, xp, batch, (sy, sx), (wy, wx))
        rows.channels(out, sq)
        rows.grow(max(i * sy + cy for i, _ in batch))  # to the lowest row this batch touches
        for k, (i, j) in enumerate(batch):
            w2 = np.outer(wts_y[i], wts_x[j]).astype(np.float32)
            rows.add(out[k, :, hy : hy + cy, hx : hx + cx], w2, i * sy, j * sx)
        del out
        n_done += len(batch)
        rows_done = n_done // nx  # complete rows of tiles
        final = oy if rows_done >= ny else rows_done * sy  # no later tile reaches above the next row's start
        final = min(final, Y)
        if final > rows.base:
            yield rows.base, final, rows.finished(final, X), bool(rows.squeeze)
            rows.drop(final)
        if rows.base >= Y:
            break
