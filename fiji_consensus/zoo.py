"""bioimage.io packages: a whole ensemble as one model for deepImageJ and bioimage.io; running any package.

**Packaging** (:func:`package_ensemble`, CLI ``fiji-consensus package``): an ensemble folder
(``ensemble.json`` + member weights) becomes one bioimage.io model package (format 0.5, built and validated
with bioimageio.spec's Python API) in which the K members, the test-time views and the sigmoid run inside
one network (:class:`fiji_consensus.nn.ensemble_net.EnsembleNet`):

* input ``input``: axes ``batch, channel (1), y, x``, float32; preprocessing ``scale_range`` over ``y, x``
  with the training percentiles (``min_percentile``, ``max_percentile``, ``eps`` of ``ensemble.json``), which
  is exactly fiji-consensus's per-image percentile normalisation and which deepImageJ implements; ``y, x``
  sizes ``ParameterizedSize(min = 2 * halo + 2**depth, step = 2**depth)``; reflect padding.
* outputs ``probability`` (mean foreground probability over members x views, [0, 1]) and ``uncertainty``
  (one measure of :mod:`fiji_consensus.uncertainty` over the same samples, absolute scale, never rescaled),
  axes ``batch, channel (1), y, x`` with ``halo`` = the ensemble's halo (the receptive-field radius rounded up
  to a multiple of ``2**depth``), so that tiled prediction is seamless.
* weights, all from the same members: ``pytorch_state_dict`` (the architecture as a source file that
  needs only torch), ``torchscript`` (traced) and ``onnx`` (legacy exporter, opset 17, IR version 8, which
  deepImageJ's onnxruntime 1.13 loads).
* test tensors from a real image crop, a TIFF sample for Java tools, a cover (the crop with the predicted
  objects outlined and coloured by their uncertainty, next to the uncertainty map), a documentation with a
  ``# Validation`` section (member and held-out-lab scores, how to run it), the Segebarth et al. 2020
  citation, and ``config.fiji_consensus`` (threshold, min size, the uncertainty's definition, normalisation,
  members, provenance and validation scores from ``ensemble.json``).

**Testing** (:func:`test_package`): bioimageio.core's ``test_model``, offline, for every weight format.

**Running any package** (:func:`load_package`, :func:`predict_packages`, CLI ``fiji-consensus predict
--model PACKAGE.zip``): tiled prediction through bioimageio.core, for our packages and for others'. A foreign
package's first output (channel 0 unless chosen) must be a foreground probability. Several packages form an
ensemble with the same uncertainty measures as our own ensembles (over packages x views). Weights are
chosen in the order onnx, torchscript, pytorch_state_dict: the last executes the package's Python
architecture code, which is logged as a warning.

**The zoo** (:func:`list_zoo`, CLI ``fiji-consensus zoo list``): the packages under ``model_zoo/<name>/``
with their held-out scores.

Needs the ``zoo`` extra (``pip install 'fiji-consensus[zoo]'``: bioimageio.core, onnx, onnxruntime) and
torch; every heavy import is inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .uncertainty import MEASURE_RANGE, MEASURES

__all__ = [
    "WEIGHT_FORMATS",
    "RUN_PREFERENCE",
    "ONNX_OPSET",
    "ONNX_MAX_IR_VERSION",
    "CITATION_TEXT",
    "CITATION_DOI",
    "UNCERTAINTY_DEFINITIONS",
    "package_ensemble",
    "run_package",
    "test_package",
    "onnx_versions",
    "model_card",
    "is_package",
    "Package",
    "load_package",
    "predict_packages",
    "ensemble_from_package",
    "list_zoo",
    "zoo_root",
    "ZOO_ENV",
    "ZOO_HINT",
    "PYTORCH_MIN_VERSION",
    "DEFAULT_TAGS",
    "TRAINING_DATA",
    "parse_person",
    "absolute_paths",
    "read_card_notes",
]

logger = logging.getLogger(__name__)

#: Weight formats written into a package (all derived from the same members).
WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
#: TensorFlow/Keras weights written on request (the ``keras`` extra; fiji_consensus.keras.export).
TF_WEIGHT_FORMATS = ("keras_hdf5", "tensorflow_saved_model_bundle")
#: Order in which weights of a package are chosen to run it (code-free formats first).
RUN_PREFERENCE = ("onnx", "torchscript", "keras_hdf5", "tensorflow_saved_model_bundle", "pytorch_state_dict")
#: ONNX export settings that deepImageJ's onnxruntime 1.13 loads (legacy exporter).
ONNX_OPSET = 17
ONNX_MAX_IR_VERSION = 8

CITATION_TEXT = (
    "Segebarth D, Griebel M, Stein N, et al. (2020). On the objectivity, reliability, and validity of deep "
    "learning enabled bioimage analyses. eLife 9:e59780"
)
CITATION_DOI = "10.7554/eLife.59780"

#: What the ``uncertainty`` output of a package holds, per measure (samples = members x views).
UNCERTAINTY_DEFINITIONS = {
    "entropy": "predictive entropy H(p_mean) in bits, p_mean = mean foreground probability over the "
    "members x views (total uncertainty; 0 = certain, 1 = p_mean = 0.5)",
    "expected_entropy": "expected entropy mean_s H(p_s) in bits over the members x views (aleatoric part)",
    "mutual_information": "mutual information H(p_mean) - mean_s H(p_s) in bits (epistemic part: "
    "disagreement between members and views)",
    "std": "population standard deviation of the members x views probabilities (0 to 0.5)",
    "deepflash2": "deepflash2's U = 4 p_mean (1 - p_mean) (0 to 1)",
}

_ALL_WEIGHT_FORMATS = ("onnx", "torchscript", "pytorch_state_dict", "keras_hdf5", "keras_v3", "tensorflow_js",
                       "tensorflow_saved_model_bundle")
_TOLERANCE = {"relative_tolerance": 1e-4, "absolute_tolerance": 1e-4, "mismatched_elements_per_million": 100}

#: The ``pytorch_version`` declared for the TorchScript and state-dict weights: the oldest PyTorch checked to
#: load and reproduce them (torch 2.0.1, deepImageJ's libtorch; tests/benchmarks/bench_old_runtimes.py). The
#: files need no newer one, and deepImageJ's engine installer (JDLL, which knows PyTorch up to 2.0.x) refuses
#: weights that declare a version it does not know.
PYTORCH_MIN_VERSION = "2.0.1"
#: Tags of every package, one per bioimage.io category it fills (dims, framework, software, network, task);
#: modality and content come from the caller (``tags``). Our outputs are semantic (per-pixel probability).
DEFAULT_TAGS = ("2d", "pytorch", "unet", "deepimagej", "fiji", "imagej", "semantic-segmentation", "ensemble",
                "uncertainty", "fiji-consensus")

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


# --------------------------------------------------------------------------------------------- helpers


def _require_zoo() -> None:
    from ._validate import require

    require("torch", extra="train")
    require("bioimageio.core", extra="zoo")
    require("bioimageio.spec", extra="zoo")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _no_block_progress(progress: bool):
    """Turn off bioimageio.core's per-block tqdm bar unless ``progress`` (it has no switch of its own)."""
    if progress:
        yield
        return
    import functools

    import tqdm as _tqdm
    from bioimageio.core import _prediction_pipeline as _pp

    old = getattr(_pp, "tqdm", None)
    _pp.tqdm = functools.partial(_tqdm.tqdm, disable=True)
    try:
        yield
    finally:
        _pp.tqdm = old


@contextlib.contextmanager
def _quiet_bioimageio(quiet: bool = True):
    """Silence bioimageio's loguru messages (it logs INFO to stderr by default) while inside."""
    try:
        from loguru import logger as _lg
    except ImportError:  # pragma: no cover
        yield
        return
    if quiet:
        _lg.disable("bioimageio")
    try:
        yield
    finally:
        if quiet:
            _lg.enable("bioimageio")


