"""The prediction job: an ensemble folder + images → Fiji-ready probability, uncertainty and objects.

:func:`run_predict` reads every image (8-/16-bit or float TIFF/PNG; a chosen channel of a multi-channel
image), predicts it with :func:`fiji_consensus.nn.predict.predict` (tiles, test-time augmentation,
uncertainty, objects) and writes, per image id (the file stem), into ``config.out``::

    probability/<id>.tif     float32 mean foreground probability (absolute, 0..1), input calibration
    uncertainty/<id>.tif     float32 uncertainty map (``config.uncertainty``; absolute scale, never
                             rescaled per image: entropies and U in 0..1 bits, std in 0..0.5)
    labels/<id>.tif          objects as a label image (uint16; int32 beyond 65535 objects: style.label_dtype)
    rois/<id>.zip            RoiSet: one ROI per object, named "<object id>_u<mean uncertainty>" (e.g.
                             "0007_u0.132"), outline coloured by its mean uncertainty (UNCERTAINTY_COLORS:
                             cyan = certain → yellow → red = maximally uncertain, absolute scale)
    overlays/<id>.tif        ImageJ hyperstack, 3 channels (image, probability, uncertainty; float32),
                             the input's calibration, the ROIs as overlay
    objects/<id>.csv         one row per object (:data:`fiji_consensus.instances.OBJECT_COLUMNS` + roi_name)
    per_image/<id>.json      per-image record, written last: an image is *done* when it exists

and for the whole run ``objects.csv`` (all objects, with an ``image`` column), ``images.csv`` (one row per
image with its QA score, in review order: most uncertain first), ``summary.json`` and ``config.json``
(the settings, package versions and the model's checksums).

Out of domain: each image's statistics (:mod:`fiji_consensus.domain`, computed on what the model saw) are
checked against the training range the model stores; the ``out_of_domain`` column of ``images.csv`` names
those outside it ("unchecked" when the model stores none). ``config.subtract_background`` (a rolling-ball
radius) gives the model the image minus its background (:mod:`fiji_consensus.background`, Fiji's Subtract
Background); the written overlay keeps the image as it was.

Resume and overwrite: images whose ``per_image/<id>.json`` exists are skipped, so rerunning the same
command continues an interrupted run (or adds new images). The settings that change results must match
those in ``config.json`` once an image is finished; a run that finished no image (it failed or was killed
early) binds nothing, so the corrected rerun needs no ``overwrite``. ``overwrite=True`` deletes the previous
run's outputs (also of images not given this time) and predicts every image again.

Folders: predict writes only into a new or empty folder, or one it made (``.fiji-consensus.json``, see
:func:`fiji_consensus._atomic.claim_folder`); a folder holding anything else is refused, also with
``overwrite``. Every file is written atomically, and an image's files are first written under hidden
temporary names and moved into place together when all are written, the per-image record last: a kill
leaves either all of an image's files or none that looks finished. Temporary files a killed run left
(``.<name>.XXXXXXXX.part``) are removed by the next run.

Memory: the member x view probabilities are reduced to the maps band by band as the tiles come in
(:func:`fiji_consensus.tiling.iter_tiled`), so memory grows with the image by the input, the output maps
and the written files only (tests/benchmarks/bench_memory.py).

Failures: an image that cannot be used (unreadable, a 3-D stack, multi-channel without a channel choice,
NaN values) is skipped with a logged error and listed in the summary's ``failed``; the summary then has
``ok = False`` and an ``error`` message, and the CLI exits non-zero. Other errors (a broken model, a full
disk) stop the run.

Scaling out: with ``config.dask`` (CLI ``--scheduler``/``--workers``) every image is a task on a Dask
cluster, running the same per-image function (:func:`_run_image`) with the same files as a result; a zarr
input (an image larger than memory) is predicted block by block into a zarr output. Both are in
:mod:`fiji_consensus.distributed` (the ``distributed`` extra).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .. import io as fio
from .._atomic import claim_folder, commit_staged, remove_temporary, staging_path
from ..config import PredictConfig
from ..instances import OBJECT_COLUMNS
from ..models import Predictor, load_model, model_kind, model_sha256
from ..style import UNCERTAINTY_COLORS, as_label_output, object_roi_name, uncertainty_color, uncertainty_lut
from ..uncertainty import MEASURES, review_order

__all__ = ["PredictConfig", "run_predict", "read_input", "uncertainty_color", "UNCERTAINTY_COLORS", "ImageInputError"]

logger = logging.getLogger(__name__)


_PER_IMAGE = "per_image"


#: Settings that do not change results (left out when resuming is checked).
_NOT_COMPARED = {"inputs", "out", "overwrite", "batch_size", "device", "threads", "dask", "chunk", "trust_code"}


#: The one image reader with calibration lives in :mod:`fiji_consensus.io`; kept importable from here.
read_input = fio.read_input
ImageInputError = fio.ImageInputError


# --------------------------------------------------------------------------------------------- colours


# --------------------------------------------------------------------------------------------- job


def _collect_inputs(inputs: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            items = fio.list_images(p)
        elif p.is_file():
            items = {p.stem: p}
        else:
            raise FileNotFoundError(f"input {p} does not exist")
        for image_id, path in items.items():
            if image_id in found and found[image_id].resolve() != path.resolve():
                raise ValueError(
                    f"two input images have the id {image_id!r}: {found[image_id]} and {path}; ids (file "
                    "stems) must be unique because outputs are named by id"
                )
            found[image_id] = path
    return found


#: Settings added later, compared only when set (a folder of an older version, without them, can resume).
_LATER_OPTIONAL = {"subtract_background", "subtract_background_if_flagged"}


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items()
            if k not in _NOT_COMPARED and not (k in _LATER_OPTIONAL and v in (None, False))}


def _is_predict_folder(out: Path) -> bool:
    """A prediction folder made before :data:`~fiji_consensus._atomic.OWNER_FILE` existed: its config.json."""
    try:
        return fio.read_json(out / "config.json").get("command") == "predict"
    except (OSError, ValueError, AttributeError):
        return False


#: Run-level outputs (besides the per-image files of :data:`_IMAGE_FILES`).
_RUN_FILES = ("objects.csv", "images.csv", "summary.json")


def _prepare_out(out: Path, record: dict[str, Any], *, overwrite: bool) -> None:
    """Claim ``out`` for this run: refuse a folder predict did not make (whatever it holds, also with
    ``overwrite``) and, unless ``overwrite``, one holding finished images of other settings or another model.
    With ``overwrite`` the previous run's outputs are deleted; temporary files of killed runs always are."""
    claim_folder(out, "predict", legacy=_is_predict_folder, create=False)
    cfg_file = out / "config.json"
    finished = (out / _PER_IMAGE).is_dir() and any((out / _PER_IMAGE).glob("*.json"))
    if finished and not overwrite:  # a failed or killed run that finished no image binds nothing
        if not cfg_file.is_file():
            raise FileExistsError(
                f"{out} holds finished predictions but no config.json (their settings are unknown); use "
                "another folder, or overwrite=True (CLI: --overwrite) to predict every image again"
            )
        previous = fio.read_json(cfg_file)
        same = _comparable(previous.get("config", {})) == _comparable(record["config"])
        same = same and previous.get("model_sha256") == record["model_sha256"]
        if not same:
            raise ValueError(
                f"{out} holds predictions made with other settings or another model (see {cfg_file}); use "
                "the same settings to continue, another folder, or overwrite=True (CLI: --overwrite)"
            )
    claim_folder(out, "predict", legacy=_is_predict_folder)
    removed = remove_temporary(out)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), out)
    if overwrite:  # the previous run's outputs, also of images not given this time
        for sub, suffix in _IMAGE_FILES:
            for f in (out / sub).glob(f"*{suffix}") if (out / sub).is_dir() else ():
                f.unlink()
        for name in _RUN_FILES:
            (out / name).unlink(missing_ok=True)


