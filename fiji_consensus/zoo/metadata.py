"""What a package says about itself, checked before anything is written: its name, the people (authors,
maintainers), the training data, the held-out scores, and paths made portable (a package must not name the
machine that built it)."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import CITATION_DOI, CITATION_TEXT

__all__ = ["TRAINING_DATA", "SEGEBARTH2020_DATASET", "parse_person", "absolute_paths", "read_validation",
           "check_name", "training_data", "dataset_doc", "portable"]

#: The training data of Segebarth et al. 2020 as a bioimage.io dataset description (``training_data``):
#: the people who made and published the images and annotations, with their affiliations.
SEGEBARTH2020_DATASET = {
    "name": "Segebarth et al 2020 multi-expert cFOS data",  # bioimage.io names: no dots
    "description": (
        "Fluorescence images of cFOS-positive nuclei in mouse brain sections from three labs (lab-wue1, "
        "lab-mue, lab-inns1), each annotated independently by several experts, with the published STAPLE "
        "consensus est_GT; published by the authors in the GitHub repository matjesg/bioimage_analysis "
        "(Apache-2.0) and carried by fiji-consensus in data/segebarth2020."
    ),
    "authors": [
        {"name": "Dennis Segebarth", "affiliation": "Institute of Clinical Neurobiology, University Hospital Wuerzburg"},
        {"name": "Matthias Griebel", "affiliation": "University of Wuerzburg"},
        {"name": "Robert Blum", "affiliation": "Institute of Clinical Neurobiology, University Hospital Wuerzburg"},
    ],
    "license": "Apache-2.0",
    "tags": ["fluorescence-light-microscopy", "2d", "nuclei", "brain", "mouse", "cfos"],
}
#: Named training-data descriptions for ``package_ensemble(training_data=...)`` and ``--training-data``.
TRAINING_DATA = {"segebarth2020": SEGEBARTH2020_DATASET}

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")
_PERSON_KEYS = ("name", "affiliation", "email", "github_user", "orcid")
_ABS_PATH_RE = re.compile(r"(?<![\w:/.\-])(?:~/|[A-Za-z]:\\|/)(?:[\w.@+-]+[/\\])+[\w.@+-]*")


def num(v: Any) -> float | None:
    """``v`` as a finite float, else ``None`` (missing, not a number, NaN or infinite)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(v: Any, nd: int = 3) -> str:
    """A score for the card: ``nd`` decimals, ``n/a`` when missing."""
    return "n/a" if v is None else f"{v:.{nd}f}"


def check_name(name: str | None, model_dir: Path) -> str:
    """A bioimage.io model name (5 to 128 of letters, digits, ``_+- ()``); default from the folder name."""
    if name is None:
        folder = model_dir.resolve().name if model_dir.is_dir() else model_dir.resolve().parent.name
        clean = "".join(c if c in _NAME_CHARS else "-" for c in folder).strip("- ") or "model"
        name = clean if len(clean) >= 5 else f"{clean} U-Net ensemble"
        return name[:128]
    bad = sorted({c for c in name if c not in _NAME_CHARS})
    if bad or not 5 <= len(name) <= 128:
        raise ValueError(
            f"name must be 5 to 128 characters of letters, digits, '_', '+', '-', ' ', '(' and ')' (bioimage.io); "
            f"got {name!r}" + (f" with {bad}" if bad else f" of length {len(name)}")
        )
    return name


def parse_person(entry: str | dict[str, Any], *, maintainer: bool = False) -> dict[str, str]:
    """An author or maintainer from ``"Name; affiliation=...; github_user=...; orcid=...; email=..."`` (or a dict).

    Authors need a name; maintainers a ``github_user``. Note that bioimageio.spec looks every GitHub user up
    on api.github.com when it validates with file checks (``bioimageio test``), so a package naming one it
    does not know fails validation offline.

    >>> parse_person("Jane Doe; affiliation=University of X")
    {'name': 'Jane Doe', 'affiliation': 'University of X'}
    """
    d = _person_fields(entry, maintainer=maintainer)
    bad = sorted(set(d) - set(_PERSON_KEYS))
    if bad:
        raise ValueError(f"person entry {entry!r} has unknown field(s) {bad}; expected {list(_PERSON_KEYS)}")
    need = "github_user" if maintainer else "name"
    if not d.get(need):
        raise ValueError(
            f"{'maintainer' if maintainer else 'author'} entry {entry!r} needs a {need}; e.g. "
            + ("'jdoe' or 'Jane Doe; github_user=jdoe'" if maintainer else "'Jane Doe; affiliation=University of X'")
        )
    return d


def _person_fields(entry: str | dict[str, Any], *, maintainer: bool) -> dict[str, str]:
    """The fields of a person entry, not yet checked (a bare first part is the name, or a maintainer's user)."""
    if isinstance(entry, dict):
        return {str(k): str(v).strip() for k, v in entry.items() if v is not None and str(v).strip()}
    d: dict[str, str] = {}
    for i, part in enumerate(x.strip() for x in str(entry).split(";")):
        if not part:
            continue
        if "=" in part:
            k, v = (t.strip() for t in part.split("=", 1))
            d[k] = v
        elif i == 0:
            d["maintainer_github" if maintainer else "name"] = part
        else:
            raise ValueError(f"person entry {entry!r}: part {part!r} is not key=value (keys {_PERSON_KEYS})")
    if maintainer and "maintainer_github" in d:
        d.setdefault("github_user", d.pop("maintainer_github"))
    return d


