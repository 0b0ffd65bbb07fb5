"""Command line: ``fiji-consensus <command>``.

Each command parses its arguments, builds a validated config, calls one library function and exits with
0 only on success. ``--json`` prints exactly one machine-readable line on stdout (what Fiji's macro
``exec()`` returns); progress bars and logs go to stderr. This is the only module that configures logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

logger = logging.getLogger("fiji_consensus.cli")


# --------------------------------------------------------------------------------------------- helpers


def _setup_logging(verbosity: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("fiji_consensus")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _emit_json(payload: dict[str, Any]) -> None:
    from ._util import json_safe

    sys.stdout.write(json.dumps(json_safe(payload), allow_nan=False, default=str) + "\n")
    sys.stdout.flush()


def _error_text(exc: BaseException) -> str:
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment]
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{loc.replace('_', '-')}: {msg}" if loc else msg)
        return "invalid arguments: " + "; ".join(parts)
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"file not found: {exc.filename}"
    return str(exc) or type(exc).__name__


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "  nan"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    if not rows:
        return ""
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths)))
              for row in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- commands


def _default(model: str, field: str) -> Any:
    """The default of ``config.<model>.<field>``: the CLI states no default of its own (a test checks it)."""
    from . import config

    return getattr(config, model).model_fields[field].get_default(call_default_factory=True)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON result line on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.add_argument("-v", "--verbose", action="count", default=1, help="more log output (-vv for debug)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _add_inputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs (either --images and --experts, or --project)")
    g.add_argument("--images", type=Path, metavar="DIR", help="folder of images (<id>.png/.tif/...)")
    g.add_argument(
        "--experts", type=Path, nargs="+", metavar="DIR", default=_default("ConsensusConfig", "experts"),
        help="one folder per expert: masks, RoiSet .zip, .roi or overlay TIFFs, paired with images by id",
    )
    g.add_argument("--expert-names", nargs="+", metavar="NAME", help="names for the expert folders")
    g.add_argument("--project", type=Path, metavar="DIR", help="project folder (images/, annotations/<expert>/)")
    g.add_argument("--ignore", type=Path, metavar="DIR", help="folder of ignore masks (<id>...), optional")
    g.add_argument("--min-size", type=int, default=_default("ConsensusConfig", "min_size"), metavar="PIXELS",
                   help="drop objects smaller than this for object scores and ROIs (default %(default)s)")


def _consensus_parser(sub) -> None:
    p = sub.add_parser(
        "consensus",
        help="consensus of several experts, per-expert scores and agreement",
        description="Compute the consensus of several experts' annotations (STAPLE, majority vote or "
        "object-level), score every expert against it and write Fiji-ready outputs "
        "(masks, probability, RoiSet zips, overlay TIFFs, CSV tables, config.json).",
    )
    _add_inputs(p)
    p.add_argument("--method", choices=["staple", "majority", "objects"], default=_default("ConsensusConfig", "method"))
    p.add_argument("--threshold", type=float, default=_default("ConsensusConfig", "threshold"),
                   help="STAPLE posterior threshold (default %(default)s)")
    p.add_argument("--prior", type=float, help="STAPLE foreground prior (default: estimated)")
    p.add_argument("--max-iter", type=int, default=_default("ConsensusConfig", "max_iter"),
                   help="STAPLE iteration cap (default %(default)s)")
    p.add_argument("--staple-estimate", choices=["auto", "image", "pooled"],
                   default=_default("ConsensusConfig", "staple_estimate"),
                   help="STAPLE per image (as SimpleITK, the published est_GT) or pooled over the images each "
                   "expert annotated (experts annotated different images); auto: per image when every expert "
                   "annotated every image, else pooled")
    p.add_argument("--skip-incomplete", action="store_true",
                   help="leave out images annotated by fewer than 2 experts (default: stop and list them)")
    p.add_argument("--min-votes", type=int, help="majority: experts needed per pixel (default: > half)")
    p.add_argument("--min-experts", type=int, help="objects: experts needed per object (default: > half)")
    p.add_argument("--iou-threshold", type=float, default=_default("ConsensusConfig", "iou_threshold"),
                   help="objects: matching IoU (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlays/<id>.tif")
    _add_common(p)
    p.set_defaults(func=_run_consensus)


def _inputs_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = dict(images=a.images, experts=a.experts, expert_names=a.expert_names,
                              project=a.project, ignore=a.ignore, min_size=a.min_size)
    return {k: v for k, v in kw.items() if v is not None}


def _run_consensus(a: argparse.Namespace) -> dict[str, Any]:
    from .config import ConsensusConfig
    from .jobs import run_consensus

    cfg = ConsensusConfig(
        **_inputs_kwargs(a), method=a.method, threshold=a.threshold, prior=a.prior, max_iter=a.max_iter,
        min_votes=a.min_votes, min_experts=a.min_experts, iou_threshold=a.iou_threshold, out=a.out,
        overwrite=a.overwrite, resume=a.resume, write_overlays=not a.no_overlays,
        staple_estimate=a.staple_estimate, skip_incomplete=a.skip_incomplete,
    )
    summary = run_consensus(cfg, progress=not (a.no_progress or a.quiet))
    if not a.json:
        rows = [{"expert": e, **s} for e, s in summary["expert_scores"].items()]
        print(f"consensus ({summary['method']}) of {summary['n_images']} images -> {summary['out']}")
        print(_table(rows, ["expert", "dice", "roi_f1", "sensitivity"]))
        print(f"Fleiss' kappa (pixels, mean over images): {_fmt(summary['mean_fleiss_kappa'])}; "
              f"ICC(2,1) of object counts: {_fmt(summary['icc_object_counts'])}")
        _print_design(summary)
    return summary


def _print_design(summary: dict[str, Any]) -> None:
    """Who annotated what, when the experts annotated different images."""
    if summary.get("design", "").startswith("every"):
        return
    print("annotated images per expert: " + ", ".join(f"{e} {n}" for e, n in summary["annotated_by"].items()))
    none = [f"{p['rater_a']}-{p['rater_b']}" for p in summary["pair_overlap"] if not p["n_images"]]
    if none:
        print("no shared image (no agreement): " + ", ".join(none))
    if summary.get("staple"):
        print(f"STAPLE estimate: {summary['staple']['estimate']}")
    if summary.get("skipped_images"):
        print(f"left out (fewer than 2 experts): {', '.join(summary['skipped_images'])}")


def _agreement_parser(sub) -> None:
    p = sub.add_parser(
        "agreement",
        help="pairwise agreement of experts, and each expert vs a reference",
        description="Score the experts against each other (pixel Dice, IoU, ROI-F1, Cohen's kappa; "
        "Fleiss' kappa over all) and, with --reference, each expert against a reference such as est_GT. "
        "No consensus is written.",
    )
    _add_inputs(p)
    p.add_argument("--reference", type=Path, metavar="DIR", help="folder of reference masks (e.g. est_GT)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write agreement.csv / experts.csv here")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing output folder")
    _add_common(p)
    p.set_defaults(func=_run_agreement)


def _run_agreement(a: argparse.Namespace) -> dict[str, Any]:
    from .config import AgreementConfig
    from .jobs import run_agreement

    cfg = AgreementConfig(**_inputs_kwargs(a), reference=a.reference, out=a.out, overwrite=a.overwrite)
    summary = run_agreement(cfg, progress=not (a.no_progress or a.quiet))
    if not a.json:
        print(f"agreement of {len(summary['experts'])} experts on {summary['n_images']} images")
        print(_table(summary["pairwise"], ["rater_a", "rater_b", "n_images", "dice", "iou", "roi_f1", "cohen_kappa"]))
        if summary["vs_reference"]:
            print("\nvs reference:")
            print(_table(summary["vs_reference"], ["expert", "dice", "roi_f1", "sensitivity", "specificity"]))
        print(f"Fleiss' kappa (pixels, mean over images): {_fmt(summary['mean_fleiss_kappa'])}")
        _print_design(summary)
    return summary


def _plan_parser(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="annotation plan: which expert annotates which image next",
        description="Propose which expert annotates which image of a project next: images the model is least "
        "sure about (--predictions) or the experts disagree on most come first; every image gets --target "
        "experts; every pair of experts shares images (so their agreement can be measured and the pooled "
        "STAPLE links them); --budget caps the new annotations. Writes <project>/plan/plan.csv (order, image, "
        "expert, reason) and summary.json. `plan next` names an expert's next planned image.",
    )
    p.add_argument("--project", type=Path, metavar="DIR", help="project folder (images/, annotations/<expert>/)")
    p.add_argument("--experts", nargs="+", metavar="NAME", default=[],
                   help="the experts to plan for (default: the project's annotations/<expert>/ folders)")
    p.add_argument("--target", type=int, default=3, help="experts per image (default 3, at least 2)")
    p.add_argument("--budget", type=int, metavar="N", help="largest number of new annotations (default: all needed)")
    p.add_argument("--predictions", type=Path, metavar="DIR",
                   help="a `predict` output folder (or a folder of uncertainty maps): least sure images first")
    p.add_argument("--out", type=Path, metavar="DIR", help="plan folder (default <project>/plan)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier plan")
    _add_common(p)
    p.set_defaults(func=_run_plan, help_parser=p)
    psub = p.add_subparsers(dest="plan_command", metavar="PLAN_COMMAND")
    q = psub.add_parser(
        "next",
        help="the next planned image of one expert",
        description="Print the next image the project's plan gives an expert that the expert has not annotated "
        "yet (with --json one line: {\"image\": id or null, \"path\": ..., \"remaining\": n}).",
    )
    q.add_argument("--project", type=Path, required=True, metavar="DIR", help="project folder")
    q.add_argument("--expert", required=True, metavar="NAME", help="the expert's name (annotations/<NAME>/)")
    q.add_argument("--plan", type=Path, metavar="CSV", help="plan file (default <project>/plan/plan.csv)")
    _add_common(q)
    q.set_defaults(func=_run_plan_next)


def _run_plan(a: argparse.Namespace) -> dict[str, Any]:
    from .config import PlanConfig
    from .jobs import run_plan

    if a.project is None:
        raise ValueError("plan needs --project DIR (a folder with images/ and annotations/<expert>/)")
    cfg = PlanConfig(project=a.project, experts=a.experts, target=a.target, budget=a.budget,
                     predictions=a.predictions, out=a.out, overwrite=a.overwrite)
    s = run_plan(cfg)
    if not a.json:
        print(f"plan: {s['annotations_planned']} new annotations for {s['n_images']} images, target "
              f"{s['target']} experts per image, by {s['priority']} -> {s['plan']}")
        print("per expert: " + ", ".join(f"{e} {n}" for e, n in s["planned_per_expert"].items()))
        print(f"images at the target: {s['images_at_target']} of {s['n_images']}; fewest images shared by a "
              f"pair of experts: {s['min_pair_overlap']}")
        if s["pairs_without_overlap"]:
            print("pairs without a shared image: " + ", ".join("-".join(p) for p in s["pairs_without_overlap"]))
    return s


def _run_plan_next(a: argparse.Namespace) -> dict[str, Any]:
    from .jobs import next_planned

    s = next_planned(a.project, a.expert, plan=a.plan)
    if not a.json:
        if s["image"] is None:
            print(f"nothing planned left for {a.expert}")
        else:
            print(f"{a.expert}: next {s['image']} ({s['path']}); remaining {s['remaining']}")
    return s


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a U-Net ensemble on the experts' consensus (needs the train extra: torch)",
        description="Train K U-Nets on consensus targets (k-fold, grouped k-fold or bootstrap splits), keep each "
        "member's best checkpoint on its held-out images, and write the ensemble folder (ensemble.json + "
        "member weights + logs). An interrupted run resumes when started again with the same settings. "
        "Without --iterations the budget is --max-minutes (default 60) for the whole ensemble.",
    )
    g = p.add_argument_group("inputs (--images with --labels and/or --experts, or --project)")
    g.add_argument("--images", type=Path, metavar="DIR", help="folder of training images")
    g.add_argument("--labels", type=Path, metavar="DIR", help="folder of target masks (e.g. consensus masks/)")
    g.add_argument("--experts", type=Path, nargs="+", default=[], metavar="DIR",
                   help="experts' folders: consensus targets are computed from them")
    g.add_argument("--expert-names", nargs="+", metavar="NAME", help="names for the expert folders")
    g.add_argument("--project", type=Path, metavar="DIR", help="project folder (images/, annotations/<expert>/)")
    g.add_argument("--ignore", type=Path, metavar="DIR", help="folder of ignore masks")
    g.add_argument("--targets", choices=["staple", "staple-soft", "fraction", "majority"], default="staple",
                   help="targets from the experts (default staple: posterior > 0.5)")
    g.add_argument("--groups", type=Path, metavar="CSV", help="image id -> group CSV for grouped k-fold")
    _add_lab_inputs(g, required=False)
    _add_train_options(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="ensemble folder (models/NAME)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an ensemble folder made by an earlier run (without it, running the same "
                   "command again resumes an interrupted run from its checkpoints: there is no --resume flag)")
    _add_dask(p, task="member")
    _add_common(p)
    p.set_defaults(func=_run_train)


def _tdefault(name: str) -> Any:
    """The default of a TrainConfig field (the one place where training defaults are defined)."""
    from .config import TrainConfig

    return TrainConfig.model_fields[name].default


def _adefault(name: str) -> Any:
    from .config import AugmentOptions

    return AugmentOptions.model_fields[name].default


def _add_train_options(p: argparse.ArgumentParser, *, init: bool = True) -> None:
    """Ensemble, budget, network and augmentation options of train and crossval (defaults: TrainConfig's)."""
    t = p.add_argument_group("ensemble and budget")
    t.add_argument("--members", type=int, default=_tdefault("members"),
                   help=f"ensemble members (default {_tdefault('members')})")
    t.add_argument("--split", choices=["auto", "kfold", "group_kfold", "bootstrap", "all"], default=_tdefault("split"),
                   help="auto: grouped k-fold with --groups, else k-fold; all: every member trains on all images "
                   "(fine-tuning on a few)")
    if init:
        t.add_argument("--init", type=Path, metavar="MODEL",
                       help="fine-tune: start every member from a member of this ensemble folder or fiji-consensus "
                       "bioimage.io package (its architecture and normalisation are kept); use a smaller "
                       "--learning-rate (e.g. 5e-4) and few --iterations")
    t.add_argument("--folds", type=int, help="folds (default: --members)")
    t.add_argument("--iterations", type=int, default=_tdefault("iterations"),
                   help="iterations per member (default: none, --max-minutes decides)")
    t.add_argument("--max-minutes", type=float, default=_tdefault("max_minutes"),
                   help=f"wall-time budget for the whole ensemble (default {_tdefault('max_minutes'):g})")
    t.add_argument("--seed", type=int, default=_tdefault("seed"))
    t.add_argument("--paper-selection", action="store_true",
                   help="keep a member only if its ROI-F1 >= the lowest expert's on every validation image")
    n = p.add_argument_group("network, normalisation and augmentation")
    n.add_argument("--depth", type=int, default=_tdefault("depth"), help=f"U-Net pooling steps (default {_tdefault('depth')})")
    n.add_argument("--base-channels", type=int, default=_tdefault("base_channels"),
                   help=f"features at full resolution (default {_tdefault('base_channels')})")
    n.add_argument("--background-radius", type=int, default=_tdefault("background_radius"),
                   help="remove the background inside the network: white top-hat with a (2r+1)-pixel square "
                   f"window, wider than the widest object (default {_tdefault('background_radius')}: none)")
    n.add_argument("--patch-size", type=int, default=_tdefault("patch_size"))
    n.add_argument("--batch-size", type=int, default=_tdefault("batch_size"))
    n.add_argument("--learning-rate", type=float, default=_tdefault("learning_rate"))
    n.add_argument("--validate-every", type=int, default=_tdefault("validate_every"),
                   help="iterations between validations")
    lo, hi = _tdefault("low_percentile"), _tdefault("high_percentile")
    n.add_argument("--percentiles", type=float, nargs=2, default=(lo, hi), metavar=("LOW", "HIGH"),
                   help=f"per-image normalisation percentiles (default {lo:g} {hi:g})")
    n.add_argument("--min-size", type=int, default=_tdefault("min_size"), help="MIN_PIXEL of the validation ROI-F1")
    n.add_argument("--zoom", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="augment the apparent object size in [MIN, MAX] (e.g. 0.5 1.3 for a model meant for "
                   "other microscopes or magnifications; default: +-15%% only)")
    for name, help_ in (
        ("contrast", "contrast factor of the augmentation drawn in 1 +- this"),
        ("gamma", "gamma of the augmentation drawn log-uniformly in [1/(1+g), 1+g]"),
        ("noise", "largest Gaussian noise sigma of the augmentation (normalised units)"),
        ("blur", "largest Gaussian blur sigma (pixels) of the augmentation, on a third of the patches"),
        ("background", "largest peak (normalised units) of a random smooth background field (ramp + wide "
         "bump) added to or multiplied into half of the patches: robustness to bright, uneven backgrounds"),
    ):
        n.add_argument(f"--{name}", type=float, default=_adefault(name), help=f"{help_} (default {_adefault(name):g})")
    n.add_argument("--device", choices=["auto", "cpu", "cuda"], default=_tdefault("device"))
    n.add_argument("--threads", type=int, help="CPU threads for torch")


def _train_config(a: argparse.Namespace) -> Any:
    from .config import TrainConfig

    return TrainConfig(
        members=a.members, split=a.split, folds=a.folds, seed=a.seed, iterations=a.iterations,
        max_minutes=a.max_minutes, depth=a.depth, base_channels=a.base_channels, patch_size=a.patch_size,
        background_radius=a.background_radius,
        batch_size=a.batch_size, learning_rate=a.learning_rate, validate_every=a.validate_every,
        min_size=a.min_size, paper_selection=a.paper_selection, device=a.device, threads=a.threads,
        low_percentile=a.percentiles[0], high_percentile=a.percentiles[1],
        augment={"zoom": tuple(a.zoom) if a.zoom else None, "noise": a.noise, "blur": a.blur,
                 "contrast": a.contrast, "gamma": a.gamma, "background": a.background},
    )


def _name_int(text: str) -> tuple[str, int]:
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=N (e.g. lab-inns1=16); got {text!r}")
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=N with an integer N; got {text!r}") from None


def _add_lab_inputs(g: Any, *, required: bool) -> None:
    g.add_argument("--lab", type=Path, action="append", default=[], metavar="DIR", required=required,
                   help="a lab folder (repeat for several labs): a project folder (images/, annotations/<expert>/) "
                   "or images/ + labels/expert_*/; each lab keeps its own experts, consensus and --lab-min-size")
    g.add_argument("--lab-min-size", type=_name_int, action="append", default=[], metavar="NAME=N",
                   help="MIN_PIXEL of one lab (default 30 for lab-wue1/lab-mue, 16 for lab-inns1, else --min-size)")


def _crossval_parser(sub) -> None:
    p = sub.add_parser(
        "crossval",
        help="leave-one-lab-out: train on all labs but one, score the left-out lab against its experts",
        description="For every lab in turn (or those of --hold-out): train an ensemble on the other labs (each "
        "with its own experts and consensus, patches drawn equally often from each lab), predict the left-out "
        "lab and score each image against that lab's consensus next to each of its experts (above / within / "
        "below the experts; the paper's rule: ROI-F1 >= the lowest expert's). Writes crossval.csv, summary.json "
        "and one folder per fold; an interrupted run resumes when started again.",
    )
    g = p.add_argument_group("labs")
    _add_lab_inputs(g, required=True)
    g.add_argument("--hold-out", nargs="+", metavar="LAB", help="labs to leave out in turn (default: every lab)")
    g.add_argument("--targets", choices=["staple", "staple-soft", "fraction", "majority"], default="fraction",
                   help="training targets from each lab's experts (default fraction)")
    g.add_argument("--tta", choices=["none", "flips", "dihedral"], default="flips")
    _add_train_options(p, init=False)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    _add_common(p)
    p.set_defaults(func=_run_crossval)


def _run_crossval(a: argparse.Namespace) -> dict[str, Any]:
    from .config import CrossvalConfig
    from .crossval import run_crossval

    if len(a.lab) < 2:
        raise ValueError(f"crossval needs at least 2 --lab folders; got {len(a.lab)}")
    cfg = CrossvalConfig(labs=a.lab, min_sizes=dict(a.lab_min_size), hold_out=a.hold_out, targets=a.targets,
                         tta=a.tta, out=a.out, train=_train_config(a))
    res = run_crossval(cfg, progress=not (a.no_progress or a.quiet))
    if not a.json:
        rows = []
        for lab, s in res["labs"].items():
            rows.append({"left out": lab, "model ROI-F1": s["model"]["roi_f1"], "model Dice": s["model"]["dice"],
                         "median expert": s["median_expert"]["roi_f1"], "lowest expert": s["lowest_expert"]["roi_f1"],
                         "rule": f"{s['images_at_least_lowest_expert']}/{s['images']}"})
        print(_table(rows, ["left out", "model ROI-F1", "model Dice", "median expert", "lowest expert", "rule"]))
        print(f"per image and rater: {Path(res['out']) / 'crossval.csv'}")
    return res


def _adapt_parser(sub) -> None:
    p = sub.add_parser(
        "adapt",
        help="label-free adaptation of an ensemble to a new lab's images (batch-norm statistics)",
        description="Re-estimate every member's batch-normalisation statistics on the images of a new lab or "
        "microscope (no annotation needed; learned weights unchanged) and write the adapted ensemble to a new "
        "folder. Takes seconds; try it before annotating images for fine-tuning (train --init).",
    )
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="the ensemble folder to adapt")
    p.add_argument("--images", type=Path, required=True, metavar="DIR", help="the new lab's images")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="new folder for the adapted ensemble")
    p.add_argument("--patches-per-image", type=int, default=16, metavar="N")
    _add_common(p)
    p.set_defaults(func=_run_adapt)


