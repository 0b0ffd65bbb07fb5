"""Macro install: the Fiji macros and toolset shipped in ``fiji_consensus/macros`` made installable (the helper
block appended) and written into a Fiji.app (``fiji-consensus fiji install-macros``) or a folder laid out like
one; and the model summary that Train Ensemble shows. No Java here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path

#: The macros shipped in ``fiji_consensus/macros`` (installed into ``Fiji.app/plugins/Fiji_Consensus``).
MACROS = (
    "Next_Planned_Image.ijm",
    "Save_Expert_Annotations.ijm",
    "Compute_Consensus.ijm",
    "Train_Ensemble.ijm",
    "Calibrate_Model.ijm",
    "Predict_Ensemble.ijm",
    "Show_Results.ijm",
)
#: The toolset (installed as ``Fiji.app/macros/toolsets/Fiji Consensus.ijm``).
TOOLSET = "Fiji_Consensus_Toolset.ijm"
#: The one source of the macros' helper functions, appended to every macro when it is installed.
HELPERS = "helpers.ijm"
_HELPERS_MARKER = "// ---- fiji-consensus helpers: appended from helpers.ijm when installed ----"
_TOOLSET_INSTALLED_NAME = "Fiji Consensus.ijm"
_PLUGINS_SUBDIR = "Fiji_Consensus"


def macro_files() -> dict[str, Path]:
    """The shipped macro sources: file name → path in the installed package (the macros, the toolset and
    :data:`HELPERS`). A macro's source ends with a marker line where :func:`macro_text` appends the helpers."""
    from importlib import resources

    root = Path(str(resources.files("fiji_consensus") / "macros"))
    return {name: root / name for name in (*MACROS, TOOLSET, HELPERS)}


def macro_text(name: str) -> str:
    """The installable text of a shipped macro: its source with the helper block (:data:`HELPERS`, kept once)
    appended in place of its marker line, so that the file runs on its own in ImageJ and Fiji.

    Parameters
    ----------
    name
        One of :data:`MACROS` or :data:`TOOLSET` (returned as is: the toolset needs no helpers).

    Examples
    --------
    >>> "function fcPython()" in macro_text("Compute_Consensus.ijm")
    True
    """
    files = macro_files()
    if name not in (*MACROS, TOOLSET):
        raise ValueError(f"name must be one of {(*MACROS, TOOLSET)}; got {name!r}")
    for n in (name, HELPERS):
        if not files[n].is_file():
            raise FileNotFoundError(f"shipped macro {files[n]} is missing: reinstall fiji-consensus")
    text = files[name].read_text("ascii")
    if name == TOOLSET:
        return text
    lines = text.splitlines(keepends=True)
    marks = [i for i, ln in enumerate(lines) if ln.rstrip("\r\n") == _HELPERS_MARKER]
    if len(marks) != 1:
        raise ValueError(f"{files[name]} must end with the marker line {_HELPERS_MARKER!r} once; got {len(marks)}")
    return "".join(lines[:marks[0]]) + files[HELPERS].read_text("ascii")


def _install_plan(root: Path) -> dict[Path, str]:
    """Target path → text of every installed file under a Fiji.app-like ``root``."""
    plan = {root / "plugins" / _PLUGINS_SUBDIR / name: macro_text(name) for name in MACROS}
    plan[root / "macros" / "toolsets" / _TOOLSET_INSTALLED_NAME] = macro_text(TOOLSET)
    return plan


def _write_plan(plan: dict[Path, str], overwrite: bool) -> list[Path]:
    differ = [dst for dst, text in plan.items() if dst.exists() and dst.read_bytes() != text.encode("ascii")]
    if differ and not overwrite:
        raise FileExistsError(
            "these files exist with other content (pass overwrite=True / --overwrite to replace them): "
            + ", ".join(str(d) for d in differ)
        )
    written = []
    for dst, text in plan.items():
        data = text.encode("ascii")
        if dst.exists() and dst.read_bytes() == data:
            continue
        with atomic_path(dst, overwrite=True) as tmp:  # (files that differ were checked above)
            tmp.write_bytes(data)
        written.append(dst)
    return written


