"""One model interface: what a model is, decided in one place.

A *model* is given as a path or a list of paths:

- an **ensemble folder** (``ensemble.json`` + member weights, :mod:`fiji_consensus.nn.ensemble`), or its
  ``ensemble.json``: predicted with fiji-consensus's own torch predictor (test-time views, tiles, batches);
- one or several **bioimage.io packages**, ours or anyone's (a ``.zip``, a folder holding ``rdf.yaml`` /
  ``bioimageio.yaml``, or that yaml file), and **plain Keras models** (``.keras``/``.h5``, which need their
  normalisation named): together one ensemble of packages (:func:`fiji_consensus.zoo.predict_packages`).

An ensemble folder cannot be mixed with packages (an error names what was given). :func:`model_kind` says
which of the two a path or list is, :func:`load_model` loads it as a :class:`Predictor` with one ``predict``
for both, and :func:`model_sha256` is the checksum a job records for it. The backends (torch, bioimage.io,
Keras) are imported inside the functions only.

>>> model_kind(["a.zip", "b.keras"]), model_kind("models/wue1")
('packages', 'ensemble')
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._util import sha256_file

__all__ = ["Predictor", "load_model", "model_kind", "model_paths", "model_sha256", "load_torch_ensemble"]

logger = logging.getLogger(__name__)

ModelKind = Literal["ensemble", "packages"]
PathLike = str | os.PathLike


def model_paths(model: PathLike | Sequence[PathLike]) -> list[Path]:
    """The model's paths as a list (one path, or a list of them)."""
    paths = [Path(model)] if isinstance(model, (str, os.PathLike)) else [Path(m) for m in model]
    if not paths:
        raise ValueError("a model needs at least one path (an ensemble folder or packages); got an empty list")
    return paths


def _is_member_file(path: Path) -> bool:
    """A bioimage.io package or a plain Keras model: a member of an ensemble of packages."""
    from .keras.member import is_keras_model
    from .zoo import is_package

    return is_package(path) or is_keras_model(path)


def model_kind(model: PathLike | Sequence[PathLike]) -> ModelKind:
    """``"packages"`` for bioimage.io packages and Keras files (one or several), ``"ensemble"`` for one
    ensemble folder; a mix, or several ensemble folders, is a ``ValueError`` naming what was given."""
    paths = model_paths(model)
    kinds = [_is_member_file(p) for p in paths]
    if any(kinds) and not all(kinds):
        raise ValueError(
            f"--model mixes bioimage.io packages and ensemble folders ({[str(m) for m in paths]}); "
            "give one ensemble folder, or one or several packages"
        )
    if len(kinds) > 1 and not all(kinds):
        raise ValueError("several models must all be bioimage.io packages (.zip); give one ensemble folder")
    return "packages" if all(kinds) else "ensemble"


def ensemble_json(folder: PathLike) -> Path:
    """The ``ensemble.json`` of an ensemble folder (or the file itself); FileNotFoundError when there is none."""
    from .nn.ensemble import ensemble_json_file

    return ensemble_json_file(folder)


def model_sha256(model: PathLike | Sequence[PathLike]) -> str:
    """The checksum a job records for a model: the SHA-256 of an ensemble's ``ensemble.json``, of a package
    file (folders: of their rdf.yaml), or of the packages' checksums joined by commas."""
    if model_kind(model) == "ensemble":
        return sha256_file(ensemble_json(model_paths(model)[0]))
    from .zoo import _package_source

    hashes = []
    for m in model_paths(model):
        if not m.exists():
            raise FileNotFoundError(f"bioimage.io package not found: {m}")
        hashes.append(sha256_file(_package_source(m)))
    return hashes[0] if len(hashes) == 1 else hashlib.sha256(",".join(hashes).encode()).hexdigest()