def _run_adapt(a: argparse.Namespace) -> dict[str, Any]:
    from . import io as fio
    from ._validate import require

    require("torch", extra="train")
    from .nn.adapt import adapt_ensemble

    paths = fio.list_images(a.images)
    if not paths:
        raise ValueError(f"no images found in {a.images} (expected .tif/.png/... files)")
    ids = sorted(paths)
    images = [fio.read_image(paths[i]) for i in ids]
    ej = adapt_ensemble(a.model, images, a.out, image_ids=ids, patches_per_image=a.patches_per_image)
    if not a.json:
        print(f"adapted {a.model} to {len(ids)} image(s) of {a.images} -> {ej.parent}")
    return {"ok": True, "command": "adapt", "out": str(ej.parent.resolve()), "images": ids}


def _add_dask(p: argparse.ArgumentParser, *, task: str) -> None:
    g = p.add_argument_group(
        f"Dask (the distributed extra): one task per {task} on a cluster; the machines share the files"
    )
    x = g.add_mutually_exclusive_group()
    x.add_argument("--scheduler", metavar="ADDRESS",
                   help="a running Dask scheduler (tcp://host:8786) or its scheduler file (.json)")
    x.add_argument("--workers", type=int, metavar="N", help="start a local Dask cluster of N worker processes")
    at_a_time = "images at a time" if task == "image" else "Dask threads (a process trains one member at a time)"
    g.add_argument("--threads-per-worker", type=int, default=1, metavar="N",
                   help=f"with --workers: {at_a_time} per worker process (default 1)")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help=f"retries of a failed {task} before it is reported (default 2)")