def absolute_paths(text: str) -> list[str]:
    """Absolute file-system paths in ``text`` (POSIX ``/a/b``, ``~/a``, Windows ``C:\\a``); URLs are not paths.

    >>> absolute_paths("source: /home/me/data/lab-wue1; doi https://doi.org/10.7554/eLife.59780; 1/2")
    ['/home/me/data/lab-wue1']
    """
    return _ABS_PATH_RE.findall(text)


def portable(value: Any, roots: Sequence[Path] = ()) -> Any:
    """``value`` with every absolute path made relative to the first of ``roots`` (the repository, the working
    directory) that holds it, else cut to ``.../<last 3 parts>``: a package must not name the build machine."""
    if isinstance(value, dict):
        return {k: portable(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable(v, roots) for v in value)
    if not isinstance(value, str) or not absolute_paths(value):
        return value
    p = Path(value.strip())
    if p.is_absolute():
        for root in roots:
            try:
                return p.resolve().relative_to(root.resolve()).as_posix()
            except (ValueError, OSError):
                continue
        return ".../" + "/".join(p.parts[-3:])
    return re.sub(r"\S+", lambda m: portable(m.group(0), roots) if absolute_paths(m.group(0)) else m.group(0), value)


def read_validation(path: Path | None, model_dir: Path, data: Any = None) -> dict[str, Any] | None:
    """Held-out scores: a json with ``labs: {lab: {images, means: {ensemble|expert_k|member k: {roi_f1,
    dice}}}}`` (``tests/benchmarks/bench_train.py`` writes it as ``bench_results.json``); or ``data``, the
    same already read (a package's ``config.fiji_consensus.validation``), with ``path`` naming its source."""
    if data is None and path is None:
        path = next((model_dir / c for c in ("validation.json", "bench_results.json") if (model_dir / c).is_file()),
                    None)
        if path is None:
            return None
    path = Path(path)
    if data is None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"validation scores {path} are not valid JSON: {exc}") from exc
    labs = data.get("labs") if isinstance(data, dict) else None
    if not isinstance(labs, dict) or not labs:
        raise ValueError(
            f"validation scores {path} must hold 'labs': {{lab: {{'images': n, 'means': {{'ensemble': "
            f"{{'roi_f1': .., 'dice': ..}}, 'expert_1': {{..}}, ..}}}}}}; got keys {sorted(data)[:10]}"
        )
    return {"source": path.name, "labs": {str(lab): _lab_scores(path, lab, rec) for lab, rec in labs.items()}}


def _lab_scores(path: Path, lab: str, rec: Any) -> dict[str, Any]:
    """One lab's scores, cleaned, with the median expert's and the average member's ROI-F1 and Dice."""
    means = rec.get("means") if isinstance(rec, dict) else None
    if not isinstance(means, dict) or "ensemble" not in means:
        raise ValueError(f"validation scores {path}: lab {lab!r} has no 'means' with an 'ensemble' entry")
    clean = {k: {m: num(v.get(m)) for m in ("roi_f1", "dice")} for k, v in means.items()}
    experts = sorted(k for k in clean if k.startswith("expert"))
    members = sorted(k for k in clean if k.startswith("member"))
    entry = {"images": rec.get("images"), "min_size": rec.get("min_size"), "means": clean}
    for metric in ("roi_f1", "dice"):
        ev = [clean[e][metric] for e in experts if clean[e][metric] is not None]
        mv = [clean[m][metric] for m in members if clean[m][metric] is not None]
        entry[f"median_expert_{metric}"] = statistics.median(ev) if ev else None
        entry[f"average_member_{metric}"] = float(np.mean(mv)) if mv else None
    return entry


def training_data(spec: str | os.PathLike | dict[str, Any] | None) -> dict[str, Any] | None:
    """The training-data description of ``package_ensemble(training_data=...)`` as a plain dict."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        data = dict(spec)
    elif str(spec) in TRAINING_DATA:
        data = json.loads(json.dumps(TRAINING_DATA[str(spec)]))
    elif Path(spec).is_file():
        try:
            data = json.loads(Path(spec).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"training data description {spec} is not valid JSON: {exc}") from exc
    else:
        raise ValueError(
            f"training_data must be one of {sorted(TRAINING_DATA)}, a JSON file or a dict; got {str(spec)!r}"
        )
    if not isinstance(data, dict) or not data.get("name") or not data.get("authors"):
        raise ValueError(f"training data description {spec!r} needs at least a 'name' and 'authors'")
    data["authors"] = [parse_person(a) for a in data["authors"]]
    return data


def is_segebarth2020(data: dict[str, Any]) -> bool:
    """Whether a training-data description is Segebarth et al. 2020's (the only data we cite ourselves)."""
    return data is SEGEBARTH2020_DATASET or data.get("name") == SEGEBARTH2020_DATASET["name"]


def dataset_doc(data: dict[str, Any]) -> str:
    """``training_data.md`` of a package: what the training data is, who made it, its licence."""
    people = "\n".join(f"* {a['name']}" + (f", {a['affiliation']}" if a.get("affiliation") else "")
                       for a in data["authors"])
    lines = [f"# {data['name']}", "", data.get("description", ""), "", "## Authors", "", people, "",
             f"Licence: {data.get('license', 'n/a')}.", ""]
    if data.get("name") == SEGEBARTH2020_DATASET["name"]:
        lines += ["## Citation", "", f"{CITATION_TEXT}. doi:{CITATION_DOI}", ""]
    return "\n".join(lines)
