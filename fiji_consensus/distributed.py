"""Prediction and training on Dask: many images, parallel ensemble members, images larger than memory.

Everything here needs the ``distributed`` extra (``pip install 'fiji-consensus[distributed]'``: dask,
distributed, zarr); dask is imported inside the functions only, so ``import fiji_consensus`` and the
single-machine paths never load it. A cluster is named by :class:`~fiji_consensus.config.DaskOptions`:
``scheduler`` (the address or scheduler file of a running cluster: ``dask scheduler``, dask-jobqueue on
SLURM/PBS, dask-kubernetes, dask-gateway, ...) or ``workers`` (a local cluster of that many worker
processes). The machines must see the same files (a shared file system): workers read the inputs and the
model and write the outputs.

Batch prediction (:func:`run_predict_dask`, what ``fiji-consensus predict --scheduler/--workers`` runs):
one task per image, running the same function as the single-machine loop
(:func:`fiji_consensus.predict.run_predict`), so the files are identical, with any model the job loads (an
ensemble folder, bioimage.io packages, Keras files). Each worker process loads the model once and keeps it
(:func:`cached_model`, keyed by the model's paths, its SHA-256 when the run started, the device and the
loading options); the workers write every output file atomically, and a task that starts
again after its worker died first removes the temporary files the dead one left. Failed tasks are retried
(``retries``) and then reported in the summary (``failed``; the CLI exits with 1); images done earlier are
skipped as in a single-machine run, so rerunning the same command continues.

Parallel training (:func:`train_members`, ``fiji-consensus train --scheduler/--workers``): one task per
ensemble member (:func:`fiji_consensus.nn.train.train_member`); the data are prepared once on the client
and broadcast. A member depends only on its split and seed, so the members equal those of a sequential run
bit for bit on CPUs with the same number of torch threads (``threads``). A time budget (``max_minutes``) is
split among the members as in a sequential run, so a parallel run ends sooner.

Threads: unless ``threads`` is set, every task sets torch's threads so that the workers on one host share
its cores without oversubscription: ``cores // (Dask threads on the host)`` for prediction and
``cores // (worker processes on the host)`` for training (one member at a time per process; the torch
random generator is per process).

Images larger than memory (:func:`predict_dask_array`, :func:`predict_zarr`; ``fiji-consensus predict
IMAGE.zarr --out OUT.zarr``): a chunked 2-D zarr array (or OME-Zarr image) is normalised with its exact
global percentiles (:func:`exact_percentiles`, as the in-memory path), cut into blocks of ``chunk``² pixels
and predicted block by block with :func:`dask.array.map_overlap` (depth = the ensemble's halo, so that every
pixel sees its whole receptive field; the image border is mirrored as in the in-memory path). The
probability and uncertainty maps go to a chunked zarr group; they equal the in-memory tiled prediction
(to float rounding, about 1e-6), seams included. Objects (labels, ROIs) are not computed on this path.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._validate import require
from .config import DaskOptions, PredictConfig
from .chunked import exact_percentiles, open_zarr_image, predict_dask_array, predict_zarr
from .cluster import (  # noqa: F401  (the private ones: the tests run them on the workers)
    LOADS,
    _cpu_count,
    _dask,
    _failure,
    _load_count,
    _set_task_threads,
    _threads_plan,
    _wait_all,
    _workers,
    cached_ensemble,
    cached_model,
    dask_client,
)

__all__ = [
    "dask_client",
    "map_images",
    "PredictSteps",
    "run_predict_dask",
    "train_members",
    "cached_ensemble",
    "exact_percentiles",
    "predict_dask_array",
    "predict_zarr",
    "open_zarr_image",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- batch prediction


@dataclasses.dataclass(frozen=True)
class PredictSteps:
    """The steps of the single-machine predict job that the Dask path runs too, taken as callables so that
    this module never imports the job (the job passes its own steps; see :func:`run_predict_dask`).

    ``start(config) -> (images by id, out folder, run record)``;
    ``run_image(model, image_id, path, config, out, *, progress) -> (status, record)`` (one task; ``model``
    from ``load_model``); ``finish(out, config, images, {image_id: (status, record)}, failed tasks, seconds) ->
    summary``; ``remove_partial_files(out, image_id)``; ``zarr_input(config) -> bool``; ``load_model(config)
    -> the loaded model``; ``model_sha256(config) -> str`` (the checksum ``start`` records).
    """

    start: Callable[..., tuple[dict[str, Path], Path, dict[str, Any]]]
    run_image: Callable[..., tuple[str, dict[str, Any]]]
    finish: Callable[..., dict[str, Any]]
    remove_partial_files: Callable[[Path, str], Any]
    zarr_input: Callable[[PredictConfig], bool]
    load_model: Callable[[PredictConfig], Any]
    model_sha256: Callable[[PredictConfig], str]


def _map_task(task: Callable[[str, Any], Any], threads: int | None, plan: dict[str, int], image_id: str,
              item: Any) -> Any:
    _set_task_threads(threads, plan, per="thread")
    return task(image_id, item)


def map_images(
    task: Callable[[str, Any], Any],
    items: Mapping[str, Any],
    options: DaskOptions,
    *,
    threads: int | None = None,
    progress: bool = False,
    name: str = "images",
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Run ``task(image_id, item)`` on the cluster of ``options``, one task per item; what a job uses to
    spread its images over Dask without this module knowing the job.

    Each task first sets torch's threads (``threads``, else the host's cores shared among its Dask
    threads). A task that fails ``options.retries + 1`` times is reported, not raised.

    Returns
    -------
    results, errors, info
        ``results``: image id -> the task's return value (finished tasks, in ``items`` order); ``errors``:
        image id -> ``"<Error>: message (failed N time(s))"``; ``info``: ``scheduler`` address, ``workers``,
        ``retries``.
    """
    _dask()
    run = uuid.uuid4().hex[:8]
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with dask_client(options) as client:
        plan = _threads_plan(client, per="thread")
        futures = {
            client.submit(
                _map_task, task, threads, plan, image_id, item,
                key=f"fiji-consensus-{name}-{image_id}-{run}", retries=options.retries, pure=False,
            ): image_id
            for image_id, item in items.items()
        }
        for fut in _wait_all(futures, progress=progress, desc=name, unit="image"):
            image_id = futures[fut]
            if fut.status != "finished":
                errors[image_id] = f"{_failure(fut)} (failed {options.retries + 1} time(s))"
                logger.error("image %s failed: %s", image_id, errors[image_id])
            else:
                results[image_id] = fut.result()
            fut.release()
        info = {"scheduler": client.scheduler.address, "workers": len(_workers(client)), "retries": options.retries}
    return {i: results[i] for i in items if i in results}, errors, info


