"""The steps of one training run around its members: the checked inputs (:class:`_Run`), the output
folder, every image prepared once, and the content of ``ensemble.json``; :mod:`fiji_consensus.nn.train`
runs them."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import claim_folder, remove_temporary
from ..config import TrainConfig
from .data import TrainingImage, border_weights, percentile_normalize
from .inputs import (
    _check_inputs, _fingerprint, _init_from, _is_ensemble_folder, _package_versions, make_splits, member_seeds,
)
from .selection import _ValImage

log = logging.getLogger("fiji_consensus.nn.train")

#: TrainConfig.learning_rate's default from scratch, and when fine-tuning (init): every adaptation benchmark
#: (bench_finetune.py) fine-tuned at the latter.
SCRATCH_LEARNING_RATE = 2e-3
FINETUNE_LEARNING_RATE = 5e-4


@dataclass
class _Run:
    """A training run's checked inputs (:func:`_check_run`), fixed before any file is written."""

    config: TrainConfig
    image_ids: list[str]
    imgs: list[np.ndarray]
    tgts: list[np.ndarray]
    igns: list[np.ndarray | None]
    experts: dict[str, list]
    splits: list[tuple[list[str], list[str]]]
    split_kind: str
    seeds: list[int]
    labs: dict[str, str] | None
    lab_counts: dict[str, int]
    min_sizes: dict[str, int] | None
    init_states: list[dict[str, Any]] | None
    init_info: dict[str, Any] | None
    fingerprint: str