@dataclass
class Predictor:
    """A loaded model with one ``predict`` for ensemble folders and ensembles of packages.

    ``kind``: ``"ensemble"`` or ``"packages"``; ``model``: the :class:`~fiji_consensus.nn.ensemble.Ensemble`
    or the list of loaded packages (:class:`~fiji_consensus.zoo.Package`, Keras members); ``sources``: the
    paths it was loaded from.
    """

    kind: ModelKind
    model: Any
    sources: tuple[Path, ...] = ()

    @property
    def members(self) -> list[Any]:
        """The packages of an ensemble of packages, or ``[ensemble]``."""
        return list(self.model) if self.kind == "packages" else [self.model]

    @property
    def metadata(self) -> list[dict[str, Any]]:
        """Each member's metadata (training range, normalisation), ``{}`` where it has none."""
        return [getattr(m, "metadata", None) or {} for m in self.members]

    @property
    def thresholds(self) -> tuple[float, float | None]:
        """The model's own (threshold, object threshold): an ensemble's, or the first package's."""
        m = self.model[0] if self.kind == "packages" else self.model
        return float(m.threshold), getattr(m, "object_threshold", None)

    def describe(self) -> dict[str, Any]:
        """What a per-image record says about the model: the packages (name, weights, runs code)."""
        if self.kind != "packages":
            return {}
        return {"packages": [{"name": p.name, "weights": p.weight_format, "executes_code": p.executes_code}
                             for p in self.model]}

    def predict(self, image: Any, *, progress: bool = False, **options: Any) -> Any:
        """Probability, uncertainty, objects and QA scores of one 2-D image (a
        :class:`~fiji_consensus.nn.predict.Prediction`).

        ``options`` are those of :func:`fiji_consensus.nn.predict.predict` (``tta``, ``tile``, ``overlap``,
        ``batch_size``, ``threshold``, ``object_threshold``, ``min_size``, ``split``, ``measure``,
        ``all_maps``); packages take ``tta``, ``tile``, ``threshold``, ``object_threshold``, ``min_size``,
        ``split`` and ``measure`` and ignore the others.
        ``tta=None`` (or not given): the model's own default, flips for an ensemble folder, none for packages
        (they hold their views inside).
        """
        if self.kind == "packages":
            from .zoo import predict_packages

            opts = {k: v for k, v in options.items() if k not in _ENSEMBLE_ONLY}
            opts["tta"] = "none" if opts.get("tta") is None else opts["tta"]
            return predict_packages(self.model, image, progress=progress, **opts)
        from .nn.predict import predict

        tta = "flips" if options.get("tta") is None else options["tta"]
        return predict(self.model, image, progress=progress, **{**options, "tta": tta})


#: Options of :meth:`Predictor.predict` that only an ensemble folder's own predictor takes.
_ENSEMBLE_ONLY = frozenset({"overlap", "batch_size", "all_maps"})


def load_model(
    model: PathLike | Sequence[PathLike],
    *,
    device: str = "cpu",
    trust_code: bool = False,
    keras_normalization: str | dict[str, Any] | None = None,
) -> Predictor:
    """Load a model (see the module docstring) as a :class:`Predictor`.

    Parameters
    ----------
    model : path or list of paths
        An ensemble folder (or its ``ensemble.json``), or bioimage.io packages and Keras files.
    device : str
        ``"cpu"`` or ``"cuda[:N]"`` (packages run on ``"cuda"`` or ``"cpu"``).
    trust_code : bool
        Let packages whose weights need their own Python code run it (off by default: no foreign code
        runs without this opt-in).
    keras_normalization : str or dict, optional
        The normalisation plain Keras models need (``"percentile:1,99.8"``, ``"range:MIN,MAX"``, ``"none"``).

    Examples
    --------
    >>> load_model("models/wue1").predict(image).probability.shape          # doctest: +SKIP
    (512, 512)
    """
    kind = model_kind(model)
    paths = model_paths(model)
    if kind == "ensemble":
        from .nn.ensemble import load_ensemble

        return Predictor("ensemble", load_ensemble(ensemble_json(paths[0]).parent, device=device), tuple(paths))
    from .keras.member import is_keras_model, load_keras_member
    from .zoo import load_package

    keras_files = [str(m) for m in paths if is_keras_model(m)]
    if keras_files and keras_normalization is None:
        raise ValueError(f"{keras_files}: plain Keras models need their normalisation: --keras-normalization "
                         "percentile:1,99.8 (or range:MIN,MAX, or none)")
    pkg_device = "cuda" if device.startswith("cuda") else "cpu"
    pkgs = [load_keras_member(m, normalization=keras_normalization) if is_keras_model(m)
            else load_package(m, device=pkg_device, trust_code=trust_code) for m in paths]
    for p in pkgs:
        logger.info("package %s: %s weights%s", p.name, p.weight_format,
                    " (runs the package's Python code)" if p.executes_code else "")
    return Predictor("packages", pkgs, tuple(paths))


def load_torch_ensemble(model: PathLike, *, device: str = "cpu") -> Any:
    """The model as fiji-consensus's own torch :class:`~fiji_consensus.nn.ensemble.Ensemble`: an ensemble
    folder, or one of our own bioimage.io packages (its members read from the package's state dicts; no code
    from the package runs). For fine-tuning (``train --init``); other packages are refused."""
    p = Path(model)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such ensemble folder or package")
    if model_kind(p) == "packages":
        from .zoo import ensemble_from_package

        return ensemble_from_package(p, device=device)
    from .nn.ensemble import load_ensemble

    return load_ensemble(ensemble_json(p).parent, device=device)