def _predict_one(
    model: Predictor, image_id: str, path: Path, config: PredictConfig, out: Path, *, progress: bool
) -> dict[str, Any]:
    from ..domain import BACKGROUND_STATISTICS, background_above, describe_flags

    t0 = time.perf_counter()
    image, info = read_input(path, channel=config.channel)
    always = config.subtract_background if not config.subtract_background_if_flagged else None
    radius, because = always, []
    model_input = _subtracted(image, always) if always else image
    res, fg, checked = _predict_and_check(model, model_input, config, progress=progress)
    if config.subtract_background_if_flagged and background_above(checked or []):
        # the background is brighter or more uneven than in training: predicted again after the rolling ball
        because = [f for f in checked if f["statistic"] in BACKGROUND_STATISTICS]
        radius = config.subtract_background or _suggested_radius(model)
        if radius is None:
            raise ValueError(
                "subtract_background_if_flagged needs a radius: the model stores no object sizes to suggest one; "
                "give one (CLI: --subtract-background R)"
            )
        logger.warning("%s: %s; predicted again with the background subtracted (rolling ball radius %g)",
                       image_id, describe_flags(because), radius)
        model_input = _subtracted(image, radius)
        res, fg, checked = _predict_and_check(model, model_input, config, progress=progress)
    t_pred = time.perf_counter() - t0
    flags = checked or []
    if flags:
        logger.warning("%s looks unlike the model's training images (check its result): %s%s%s", image_id,
                       describe_flags(flags), _background_hint(flags, model) if radius is None else "",
                       _texture_hint(flags))
    # every output is written under a hidden temporary name first and moved into place only when all are
    # written, the per-image record last: a kill leaves either all of this image's files or none that looks
    # finished (the temporary ones are removed by the next run)
    staged: list[tuple[Path, Path]] = []

    def stage(sub: str, suffix: str) -> Path:
        target = out / sub / f"{image_id}{suffix}"
        tmp = staging_path(target)
        staged.append((tmp, target))
        return tmp

    try:
        _write_image_outputs(image, info, res, config, stage)
        record = {
            "image": image_id,
            "path": str(path),
            "input": {k: info[k] for k in ("axes", "shape", "dtype", "spacing", "unit")},
            "channel": config.channel,
            "subtract_background": radius,
            "background_subtracted_because": because,
            "shape": list(res.probability.shape),
            "n_objects": len(res.objects),
            "foreground_fraction": float(fg.mean()),
            "qa_score": res.qa_score,
            "out_of_domain": [f["statistic"] for f in flags],
            "domain_checked": checked is not None,
            "domain_flags": flags,
            "measure": res.measure,
            "mean_uncertainty": float(res.uncertainty.mean(dtype=np.float64)),
            "qa_scores": res.qa_scores if res.qa_scores is not None else {
                k: (float(v[fg].mean(dtype=np.float64)) if fg.any() else float("nan")) for k, v in res.maps.items()},
            "threshold": res.threshold,
            "object_threshold": res.object_threshold,
            "views": list(res.views),
            "n_members": res.n_members,
            **model.describe(),
            "seconds_predict": t_pred,
            "seconds": time.perf_counter() - t0,
        }
        fio.write_json(stage(_PER_IMAGE, ".json"), record, overwrite=True)
        commit_staged(staged)  # the record last
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return record


