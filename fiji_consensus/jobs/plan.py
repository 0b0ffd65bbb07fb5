"""The plan jobs: an annotation plan for a project (``plan.csv``) and the next image it gives an expert."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import io as fio
from ._common import _config_record, _nanmean


_PLAN_COLS = ["order", "image", "expert", "reason", "priority"]


def _plan_priority(config: Any, ds: fio.ExpertDataset) -> tuple[dict[str, float], str]:
    """Per-image priority: the model's QA score / mean uncertainty, else the experts' disagreement."""
    import csv

    from .. import metrics

    if config.predictions is not None:
        folder = Path(config.predictions)
        table = folder / "images.csv"
        if table.is_file():
            with open(table, encoding="utf-8", newline="") as fh:
                rows = {r.get("image", ""): r.get("qa_score", "") for r in csv.DictReader(fh)}
            prio = {}
            for i in ds.ids:
                try:
                    prio[i] = float(rows[i])
                except (KeyError, ValueError):
                    prio[i] = float("nan")
            if not any(np.isfinite(v) for v in prio.values()):
                raise ValueError(f"{table} has no qa_score for any of the project's images ({len(ds.ids)})")
            return prio, "model QA score"
        maps = folder / "uncertainty" if (folder / "uncertainty").is_dir() else folder
        paths = fio.pair_annotations(ds.ids, maps, expert="uncertainty", required=False)
        prio = {}
        for i in ds.ids:
            if i in paths:
                u = fio.read_image(paths[i]).astype(np.float64)
                prio[i] = float(np.nanmean(u)) if np.isfinite(u).any() else float("nan")
            else:
                prio[i] = float("nan")
        return prio, "mean model uncertainty"
    prio = {}
    for i in ds.ids:
        names = ds.raters(i)
        if len(names) < 2:
            prio[i] = float("nan")
            continue
        _, ann, ignore = ds.load(i)
        dice = [metrics.dice(ann[a] > 0, ann[b] > 0, ignore=ignore)
                for k, a in enumerate(names) for b in names[k + 1:]]
        prio[i] = 1.0 - _nanmean(dice) if np.isfinite(_nanmean(dice)) else 0.0
    return prio, "expert disagreement (1 - mean pairwise Dice)"


def _plan_dataset(project: Path) -> fio.ExpertDataset:
    """The project's images and whatever annotations exist (expert folders may be missing or empty)."""
    project = Path(project)
    if not project.is_dir():
        raise FileNotFoundError(f"project folder {project} does not exist")
    images = fio.list_images(project / "images")
    experts: dict[str, dict[str, Path]] = {}
    ann = project / "annotations"
    for d in sorted(ann.iterdir()) if ann.is_dir() else []:
        if d.is_dir() and not d.name.startswith(".") and any(d.iterdir()):
            experts[d.name] = fio.pair_annotations(images, d, expert=d.name, required=False)
    ign = project / "ignore"
    ignore = fio.pair_annotations(images, ign, expert="ignore", required=False) if ign.is_dir() and any(ign.iterdir()) else {}
    return fio.ExpertDataset(images=images, experts=experts, ignore=ignore)


def run_plan(config: Any) -> dict[str, Any]:
    """Write an annotation plan for a project: ``plan.csv`` (order, image, expert, reason) and a summary.

    Images the model is least sure about (``config.predictions``), or the experts disagree on most, come
    first; every image gets experts up to ``config.target``; the design keeps every pair of experts on at
    least one shared image; ``config.budget`` caps the new annotations. See :mod:`fiji_consensus.plan`.
    """
    from .._atomic import claim_folder
    from ..plan import make_plan

    project = Path(config.project)
    ds = _plan_dataset(project)
    experts = list(config.experts) or ds.expert_names
    if len(experts) < 2:
        raise ValueError(
            f"a plan needs at least 2 experts; got {len(experts)} ({', '.join(experts) or 'none'}): name them "
            "with --experts (the project's annotations/<expert>/ folders are used by default)"
        )
    if config.target > len(experts):
        raise ValueError(f"--target {config.target} exceeds the {len(experts)} experts: {', '.join(experts)}")
    out = Path(config.out) if config.out is not None else project / "plan"
    claim_folder(out, "plan", create=False)
    if (out / "plan.csv").exists() and not config.overwrite:
        raise FileExistsError(f"{out / 'plan.csv'} exists; use --overwrite to replace the plan")
    priority, source = _plan_priority(config, ds)
    annotated = {i: ds.raters(i) for i in ds.ids}
    plan = make_plan(ds.ids, experts, annotated=annotated, priority=priority, priority_name=source,
                     target=config.target, budget=config.budget)
    claim_folder(out, "plan")
    fio.write_json(out / "config.json", _config_record(config), overwrite=True)
    fio.write_csv(out / "plan.csv", plan.rows, columns=_PLAN_COLS, overwrite=True)
    summary = {
        "ok": True,
        "command": "plan",
        "out": str(out.resolve()),
        "plan": str((out / "plan.csv").resolve()),
        "n_images": len(ds.ids),
        "experts": experts,
        "target": config.target,
        "budget": config.budget,
        "priority": source,
        "annotations_existing": sum(len(r) for r in annotated.values()),
        "annotations_planned": len(plan.rows),
        "planned_per_expert": {e: plan.per_expert().get(e, 0) for e in experts},
        "images_at_target": len(ds.ids) - len(plan.short),
        "images_below_target": plan.short,
        "pairs_without_overlap": [list(p) for p in plan.pairs_without_overlap],
        "min_pair_overlap": min(plan.overlap.values()) if plan.overlap else 0,
    }
    fio.write_json(out / "summary.json", summary, overwrite=True)
    return summary


def next_planned(project: str | os.PathLike, expert: str, *, plan: str | os.PathLike | None = None) -> dict[str, Any]:
    """The next image the project's plan gives ``expert`` that ``expert`` has not annotated yet.

    Returns ``{"ok": True, "image": id or None, "path": absolute image path or None, "remaining": n}``,
    ``remaining`` counting the planned images of that expert still to do (the returned one included).
    """
    import csv

    project = Path(project)
    plan_file = Path(plan) if plan is not None else project / "plan" / "plan.csv"
    if not plan_file.is_file():
        raise FileNotFoundError(
            f"no annotation plan at {plan_file}: make one with `fiji-consensus plan --project {project}`"
        )
    images = fio.list_images(project / "images")
    with open(plan_file, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("expert") == expert]
    folder = project / "annotations" / expert
    done: set[str] = set()
    if folder.is_dir() and any(folder.iterdir()):
        done = set(fio.pair_annotations(images, folder, expert=expert, required=False))
    todo = [r["image"] for r in sorted(rows, key=lambda r: int(r["order"])) if r["image"] not in done]
    missing = [i for i in todo if i not in images]
    if missing:
        raise ValueError(f"the plan {plan_file} names images that are not in {project / 'images'}: {', '.join(missing[:5])}")
    image = todo[0] if todo else None
    return {
        "ok": True,
        "command": "plan next",
        "expert": expert,
        "image": image,
        "path": str(images[image].resolve()) if image else None,
        "remaining": len(todo),
        "planned": len(rows),
    }
