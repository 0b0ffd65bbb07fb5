"""The model commands: predict, package, the local zoo, the demo and the Fiji integration."""

from __future__ import annotations

import argparse
import functools
import inspect
from pathlib import Path
from typing import Any

from ..config import ConsensusConfig, EvaluateConfig, PackageConfig, PredictConfig
from ._builder import add_field, field_values
from ._common import add_dask, dask_options, fmt, job_command, logger, progress, table
from .experts import print_qa


def add_predict(sub) -> None:
    p = job_command(sub, "predict", PredictConfig, "predict.run_predict", report=_report_predict,
                    config=_predict_config, help="predict with an ensemble: probability, uncertainty, objects, Fiji overlays")
    add_field(p, PredictConfig, "inputs", positional=True, metavar="IMAGE_OR_DIR")
    add_field(p, PredictConfig, "model", metavar="DIR_OR_ZIP", append=True)
    add_field(p, PredictConfig, "out", metavar="DIR")
    for name in ("tta", "tile", "overlap", "batch_size", "threshold", "object_threshold", "min_size", "split",
                 "uncertainty", "channel", "device", "threads", "overwrite", "trust_code"):
        add_field(p, PredictConfig, name)
    add_field(p, PredictConfig, "subtract_background", metavar="RADIUS")
    add_field(p, PredictConfig, "subtract_background_if_flagged")
    add_field(p, PredictConfig, "keras_normalization", metavar="SPEC")
    add_field(p, PredictConfig, "chunk", metavar="PIXELS")
    add_dask(p, task="image")


def _predict_config(a: argparse.Namespace) -> PredictConfig:
    return PredictConfig(**field_values(a, PredictConfig), dask=dask_options(a))


def _report_predict(summary: dict[str, Any]) -> None:
    if "n_blocks" in summary:  # a zarr input
        print(f"predicted a {'x'.join(map(str, summary['shape']))} image in {summary['n_blocks']} blocks "
              f"({summary['megapixels_per_second']:.2f} megapixels/s) -> {summary['out']}")
    else:
        print(f"predicted {summary.get('n_predicted', 0)} of {summary.get('n_images', '?')} image(s) -> {summary.get('out')}")


def add_package(sub) -> None:
    p = job_command(sub, "package", PackageConfig, "jobs.run_package", report=_report_package, progress_bar=False,
                    help="package an ensemble as one bioimage.io model (deepImageJ, bioimage.io)")
    for name, metavar in (("model", "DIR"), ("out", "ZIP"), ("name", None), ("description", None), ("tta", None),
                          ("uncertainty", None), ("image", "FILE"), ("channel", None), ("tile", None),
                          ("validation", "JSON")):
        add_field(p, PackageConfig, name, metavar=metavar)
    add_field(p, PackageConfig, "authors", flag="--author", metavar="PERSON", append=True)
    add_field(p, PackageConfig, "maintainers", flag="--maintainer", metavar="GITHUB_USER", append=True)
    add_field(p, PackageConfig, "training_data", metavar="NAME|JSON")
    add_field(p, PackageConfig, "card_notes", metavar="MD")
    add_field(p, PackageConfig, "license")
    add_field(p, PackageConfig, "tags", flag="--tag", metavar="TAG", append=True)
    add_field(p, PackageConfig, "version")
    add_field(p, PackageConfig, "weight_formats", flag="--weights")
    add_field(p, PackageConfig, "card", metavar="MD")
    add_field(p, PackageConfig, "domain_labs", flag="--domain-lab", metavar="DIR", append=True)
    add_field(p, PackageConfig, "test")
    add_field(p, PackageConfig, "overwrite")


def _report_package(summary: dict[str, Any]) -> None:
    print(f"packaged {summary['members']} members x {len(summary['views'])} views ({summary['measure']}) -> "
          f"{summary['out']} ({summary['bytes'] / 1e6:.1f} MB; weights {', '.join(summary['weight_formats'])})")
    if "test" in summary:
        t = summary["test"]
        print(f"bioimageio test: {t['status']} ({', '.join(t['weight_formats'])})")


def add_zoo(sub) -> None:
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
    q.set_defaults(func=run_zoo_list)