def _subtracted(image: np.ndarray, radius: float) -> np.ndarray:
    """The image minus its rolling-ball background; an image too small for the ball fails alone."""
    from ..background import subtract_background

    try:
        return subtract_background(image, radius)
    except ValueError as exc:
        raise ImageInputError(str(exc)) from exc


def _predict_and_check(
    model: Predictor, model_input: np.ndarray, config: PredictConfig, *, progress: bool
) -> tuple[Any, np.ndarray, list[dict[str, Any]] | None]:
    """The prediction, its foreground and the out-of-domain check of what the model saw."""
    res = model.predict(
        model_input, tta=config.tta, tile=config.tile, overlap=config.overlap, batch_size=config.batch_size,
        threshold=config.threshold, object_threshold=config.object_threshold, min_size=config.min_size,
        split=config.split, measure=config.uncertainty,
        all_maps=False,  # the other measures only as QA scores: 4 bytes per pixel and measure saved
        progress=progress,
    )
    fg = res.foreground
    return res, fg, _domain_flags(model, model_input, fg)


def _suggested_radius(model: Predictor) -> int | None:
    from ..domain import suggested_background_radius

    return suggested_background_radius((_domain_meta(model) or {}).get("domain"))


def _background_hint(flags: list[dict[str, Any]], model: Predictor) -> str:
    """What to try when the background is brighter or more uneven than in training (nothing when the
    background was subtracted): the option, with a radius from the model's training objects."""
    from ..domain import background_above

    if not background_above(flags):
        return ""
    r = _suggested_radius(model)
    return (f"; a bright or uneven background: try --subtract-background {r or 'R'} (Fiji's Process > Subtract "
            "Background, rolling ball radius" + (f" {r}: twice the diameter of the model's typical object)"
                                                   if r else " R: at least the diameter of the largest objects)")
            + "; --subtract-background-if-flagged does it for such images only")