def _dask_options(a: argparse.Namespace) -> Any:
    if a.scheduler is None and a.workers is None:
        return None
    from .config import DaskOptions

    return DaskOptions(scheduler=a.scheduler, workers=a.workers, threads_per_worker=a.threads_per_worker,
                       retries=a.retries)


def _run_train(a: argparse.Namespace) -> dict[str, Any]:
    from .config import TrainConfig, TrainJobConfig
    from .jobs import run_train

    train = _train_config(a)
    kw = dict(images=a.images, labels=a.labels, experts=a.experts, expert_names=a.expert_names,
              project=a.project, ignore=a.ignore, groups=a.groups, init=a.init, labs=a.lab or None,
              lab_min_sizes=dict(a.lab_min_size) if a.lab_min_size else None)
    cfg = TrainJobConfig(**{k: v for k, v in kw.items() if v is not None}, targets=a.targets, out=a.out,
                         overwrite=a.overwrite, train=train, dask=_dask_options(a))
    summary = run_train(cfg, progress=not (a.no_progress or a.quiet))
    if not a.json:
        print(f"ensemble of {len(summary.get('members', []))} members -> {summary['out']}")
        rows = [{"member": m.get("index", i), **{k: m.get(k) for k in ("val_dice", "val_roi_f1", "selected")}}
                for i, m in enumerate(summary.get("members", []))]
        print(_table(rows, ["member", "val_dice", "val_roi_f1", "selected"]))
    return summary


