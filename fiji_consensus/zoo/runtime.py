"""Running any bioimage.io package (ours and others'): :func:`load_package` checks that it takes one 2-D
single-channel image and gives a foreground probability, chooses its weights (code-free formats first;
Python architecture code runs only with ``trust_code``) and starts bioimageio.core's pipeline;
:meth:`Package.predict` tiles an image through it; :func:`predict_packages` makes one or several packages
(x test-time views) an ensemble (:mod:`.prediction`); :func:`test_package` is ``bioimageio test``."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import sha256_file
from ._common import ALL_WEIGHT_FORMATS, RUN_PREFERENCE, TF_WEIGHT_FORMATS, package_source, quiet_bioimageio, require_zoo

__all__ = ["Package", "load_package", "test_package"]

logger = logging.getLogger(__name__)

_BAR_LOCK = threading.Lock()
_bar_off = 0  # how many predictions now run with bioimageio.core's block bar switched off


@contextlib.contextmanager
def _no_block_progress(progress: bool):
    """Turn off bioimageio.core's per-block progress bar unless ``progress``.

    The one use of a private module of bioimageio.core, kept in this function on purpose: the public
    ``PredictionPipeline.predict_sample_with_blocking`` (bioimageio.core 0.11, pinned by the ``zoo`` extra)
    draws a tqdm bar over the blocks and has no switch for it (no argument, no setting; tqdm reads
    ``TQDM_DISABLE`` only when tqdm is first imported). It binds ``tqdm`` by name in
    ``bioimageio.core._prediction_pipeline``, so that name is the only place to turn the bar off. The public
    alternatives are worse: redirecting ``sys.stderr`` would swallow every thread's error output meanwhile,
    and our own block loop over the public ``Sample.split_into_blocks``/``predict_sample_block`` would copy
    bioimageio.core's tiling. Reference-counted under a lock (predictions in threads); when a later
    bioimageio.core lacks the name, the bar simply shows.
    """
    global _bar_off
    try:
        from bioimageio.core import _prediction_pipeline as pp
    except ImportError:  # pragma: no cover - a later bioimageio.core
        pp = None
    if progress or pp is None or not hasattr(pp, "tqdm"):
        yield
        return
    import functools

    import tqdm

    with _BAR_LOCK:
        if _bar_off == 0:
            pp.tqdm = functools.partial(tqdm.tqdm, disable=True)
        _bar_off += 1
    try:
        yield
    finally:
        with _BAR_LOCK:
            _bar_off -= 1
            if _bar_off == 0:
                pp.tqdm = tqdm.tqdm


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
    object_threshold : float or None
        Our package's object threshold (peak probability an object must exceed; ``calibrate``), else None.
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
    pipeline: Any = field(repr=False)
    _param_axes: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    object_threshold: float | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """Our package's ``config.fiji_consensus`` (normalisation, training range of the image statistics,
        ...); empty for foreign packages."""
        cfg = getattr(self.descr, "config", None)
        fc = cfg.get("fiji_consensus") if isinstance(cfg, dict) else getattr(cfg, "fiji_consensus", None)
        return dict(fc) if isinstance(fc, dict) else {}

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
        with quiet_bioimageio(), warnings.catch_warnings(), _no_block_progress(progress):
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


@dataclass
class _Outputs:
    """Which output is the probability (and our uncertainty), with the package's defaults."""

    ours: bool
    probability: str
    uncertainty: str | None
    measure: str | None
    threshold: float
    min_size: int
    channel: int
    object_threshold: float | None = None


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
    require_zoo()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"bioimage.io package not found: {path}")
    descr = _load_description(path)
    name = str(descr.name)
    param_axes = _input_axes(descr, name)
    wf = _choose_weights(descr, name, path, weight_format=weight_format, trust_code=trust_code)
    outs = _outputs(descr, name, output=output, output_channel=output_channel)
    return Package(
        path=path, name=name, weight_format=wf, executes_code=wf == "pytorch_state_dict", ours=outs.ours,
        measure=outs.measure, probability_output=outs.probability, uncertainty_output=outs.uncertainty,
        output_channel=outs.channel, threshold=outs.threshold, min_size=outs.min_size,
        sha256=sha256_file(path) if path.is_file() else "", descr=descr,
        pipeline=_pipeline(descr, wf, device), _param_axes=param_axes, object_threshold=outs.object_threshold,
    )