def _texture_hint(flags: list[dict[str, Any]]) -> str:
    """What a background textured at the objects' scale means: no background subtraction removes it."""
    from ..domain import flagged_above

    if not flagged_above(flags, ("background_texture",)):
        return ""
    return ("; a background textured at the objects' scale (tissue structure, vessels, folds): subtracting the "
            "background does not remove it, and the model may miss objects there or take the texture for them; "
            "choose the threshold on two annotated images (calibrate) or fine-tune (train --init)")


def _domain_meta(model: Predictor) -> dict[str, Any] | None:
    """The metadata of the model's first member that stores a training range (None: none does)."""
    return next((m for m in model.metadata if m.get("domain")), None)


def _domain_flags(model: Predictor, image: np.ndarray, fg: np.ndarray) -> list[dict[str, Any]] | None:
    """Statistics of the image (with the prediction as foreground) outside the model's training range
    (:mod:`fiji_consensus.domain`); None when the model stores no training range (nothing was checked)."""
    from ..domain import check, image_stats, normalization_percentiles

    meta = _domain_meta(model)
    if meta is None:
        return None
    img = np.asarray(image)  # the 2-D plane read_input gave (the chosen channel)
    if img.shape != fg.shape:
        return []
    pct = normalization_percentiles(meta.get("normalization"))
    return check(image_stats(img, fg, percentiles=pct), meta["domain"])


def _write_image_outputs(image: np.ndarray, info: dict[str, Any], res: Any, config: PredictConfig, stage: Any) -> None:
    """Write one image's files (not its record) to the names ``stage(subfolder, suffix)`` gives."""
    from .. import rois as R

    kw = {"overwrite": True, "calibration": info}
    fio.write_tiff(stage("probability", ".tif"), res.probability.astype(np.float32, copy=False), **kw)
    fio.write_tiff(stage("uncertainty", ".tif"), res.uncertainty.astype(np.float32, copy=False), **kw)
    fio.write_tiff(stage("labels", ".tif"), as_label_output(res.labels), **kw)
    names = {r["id"]: object_roi_name(r["id"], r["mean_uncertainty"]) for r in res.objects}
    rois = R.labels_to_rois(res.labels, names=names)
    rois = [R.set_stroke(roi, uncertainty_color(r["mean_uncertainty"], config.uncertainty))
            for roi, r in zip(rois, res.objects)]
    R.write_roiset(stage("rois", ".zip"), rois, overwrite=True)
    hyper = np.empty((3, *res.probability.shape), np.float32)
    hyper[0], hyper[1], hyper[2] = image, res.probability, res.uncertainty
    R.write_imagej_tiff(
        stage("overlays", ".tif"),
        hyper,
        rois=rois,
        overwrite=True,
        channel_names=["image", "probability", f"uncertainty ({config.uncertainty})"],
        spacing=info.get("spacing"),
        unit=info.get("unit"),
        luts=["gray", "green", uncertainty_lut()],
    )
    del hyper
    rows = [{**r, "roi_name": names[r["id"]]} for r in res.objects]
    fio.write_csv(stage("objects", ".csv"), rows, columns=[*OBJECT_COLUMNS, "roi_name"], overwrite=True)