def _predict_image_task(steps: PredictSteps, config: PredictConfig, out: str, model_sha: str, image_id: str,
                        path: str) -> tuple[str, dict[str, Any]]:
    key = ("predict", *(str(m) for m in config.models), str(config.device), bool(config.trust_code),
           repr(config.keras_normalization))
    model = cached_model(key, model_sha, current_sha256=functools.partial(steps.model_sha256, config),
                         load=functools.partial(steps.load_model, config),
                         name=f"{', '.join(str(m) for m in config.models)} on {config.device}")
    return steps.run_image(model, image_id, Path(path), config, Path(out), progress=False)


def run_predict_dask(
    config: PredictConfig, *, progress: bool = False, steps: PredictSteps | None = None
) -> dict[str, Any]:
    """:func:`fiji_consensus.predict.run_predict` on Dask: one task per image (see the module docstring).

    ``config.dask`` names the cluster. A zarr input goes to :func:`predict_zarr` (with or without
    ``config.dask``). Returns the same summary as the single-machine run, plus ``dask`` (scheduler address,
    number of workers, retries); images whose task failed ``retries + 1`` times are listed in ``failed``
    with the error, and ``ok`` is then False. ``steps``: the predict job's steps (the job passes them; this
    module never imports a job).

    Examples
    --------
    >>> cfg = PredictConfig(model="models/wue1", inputs=["images"], out="pred",
    ...                     dask=DaskOptions(workers=2))                          # doctest: +SKIP
    >>> run_predict_dask(cfg)["n_predicted"]                                      # doctest: +SKIP
    """
    if steps is None:
        raise ValueError(
            "run_predict_dask needs the predict job's steps (PredictSteps); call fiji_consensus.predict.run_predict "
            "with config.dask set instead"
        )
    if steps.zarr_input(config):
        return predict_zarr(config, progress=progress)
    if config.dask is None:
        raise ValueError("config.dask must name a cluster (scheduler or workers) for a Dask run; got None")
    require("torch", extra="train")
    _dask()
    from . import io as fio

    t0 = time.perf_counter()
    images, out, record = steps.start(config)
    # absolute paths: the workers of a cluster elsewhere do not share this process's working directory
    paths = [Path(m).resolve() for m in config.models]
    task_config = config.model_copy(update={"model": paths if isinstance(config.model, list) else paths[0]})
    steps.load_model(task_config.model_copy(update={"device": "cpu"}))  # a broken model fails here, not in every task
    fio.write_json(out / "config.json", record, overwrite=True)
    task = functools.partial(_predict_image_task, steps, task_config, str(out.resolve()), record["model_sha256"])
    results, errors, info = map_images(
        task, {i: str(Path(p).resolve()) for i, p in images.items()}, config.dask, threads=config.threads,
        progress=progress, name="predict",
    )
    for image_id in images:  # what workers killed mid-write left (their tasks ran again elsewhere)
        steps.remove_partial_files(out, image_id)
    failed = [{"image": i, "path": str(images[i]), "error": e} for i, e in errors.items()]
    summary = steps.finish(out, config, images, results, failed, time.perf_counter() - t0)
    return {**summary, "dask": info}


