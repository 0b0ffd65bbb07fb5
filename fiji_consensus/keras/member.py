"""Plain Keras models (``.keras``, ``.h5``) as members of a package ensemble.

A Keras file carries no preprocessing, so its normalisation is always given explicitly
(:func:`parse_normalization`): ``percentile:LOW,HIGH`` (per image, as our ensembles and bioimage.io's
``scale_range``), ``range:MIN,MAX`` (fixed) or ``none``. A :class:`KerasMember` behaves like a loaded
bioimage.io package (:class:`fiji_consensus.zoo.Package`): :func:`fiji_consensus.zoo.predict_packages` mixes
it with torch/ONNX packages in one ensemble, and the uncertainty then spans the frameworks.

Loading is code-free: Keras's safe mode refuses ``Lambda`` layers (marshalled Python code) and custom layers
are not importable by name, so a file that needs either is refused with its reason.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._backend import import_keras

__all__ = ["KERAS_SUFFIXES", "is_keras_model", "parse_normalization", "KerasMember", "load_keras_member"]

logger = logging.getLogger(__name__)

#: File suffixes read as plain Keras models.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")

_NORM_RE = re.compile(r"^\s*(percentile|range)\s*:\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*$|^\s*(none)\s*$")


def is_keras_model(path: str | os.PathLike) -> bool:
    """True for a ``.keras`` / ``.h5`` / ``.hdf5`` file (nothing is imported)."""
    p = Path(path)
    return p.suffix.lower() in KERAS_SUFFIXES and not p.is_dir()


def parse_normalization(spec: str | dict[str, Any] | None) -> dict[str, Any]:
    """``"percentile:1,99.8"``, ``"range:0,255"`` or ``"none"`` as a dict (``method``, ``low``, ``high``).

    >>> parse_normalization("percentile:1,99.8")
    {'method': 'percentile', 'low': 1.0, 'high': 99.8, 'eps': 1e-06}
    """
    if isinstance(spec, dict):
        spec = (f"{spec['method']}:{spec['low']},{spec['high']}" if spec.get("method") != "none" else "none")
    m = _NORM_RE.match(str(spec)) if spec is not None else None
    if m is None:
        raise ValueError(
            f"the normalisation of a Keras model must be 'percentile:LOW,HIGH' (e.g. percentile:1,99.8), "
            f"'range:MIN,MAX' (e.g. range:0,255) or 'none'; got {spec!r}"
        )
    if m.group(4):
        return {"method": "none"}
    method, low, high = m.group(1), float(m.group(2)), float(m.group(3))
    if method == "percentile" and not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= LOW < HIGH <= 100; got {spec!r}")
    if method == "range" and not high > low:
        raise ValueError(f"range:MIN,MAX needs MAX > MIN; got {spec!r}")
    return {"method": method, "low": low, "high": high, "eps": 1e-6}


def _normalize(image: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64)
    if norm["method"] == "none":
        return x.astype(np.float32)
    if norm["method"] == "percentile":
        lo, hi = np.percentile(x, [norm["low"], norm["high"]])
        return ((x - lo) / (hi - lo + norm["eps"])).astype(np.float32)
    return ((x - norm["low"]) / (norm["high"] - norm["low"])).astype(np.float32)


def _downsampling_depth(model: Any) -> int:
    """Largest number of 2x downsampling layers directly inside one (sub-)model (a U-Net's depth)."""
    keras = import_keras()
    L = keras.layers
    best, own = 0, 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            best = max(best, _downsampling_depth(layer))
        elif isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
            own += 1
        elif isinstance(layer, L.Conv2D) and not isinstance(layer, L.Conv2DTranspose) and \
                max(layer.strides) > 1:
            own += 1
    return max(best, own)


@dataclass
class KerasMember:
    """A plain Keras model ready to predict 2-D single-channel images (see the module docstring).

    It has the attributes of :class:`fiji_consensus.zoo.Package` that :func:`~fiji_consensus.zoo.predict_packages`
    and ``predict`` use (``name``, ``weight_format``, ``executes_code`` (False), ``ours`` (False), ``measure``
    (None), ``probability_output``, ``uncertainty_output`` (None), ``threshold`` (0.5), ``object_threshold`` (None),
    ``min_size`` (0)).
    """

    path: Path
    name: str
    weight_format: str
    normalization: dict[str, Any]
    channels_first: bool
    output_index: int
    output_channel: int
    multiple: int
    halo: int
    sha256: str
    model: Any = field(repr=False)
    executes_code: bool = False
    ours: bool = False
    measure: str | None = None
    uncertainty_output: str | None = None
    threshold: float = 0.5
    object_threshold: float | None = None
    min_size: int = 0

    @property
    def probability_output(self) -> str:
        return f"output {self.output_index}, channel {self.output_channel}"

    def close(self) -> None:
        self.model = None

    def __enter__(self) -> KerasMember:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, x: np.ndarray) -> np.ndarray:
        """``(N, 1, h, w)`` float32 -> the chosen output channel ``(N, h, w)``."""
        inp = x if self.channels_first else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out = self.model(inp, training=False)
        if isinstance(out, dict):
            out = list(out.values())
        if isinstance(out, (list, tuple)):
            out = out[self.output_index]
        y = np.asarray(out, dtype=np.float32)
        if y.ndim != 4:
            raise ValueError(f"Keras model {self.name}: output {self.output_index} has shape {y.shape}; expected "
                             "(N, h, w, C) or (N, C, h, w)")
        y = y[:, self.output_channel] if self.channels_first else y[..., self.output_channel]
        if y.shape[1:] != x.shape[2:]:
            raise ValueError(f"Keras model {self.name}: output of shape {y.shape[1:]} for a tile of {x.shape[2:]}; "
                             "only outputs of the input's size are supported")
        return y

    def predict(
        self, image: np.ndarray, *, tile: int = 1152, progress: bool = False
    ) -> tuple[np.ndarray, None]:
        """``(probability, None)`` of a 2-D image, ``(Y, X)`` float32: normalised (whole image), then
        tiled (:func:`fiji_consensus.tiling.predict_tiled`, halo :attr:`halo`, sizes multiples of
        :attr:`multiple`)."""
        from ..tiling import predict_tiled

        if self.model is None:
            raise RuntimeError(f"Keras model {self.name} is closed")
        arr = _normalize(image, self.normalization)
        m = self.multiple
        t = max(m, int(tile) // m * m)
        if t <= 2 * self.halo:
            t = 2 * self.halo + m
        out = predict_tiled(arr, self._call, tile=t, halo=self.halo, multiple=m, overlap=0.0, batch_size=1,
                            blending="constant", progress=progress)
        return np.ascontiguousarray(out, dtype=np.float32), None


def _layout(model: Any) -> bool:
    """True when the model's single input is channels first ``(N, 1, h, w)``; False for ``(N, h, w, 1)``."""
    shapes = [tuple(t.shape) for t in model.inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise ValueError(f"fiji-consensus runs Keras models with one 4-D image input; this one has inputs {shapes}")
    _, a, _, c = shapes[0]
    if c == 1:
        return False
    if a == 1:
        return True
    raise ValueError(f"the Keras model's input {shapes[0]} is not single-channel (N, h, w, 1) or (N, 1, h, w)")


def load_keras_member(
    path: str | os.PathLike,
    *,
    normalization: str | dict[str, Any] | None,
    output: int = 0,
    output_channel: int | None = None,
    multiple: int | None = None,
    halo: int | None = None,
    name: str | None = None,
) -> KerasMember:
    """Load a ``.keras`` / ``.h5`` model as one ensemble member.

    Parameters
    ----------
    path : path-like
        The Keras file (Keras 3 ``.keras``, or HDF5 written by Keras 2 or 3).
    normalization : str
        Required: ``percentile:LOW,HIGH``, ``range:MIN,MAX`` or ``none`` (:func:`parse_normalization`).
    output, output_channel : int
        Which output (of a multi-output model) and which channel is the foreground probability; the channel
        may be left out for single-channel outputs.
    multiple : int, optional
        Tile sizes are multiples of this; default ``2**depth`` with ``depth`` the largest number of
        downsampling layers in one (sub-)model.
    halo : int, optional
        Pixels cropped from each tile's border; default ``max(64, 4 * multiple)`` rounded to ``multiple``.

    Raises
    ------
    ValueError
        No normalisation, an unreadable file, custom or Lambda layers, not a single-channel 2-D image model,
        or an output/channel that does not exist.

    Examples
    --------
    >>> m = load_keras_member("unet.keras", normalization="percentile:1,99.8")   # doctest: +SKIP
    >>> prob, _ = m.predict(image)                                              # doctest: +SKIP
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Keras model not found: {p}")
    if not is_keras_model(p):
        raise ValueError(f"a Keras model must be a {'/'.join(KERAS_SUFFIXES)} file; got {p}")
    norm = parse_normalization(normalization)
    keras = import_keras()
    from keras.src.saving import serialization_lib

    try:
        with serialization_lib.SafeModeScope(True):  # Lambda layers (marshalled Python) are refused
            model = keras.models.load_model(p, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types (ValueError, TypeError, OSError, ...)
        raise ValueError(f"cannot load the Keras model {p} without running code (custom or Lambda layers are "
                         f"refused): {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    channels_first = _layout(model)
    outs = [tuple(t.shape) for t in model.outputs]
    if not 0 <= int(output) < len(outs):
        raise ValueError(f"the Keras model {p.name} has {len(outs)} output(s); output {output} does not exist")
    shape = outs[int(output)]
    n_ch = shape[1] if channels_first else shape[-1]
    if len(shape) != 4 or n_ch is None:
        raise ValueError(f"output {output} of the Keras model {p.name} has shape {shape}; expected 4-D images")
    if output_channel is None:
        if int(n_ch) != 1:
            raise ValueError(f"output {output} of the Keras model {p.name} has {n_ch} channels; say which one is the "
                             "foreground probability (output_channel)")
        output_channel = 0
    if not 0 <= int(output_channel) < int(n_ch):
        raise ValueError(f"output {output} of the Keras model {p.name} has {n_ch} channels; channel {output_channel} "
                         "does not exist")
    m = int(multiple) if multiple else 2 ** _downsampling_depth(model)
    h = int(halo) if halo is not None else max(64, 4 * m)
    h = int(math.ceil(h / m) * m)
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    fmt = "keras_v3" if p.suffix.lower() == ".keras" else "keras_hdf5"
    logger.info("Keras model %s: %s, channels %s, tiles of multiples of %d px, halo %d, normalisation %s",
                p.name, fmt, "first" if channels_first else "last", m, h, norm)
    return KerasMember(path=p, name=name or p.stem, weight_format=fmt, normalization=norm,
                       channels_first=channels_first, output_index=int(output), output_channel=int(output_channel),
                       multiple=m, halo=h, sha256=sha, model=model)