def run_predict(config: PredictConfig, *, progress: bool = False) -> dict[str, Any]:
    """Predict every input image with the ensemble and write Fiji-ready outputs (see the module docstring).

    Parameters
    ----------
    config : PredictConfig
        What to predict and how.
    progress : bool
        Progress bars over images and tiles (tqdm, on stderr).

    Returns
    -------
    dict
        The summary (also written to ``summary.json``): ``ok`` (False when some image failed), ``error``
        (when not ok), ``n_images``, ``n_predicted``, ``n_skipped`` (done earlier), ``n_failed``,
        ``failed`` (``image``, ``path``, ``error``), ``n_objects``, ``review`` (up to 20 image ids, most
        uncertain first), ``mean_qa_score``, ``out_of_domain`` (images unlike the training images),
        ``background_subtracted`` (images the model saw after the rolling ball),
        ``domain_unchecked`` (images not checked: the model stores no training range), ``seconds``,
        ``seconds_per_image``, ``out``.

    Examples
    --------
    >>> cfg = PredictConfig(model="models/wue1", inputs=["images"], out="predictions/wue1")  # doctest: +SKIP
    >>> run_predict(cfg)["ok"]                                                             # doctest: +SKIP
    True
    """
    if config.tta is None:  # packages hold their views inside; ensemble folders get the flips
        config = config.model_copy(update={"tta": "none" if model_kind(config.models) == "packages" else "flips"})
    if (config.subtract_background or config.subtract_background_if_flagged) and _zarr_input(config):
        raise ValueError(
            f"subtract_background ({config.subtract_background}, if flagged: {config.subtract_background_if_flagged})"
            " is not available for a zarr input (an image larger than memory is predicted block by block); "
            "expected TIFF/PNG images, or subtract the background first (Fiji: Process > Subtract Background)"
        )
    if config.dask is not None or _zarr_input(config):
        from ..distributed import PredictSteps, run_predict_dask  # the distributed and chunked (zarr) paths

        # the job hands Dask its own steps: distributed never imports this module
        steps = PredictSteps(_start, _run_image, _finish, _remove_partial_files, _zarr_input, _load_model,
                             _model_sha256)
        return run_predict_dask(config, progress=progress, steps=steps)
    from .._validate import require

    require("torch", extra="train")
    import torch

    t0 = time.perf_counter()
    images, out, record = _start(config)
    if config.threads is not None:
        torch.set_num_threads(int(config.threads))
    model = _load_model(config)
    fio.write_json(out / "config.json", record, overwrite=True)

    ids = list(images)
    it: Any = ids
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(ids, desc="predict", unit="image")
    results = {i: _run_image(model, i, images[i], config, out, progress=progress) for i in it}
    return _finish(out, config, images, results, [], time.perf_counter() - t0)


def _zarr_input(config: PredictConfig) -> bool:
    """Whether the inputs are one zarr array/group (the chunked path for images larger than memory)."""
    return any(
        Path(p).suffix.lower() == ".zarr" or (Path(p) / ".zarray").is_file() or (Path(p) / "zarr.json").is_file()
        or (Path(p) / ".zgroup").is_file()
        for p in config.inputs
    )


def _start(config: PredictConfig) -> tuple[dict[str, Path], Path, dict[str, Any]]:
    """Inputs by id, the prepared output folder and the run record (with the model's checksum)."""
    import platform

    import torch

    images = _collect_inputs(list(config.inputs))
    model_sha = _model_sha256(config)  # a missing package or ensemble.json fails here
    out = Path(config.out)
    record = {
        "tool": "fiji-consensus",
        "command": "predict",
        "version": __version__,
        "config": config.model_dump(mode="json"),
        "model_sha256": model_sha,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }
    _prepare_out(out, record, overwrite=config.overwrite)
    return images, out, record


