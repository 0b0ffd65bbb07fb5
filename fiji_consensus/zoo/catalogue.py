"""The local zoo: the packages under ``model_zoo/<name>/`` (or ``$FIJI_CONSENSUS_ZOO``) with their held-out
scores, read from each package's description without loading it."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from ._common import REPO_ROOT, read_rdf

__all__ = ["ZOO_ENV", "ZOO_HINT", "zoo_root", "list_zoo"]

logger = logging.getLogger(__name__)

#: Environment variable naming the zoo folder (``<folder>/<name>/<name>.zip``) for installs from a wheel.
ZOO_ENV = "FIJI_CONSENSUS_ZOO"
#: How a user without a clone gets the zoo's models (the packages are not in the wheel: about 20 MB each).
ZOO_HINT = (
    f"no model zoo folder found: give --root DIR or set {ZOO_ENV}=DIR, where DIR holds <name>/<name>.zip "
    "(the model_zoo/ folder of a fiji-consensus clone, or a folder where you put downloaded packages such as "
    "cfos-wue1/cfos-wue1.zip); any package also runs directly: fiji-consensus predict --model PACKAGE.zip"
)


def zoo_root(root: str | os.PathLike | None = None) -> Path | None:
    """The zoo folder: ``root``, else ``$FIJI_CONSENSUS_ZOO``, else ``./model_zoo``, else the ``model_zoo/``
    of the source tree this package runs from (a clone); ``None`` when there is none (a wheel install).

    An explicit ``root`` or ``$FIJI_CONSENSUS_ZOO`` that is not a folder is an error.
    """
    if root is not None or os.environ.get(ZOO_ENV):
        p = Path(root if root is not None else os.environ[ZOO_ENV]).expanduser()
        if not p.is_dir():
            src = "--root" if root is not None else f"${ZOO_ENV}"
            raise FileNotFoundError(f"no model zoo folder at {p} ({src}); expected a folder of <name>/<name>.zip")
        return p
    for p in (Path("model_zoo"), REPO_ROOT / "model_zoo"):
        if p.is_dir():
            return p
    return None


def list_zoo(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The models of a zoo folder (``model_zoo/<name>/<name>.zip``) with their held-out scores.

    The folder is :func:`zoo_root`'s (``root``, ``$FIJI_CONSENSUS_ZOO``, ``./model_zoo``, the clone's);
    with none, the list is empty (:data:`ZOO_HINT` says how to get one). A folder without a package (its
    recipe not run yet) is listed with ``built = False``. Rows: ``name``, ``folder``, ``package``,
    ``built``, ``megabytes``, ``members``, ``views``, ``measure``, ``weights``, ``labs`` (per held-out lab:
    ensemble and median-expert ROI-F1), ``error`` for unreadable packages (or without the ``zoo`` extra,
    which reads the descriptions).
    """
    root = zoo_root(root)
    if root is None:
        logger.info(ZOO_HINT)
        return []
    rows = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        zips = sorted(d.glob("*.zip"))
        if not zips:
            if any((d / f).is_file() for f in ("build.py", "build.sh", "README.md")):  # a recipe not run yet
                rows.append({"name": d.name, "folder": str(d), "package": None, "built": False})
            continue
        rows += [_row(d, z) for z in zips]
    return rows


def _row(folder: Path, z: Path) -> dict[str, Any]:
    """One package of the zoo: size, weights, members, views, measure and held-out-lab scores."""
    row: dict[str, Any] = {"name": z.stem, "folder": str(folder), "package": str(z), "built": True,
                           "megabytes": round(z.stat().st_size / 1e6, 2)}
    try:
        rdf = read_rdf(z)
    except (ValueError, zipfile.BadZipFile, OSError, ImportError) as exc:
        row["error"] = str(exc)
        return row
    fc = (rdf.get("config") or {}).get("fiji_consensus") or {}
    row.update(
        title=rdf.get("name"),
        weights=sorted((rdf.get("weights") or {}).keys()),
        members=len(fc.get("members") or []) or None,
        views=len(fc.get("views") or []) or None,
        measure=(fc.get("uncertainty") or {}).get("measure"),
        labs={lab: {"images": e.get("images"),
                    "ensemble_roi_f1": (e.get("means") or {}).get("ensemble", {}).get("roi_f1"),
                    "ensemble_dice": (e.get("means") or {}).get("ensemble", {}).get("dice"),
                    "median_expert_roi_f1": e.get("median_expert_roi_f1")}
              for lab, e in ((fc.get("validation") or {}).get("labs") or {}).items()},
    )
    return row
