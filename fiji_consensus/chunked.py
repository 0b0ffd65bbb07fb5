"""Images larger than memory on Dask (``fiji-consensus predict IMAGE.zarr --out OUT.zarr``): exact global
percentiles of a chunked image (:func:`exact_percentiles`), block-wise prediction with the ensemble's halo
(:func:`predict_dask_array`) and the zarr job (:func:`predict_zarr`); see :mod:`fiji_consensus.distributed`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._util import sha256_file
from ._validate import require
from .cluster import (
    _EXTRA,
    _cached_predictor,
    _cpu_count,
    _failure,
    _set_task_threads,
    _threads_plan,
    _wait_all,
    cached_ensemble,
    dask_client,
)
from .config import PredictConfig

__all__ = ["exact_percentiles", "predict_dask_array", "predict_zarr", "open_zarr_image"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- percentiles


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    # numpy's own linear interpolation of quantiles (numpy/lib/_function_base_impl.py), to the bit
    diff = b - a
    out = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5)
    return out


def _ordered_keys(x: np.ndarray) -> np.ndarray:
    """float64 values → uint64 keys in the same order (``-0.0`` counted as ``0.0``)."""
    b = (np.asarray(x, dtype=np.float64) + 0.0).view(np.uint64)
    neg = (b >> np.uint64(63)).astype(bool)
    return np.where(neg, ~b, b | np.uint64(1 << 63))


def _keys_to_values(keys: np.ndarray) -> np.ndarray:
    k = np.asarray(keys, dtype=np.uint64)
    pos = (k >> np.uint64(63)).astype(bool)
    return np.where(pos, k & ~np.uint64(1 << 63), ~k).view(np.float64)


def _small_int_hist(block: np.ndarray, offset: int, size: int) -> np.ndarray:
    return np.bincount((block.ravel().astype(np.int64) - offset), minlength=size)


def _digit_hist(block: np.ndarray, prefixes: list[tuple[int, int]]) -> np.ndarray:
    """Per (prefix, shift): counts of the 16-bit digit below ``shift`` among keys with that prefix."""
    flat = block.ravel()
    out = np.zeros((len(prefixes) + 1, 1 << 16), np.int64)
    if np.issubdtype(flat.dtype, np.floating):
        out[-1, 0] = int(np.count_nonzero(np.isnan(flat)))
    keys = _ordered_keys(flat)
    for i, (prefix, shift) in enumerate(prefixes):
        s = np.uint64(shift)
        sel = keys if shift == 48 else keys[(keys >> np.uint64(shift + 16)) == np.uint64(prefix)]
        out[i] = np.bincount(((sel >> s) & np.uint64(0xFFFF)).astype(np.int64), minlength=1 << 16)
    return out


def _tree_sum(parts: list[Any]) -> Any:
    """Sum delayed arrays pairwise (a tree: no task holds more than two of them)."""
    import dask

    while len(parts) > 1:
        parts = [dask.delayed(np.add)(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _values_at_ranks(x: Any, ranks: Sequence[int]) -> dict[int, float]:
    """The values of the sorted (flattened, float64) array ``x`` at ``ranks``, exactly, in passes over ``x``."""
    import dask

    blocks = x.to_delayed().ravel()
    dt = np.dtype(x.dtype)
    if dt == bool or (dt.kind in "iu" and dt.itemsize <= 2):
        offset = int(np.iinfo(dt).min) if dt != bool else 0
        size = (int(np.iinfo(dt).max) - offset + 1) if dt != bool else 2
        (hist,) = dask.compute(_tree_sum([dask.delayed(_small_int_hist)(b, offset, size) for b in blocks]))
        cum = np.cumsum(hist)
        return {r: float(np.searchsorted(cum, r, side="right") + offset) for r in ranks}
    # radix selection on order-preserving 64-bit keys, 16 bits per pass (at most 4 passes)
    state = {r: (0, 48, int(r)) for r in ranks}  # rank -> (prefix, shift, rank within prefix)
    while True:
        active = sorted({(p, s) for p, s, _ in state.values() if s >= 0})
        if not active:
            break
        (total,) = dask.compute(_tree_sum([dask.delayed(_digit_hist)(b, active) for b in blocks]))
        if active[0][1] == 48 and total[-1, 0]:
            raise ValueError(f"the image contains {int(total[-1, 0])} NaN values")
        for r, (p, s, within) in list(state.items()):
            if s < 0:
                continue
            cum = np.cumsum(total[active.index((p, s))])
            d = int(np.searchsorted(cum, within, side="right"))
            below = int(cum[d - 1]) if d else 0
            state[r] = ((p << 16) | d, s - 16, within - below)
    return {r: float(_keys_to_values(np.array([p], np.uint64))[0]) for r, (p, _, _) in state.items()}


def exact_percentiles(image: Any, q: Sequence[float]) -> list[float]:
    """``numpy.percentile(np.asarray(image, float64), q)`` (linear interpolation) of a dask array, exactly,
    without holding it in memory.

    One pass over the data for 8- and 16-bit integer images (a histogram), at most four for others (radix
    selection on the float64 values); the result equals numpy's to the bit, so the chunked path normalises
    exactly as the in-memory one (:func:`fiji_consensus.nn.data.compute_percentiles`).

    Examples
    --------
    >>> import dask.array as da
    >>> img = np.random.default_rng(0).integers(0, 4096, (300, 200)).astype(np.uint16)
    >>> exact_percentiles(da.from_array(img, chunks=64), [1, 99.8]) == list(np.percentile(img, [1, 99.8]))
    True
    """
    require("dask", extra=_EXTRA)
    import dask.array as da

    x = da.asarray(image)
    if x.size == 0:
        raise ValueError(f"image must not be empty; got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(np.empty(0, x.dtype)):
        raise TypeError(f"image must hold real numbers; got dtype {x.dtype}")
    qs = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    if np.any(qs < 0) or np.any(qs > 1):
        raise ValueError(f"percentiles must lie in [0, 100]; got {list(q)}")
    n = int(x.size)
    virtual = (n - 1) * qs  # numpy's "linear" method (Hyndman & Fan 7), in numpy's own arithmetic
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = n - 1
    nxt[above] = n - 1
    below = virtual < 0
    prev[below] = 0
    nxt[below] = 0
    prev_i, next_i = prev.astype(np.intp), nxt.astype(np.intp)
    gamma = np.asarray(virtual - np.where(above, -1, prev_i), dtype=np.float64)
    values = _values_at_ranks(x, sorted({*prev_i.tolist(), *next_i.tolist()}))
    a = np.array([values[i] for i in prev_i.tolist()], np.float64)
    b = np.array([values[i] for i in next_i.tolist()], np.float64)
    return [float(v) for v in _lerp(a, b, gamma)]


# --------------------------------------------------------------------------------------------- chunked prediction


def open_zarr_image(path: str | os.PathLike, *, channel: int | None = None) -> Any:
    """A 2-D dask array of a zarr array, a zarr group holding one array, or an OME-Zarr image (level 0).

    Singleton axes are dropped; a channel axis (OME-Zarr axis ``c``, else the first of a 3-D array) needs
    ``channel`` unless it has one channel.
    """
    require("zarr", extra=_EXTRA)
    import dask.array as da
    import zarr

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"zarr input {p} does not exist")
    node = zarr.open(str(p), mode="r")
    axes: list[str] | None = None
    if isinstance(node, zarr.Group):
        ms = node.attrs.get("multiscales") or (node.attrs.get("ome") or {}).get("multiscales")
        if ms:
            axes = [a["name"] if isinstance(a, dict) else str(a) for a in ms[0].get("axes", [])] or None
            node = node[ms[0]["datasets"][0]["path"]]
        else:
            arrays = sorted(name for name, _ in node.arrays())
            if len(arrays) != 1:
                raise ValueError(
                    f"{p} is a zarr group with arrays {arrays}: give the path of one array (e.g. {p}/{arrays[0]})"
                    if arrays else f"{p} is a zarr group without arrays"
                )
            node = node[arrays[0]]
    arr = da.from_zarr(node)
    if axes is None or len(axes) != arr.ndim:
        axes = ["?"] * (arr.ndim - 2) + ["y", "x"]
    if "c" in axes and channel is not None:
        ci = axes.index("c")
        if not 0 <= channel < arr.shape[ci]:
            raise ValueError(f"{p} has {arr.shape[ci]} channels; channel {channel} does not exist")
        arr = da.take(arr, [channel], axis=ci)
    keep = [i for i, n in enumerate(arr.shape) if n > 1 or i >= arr.ndim - 2]
    arr = arr.reshape([arr.shape[i] for i in keep])
    kept_axes = [axes[i] for i in keep]
    if arr.ndim == 3 and channel is not None and "c" not in axes:
        if not 0 <= channel < arr.shape[0]:
            raise ValueError(f"{p} has {arr.shape[0]} channels; channel {channel} does not exist")
        arr = arr[channel]
    elif arr.ndim != 2:
        raise ValueError(
            f"{p} has shape {tuple(node.shape)} (axes {kept_axes}): expected a 2-D image (choose a channel with "
            "channel=, CLI --channel; 3-D stacks and time series are not supported yet)"
        )
    return arr


def _block_sizes(n: int, chunk: int, halo: int) -> tuple[int, ...]:
    """Chunk sizes along one axis: ``chunk`` each, a last remainder of at most ``halo`` pixels merged into
    the chunk before it (map_overlap needs chunks of at least the depth)."""
    sizes = [chunk] * (n // chunk)
    rem = n - chunk * len(sizes)
    if rem:
        if sizes and rem <= halo:
            sizes[-1] += rem
        else:
            sizes.append(rem)
    return tuple(sizes) or (n,)


def _predict_block(
    block: np.ndarray,
    *,
    model: str,
    sha: str,
    device: str,
    tta: str,
    measure: str,
    halo: int,
    multiple: int,
    threads: int | None,
    plan: dict[str, int],
    block_info: dict | None = None,
) -> np.ndarray:
    """(2, y, x) float32 [probability, uncertainty] of one block; ``block`` carries ``halo`` pixels of
    context on every side that is not the image border."""
    from .uncertainty import ensemble_statistics

    _set_task_threads(threads, plan, per="thread")
    info = block_info[0]  # the overlapped input block: its place in the chunk grid of the image
    loc, nchunks = info["chunk-location"], info["num-chunks"]
    pads = []
    for ax in (0, 1):
        first, last = loc[ax] == 0, loc[ax] == nchunks[ax] - 1
        pads.append((halo if first else 0, halo if last else 0))
    x = np.pad(block, pads, mode="reflect")  # the image border mirrored, as predict_tiled does
    core = (x.shape[0] - 2 * halo, x.shape[1] - 2 * halo)
    x = np.pad(x, [(0, (-x.shape[0]) % multiple), (0, (-x.shape[1]) % multiple)], mode="reflect")
    ens = cached_ensemble(model, sha, device=device)
    stack = _cached_predictor(ens, tta)(x[None, None])[0, :, halo : halo + core[0], halo : halo + core[1]]
    np.clip(stack, 0.0, 1.0, out=stack)
    stats = ensemble_statistics(stack)
    return np.stack([stats["mean"], stats[measure]]).astype(np.float32, copy=False)


def predict_dask_array(
    model: str | os.PathLike,
    image: Any,
    *,
    tta: str = "flips",
    measure: str = "entropy",
    chunk: int = 1024,
    device: str = "cpu",
    threads: int | None = None,
    plan: dict[str, int] | None = None,
) -> tuple[Any, tuple[float, float]]:
    """Lazy ensemble prediction of a 2-D dask array larger than memory.

    Parameters
    ----------
    model : path-like
        The ensemble folder (readable by every worker).
    image : dask.array.Array or array-like
        ``(Y, X)``, any real dtype; rechunked to blocks of ``chunk`` pixels.
    tta, measure :
        Test-time augmentation views (``"none"``, ``"flips"``, ``"dihedral"``) and uncertainty measure
        (:data:`fiji_consensus.uncertainty.MEASURES`).
    chunk : int
        Block side (rounded down to a multiple of ``2**depth``); each block is predicted with the halo of
        context as one window of ``(chunk + 2 halo)²`` pixels.
    device, threads :
        Torch device and threads per task (default: the cores of a worker's host shared among its threads;
        one when not on a Dask worker).

    Returns
    -------
    (dask.array.Array, (lo, hi))
        ``(2, Y, X)`` float32 (probability, uncertainty), chunked ``(2, chunk, chunk)``; and the exact
        normalisation percentiles (computed here, one or a few passes over ``image``).

    Examples
    --------
    >>> import dask.array as da
    >>> res, (lo, hi) = predict_dask_array("models/wue1", da.from_zarr("big.zarr"))   # doctest: +SKIP
    >>> prob = res[0].compute()                                                         # doctest: +SKIP
    """
    require("torch", extra="train")
    require("dask", extra=_EXTRA)
    import dask.array as da

    from .nn.data import apply_percentiles
    from .nn.ensemble import ENSEMBLE_JSON, load_ensemble
    from .nn.predict import resolve_views
    from .uncertainty import MEASURES

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}; got {measure!r}")
    resolve_views(tta)
    folder = Path(model).resolve()
    folder = folder.parent if folder.name == ENSEMBLE_JSON else folder
    ens = load_ensemble(folder, device="cpu")
    norm = ens.metadata.get("architecture", {}).get("config", {}).get("norm", "batch")
    if norm not in ("batch", "none"):
        raise ValueError(
            f"the chunked path needs a network whose output at a pixel depends on its receptive field only "
            f"(batch or no normalisation); this one uses {norm!r} normalisation, which would show seams"
        )
    x = da.asarray(image)
    if x.ndim != 2:
        raise ValueError(f"image must be 2-D (Y, X); got shape {x.shape}")
    halo, mult = int(ens.halo), int(ens.tile_multiple)
    c = (int(chunk) // mult) * mult
    if c <= halo:
        raise ValueError(f"chunk must be larger than the ensemble's halo ({halo} px); got {chunk}")
    n = ens.normalization
    lo, hi = exact_percentiles(x, [n["min_percentile"], n["max_percentile"]])
    x = x.rechunk(tuple(_block_sizes(s, c, halo) for s in x.shape))
    xn = x.map_blocks(apply_percentiles, lo, hi, eps=n["eps"], dtype=np.float32)
    res = da.map_overlap(
        _predict_block,
        xn,
        depth={0: halo, 1: halo},
        boundary="none",
        trim=False,
        new_axis=0,
        chunks=((2,), *xn.chunks),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        model=str(folder),
        sha=sha256_file(folder / ENSEMBLE_JSON),
        device=device, tta=tta, measure=measure, halo=halo, multiple=mult, threads=threads, plan=plan or {},
    )
    return res, (lo, hi)


def _write_rows(block: np.ndarray, arrays: Sequence[Any], block_info: dict | None = None) -> np.ndarray:
    (y0, y1), (x0, x1) = block_info[0]["array-location"][1:]
    for k, arr in enumerate(arrays):
        arr[y0:y1, x0:x1] = block[k]
    return np.ones((1, 1, 1), np.int8)


def predict_zarr(config: PredictConfig, *, progress: bool = False) -> dict[str, Any]:
    """The chunked path of ``fiji-consensus predict``: one zarr image in, one zarr group out.

    ``config.inputs`` holds one zarr array, group or OME-Zarr image; ``config.out`` becomes a zarr
    (format 2) group with float32 arrays ``probability`` and ``uncertainty`` (``config.uncertainty``),
    chunked ``config.chunk``², and the run record in its attributes (``fiji_consensus``). The group is
    written beside the target and renamed into place when complete. Runs on ``config.dask`` or, without
    it, on Dask's local threaded scheduler (``config.threads`` threads, default all cores, one torch
    thread each). Tiling settings (``tile``, ``overlap``, ``batch_size``) and object settings do not apply.
    """
    require("torch", extra="train")
    require("zarr", extra=_EXTRA)
    import dask
    import dask.array as da
    import zarr

    from . import __version__
    from .nn.ensemble import ENSEMBLE_JSON

    if len(config.inputs) != 1:
        raise ValueError(f"a zarr input must be the only input; got {len(config.inputs)} inputs")
    src, out = Path(config.inputs[0]).resolve(), Path(config.out).resolve()  # absolute: for the workers
    if out.suffix.lower() != ".zarr":
        raise ValueError(f"the output of a zarr input must be a .zarr path; got --out {out}")
    if out.exists() and not config.overwrite:
        raise FileExistsError(f"{out} exists already; pass overwrite=True (CLI: --overwrite) to replace it")
    folder = Path(config.models[0]).resolve()
    folder = folder.parent if folder.name == ENSEMBLE_JSON else folder
    if len(config.models) != 1 or not (folder / ENSEMBLE_JSON).is_file():
        raise FileNotFoundError(
            f"a zarr input is predicted block by block with one ensemble folder (with {ENSEMBLE_JSON}); got --model "
            f"{' '.join(str(m) for m in config.models)} (bioimage.io packages and Keras files: give plain images)")
    t0 = time.perf_counter()
    image = open_zarr_image(src, channel=config.channel)
    record = {
        "tool": "fiji-consensus", "command": "predict", "version": __version__,
        "config": config.model_dump(mode="json"), "model_sha256": sha256_file(folder / ENSEMBLE_JSON),
        "input": {"path": str(src), "shape": list(image.shape), "dtype": str(image.dtype)},
    }
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.part"
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(dask_client(config.dask)) if config.dask is not None else None
        if client is None:
            cores = int(config.threads or _cpu_count())
            stack.enter_context(dask.config.set(scheduler="threads", num_workers=cores))
            plan: dict[str, int] = {}
            threads = 1
        else:
            stack.enter_context(dask.config.set(scheduler=client))  # this client, whatever the default
            plan, threads = _threads_plan(client, per="thread"), config.threads
        t_compute = time.perf_counter()
        res, (lo, hi) = predict_dask_array(
            folder, image, tta=config.tta, measure=config.uncertainty, chunk=config.chunk, device=config.device,
            threads=threads, plan=plan,
        )
        chunks = (res.chunks[1][0], res.chunks[2][0])
        record["normalization"] = {"lo": lo, "hi": hi}
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            import numcodecs

            group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
            arrays = [
                group.create_array(name, shape=image.shape, chunks=chunks, dtype="float32",
                                   compressors=numcodecs.Blosc(cname="lz4", clevel=5), fill_value=0.0)
                for name in ("probability", "uncertainty")
            ]
            group.attrs["fiji_consensus"] = {**record, "measure": config.uncertainty}
            # one write task per block; every zarr chunk belongs to exactly one block (no locks needed)
            written = res.map_blocks(_write_rows, arrays, chunks=(1, 1, 1), dtype=np.int8)
            parts = written.to_delayed().ravel().tolist()
            if client is not None:
                futures = {f: None for f in client.compute(parts, retries=config.dask.retries)}
                bad = [_failure(f) for f in _wait_all(futures, progress=progress, desc="blocks",
                                                       unit="block") if f.status != "finished"]
                if bad:
                    raise RuntimeError(f"{len(bad)} of {len(parts)} block(s) failed: {bad[0]}")
            elif progress:
                from dask.diagnostics import ProgressBar

                with ProgressBar(out=sys.stderr):
                    dask.compute(*parts)
            else:
                dask.compute(*parts)
            t_compute = time.perf_counter() - t_compute
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    mpx = image.size / 1e6
    summary = {
        "ok": True, "command": "predict", "out": str(out.resolve()), "model": str(folder.resolve()),
        "measure": config.uncertainty, "tta": config.tta, "shape": list(image.shape), "chunks": list(chunks),
        "n_blocks": int(res.numblocks[1] * res.numblocks[2]), "normalization": [lo, hi], "seconds": seconds,
        "seconds_compute": t_compute,  # percentiles + blocks (not starting a cluster)
        "megapixels_per_second": mpx / t_compute if t_compute > 0 else float("nan"),
    }
    logger.info("predicted %s (%.1f megapixels) in %.1f s -> %s", src, mpx, seconds, out)
    return summary