def install_macros(fiji_dir: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Install the macros and the toolset into a Fiji.app (or ImageJ) folder.

    The macros go to ``<fiji_dir>/plugins/Fiji_Consensus/`` (menu *Plugins > Fiji Consensus* after a
    restart or *Help > Refresh Menus*), the toolset to ``<fiji_dir>/macros/toolsets/Fiji Consensus.ijm``
    (toolbar ``>>`` menu). Each macro is written with the helper block appended (:func:`macro_text`). Files
    that exist with other content are never replaced silently.

    Parameters
    ----------
    fiji_dir
        The Fiji.app (or ImageJ) folder: it must hold ``jars/``, ``plugins/``, ``macros/`` or ``ij.jar``.
    overwrite
        Replace files that differ from the shipped ones.

    Returns
    -------
    list of Path
        The files written (files already identical are not rewritten and not listed).

    Raises
    ------
    FileExistsError
        When a file differs and ``overwrite`` is false (nothing is written then).
    """
    root = Path(fiji_dir).expanduser()
    if not root.is_dir() or not any((root / x).exists() for x in ("jars", "plugins", "ij.jar", "macros")):
        raise ValueError(
            f"fiji_dir must be a Fiji.app or ImageJ folder (with jars/, plugins/, macros/ or ij.jar); got {str(root)!r}"
        )
    return _write_plan(_install_plan(root), overwrite)


def write_macros(out: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Write the installable macros into ``out`` laid out as in a Fiji.app, for copying by hand:
    ``out/plugins/Fiji_Consensus/*.ijm`` and ``out/macros/toolsets/Fiji Consensus.ijm`` (copy ``out``'s
    ``plugins`` and ``macros`` folders into Fiji.app). ``out`` is created if needed.

    Returns the files written; raises FileExistsError for files with other content unless ``overwrite``.
    """
    root = Path(out).expanduser()
    if root.exists() and not root.is_dir():
        raise ValueError(f"out must be a folder; got the file {str(root)!r}")
    return _write_plan(_install_plan(root), overwrite)


def model_summary(model: str | os.PathLike) -> dict[str, Any]:
    """An ensemble's validation scores next to the experts', and whether it is useful, from its
    ``ensemble.json`` (what Train Ensemble shows when training ends).

    Returns
    -------
    dict
        ``val_roi_f1`` and ``val_dice`` (mean over members; NaN if not validated), ``expert_roi_f1``
        (median over validation images and experts of each expert's ROI-F1 against the consensus; NaN without
        experts), ``useless`` (True when the validation ROI-F1 or Dice is below 0.2, or the ROI-F1 below half
        the experts'), ``text`` (one sentence that says when the validation images were training images too
        (split 'all'), with a warning when useless, and for a calibrated model the
        thresholds it was given and on how many images).
    """
    path = Path(model).expanduser()
    meta_file = path / "ensemble.json" if path.is_dir() else path
    if not meta_file.is_file() or meta_file.name != "ensemble.json":
        raise ValueError(f"model must be an ensemble folder holding ensemble.json; got {str(path)!r}")
    meta = json.loads(meta_file.read_text("utf-8"))
    members = meta.get("members") or []

    def mean(key: str) -> float:
        vals = [float(m[key]) for m in members if isinstance(m.get(key), (int, float))]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    f1, dice = mean("val_roi_f1"), mean("val_dice")
    per_image = (meta.get("provenance") or {}).get("expert_roi_f1") or {}
    val_ids = {i for m in members for i in (m.get("val_ids") or [])}
    experts = [float(v) for iid, scores in per_image.items() if not val_ids or iid in val_ids
               for v in (scores or {}).values() if isinstance(v, (int, float)) and np.isfinite(v)]
    ef1 = float(np.median(experts)) if experts else float("nan")
    useless = bool((np.isfinite(f1) and f1 < 0.2) or (np.isfinite(dice) and dice < 0.2)
                   or (np.isfinite(f1) and np.isfinite(ef1) and f1 < 0.5 * ef1))
    fmt = lambda v: "n/a" if not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
    seen = any(set(m.get("val_ids") or []) & set(m.get("train_ids") or []) for m in members)  # split 'all'
    where = ("images it was also trained on (split 'all', as in fine-tuning): optimistic; score it on images "
             "it has not seen" if seen else "images each member did not train on")
    text = (f"Validation ({where}): ROI-F1 {fmt(f1)}, Dice {fmt(dice)}; "
            f"experts against the consensus: ROI-F1 {fmt(ef1)} (median).")
    if useless:
        text += (" WARNING: this model is not useful yet (it misses or invents most objects): train longer "
                 "(more minutes or iterations), on more annotated images, or fine-tune a zoo model.")
    cals = [c for c in (meta.get("provenance") or {}).get("calibrations") or [] if isinstance(c, dict)]
    if cals:
        cal = cals[-1]
        n = cal.get("images")
        n = len(n) if isinstance(n, list) else n
        obj = meta.get("object_threshold")
        text += (f" Calibrated on {n} annotated image(s): threshold {meta.get('threshold')}"
                 + (f", object threshold {obj}" if obj is not None else ", no object threshold")
                 + f" (ROI-F1 on those images {fmt(float(cal.get('roi_f1', float('nan'))))}; the validation above "
                 f"is at the threshold {cals[0].get('previous_threshold')} it was trained with).")
    return {"val_roi_f1": round(f1, 4) if np.isfinite(f1) else None,
            "val_dice": round(dice, 4) if np.isfinite(dice) else None,
            "expert_roi_f1": round(ef1, 4) if np.isfinite(ef1) else None,
            "useless": useless, "text": text, "model": str(meta_file.parent)}
