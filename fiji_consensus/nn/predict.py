"""Ensemble prediction with test-time augmentation, tiled, with uncertainty and objects.

:class:`EnsemblePredictor` wraps the members of an :class:`~fiji_consensus.nn.ensemble.Ensemble` as a
plain callable for :func:`fiji_consensus.tiling.predict_tiled`: a ``(N, 1, h, w)`` float32 batch of
normalised windows goes in, a ``(N, M·V, h, w)`` float32 batch of foreground probabilities comes out,
one channel per member × test-time-augmentation (TTA) view, ordered member-major
(channel ``m * V + v``). Each view transforms the window, runs every member, and transforms the output
back. The views are the 8 elements of the dihedral group of the square (:data:`VIEWS`) or a subset:
``"none"`` (identity), ``"flips"`` (identity, vertical flip, horizontal flip, both: deepflash2's 4
views), ``"dihedral"`` (all 8), or an explicit list of view names.

:func:`predict_stack` returns the ``(M·V, Y, X)`` stack of one image; :func:`predict` turns it into the
mean probability, an uncertainty map (:mod:`fiji_consensus.uncertainty`), labelled objects
(:mod:`fiji_consensus.instances`) and a QA score.

Return types: :func:`predict` accepts a 2-D numpy array (or ``(C, Y, X)`` with ``channel``), or an
``xarray.DataArray`` with dims ``("y", "x")`` (or ``("c", "y", "x")`` with ``channel``). The maps of the
returned :class:`Prediction` are numpy arrays for numpy input and ``xarray.DataArray`` objects with dims
``("y", "x")``, the input's ``y``/``x`` coordinates and its ``attrs`` for DataArray input. The return
type therefore follows the input type, never the environment: xarray is not a dependency and is only
used (imported lazily) when the caller passes a DataArray.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import instances as _instances
from .. import uncertainty as _unc
from ..tiling import predict_tiled
from .ensemble import Ensemble
from .ensemble_net import ENSEMBLE_VIEWS, _forward_view, _inverse_view

__all__ = ["VIEWS", "TTA_PRESETS", "resolve_views", "EnsemblePredictor", "predict_stack", "predict", "Prediction"]

logger = logging.getLogger(__name__)

#: All view names (the dihedral group D4), in a fixed order: the one view table,
#: :data:`fiji_consensus.nn.ensemble_net.ENSEMBLE_VIEWS` (its forward and inverse transforms are the ones the
#: exported ensemble runs).
VIEWS = ENSEMBLE_VIEWS

#: Named subsets of :data:`VIEWS`.
TTA_PRESETS = {
    "none": ("identity",),
    "flips": ("identity", "flip_y", "flip_x", "rot180"),
    "dihedral": VIEWS,
}


def resolve_views(tta: str | Sequence[str] | bool | None) -> tuple[str, ...]:
    """View names for ``tta``: a preset name (:data:`TTA_PRESETS`), a list of view names, True
    (``"flips"``) or False/None (``"none"``).

    >>> resolve_views("flips")
    ('identity', 'flip_y', 'flip_x', 'rot180')
    """
    if tta is None or tta is False:
        return TTA_PRESETS["none"]
    if tta is True:
        return TTA_PRESETS["flips"]
    if isinstance(tta, str):
        if tta in TTA_PRESETS:
            return TTA_PRESETS[tta]
        if tta in VIEWS:
            return (tta,)
        raise ValueError(f"tta must be one of {tuple(TTA_PRESETS)} or a list of views from {VIEWS}; got {tta!r}")
    views = tuple(str(v) for v in tta)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise ValueError(f"tta views must be a non-empty list of {VIEWS}; got {list(tta)!r}")
    if len(set(views)) != len(views):
        raise ValueError(f"tta views must not repeat; got {list(views)!r}")
    return views


class EnsemblePredictor:
    """The members of an ensemble × TTA views as a callable for :func:`~fiji_consensus.tiling.predict_tiled`.

    Parameters
    ----------
    ensemble : Ensemble
        A loaded ensemble (:func:`~fiji_consensus.nn.ensemble.load_ensemble`).
    tta : str or sequence of str or bool
        Views (see :func:`resolve_views`).
    stack_views : bool, optional
        Run all views of a batch through a member in one call (``V`` times the activation memory).
        Default: on GPUs only (on CPUs one view at a time is as fast or faster).
    optimize : bool
        Run inference copies of the members with batch normalisation folded into the convolutions and
        channels-last memory layout (2-2.5x faster on CPUs; results equal to about 1e-7). The
        ensemble's own members are not changed.

    Calling it with a ``(N, C, h, w)`` float32 array (already normalised; ``h, w`` multiples of
    ``ensemble.tile_multiple``) returns ``(N, M * V, h, w)`` float32 probabilities, channel ``m * V + v``
    for member ``m`` and view ``v``.
    """

    def __init__(
        self,
        ensemble: Ensemble,
        *,
        tta: str | Sequence[str] | bool = "flips",
        stack_views: bool | None = None,
        optimize: bool = True,
    ):
        self.ensemble = ensemble
        self.views = resolve_views(tta)
        self.stack_views = (ensemble.device.type != "cpu") if stack_views is None else bool(stack_views)
        self.optimize = bool(optimize)
        self.members = [_inference_copy(m) for m in ensemble.members] if optimize else list(ensemble.members)
        self.n_outputs = len(ensemble.members) * len(self.views)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"batch must be (N, C, h, w); got shape {x.shape}")
        dev = self.ensemble.device
        n, _, h, w = x.shape
        V = len(self.views)
        out = np.empty((n, self.n_outputs, h, w), np.float32)
        fmt = torch.channels_last if self.optimize else torch.contiguous_format
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
            fwd = [_forward_view(t, v).contiguous(memory_format=fmt) for v in self.views]
            # group views by shape (rotations of non-square windows have another shape)
            groups: dict[tuple[int, ...], list[int]] = {}
            for vi, tv in enumerate(fwd):
                groups.setdefault(tuple(tv.shape), []).append(vi)
            for mi, member in enumerate(self.members):
                for idx in groups.values():
                    chunks = [idx] if self.stack_views else [[i] for i in idx]
                    for chunk in chunks:
                        inp = torch.cat([fwd[i] for i in chunk]) if len(chunk) > 1 else fwd[chunk[0]]
                        y = member(inp)
                        for k, vi in enumerate(chunk):
                            yv = _inverse_view(y[k * n : (k + 1) * n], self.views[vi])[:, 0]
                            out[:, mi * V + vi] = yv.float().cpu().numpy()
        return out


def _inference_copy(member: torch.nn.Module) -> torch.nn.Module:
    """A copy of an eval-mode member with every (Conv2d, BatchNorm2d) pair folded, in channels-last layout."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(member).eval()
    for mod in net.modules():
        if isinstance(mod, torch.nn.Sequential):
            for i in range(len(mod) - 1):
                if isinstance(mod[i], torch.nn.Conv2d) and isinstance(mod[i + 1], torch.nn.BatchNorm2d):
                    mod[i] = fuse_conv_bn_eval(mod[i], mod[i + 1])
                    mod[i + 1] = torch.nn.Identity()
    return net.to(memory_format=torch.channels_last)


