"""Multi-lab training data and leave-one-lab-out cross-validation (the ``crossval`` job).

A *lab* is a folder of images annotated by that lab's experts, in one of two layouts:

* a fiji-consensus project: ``images/<id>.*`` and ``annotations/<expert>/<id>...``;
* the Segebarth layout: ``images/<id>.png`` and ``labels/expert_<k>/<id>_cFOS.png`` (``labels/est_GT`` is
  ignored: the consensus is recomputed from the experts).

Each lab keeps its own experts (named ``<lab>/<expert>``: expert_1 of one lab is not expert_1 of another),
its own MIN_PIXEL and its own consensus. :func:`run_crossval` trains on all labs but one, predicts the
left-out lab and scores the ensemble and each of that lab's experts against the lab's consensus, image by
image, for every lab in turn. The question a multi-site study asks, and how recipe settings are chosen here.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .. import io as fio
from ..config import CrossvalConfig, TrainConfig

log = logging.getLogger(__name__)

__all__ = ["Lab", "load_lab", "multi_lab_inputs", "run_crossval", "score_lab"]


DEFAULT_MIN_SIZES = {"lab-wue1": 30, "lab-mue": 30, "lab-inns1": 16}
"""Segebarth's MIN_PIXEL of the three published labs (used when a lab of that name is given no min size)."""


@dataclass
class Lab:
    """One lab: its images, its experts' masks (``None`` where an expert did not annotate an image), its
    MIN_PIXEL and its consensus targets (computed on demand)."""

    name: str
    root: Path
    ids: list[str]
    images: list[np.ndarray]
    experts: dict[str, list[np.ndarray | None]]
    min_size: int = 0
    groups: dict[str, str] | None = None
    _consensus: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def expert_stack(self, j: int) -> tuple[list[str], np.ndarray]:
        names = [e for e, ms in self.experts.items() if ms[j] is not None]
        return names, np.stack([self.experts[e][j] for e in names])

    def consensus(self, kind: str = "staple") -> list[np.ndarray]:
        """Per image: the experts' consensus of ``kind`` (staple = STAPLE > 0.5 as float32, staple-soft,
        fraction, majority), each from that image's own experts."""
        if kind not in self._consensus:
            from ..consensus import training_targets

            out = []
            for j in range(len(self.ids)):
                _, stack = self.expert_stack(j)
                if stack.shape[0] < 2:
                    raise ValueError(
                        f"lab {self.name!r}, image {self.ids[j]!r}: {stack.shape[0]} expert(s) annotated it; a "
                        "consensus needs at least 2"
                    )
                out.append(training_targets(stack, kind))
            self._consensus[kind] = out
        return self._consensus[kind]


def _segebarth_layout(root: Path) -> bool:
    return (root / "labels").is_dir() and not (root / "annotations").is_dir()


def load_lab(path: str | Path, *, name: str | None = None, min_size: int | None = None) -> Lab:
    """Read one lab folder (project or Segebarth layout, see the module doc)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"lab folder {root} does not exist (expected images/ and annotations/ or labels/)")
    name = name or root.name
    if _segebarth_layout(root):
        folders = sorted(p for p in (root / "labels").iterdir() if p.is_dir() and p.name.startswith("expert"))
        if len(folders) < 2:
            raise ValueError(f"lab {root}: labels/ holds {len(folders)} expert_* folder(s); a consensus needs 2")
        ds = fio.open_dataset(root / "images", folders)
    else:
        ds = fio.open_project(root)
    images, experts = [], {e: [] for e in ds.expert_names}
    for iid in ds.ids:
        img, ann, _ = ds.load(iid)
        images.append(img)
        for e in ds.expert_names:
            m = ann.get(e)
            experts[e].append(None if m is None else np.asarray(m) > 0)
    groups = None
    gfiles = sorted(root.glob("groups*.csv"))
    if len(gfiles) == 1:
        groups = fio.read_groups(gfiles[0])
    if min_size is None:
        min_size = DEFAULT_MIN_SIZES.get(name, 0)
    return Lab(name=name, root=root, ids=list(ds.ids), images=images, experts=experts, min_size=int(min_size),
               groups=groups)


def multi_lab_inputs(labs: list[Lab], targets: str) -> dict[str, Any]:
    """The keyword arguments of :func:`fiji_consensus.nn.train.train_ensemble` for training on ``labs``
    together: ids ``<lab>/<id>``, every lab's own consensus, experts ``<lab>/<expert>`` (``None`` on other
    labs' images), the lab of every image and its MIN_PIXEL."""
    names = [lab.name for lab in labs]
    if len(set(names)) != len(names):
        raise ValueError(f"lab names must be unique; got {names}")
    ids, images, tgts, lab_of, min_sizes, groups = [], [], [], {}, {}, {}
    experts: dict[str, list[np.ndarray | None]] = {}
    n_before = 0
    for lab in labs:
        cons = lab.consensus(targets)
        for j, iid in enumerate(lab.ids):
            gid = f"{lab.name}/{iid}"
            ids.append(gid)
            images.append(lab.images[j])
            tgts.append(cons[j])
            lab_of[gid] = lab.name
            min_sizes[gid] = lab.min_size
            groups[gid] = f"{lab.name}/{lab.groups[iid]}" if lab.groups and iid in lab.groups else gid
        for e, ms in lab.experts.items():
            experts[f"{lab.name}/{e}"] = [None] * n_before + list(ms)
        for k in experts:
            experts[k] += [None] * (len(ids) - len(experts[k]))
        n_before = len(ids)
    return dict(images=images, targets=tgts, image_ids=ids, labs=lab_of, min_sizes=min_sizes,
                expert_masks=experts, groups=groups)