# --------------------------------------------------------------------------------------------- training


_TRAIN_LOCK = threading.Lock()


def _train_member_task(plan: Any, index: int, threads_plan: dict[str, int]) -> dict[str, Any]:
    import torch

    from .nn.train import train_member

    with _TRAIN_LOCK:  # torch's random generator is per process: one member at a time
        old = torch.get_num_threads()
        _set_task_threads(plan.config.threads, threads_plan, per="process")
        try:
            return train_member(plan, index)
        finally:
            torch.set_num_threads(old)


def train_members(
    plan: Any, indices: Sequence[int], *, options: DaskOptions, progress: bool = False
) -> list[dict[str, Any]]:
    """Train the members ``indices`` of a :class:`~fiji_consensus.nn.train.TrainingPlan` on Dask, one task
    per member; returns their results in the order of ``indices``.

    The ``member_runner`` of :func:`~fiji_consensus.nn.train.train_ensemble` (``functools.partial(
    train_members, options=...)``). The plan (the prepared images) is sent once to every worker. A member
    whose task failed ``retries + 1`` times makes this raise (after the others finished: their weights
    and checkpoints stay in the ensemble folder, so running again resumes).
    """
    _dask()
    run = uuid.uuid4().hex[:8]
    plan = dataclasses.replace(plan, out=Path(plan.out).resolve())  # workers elsewhere: absolute paths
    with dask_client(options) as client:
        threads_plan = _threads_plan(client, per="process")
        [plan_f] = client.scatter([plan], broadcast=True, hash=False)
        futures = {
            client.submit(_train_member_task, plan_f, int(k), threads_plan,
                          key=f"fiji-consensus-train-member-{k}-{run}", retries=options.retries, pure=False): int(k)
            for k in indices
        }
        results: dict[int, dict[str, Any]] = {}
        errors: dict[int, str] = {}
        for fut in _wait_all(futures, progress=progress, desc="members", unit="member"):
            k = futures[fut]
            if fut.status == "finished":
                results[k] = fut.result()
            else:
                errors[k] = _failure(fut)
                logger.error("member %d failed: %s", k, errors[k])
    if errors:
        shown = "; ".join(f"member {k}: {e}" for k, e in sorted(errors.items()))
        raise RuntimeError(
            f"{len(errors)} of {len(futures)} member(s) failed {options.retries + 1} time(s): {shown}. The "
            "finished members are kept; run the same command again to resume"
        )
    return [results[int(k)] for k in indices]


