"""The training commands: train, crossval (leave one lab out), adapt (batch-norm statistics) and calibrate (a new
lab's threshold from a few annotated images)."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

from ..config import AugmentOptions, CrossvalConfig, PredictConfig, TrainConfig, TrainJobConfig
from ._builder import add_field, add_field_pair, field_values
from ._common import add_dask, dask_options, job_command, table

#: The training settings the CLI offers (TrainConfig's other fields keep their defaults).
_ENSEMBLE = "members split folds iterations max_minutes seed paper_selection"
_NETWORK = "depth base_channels background_radius patch_size batch_size learning_rate train_layers validate_every"
_AUGMENT = "contrast gamma noise blur background background_renormalize"


def _add_train_options(p: argparse.ArgumentParser, *, init: bool) -> None:
    """Ensemble, budget, network and augmentation options of train and crossval: TrainConfig's fields."""
    t = p.add_argument_group("ensemble and budget")
    for name in _ENSEMBLE.split():
        add_field(t, TrainConfig, name)
    if init:
        add_field(t, TrainJobConfig, "init", metavar="MODEL")
        add_field(t, TrainJobConfig, "rehearse", metavar="DIR")
    n = p.add_argument_group("network, normalisation and augmentation")
    for name in _NETWORK.split():
        add_field(n, TrainConfig, name)
    add_field_pair(n, TrainConfig, ("low_percentile", "high_percentile"), flag="--percentiles",
                   metavar=("LOW", "HIGH"))
    add_field(n, TrainConfig, "min_size")
    add_field(n, AugmentOptions, "zoom", metavar=("MIN", "MAX"))
    for name in _AUGMENT.split():
        add_field(n, AugmentOptions, name)
    add_field(n, TrainConfig, "device")
    add_field(n, TrainConfig, "threads")


def _train_config(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**field_values(a, TrainConfig), augment=AugmentOptions(**field_values(a, AugmentOptions)))


def _add_lab_inputs(g: Any, model: type, min_sizes: str, *, required: bool) -> None:
    add_field(g, model, "labs", flag="--lab", metavar="DIR", append=True, required=required)
    add_field(g, model, min_sizes, flag="--lab-min-size", metavar="NAME=N", append=True)
    add_field(g, TrainConfig, "lab_weights", flag="--lab-weight", metavar="NAME=W", append=True)


def add_train(sub) -> None:
    p = job_command(sub, "train", TrainJobConfig, "jobs.run_train", report=_report_train, config=_train_job_config,
                    help="train a U-Net ensemble on the experts' consensus (needs the train extra: torch)")
    g = p.add_argument_group("inputs (--images with --labels and/or --experts, or --project)")
    for name, metavar in (("images", "DIR"), ("labels", "DIR"), ("experts", "DIR"), ("expert_names", "NAME"),
                          ("project", "DIR"), ("ignore", "DIR"), ("targets", None), ("groups", "CSV")):
        add_field(g, TrainJobConfig, name, metavar=metavar)
    _add_lab_inputs(g, TrainJobConfig, "lab_min_sizes", required=False)
    _add_train_options(p, init=True)
    add_field(p, TrainJobConfig, "out", metavar="DIR")
    add_field(p, TrainJobConfig, "overwrite")
    add_dask(p, task="member")


def _train_job_config(a: argparse.Namespace) -> TrainJobConfig:
    return TrainJobConfig(**field_values(a, TrainJobConfig), train=_train_config(a), dask=dask_options(a))


def _report_train(summary: dict[str, Any]) -> None:
    print(f"ensemble of {len(summary.get('members', []))} members -> {summary['out']}")
    rows = [{"member": m.get("index", i), **{k: m.get(k) for k in ("val_dice", "val_roi_f1", "selected")}}
            for i, m in enumerate(summary.get("members", []))]
    print(table(rows, ["member", "val_dice", "val_roi_f1", "selected"]))


def add_crossval(sub) -> None:
    p = job_command(sub, "crossval", CrossvalConfig, "crossval.run_crossval", report=_report_crossval,
                    config=_crossval_config,
                    help="leave-one-lab-out: train on all labs but one, score the left-out lab against its experts")
    g = p.add_argument_group("labs")
    _add_lab_inputs(g, CrossvalConfig, "min_sizes", required=True)
    add_field(g, CrossvalConfig, "hold_out", metavar="LAB")
    add_field(g, CrossvalConfig, "targets")
    add_field(g, CrossvalConfig, "tta")
    _add_train_options(p, init=False)
    add_field(p, CrossvalConfig, "out", metavar="DIR")


def _crossval_config(a: argparse.Namespace) -> CrossvalConfig:
    if len(a.labs) < 2:
        raise ValueError(f"crossval needs at least 2 --lab folders; got {len(a.labs)}")
    return CrossvalConfig(**field_values(a, CrossvalConfig), train=_train_config(a))


def _report_crossval(res: dict[str, Any]) -> None:
    rows = []
    for lab, s in res["labs"].items():
        rows.append({"left out": lab, "model ROI-F1": s["model"]["roi_f1"], "model Dice": s["model"]["dice"],
                     "median expert": s["median_expert"]["roi_f1"], "lowest expert": s["lowest_expert"]["roi_f1"],
                     "rule": f"{s['images_at_least_lowest_expert']}/{s['images']}"})
    print(table(rows, ["left out", "model ROI-F1", "model Dice", "median expert", "lowest expert", "rule"]))
    print(f"per image and rater: {Path(res['out']) / 'crossval.csv'}")