def _check_ensemble(ensemble: Any) -> Ensemble:
    if not isinstance(ensemble, Ensemble):
        raise TypeError(
            f"ensemble must be a fiji_consensus.nn.Ensemble (from load_ensemble(path)); got {type(ensemble).__name__}"
        )
    cin = int(ensemble.metadata.get("architecture", {}).get("config", {}).get("in_channels", 1))
    if cin != 1:
        raise ValueError(f"only single-channel ensembles are supported for now; this one takes {cin} channels")
    return ensemble


def predict_stack(
    ensemble: Ensemble,
    image: np.ndarray,
    *,
    tta: str | Sequence[str] | bool = "flips",
    tile: int = 1152,
    overlap: float | None = None,
    batch_size: int = 1,
    blending: str = "cosine",
    stack_views: bool | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Member × view foreground probabilities of one 2-D image: ``(M * V, Y, X)`` float32.

    The image is normalised as in training (per-image percentiles, on the whole image), then predicted in
    tiles of at most ``tile`` pixels with the ensemble's halo cropped and overlaps blended
    (:func:`~fiji_consensus.tiling.predict_tiled`). ``tile`` is rounded down to a multiple of
    ``2**depth``; the default runs a 1024² image as one window (with a halo up to 64 px), the fastest on
    CPUs. ``overlap=None`` picks 0 for networks with batch (or no) normalisation, whose tiled output
    equals the whole-image output once the halo is cropped, and 0.125 (blended) otherwise.

    Examples
    --------
    >>> stack = predict_stack(load_ensemble("models/wue1"), image, tta="flips")   # doctest: +SKIP
    >>> stack.shape                                # 5 members x 4 views   # doctest: +SKIP
    (20, 1024, 1024)
    """
    x, predictor, kw = _tiling(
        ensemble, image, tta=tta, tile=tile, overlap=overlap, batch_size=batch_size, blending=blending,
        stack_views=stack_views, progress=progress,
    )
    stack = predict_tiled(x, predictor, **kw)
    return np.clip(stack, 0.0, 1.0, out=stack)


def _tiling(
    ensemble: Ensemble, image: np.ndarray, *, tta: Any, tile: int, overlap: float | None, batch_size: int,
    blending: str, stack_views: bool | None, progress: bool,
) -> tuple[np.ndarray, EnsemblePredictor, dict[str, Any]]:
    """The normalised image, the predictor and the tiling arguments of :func:`predict_stack`."""
    from .._validate import as_image_2d

    ens = _check_ensemble(ensemble)
    img = as_image_2d(image, name="image")
    predictor = EnsemblePredictor(ens, tta=tta, stack_views=stack_views)
    mult = ens.tile_multiple
    t = (int(tile) // mult) * mult
    if t <= 2 * ens.halo:
        raise ValueError(
            f"tile must be larger than twice the ensemble's halo ({ens.halo} px) plus {mult}; got {tile}. "
            f"Use at least {2 * ens.halo + 4 * mult}"
        )
    if overlap is None:
        norm = ens.metadata.get("architecture", {}).get("config", {}).get("norm", "batch")
        overlap = 0.0 if norm in ("batch", "none") else 0.125
    kw = dict(tile=t, halo=ens.halo, overlap=overlap, batch_size=batch_size, blending=blending, multiple=mult,
              pad_mode="reflect", progress=progress)
    return ens.normalize(img), predictor, kw


#: Pixels per call of ``ensemble_statistics`` in :func:`_predict_streamed` (bounds its temporaries).
_STATS_PIXELS = 1 << 18


def _predict_streamed(
    ens: Ensemble, arr: np.ndarray, *, measure: str, threshold: float, all_maps: bool, **tiling: Any
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """Mean probability, uncertainty maps and per-measure QA scores, reduced band by band from the tiles
    (:func:`~fiji_consensus.tiling.iter_tiled`): the ``(M * V, Y, X)`` stack is never held, only one band
    of it. Every value equals that of :func:`predict_stack` + ``ensemble_statistics`` (pixelwise)."""
    from ..tiling import iter_tiled

    x, predictor, kw = _tiling(ens, arr, **tiling)
    shape = x.shape
    bands = iter_tiled(x, predictor, **kw)
    del x  # the tiler keeps its padded copy only
    prob = np.empty(shape, np.float32)
    keep = _unc.MEASURES if all_maps else (measure,)
    maps = {m: np.empty(shape, np.float32) for m in keep}
    sums = dict.fromkeys(_unc.MEASURES, 0.0)
    n_fg = 0
    rows = max(1, _STATS_PIXELS // shape[1])  # the statistics' float64 temporaries: a few MB at a time
    for b0, b1, band in bands:
        np.clip(band, 0.0, 1.0, out=band)
        for y0 in range(b0, b1, rows):
            y1 = min(y0 + rows, b1)
            st = _unc.ensemble_statistics(band[:, y0 - b0 : y1 - b0])
            prob[y0:y1] = st.pop("mean")
            fg = prob[y0:y1] > threshold
            n_fg += int(np.count_nonzero(fg))
            for m, v in st.items():
                sums[m] += float(v[fg].sum(dtype=np.float64))
                if m in maps:
                    maps[m][y0:y1] = v
            del st
        del band
    qa = {m: (sums[m] / n_fg if n_fg else float("nan")) for m in _unc.MEASURES}
    return prob, maps, qa


@dataclass
class Prediction:
    """The result of :func:`predict` for one image.

    Attributes
    ----------
    probability : (Y, X) float32
        Mean foreground probability over members × views.
    uncertainty : (Y, X) float32
        The chosen uncertainty ``measure`` (absolute scale, see :mod:`fiji_consensus.uncertainty`).
    labels : (Y, X) int32
        Objects (0 = background).
    maps : dict
        Every measure of :data:`fiji_consensus.uncertainty.MEASURES` by name.
    objects : list of dict
        :func:`fiji_consensus.instances.object_table` rows (``mean_uncertainty``/``max_uncertainty`` of
        ``measure``).
    qa_score : float
        Mean ``uncertainty`` over the predicted foreground (NaN if there is none).
    measure, threshold, views, n_members :
        What was used.
    object_threshold : float or None
        The object threshold used (objects count only where their peak probability exceeds it), if any.
    stack : (M * V, Y, X) float32 or None
        The member × view probabilities (only with ``keep_stack=True``).
    qa_scores : dict or None
        Every measure's QA score (mean over the predicted foreground), also of maps not kept
        (``all_maps=False``); None when computed from ``maps`` by the caller (bioimage.io packages).
    """

    probability: Any
    uncertainty: Any
    labels: Any
    maps: dict[str, Any]
    objects: list[dict[str, Any]]
    qa_score: float
    measure: str
    threshold: float
    views: tuple[str, ...]
    n_members: int
    stack: np.ndarray | None = field(default=None, repr=False)
    qa_scores: dict[str, float] | None = None
    object_threshold: float | None = None

    @property
    def foreground(self) -> np.ndarray:
        """The foreground mask the objects come from (before ``min_size``): ``probability > threshold``, and
        with an object threshold only the components whose peak probability exceeds it."""
        return _instances.foreground(np.asarray(self.probability), self.threshold, self.object_threshold)


def _is_dataarray(x: Any) -> bool:
    return type(x).__name__ == "DataArray" and type(x).__module__.split(".")[0] == "xarray"


def _from_dataarray(image: Any, channel: int | None) -> tuple[np.ndarray, Any]:
    dims = tuple(image.dims)
    if not {"y", "x"} <= set(dims):
        raise ValueError(f"a DataArray image must have dims 'y' and 'x'; got dims {dims}")
    cdim = [d for d in dims if d not in ("y", "x")]
    if len(cdim) > 1 or (cdim and cdim[0] not in ("c", "channel")):
        raise ValueError(
            f"a DataArray image must have dims ('y', 'x') or ('c', 'y', 'x'); got {dims} "
            "(3-D stacks are not supported yet)"
        )
    da = image
    if cdim:
        n = int(image.sizes[cdim[0]])
        if channel is None and n > 1:
            raise ValueError(f"the image has {n} channels (dim {cdim[0]!r}); choose one with channel=")
        c = 0 if channel is None else int(channel)
        if not 0 <= c < n:
            raise ValueError(f"channel must be in 0..{n - 1}; got {channel}")
        da = image.isel({cdim[0]: c})
    da = da.transpose("y", "x")
    return np.asarray(da.values), da


def _to_dataarray(arr: np.ndarray, template: Any, name: str) -> Any:
    import xarray as xr

    coords = {k: v for k, v in template.coords.items() if set(v.dims) <= {"y", "x"}}
    return xr.DataArray(arr, dims=("y", "x"), coords=coords, attrs=dict(template.attrs), name=name)


def predict(
    ensemble: Ensemble,
    image: Any,
    *,
    tta: str | Sequence[str] | bool = "flips",
    tile: int = 1152,
    overlap: float | None = None,
    batch_size: int = 1,
    threshold: float | None = None,
    min_size: int | None = None,
    split: str = "none",
    measure: str = "entropy",
    channel: int | None = None,
    keep_stack: bool = False,
    object_threshold: float | None = None,
    all_maps: bool = True,
    progress: bool = False,
) -> Prediction:
    """Predict one image with an ensemble: probability, uncertainty, objects and a QA score.

    Parameters
    ----------
    ensemble : Ensemble
        From :func:`~fiji_consensus.nn.ensemble.load_ensemble`.
    image : numpy.ndarray or xarray.DataArray
        ``(Y, X)``, or ``(C, Y, X)`` / dims ``("c", "y", "x")`` with ``channel``; any real dtype.
    tta : str or sequence of str or bool
        Test-time augmentation views (:func:`resolve_views`): ``"none"``, ``"flips"``, ``"dihedral"``.
    tile, overlap, batch_size :
        Tiling (:func:`predict_stack`): largest window including the halo, fraction of a core shared
        with a neighbour (None: automatic), windows per network call.
    threshold : float, optional
        Foreground is ``probability > threshold``; default the ensemble's (``ensemble.threshold``).
    object_threshold : float, optional
        Keep only objects whose peak probability exceeds it (hysteresis); default the ensemble's
        (``ensemble.object_threshold``, set by ``calibrate``) unless ``threshold`` is given.
    min_size : int, optional
        Smallest object kept (pixels); default the ``min_size`` the ensemble was trained with, else 0.
    split : {"none", "distance", "probability"}
        Watershed split of touching objects (:func:`~fiji_consensus.instances.label_instances`).
    measure : str
        Uncertainty map returned as ``uncertainty`` (:data:`fiji_consensus.uncertainty.MEASURES`);
        default the predictive entropy (total uncertainty, bits).
    channel : int, optional
        0-based channel of a multi-channel image.
    keep_stack : bool
        Also return the ``(M * V, Y, X)`` member × view stack. Without it (the default) the stack is never
        held whole: each band of finished rows is reduced to the maps as the tiles come in, so memory grows
        with the image only by the output maps (about 4 bytes per pixel and map).
    all_maps : bool
        Return every measure in ``maps``; ``False`` keeps only ``measure`` (4 bytes per pixel for each map
        left out; ``qa_scores`` still has every measure's QA score).
    progress : bool
        Progress bar over tiles.

    Returns
    -------
    Prediction
        numpy maps for numpy input; ``xarray.DataArray`` maps (dims ``("y", "x")``, the input's coords and
        attrs) for DataArray input.

    Examples
    --------
    >>> res = predict(load_ensemble("models/wue1"), image, tta="flips")        # doctest: +SKIP
    >>> res.probability.shape, res.labels.max(), res.qa_score                  # doctest: +SKIP
    """
    ens = _check_ensemble(ensemble)
    if measure not in _unc.MEASURES:
        raise ValueError(f"measure must be one of {_unc.MEASURES}; got {measure!r}")
    arr, template = _image_2d(image, channel)
    thr, obj = _instances.resolve_thresholds(ens.threshold, ens.object_threshold, threshold, object_threshold)
    if min_size is None:
        min_size = int((ens.metadata.get("training") or {}).get("min_size", 0) or 0)
    if keep_stack:
        stack = predict_stack(ens, arr, tta=tta, tile=tile, overlap=overlap, batch_size=batch_size, progress=progress)
        stats = _unc.ensemble_statistics(stack)
        prob = stats.pop("mean")
        qa_scores = None
        if not all_maps:
            stats = {measure: stats[measure]}
    else:
        stack = None
        prob, stats, qa_scores = _predict_streamed(
            ens, arr, measure=measure, threshold=thr, all_maps=all_maps, tta=tta, tile=tile, overlap=overlap,
            batch_size=batch_size, blending="cosine", stack_views=None, progress=progress,
        )
    return _assemble_prediction(
        prob, stats, arr, template, threshold=thr, min_size=int(min_size), split=split, measure=measure,
        views=resolve_views(tta), n_members=len(ens.members), stack=stack, qa_scores=qa_scores, object_threshold=obj,
    )


def _image_2d(image: Any, channel: int | None) -> tuple[np.ndarray, Any]:
    """``(2-D array, DataArray template or None)`` of a numpy/xarray image and an optional channel."""
    template = None
    if _is_dataarray(image):
        arr, template = _from_dataarray(image, channel)
    else:
        arr = np.asarray(image)
        if arr.ndim > 3:
            raise ValueError(
                f"image must be 2-D (Y, X) or (C, Y, X) with channel=; got shape {arr.shape}: 3-D stacks and "
                "time series are not supported yet"
            )
        if arr.ndim == 3 and (channel is not None or arr.shape[0] == 1):
            c = 0 if channel is None else int(channel)
            if not 0 <= c < arr.shape[0]:
                raise ValueError(f"channel must be in 0..{arr.shape[0] - 1} for a (C, Y, X) image; got {channel}")
            arr = arr[c]
        elif arr.ndim == 3:
            raise ValueError(
                f"image must be 2-D (Y, X); got shape {arr.shape}. For a (C, Y, X) multi-channel image pass "
                "channel=; 3-D stacks are not supported yet"
            )
    return arr, template


def _assemble_prediction(
    prob: np.ndarray,
    stats: dict[str, np.ndarray],
    arr: np.ndarray,
    template: Any,
    *,
    threshold: float,
    min_size: int,
    split: str,
    measure: str,
    views: tuple[str, ...],
    n_members: int,
    stack: np.ndarray | None,
    qa_scores: dict[str, float] | None = None,
    object_threshold: float | None = None,
) -> Prediction:
    """Objects, QA score and the :class:`Prediction` from a mean probability and the uncertainty maps
    (shared by ensembles and bioimage.io packages, :func:`fiji_consensus.zoo.predict_packages`)."""
    unc = stats[measure]
    labels = _instances.label_instances(prob, threshold=threshold, object_threshold=object_threshold,
                                        min_size=int(min_size), split=split)
    objects = _instances.object_table(labels, image=arr, probability=prob, uncertainty=unc)
    qa = _unc.qa_score(unc, prob, threshold=threshold)
    if template is not None:
        prob_o = _to_dataarray(prob, template, "probability")
        unc_o = _to_dataarray(unc, template, "uncertainty")
        lab_o = _to_dataarray(labels, template, "labels")
        maps = {k: _to_dataarray(v, template, k) for k, v in stats.items()}
    else:
        prob_o, unc_o, lab_o, maps = prob, unc, labels, stats
    return Prediction(
        probability=prob_o, uncertainty=unc_o, labels=lab_o, maps=maps, objects=objects, qa_score=qa,
        measure=measure, threshold=threshold, views=tuple(views), n_members=n_members, stack=stack,
        qa_scores=qa_scores, object_threshold=object_threshold,
    )


def conv_flops(ensemble: Ensemble, shape: tuple[int, int]) -> int:
    """Multiply-add FLOPs (2 per MAC) of the convolutions of one member on a ``shape`` input window.

    Counted with forward hooks on ``Conv2d``/``ConvTranspose2d`` (normalisation, ReLU and pooling are
    negligible and left out).
    """
    net = ensemble.members[0]
    total = [0]

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        k = math.prod(mod.kernel_size)
        cin = mod.in_channels // mod.groups
        if isinstance(mod, torch.nn.ConvTranspose2d):
            n_in = inp[0].shape[-2] * inp[0].shape[-1]
            total[0] += 2 * n_in * mod.in_channels * (mod.out_channels // mod.groups) * k
        else:
            total[0] += 2 * out.shape[-2] * out.shape[-1] * mod.out_channels * cin * k

    convs = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, convs)]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, int(net.config["in_channels"]), *shape, device=ensemble.device))
    finally:
        for h in hooks:
            h.remove()
    return int(total[0])