def _predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict with an ensemble: probability, uncertainty, objects, Fiji overlays",
        description="Run an ensemble (models/NAME) on images with test-time augmentation and tiling; write "
        "per image probability and uncertainty (float32, absolute scale), labels, a RoiSet with one ROI per "
        "object coloured by its uncertainty, an ImageJ hyperstack (image, probability, uncertainty) with the "
        "ROIs as overlay, and object tables. Images already done are skipped; an unreadable image is "
        "reported at the end and makes the exit code non-zero. A zarr input (IMAGE.zarr: a 2-D array, a "
        "group with one array, or an OME-Zarr image) larger than memory is predicted block by block on Dask "
        "into a zarr output (--out OUT.zarr: probability and uncertainty arrays).",
    )
    p.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE_OR_DIR", help="images or folders of images")
    p.add_argument("--model", type=Path, required=True, action="append", metavar="DIR_OR_ZIP",
                   help="ensemble folder (models/NAME), or a bioimage.io package (.zip); repeat --model to "
                   "ensemble several packages (same uncertainty measures over packages)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--tta", choices=["none", "flips", "dihedral"], default=None,
                   help="test-time augmentation views (default: flips, 4 views, for an ensemble folder; none "
                   "for bioimage.io packages, which hold their own views)")
    p.add_argument("--tile", type=int, default=_default("PredictConfig", "tile"),
                   help="tile size in pixels (default %(default)s)")
    p.add_argument("--overlap", type=float, help="tile overlap fraction (default: 0 for batch-norm nets)")
    p.add_argument("--batch-size", type=int, default=_default("PredictConfig", "batch_size"),
                   help="tiles per network call (default %(default)s)")
    p.add_argument("--threshold", type=float, help="probability threshold (default: the model's)")
    p.add_argument("--min-size", type=int, help="smallest object in pixels (default: the model's)")
    p.add_argument("--split", choices=["none", "distance", "probability"], default=_default("PredictConfig", "split"),
                   help="watershed split of touching objects (default %(default)s)")
    p.add_argument("--uncertainty", choices=["entropy", "expected_entropy", "mutual_information", "std",
                                             "deepflash2"], default=_default("PredictConfig", "uncertainty"),
                   help="uncertainty measure written to uncertainty/ (default %(default)s: predictive entropy, bits)")
    p.add_argument("--channel", type=int, help="channel of multi-channel images (0-based)")
    p.add_argument("--device", default=_default("PredictConfig", "device"),
                   help="torch device (cpu, cuda, ...; default %(default)s)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--overwrite", action="store_true", help="predict every image again, replacing files")
    p.add_argument("--trust-code", action="store_true",
                   help="run a bioimage.io package whose only usable weights are pytorch_state_dict: they import "
                   "and run the Python file shipped in the package (refused without this flag)")
    p.add_argument("--keras-normalization", metavar="SPEC",
                   help="normalisation of plain Keras models (.keras, .h5) given as --model (required with them): "
                   "percentile:LOW,HIGH (e.g. percentile:1,99.8), range:MIN,MAX or none")
    p.add_argument("--chunk", type=int, default=_default("PredictConfig", "chunk"), metavar="PIXELS",
                   help="zarr input: block (and output chunk) side in pixels, plus the halo (default %(default)s)")
    _add_dask(p, task="image")
    _add_common(p)
    p.set_defaults(func=_run_predict)