def onnx_versions(path: str | os.PathLike) -> tuple[int, int]:
    """``(ir_version, default-domain opset)`` of an ONNX file (deepImageJ needs IR <= 8, opset <= 17)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    opset = max((int(o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return int(m.ir_version), opset


def _choose_crop(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size``-pixel window with the most structure (largest 99th - 50th percentile)."""
    y, x = image.shape
    best, best_score = (max(0, (y - size) // 2), max(0, (x - size) // 2)), -math.inf
    step = max(16, size // 4)
    for y0 in range(0, max(1, y - size + 1), step):
        for x0 in range(0, max(1, x - size + 1), step):
            win = image[y0 : y0 + size, x0 : x0 + size]
            lo, med, hi = np.percentile(win, [1, 50, 99])
            score = float(hi - med) - 0.25 * float(med - lo)
            if score > best_score:
                best, best_score = (y0, x0), score
    return best


def _test_size(depth: int, halo: int, want: int, limit: int) -> tuple[int, int, int]:
    """``(min, step, size)``: the ParameterizedSize and a valid test-tile size <= limit close to ``want``."""
    step = 2**depth
    smin = 2 * halo + step
    if limit < smin:
        raise ValueError(
            f"the sample image must be at least {smin} pixels in y and x for this ensemble (2 * halo {halo} + "
            f"{step}); got {limit}"
        )
    size = smin + max(0, (min(want, limit) - smin) // step) * step
    return smin, step, size


def _colour_array(t: np.ndarray) -> np.ndarray:
    """The uncertainty colours (cyan -> yellow -> red, as ROIs of ``predict``) of ``t`` in [0, 1], (..., 3)."""
    from .predict import UNCERTAINTY_COLORS

    t = np.clip(t, 0.0, 1.0)
    xs = [a for a, _ in UNCERTAINTY_COLORS]
    return np.stack([np.interp(t, xs, [c[k] for _, c in UNCERTAINTY_COLORS]) for k in range(3)], axis=-1)


def _cover(image: np.ndarray, prob: np.ndarray, unc: np.ndarray, *, measure: str, threshold: float,
           min_size: int) -> np.ndarray:
    """RGB uint8 cover, 2:1: the crop with object outlines coloured by mean uncertainty | the uncertainty map,
    with titles and a colour bar under each panel (:func:`_cover_panels` without the legend)."""
    left, right = _cover_panels(image, prob, unc, measure=measure, threshold=threshold, min_size=min_size)
    import matplotlib

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    rng = float(MEASURE_RANGE[measure])
    unit = " (bits)" if measure in ("entropy", "expected_entropy", "mutual_information") else ""
    t = np.linspace(0, 1, 256)
    outline_cmap = ListedColormap(_colour_array(t) / 255.0)
    map_cmap = ListedColormap(_colour_array(t) * t[:, None] / 255.0)
    fig = Figure(figsize=(8, 4), dpi=100, facecolor="black")
    FigureCanvasAgg(fig)
    text = {"color": "white", "fontsize": 9}
    for k, (panel, cmap, title, label) in enumerate([
        (left, outline_cmap, f"input; objects (probability > {threshold:g})",
         f"outline colour = mean {measure} of the object{unit}"),
        (right, map_cmap, f"uncertainty map: {measure}{unit}", f"{measure}{unit}, 0 = certain"),
    ]):
        ax = fig.add_axes([0.01 + 0.5 * k, 0.2, 0.48, 0.72])
        ax.imshow(panel, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, pad=3, **text)
        cax = fig.add_axes([0.06 + 0.5 * k, 0.1, 0.38, 0.035])
        cb = fig.colorbar(matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, rng), cmap=cmap),
                          cax=cax, orientation="horizontal")
        cb.set_label(label, labelpad=1, **text)
        cb.ax.tick_params(colors="white", labelsize=7, length=2, pad=1)
        cb.outline.set_edgecolor("white")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _cover_panels(image: np.ndarray, prob: np.ndarray, unc: np.ndarray, *, measure: str, threshold: float,
                  min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The two panels of the cover, RGB float in [0, 255]: the crop with object outlines coloured by mean
    uncertainty, and the uncertainty map (dark where certain)."""
    from skimage.segmentation import find_boundaries

    from .instances import label_instances

    lo, hi = np.percentile(image, [1, 99.8])
    gray = np.clip((image.astype(np.float64) - lo) / (hi - lo + 1e-6), 0, 1)
    left = np.repeat((gray * 255)[..., None], 3, axis=2)
    labels = label_instances(prob, threshold=threshold, min_size=min_size)
    rng = MEASURE_RANGE[measure]
    bounds = find_boundaries(labels, mode="inner")
    if labels.max() > 0:
        idx = np.arange(1, labels.max() + 1)
        from scipy import ndimage as ndi

        means = np.asarray(ndi.mean(unc, labels=labels, index=idx), np.float64) / rng
        obj_col = _colour_array(means)
        left[bounds] = obj_col[labels[bounds] - 1]
    t = np.clip(unc / rng, 0, 1)
    right = _colour_array(t) * t[..., None]  # dark where certain, the ROI colours where not
    right[bounds] = 255 * 0.6 + right[bounds] * 0.4
    return left.round().astype(np.uint8), right.round().astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray, *, max_bytes: int = 500_000) -> None:
    import imageio.v3 as iio

    arr = rgb
    while True:
        iio.imwrite(path, arr)
        if path.stat().st_size < max_bytes or min(arr.shape[:2]) < 64:
            return
        arr = arr[::2, ::2]


def _read_validation(path: Path | None, model_dir: Path, data: Any = None) -> dict[str, Any] | None:
    """Held-out scores: a json with ``labs: {lab: {images, means: {ensemble|expert_k|member k: {roi_f1,
    dice}}}}`` (``tests/benchmarks/bench_train.py`` writes it as ``bench_results.json``); or ``data``, the
    same already read (a package's ``config.fiji_consensus.validation``), with ``path`` naming its source."""
    if data is None and path is None:
        for cand in ("validation.json", "bench_results.json"):
            if (model_dir / cand).is_file():
                path = model_dir / cand
                break
        else:
            return None
    path = Path(path)
    if data is None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except json.JSONDecodeError as exc:
            raise ValueError(f"validation scores {path} are not valid JSON: {exc}") from exc
    labs = data.get("labs") if isinstance(data, dict) else None
    if not isinstance(labs, dict) or not labs:
        raise ValueError(
            f"validation scores {path} must hold 'labs': {{lab: {{'images': n, 'means': {{'ensemble': "
            f"{{'roi_f1': .., 'dice': ..}}, 'expert_1': {{..}}, ..}}}}}}; got keys {sorted(data)[:10]}"
        )
    out: dict[str, Any] = {"source": path.name, "labs": {}}
    for lab, rec in labs.items():
        means = rec.get("means") if isinstance(rec, dict) else None
        if not isinstance(means, dict) or "ensemble" not in means:
            raise ValueError(f"validation scores {path}: lab {lab!r} has no 'means' with an 'ensemble' entry")
        clean = {k: {m: _num(v.get(m)) for m in ("roi_f1", "dice")} for k, v in means.items()}
        experts = sorted(k for k in clean if k.startswith("expert"))
        members = sorted(k for k in clean if k.startswith("member"))
        entry = {"images": rec.get("images"), "min_size": rec.get("min_size"), "means": clean}
        for metric in ("roi_f1", "dice"):
            ev = [clean[e][metric] for e in experts if clean[e][metric] is not None]
            mv = [clean[m][metric] for m in members if clean[m][metric] is not None]
            entry[f"median_expert_{metric}"] = statistics.median(ev) if ev else None
            entry[f"average_member_{metric}"] = float(np.mean(mv)) if mv else None
        out["labs"][str(lab)] = entry
    return out


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")


def _check_name(name: str | None, model_dir: Path) -> str:
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


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v: Any, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


_PERSON_KEYS = ("name", "affiliation", "email", "github_user", "orcid")


def parse_person(entry: str | dict[str, Any], *, maintainer: bool = False) -> dict[str, str]:
    """An author or maintainer from ``"Name; affiliation=...; github_user=...; orcid=...; email=..."`` (or a dict).

    Authors need a name; maintainers a ``github_user``. Note that bioimageio.spec looks every GitHub user up
    on api.github.com when it validates with file checks (``bioimageio test``), so a package naming one it
    does not know fails validation offline.

    >>> parse_person("Jane Doe; affiliation=University of X")
    {'name': 'Jane Doe', 'affiliation': 'University of X'}
    """
    if isinstance(entry, dict):
        d = {str(k): str(v).strip() for k, v in entry.items() if v is not None and str(v).strip()}
    else:
        parts = [x.strip() for x in str(entry).split(";")]
        d = {}
        for i, part in enumerate(parts):
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


_ABS_PATH_RE = None


def absolute_paths(text: str) -> list[str]:
    """Absolute file-system paths in ``text`` (POSIX ``/a/b``, ``~/a``, Windows ``C:\\a``); URLs are not paths.

    >>> absolute_paths("source: /home/me/data/lab-wue1; doi https://doi.org/10.7554/eLife.59780; 1/2")
    ['/home/me/data/lab-wue1']
    """
    global _ABS_PATH_RE
    import re

    if _ABS_PATH_RE is None:
        _ABS_PATH_RE = re.compile(r"(?<![\w:/.\-])(?:~/|[A-Za-z]:\\|/)(?:[\w.@+-]+[/\\])+[\w.@+-]*")
    return _ABS_PATH_RE.findall(text)


def _portable(value: Any, roots: Sequence[Path] = ()) -> Any:
    """``value`` with every absolute path made relative to the first of ``roots`` (the repository, the working
    directory) that holds it, else cut to ``.../<last 3 parts>``: a package must not name the build machine."""
    if isinstance(value, dict):
        return {k: _portable(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_portable(v, roots) for v in value)
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
    import re

    return re.sub(r"\S+", lambda m: _portable(m.group(0), roots) if absolute_paths(m.group(0)) else m.group(0), value)


# --------------------------------------------------------------------------------------------- model card


def model_card(
    meta: dict[str, Any],
    *,
    name: str,
    measure: str,
    views: Sequence[str],
    validation: dict[str, Any] | None = None,
    description: str | None = None,
    package_file: str | None = None,
    weight_formats: Sequence[str] = WEIGHT_FORMATS,
    notes: dict[str, str] | None = None,
    authors: Sequence[dict[str, str]] = (),
    training_data: dict[str, Any] | None = None,
) -> str:
    """The model card (markdown) of a packaged ensemble, filled from ``ensemble.json`` and held-out scores.

    It is the package's ``documentation.md`` and, byte for byte, the ``model_zoo/<name>/README.md``: data,
    experts, consensus, training budget, member and held-out-lab scores (``## Validation``), how to run it in
    deepImageJ, with bioimageio.core and with fiji-consensus, intended use and limits, citation. One ``#``
    title, every section ``##``.

    ``notes`` adds hand-written markdown at the end of sections, by section title (``{"Validation": "..."}``;
    :func:`read_card_notes` reads them from a markdown file of ``## Title`` blocks, e.g.
    ``model_zoo/<name>/notes.md``), so the packaged card and the zoo's README come from one source.
    """
    arch = meta.get("architecture", {})
    cfg = arch.get("config", {})
    norm = meta.get("normalization", {})
    train = meta.get("training") or {}
    prov = meta.get("provenance") or {}
    members = [m for m in meta.get("members", []) if m.get("selected", True)]
    k = len(members)
    ids = sorted((norm.get("training_values") or {}).keys()) or sorted(str(i) for i in prov.get("image_ids") or [])
    n_images = len(ids) or prov.get("n_images")
    seconds = [float(m["seconds"]) for m in members if m.get("seconds") is not None]
    total_s = sum(seconds) if len(seconds) == k and k else _num(prov.get("seconds"))
    val_of = {i: len(sp.get("validation") or []) for i, sp in enumerate(prov.get("splits") or [])
              if isinstance(sp, dict)}  # member index -> its validation images (train_ensemble's provenance)
    pkg = package_file or f"{name}.zip"
    lines = [f"# {name}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        f"An ensemble of {k} U-Nets trained with fiji-consensus on the consensus of several experts' "
        "annotations (after Segebarth et al. 2020), packaged as **one** bioimage.io network: the members"
        + (f", {len(views)} test-time views (" + ", ".join(views) + ")" if len(views) > 1 else "")
        + " and the sigmoid run inside it, and it returns two images:",
        "",
        "* `probability`: the mean foreground probability over members x views (0 to 1); foreground is "
        f"`probability > {meta.get('threshold', 0.5)}`;",
        f"* `uncertainty`: the {UNCERTAINTY_DEFINITIONS[measure]}. Its scale is absolute (never rescaled per "
        "image), so values of different images compare directly.",
        "",
        "## Data, experts and consensus",
        "",
        f"* Training images: {n_images if n_images is not None else 'n/a'}"
        + (f" ({prov['lab']})" if prov.get("lab") else "")
        + (f"; ids {', '.join(ids[:40])}{' ...' if len(ids) > 40 else ''}" if ids else "") + ".",
        f"* Experts: {', '.join(prov['experts']) if prov.get('experts') else 'n/a'}.",
        f"* Training targets (consensus): {prov.get('consensus') or train.get('targets') or 'n/a'}.",
        f"* Source: {prov.get('source', 'n/a')}; recipe: {prov.get('recipe', 'n/a')}.",
        "",
        "## Training",
        "",
        f"* Architecture: U-Net, depth {cfg.get('depth')} (poolings), {cfg.get('base_channels')} base channels, "
        f"{cfg.get('norm')} normalisation, {arch.get('parameters', 'n/a')} parameters per member; receptive-field "
        f"radius {arch.get('receptive_field_radius', 'n/a')} px, halo {arch.get('halo')} px.",
        f"* Members: {k} ({train.get('split', 'n/a')} split, seed {train.get('seed', 'n/a')}); patch "
        f"{train.get('patch_size', 'n/a')} px, batch {train.get('batch_size', 'n/a')}, learning rate "
        f"{train.get('learning_rate', 'n/a')}, time budget {train.get('max_minutes', 'n/a')} min, "
        f"iterations per member: {', '.join(str(m.get('iterations', 'n/a')) for m in members)}"
        + (f"; training time {total_s / 60:.1f} min in total." if total_s else "."),
        f"* Normalisation: per image, ({norm.get('min_percentile')}, {norm.get('max_percentile')}) percentiles "
        f"to (0, 1) with eps {norm.get('eps')}, computed over the whole image before any padding or tiling "
        "(bioimage.io `scale_range` over y, x; deepImageJ does the same).",
        "",
        "## Validation",
        "",
        "Every member was selected on its held-out images of the training lab (Dice and ROI-F1 of "
        "Segebarth et al. 2020 against the consensus):",
        "",
        "| member | seed | validation images | Dice | ROI-F1 |",
        "|---|---|---|---|---|",
    ]
    for m in members:
        nval = len(m.get("val_ids") or (m.get("split") or {}).get("val", []) or m.get("val_per_image") or []) \
            or m.get("val_images") or val_of.get(int(m.get("index", -1)))
        lines.append(f"| {m.get('index')} | {m.get('seed', 'n/a')} | {nval or 'n/a'} | {_fmt(_num(m.get('val_dice')))} "
                     f"| {_fmt(_num(m.get('val_roi_f1')))} |")
    lines.append("")
    if validation and validation.get("labs"):
        lines += [
            "Held-out labs (other labs and microscopes, never seen in training), mean over images against "
            "their published consensus (est_GT), with every expert of that lab scored the same way (the "
            "experts are part of that consensus, which favours them):",
            "",
            "| lab | images | ensemble ROI-F1 | ensemble Dice | median expert ROI-F1 | median expert Dice "
            "| average member ROI-F1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for lab, e in validation["labs"].items():
            ens = e["means"]["ensemble"]
            lines.append(
                f"| {lab} | {e.get('images') or 'n/a'} | {_fmt(ens['roi_f1'])} | {_fmt(ens['dice'])} | "
                f"{_fmt(e['median_expert_roi_f1'])} | {_fmt(e['median_expert_dice'])} | "
                f"{_fmt(e['average_member_roi_f1'])} |"
            )
        lines.append("")
        for lab, e in validation["labs"].items():
            experts = sorted(n for n in e["means"] if n.startswith("expert"))
            if experts:
                lines.append(f"{lab}, experts (ROI-F1 / Dice): " + "; ".join(
                    f"{x} {_fmt(e['means'][x]['roi_f1'])} / {_fmt(e['means'][x]['dice'])}" for x in experts) + ".")
        lines.append("")
    else:
        lines += ["No held-out-lab scores were given when this package was made.", ""]
    lines += [
        "To validate it on your own annotated images: predict them (below), threshold `probability`, and "
        "compare with your experts' consensus (`fiji-consensus consensus`, `fiji-consensus agreement "
        "--reference`).",
        "",
        "## How to run it",
        "",
        f"**deepImageJ** (Fiji): *Plugins > DeepImageJ > DeepImageJ Install Model*, choose *Private model* and "
        f"the file `{pkg}`; open a single-channel image and run *DeepImageJ Run* with this model (weights: "
        "torchscript or onnx). The preprocessing (percentile normalisation) is in the package; the outputs "
        f"open as two images (`probability`, `uncertainty`). Objects: threshold `probability` at "
        f"{meta.get('threshold', 0.5)} and drop objects smaller than "
        f"{(train.get('min_size') or 0)} px (*Analyze Particles*).",
        "",
        "**bioimageio.core** (Python, offline). Use its blockwise mode, which normalises the whole, unpadded "
        "image first and then tiles it, as deepImageJ and fiji-consensus do; its default whole-image mode "
        "pads the image by the halo *before* the percentile normalisation, which shifts the percentiles and "
        "changes probabilities near the threshold:",
        "",
        "```bash",
        f"bioimageio test {pkg}",
        f"bioimageio predict {pkg} --inputs image.tif --outputs 'out_{{output_id}}.tif' --blockwise 10",
        "```",
        "",
        "In Python: `bioimageio.core.predict(model=..., inputs=..., blocksize_parameter=10)` or "
        "`create_prediction_pipeline(...).predict_sample_with_blocking(sample)`.",
        "",
        "**fiji-consensus** (probability, uncertainty, objects, RoiSets and Fiji overlays per image):",
        "",
        "```bash",
        f"fiji-consensus predict IMAGES/ --model {pkg} --out predictions/{Path(pkg).stem}",
        "```",
        "",
        "## Intended use and limits",
        "",
        "* Intended use: segmentation of the structures annotated in the training images, in images of the "
        "same kind (stain, magnification, microscope) and as a starting point that experts correct.",
        "* Other labs, stains, magnifications or microscopes can give lower scores (see the held-out labs "
        "above); check a few images against expert annotations first. High `uncertainty` marks regions and "
        "images to review (`fiji-consensus predict` ranks images by it).",
        "* Single-channel 2-D images only; the input is normalised per image, so images must contain some "
        "background and some signal.",
        "",
        "## Package",
        "",
        f"* Weights: {', '.join(weight_formats)}, all made from the same members (ONNX: opset {ONNX_OPSET}, "
        f"IR version <= {ONNX_MAX_IR_VERSION}, for deepImageJ; TorchScript and state dict load in PyTorch "
        f">= {PYTORCH_MIN_VERSION}; the TorchScript returns the list [probability, uncertainty]).",
        "* Speed on CPU: the ONNX weights run 2 to 3 times faster than the TorchScript weights of the same "
        "network (tests/benchmarks/bench_old_runtimes.py). The time goes to PyTorch's convolutions for these channel "
        "counts, not to TorchScript or the views inside (eager PyTorch is as slow; freezing and "
        "`optimize_for_inference` gain little), so choose the onnx weights in deepImageJ on a CPU.",
        f"* Axes batch, channel, y, x; tiles of `{2 * int(arch.get('halo', 0)) + 2 ** int(cfg.get('depth', 0))} "
        f"+ n * {2 ** int(cfg.get('depth', 0))}` px, output halo {arch.get('halo')} px.",
        f"* Made with fiji-consensus {__version__} from ensemble.json (format {meta.get('format_version')}).",
        "",
        "## Citation and licence",
        "",
        f"* {CITATION_TEXT}. doi:{CITATION_DOI}",
    ]
    if training_data:
        people = "; ".join(a["name"] + (f" ({a['affiliation']})" if a.get("affiliation") else "")
                           for a in training_data.get("authors") or [])
        lines.append(f"* Training data: {training_data.get('name')} ({training_data.get('license', 'n/a')})"
                     + (f"; {people} and others." if people else "."))
    if authors:
        lines.append("* Model authors: " + "; ".join(
            a.get("name", "") + "".join(f", {k} {a[k]}" for k in ("affiliation", "github_user", "orcid") if a.get(k))
            for a in authors) + ".")
    lines.append("")
    return _add_notes("\n".join(lines), notes or {})


def read_card_notes(path: str | os.PathLike) -> dict[str, str]:
    """Hand-written additions to a model card: a markdown file of ``## Section title`` blocks (text before
    the first heading is ignored, so the file can say what it is), as :func:`model_card`'s ``notes``."""
    text = Path(path).read_text(encoding="utf-8")
    notes: dict[str, str] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            if title in notes:
                raise ValueError(f"card notes {path}: section {title!r} appears twice")
            notes[title] = ""
        elif line.startswith("# "):
            raise ValueError(f"card notes {path}: use '## Section' headings (got {line!r})")
        elif title is not None:
            notes[title] += line + "\n"
    return {k: v.strip() for k, v in notes.items() if v.strip()}


def _add_notes(card: str, notes: dict[str, str]) -> str:
    """``card`` with each note appended at the end of its ``## section``; unknown sections are an error."""
    lines = card.split("\n")
    heads = {ln[3:].strip(): i for i, ln in enumerate(lines) if ln.startswith("## ")}
    bad = sorted(set(notes) - set(heads))
    if bad:
        raise ValueError(f"card notes for unknown section(s) {bad}; the card's sections are {list(heads)}")
    for title in sorted(notes, key=lambda t: -heads[t]):  # from the bottom up, so indices stay valid
        start = heads[title]
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = ["", notes[title].strip()]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------- packaging


def _build_net(ensemble: Any, *, views: Sequence[str], measure: str) -> Any:
    from .nn.ensemble_net import EnsembleNet

    cfg = dict(ensemble.metadata["architecture"]["config"])
    net = EnsembleNet(cfg, n_members=len(ensemble.members), views=tuple(views), measure=measure)
    for dst, src in zip(net.members, ensemble.members):
        dst.load_state_dict(src.state_dict())
    return net.eval()


def _export_torchscript(net: Any, example: Any, path: Path) -> None:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notices about TorchScript itself
        # strict=False: forward returns a list (what deepImageJ's engine reads), fixed in length
        traced = torch.jit.trace(net, example, check_trace=False, strict=False)
        torch.jit.save(traced, str(path))


def _export_onnx(net: Any, example: Any, path: Path) -> tuple[int, int]:
    import torch

    dyn = {0: "batch", 2: "y", 3: "x"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter is deprecated in torch 2.x, on purpose here
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["probability", "uncertainty"],
            dynamic_axes={"input": dyn, "probability": dyn, "uncertainty": dyn},
            do_constant_folding=True,
        )
    ir, opset = onnx_versions(path)
    if ir > ONNX_MAX_IR_VERSION or opset > ONNX_OPSET:
        raise RuntimeError(
            f"the ONNX export has IR version {ir} and opset {opset}; deepImageJ needs IR <= "
            f"{ONNX_MAX_IR_VERSION} and opset <= {ONNX_OPSET}"
        )
    return ir, opset


def _training_data(spec: str | os.PathLike | dict[str, Any] | None) -> dict[str, Any] | None:
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


def _dataset_doc(data: dict[str, Any]) -> str:
    """``training_data.md`` of a package: what the training data is, who made it, its licence."""
    people = "\n".join(f"* {a['name']}" + (f", {a['affiliation']}" if a.get("affiliation") else "")
                       for a in data["authors"])
    lines = [f"# {data['name']}", "", data.get("description", ""), "", "## Authors", "", people, "",
             f"Licence: {data.get('license', 'n/a')}.", ""]
    if data.get("name") == SEGEBARTH2020_DATASET["name"]:
        lines += ["## Citation", "", f"{CITATION_TEXT}. doi:{CITATION_DOI}", ""]
    return "\n".join(lines)


def _dataset_descr(data: dict[str, Any], doc: Path | None = None) -> Any:
    """A bioimage.io dataset description (inline ``training_data``) from :func:`_training_data`'s dict; it
    cites Segebarth et al. 2020 when it is their data (the only data fiji-consensus names itself)."""
    from bioimageio.spec.dataset import v0_3 as dv
    from bioimageio.spec.model import v0_5 as bm

    cite = [bm.CiteEntry(text=CITATION_TEXT, doi=bm.Doi(CITATION_DOI))] if data is SEGEBARTH2020_DATASET or \
        data.get("name") == SEGEBARTH2020_DATASET["name"] else []
    return dv.DatasetDescr(
        name=data["name"], description=data.get("description", ""),
        authors=[bm.Author(**a) for a in data["authors"]], cite=cite,
        license=bm.LicenseId(data["license"]) if data.get("license") else None,
        tags=list(data.get("tags") or []),
        documentation=bm.FileDescr(source=doc) if doc is not None else None,
    )


def _read_sample_image(image: Any, channel: int | None) -> tuple[np.ndarray, str]:
    from .predict import read_input

    if image is None:
        from .datasets import sample_dir

        path = sample_dir() / "images" / "0001.png"
        arr, _ = read_input(path)
        return arr, "bundled sample lab-wue1/0001 (Segebarth et al. 2020)"
    if isinstance(image, (str, os.PathLike)):
        arr, _ = read_input(Path(image), channel=channel)
        return arr, Path(image).name
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image must be a 2-D array or an image file; got an array of shape {arr.shape}")
    return arr, "array"


def package_ensemble(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    tta: str | Sequence[str] = "flips",
    uncertainty: str = "entropy",
    image: Any = None,
    channel: int | None = None,
    tile: int = 256,
    validation: str | os.PathLike | None = None,
    authors: Sequence[str | dict[str, str]] = ("fiji-consensus",),
    license: str = "MIT",
    tags: Sequence[str] = (),
    version: str = "0.1.0",
    weight_formats: Sequence[str] = WEIGHT_FORMATS,
    card: str | os.PathLike | None = None,
    overwrite: bool = False,
    test: bool = False,
    maintainers: Sequence[str | dict[str, str]] = (),
    training_data: str | os.PathLike | dict[str, Any] | None = None,
    card_notes: str | os.PathLike | dict[str, str] | None = None,
) -> dict[str, Any]:
    """Package an ensemble folder (or one of our packages) as one bioimage.io model (a ``.zip``); see the
    module docstring.

    Parameters
    ----------
    model : path-like
        The ensemble folder (``ensemble.json`` + ``member_<k>.pt``).
    out : path-like
        The package to write (``.zip``); refused if it exists unless ``overwrite``. Written atomically.
    name, description : str, optional
        Model name (default: the folder name) and a description for the card.
    tta : str or sequence of str
        Test-time views inside the network: ``"none"``, ``"flips"`` (4 views), ``"dihedral"`` (8), or a
        list (:func:`fiji_consensus.nn.predict.resolve_views`). Each view costs one pass of every member.
    uncertainty : str
        The measure of the ``uncertainty`` output (:data:`fiji_consensus.uncertainty.MEASURES`).
    image : path-like or (Y, X) array, optional
        The image that gives the test tensors, the TIFF sample and the cover (a real crop of it); default
        the bundled lab-wue1 sample image 0001. ``channel`` picks a channel of a multi-channel file.
    tile : int
        Edge of the test crop (rounded to a valid tile size of the network).
    validation : path-like, optional
        Held-out scores (json; see :func:`_read_validation`); default ``validation.json`` or
        ``bench_results.json`` in the model folder when present.
    authors, maintainers :
        People (:func:`parse_person`: ``"Name; affiliation=...; github_user=...; orcid=..."``); maintainers
        need a GitHub user, which bioimageio.spec verifies online (offline validation fails on users it does
        not know).
    license, tags, version :
        Package metadata (license: an SPDX id); :data:`DEFAULT_TAGS` are always added.
    training_data : str, path-like or dict, optional
        The training data as a bioimage.io dataset description: a name of :data:`TRAINING_DATA`
        (``"segebarth2020"``), a JSON file or a dict (name, description, authors, license, tags).
    card_notes : path-like or dict, optional
        Hand-written additions to the model card by section (:func:`read_card_notes`).
    weight_formats : sequence of str
        Subset of :data:`WEIGHT_FORMATS`; ``pytorch_state_dict`` is always written (the parent of the others).
    card : path-like, optional
        Also write the model card (the package's documentation) here, e.g. ``model_zoo/<name>/README.md``.
    overwrite : bool
        Replace an existing package (and card).
    test : bool
        Run :func:`test_package` on the written package and put the result in the summary.

    Returns
    -------
    dict
        ``ok``, ``out``, ``sha256``, ``bytes``, ``name``, ``members``, ``views``, ``measure``,
        ``weight_formats``, ``onnx`` (IR version, opset), ``test_shape``, ``halo``, ``seconds`` (and
        ``test`` when ``test=True``; ``ok`` is then the test's result).

    Examples
    --------
    >>> package_ensemble("models/wue1", "model_zoo/wue1/wue1.zip", test=True)["ok"]     # doctest: +SKIP
    True
    """
    _require_zoo()
    import torch
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bm

    from ._atomic import check_writable
    from .nn.data import apply_percentiles, compute_percentiles
    from .nn.ensemble import load_ensemble
    from .nn.predict import resolve_views

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ValueError(f"the package must be a .zip file; got {out}")
    check_writable(out, overwrite=overwrite)
    if out.exists() and not _made_by_us(out):  # --overwrite replaces only a package we wrote
        raise FileExistsError(
            f"{out} exists and is not a package made by fiji-consensus; it is never replaced, also not with "
            "--overwrite: choose another file"
        )
    if card is not None:
        check_writable(card, overwrite=overwrite)
    if uncertainty not in MEASURES:
        raise ValueError(f"uncertainty must be one of {MEASURES}; got {uncertainty!r}")
    bad = [w for w in weight_formats if w not in WEIGHT_FORMATS + TF_WEIGHT_FORMATS]
    if bad or not weight_formats:
        raise ValueError(f"weight_formats must be a non-empty subset of {WEIGHT_FORMATS + TF_WEIGHT_FORMATS}; "
                         f"got {list(weight_formats)}")
    formats = [w for w in WEIGHT_FORMATS if w in weight_formats or w == "pytorch_state_dict"]
    if any(w in TF_WEIGHT_FORMATS for w in weight_formats):  # the keras extra
        from .keras.export import tensorflow_formats

        formats += tensorflow_formats(weight_formats, measure=uncertainty)
    views = resolve_views(tta)
    model_dir = Path(model)
    from_package = is_package(model_dir) and not (model_dir.is_dir() and (model_dir / "ensemble.json").is_file())
    if from_package:  # repackaging one of our packages: its members, metadata and scores
        ens = ensemble_from_package(model_dir)
    else:
        ens = load_ensemble(model_dir)
    roots = [Path(__file__).resolve().parents[1], Path.cwd()]
    prov = dict(ens.metadata.get("provenance") or {})
    if from_package:  # where the members came from, not where that file lay on this machine
        prov.pop("package", None)
        prov["repackaged_from"] = model_dir.name
    meta = dict(ens.metadata, provenance=_portable(prov, roots))
    people = [parse_person(a) for a in authors]
    if not people:
        raise ValueError("give at least one author")
    keepers = [parse_person(m, maintainer=True) for m in maintainers]
    data_descr = _training_data(training_data)
    if isinstance(card_notes, (str, os.PathLike)):
        card_notes = read_card_notes(card_notes)
    cfg = dict(meta["architecture"]["config"])
    if int(cfg.get("in_channels", 1)) != 1 or int(cfg.get("out_channels", 1)) != 1:
        raise ValueError(f"only single-channel ensembles can be packaged; this one has config {cfg}")
    if meta["normalization"].get("method") != "scale_range":
        raise ValueError(f"unsupported normalisation {meta['normalization']} (expected scale_range)")
    name = _check_name(name, model_dir)
    depth, halo = ens.depth, int(ens.halo)
    if from_package and not validation and meta.get("validation"):
        val = _read_validation(Path(model_dir.name), model_dir, data=meta["validation"])
    else:
        val = _read_validation(Path(validation) if validation else None, ens.path or model_dir)
    img, image_source = _read_sample_image(image, channel)
    smin, step, size = _test_size(depth, halo, int(tile), min(img.shape))
    y0, x0 = _choose_crop(img, size)
    crop = img[y0 : y0 + size, x0 : x0 + size]
    norm = ens.normalization
    lo, hi = compute_percentiles(crop, low=norm["min_percentile"], high=norm["max_percentile"])
    x_in = crop.astype(np.float32)[None, None]
    x_norm = apply_percentiles(crop, lo, hi, eps=norm["eps"])[None, None]
    net = _build_net(ens, views=views, measure=uncertainty)
    with torch.no_grad():
        p_t, u_t = net(torch.from_numpy(np.ascontiguousarray(x_norm)))
    prob, unc = p_t.numpy().astype(np.float32), u_t.numpy().astype(np.float32)
    threshold = float(ens.threshold)
    min_size = int((meta.get("training") or {}).get("min_size", 0) or 0)
    members = [m for m in meta["members"] if int(m["index"]) in ens.indices]

    out.parent.mkdir(parents=True, exist_ok=True)
    from ._atomic import remove_temporary

    remove_temporary(out.parent, recursive=False, dirs_prefix=out.stem)  # left by killed runs of this package
    work = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        import tifffile

        np.save(work / "test_input.npy", x_in)
        np.save(work / "test_probability.npy", prob)
        np.save(work / "test_uncertainty.npy", unc)
        tifffile.imwrite(work / "sample_input.tif", crop.astype(np.float32))
        tifffile.imwrite(work / "sample_probability.tif", prob[0, 0])
        tifffile.imwrite(work / "sample_uncertainty.tif", unc[0, 0])
        _write_png(work / "cover.png", _cover(crop, prob[0, 0], unc[0, 0], measure=uncertainty,
                                              threshold=threshold, min_size=min_size))
        doc = model_card(meta, name=name, measure=uncertainty, views=views, validation=val,
                         description=description, package_file=out.name, weight_formats=formats,
                         notes=card_notes, authors=people, training_data=data_descr)
        if absolute_paths(doc):
            raise ValueError(f"the model card would name absolute paths of this machine: {absolute_paths(doc)}")
        (work / "documentation.md").write_text(doc, encoding="utf-8")
        if data_descr:
            (work / "training_data.md").write_text(_dataset_doc(data_descr), encoding="utf-8")
        from .nn.ensemble_net import architecture_source

        (work / "ensemble_net.py").write_text(architecture_source(), encoding="utf-8")
        torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                   work / "weights.pt")
        example = torch.from_numpy(np.ascontiguousarray(x_norm))
        onnx_info = None
        if "torchscript" in formats:
            _export_torchscript(net, example, work / "weights_torchscript.pt")
        if "onnx" in formats:
            onnx_info = _export_onnx(net, example, work / "weights.onnx")

        torch_version = bm.Version(PYTORCH_MIN_VERSION)  # the oldest that loads them, not the one running
        kwargs = {"unet_config": cfg, "n_members": len(ens.members), "views": list(views), "measure": uncertainty}
        weights: dict[str, Any] = {
            "pytorch_state_dict": bm.PytorchStateDictWeightsDescr(
                source=work / "weights.pt",
                architecture=bm.ArchitectureFromFileDescr(
                    source=work / "ensemble_net.py", callable=bm.Identifier("EnsembleNet"), kwargs=kwargs
                ),
                pytorch_version=torch_version,
            )
        }
        if "torchscript" in formats:
            weights["torchscript"] = bm.TorchscriptWeightsDescr(
                source=work / "weights_torchscript.pt", pytorch_version=torch_version, parent="pytorch_state_dict"
            )
        if "onnx" in formats:
            weights["onnx"] = bm.OnnxWeightsDescr(
                source=work / "weights.onnx", opset_version=ONNX_OPSET, parent="pytorch_state_dict"
            )
        if any(w in TF_WEIGHT_FORMATS for w in formats):  # the same members rebuilt in Keras
            from .keras.export import package_weights

            weights.update(package_weights(net, work, x_norm, [w for w in formats if w in TF_WEIGHT_FORMATS]))
        in_id = bm.TensorId("input")

        def space_in(axis: str) -> Any:
            return bm.SpaceInputAxis(id=bm.AxisId(axis), size=bm.ParameterizedSize(min=smin, step=step))

        def space_out(axis: str) -> Any:
            return bm.SpaceOutputAxisWithHalo(
                id=bm.AxisId(axis), size=bm.SizeReference(tensor_id=in_id, axis_id=bm.AxisId(axis)), halo=halo
            )

        inp = bm.InputTensorDescr(
            id=in_id,
            description="single-channel 2-D image (any intensity range; normalised per image inside)",
            axes=[bm.BatchAxis(), bm.ChannelAxis(channel_names=[bm.Identifier("image")]), space_in("y"),
                  space_in("x")],
            test_tensor=bm.FileDescr(source=work / "test_input.npy"),
            sample_tensor=bm.FileDescr(source=work / "sample_input.tif"),
            data=bm.IntervalOrRatioDataDescr(type="float32"),
            pad=bm.ReflectPadding(mode="reflect"),  # mode given explicitly, else it is not serialised
            preprocessing=[
                bm.ScaleRangeDescr(
                    kwargs=bm.ScaleRangeKwargs(
                        axes=[bm.AxisId("y"), bm.AxisId("x")],
                        min_percentile=float(norm["min_percentile"]),
                        max_percentile=float(norm["max_percentile"]),
                        eps=float(norm["eps"]),
                    )
                )
            ],
        )
        rng = float(MEASURE_RANGE[uncertainty])
        outputs = [
            bm.OutputTensorDescr(
                id=bm.TensorId("probability"),
                description="mean foreground probability over members x views",
                axes=[bm.BatchAxis(), bm.ChannelAxis(channel_names=[bm.Identifier("foreground")]),
                      space_out("y"), space_out("x")],
                test_tensor=bm.FileDescr(source=work / "test_probability.npy"),
                sample_tensor=bm.FileDescr(source=work / "sample_probability.tif"),
                data=bm.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            ),
            bm.OutputTensorDescr(
                id=bm.TensorId("uncertainty"),
                description=f"{uncertainty} over members x views, absolute scale"[:128],
                axes=[bm.BatchAxis(), bm.ChannelAxis(channel_names=[bm.Identifier(uncertainty)]),
                      space_out("y"), space_out("x")],
                test_tensor=bm.FileDescr(source=work / "test_uncertainty.npy"),
                sample_tensor=bm.FileDescr(source=work / "sample_uncertainty.tif"),
                data=bm.IntervalOrRatioDataDescr(type="float32", range=(0.0, rng)),
            ),
        ]
        fc_config = {
            "tool": "fiji-consensus",
            "version": __version__,
            "threshold": threshold,
            "min_size": min_size,
            "uncertainty": {"measure": uncertainty, "definition": UNCERTAINTY_DEFINITIONS[uncertainty],
                            "range": [0.0, rng], "samples": "members x views"},
            "views": list(views),
            "members": [
                {**{k: m.get(k) for k in ("index", "seed", "sha256", "iterations", "best_iteration", "val_dice",
                                          "val_roi_f1", "selected", "seconds", "val_images") if k in m},
                 **({"val_images": len(m["val_ids"])} if m.get("val_ids") else {})}
                for m in members
            ],
            "normalization": {k: norm.get(k) for k in ("method", "mode", "min_percentile", "max_percentile",
                                                       "eps", "formula")},
            "architecture": {k: meta["architecture"].get(k) for k in ("name", "config", "parameters",
                                                                      "receptive_field_radius", "halo")},
            "training": meta.get("training"),
            "domain": meta.get("domain"),
            "provenance": meta.get("provenance"),
            "ensemble_json_format_version": meta.get("format_version"),
            "validation": val,
            "test_tensors": {"image": image_source, "crop": [int(y0), int(x0), int(size), int(size)],
                             "percentiles": [lo, hi]},
        }
        from .nn.ensemble import json_safe

        n_params = sum(int(p.numel()) for p in net.parameters())
        with _quiet_bioimageio():  # bioimageio.spec logs FAIR-compliance hints to stderr
            descr = bm.ModelDescr(
                name=name,
                description=(description or f"U-Net ensemble ({len(ens.members)} members, {len(views)} views) "
                             "trained on multi-expert consensus with fiji-consensus; outputs probability and "
                             f"{uncertainty}")[:1024],
                authors=[bm.Author(**a) for a in people],
                maintainers=[bm.Maintainer(**m) for m in keepers],
                cite=[bm.CiteEntry(text=CITATION_TEXT, doi=bm.Doi(CITATION_DOI))],
                license=bm.LicenseId(license),
                tags=sorted({*DEFAULT_TAGS, *tags}),
                training_data=_dataset_descr(data_descr, work / "training_data.md") if data_descr else None,
                version=bm.Version(version),
                documentation=bm.FileDescr(source=work / "documentation.md"),
                covers=[bm.FileDescr(source=work / "cover.png")],
                inputs=[inp],
                outputs=outputs,
                weights=bm.WeightsDescr(**weights),
                config={
                    "bioimageio": {
                        "reproducibility_tolerance": [_TOLERANCE],
                        "architecture_type": "U-Net ensemble",
                        "architecture_description": f"{len(ens.members)} U-Nets x {len(views)} test-time views "
                        "averaged inside one network; outputs mean probability and an uncertainty map",
                        "task": "semantic segmentation with uncertainty",
                        "model_parameter_count": n_params,
                    },
                    "fiji_consensus": json_safe(_portable(fc_config, roots)),
                },
            )
        with _quiet_bioimageio():
            tmp_zip = save_bioimageio_package(descr, output_path=work / out.name)
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} appeared while it was being written; not replacing it")
        os.replace(tmp_zip, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if card is not None:
        from ._atomic import atomic_open

        with atomic_open(card, "w", overwrite=overwrite) as fh:
            fh.write(doc)
    summary: dict[str, Any] = {
        "ok": True,
        "command": "package",
        "out": str(out.resolve()),
        "sha256": _sha256(out),
        "bytes": out.stat().st_size,
        "name": name,
        "members": len(ens.members),
        "views": list(views),
        "measure": uncertainty,
        "weight_formats": formats,
        "onnx": {"ir_version": onnx_info[0], "opset": onnx_info[1]} if onnx_info else None,
        "test_shape": [1, 1, size, size],
        "tile_min": smin,
        "tile_step": step,
        "halo": halo,
        "validation": val is not None,
        "seconds": time.perf_counter() - t0,
    }
    if test:
        res = test_package(out)
        summary["test"] = res
        summary["ok"] = bool(res["ok"])
        if not res["ok"]:
            summary["error"] = f"bioimageio test failed: {res['error']}"
    return summary


def _made_by_us(path: Path) -> bool:
    """Whether ``path`` is a bioimage.io package zip written by :func:`package_ensemble`."""
    try:
        return bool(((_read_rdf(path).get("config") or {}).get("fiji_consensus")))
    except Exception:  # not a zip, no rdf, unreadable YAML: not ours
        return False


def run_package(config: Any) -> dict[str, Any]:
    """Run :func:`package_ensemble` from a :class:`fiji_consensus.config.PackageConfig` (the CLI's job)."""
    return package_ensemble(
        config.model,
        config.out,
        name=config.name,
        description=config.description,
        tta=config.tta,
        uncertainty=config.uncertainty,
        image=config.image,
        channel=config.channel,
        tile=config.tile,
        validation=config.validation,
        authors=tuple(config.authors),
        license=config.license,
        tags=tuple(config.tags),
        version=config.version,
        weight_formats=tuple(config.weight_formats),
        card=config.card,
        overwrite=config.overwrite,
        test=config.test,
        maintainers=tuple(getattr(config, "maintainers", ()) or ()),
        training_data=getattr(config, "training_data", None),
        card_notes=getattr(config, "card_notes", None),
    )


# --------------------------------------------------------------------------------------------- testing


def test_package(
    source: str | os.PathLike, *, weight_format: str | None = None, devices: Sequence[str] = ("cpu",)
) -> dict[str, Any]:
    """``bioimageio test`` of a package (bioimageio.core's ``test_model``), offline.

    Validates the description, reproduces the test outputs from the test inputs with every weight format
    (or ``weight_format``) within the package's tolerance, and runs other tile sizes.

    Returns
    -------
    dict
        ``ok`` (status ``passed``), ``status``, ``weight_formats`` (tested), ``errors`` (up to 20 messages)
        and ``error`` (the first three, joined).
    """
    _require_zoo()
    from bioimageio.core import test_model

    from .keras._backend import bioimageio_scratch  # TensorFlow weights unzip into the working directory

    with _quiet_bioimageio(), warnings.catch_warnings(), bioimageio_scratch():
        warnings.simplefilter("ignore")
        summary = test_model(str(Path(source).resolve()), weight_format=weight_format, devices=list(devices))
    errors: list[str] = []
    tested: set[str] = set()
    for d in summary.details:
        loc = tuple(str(x) for x in (d.loc or ()))
        if len(loc) > 1 and loc[0] == "weights":
            tested.add(loc[1])
        for e in d.errors:
            errors.append(f"{d.name}: {e.msg}".strip()[:1000])
    return {
        "ok": summary.status == "passed",
        "status": str(summary.status),
        "weight_formats": sorted(tested),
        "errors": errors[:20],
        "error": "; ".join(errors[:3]) if errors else None,
    }


test_package.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --------------------------------------------------------------------------------------------- running packages


def is_package(path: str | os.PathLike) -> bool:
    """True for a bioimage.io package: a ``.zip`` file, an ``rdf.yaml``/``bioimageio.yaml`` file or a folder
    holding one (an ensemble folder holds ``ensemble.json`` instead)."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".zip" or p.name.endswith(("rdf.yaml", "bioimageio.yaml"))
    if p.is_dir():
        return any((p / n).is_file() for n in ("rdf.yaml", "bioimageio.yaml"))
    return p.suffix.lower() == ".zip"


def _package_source(path: Path) -> Path:
    if path.is_dir():
        for n in ("bioimageio.yaml", "rdf.yaml"):
            if (path / n).is_file():
                return path / n
    return path


_VIEW_NP = {
    "identity": (lambda a: a, lambda a: a),
    "flip_y": (lambda a: a[::-1], lambda a: a[::-1]),
    "flip_x": (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    "rot180": (lambda a: a[::-1, ::-1], lambda a: a[::-1, ::-1]),
    "rot90": (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
    "rot270": (lambda a: np.rot90(a, -1), lambda a: np.rot90(a, 1)),
    "transpose": (lambda a: a.T, lambda a: a.T),
    "antitranspose": (lambda a: a[::-1, ::-1].T, lambda a: a.T[::-1, ::-1]),
}


@dataclass
class Package:
    """A loaded bioimage.io model package, ready to predict 2-D single-channel images.

    Use :func:`load_package`; call :meth:`close` (or use it as a context manager) to free the runtime.

    Attributes
    ----------
    path : Path
        The package (zip, rdf.yaml or folder).
    name : str
        The model's name.
    weight_format : str
        The weights that run (onnx, torchscript or pytorch_state_dict).
    executes_code : bool
        True when the weights are ``pytorch_state_dict``: the package's architecture source runs in this
        Python process.
    ours : bool
        Made by fiji-consensus (has ``config.fiji_consensus``): outputs ``probability`` and ``uncertainty``.
    measure : str or None
        The measure of our package's ``uncertainty`` output.
    probability_output, uncertainty_output : str, str or None
        Output tensor ids used.
    output_channel : int
        Channel of the probability output used (foreign packages).
    threshold, min_size :
        Defaults from the package (ours), else 0.5 and 0.
    """

    path: Path
    name: str
    weight_format: str
    executes_code: bool
    ours: bool
    measure: str | None
    probability_output: str
    uncertainty_output: str | None
    output_channel: int
    threshold: float
    min_size: int
    sha256: str
    descr: Any = field(repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        """Our package's ``config.fiji_consensus`` (normalisation, training range of the image statistics,
        ...); empty for foreign packages."""
        cfg = getattr(self.descr, "config", None)
        fc = cfg.get("fiji_consensus") if isinstance(cfg, dict) else getattr(cfg, "fiji_consensus", None)
        return dict(fc) if isinstance(fc, dict) else {}
    pipeline: Any = field(repr=False)
    _param_axes: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def close(self) -> None:
        if self.pipeline is not None:
            with contextlib.suppress(Exception):
                self.pipeline.unload()
            self.pipeline = None

    def __enter__(self) -> Package:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _ns(self, shape: tuple[int, int], tile: int) -> dict[Any, int]:
        """Block-size parameters: the largest block (halo included) that fits both the image and ``tile``
        (bioimageio.core needs blocks no larger than the image)."""
        from bioimageio.core.common import MemberId
        from bioimageio.spec.model.v0_5 import AxisId

        ns = {}
        inp = self.descr.inputs[0]
        for axis, size in zip(("y", "x"), shape):
            if axis in self._param_axes:
                smin, step = self._param_axes[axis]
                ns[(MemberId(str(inp.id)), AxisId(axis))] = max(0, (min(int(size), int(tile)) - smin) // step)
        return ns

    def predict(
        self, image: np.ndarray, *, tile: int = 1152, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(probability, uncertainty or None)`` of a 2-D image, each ``(Y, X)`` float32, tiled by
        bioimageio.core with the package's halo in blocks of at most ``tile`` pixels (halo included);
        ``progress`` shows bioimageio.core's bar over blocks.

        The package's preprocessing (e.g. percentile normalisation) runs first, on the whole unpadded image,
        as in deepImageJ (JDLL) and :func:`fiji_consensus.nn.predict.predict`; only then is the image
        mirror-padded (images smaller than the package's smallest tile) and tiled. bioimageio.core's
        blockwise mode does the same for images of a valid size; its whole-image mode would pad by the halo
        first and shift the percentiles.
        """
        from bioimageio.core import Tensor
        from bioimageio.core.common import MemberId
        from bioimageio.core.digest_spec import create_sample_for_model

        if self.pipeline is None:
            raise RuntimeError(f"package {self.name} is closed")
        arr = np.asarray(image, dtype=np.float32)
        shape = arr.shape
        pad = {a: max(0, self._param_axes.get(a, (0, 1))[0] - n) for a, n in zip(("y", "x"), shape)}
        import xarray as xr

        inp = self.descr.inputs[0]
        # a DataArray with every axis of the input (a bare numpy array must already have a valid tile size)
        dims = [str(a.id) if a.type in ("space", "channel") else "batch" for a in inp.axes]
        expand = [i for i, a in enumerate(inp.axes) if a.type in ("batch", "channel")]
        data = np.expand_dims(np.ascontiguousarray(arr), axis=tuple(expand)) if expand else arr
        da = xr.DataArray(data, dims=dims)
        mid = MemberId(str(inp.id))
        sample = create_sample_for_model(self.descr, inputs={mid: da}, sample_id="image")
        with _quiet_bioimageio(), warnings.catch_warnings(), _no_block_progress(progress):
            warnings.simplefilter("ignore")
            self.pipeline.apply_preprocessing(sample)  # over the whole unpadded image
            if any(pad.values()):
                t = sample.members[mid].data
                widths = [(0, pad.get(str(d), 0)) for d in t.dims]
                sample.members[mid] = Tensor.from_xarray(
                    xr.DataArray(np.pad(np.asarray(t.values), widths, mode="symmetric"), dims=t.dims))
                arr = np.pad(arr, [(0, pad["y"]), (0, pad["x"])], mode="symmetric")
            if self._param_axes:
                res = self.pipeline.predict_sample_with_blocking(sample, skip_preprocessing=True,
                                                                 ns=self._ns(arr.shape, tile))
            else:
                res = self.pipeline.predict_sample_without_blocking(sample, skip_preprocessing=True)
        prob = self._plane(res, self.probability_output, self.output_channel, arr.shape)[: shape[0], : shape[1]]
        unc = None
        if self.uncertainty_output is not None:
            unc = self._plane(res, self.uncertainty_output, 0, arr.shape)[: shape[0], : shape[1]]
        return np.ascontiguousarray(prob), (None if unc is None else np.ascontiguousarray(unc))

    def _plane(self, res: Any, output: str, channel: int, shape: tuple[int, ...]) -> np.ndarray:
        from bioimageio.core.common import MemberId

        t = res.members[MemberId(output)]
        da = t.data
        sel = {}
        for d in da.dims:
            if str(d) == "batch":
                sel[d] = 0
            elif str(d) == "channel":
                sel[d] = channel
        da = da.isel(sel)
        dims = [str(d) for d in da.dims]
        if sorted(dims) != ["x", "y"]:
            raise ValueError(f"output {output!r} of package {self.name} has axes {dims}; expected y and x")
        out = np.asarray(da.transpose(*[d for d in da.dims if str(d) == "y"],
                                      *[d for d in da.dims if str(d) == "x"]).values, dtype=np.float32)
        if out.shape != tuple(shape):
            raise ValueError(
                f"output {output!r} of package {self.name} has shape {out.shape} for an input of shape "
                f"{tuple(shape)}; only outputs of the input's size are supported"
            )
        return out


def load_package(
    source: str | os.PathLike,
    *,
    weight_format: str | None = None,
    device: str = "cpu",
    output: str | None = None,
    output_channel: int = 0,
    trust_code: bool = False,
) -> Package:
    """Load a bioimage.io model package (ours or anyone's) for :func:`predict_packages`.

    Parameters
    ----------
    source : path-like
        A package ``.zip``, an ``rdf.yaml``/``bioimageio.yaml`` or a folder holding one (local only).
    weight_format : str, optional
        Force one of the package's weight formats; default the first of :data:`RUN_PREFERENCE` it has
        (onnx, torchscript, then pytorch_state_dict, which runs the package's Python code: a warning says so).
    device : str
        ``cpu`` or ``cuda``.
    output, output_channel :
        Probability output of a foreign package (default its first output) and its channel.
    trust_code : bool
        Allow ``pytorch_state_dict`` weights, which import and run the Python architecture file the package
        ships. Without it a package that has no onnx or torchscript weights (or whose pytorch_state_dict
        weights are asked for) is refused, naming the file that would run (CLI: ``--trust-code``).

    Raises
    ------
    ValueError
        Invalid package, not a model, inputs other than one 2-D single-channel image (``batch``,
        ``channel`` of size 1, ``y``, ``x``), only unsupported weight formats, or an unsuitable output.
    """
    _require_zoo()
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5 as bm

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"bioimage.io package not found: {path}")
    src = _package_source(path)
    try:
        with _quiet_bioimageio(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            descr = load_description(src, format_version="latest")
    except Exception as exc:  # unreadable zips and YAML raise many types
        text = " ".join(str(exc).split())
        raise ValueError(
            f"{path} is not a valid bioimage.io description: {type(exc).__name__}: {text[:300]}"
        ) from None
    if isinstance(descr, InvalidDescr):
        raise ValueError(f"{path} is not a valid bioimage.io description: {_first_validation_error(descr)}")
    if getattr(descr, "type", None) != "model" or not isinstance(descr, bm.ModelDescr):
        raise ValueError(f"{path} describes a {getattr(descr, 'type', '?')!r}, not a model (format 0.5)")
    name = str(descr.name)
    inputs = [t for t in descr.inputs if not t.optional]
    if len(descr.inputs) != 1:
        raise ValueError(
            f"package {name} has {len(descr.inputs)} inputs ({[str(t.id) for t in descr.inputs]}); fiji-consensus "
            "runs models with one image input"
        )
    inp = inputs[0]
    param_axes: dict[str, tuple[int, int]] = {}
    axes_txt = [f"{a.id} ({a.type})" for a in inp.axes]
    for a in inp.axes:
        if a.type == "batch":
            continue
        if a.type == "channel":
            if int(a.size) != 1:
                raise ValueError(
                    f"package {name} expects {a.size} input channels (axes {axes_txt}); fiji-consensus feeds "
                    "single-channel 2-D images"
                )
            continue
        if a.type == "space" and str(a.id) in ("y", "x"):
            if isinstance(a.size, bm.ParameterizedSize):
                param_axes[str(a.id)] = (int(a.size.min), int(a.size.step))
            continue
        raise ValueError(
            f"package {name} has input axes {axes_txt}: unsupported; fiji-consensus runs 2-D models with "
            "axes batch, channel (1), y, x (3-D, time and index axes are not supported)"
        )
    if {str(a.id) for a in inp.axes if a.type == "space"} != {"y", "x"}:
        raise ValueError(f"package {name} has input axes {axes_txt}; it needs the spatial axes y and x")
    present = [wf for wf in _ALL_WEIGHT_FORMATS if getattr(descr.weights, wf, None) is not None]
    runnable = [wf for wf in RUN_PREFERENCE if getattr(descr.weights, wf, None) is not None]
    if weight_format is not None:
        if weight_format not in RUN_PREFERENCE:
            raise ValueError(f"weight_format must be one of {RUN_PREFERENCE}; got {weight_format!r}")
        if weight_format not in runnable:
            raise ValueError(f"package {name} has no {weight_format} weights; it has {present}")
        wf = weight_format
    elif runnable:
        wf = runnable[0]
    else:
        raise ValueError(
            f"package {name} has only {present} weights; fiji-consensus runs {list(RUN_PREFERENCE)}"
        )
    if wf in TF_WEIGHT_FORMATS:
        from .keras._backend import import_keras

        import_keras()  # an ImportError naming the keras extra
    executes_code = wf == "pytorch_state_dict"
    if executes_code and not trust_code:
        raise PermissionError(
            f"package {name} ({path}) would run its own Python code ({_code_of(descr.weights.pytorch_state_dict)}) "
            f"through its pytorch_state_dict weights{'' if weight_format else ' (it has no onnx or torchscript weights)'}"
            "; refused: run it only if you trust its source, with --trust-code (Python: trust_code=True)"
        )
    if executes_code:
        logger.warning(
            "package %s: running its pytorch_state_dict weights, which execute the architecture code shipped "
            "in the package (it has no torchscript or onnx weights%s); run only packages you trust",
            name, "" if weight_format is None else ", or they were chosen",
        )
    fc = getattr(descr.config, "fiji_consensus", None) if descr.config is not None else None
    out_ids = [str(t.id) for t in descr.outputs]
    ours = isinstance(fc, dict) and "probability" in out_ids and "uncertainty" in out_ids
    if ours:
        prob_id, unc_id = "probability", "uncertainty"
        measure = (fc.get("uncertainty") or {}).get("measure")
        threshold = float(fc.get("threshold", 0.5))
        min_size = int(fc.get("min_size", 0) or 0)
        channel = 0
    else:
        prob_id = output or out_ids[0]
        if prob_id not in out_ids:
            raise ValueError(f"package {name} has no output {prob_id!r}; its outputs are {out_ids}")
        unc_id, measure, threshold, min_size, channel = None, None, 0.5, 0, int(output_channel)
    odescr = next(t for t in descr.outputs if str(t.id) == prob_id)
    for a in odescr.axes:
        if a.type == "channel":
            n = len(a.channel_names) if getattr(a, "channel_names", None) else int(getattr(a, "size", 1) or 1)
            if not 0 <= channel < n:
                raise ValueError(
                    f"output {prob_id!r} of package {name} has {n} channels; channel {channel} does not exist"
                )
        elif a.type == "space" and str(a.id) in ("y", "x"):
            if float(getattr(a, "scale", 1.0) or 1.0) != 1.0:
                raise ValueError(f"output {prob_id!r} of package {name} is rescaled (axis {a.id} scale {a.scale}); "
                                 "only outputs of the input's size are supported")
        elif a.type != "batch":
            raise ValueError(f"output {prob_id!r} of package {name} has an unsupported axis {a.id} ({a.type})")
    with _quiet_bioimageio(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from .keras._backend import bioimageio_scratch  # TensorFlow weights unzip into the working directory

        if wf == "tensorflow_saved_model_bundle":  # outputs taken by name (fiji_consensus.keras._bioimageio)
            from .keras._bioimageio import saved_model_adapter

            with bioimageio_scratch():
                pp = create_prediction_pipeline(descr, weight_format=wf, devices=[device],
                                                model_adapter=saved_model_adapter(descr))
        else:
            pp = create_prediction_pipeline(descr, weight_format=wf, devices=[device])
    sha = _sha256(path) if path.is_file() else ""
    return Package(
        path=path, name=name, weight_format=wf, executes_code=executes_code, ours=ours, measure=measure,
        probability_output=prob_id, uncertainty_output=unc_id, output_channel=channel, threshold=threshold,
        min_size=min_size, sha256=sha, descr=descr, pipeline=pp, _param_axes=param_axes,
    )


def _first_validation_error(descr: Any) -> str:
    """``field a.b.c: message (and N more)`` of an invalid description, on one line."""
    errors = []
    for d in getattr(getattr(descr, "validation_summary", None), "details", None) or ():
        errors += [e for e in (d.errors or ())]
    if not errors:
        return "no details given by bioimageio.spec"
    e = errors[0]
    loc = ".".join(str(x) for x in (e.loc or ()) if "[" not in str(x) and "function-" not in str(x)) or "(root)"
    msg = " ".join(str(e.msg).split())
    msg = msg if len(msg) <= 160 else msg[:157] + "..."
    return f"field {loc}: {msg}" + (f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else "")


def _code_of(weights: Any) -> str:
    """The Python that ``pytorch_state_dict`` weights run: ``file.py:callable`` or ``module.callable``."""
    arch = getattr(weights, "architecture", None)
    src = getattr(arch, "source", None)
    if src is not None:
        name = getattr(src, "path", None) or getattr(src, "name", None) or str(src)
        return f"{Path(str(name)).name}:{getattr(arch, 'callable', '?')}"
    return f"{getattr(arch, 'import_from', '?')}.{getattr(arch, 'callable', '?')}"


def predict_packages(
    packages: Sequence[Package],
    image: Any,
    *,
    tta: str | Sequence[str] | bool | None = "none",
    tile: int = 1152,
    threshold: float | None = None,
    min_size: int | None = None,
    split: str = "none",
    measure: str = "entropy",
    channel: int | None = None,
    keep_stack: bool = False,
    progress: bool = False,
) -> Any:
    """Predict one image with one or several bioimage.io packages: the same :class:`Prediction` as
    :func:`fiji_consensus.nn.predict.predict` (probability, uncertainty, objects, QA score).

    Every package (x every view of ``tta``, applied to the whole image outside the package) gives one
    foreground-probability sample; with several samples the probability is their mean and the uncertainty
    maps are :func:`fiji_consensus.uncertainty.ensemble_statistics` over them, exactly as for our own
    ensembles. With a single sample, ``entropy`` and ``deepflash2`` are computed from its probability and a
    fiji-consensus package's own ``uncertainty`` output (over its members x views) gives its measure; the
    spread-based measures that one sample cannot give are NaN maps (asking for one of them is an error).
    ``threshold``/``min_size`` default to the first package's (0.5 / 0 for foreign packages).
    """
    from . import uncertainty as _unc
    from .nn.predict import _assemble_prediction, _image_2d, resolve_views

    if not packages:
        raise ValueError("give at least one package")
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}; got {measure!r}")
    arr, template = _image_2d(image, channel)
    views = resolve_views(tta)
    samples, unc_own = [], None
    for pkg in packages:
        for v in views:
            fwd, inv = _VIEW_NP[v]
            p, u = pkg.predict(np.ascontiguousarray(fwd(arr)), tile=tile, progress=progress)
            p = np.ascontiguousarray(inv(p))
            lo, hi = float(p.min()), float(p.max())
            if lo < -1e-4 or hi > 1 + 1e-4 or not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(
                    f"output {pkg.probability_output!r} of package {pkg.name} is not a probability (values in "
                    f"[{lo:.3g}, {hi:.3g}]); fiji-consensus needs a foreground probability in [0, 1]"
                )
            samples.append(np.clip(p, 0.0, 1.0, out=p))
            if u is not None and len(packages) == 1 and len(views) == 1:
                unc_own = np.ascontiguousarray(inv(u))
    stack = np.stack(samples).astype(np.float32)
    stats = _unc.ensemble_statistics(stack)
    prob = stats.pop("mean")
    if len(samples) == 1:
        nan = np.full(prob.shape, np.nan, np.float32)
        for k in ("std", "mutual_information", "expected_entropy"):
            stats[k] = nan
        own = packages[0].measure if unc_own is not None else None
        if own is not None and own in stats:
            stats[own] = unc_own.astype(np.float32)
        if np.isnan(stats[measure]).all():
            raise ValueError(
                f"the {measure!r} uncertainty needs several samples (the spread of members/views): give several "
                f"packages (--model A.zip --model B.zip), test-time views (tta), or a package whose own "
                f"uncertainty output is {measure!r}"
                + (f" (this one's is {packages[0].measure!r})" if packages[0].measure else "")
            )
    thr = float(packages[0].threshold if threshold is None else threshold)
    ms = int(packages[0].min_size if min_size is None else min_size)
    return _assemble_prediction(
        prob, stats, arr, template, threshold=thr, min_size=ms, split=split, measure=measure, views=views,
        n_members=len(packages), stack=stack if keep_stack else None,
    )


# --------------------------------------------------------------------------------------------- the zoo


def _read_rdf(zip_path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        name = next((n for n in ("bioimageio.yaml", "rdf.yaml") if n in names), None)
        if name is None:
            raise ValueError(f"{zip_path} holds no rdf.yaml: not a bioimage.io package")
        text = zf.read(name).decode("utf-8")
    from ._validate import require

    yaml = require("ruyaml", extra="zoo")  # bioimageio.spec's YAML 1.2 reader
    return yaml.YAML(typ="safe").load(text)


def ensemble_from_package(source: str | os.PathLike, *, device: str = "cpu") -> Any:
    """The members of one of our own packages as an :class:`~fiji_consensus.nn.ensemble.Ensemble`.

    For fine-tuning a zoo model on new images (``fiji-consensus train --init PACKAGE.zip``) and for running
    its members with fiji-consensus's own predictor. Only the package's ``pytorch_state_dict`` weights are
    read, with ``torch.load(weights_only=True)`` after checking their SHA-256, into fiji-consensus's own
    :class:`~fiji_consensus.nn.unet.UNet`: no code from the package runs. Packages made by other tools have
    no ``config.fiji_consensus`` and are refused.

    Parameters
    ----------
    source : path-like
        A ``.zip`` package (or a folder holding ``rdf.yaml`` and the weights).
    device : str
        Where to put the members.

    Examples
    --------
    >>> ens = ensemble_from_package("model_zoo/cfos-wue1/cfos-wue1.zip")     # doctest: +SKIP
    >>> ens.predict(image).shape == image.shape                              # doctest: +SKIP
    True
    """
    from ._validate import require

    torch = require("torch", extra="train")
    from .nn.ensemble import Ensemble
    from .nn.unet import UNet

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no bioimage.io package at {path}")
    if path.is_dir():
        rdf_file = _package_source(path)
        if rdf_file == path:
            raise ValueError(f"{path} holds no rdf.yaml or bioimageio.yaml: not a bioimage.io package")
        yaml = require("ruyaml", extra="zoo")
        rdf = yaml.YAML(typ="safe").load(rdf_file.read_text(encoding="utf-8"))

        def read(name: str) -> bytes:
            return (path / name).read_bytes()
    else:
        try:
            rdf = _read_rdf(path)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{path} is not a zip file: {exc}") from exc

        def read(name: str) -> bytes:
            with zipfile.ZipFile(path) as zf:
                return zf.read(name)

    fc = (rdf.get("config") or {}).get("fiji_consensus")
    weights = (rdf.get("weights") or {}).get("pytorch_state_dict") or {}
    kwargs = (weights.get("architecture") or {}).get("kwargs") or {}
    if not fc or not weights or "unet_config" not in kwargs:
        raise ValueError(
            f"{path} is not a fiji-consensus package (no config.fiji_consensus with pytorch_state_dict weights "
            "of an EnsembleNet); only our own packages can initialise or run as an ensemble of U-Nets"
        )
    try:
        data = read(str(weights["source"]))
    except KeyError as exc:
        raise ValueError(f"{path} lacks its weights file {weights['source']!r}") from exc
    if weights.get("sha256") and hashlib.sha256(data).hexdigest() != weights["sha256"]:
        raise ValueError(f"the weights {weights['source']!r} in {path} do not match their SHA-256 in the rdf")
    import io as _io

    from .nn.ensemble import load_state_dict

    sd = load_state_dict(_io.BytesIO(data), name=f"{weights['source']} in {path}")  # tensors only, or refused
    cfg = dict(kwargs["unet_config"])
    n = int(kwargs.get("n_members", 0))
    members = []
    for k in range(n):
        prefix = f"members.{k}."
        net = UNet(**cfg)
        try:
            net.load_state_dict({name[len(prefix):]: t for name, t in sd.items() if name.startswith(prefix)})
        except RuntimeError as exc:
            raise ValueError(f"member {k} of {path} does not fit its U-Net configuration {cfg}: {exc}") from exc
        members.append(net.to(device).eval())
    if not members:
        raise ValueError(f"{path} holds no members (n_members = {n})")
    arch = dict(fc.get("architecture") or {})
    arch.setdefault("name", "UNet")
    arch["config"] = cfg
    arch.setdefault("halo", members[0].halo)
    listed = list(fc.get("members") or [])  # the packaged members, in weight order
    if len(listed) != n:
        listed = [{"index": k, "selected": True} for k in range(n)]
    meta = {
        "name": rdf.get("name"),
        "format_version": fc.get("ensemble_json_format_version"),
        "architecture": arch,
        "normalization": dict(fc["normalization"]),
        "threshold": float(fc.get("threshold", 0.5)),
        "min_size": int(fc.get("min_size", 0) or 0),
        "members": listed,
        "training": fc.get("training"),
        "provenance": {**(fc.get("provenance") or {}), "package": str(path)},
        "validation": fc.get("validation"),
    }
    return Ensemble(
        members=members, indices=[int(m.get("index", k)) for k, m in enumerate(listed)],
        normalization=meta["normalization"], halo=int(arch["halo"]), threshold=meta["threshold"],
        metadata=meta, path=path, device=torch.device(device),
    )


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
    for p in (Path("model_zoo"), Path(__file__).resolve().parents[1] / "model_zoo"):
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
        for z in zips:
            row: dict[str, Any] = {"name": z.stem, "folder": str(d), "package": str(z), "built": True,
                                   "megabytes": round(z.stat().st_size / 1e6, 2)}
            try:
                rdf = _read_rdf(z)
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
            except (ValueError, zipfile.BadZipFile, OSError, ImportError) as exc:
                row["error"] = str(exc)
            rows.append(row)
    return rows
