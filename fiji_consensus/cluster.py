"""Dask clusters and what every task on them needs: the client (:func:`dask_client`), torch's threads per
task, waiting on futures, and the per-process model cache (:func:`cached_model`, :func:`cached_ensemble`).
The jobs on Dask are in :mod:`fiji_consensus.distributed` (images, members) and :mod:`fiji_consensus.chunked`
(images larger than memory); see :mod:`fiji_consensus.distributed` for the whole picture.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._util import sha256_file
from ._validate import require
from .config import DaskOptions

__all__ = ["dask_client", "cached_model", "cached_ensemble"]

logger = logging.getLogger(__name__)

_EXTRA = "distributed"


def _dask() -> Any:
    require("dask", extra=_EXTRA)
    return require("distributed", extra=_EXTRA)

# --------------------------------------------------------------------------------------------- clusters


@contextlib.contextmanager
def dask_client(options: DaskOptions) -> Iterator[Any]:
    """A ``distributed.Client`` for ``options``: connected to a running scheduler, or to a local cluster
    of ``options.workers`` processes started here (and closed on exit).

    Examples
    --------
    >>> with dask_client(DaskOptions(workers=2)) as client:      # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    distributed = _dask()
    if not isinstance(options, DaskOptions):
        raise TypeError(f"options must be a DaskOptions; got {type(options).__name__}")
    if options.scheduler is not None:
        target = options.scheduler
        if target.lower().endswith(".json") or Path(target).is_file():
            if not Path(target).is_file():
                raise FileNotFoundError(f"scheduler file {target} does not exist")
            client = distributed.Client(scheduler_file=target)
        else:
            client = distributed.Client(target)
        try:
            logger.info("connected to the Dask scheduler %s (%d workers)", client.scheduler.address,
                        len(_workers(client)))
            yield client
        finally:
            client.close()
        return
    cluster = distributed.LocalCluster(
        n_workers=int(options.workers),
        threads_per_worker=int(options.threads_per_worker),
        processes=True,
        dashboard_address=":0",  # a free port: never a warning about a busy 8787
    )
    try:
        with distributed.Client(cluster) as client:
            logger.info("started a local Dask cluster: %d worker processes x %d threads", options.workers,
                        options.threads_per_worker)
            yield client
    finally:
        cluster.close()


def _cpu_count() -> int:
    import dask.system

    return int(dask.system.CPU_COUNT)


def _workers(client: Any) -> dict[str, dict[str, Any]]:
    try:
        return client.scheduler_info(n_workers=-1)["workers"]  # all of them (newer versions show 5 by default)
    except TypeError:  # older distributed: always all
        return client.scheduler_info()["workers"]


def _threads_plan(client: Any, *, per: str) -> dict[str, int]:
    """Torch threads per worker address: the host's cores shared among its Dask threads (``per="thread"``)
    or among its worker processes (``per="process"``)."""
    workers = _workers(client)
    cores = client.run(_cpu_count)
    load: dict[str, int] = {}
    for w in workers.values():
        load[w["host"]] = load.get(w["host"], 0) + (int(w["nthreads"]) if per == "thread" else 1)
    return {a: max(1, int(cores.get(a, 1)) // max(1, load[w["host"]])) for a, w in workers.items()}


def _set_task_threads(threads: int | None, plan: dict[str, int], *, per: str) -> int:
    """Set torch's threads in the calling (task) thread: ``threads``, else the plan's value for this worker."""
    import torch

    n = threads
    if n is None:
        try:
            from distributed import get_worker

            w = get_worker()
            # a worker that joined later (a restarted or added one): as the others
            n = plan.get(w.address) or (min(plan.values()) if plan else None)
            n = n or max(1, _cpu_count() // (w.state.nthreads if per == "thread" else 1))
        except (ImportError, ValueError):  # not on a worker (a local scheduler): one thread per task
            n = 1
    torch.set_num_threads(int(n))
    return int(n)


def _wait_all(futures: dict[Any, Any], *, progress: bool, desc: str, unit: str) -> Iterator[Any]:
    """Yield the futures as they finish, with a tqdm bar on stderr when ``progress``."""
    from distributed import as_completed

    it: Any = as_completed(list(futures))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(futures), desc=desc, unit=unit)
    yield from it


def _failure(fut: Any) -> str:
    if fut.status == "cancelled":
        return "cancelled (the scheduler or the connection to it was lost?)"
    exc = fut.exception()
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------- model cache

_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_PREDICTORS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2
#: Models loaded by this process (read by the tests: once per worker).
LOADS = {"count": 0}


def cached_model(key: tuple[Any, ...], sha256: str, *, current_sha256: Callable[[], str], load: Callable[[], Any],
                 name: str) -> Any:
    """The model under ``key``, loaded once per process by ``load()`` and kept (the last two are kept).

    ``sha256`` is the model's checksum when the run started and ``current_sha256()`` computes it now: a model
    that changed since is an error (the results of one run come from one model). ``name`` names the model in
    that error and in the log.
    """
    key = (*key, str(sha256))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        now = current_sha256()
        if now != sha256:
            raise RuntimeError(
                f"the model {name} changed during the run (SHA-256 {now[:12]}..., the run started with "
                f"{str(sha256)[:12]}...); start the run again"
            )
        model = load()
        _CACHE[key] = model
        LOADS["count"] += 1
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        logger.info("loaded the model %s", name)
        return model


def cached_ensemble(model: str | os.PathLike, sha256: str, *, device: str = "cpu") -> Any:
    """The ensemble folder at ``model`` (a torch Ensemble), cached by :func:`cached_model`; ``sha256`` is that
    of its ``ensemble.json`` when the run started."""
    from .nn.ensemble import ENSEMBLE_JSON, load_ensemble

    folder = Path(model)
    folder = folder.parent if folder.name == ENSEMBLE_JSON else folder
    return cached_model(("ensemble", str(folder.resolve()), str(device)), sha256,
                        current_sha256=lambda: sha256_file(folder / ENSEMBLE_JSON),
                        load=lambda: load_ensemble(folder, device=device), name=f"{folder} on {device}")


def _cached_predictor(ens: Any, tta: str) -> Any:
    from .nn.predict import EnsemblePredictor

    key = (id(ens), tta)
    with _CACHE_LOCK:
        pred = _PREDICTORS.get(key)
        if pred is None or pred.ensemble is not ens:
            pred = EnsemblePredictor(ens, tta=tta)
            _PREDICTORS[key] = pred
            while len(_PREDICTORS) > 2 * _CACHE_SIZE:
                _PREDICTORS.popitem(last=False)
        return pred


def _load_count() -> int:
    return int(LOADS["count"])