def _run_predict(a: argparse.Namespace) -> dict[str, Any]:
    from .config import PredictConfig
    from .predict import run_predict

    cfg = PredictConfig(
        model=a.model, inputs=a.inputs, out=a.out, tta=a.tta, tile=a.tile, overlap=a.overlap,
        batch_size=a.batch_size, threshold=a.threshold, min_size=a.min_size, split=a.split,
        uncertainty=a.uncertainty, channel=a.channel, device=a.device, threads=a.threads, overwrite=a.overwrite,
        chunk=a.chunk, dask=_dask_options(a), trust_code=a.trust_code, keras_normalization=a.keras_normalization,
    )
    summary = run_predict(cfg, progress=not (a.no_progress or a.quiet))
    if not a.json and "n_blocks" in summary:  # a zarr input
        print(f"predicted a {'x'.join(map(str, summary['shape']))} image in {summary['n_blocks']} blocks "
              f"({summary['megapixels_per_second']:.2f} megapixels/s) -> {summary['out']}")
    elif not a.json:
        print(f"predicted {summary.get('n_predicted', 0)} of {summary.get('n_images', '?')} image(s) -> {summary.get('out')}")
    return summary


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE; got {text!r}")
    return name.strip(), value.strip()


def _evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="objectivity, reliability and validity of experts, consensus and models; HTML report",
        description="The analyses of Segebarth et al. 2020: every expert and model against the consensus "
        "(Dice, ROI-F1, AP; STAPLE sensitivity/specificity; models above/within/below the experts; the "
        "paper's selection rule), agreement and reliability (pairwise ROI-F1, count CV, ICC, SD of effect "
        "sizes across the models of a strategy), validity per group (Kruskal-Wallis with eta2_H, Mann-Whitney "
        "with eta2 = Z^2/N, Bonferroni, Grubbs outliers flagged), and uncertainty vs expert disagreement "
        "(binned uncertainty, QUBIQ Dice, calibration). Writes CSV tables, summary.json and report.html.",
    )
    _add_inputs(p)
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--consensus", type=Path, metavar="DIR",
                   help="consensus masks (e.g. est_GT or a consensus run's masks/); default: STAPLE > 0.5")
    g.add_argument("--model-predictions", type=_name_value, nargs="+", action="extend", default=[],
                   metavar="NAME=DIR",
                   help="a model's predictions: a `fiji-consensus predict` folder (probability/, uncertainty/) "
                   "or a folder of masks / probability TIFFs")
    g.add_argument("--strategy", type=_name_value, action="append", default=[], metavar="NAME=M1,M2,...",
                   help="models of one training strategy (members, other seeds): their agreement and the SD of "
                   "their effect sizes (default: all models)")
    v = p.add_argument_group("validity")
    v.add_argument("--groups", type=Path, metavar="CSV", help="image id -> group (condition) CSV")
    v.add_argument("--regions", type=Path, metavar="DIR", help="region masks: count objects inside them only")
    v.add_argument("--control", metavar="GROUP", help="control group: values are normalised by its mean")
    v.add_argument("--comparisons", choices=["all", "control"], default=_default("EvaluateConfig", "comparisons"),
                   help="pairwise tests between all groups or each group vs --control (default %(default)s)")
    v.add_argument("--alpha", type=float, default=_default("EvaluateConfig", "alpha"),
                   help="significance level (default %(default)s)")
    r = p.add_argument_group("report")
    r.add_argument("--example", metavar="ID", help="image shown with outlines (default: the first)")
    r.add_argument("--note", help="a note shown at the top of the report (e.g. what the groups stand for)")
    r.add_argument("--calibration-bins", type=int, default=_default("EvaluateConfig", "calibration_bins"),
                   help="probability bins (default %(default)s)")
    r.add_argument("--no-report", action="store_true", help="tables only, no report.html")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing output folder")
    _add_common(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(a: argparse.Namespace) -> dict[str, Any]:
    from .config import EvaluateConfig
    from .evaluate_job import run_evaluate

    models: dict[str, str] = {}
    for name, folder in a.model_predictions:
        if name in models:
            raise ValueError(f"model name {name!r} given twice in --model-predictions")
        models[name] = folder
    strategies = {name: [m.strip() for m in members.split(",") if m.strip()] for name, members in a.strategy}
    cfg = EvaluateConfig(
        **_inputs_kwargs(a), consensus=a.consensus, models=models, strategies=strategies, groups=a.groups,
        regions=a.regions, control=a.control, comparisons=a.comparisons, alpha=a.alpha, example=a.example,
        note=a.note, calibration_bins=a.calibration_bins, report=not a.no_report, out=a.out,
        overwrite=a.overwrite,
    )
    summary = run_evaluate(cfg, progress=not (a.no_progress or a.quiet))
    if not a.json:
        rows = [{"expert": e, **s} for e, s in summary["experts_scores"].items()]
        print(f"evaluation of {summary['n_images']} images against {summary['reference']} -> {summary['out']}")
        print(_table(rows, ["expert", "roi_f1", "dice", "average_precision", "staple_sensitivity"]))
        if summary["models"]:
            rows = [{"model": m, **s} for m, s in summary["models"].items()]
            print("\nmodels (images above the best / within / below the worst expert, by ROI-F1):")
            print(_table(rows, ["model", "roi_f1", "dice", "n_above", "n_within", "n_below", "passes_selection"]))
            _print_qa(summary["models"])
        if "report.html" in summary.get("files", []):
            print(f"report: {Path(summary['out']) / 'report.html'}")
    return summary


def _print_qa(models: dict[str, dict]) -> None:
    """One line per model: does its per-image QA score point at the images it agrees least on?"""
    for m, s in models.items():
        rho = s.get("qa_spearman_roi_f1")
        if s.get("qa_n_images", 0) >= 3 and isinstance(rho, float) and math.isfinite(rho):
            print(f"{m}: QA score vs ROI-F1 Spearman rho {rho:.2f}, vs Dice {s['qa_spearman_dice']:.2f} over "
                  f"{s['qa_n_images']} images (negative = the QA score points at the worst images); first to "
                  f"review: {s['qa_review_first']} (rank {s['qa_review_first_roi_f1_rank']} by ROI-F1, 1 = worst)")


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the pipeline on the bundled real sample (Segebarth et al. 2020, lab-wue1)",
        description="On the bundled 5 images with 5 experts: STAPLE consensus, per-expert scores and agreement, "
        "a check of the consensus against the published est_GT; then, when a model is available (--model, or "
        "the zoo model model_zoo/cfos-wue1 and the zoo extra), prediction with uncertainty and the "
        "objectivity/reliability/validity report of experts and model.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-output"), metavar="DIR")
    p.add_argument("--model", type=Path, metavar="PATH",
                   help="an ensemble folder or bioimage.io package (default: the zoo model cfos-wue1 if built)")
    p.add_argument("--consensus-only", action="store_true", help="stop after the consensus")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing output folder")
    _add_common(p)
    p.set_defaults(func=_run_demo)


