"""What the jobs share: the dataset a config names, the provenance record, progress bars, the design of who
annotated what, row means, and the output folders of the consensus and agreement jobs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .. import io as fio
from ..config import AgreementConfig, ConsensusConfig, TrainJobConfig

logger = logging.getLogger(__name__)


_PER_IMAGE = "per_image"


def _config_record(config: Any) -> dict[str, Any]:
    import platform

    import numpy
    import scipy

    return {
        "tool": "fiji-consensus",
        "version": __version__,
        "config": config.model_dump(mode="json"),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }


def _resolve_dataset(
    config: ConsensusConfig | AgreementConfig | TrainJobConfig, *, missing_ok: bool = False
) -> fio.ExpertDataset:
    """The images and experts a job config names: a project folder, image + expert folders, or images only.

    ``missing_ok``: experts may have annotated only some of the images (see :func:`design_of`).
    """
    if config.project is not None:
        ds = fio.open_project(config.project, missing_ok=missing_ok)
    elif config.experts:
        return fio.open_dataset(
            config.images, config.experts, ignore=config.ignore, expert_names=config.expert_names,
            missing_ok=missing_ok,
        )
    else:
        ds = fio.ExpertDataset(images=fio.list_images(config.images), experts={})
    if config.ignore is not None:
        ds.ignore = fio.pair_annotations(ds.images, config.ignore, expert="ignore", required=False)
    return ds


def _nanmean(values: Sequence[Any]) -> float:
    """Mean of the finite values (``None`` counts as missing); NaN, without a warning, when there are none."""
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def design_of(ds: fio.ExpertDataset, ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Who annotated what: per-image raters, images per expert, and images shared by every pair.

    Returns ``{"raters": {id: [experts]}, "annotated_by": {expert: n}, "overlap": [{"rater_a", "rater_b",
    "n_images"}], "complete": bool, "pairs_without_overlap": [[a, b], ...]}``.
    """
    ids = ds.ids if ids is None else list(ids)
    experts = ds.expert_names
    raters = {i: ds.raters(i) for i in ids}
    overlap = []
    for a_i, a in enumerate(experts):
        for b in experts[a_i + 1:]:
            n = sum(1 for i in ids if a in raters[i] and b in raters[i])
            overlap.append({"rater_a": a, "rater_b": b, "n_images": n})
    return {
        "raters": raters,
        "annotated_by": {e: sum(1 for i in ids if e in raters[i]) for e in experts},
        "overlap": overlap,
        "complete": all(len(r) == len(experts) for r in raters.values()),
        "pairs_without_overlap": [[o["rater_a"], o["rater_b"]] for o in overlap if o["n_images"] == 0],
    }


def _warn_pairs_without_overlap(design: dict[str, Any]) -> None:
    """Log the pairs of experts who never annotated the same image (no agreement can be computed for them)."""
    pairs = design["pairs_without_overlap"]
    if pairs:
        logger.warning("%d pair(s) of experts never annotated the same image (no agreement for them): %s",
                       len(pairs), ", ".join(f"{a}-{b}" for a, b in pairs[:6]))


def _write_design(out: Path, design: dict[str, Any], experts: Sequence[str], *, overwrite: bool) -> None:
    rows = [{"image": i, "n_experts": len(r), **{e: int(e in r) for e in experts}}
            for i, r in design["raters"].items()]
    fio.write_csv(out / "annotations.csv", rows, columns=["image", "n_experts", *experts], overwrite=overwrite)


def _mean_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str], by: Sequence[str]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(by, key))
        row["n_images"] = len(rs)
        for k in keys:
            vals = np.array([r[k] for r in rs if r.get(k) is not None], dtype=float)
            row[k] = float(np.nanmean(vals)) if vals.size and np.isfinite(vals).any() else float("nan")
        out.append(row)
    return out


def _progress(iterable, *, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="image")