def _load_description(path: Path) -> Any:
    """The package's model description (format 0.5), or one line saying why it is none."""
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5 as bm

    try:
        with quiet_bioimageio(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            descr = load_description(package_source(path), format_version="latest")
    except Exception as exc:  # unreadable zips and YAML raise many types
        text = " ".join(str(exc).split())
        raise ValueError(
            f"{path} is not a valid bioimage.io description: {type(exc).__name__}: {text[:300]}"
        ) from None
    if isinstance(descr, InvalidDescr):
        raise ValueError(f"{path} is not a valid bioimage.io description: {_first_validation_error(descr)}")
    if getattr(descr, "type", None) != "model" or not isinstance(descr, bm.ModelDescr):
        raise ValueError(f"{path} describes a {getattr(descr, 'type', '?')!r}, not a model (format 0.5)")
    return descr


def _input_axes(descr: Any, name: str) -> dict[str, tuple[int, int]]:
    """Check that the package takes one single-channel 2-D image; its parameterized axes: ``{axis: (min, step)}``."""
    from bioimageio.spec.model import v0_5 as bm

    if len(descr.inputs) != 1:
        raise ValueError(
            f"package {name} has {len(descr.inputs)} inputs ({[str(t.id) for t in descr.inputs]}); fiji-consensus "
            "runs models with one image input"
        )
    inp = descr.inputs[0]
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
    return param_axes


def _choose_weights(descr: Any, name: str, path: Path, *, weight_format: str | None, trust_code: bool) -> str:
    """The weight format to run: the one asked for, else the first of :data:`RUN_PREFERENCE` the package
    has; ``pytorch_state_dict`` (which runs the package's own Python code) only with ``trust_code``."""
    present = [wf for wf in ALL_WEIGHT_FORMATS if getattr(descr.weights, wf, None) is not None]
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
        raise ValueError(f"package {name} has only {present} weights; fiji-consensus runs {list(RUN_PREFERENCE)}")
    if wf in TF_WEIGHT_FORMATS:
        from ..keras._backend import import_keras

        import_keras()  # an ImportError naming the keras extra
    if wf == "pytorch_state_dict" and not trust_code:
        raise PermissionError(
            f"package {name} ({path}) would run its own Python code ({_code_of(descr.weights.pytorch_state_dict)}) "
            f"through its pytorch_state_dict weights{'' if weight_format else ' (it has no onnx or torchscript weights)'}"
            "; refused: run it only if you trust its source, with --trust-code (Python: trust_code=True)"
        )
    if wf == "pytorch_state_dict":
        logger.warning(
            "package %s: running its pytorch_state_dict weights, which execute the architecture code shipped "
            "in the package (it has no torchscript or onnx weights%s); run only packages you trust",
            name, "" if weight_format is None else ", or they were chosen",
        )
    return wf


def _outputs(descr: Any, name: str, *, output: str | None, output_channel: int) -> _Outputs:
    """Our package's ``probability``/``uncertainty`` and defaults, or a foreign package's chosen output."""
    fc = getattr(descr.config, "fiji_consensus", None) if descr.config is not None else None
    out_ids = [str(t.id) for t in descr.outputs]
    if isinstance(fc, dict) and "probability" in out_ids and "uncertainty" in out_ids:
        outs = _Outputs(ours=True, probability="probability", uncertainty="uncertainty",
                        measure=(fc.get("uncertainty") or {}).get("measure"), threshold=float(fc.get("threshold", 0.5)),
                        min_size=int(fc.get("min_size", 0) or 0), channel=0,
                        object_threshold=None if fc.get("object_threshold") is None else float(fc["object_threshold"]))
    else:
        prob_id = output or out_ids[0]
        if prob_id not in out_ids:
            raise ValueError(f"package {name} has no output {prob_id!r}; its outputs are {out_ids}")
        outs = _Outputs(ours=False, probability=prob_id, uncertainty=None, measure=None, threshold=0.5, min_size=0,
                        channel=int(output_channel))
    _check_output_axes(next(t for t in descr.outputs if str(t.id) == outs.probability), name, outs.channel)
    return outs


def _check_output_axes(odescr: Any, name: str, channel: int) -> None:
    """The probability output must have the input's size (no rescaled axes) and the chosen channel."""
    prob_id = str(odescr.id)
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


def _pipeline(descr: Any, wf: str, device: str) -> Any:
    """bioimageio.core's prediction pipeline for the chosen weights."""
    from bioimageio.core import create_prediction_pipeline

    from ..keras._backend import bioimageio_scratch  # TensorFlow weights unzip into the working directory

    with quiet_bioimageio(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if wf == "tensorflow_saved_model_bundle":  # outputs taken by name (fiji_consensus.keras._bioimageio)
            from ..keras._bioimageio import saved_model_adapter

            with bioimageio_scratch():
                return create_prediction_pipeline(descr, weight_format=wf, devices=[device],
                                                  model_adapter=saved_model_adapter(descr))
        return create_prediction_pipeline(descr, weight_format=wf, devices=[device])


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
    require_zoo()
    from bioimageio.core import test_model

    from ..keras._backend import bioimageio_scratch  # TensorFlow weights unzip into the working directory

    with quiet_bioimageio(), warnings.catch_warnings(), bioimageio_scratch():
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