def run_zoo_list(a: argparse.Namespace) -> dict[str, Any]:
    from ..zoo import ZOO_HINT, list_zoo, zoo_root

    root = zoo_root(a.root)
    models = list_zoo(root) if root is not None else []
    if root is None and not a.json:
        print(ZOO_HINT)
    elif not a.json:
        rows = []
        for m in models:
            labs = m.get("labs") or {}
            scores = "; ".join(
                f"{lab} {fmt(e.get('ensemble_roi_f1'))} (experts {fmt(e.get('median_expert_roi_f1'))})"
                for lab, e in labs.items()
            )
            rows.append({"model": m["name"], "MB": m.get("megabytes"), "members": m.get("members"),
                         "views": m.get("views"), "uncertainty": m.get("measure"),
                         "held-out ROI-F1": scores or ("not built" if not m.get("built") else m.get("error", "n/a"))})
        print(table(rows, ["model", "MB", "members", "views", "uncertainty", "held-out ROI-F1"]) or "no models")
    return {"ok": True, "command": "zoo list", "root": None if root is None else str(root), "models": models}


def add_demo(sub) -> None:
    p = sub.add_parser("demo", description=inspect.getdoc(run_demo),
                       help="run the pipeline on the bundled real sample (Segebarth et al. 2020, lab-wue1)")
    p.add_argument("--out", type=Path, default=Path("demo-output"), metavar="DIR")
    p.add_argument("--model", type=Path, metavar="PATH",
                   help="an ensemble folder or bioimage.io package (default: the zoo model cfos-wue1 if built)")
    p.add_argument("--consensus-only", action="store_true", help="stop after the consensus")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing output folder")
    p.set_defaults(func=run_demo)


def _demo_model(a: argparse.Namespace) -> Path | None:
    """The model of the demo: --model, else the built zoo model cfos-wue1 (None when there is none)."""
    if a.consensus_only:
        return None
    if a.model is not None:
        if not a.model.exists():
            raise FileNotFoundError(a.model)
        return a.model
    try:
        from ..zoo import list_zoo

        rows = list_zoo()
    except (ImportError, FileNotFoundError) as exc:
        logger.warning("no zoo model for the demo (%s); consensus only", exc)
        return None
    for row in rows:
        if row["name"] == "cfos-wue1" and row.get("built"):
            return Path(row["package"])
    logger.warning("the zoo model cfos-wue1 is not built (model_zoo/cfos-wue1/build.py); consensus only")
    return None


def _demo_model_steps(a: argparse.Namespace, model: Path, sample: Any, out: Path, summary: dict[str, Any]) -> None:
    """Predict the sample with ``model`` and evaluate it next to the experts (into ``summary``)."""
    from .. import datasets
    from ..evaluate_job import run_evaluate
    from ..predict import run_predict

    pred_out = out / "predictions" / model.stem
    pred = run_predict(
        PredictConfig(model=model, inputs=[sample.images_dir], out=pred_out,
                      min_size=datasets.SAMPLE_MIN_SIZE, overwrite=a.overwrite),
        progress=progress(a),
    )
    ev = run_evaluate(
        EvaluateConfig(
            images=sample.images_dir, experts=sample.expert_dirs, min_size=datasets.SAMPLE_MIN_SIZE,
            models={model.stem: pred_out}, out=out / "report", overwrite=a.overwrite,
            note="Bundled sample: 5 images of lab-wue1. The zoo model was trained on lab-wue1 (these images "
            "were in its training folds): this shows the workflow, its held-out scores are in the model card.",
        ),
        progress=progress(a),
    )
    summary["model"] = str(model)
    summary["prediction"] = {k: pred.get(k) for k in ("out", "ok", "n_images", "n_objects", "mean_qa_score",
                                                      "seconds_per_image", "failed")
                             if k in pred}
    summary["evaluation"] = {"out": ev.get("out"), "models": ev.get("models"),
                             "report": str(out / "report" / "report.html")}
    summary["ok"] = bool(summary.get("ok", True) and pred.get("ok", True))