def _check_run(
    images: list[np.ndarray], targets: list[np.ndarray], config: TrainConfig, *, image_ids: list[str],
    ignore: list[np.ndarray | None] | None, groups: dict[str, str] | None,
    expert_masks: dict[str, list[np.ndarray]] | None, init: Any, labs: dict[str, str] | None,
    min_sizes: dict[str, int] | None,
) -> _Run:
    """Setup step: the config (fine-tuning's replaces some settings), the data, splits, seeds, labs, and the
    fingerprint that a resumed run must match."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    init_states, init_info = None, None
    if config.learning_rate is None:  # the default depends on the start: from scratch or fine-tuning
        config = config.model_copy(update={"learning_rate": FINETUNE_LEARNING_RATE if init is not None
                                           else SCRATCH_LEARNING_RATE})
        if init is not None:
            log.info("fine-tuning at learning rate %g (the default with init, unless a learning rate is given)",
                     config.learning_rate)
    if init is not None:
        config, init_states, init_info = _init_from(config, init)
    elif config.train_layers != "all":
        log.warning("train_layers=%r without an initial model (init): the frozen layers keep their random "
                    "weights", config.train_layers)
    image_ids = [str(i) for i in image_ids]
    imgs, tgts, igns, experts = _check_inputs(images, targets, image_ids, ignore, expert_masks)
    if config.paper_selection and not experts:
        raise ValueError("paper_selection=True needs expert_masks (the lowest expert's ROI-F1 per image)")
    splits = make_splits(
        image_ids, members=config.members, split=config.split, folds=config.folds, groups=groups, seed=config.seed
    )
    split_kind = config.split if config.split != "auto" else ("group_kfold" if groups else "kfold")
    seeds = member_seeds(config.seed, config.members)
    if labs:
        missing = [i for i in image_ids if i not in labs]
        if missing:
            raise ValueError(f"labs has no entry for {len(missing)} image(s), e.g. {missing[:3]}")
        labs = {i: str(labs[i]) for i in image_ids}
    else:
        labs = None
    if min_sizes is not None:
        missing = [i for i in image_ids if i not in min_sizes]
        if missing:
            raise ValueError(f"min_sizes has no entry for {len(missing)} image(s), e.g. {missing[:3]}")
    lab_counts = {lab: sum(1 for v in labs.values() if v == lab) for lab in sorted(set(labs.values()))} if labs else {}
    unknown = sorted(set(config.lab_weights) - set(lab_counts))
    if unknown:
        raise ValueError(f"lab weights name {unknown}, which are not among the labs {sorted(lab_counts)}")
    fp = _fingerprint(
        config, image_ids, imgs, tgts, igns, splits, init_info["weights_sha256"] if init_info else None,
        labs={"labs": labs, "min_sizes": min_sizes} if (labs or min_sizes) else None,
    )
    return _Run(config, image_ids, imgs, tgts, igns, experts, splits, split_kind, seeds, labs, lab_counts,
                min_sizes, init_states, init_info, fp)


def _claim_output(out_dir: str | os.PathLike, fingerprint: str, resume: bool) -> tuple[Path, dict | None]:
    """The output folder (never one train did not make), cleared unless resuming; with the summary of the
    same ensemble when it is already complete there."""
    from .ensemble import ENSEMBLE_JSON

    out = claim_folder(out_dir, "train", legacy=_is_ensemble_folder)  # never a folder train did not make
    remove_temporary(out)  # what killed writers left (this run's members have not started)
    ej = out / ENSEMBLE_JSON
    if ej.is_file():
        try:
            old = json.loads(ej.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        same = old.get("provenance", {}).get("fingerprint") == fingerprint
        if resume and same:
            log.info("%s already holds this ensemble; nothing to do", out)
            return out, _summary(old, out)
        if resume:
            raise FileExistsError(
                f"{out} already holds an ensemble trained with other data or settings; choose another "
                "folder or start over there with --overwrite (Python: resume=False)"
            )
    if not resume:
        for pattern in ("checkpoints/member_*.pt", "logs/member_*.csv", "member_*.pt", ENSEMBLE_JSON):
            for f in out.glob(pattern):
                f.unlink()
    return out, None


def _architecture(config: TrainConfig) -> tuple[dict[str, Any], Any]:
    """The U-Net's constructor arguments (``UNet.from_config``, as stored in ``ensemble.json``) and one
    network built from them (it draws from torch's RNG, as before the members, whose seeds are their own)."""
    from .unet import UNet

    arch = dict(
        in_channels=1, out_channels=1, depth=config.depth, base_channels=config.base_channels, norm=config.norm,
        groups=config.norm_groups, upsample=config.upsample, convs_per_block=2,
    )
    if config.background_radius:
        arch["background_radius"] = config.background_radius
    return arch, UNet.from_config(arch)


@dataclass
class _Prepared:
    """Every image prepared once: training patches' source, validation image, normalisation, statistics."""

    prepared: dict[str, TrainingImage]
    val_images: dict[str, _ValImage]
    norm_values: dict[str, list[float]]
    domain_stats: dict[str, Any]


def _prepare_images(run: _Run) -> _Prepared:
    """Per-image preparation (deterministic): percentile normalisation, valid pixels, border weights,
    sampling weights (balanced labs), validation references, the domain statistics."""
    from ..domain import image_stats

    config, labs = run.config, run.labs
    norm_values: dict[str, list[float]] = {}
    prepared: dict[str, TrainingImage] = {}
    val_images: dict[str, _ValImage] = {}
    for iid, img, t, ig in zip(run.image_ids, run.imgs, run.tgts, run.igns):
        x, (lo, hi) = percentile_normalize(img, low=config.low_percentile, high=config.high_percentile)
        norm_values[iid] = [lo, hi]
        valid = np.ones(img.shape, np.float32) if ig is None else (~ig).astype(np.float32)
        tv = t * valid
        weight = (
            border_weights(tv, w0=config.border_weight, sigma=config.border_sigma)
            if config.border_weight > 0
            else None
        )
        prepared[iid] = TrainingImage.prepare(
            iid, x, tv, valid, weight=weight,
            foreground=config.foreground_sampling, boundary=config.boundary_sampling,
        )
        if labs:  # each lab's share: equal with balance_labs (1 / its images), times its lab weight
            lab = labs[iid]
            balance = 1.0 / run.lab_counts[lab] if config.balance_labs else 1.0
            prepared[iid].sample_weight = balance * config.lab_weights.get(lab, 1.0)
        val_images[iid] = _ValImage(iid, x, t > config.threshold, ig,
                                    None if run.min_sizes is None else run.min_sizes[iid])
    pct = (config.low_percentile, config.high_percentile)
    domain_stats = {iid: image_stats(img, t > 0.5, percentiles=pct)
                    for iid, img, t in zip(run.image_ids, run.imgs, run.tgts)}
    return _Prepared(prepared, val_images, norm_values, domain_stats)


def _ensemble_metadata(
    run: _Run, prep: _Prepared, probe: Any, arch: dict[str, Any], results: list[dict[str, Any]],
    selection: dict[str, Any], expert_f1: dict[str, dict[str, float]], provenance: dict | None,
    groups: dict[str, str] | None,
) -> dict[str, Any]:
    """``ensemble.json``'s content: architecture, normalisation, domain, members, selection, training
    settings and provenance (what the run is; :func:`_run_record` adds how it ran)."""
    from ..domain import fit_reference

    config, image_ids, labs = run.config, run.image_ids, run.labs
    return {
        "architecture": {
            "name": "UNet",
            "config": arch,
            "parameters": int(sum(p.numel() for p in probe.parameters())),
            "receptive_field_radius": probe.receptive_field_radius,
            "halo": probe.halo,
            "tile_multiple": 2**config.depth,
            "input": "one channel (batch, 1, y, x), float32, per-image percentile-normalised",
            "output": "foreground probability (sigmoid inside the network), (batch, 1, y, x)",
        },
        "normalization": {
            "method": "scale_range",
            "mode": "per_sample",
            "min_percentile": config.low_percentile,
            "max_percentile": config.high_percentile,
            "eps": 1e-6,
            "formula": "(x - percentile(x, min)) / (percentile(x, max) - percentile(x, min) + eps)",
            "training_values": prep.norm_values,
        },
        "threshold": config.threshold,
        "domain": {
            **fit_reference(list(prep.domain_stats.values())),
            "definition": "fiji_consensus.domain: statistics of the training images (their targets > 0.5 as "
            "the foreground) on the model's normalised scale; an image outside this range is out of domain",
        },
        "members": results,
        "selection": selection,
        "training": config.model_dump(mode="json"),
        "provenance": {
            **(provenance or {}),
            "image_ids": image_ids,
            "split": run.split_kind,
            "groups": {i: str(groups[i]) for i in image_ids} if groups else None,
            "splits": [{"train": r["train_ids"], "validation": r["val_ids"]} for r in results],
            "seeds": run.seeds,
            "init": run.init_info,
            "labs": (
                {lab: sorted(i for i in image_ids if labs[i] == lab) for lab in run.lab_counts} if labs else None
            ),
            "balance_labs": bool(labs and config.balance_labs),
            "lab_weights": dict(config.lab_weights) or None,
            "min_sizes": run.min_sizes,
            "experts": sorted(run.experts) if run.experts else (provenance or {}).get("experts"),
            "expert_roi_f1": expert_f1 or None,
        },
    }


def _run_record(
    results: list[dict[str, Any]], config: TrainConfig, device, seconds: float, fingerprint: str
) -> dict[str, Any]:
    """How the run ran (device, threads, time, speed, package versions, creation time) and its fingerprint."""
    import torch

    tr = sum(r["train_seconds"] for r in results)
    pps = sum(r["iterations"] for r in results) * config.batch_size / tr if tr > 0 else None
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "patches_per_second": pps,
        "packages": _package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": fingerprint,
    }


def _tidy(out: Path, config: TrainConfig) -> None:
    """The checkpoints removed unless kept, and what killed writers left."""
    if not config.keep_checkpoints:
        for f in (out / "checkpoints").glob("member_*.pt"):
            f.unlink()
        try:
            (out / "checkpoints").rmdir()
        except OSError:
            pass
    remove_temporary(out)  # e.g. checkpoints half-written by a killed Dask worker


def _summary(meta: dict[str, Any], out: Path) -> dict[str, Any]:
    return {
        "path": str(out),
        "ensemble_json": str(out / "ensemble.json"),
        "halo": meta["architecture"]["halo"],
        "members": [
            {
                k: m.get(k)
                for k in (
                    "index", "seed", "file", "selected", "iterations", "best_iteration", "val_dice", "val_roi_f1",
                    "train_ids", "val_ids", "seconds", "patches_per_second", "log",
                )
            }
            for m in meta["members"]
        ],
        "selected": meta["selection"]["selected"],
        "seconds": meta["provenance"].get("seconds"),
        "patches_per_second": meta["provenance"].get("patches_per_second"),
    }