def score_lab(prob: list[np.ndarray], lab: Lab, *, threshold: float, reference: str = "staple") -> list[dict]:
    """Per image of ``lab``: the model's and every expert's ROI-F1 and Dice against the lab's consensus,
    and where the model stands among the experts (``above`` the best, ``within``, ``below`` the worst)."""
    from ..metrics import dice, roi_f1

    ref = lab.consensus(reference)
    rows = []
    for j, iid in enumerate(lab.ids):
        gt = ref[j] > 0.5
        pred = prob[j] > threshold
        model = {"roi_f1": float(roi_f1(gt, pred, min_size=lab.min_size)), "dice": float(dice(gt, pred))}
        ex = {}
        for e, ms in lab.experts.items():
            if ms[j] is not None:
                ex[e] = {"roi_f1": float(roi_f1(gt, ms[j], min_size=lab.min_size)), "dice": float(dice(gt, ms[j]))}
        lo = min(v["roi_f1"] for v in ex.values())
        hi = max(v["roi_f1"] for v in ex.values())
        stand = "above" if model["roi_f1"] > hi else ("below" if model["roi_f1"] < lo else "within")
        base = {"lab": lab.name, "image": iid, "pred_fraction": float(pred.mean()), "ref_fraction": float(gt.mean())}
        rows.append({**base, "rater": "model", "kind": "model", **model, "standing": stand,
                     "lowest_expert_roi_f1": lo, "passes_paper_rule": bool(model["roi_f1"] >= lo)})
        for e, v in ex.items():
            rows.append({**base, "rater": e, "kind": "expert", **v, "standing": "", "lowest_expert_roi_f1": lo,
                         "passes_paper_rule": ""})
    return rows


def lab_summary(rows: list[dict]) -> dict[str, Any]:
    """Means over a lab's images: the model, every expert, the median and lowest expert; the paper's rule."""
    model = [r for r in rows if r["kind"] == "model"]
    experts: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["kind"] == "expert":
            d = experts.setdefault(r["rater"], {"roi_f1": [], "dice": []})
            d["roi_f1"].append(r["roi_f1"])
            d["dice"].append(r["dice"])
    em = {e: {k: float(np.mean(v)) for k, v in d.items()} for e, d in experts.items()}
    return {
        "images": len(model),
        "model": {k: float(np.mean([r[k] for r in model])) for k in ("roi_f1", "dice")},
        "experts": em,
        "median_expert": {k: float(statistics.median(v[k] for v in em.values())) for k in ("roi_f1", "dice")},
        "lowest_expert": {k: float(min(v[k] for v in em.values())) for k in ("roi_f1", "dice")},
        "images_at_least_lowest_expert": int(sum(r["passes_paper_rule"] for r in model)),
        "standing": {s: sum(r["standing"] == s for r in model) for s in ("above", "within", "below")},
    }