def _demo_model(a: argparse.Namespace) -> Path | None:
    """The model of the demo: --model, else the built zoo model cfos-wue1 (None when there is none)."""
    if a.consensus_only:
        return None
    if a.model is not None:
        if not a.model.exists():
            raise FileNotFoundError(a.model)
        return a.model
    try:
        from .zoo import list_zoo

        rows = list_zoo()
    except (ImportError, FileNotFoundError) as exc:
        logger.warning("no zoo model for the demo (%s); consensus only", exc)
        return None
    for row in rows:
        if row["name"] == "cfos-wue1" and row.get("built"):
            return Path(row["package"])
    logger.warning("the zoo model cfos-wue1 is not built (model_zoo/cfos-wue1/build.py); consensus only")
    return None


def _run_demo(a: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from . import datasets, io
    from .config import ConsensusConfig, EvaluateConfig, PredictConfig
    from .jobs import run_consensus

    sample = datasets.load_sample()
    out = Path(a.out)
    progress = not (a.no_progress or a.quiet)
    model = _demo_model(a)
    cfg = ConsensusConfig(
        images=sample.images_dir, experts=sample.expert_dirs, method="staple",
        min_size=datasets.SAMPLE_MIN_SIZE, out=out / "consensus", overwrite=a.overwrite,
    )
    summary = run_consensus(cfg, progress=progress)
    differing = {}
    for image_id in sample.ids:
        ours = io.read_mask(out / "consensus" / "masks" / f"{image_id}.tif")
        differing[image_id] = int(np.count_nonzero(ours != sample.est_gt(image_id)))
    summary["est_gt_differing_pixels"] = differing
    summary["command"] = "demo"
    if model is not None:
        from .evaluate_job import run_evaluate
        from .predict import run_predict

        pred_out = out / "predictions" / model.stem
        pred = run_predict(
            PredictConfig(model=model, inputs=[sample.images_dir], out=pred_out,
                          min_size=datasets.SAMPLE_MIN_SIZE, overwrite=a.overwrite),
            progress=progress,
        )
        ev = run_evaluate(
            EvaluateConfig(
                images=sample.images_dir, experts=sample.expert_dirs, min_size=datasets.SAMPLE_MIN_SIZE,
                models={model.stem: pred_out}, out=out / "report", overwrite=a.overwrite,
                note="Bundled sample: 5 images of lab-wue1. The zoo model was trained on lab-wue1 (these images "
                "were in its training folds): this shows the workflow, its held-out scores are in the model card.",
            ),
            progress=progress,
        )
        summary["model"] = str(model)
        summary["prediction"] = {k: pred.get(k) for k in ("out", "ok", "n_images", "n_objects", "mean_qa_score",
                                                          "seconds_per_image", "failed")
                                 if k in pred}
        summary["evaluation"] = {"out": ev.get("out"), "models": ev.get("models"),
                                 "report": str(out / "report" / "report.html")}
        summary["ok"] = bool(summary.get("ok", True) and pred.get("ok", True))
    if not a.json:
        rows = [{"expert": e, **s} for e, s in summary["expert_scores"].items()]
        print(f"Bundled sample: {len(sample.ids)} images of lab-wue1, {len(sample.experts)} experts "
              f"({datasets.SAMPLE_LICENSE}; {datasets.SAMPLE_CITATION})")
        print(f"STAPLE consensus -> {summary['out']}")
        print(_table(rows, ["expert", "dice", "roi_f1", "sensitivity"]))
        total = sum(differing.values())
        print(f"Consensus vs the published est_GT: {total} differing pixels over {len(differing)} images"
              + (" (identical)" if total == 0 else ""))
        print(f"Open {out / 'consensus' / 'overlays'} in Fiji to see consensus (white) and expert outlines.")
        if model is not None:
            rows = [{"model": m, **s} for m, s in (summary["evaluation"]["models"] or {}).items()]
            print(f"\nModel {model} -> {summary['prediction'].get('out')}")
            print(_table(rows, ["model", "roi_f1", "dice", "n_above", "n_within", "n_below"]))
            _print_qa(summary["evaluation"]["models"] or {})
            print(f"Report: {summary['evaluation']['report']}")
    return summary


def _fiji_parser(sub) -> None:
    p = sub.add_parser("fiji", help="Fiji integration (install the macros and toolset)",
                       description="Fiji integration.")
    fsub = p.add_subparsers(dest="fiji_command", metavar="FIJI_COMMAND")
    p.set_defaults(func=None, help_parser=p)
    q = fsub.add_parser(
        "install-macros",
        help="install the macros and the toolset into a Fiji.app (or ImageJ) folder",
        description="Write the fiji-consensus macros into FIJI_DIR/plugins/Fiji_Consensus/ and the toolset "
        "into FIJI_DIR/macros/toolsets/ (then: toolbar >> 'Fiji Consensus'). Changed files are only "
        "replaced with --overwrite.",
    )
    q.add_argument("fiji_dir", type=Path, metavar="FIJI_DIR", help="the Fiji.app (or ImageJ) folder")
    q.add_argument("--overwrite", action="store_true", help="replace macros that differ from ours")
    _add_common(q)
    # "command" names the subcommand in --json output and error messages (the parent parser sets "fiji")
    q.set_defaults(func=_run_install_macros, command="fiji install-macros")
    w = fsub.add_parser(
        "write-macros",
        help="write the installable macros into a folder, to copy into a Fiji.app by hand",
        description="Write OUT/plugins/Fiji_Consensus/*.ijm and OUT/macros/toolsets/Fiji Consensus.ijm, the "
        "files install-macros puts into a Fiji.app; copy OUT's plugins/ and macros/ folders into Fiji.app.",
    )
    w.add_argument("out", type=Path, metavar="OUT", help="the folder to write into (created if needed)")
    w.add_argument("--overwrite", action="store_true", help="replace macros that differ from ours")
    _add_common(w)
    w.set_defaults(func=_run_write_macros, command="fiji write-macros")
    s = fsub.add_parser(
        "model-summary",
        help="an ensemble's validation scores next to the experts' (what Train Ensemble shows)",
        description="Read MODEL/ensemble.json: mean validation ROI-F1 and Dice of the members, the experts' "
        "median ROI-F1 against the consensus, and a warning when the model is not useful.",
    )
    s.add_argument("model", type=Path, metavar="MODEL", help="an ensemble folder (models/NAME)")
    _add_common(s)
    s.set_defaults(func=_run_model_summary, command="fiji model-summary")


def _run_install_macros(a: argparse.Namespace) -> dict[str, Any]:
    from . import fiji

    files = fiji.install_macros(a.fiji_dir, overwrite=a.overwrite)
    if not a.json:
        for f in files:
            print(f"installed {f}")
    return {"ok": True, "command": "fiji install-macros", "written": [str(f) for f in files]}


def _run_write_macros(a: argparse.Namespace) -> dict[str, Any]:
    from . import fiji

    files = fiji.write_macros(a.out, overwrite=a.overwrite)
    if not a.json:
        for f in files:
            print(f"wrote {f}")
    return {"ok": True, "command": "fiji write-macros", "written": [str(f) for f in files]}


def _run_model_summary(a: argparse.Namespace) -> dict[str, Any]:
    from . import fiji

    summary = fiji.model_summary(a.model)
    if not a.json:
        print(summary["text"])
    return {"ok": True, "command": "fiji model-summary", **summary}


def _package_parser(sub) -> None:
    p = sub.add_parser(
        "package",
        help="package an ensemble as one bioimage.io model (deepImageJ, bioimage.io)",
        description="Write an ensemble folder as one bioimage.io model package (.zip): the members, the "
        "test-time views and the sigmoid inside one network with two outputs, probability and uncertainty; "
        "torchscript, ONNX (opset 17, for deepImageJ) and pytorch_state_dict weights; percentile "
        "normalisation as preprocessing; test tensors, a TIFF sample and a cover from a real image crop; a "
        "model card with the validation scores. --test runs bioimageio.core's test on it (offline).",
    )
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="ensemble folder (models/NAME)")
    p.add_argument("--out", type=Path, required=True, metavar="ZIP", help="package to write (NAME.zip)")
    p.add_argument("--name", help="model name (default: the folder name)")
    p.add_argument("--description", help="one-paragraph description")
    p.add_argument("--tta", choices=["none", "flips", "dihedral"], default=_default("PackageConfig", "tta"),
                   help="test-time views inside the network (default %(default)s; flips: 4 views)")
    p.add_argument("--uncertainty", choices=["entropy", "expected_entropy", "mutual_information", "std",
                                             "deepflash2"], default=_default("PackageConfig", "uncertainty"),
                   help="measure of the uncertainty output (default %(default)s: predictive entropy, bits)")
    p.add_argument("--image", type=Path, metavar="FILE",
                   help="image for test tensors, sample and cover (default: the bundled sample image 0001)")
    p.add_argument("--channel", type=int, help="channel of a multi-channel --image (0-based)")
    p.add_argument("--tile", type=int, default=_default("PackageConfig", "tile"),
                   help="edge of the test crop in pixels (default %(default)s)")
    p.add_argument("--validation", type=Path, metavar="JSON",
                   help="held-out-lab scores (default: validation.json or bench_results.json in the model folder)")
    p.add_argument("--author", dest="authors", action="append", metavar="PERSON",
                   help="author, 'Name; affiliation=...; github_user=...; orcid=...' (repeatable)")
    p.add_argument("--maintainer", dest="maintainers", action="append", default=[], metavar="GITHUB_USER",
                   help="maintainer's GitHub user, or 'Name; github_user=...' (repeatable; bioimageio.spec checks "
                   "GitHub users online, so offline validation fails on users it does not know)")
    p.add_argument("--training-data", metavar="NAME|JSON",
                   help="training data description: 'segebarth2020' or a JSON file (name, authors, license, ...)")
    p.add_argument("--card-notes", type=Path, metavar="MD",
                   help="hand-written additions to the model card: a markdown file of '## Section' blocks")
    p.add_argument("--license", default=_default("PackageConfig", "license"),
                   help="SPDX licence id (default %(default)s)")
    p.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG", help="extra tag (repeatable)")
    p.add_argument("--version", dest="pkg_version", default=_default("PackageConfig", "version"),
                   help="package version (default %(default)s)")
    p.add_argument("--weights", nargs="+", choices=["pytorch_state_dict", "torchscript", "onnx", "keras_hdf5",
                                                    "tensorflow_saved_model_bundle"],
                   default=_default("PackageConfig", "weight_formats"),
                   help="weight formats (default: the torch ones; keras_hdf5 and tensorflow_saved_model_bundle "
                   "need the keras extra)")
    p.add_argument("--card", type=Path, metavar="MD", help="also write the model card here (e.g. README.md)")
    p.add_argument("--test", action="store_true", help="run bioimageio.core's test on the package")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package (and card)")
    _add_common(p)
    p.set_defaults(func=_run_package)


