"""What every part of :mod:`fiji_consensus.zoo` shares: the package format's constants, the ``zoo`` extra,
quiet bioimageio logging, and reading a package's ``rdf.yaml`` without loading it."""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path
from typing import Any

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

#: Every weight format bioimage.io knows (to name what a package has when none of them runs here).
ALL_WEIGHT_FORMATS = ("onnx", "torchscript", "pytorch_state_dict", "keras_hdf5", "keras_v3", "tensorflow_js",
                      "tensorflow_saved_model_bundle")
#: Reproducibility tolerance declared in our packages (``config.bioimageio.reproducibility_tolerance``).
TOLERANCE = {"relative_tolerance": 1e-4, "absolute_tolerance": 1e-4, "mismatched_elements_per_million": 100}

#: The ``pytorch_version`` declared for the TorchScript and state-dict weights: the oldest PyTorch checked to
#: load and reproduce them (torch 2.0.1, deepImageJ's libtorch; tests/benchmarks/bench_old_runtimes.py). The
#: files need no newer one, and deepImageJ's engine installer (JDLL, which knows PyTorch up to 2.0.x) refuses
#: weights that declare a version it does not know.
PYTORCH_MIN_VERSION = "2.0.1"
#: Tags of every package, one per bioimage.io category it fills (dims, framework, software, network, task);
#: modality and content come from the caller (``tags``). Our outputs are semantic (per-pixel probability).
DEFAULT_TAGS = ("2d", "pytorch", "unet", "deepimagej", "fiji", "imagej", "semantic-segmentation", "ensemble",
                "uncertainty", "fiji-consensus")

#: The repository root when running from a clone (``model_zoo/`` lies there; paths under it are portable).
REPO_ROOT = Path(__file__).resolve().parents[2]


def require_zoo() -> None:
    """ImportError naming the extra when torch or bioimageio.core/spec are missing."""
    from .._validate import require

    require("torch", extra="train")
    require("bioimageio.core", extra="zoo")
    require("bioimageio.spec", extra="zoo")


@contextlib.contextmanager
def quiet_bioimageio(quiet: bool = True):
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


def is_package(path: str | os.PathLike) -> bool:
    """True for a bioimage.io package: a ``.zip`` file, an ``rdf.yaml``/``bioimageio.yaml`` file or a folder
    holding one (an ensemble folder holds ``ensemble.json`` instead)."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".zip" or p.name.endswith(("rdf.yaml", "bioimageio.yaml"))
    if p.is_dir():
        return any((p / n).is_file() for n in ("rdf.yaml", "bioimageio.yaml"))
    return p.suffix.lower() == ".zip"


def package_source(path: Path) -> Path:
    """The description file of a package folder (``bioimageio.yaml`` or ``rdf.yaml``), else ``path`` itself."""
    if path.is_dir():
        for n in ("bioimageio.yaml", "rdf.yaml"):
            if (path / n).is_file():
                return path / n
    return path


def load_yaml(text: str) -> Any:
    """YAML 1.2 as bioimageio.spec reads it (ruyaml, part of the ``zoo`` extra)."""
    from .._validate import require

    yaml = require("ruyaml", extra="zoo")
    return yaml.YAML(typ="safe").load(text)


def read_rdf(zip_path: Path) -> dict[str, Any]:
    """The description (``bioimageio.yaml`` or ``rdf.yaml``) of a package zip, as plain data."""
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        name = next((n for n in ("bioimageio.yaml", "rdf.yaml") if n in names), None)
        if name is None:
            raise ValueError(f"{zip_path} holds no rdf.yaml: not a bioimage.io package")
        text = zf.read(name).decode("utf-8")
    return load_yaml(text)


def made_by_us(path: Path) -> bool:
    """Whether ``path`` is a bioimage.io package zip written by fiji-consensus (``config.fiji_consensus``)."""
    try:
        return bool(((read_rdf(path).get("config") or {}).get("fiji_consensus")))
    except Exception:  # not a zip, no rdf, unreadable YAML: not ours
        return False