def add_adapt(sub) -> None:
    p = sub.add_parser("adapt", description=inspect.getdoc(run_adapt),
                       help="label-free adaptation of an ensemble to a new lab's images (batch-norm statistics)")
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="the ensemble folder to adapt")
    p.add_argument("--images", type=Path, required=True, metavar="DIR", help="the new lab's images")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="new folder for the adapted ensemble")
    p.add_argument("--patches-per-image", type=int, default=16, metavar="N")
    add_field(p, PredictConfig, "subtract_background", metavar="RADIUS")  # the input predict will give the model
    p.set_defaults(func=run_adapt)


def run_adapt(a: argparse.Namespace) -> dict[str, Any]:
    """Re-estimate every member's batch-normalisation statistics on the images of a new lab or microscope
    (no annotation needed; learned weights unchanged) and write the adapted ensemble to a new folder. Takes
    seconds; try it before annotating images for fine-tuning (train --init)."""
    from .. import io as fio
    from .._validate import require

    require("torch", extra="train")
    from ..nn.adapt import adapt_ensemble

    paths = fio.list_images(a.images)
    if not paths:
        raise ValueError(f"no images found in {a.images} (expected .tif/.png/... files)")
    ids = sorted(paths)
    images = [fio.read_image(paths[i]) for i in ids]
    ej = adapt_ensemble(a.model, images, a.out, image_ids=ids, patches_per_image=a.patches_per_image,
                        subtract_background=a.subtract_background)
    if not a.json:
        print(f"adapted {a.model} to {len(ids)} image(s) of {a.images} -> {ej.parent}")
    return {"ok": True, "command": "adapt", "out": str(ej.parent.resolve()), "images": ids}


def add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", description=inspect.getdoc(run_calibrate),
                       help="a new lab's decision threshold from a few of its annotated images (seconds, no training)")
    p.add_argument("--model", type=Path, required=True, metavar="MODEL",
                   help="the ensemble folder or one of our bioimage.io packages to calibrate")
    p.add_argument("--lab", type=Path, required=True, metavar="DIR",
                   help="the new lab: a project folder (images/ + annotations/) or images/ + labels/expert_*/")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="new folder for the calibrated ensemble")
    p.add_argument("--use", nargs="+", metavar="ID", help="image ids to calibrate on (default: every annotated image)")
    p.add_argument("--min-size", type=int, default=None, metavar="N",
                   help="MIN_PIXEL of ROI-F1 (default: the lab's own for the Segebarth labs, else 0)")
    add_field(p, CrossvalConfig, "tta")  # the views the crossval scores were made with
    add_field(p, PredictConfig, "subtract_background", metavar="RADIUS")  # the input predict will give the model
    p.add_argument("--threshold-only", action="store_true",
                   help="choose the one probability threshold only; by default an object threshold too (an object "
                        "counts when its peak probability exceeds it: which nuclei count, apart from their extent)")
    p.set_defaults(func=run_calibrate)


def run_calibrate(a: argparse.Namespace) -> dict[str, Any]:
    """Choose the ensemble's probability threshold and object threshold on a few annotated images of a new lab
    (the pair with the best mean ROI-F1 against each image's consensus: STAPLE > 0.5 of its experts, or the one
    expert's mask) and write the ensemble with them to a new folder; weights unchanged. Labs differ most in
    what their experts call a positive nucleus: the object threshold (an object counts when its peak
    probability exceeds it) says which nuclei count, the threshold how far each extends. Seconds to a minute;
    can follow adapt or train --init."""
    from .._validate import require

    require("torch", extra="train")
    from ..consensus import training_targets
    from ..jobs.crossval import load_lab
    from ..nn.adapt import calibrate_ensemble

    lab = load_lab(a.lab, min_size=a.min_size)
    use = list(a.use) if a.use else list(lab.ids)
    unknown = [i for i in use if i not in lab.ids]
    if unknown:
        raise ValueError(f"--use: image id(s) {unknown} are not in {a.lab} (its ids: {lab.ids})")
    ids, images, refs = [], [], []
    for iid in use:
        j = lab.ids.index(iid)
        names, stack = lab.expert_stack(j) if any(ms[j] is not None for ms in lab.experts.values()) else ([], None)
        if not names:
            continue
        ids.append(iid)
        images.append(lab.images[j])
        refs.append(training_targets(stack, "staple") > 0.5 if len(names) >= 2 else stack[0] > 0)
    if not ids:
        raise ValueError(f"no annotated image among {use} in {a.lab}; calibration needs at least one")
    from ..models import load_torch_ensemble

    ens = load_torch_ensemble(a.model)
    ej, rec = calibrate_ensemble(ens, images, refs, a.out, image_ids=ids, min_size=lab.min_size, tta=a.tta,
                                 subtract_background=a.subtract_background, objects=not a.threshold_only)
    if not a.json:
        print(table(rec["table"], ["threshold", "object_threshold", "roi_f1", "dice"]))
        obj = rec["object_threshold"]
        print(f"threshold {rec['previous_threshold']:g} -> {rec['threshold']:g}"
              + (f", object threshold {obj:g}" if obj is not None else ", no object threshold")
              + f" on {len(ids)} image(s) of {a.lab} (mean ROI-F1 {rec['roi_f1']:.3f}; the best single threshold "
              f"{rec['roi_f1_one_threshold']:.3f}) -> {ej.parent}")
        if a.subtract_background:
            print(f"chosen on the images with their background subtracted: predict with --subtract-background "
                  f"{a.subtract_background:g} too")
    return {"ok": True, "command": "calibrate", "out": str(ej.parent.resolve()), "images": ids,
            "threshold": rec["threshold"], "object_threshold": rec["object_threshold"],
            "previous_threshold": rec["previous_threshold"], "roi_f1": rec["roi_f1"],
            "roi_f1_one_threshold": rec["roi_f1_one_threshold"]}