_CSV_FIELDS = ["lab", "image", "rater", "kind", "roi_f1", "dice", "standing", "lowest_expert_roi_f1",
               "passes_paper_rule", "pred_fraction", "ref_fraction"]


def _predict_lab(model_dir: Path, lab: Lab, cache: Path, *, tta: str) -> tuple[list[np.ndarray], float]:
    """Probability maps of a lab's images (cached per image as .npy, written atomically)."""
    from ..nn.ensemble import load_ensemble
    from ..nn.predict import predict

    ens = load_ensemble(model_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for iid, img in zip(lab.ids, lab.images):
        f = cache / f"{iid}.npy"
        if f.is_file():
            out.append(np.load(f))
            continue
        p = predict(ens, img, tta=tta).probability.astype(np.float32)
        tmp = cache / f".{iid}.npy.part"
        with open(tmp, "wb") as fh:
            np.save(fh, p)
        tmp.replace(f)
        out.append(p)
    return out, float(ens.threshold)


def run_crossval(config: CrossvalConfig, *, progress: bool = False) -> dict[str, Any]:
    """Leave-one-lab-out: for each lab in ``config.hold_out`` (default all), train on the other labs, predict
    the left-out lab and score it against that lab's consensus and each of its experts.

    Writes ``<out>/crossval.csv`` (lab, image, rater, roi_f1, dice, standing, ...), ``<out>/summary.json`` and,
    per fold, ``<out>/without_<lab>/model`` (the ensemble, resumable) and ``predictions/`` (cached maps).
    An interrupted run resumes where it stopped (same settings).
    """
    from .._validate import require

    require("torch", extra="train")
    from ..nn.train import train_ensemble

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    labs = [load_lab(p, name=n, min_size=config.min_sizes.get(n or Path(p).name))
            for p, n in zip(config.labs, config.lab_names or [None] * len(config.labs))]
    names = [lab.name for lab in labs]
    hold = config.hold_out or names
    unknown = [h for h in hold if h not in names]
    if unknown:
        raise ValueError(f"hold_out names {unknown} are not among the labs {names}")
    record = {"tool": "fiji-consensus", "version": __version__, "job": "crossval",
              "config": config.model_dump(mode="json")}
    fio.write_json(out / "config.json", record, overwrite=True)
    all_rows: list[dict] = []
    summary: dict[str, Any] = {"labs": {}, "targets": config.targets}
    for held in hold:
        t0 = time.perf_counter()
        train_labs = [lab for lab in labs if lab.name != held]
        test_lab = next(lab for lab in labs if lab.name == held)
        fold = out / f"without_{held}"
        log.info("fold without %s: training on %s", held, [lab.name for lab in train_labs])
        kw = multi_lab_inputs(train_labs, config.targets)
        tsum = train_ensemble(
            kw["images"], kw["targets"], fold / "model", config.train, image_ids=kw["image_ids"],
            groups=kw["groups"] if config.train.split in ("auto", "group_kfold") else None,
            expert_masks=kw["expert_masks"], labs=kw["labs"], min_sizes=kw["min_sizes"],
            provenance={"tool": "fiji-consensus", "version": __version__, "job": "crossval",
                        "held_out": held, "targets": config.targets},
            progress=progress, resume=True,
        )
        prob, thr = _predict_lab(fold / "model", test_lab, fold / "predictions", tta=config.tta)
        rows = score_lab(prob, test_lab, threshold=thr)
        s = lab_summary(rows)
        s["train_labs"] = [lab.name for lab in train_labs]
        s["train_seconds"] = tsum.get("seconds")
        s["fold_seconds"] = time.perf_counter() - t0
        summary["labs"][held] = s
        all_rows += rows
        fio.write_csv(out / "crossval.csv", all_rows, columns=_CSV_FIELDS, overwrite=True)
        log.info(
            "%s (unseen): model ROI-F1 %.3f Dice %.3f | median expert %.3f / %.3f | lowest %.3f | paper's rule "
            "%d/%d images", held, s["model"]["roi_f1"], s["model"]["dice"], s["median_expert"]["roi_f1"],
            s["median_expert"]["dice"], s["lowest_expert"]["roi_f1"], s["images_at_least_lowest_expert"], s["images"],
        )
    fio.write_json(out / "summary.json", summary, overwrite=True)
    return {"ok": True, "command": "crossval", "out": str(out.resolve()), **summary}