#: Output files of one image: (subfolder, suffix), named ``<subfolder>/<id><suffix>``.
_IMAGE_FILES = (
    ("probability", ".tif"), ("uncertainty", ".tif"), ("labels", ".tif"), ("rois", ".zip"),
    ("overlays", ".tif"), ("objects", ".csv"), (_PER_IMAGE, ".json"),
)


def _remove_partial_files(out: Path, image_id: str) -> list[Path]:
    """Delete the temporary files (``.<name>.XXXXXXXX.part``, see :mod:`fiji_consensus._atomic`) that a
    killed process left while writing the outputs of ``image_id``; returns them."""
    removed = []
    for sub, suffix in _IMAGE_FILES:
        d = out / sub
        if d.is_dir():
            # staged files (.<id><suffix>.XXXXXXXX.part) and the temporaries of their atomic writes (..<staged>...)
            for f in d.glob(".*.part"):
                if f.name.lstrip(".").startswith(f"{image_id}{suffix}."):
                    f.unlink(missing_ok=True)
                    removed.append(f)
    return removed


def _load_model(config: PredictConfig) -> Predictor:
    """The model of ``config`` (an ensemble folder, packages, Keras files), as the run and every Dask task load it.
    Says once when its training range lacks statistics that this version checks (trained before they were added).
    An object threshold below the threshold it will be used with fails here, before any image is predicted."""
    from ..domain import missing_statistics
    from ..instances import resolve_thresholds

    model = load_model(config.models, device=config.device, trust_code=config.trust_code,
                       keras_normalization=config.keras_normalization)
    resolve_thresholds(*model.thresholds, config.threshold, config.object_threshold)
    meta = _domain_meta(model)
    missing = missing_statistics(meta["domain"]) if meta is not None else []  # none stored: said per image
    if missing:
        logger.warning("the model stores no training range for %s (trained before fiji-consensus checked it), so "
                       "images are not checked for it; `fiji-consensus package --domain-lab DIR` (its training "
                       "labs) adds it", ", ".join(missing))
    return model


def _model_sha256(config: PredictConfig) -> str:
    """The model's checksum that the run records (and that Dask tasks check before loading the model)."""
    return model_sha256(config.models)


def _run_image(
    model: Predictor, image_id: str, path: Path, config: PredictConfig, out: Path, *, progress: bool = False
) -> tuple[str, dict[str, Any]]:
    """Predict one image unless it is done: ``("predicted" | "skipped", per-image record)`` or
    ``("failed", {"image", "path", "error"})`` for an :class:`ImageInputError`; other errors propagate.

    One task of a run: the sequential loop and the Dask workers call it alike.
    """
    marker = out / _PER_IMAGE / f"{image_id}.json"
    if marker.is_file() and not config.overwrite:
        try:
            return "skipped", fio.read_json(marker)
        except ValueError:  # a damaged marker: predict again
            logger.warning("%s is damaged; predicting %s again", marker, image_id)
    stale = _remove_partial_files(out, image_id)
    if stale:
        logger.info("removed %d temporary file(s) of an interrupted write of %s", len(stale), image_id)
    for sub, suffix in _IMAGE_FILES:  # not done: nothing of this image may look finished, even if it fails now
        (out / sub / f"{image_id}{suffix}").unlink(missing_ok=True)
    try:
        return "predicted", _predict_one(model, image_id, path, config, out, progress=progress)
    except ImageInputError as exc:
        logger.error("image %s skipped: %s", image_id, exc)
        return "failed", {"image": image_id, "path": str(path), "error": str(exc)}


_IMAGE_COLS = [
    "rank", "image", "qa_score", "out_of_domain", "subtract_background", "n_objects", "foreground_fraction",
    "mean_uncertainty", "qa_entropy", "qa_expected_entropy", "qa_mutual_information", "qa_std", "qa_deepflash2",
    "height", "width", "seconds", "path",
]


