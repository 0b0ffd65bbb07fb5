"""Operations on an open ImagePlus, one call each: the consensus of the experts' ROIs in its overlay, and an
ensemble's prediction shown as objects stroked by their uncertainty."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ConsensusConfig
from ..consensus import CONSENSUS_METHODS, consensus_of
from ..style import object_roi_name, uncertainty_color
from .images import from_imageplus
from .jvm import _check_imp, _is_java
from .pull import pull_experts, rasterize
from .push import _argb, push_consensus, push_rois

_CONSENSUS = ConsensusConfig.model_fields


def _default(name: str) -> Any:
    """The default of a consensus option: :class:`~fiji_consensus.config.ConsensusConfig`'s (defined once)."""
    return _CONSENSUS[name].default


def consensus(
    imp: Any,
    *,
    method: str = _default("method"),
    threshold: float = _default("threshold"),
    prior: float | None = _default("prior"),
    max_iter: int = _default("max_iter"),
    min_size: int = _default("min_size"),
    min_votes: int | None = _default("min_votes"),
    min_experts: int | None = _default("min_experts"),
    iou_threshold: float = _default("iou_threshold"),
    ignore: Any = None,
    source: str = "overlay",
    roisets: Mapping[str, str | os.PathLike] | None = None,
    by: str = "auto",
    experts: Sequence[str] | None = None,
    colors: Mapping[str, Any] | None = None,
    roi_manager: bool | None = None,
    return_result: bool = False,
) -> Any:
    """Consensus of the experts' ROIs of an open image, shown in its overlay; one call.

    Reads the experts' ROIs (:func:`pull_experts`), computes the consensus as ``fiji-consensus consensus``
    does (the one switch :func:`fiji_consensus.consensus.consensus_of`; the defaults are
    :class:`~fiji_consensus.config.ConsensusConfig`'s), and replaces the overlay by each expert's outlines (one colour per expert) plus the consensus
    outlines (white, ``consensus:0001``...). Running it again on its output gives the same result (the
    consensus outlines are not taken for an expert).

    Parameters
    ----------
    imp
        The image (``ij.ImagePlus``), with the experts' ROIs in its overlay (or ROI Manager, or ``roisets``).
    method
        ``"staple"``, ``"majority"`` or ``"objects"``.
    threshold, prior, max_iter
        STAPLE's posterior threshold, foreground prior (default: estimated) and iteration cap.
    min_size
        Drop consensus objects smaller than this (pixels).
    min_votes, min_experts, iou_threshold
        Options of majority vote and object consensus (see :mod:`fiji_consensus.consensus`).
    ignore
        Regions left out of the consensus (and of STAPLE's estimate): a ``(Y, X)`` mask, or ROIs
        (``roifile.ImagejRoi`` / ``ij.gui.Roi``) whose areas ImageJ fills.
    source, roisets, by, experts
        Where the experts' ROIs are and how to tell them apart (see :func:`pull_experts`).
    colors, roi_manager
        See :func:`push_consensus`.
    return_result
        Also return a dict: ``experts``, ``masks`` (R, Y, X bool), ``consensus`` (bool), ``labels``,
        ``probability`` (STAPLE, else None), ``sensitivity``/``specificity`` (STAPLE).

    Returns
    -------
    ij.ImagePlus or (ij.ImagePlus, dict)
        The same image, its overlay replaced.

    Examples
    --------
    >>> imp = fiji.to_imageplus(image)                                          # doctest: +SKIP
    >>> fiji.push_consensus(imp, None, {"A": mask_a, "B": mask_b, "C": mask_c})  # doctest: +SKIP
    >>> imp, res = fiji.consensus(imp, return_result=True)                      # doctest: +SKIP
    """
    if method not in CONSENSUS_METHODS:
        raise ValueError(f"method must be 'staple', 'majority' or 'objects'; got {method!r}")
    labels_by_expert = pull_experts(imp, source=source, roisets=roisets, by=by, experts=experts)
    names = list(labels_by_expert)
    if len(names) < 2:
        raise ValueError(f"a consensus needs at least 2 experts; found {len(names)}: {', '.join(names)}")
    masks = np.stack([labels_by_expert[e] > 0 for e in names])
    out = consensus_of(masks, method, threshold=threshold, prior=prior, max_iter=max_iter, min_votes=min_votes,
                       min_experts=min_experts, iou_threshold=iou_threshold, min_size=min_size,
                       ignore=_ignore_mask(ignore, masks.shape[1:]))
    labels = np.asarray(out["labels"], np.int32)
    res: dict[str, Any] = {"experts": names, "masks": masks, "probability": out["probability"],
                           "sensitivity": out["sensitivity"], "specificity": out["specificity"],
                           "labels": labels, "consensus": labels > 0}
    push_consensus(imp, labels, {e: labels_by_expert[e] for e in names}, colors=colors,
                   replace=True, roi_manager=roi_manager)
    imp.setProperty("fiji_consensus.method", method)
    return (imp, res) if return_result else imp