def _run_package(a: argparse.Namespace) -> dict[str, Any]:
    from .config import PackageConfig
    from .zoo import run_package

    kw = {"authors": a.authors} if a.authors else {}
    cfg = PackageConfig(
        model=a.model, out=a.out, name=a.name, description=a.description, tta=a.tta, uncertainty=a.uncertainty,
        image=a.image, channel=a.channel, tile=a.tile, validation=a.validation, license=a.license, tags=a.tags,
        version=a.pkg_version, weight_formats=a.weights, card=a.card, test=a.test, overwrite=a.overwrite,
        maintainers=a.maintainers, training_data=a.training_data, card_notes=a.card_notes, **kw,
    )
    summary = run_package(cfg)
    if not a.json:
        print(f"packaged {summary['members']} members x {len(summary['views'])} views ({summary['measure']}) -> "
              f"{summary['out']} ({summary['bytes'] / 1e6:.1f} MB; weights {', '.join(summary['weight_formats'])})")
        if "test" in summary:
            t = summary["test"]
            print(f"bioimageio test: {t['status']} ({', '.join(t['weight_formats'])})")
    return summary


def _zoo_parser(sub) -> None:
    p = sub.add_parser("zoo", help="the local model zoo (model_zoo/)", description="The local model zoo.")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    p.set_defaults(func=None, help_parser=p)
    q = zsub.add_parser(
        "list",
        help="list the packaged models with their held-out scores",
        description="List the models under model_zoo/<name>/ (the package, its size, members, views, "
        "uncertainty measure and held-out-lab ROI-F1 of the ensemble and the median expert).",
    )
    q.add_argument("--root", type=Path, metavar="DIR",
                   help="zoo folder (default: $FIJI_CONSENSUS_ZOO, else ./model_zoo, else a clone's model_zoo/)")
    _add_common(q)
    q.set_defaults(func=_run_zoo_list)


