"""The train job: a U-Net ensemble from experts' annotations (their consensus) or from label masks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .. import io as fio
from ..config import TrainJobConfig
from ..io import read_groups
from ._common import _fit_pooled, _progress, _resolve_dataset

log = logging.getLogger("fiji_consensus.jobs.train")


def _train_targets(masks: np.ndarray, kind: str, ignore: np.ndarray | None) -> np.ndarray:
    from ..consensus import training_targets

    return training_targets(masks, kind, ignore=ignore)


def _dask_member_runner(config: TrainJobConfig, *, progress: bool) -> Any:
    """With ``config.dask``: a runner that trains the members in parallel on Dask (else None)."""
    if config.dask is None:
        return None
    import functools

    from ..distributed import train_members

    return functools.partial(train_members, options=config.dask, progress=progress)


def run_train(config: TrainJobConfig, *, progress: bool = False) -> dict[str, Any]:
    """Train a U-Net ensemble (``fiji_consensus.nn``, needs the ``train`` extra) as ``config`` says.

    The targets are the masks of ``config.labels`` or, without them, the experts' consensus of kind
    ``config.targets``; experts' masks, when given, are passed on for the paper's member selection and the
    per-image expert scores. An interrupted run resumes in ``config.out`` (same settings); ``overwrite``
    starts over. Returns the training summary.
    """
    from .._validate import require

    require("torch", extra="train")
    from .._atomic import claim_folder
    from ..nn.train import _is_ensemble_folder, train_ensemble

    claim_folder(config.out, "train", legacy=_is_ensemble_folder, create=False)  # before the images: fail fast
    init = _load_init(config.init) if config.init is not None else None  # before the images: fail fast
    if config.labs or config.rehearse:
        return _run_train_labs(config, init, progress=progress)
    ds = _resolve_dataset(config, missing_ok=True)  # experts may have annotated different images
    label_paths = fio.pair_annotations(ds.images, config.labels, expert="labels") if config.labels else {}
    if not label_paths and len(ds.experts) < 2:
        raise ValueError(
            f"computing consensus targets needs at least 2 experts; got {len(ds.experts)}"
        )
    experts = ds.expert_names
    complete = ds.complete
    fit = None
    if not label_paths:
        few = [i for i in ds.ids if len(ds.raters(i)) < 2]
        if few:
            raise ValueError(
                f"{len(few)} image(s) have fewer than 2 experts' annotations for a consensus target: "
                + ", ".join(f"{i} ({', '.join(ds.raters(i)) or 'nobody'})" for i in few[:8])
                + "; have them annotated (`fiji-consensus plan`) or train on --labels"
            )
        if not complete and config.targets in ("staple", "staple-soft"):
            fit = _fit_pooled(ds, ds.ids, progress=progress)
    if not complete and config.train.paper_selection:
        raise ValueError(
            "--paper-selection compares each member with every expert on every validation image; here the "
            "experts annotated different images: train without it"
        )
    groups = read_groups(config.groups) if config.groups else None
    images, targets, ignores = [], [], []
    expert_masks: dict[str, list[np.ndarray]] = {e: [] for e in experts}
    for n, image_id in enumerate(_progress(ds.ids, total=len(ds.ids), enabled=progress, desc="reading")):
        image, ann, ign = ds.load(image_id)
        names = ds.raters(image_id)
        if label_paths:
            target = fio.read_mask(label_paths[image_id], image.shape).astype(np.float32)
        elif fit is not None:  # missing raters: pooled STAPLE posterior from this image's own experts
            k = [experts.index(e) for e in names]
            from .. import consensus

            prob = consensus.staple_posterior(np.stack([ann[e] > 0 for e in names]), fit.sensitivity[k],
                                              fit.specificity[k], float(fit.priors[n]), ignore=ign)
            target = (prob if config.targets == "staple-soft" else prob > 0.5).astype(np.float32)
        else:
            target = _train_targets(np.stack([ann[e] > 0 for e in names]), config.targets, ign)
        images.append(image)
        targets.append(target)
        ignores.append(ign)
        if complete:
            for e in experts:
                expert_masks[e].append(ann[e] > 0)
    provenance = {
        "tool": "fiji-consensus",
        "version": __version__,
        "job": config.model_dump(mode="json", exclude={"train"}),
        "targets": f"labels folder {config.labels}" if label_paths else (
            f"{config.targets} of {len(experts)} experts"
            + ("" if complete else " (experts annotated different images; STAPLE pooled over images)")),
        "experts": experts,
    }
    summary = train_ensemble(
        images, targets, config.out, config.train,
        image_ids=ds.ids,
        ignore=ignores if any(i is not None for i in ignores) else None,
        groups=groups,
        expert_masks=expert_masks if experts and complete else None,  # per-image expert scores need all
        provenance=provenance,
        progress=progress,
        resume=not config.overwrite,
        member_runner=_dask_member_runner(config, progress=progress),
        init=init,
    )
    return {"ok": True, "command": "train", "out": str(Path(config.out).resolve()), **summary}


def _run_train_labs(config: TrainJobConfig, init: Any, *, progress: bool) -> dict[str, Any]:
    """Multi-lab training: every lab's own consensus and experts, labs balanced in sampling."""
    from .crossval import load_lab, multi_lab_inputs
    from ..nn.train import train_ensemble

    sizes = config.lab_min_sizes or {}
    new = list(config.labs) or [config.project]
    rehearse = _rehearsal_labs(config.rehearse, init) if config.rehearse else []
    if rehearse:  # before the images: fail fast
        config = _rehearsal_weights(config, [Path(p).name for p in new], [Path(p).name for p in rehearse])
    labs = [load_lab(p, min_size=sizes.get(Path(p).name)) for p in new + rehearse]
    if config.train.min_size:
        for lab in labs:  # labs named in neither lab_min_sizes nor the published table: the config's
            if lab.name not in sizes and lab.name not in ("lab-wue1", "lab-mue", "lab-inns1"):
                lab.min_size = config.train.min_size
    kw = multi_lab_inputs(labs, config.targets)
    groups = read_groups(config.groups) if config.groups else None
    provenance = {
        "tool": "fiji-consensus", "version": __version__, "job": config.model_dump(mode="json", exclude={"train"}),
        "targets": f"{config.targets} of each lab's own experts",
        "experts": sorted(kw["expert_masks"]),
    }
    summary = train_ensemble(
        kw["images"], kw["targets"], config.out, config.train, image_ids=kw["image_ids"],
        groups=groups if groups else (kw["groups"] if config.train.split == "group_kfold" else None),
        expert_masks=kw["expert_masks"], labs=kw["labs"], min_sizes=kw["min_sizes"], provenance=provenance,
        progress=progress, resume=not config.overwrite, member_runner=_dask_member_runner(config, progress=progress),
        init=init,
    )
    return {"ok": True, "command": "train", "out": str(Path(config.out).resolve()), **summary}


