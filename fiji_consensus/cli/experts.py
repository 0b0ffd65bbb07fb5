"""The experts' commands: consensus, agreement, evaluate and the annotation plan."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..config import AgreementConfig, ConsensusConfig, EvaluateConfig, PlanConfig
from ._builder import add_field, field_values
from ._common import fmt, job_command, table

_INPUT_METAVARS = {"images": "DIR", "experts": "DIR", "expert_names": "NAME", "project": "DIR", "ignore": "DIR",
                   "min_size": "PIXELS"}


def add_inputs(p: argparse.ArgumentParser, model: type) -> None:
    """The expert inputs shared by consensus, agreement and evaluate (``_ExpertInputs``' fields)."""
    g = p.add_argument_group("inputs (either --images and --experts, or --project)")
    for name, metavar in _INPUT_METAVARS.items():
        add_field(g, model, name, metavar=metavar)


def _add(p: argparse.ArgumentParser, model: type, names: str, **metavars: str) -> None:
    for name in names.split():
        add_field(p, model, name, metavar=metavars.get(name))


def add_consensus(sub) -> None:
    p = job_command(sub, "consensus", ConsensusConfig, "jobs.run_consensus", report=_report_consensus,
                    help="consensus of several experts, per-expert scores and agreement")
    add_inputs(p, ConsensusConfig)
    _add(p, ConsensusConfig, "method threshold prior max_iter staple_estimate skip_incomplete min_votes min_experts "
         "iou_threshold out overwrite resume", out="DIR")
    add_field(p, ConsensusConfig, "write_overlays", flag="--no-overlays")


def _report_consensus(summary: dict[str, Any]) -> None:
    rows = [{"expert": e, **s} for e, s in summary["expert_scores"].items()]
    print(f"consensus ({summary['method']}) of {summary['n_images']} images -> {summary['out']}")
    print(table(rows, ["expert", "dice", "roi_f1", "sensitivity"]))
    print(f"Fleiss' kappa (pixels, mean over images): {fmt(summary['mean_fleiss_kappa'])}; "
          f"ICC(2,1) of object counts: {fmt(summary['icc_object_counts'])}")
    print_design(summary)


def print_design(summary: dict[str, Any]) -> None:
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


def add_agreement(sub) -> None:
    p = job_command(sub, "agreement", AgreementConfig, "jobs.run_agreement", report=_report_agreement,
                    help="pairwise agreement of experts, and each expert vs a reference")
    add_inputs(p, AgreementConfig)
    _add(p, AgreementConfig, "reference out overwrite", reference="DIR", out="DIR")


def _report_agreement(summary: dict[str, Any]) -> None:
    print(f"agreement of {len(summary['experts'])} experts on {summary['n_images']} images")
    print(table(summary["pairwise"], ["rater_a", "rater_b", "n_images", "dice", "iou", "roi_f1", "cohen_kappa"]))
    if summary["vs_reference"]:
        print("\nvs reference:")
        print(table(summary["vs_reference"], ["expert", "dice", "roi_f1", "sensitivity", "specificity"]))
    print(f"Fleiss' kappa (pixels, mean over images): {fmt(summary['mean_fleiss_kappa'])}")
    print_design(summary)


def add_plan(sub) -> None:
    p = job_command(sub, "plan", PlanConfig, "jobs.run_plan", report=_report_plan, config=_plan_config,
                    progress_bar=False, help="annotation plan: which expert annotates which image next")
    # --project is checked by run_plan: a required option of `plan` would be required by `plan next` too
    add_field(p, PlanConfig, "project", metavar="DIR", required=False)
    _add(p, PlanConfig, "experts target budget predictions out overwrite", experts="NAME", budget="N",
         predictions="DIR", out="DIR")
    p.set_defaults(help_parser=p)
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
    q.set_defaults(func=run_plan_next)


def _plan_config(a: argparse.Namespace) -> PlanConfig:
    if a.project is None:
        raise ValueError("plan needs --project DIR (a folder with images/ and annotations/<expert>/)")
    return PlanConfig(**field_values(a, PlanConfig))


def _report_plan(s: dict[str, Any]) -> None:
    print(f"plan: {s['annotations_planned']} new annotations for {s['n_images']} images, target "
          f"{s['target']} experts per image, by {s['priority']} -> {s['plan']}")
    print("per expert: " + ", ".join(f"{e} {n}" for e, n in s["planned_per_expert"].items()))
    print(f"images at the target: {s['images_at_target']} of {s['n_images']}; fewest images shared by a "
          f"pair of experts: {s['min_pair_overlap']}")
    if s["pairs_without_overlap"]:
        print("pairs without a shared image: " + ", ".join("-".join(p) for p in s["pairs_without_overlap"]))


def run_plan_next(a: argparse.Namespace) -> dict[str, Any]:
    from .. import jobs

    s = jobs.next_planned(a.project, a.expert, plan=a.plan)
    if not a.json:
        if s["image"] is None:
            print(f"nothing planned left for {a.expert}")
        else:
            print(f"{a.expert}: next {s['image']} ({s['path']}); remaining {s['remaining']}")
    return s


def add_evaluate(sub) -> None:
    p = job_command(sub, "evaluate", EvaluateConfig, "evaluate_job.run_evaluate", report=_report_evaluate,
                    help="objectivity, reliability and validity of experts, consensus and models; HTML report")
    add_inputs(p, EvaluateConfig)
    g = p.add_argument_group("what to evaluate")
    add_field(g, EvaluateConfig, "consensus", metavar="DIR")
    add_field(g, EvaluateConfig, "models", flag="--model-predictions", metavar="NAME=DIR")
    add_field(g, EvaluateConfig, "strategies", flag="--strategy", metavar="NAME=M1,M2,...", append=True)
    v = p.add_argument_group("validity")
    _add(v, EvaluateConfig, "groups regions control comparisons alpha", groups="CSV", regions="DIR",
         control="GROUP")
    r = p.add_argument_group("report")
    _add(r, EvaluateConfig, "example note calibration_bins", example="ID")
    add_field(r, EvaluateConfig, "report", flag="--no-report")
    _add(p, EvaluateConfig, "out overwrite", out="DIR")


def _report_evaluate(summary: dict[str, Any]) -> None:
    rows = [{"expert": e, **s} for e, s in summary["experts_scores"].items()]
    print(f"evaluation of {summary['n_images']} images against {summary['reference']} -> {summary['out']}")
    print(table(rows, ["expert", "roi_f1", "dice", "average_precision", "staple_sensitivity"]))
    if summary["models"]:
        rows = [{"model": m, **s} for m, s in summary["models"].items()]
        print("\nmodels (images above the best / within / below the worst expert, by ROI-F1):")
        print(table(rows, ["model", "roi_f1", "dice", "n_above", "n_within", "n_below", "passes_selection"]))
        print_qa(summary["models"])
    if "report.html" in summary.get("files", []):
        print(f"report: {Path(summary['out']) / 'report.html'}")


def print_qa(models: dict[str, dict]) -> None:
    """One line per model: does its per-image QA score point at the images it agrees least on?"""
    for m, s in models.items():
        rho = s.get("qa_spearman_roi_f1")
        if s.get("qa_n_images", 0) >= 3 and isinstance(rho, float) and math.isfinite(rho):
            print(f"{m}: QA score vs ROI-F1 Spearman rho {rho:.2f}, vs Dice {s['qa_spearman_dice']:.2f} over "
                  f"{s['qa_n_images']} images (negative = the QA score points at the worst images); first to "
                  f"review: {s['qa_review_first']} (rank {s['qa_review_first_roi_f1_rank']} by ROI-F1, 1 = worst)")