def _run_zoo_list(a: argparse.Namespace) -> dict[str, Any]:
    from .zoo import ZOO_HINT, list_zoo, zoo_root

    root = zoo_root(a.root)
    models = list_zoo(root) if root is not None else []
    if root is None and not a.json:
        print(ZOO_HINT)
    elif not a.json:
        rows = []
        for m in models:
            labs = m.get("labs") or {}
            scores = "; ".join(
                f"{lab} {_fmt(e.get('ensemble_roi_f1'))} (experts {_fmt(e.get('median_expert_roi_f1'))})"
                for lab, e in labs.items()
            )
            rows.append({"model": m["name"], "MB": m.get("megabytes"), "members": m.get("members"),
                         "views": m.get("views"), "uncertainty": m.get("measure"),
                         "held-out ROI-F1": scores or ("not built" if not m.get("built") else m.get("error", "n/a"))})
        print(_table(rows, ["model", "MB", "members", "views", "uncertainty", "held-out ROI-F1"]) or "no models")
    return {"ok": True, "command": "zoo list", "root": None if root is None else str(root), "models": models}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiji-consensus",
        description="Multi-expert consensus, agreement and (later) U-Net ensembles for Fiji/ImageJ users.",
    )
    parser.add_argument("--version", action="version", version=f"fiji-consensus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _consensus_parser(sub)
    _agreement_parser(sub)
    _plan_parser(sub)
    _train_parser(sub)
    _crossval_parser(sub)
    _adapt_parser(sub)
    _predict_parser(sub)
    _package_parser(sub)
    _zoo_parser(sub)
    _evaluate_parser(sub)
    _demo_parser(sub)
    _fiji_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 only on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        getattr(args, "help_parser", parser).print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.verbose, args.quiet or args.json)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        msg = ("interrupted; rerun the same command with --resume to continue" if hasattr(args, "resume")
               else "interrupted; rerun the same command")
        if args.json:
            _emit_json({"ok": False, "command": args.command, "error": msg})
        print(f"fiji-consensus: {msg}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the CLI turns every failure into a message + exit code
        if args.debug:
            logger.exception("failed")
        msg = _error_text(exc)
        if args.json:
            _emit_json({"ok": False, "command": args.command, "error": msg, "error_type": type(exc).__name__})
        print(f"fiji-consensus {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        _emit_json(result)
    if isinstance(result, dict) and result.get("ok") is False:
        print(f"fiji-consensus {args.command}: error: {result.get('error', 'failed')}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