def _ignore_mask(ignore: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """The ``ignore`` of :func:`consensus` as a ``(Y, X)`` bool mask (ROIs filled by ImageJ), or None."""
    if ignore is None:
        return None
    if isinstance(ignore, (list, tuple)) or _is_java(ignore, "ij.gui.Roi"):
        return rasterize(list(ignore) if isinstance(ignore, (list, tuple)) else [ignore], shape) > 0
    mask = np.asarray(ignore)
    if mask.shape != tuple(shape):
        raise ValueError(f"ignore must be a mask of the image's shape {tuple(shape)} or ROIs; got shape {mask.shape}")
    return mask.astype(bool)


def predict(
    imp: Any,
    model: Any,
    *,
    channel: int | None = None,
    tta: str | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    split: str = "none",
    measure: str = "entropy",
    subtract_background: float | None = None,
    replace: bool = True,
    object_threshold: float | None = None,
    roi_manager: bool | None = None,
    return_result: bool = False,
) -> Any:
    """Run an ensemble on an open image and show its objects, stroked by their uncertainty, in the overlay.

    The objects are those ``fiji-consensus predict`` writes: the same names (``0007_u0.132``: object id and
    mean uncertainty, here prefixed ``prediction:``), the same colours (:func:`fiji_consensus.style.
    uncertainty_color`: cyan = certain, yellow, red = maximally uncertain, on the measure's absolute scale)
    and the ROI property ``uncertainty``.

    Parameters
    ----------
    imp
        The image: one 2-D plane, or a multi-channel image with ``channel``.
    model
        What ``fiji-consensus predict --model`` accepts: an ensemble folder or a loaded
        :class:`fiji_consensus.nn.Ensemble` (run by :func:`fiji_consensus.nn.predict.predict` with tiling and
        test-time augmentation; needs the ``train`` extra), a bioimage.io package (``.zip``, ``rdf.yaml`` or its
        folder; several in a list are one ensemble; run by :func:`fiji_consensus.zoo.predict_packages`, needs the
        ``zoo`` extra), a model loaded by :func:`fiji_consensus.models.load_model` (any of these, and Keras
        files), or any callable ``image (Y, X) float32 -> (M, Y, X)`` member probabilities (or ``(Y, X)``).
    tta
        Test-time augmentation: ``"none"``, ``"flips"`` or ``"dihedral"``; default as the CLI's: flips for an
        ensemble, none for packages (ours hold their views inside).
    threshold, min_size
        Foreground threshold on the mean probability and the smallest object (pixels); default the
        ensemble's (0.5 and 0 for a callable).
    object_threshold
        Keep only objects whose peak probability exceeds it (``calibrate`` chooses one); default the
        model's, none when ``threshold`` is given or for a callable.
    split
        Watershed split of touching objects: ``"none"``, ``"distance"`` or ``"probability"``.
    measure
        The uncertainty that colours the objects (:data:`fiji_consensus.uncertainty.MEASURES`).
    channel
        0-based channel of a multi-channel image (ROIs are pushed for every channel).
    subtract_background
        Rolling-ball radius (pixels): the model sees the image minus its background, as after *Process ›
        Subtract Background* on a 32-bit copy (:func:`fiji_consensus.background.subtract_background`; the CLI's
        ``--subtract-background``); the image itself is left as it is. Default: none.
    replace, roi_manager
        See :func:`push_rois` (``replace=False`` adds the objects to, e.g., a consensus overlay; the objects of
        an earlier ``predict`` on this image, named ``prediction:...``, are replaced, never doubled).
    return_result
        Also return a dict: ``probability`` (mean), ``uncertainty`` (``measure``), ``labels``, ``objects``
        (:data:`fiji_consensus.instances.OBJECT_COLUMNS` rows), ``object_uncertainty`` (mean per object),
        ``measure``, ``threshold``, ``object_threshold``.

    Returns
    -------
    ij.ImagePlus or (ij.ImagePlus, dict)
        The same image with the objects in its overlay.

    Examples
    --------
    >>> fiji.predict(imp, "models/wue1")                                       # doctest: +SKIP
    >>> fiji.predict(imp, lambda x: np.stack([x / 255.0, x / 200.0]))          # doctest: +SKIP
    """
    from .. import uncertainty

    image = _plane(imp, channel)
    if measure not in uncertainty.MEASURES:
        raise ValueError(f"measure must be one of {uncertainty.MEASURES}; got {measure!r}")
    if subtract_background is not None:
        from ..background import subtract_background as _subtract

        image = _subtract(image, subtract_background)
    pred = _run_model(_loaded(model), image, tta, threshold, min_size, split, measure, object_threshold)
    if not replace:  # an earlier prediction's objects are replaced (predicting twice must not double them)
        _remove_predictions(imp)
    push_rois(imp, _object_rois(pred, measure), name_prefix="prediction:", replace=replace,
              roi_manager=roi_manager)
    result = {"probability": pred.probability, "uncertainty": pred.uncertainty, "labels": pred.labels,
              "objects": pred.objects,
              "object_uncertainty": np.array([r["mean_uncertainty"] for r in pred.objects], float),
              "measure": measure, "threshold": pred.threshold, "object_threshold": pred.object_threshold}
    return (imp, result) if return_result else imp


@dataclass(frozen=True)
class _Prediction:
    """What :func:`predict` shows: mean probability, uncertainty map, objects (labels and table), threshold."""

    probability: np.ndarray
    uncertainty: np.ndarray
    labels: np.ndarray
    objects: list
    threshold: float
    object_threshold: float | None = None


def _plane(imp: Any, channel: int | None) -> np.ndarray:
    """Step 1 of :func:`predict`: the 2-D plane to predict (a channel of a multi-channel image), float32."""
    _check_imp(imp)
    nc, nz, nt = int(imp.getNChannels()), int(imp.getNSlices()), int(imp.getNFrames())
    if nz * nt != 1 or int(imp.getBitDepth()) == 24:
        raise ValueError(
            f"predict needs a 2-D grayscale image (channels allowed); got {nz} slices, {nt} frames, "
            f"{int(imp.getBitDepth())}-bit"
        )
    if channel is not None and not (isinstance(channel, (int, np.integer)) and 0 <= channel < nc):
        raise ValueError(f"channel must be an int in 0..{nc - 1} (0-based); got {channel!r}")
    if nc > 1 and channel is None:
        raise ValueError(f"the image has {nc} channels; choose one with channel= (0-based)")
    return np.asarray(from_imageplus(imp, squeeze=False)[0, 0, channel or 0], dtype=np.float32)


class _Packages(list):
    """Loaded bioimage.io packages, run together as one ensemble."""


def _loaded(model: Any) -> Any:
    """Step 2 of :func:`predict`: paths loaded as the CLI loads them: bioimage.io packages
    (:class:`_Packages`) or an ensemble folder (an Ensemble); anything else as it is."""
    paths = [model] if isinstance(model, (str, os.PathLike)) else model if isinstance(model, (list, tuple)) else None
    if not (paths and all(isinstance(m, (str, os.PathLike)) for m in paths)):
        return model
    from ..keras.member import is_keras_model
    from ..zoo import is_package

    keras = [str(m) for m in paths if is_keras_model(m)]
    if keras:
        raise ValueError(f"{keras}: a plain Keras model needs its normalisation; pass "
                         "fiji_consensus.models.load_model(path, keras_normalization='percentile:1,99.8') as the model")
    if all(is_package(m) for m in paths):
        from ..zoo import load_package

        return _Packages(load_package(m) for m in paths)
    if len(paths) == 1:
        from ..nn import load_ensemble

        return load_ensemble(paths[0])
    raise ValueError(f"several models must all be bioimage.io packages (.zip); got {[str(m) for m in paths]}")


def _is_predictor(model: Any) -> bool:
    """A :class:`fiji_consensus.models.Predictor` (``kind``, ``members``, ``predict``, ``describe``)."""
    return all(hasattr(model, a) for a in ("kind", "members", "predict", "describe"))


def _run_model(model: Any, image: np.ndarray, tta: str | None, threshold: float | None, min_size: int | None,
               split: str, measure: str, object_threshold: float | None = None) -> _Prediction:
    """Step 3 of :func:`predict`: the loaded model run on the plane: packages and ensembles as the CLI runs
    them (default views: none for packages, flips for an ensemble), a callable's members through the
    package's statistics and object labelling."""
    if _is_predictor(model):  # a Predictor of load_model (the models layer above: duck-typed, never imported)
        res = model.predict(image, tta=tta, threshold=threshold, min_size=min_size, split=split, measure=measure,
                            object_threshold=object_threshold)
    elif isinstance(model, _Packages):
        from ..zoo import predict_packages

        res = predict_packages(list(model), image, tta=tta or "none", threshold=threshold, min_size=min_size,
                               split=split, measure=measure, object_threshold=object_threshold)
    elif hasattr(model, "predict_members") and hasattr(model, "members"):
        from ..nn.predict import predict as nn_predict

        res = nn_predict(model, image, tta=tta or "flips", threshold=threshold, min_size=min_size, split=split,
                         measure=measure, object_threshold=object_threshold)
    elif callable(model):
        return _run_callable(model, image, threshold, min_size, split, measure, object_threshold)
    else:
        raise TypeError(
            f"model must be an ensemble folder, a bioimage.io package, an Ensemble, a load_model Predictor or a callable;"
            f" got {type(model).__name__}"
        )
    return _Prediction(res.probability, res.uncertainty, res.labels, res.objects, res.threshold,
                       getattr(res, "object_threshold", None))


def _run_callable(model: Any, image: np.ndarray, threshold: float | None, min_size: int | None, split: str,
                  measure: str, object_threshold: float | None = None) -> _Prediction:
    """A callable ``image -> (M, Y, X)`` member probabilities (or ``(Y, X)``): mean, uncertainty, objects."""
    from .. import instances, uncertainty

    stack = np.asarray(model(image), dtype=np.float32)
    if stack.shape == image.shape:
        stack = stack[None]
    if stack.ndim != 3 or stack.shape[1:] != image.shape:
        raise ValueError(
            f"model must return (Y, X) or (M, Y, X) probabilities for a {image.shape} image; got {stack.shape}"
        )
    stats = uncertainty.ensemble_statistics(stack)
    prob, unc = stats["mean"], stats[measure]
    thr, obj = instances.resolve_thresholds(0.5, None, threshold, object_threshold)
    labels = instances.label_instances(prob, threshold=thr, object_threshold=obj, min_size=int(min_size or 0),
                                       split=split)
    objects = instances.object_table(labels, image=image, probability=prob, uncertainty=unc)
    return _Prediction(prob, unc, labels, objects, thr, obj)


def _object_rois(pred: _Prediction, measure: str) -> list:
    """Step 4 of :func:`predict`: the objects' outlines, named and stroked as the CLI writes them."""
    from ..rois import labels_to_rois

    names = {r["id"]: object_roi_name(r["id"], r["mean_uncertainty"]) for r in pred.objects}
    rois = labels_to_rois(pred.labels, names=names)
    for roi, r in zip(rois, pred.objects):
        roi.stroke_color = _argb(uncertainty_color(r["mean_uncertainty"], measure), "stroke_color")
        roi.properties = {"uncertainty": f"{r['mean_uncertainty']:.4f}", "measure": measure}
    return rois


def _remove_predictions(imp: Any) -> None:
    """The ROIs of an earlier :func:`predict` (named ``prediction:...``) taken out of the image's overlay."""
    ov = imp.getOverlay()
    if ov is not None:
        for i in reversed(range(int(ov.size()))):
            if str(ov.get(i).getName() or "").startswith("prediction:"):
                ov.remove(i)