def _fit_pooled(
    ds: fio.ExpertDataset, ids: Sequence[str], *, prior: float | None = None, max_iter: int = 1000, progress: bool
) -> Any:
    """Pass 1 of a pooled STAPLE: every image's vote patterns (no image kept in memory), then the fit."""
    from .. import consensus

    experts = ds.expert_names
    pats, raters = [], []
    for image_id in _progress(ids, total=len(ids), enabled=progress, desc="STAPLE fit"):
        _, ann, ignore = ds.load(image_id)
        names = ds.raters(image_id)
        pats.append(consensus.vote_patterns(np.stack([ann[e] > 0 for e in names]), ignore=ignore))
        raters.append([experts.index(e) for e in names])
    return consensus.staple_fit(pats, raters, n_experts=len(experts), prior=prior, max_iter=max_iter)


# --------------------------------------------------------------------------------------------- folders


def _comparable(cfg_json: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg_json.items() if k not in ("overwrite", "resume")}


#: What ``consensus`` / ``agreement`` write into their output folder (``--overwrite`` clears exactly these).
_CONSENSUS_DIRS = ("masks", "probability", "labels", "rois", "overlays", "per_image")


_OUTPUT_FILES = (
    "config.json", "summary.json", "experts.csv", "experts_summary.csv", "agreement.csv", "annotations.csv",
    "staple_fit.json", "agreement_matrix_dice.csv", "agreement_matrix_roi_f1.csv",
    "agreement_matrix_cohen_kappa.csv",
)


def _made_by_us(out: Path) -> bool:
    """A folder written before owner files existed: its config.json says fiji-consensus made it."""
    try:
        return fio.read_json(out / "config.json").get("tool") == "fiji-consensus"
    except (OSError, ValueError, AttributeError):
        return False


def _clear_outputs(out: Path, dirs: Sequence[str]) -> None:
    """Remove the outputs an earlier run of this command left (``--overwrite``), nothing else."""
    import shutil

    for d in dirs:
        if (out / d).is_dir() and not (out / d).is_symlink():
            shutil.rmtree(out / d)
    for f in _OUTPUT_FILES:
        (out / f).unlink(missing_ok=True)


def _prepare_out(
    out: Path, config_json: dict[str, Any], *, overwrite: bool, resume: bool, command: str = "consensus",
    dirs: Sequence[str] = _CONSENSUS_DIRS,
) -> set[str]:
    """Create/check the output folder; return the image ids already done (resume).

    Only a new or empty folder, or one this command made, is written into. ``overwrite`` first removes
    the previous run's outputs (so no stale mask or probability map is left beside the new ones);
    ``resume`` keeps them and removes the temporary files a killed run left.
    """
    from .._atomic import claim_folder, remove_temporary

    done: set[str] = set()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    claim_folder(out, command, legacy=_made_by_us, create=False)
    has_outputs = out.is_dir() and any(p.name in (*dirs, *_OUTPUT_FILES) for p in out.iterdir())
    if has_outputs:
        if resume:
            cfg_file = out / "config.json"
            if not cfg_file.is_file():
                raise FileExistsError(
                    f"cannot resume in {out}: it has no config.json from an earlier run"
                )
            previous = fio.read_json(cfg_file)
            if _comparable(previous.get("config", {})) != _comparable(config_json):
                raise ValueError(
                    f"cannot resume in {out}: it was made with other settings "
                    f"(see {cfg_file}); use the same settings, or --overwrite, or a new folder"
                )
            remove_temporary(out)
            done = {p.stem for p in (out / _PER_IMAGE).glob("*.json")}
        elif overwrite:
            remove_temporary(out)
            _clear_outputs(out, dirs)
        else:
            hint = ", --resume to continue an interrupted run," if command == "consensus" else ""
            raise FileExistsError(
                f"output folder {out} exists and is not empty; use --overwrite to replace its files{hint} "
                "or choose another folder"
            )
    claim_folder(out, command, legacy=_made_by_us)
    return done