def _finish(
    out: Path,
    config: PredictConfig,
    images: dict[str, Path],
    results: dict[str, tuple[str, dict[str, Any]]],
    failed: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """``images.csv``, ``objects.csv`` and ``summary.json`` from every image's ``(status, record)`` of
    :func:`_run_image`; ``failed``: images whose task failed elsewhere (Dask), ``{"image", "path", "error"}``."""
    done: dict[str, dict[str, Any]] = {}
    failed = list(failed)
    n_pred = n_skip = 0
    for image_id, (status, rec) in results.items():
        if status == "failed":
            failed.append(rec)
        else:
            done[image_id] = rec
            n_pred += status == "predicted"
            n_skip += status == "skipped"
    failed.sort(key=lambda f: list(images).index(f["image"]))
    order = review_order({i: r.get("qa_score") for i, r in done.items()})
    rows = []
    for rank, i in enumerate(order, start=1):
        r = done[i]
        q = r.get("qa_scores", {})
        rows.append({
            "rank": rank, "image": i, "qa_score": _nan(r.get("qa_score")),
            "out_of_domain": (" ".join(r.get("out_of_domain") or []) if r.get("domain_checked", True)
                              else "unchecked"),
            "subtract_background": r.get("subtract_background"),
            "n_objects": r["n_objects"],
            "foreground_fraction": r["foreground_fraction"], "mean_uncertainty": r["mean_uncertainty"],
            **{f"qa_{k}": _nan(q.get(k)) for k in MEASURES},
            "height": r["shape"][0], "width": r["shape"][1], "seconds": r.get("seconds"), "path": r["path"],
        })
    fio.write_csv(out / "images.csv", rows, columns=_IMAGE_COLS, overwrite=True)
    all_objects = []
    for i in sorted(done):
        f = out / "objects" / f"{i}.csv"
        if f.is_file():
            with open(f, encoding="utf-8", newline="") as fh:
                all_objects += [{"image": i, **r} for r in csv.DictReader(fh)]
    fio.write_csv(out / "objects.csv", all_objects, columns=["image", *OBJECT_COLUMNS, "roi_name"], overwrite=True)
    qa = [r["qa_score"] for r in rows if r["qa_score"] is not None and math.isfinite(r["qa_score"])]
    summary: dict[str, Any] = {
        "ok": not failed,
        "command": "predict",
        "out": str(out.resolve()),
        "model": (str(Path(config.model).resolve()) if not isinstance(config.model, list)
                  else [str(Path(m).resolve()) for m in config.model]),
        "measure": config.uncertainty,
        "tta": config.tta,
        "n_images": len(images),
        "n_predicted": n_pred,
        "n_skipped": n_skip,
        "n_failed": len(failed),
        "failed": failed,
        "n_objects": int(sum(r["n_objects"] for r in done.values())),
        "mean_qa_score": float(np.mean(qa)) if qa else float("nan"),
        "out_of_domain": sorted(i for i, r in done.items() if r.get("out_of_domain")),
        "background_subtracted": sorted(i for i, r in done.items() if r.get("subtract_background")),
        "domain_unchecked": sorted(i for i, r in done.items() if not r.get("domain_checked", True)),
        "review": order[:20],
        "seconds": seconds,
        "seconds_per_image": seconds / n_pred if n_pred else float("nan"),
    }
    if failed:
        shown = "; ".join(f"{f['image']}: {f['error']}" for f in failed[:5])
        summary["error"] = f"{len(failed)} of {len(images)} image(s) could not be predicted: {shown}" + (
            " ..." if len(failed) > 5 else ""
        )
    fio.write_json(out / "summary.json", summary, overwrite=True)
    if summary["domain_unchecked"]:
        logger.warning(
            "%d image(s) were not checked for being unlike the training images: the model stores no training "
            "range of image statistics (trained before fiji-consensus recorded one; `fiji-consensus package "
            "--domain-lab DIR` adds it from the training labs); their out_of_domain column says 'unchecked'",
            len(summary["domain_unchecked"]),
        )
    logger.info(
        "predicted %d, skipped %d (done earlier), failed %d of %d images -> %s",
        n_pred, n_skip, len(failed), len(images), out,
    )
    return summary


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)