def run_demo(a: argparse.Namespace) -> dict[str, Any]:
    """On the bundled 5 images with 5 experts: STAPLE consensus, per-expert scores and agreement, a check of the
    consensus against the published est_GT; then, when a model is available (--model, or the zoo model
    model_zoo/cfos-wue1 and the zoo extra), prediction with uncertainty and the objectivity/reliability/validity
    report of experts and model."""
    import numpy as np

    from .. import datasets, io
    from ..jobs import run_consensus

    sample = datasets.load_sample()
    out = Path(a.out)
    model = _demo_model(a)
    cfg = ConsensusConfig(
        images=sample.images_dir, experts=sample.expert_dirs, method="staple",
        min_size=datasets.SAMPLE_MIN_SIZE, out=out / "consensus", overwrite=a.overwrite,
    )
    summary = run_consensus(cfg, progress=progress(a))
    differing = {}
    for image_id in sample.ids:
        ours = io.read_mask(out / "consensus" / "masks" / f"{image_id}.tif")
        differing[image_id] = int(np.count_nonzero(ours != sample.est_gt(image_id)))
    summary["est_gt_differing_pixels"] = differing
    summary["command"] = "demo"
    if model is not None:
        _demo_model_steps(a, model, sample, out, summary)
    if not a.json:
        rows = [{"expert": e, **s} for e, s in summary["expert_scores"].items()]
        print(f"Bundled sample: {len(sample.ids)} images of lab-wue1, {len(sample.experts)} experts "
              f"({datasets.SAMPLE_LICENSE}; {datasets.SAMPLE_CITATION})")
        print(f"STAPLE consensus -> {summary['out']}")
        print(table(rows, ["expert", "dice", "roi_f1", "sensitivity"]))
        total = sum(differing.values())
        print(f"Consensus vs the published est_GT: {total} differing pixels over {len(differing)} images"
              + (" (identical)" if total == 0 else ""))
        print(f"Open {out / 'consensus' / 'overlays'} in Fiji to see consensus (white) and expert outlines.")
        if model is not None:
            rows = [{"model": m, **s} for m, s in (summary["evaluation"]["models"] or {}).items()]
            print(f"\nModel {model} -> {summary['prediction'].get('out')}")
            print(table(rows, ["model", "roi_f1", "dice", "n_above", "n_within", "n_below"]))
            print_qa(summary["evaluation"]["models"] or {})
            print(f"Report: {summary['evaluation']['report']}")
    return summary


def add_fiji(sub) -> None:
    p = sub.add_parser("fiji", help="Fiji integration (install the macros and toolset)",
                       description="Fiji integration.")
    fsub = p.add_subparsers(dest="fiji_command", metavar="FIJI_COMMAND")
    p.set_defaults(func=None, help_parser=p)
    for name, where, doc in (
        ("install-macros", ("fiji_dir", "FIJI_DIR", "the Fiji.app (or ImageJ) folder"),
         ("install the macros and the toolset into a Fiji.app (or ImageJ) folder",
          "Write the fiji-consensus macros into FIJI_DIR/plugins/Fiji_Consensus/ and the toolset into "
          "FIJI_DIR/macros/toolsets/ (then: toolbar >> 'Fiji Consensus'). Changed files are only replaced with "
          "--overwrite.")),
        ("write-macros", ("out", "OUT", "the folder to write into (created if needed)"),
         ("write the installable macros into a folder, to copy into a Fiji.app by hand",
          "Write OUT/plugins/Fiji_Consensus/*.ijm and OUT/macros/toolsets/Fiji Consensus.ijm, the files "
          "install-macros puts into a Fiji.app; copy OUT's plugins/ and macros/ folders into Fiji.app.")),
    ):
        q = fsub.add_parser(name, help=doc[0], description=doc[1])
        q.add_argument(where[0], type=Path, metavar=where[1], help=where[2])
        q.add_argument("--overwrite", action="store_true", help="replace macros that differ from ours")
        # "command" names the subcommand in --json output and error messages (the parent parser sets "fiji")
        q.set_defaults(func=functools.partial(run_macros, folder=where[0]), command=f"fiji {name}")
    s = fsub.add_parser(
        "model-summary",
        help="an ensemble's validation scores next to the experts' (what Train Ensemble shows)",
        description="Read MODEL/ensemble.json: mean validation ROI-F1 and Dice of the members, the experts' "
        "median ROI-F1 against the consensus, and a warning when the model is not useful.",
    )
    s.add_argument("model", type=Path, metavar="MODEL", help="an ensemble folder (models/NAME)")
    s.set_defaults(func=run_model_summary, command="fiji model-summary")


def run_macros(a: argparse.Namespace, *, folder: str) -> dict[str, Any]:
    """``fiji install-macros`` (into a Fiji.app) or ``fiji write-macros`` (into any folder)."""
    from .. import fiji

    write = fiji.install_macros if folder == "fiji_dir" else fiji.write_macros
    files = write(getattr(a, folder), overwrite=a.overwrite)
    if not a.json:
        for f in files:
            print(f"{'installed' if folder == 'fiji_dir' else 'wrote'} {f}")
    return {"ok": True, "command": a.command, "written": [str(f) for f in files]}


def run_model_summary(a: argparse.Namespace) -> dict[str, Any]:
    from .. import fiji

    summary = fiji.model_summary(a.model)
    if not a.json:
        print(summary["text"])
    return {"ok": True, "command": "fiji model-summary", **summary}