def _is_lab_folder(path: Path) -> bool:
    return (path / "images").is_dir()


def _rehearsal_labs(folders: list[Path], init: Any) -> list[Path]:
    """The lab folders to rehearse: each given folder is a lab (it holds images/) or a folder of labs, of which
    those named as the init model's training labs are taken (every lab in it when the model records none)."""
    trained = sorted((init.metadata.get("provenance") or {}).get("labs") or {})
    labs: list[Path] = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"--rehearse {folder}: no such folder (expected a lab folder or a folder of labs)")
        if _is_lab_folder(folder):
            labs.append(folder)
            continue
        inside = sorted(p for p in folder.iterdir() if p.is_dir() and _is_lab_folder(p))
        if not inside:
            raise ValueError(f"--rehearse {folder}: neither a lab folder (images/ and the experts' annotations) "
                             "nor a folder of such labs")
        chosen = [p for p in inside if p.name in trained] if trained else inside
        if not chosen:
            raise ValueError(f"--rehearse {folder} holds none of the labs the model was trained on "
                             f"({', '.join(trained)}); it holds {', '.join(p.name for p in inside)}")
        log.info("rehearsing %s from %s%s", ", ".join(p.name for p in chosen), folder,
                 " (the model's training labs)" if trained else "")
        labs.extend(chosen)
    missing = sorted(set(trained) - {p.name for p in labs})
    if missing:
        log.warning("rehearsal without %s, which the model was also trained on: it may forget them",
                    ", ".join(missing))
    return labs


def _rehearsal_weights(config: TrainJobConfig, new: list[str], rehearsed: list[str]) -> TrainJobConfig:
    """Rehearsal: the new labs share half the patches (weight: the number of rehearsed labs, split among
    them), each rehearsed lab 1; weights given in train.lab_weights are kept."""
    overlap = sorted(set(new) & set(rehearsed))
    if overlap:
        raise ValueError(f"rehearse names the new lab(s) {overlap} itself; give the labs the model was trained on")
    weights = {name: len(rehearsed) / len(new) for name in new} | dict(config.train.lab_weights)
    log.info("rehearsal: patches drawn in the ratio %s",
             " : ".join(f"{n} {weights.get(n, 1.0):g}" for n in new + rehearsed))
    return config.model_copy(update={"train": config.train.model_copy(update={"lab_weights": weights})})


def _load_init(path: Path) -> Any:
    """The ensemble to fine-tune from: an ensemble folder or one of our bioimage.io packages."""
    from ..models import load_torch_ensemble

    if not Path(path).exists():
        raise FileNotFoundError(f"--init {path}: no such ensemble folder or package")
    return load_torch_ensemble(path)
