"""Packaging: an ensemble folder (or one of our packages) becomes one bioimage.io model package, in named
steps: check the request (:func:`_check_request`), read the ensemble and what the package will say
(:func:`_plan`), run the network on a real crop (:func:`_test_sample`), write the files into a staging folder
(:func:`_write_files`, :func:`_write_weights`), describe them (:mod:`.describe`) and move the zip in
atomically (:func:`_save_zip`). The weights: TorchScript, ONNX (:func:`export_torchscript`,
:func:`export_onnx`) and the state dict, all of one :class:`~fiji_consensus.nn.ensemble_net.EnsembleNet`."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import sha256_file
from ..uncertainty import MEASURES
from ._common import (
    ONNX_MAX_IR_VERSION,
    ONNX_OPSET,
    REPO_ROOT,
    TF_WEIGHT_FORMATS,
    WEIGHT_FORMATS,
    is_package,
    made_by_us,
    require_zoo,
)
from .card import model_card, read_card_notes
from .cover import choose_crop, cover, write_png
from .metadata import absolute_paths, check_name, dataset_doc, parse_person, portable, read_validation
from .metadata import training_data as read_training_data

__all__ = ["package_ensemble", "onnx_versions", "build_net", "export_torchscript", "export_onnx"]


@dataclass
class Plan:
    """What a package will hold, read and checked before anything is written."""

    out: Path
    model_dir: Path
    ens: Any  # the members (fiji_consensus.nn.ensemble.Ensemble)
    meta: dict[str, Any]  # ensemble.json's metadata, provenance made portable
    name: str
    description: str | None
    views: tuple[str, ...]
    measure: str
    formats: list[str]
    people: list[dict[str, str]]
    keepers: list[dict[str, str]]
    data_descr: dict[str, Any] | None
    card_notes: dict[str, str] | None
    validation: dict[str, Any] | None
    license: str
    tags: Sequence[str]
    version: str
    roots: list[Path] = field(default_factory=lambda: [REPO_ROOT, Path.cwd()])

    @property
    def unet_config(self) -> dict[str, Any]:
        return dict(self.meta["architecture"]["config"])

    @property
    def halo(self) -> int:
        return int(self.ens.halo)

    @property
    def threshold(self) -> float:
        return float(self.ens.threshold)

    @property
    def object_threshold(self) -> float | None:
        return self.ens.object_threshold

    @property
    def min_size(self) -> int:
        return int((self.meta.get("training") or {}).get("min_size", 0) or 0)


@dataclass
class TestSample:
    """The test crop of a real image and the network's outputs on it (test tensors, TIFF samples, cover)."""

    __test__ = False  # not a pytest class

    source: str  # where the image came from
    crop: np.ndarray
    y0: int
    x0: int
    size: int
    smin: int  # the input's ParameterizedSize (min, step)
    step: int
    lo: float  # the crop's normalisation percentiles
    hi: float
    x_in: np.ndarray  # (1, 1, size, size) float32, as given to the package
    x_norm: np.ndarray  # the same normalised, as the network sees it
    prob: np.ndarray
    unc: np.ndarray


def package_ensemble(
    model: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None, description: str | None = None,
    tta: str | Sequence[str] = "flips", uncertainty: str = "entropy", image: Any = None, channel: int | None = None,
    tile: int = 256, validation: str | os.PathLike | None = None,
    authors: Sequence[str | dict[str, str]] = ("fiji-consensus",), license: str = "MIT", tags: Sequence[str] = (),
    version: str = "0.1.0", weight_formats: Sequence[str] = WEIGHT_FORMATS, card: str | os.PathLike | None = None,
    overwrite: bool = False, test: bool = False, maintainers: Sequence[str | dict[str, str]] = (),
    training_data: str | os.PathLike | dict[str, Any] | None = None,
    card_notes: str | os.PathLike | dict[str, str] | None = None,
    domain_images: Iterable[tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """Package an ensemble folder (or one of our packages) as one bioimage.io model (a ``.zip``); see
    :mod:`fiji_consensus.zoo`.

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
        Held-out scores (json; see :func:`~fiji_consensus.zoo.metadata.read_validation`); default
        ``validation.json`` or ``bench_results.json`` in the model folder when present.
    authors, maintainers :
        People (:func:`~fiji_consensus.zoo.metadata.parse_person`: ``"Name; affiliation=...; github_user=...;
        orcid=..."``); maintainers need a GitHub user, which bioimageio.spec verifies online (offline
        validation fails on users it does not know).
    license, tags, version :
        Package metadata (license: an SPDX id); :data:`~fiji_consensus.zoo.DEFAULT_TAGS` are always added.
    training_data : str, path-like or dict, optional
        The training data as a bioimage.io dataset description: a name of
        :data:`~fiji_consensus.zoo.TRAINING_DATA` (``"segebarth2020"``), a JSON file or a dict (name,
        description, authors, license, tags).
    card_notes : path-like or dict, optional
        Hand-written additions to the model card by section (:func:`~fiji_consensus.zoo.read_card_notes`).
    weight_formats : sequence of str
        Subset of :data:`~fiji_consensus.zoo.WEIGHT_FORMATS`; ``pytorch_state_dict`` is always written (the
        parent of the others).
    card : path-like, optional
        Also write the model card (the package's documentation) here, e.g. ``model_zoo/<name>/README.md``.
    domain_images : iterable of (image, foreground mask), optional
        The model's training images with their consensus, for a model that stores no training range of
        image statistics (:mod:`fiji_consensus.domain`; trained before it was recorded): the package gets
        the range from them. Refused for a model that has one, before any pair is drawn (a generator that
        reads them is never started).
    overwrite : bool
        Replace an existing package (and card).
    test : bool
        Run :func:`~fiji_consensus.zoo.test_package` on the written package and put the result in the summary.

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
    require_zoo()
    t0 = time.perf_counter()
    out = Path(out)
    formats = _check_request(out, card=card, overwrite=overwrite, measure=uncertainty, weight_formats=weight_formats)
    plan = _plan(Path(model), out, name=name, description=description, tta=tta, measure=uncertainty,
                 formats=formats, validation=validation, authors=authors, maintainers=maintainers,
                 training_data=training_data, card_notes=card_notes, license=license, tags=tags, version=version)
    if domain_images is not None:
        _add_domain(plan, domain_images)
    net = build_net(plan.ens, views=plan.views, measure=plan.measure)
    sample = _test_sample(plan, net, image=image, channel=channel, tile=tile)
    doc = _card(plan)
    with _staging(out) as work:
        _write_files(work, plan, sample, doc)
        onnx_info = _write_weights(work, net, sample.x_norm, plan.formats)
        from .describe import model_descr, weights_descr

        weights = weights_descr(plan, work, net, sample.x_norm)
        descr = model_descr(plan, sample, work, weights=weights, n_params=sum(int(p.numel()) for p in net.parameters()))
        _save_zip(descr, work, out, overwrite=overwrite)
    if card is not None:
        from .._atomic import atomic_open

        with atomic_open(card, "w", overwrite=overwrite) as fh:
            fh.write(doc)
    summary = _summary(plan, sample, onnx_info, seconds=time.perf_counter() - t0)
    return _tested(summary, out) if test else summary


def _add_domain(plan: Plan, pairs: Iterable[tuple[Any, Any]]) -> None:
    """Put the training range of image statistics of ``pairs`` (image, foreground) into the plan's metadata.

    A model that stores a range already keeps it; only the statistics it lacks (added to
    :data:`fiji_consensus.domain.STATISTICS` after it was trained) are fitted on ``pairs``. Refused when it
    lacks none: the pairs would change nothing.
    """
    from ..domain import fit_reference, image_stats, missing_statistics, normalization_percentiles

    stored = plan.meta.get("domain") or {}
    missing = missing_statistics(stored)
    if stored and not missing:
        raise ValueError(f"{plan.model_dir} already stores the training range of every image statistic; the "
                         "training labs are only needed for a model that lacks some")
    pct = normalization_percentiles(plan.meta["normalization"])
    stats = [image_stats(np.asarray(im), np.asarray(fg) > 0.5, percentiles=pct) for im, fg in pairs]
    fitted = fit_reference(stats)
    prov = plan.meta["provenance"]
    if stored:
        added = {n: fitted["statistics"][n] for n in missing if n in fitted["statistics"]}
        plan.meta["domain"] = {**stored, "statistics": {**(stored.get("statistics") or {}), **added}}
        source = f"{', '.join(added) or 'nothing'} from {len(stats)} training images"
        plan.meta["provenance"] = {**prov, "domain_from": f"{prov['domain_from']}; {source}"
                                   if prov.get("domain_from") else source}
    else:
        plan.meta["domain"] = fitted
        plan.meta["provenance"] = {**prov, "domain_from": f"{len(stats)} training images"}


def _tested(summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """The summary with ``bioimageio test``'s result (``ok`` is then the test's)."""
    from .runtime import test_package

    res = test_package(out)
    summary.update(test=res, ok=bool(res["ok"]))
    if not res["ok"]:
        summary["error"] = f"bioimageio test failed: {res['error']}"
    return summary


def _check_request(out: Path, *, card: Any, overwrite: bool, measure: str, weight_formats: Sequence[str]) -> list[str]:
    """Refuse what cannot be written; the weight formats to write (``pytorch_state_dict`` always, first)."""
    from .._atomic import check_writable

    if out.suffix.lower() != ".zip":
        raise ValueError(f"the package must be a .zip file; got {out}")
    check_writable(out, overwrite=overwrite)
    if out.exists() and not made_by_us(out):  # --overwrite replaces only a package we wrote
        raise FileExistsError(
            f"{out} exists and is not a package made by fiji-consensus; it is never replaced, also not with "
            "--overwrite: choose another file"
        )
    if card is not None:
        check_writable(card, overwrite=overwrite)
    if measure not in MEASURES:
        raise ValueError(f"uncertainty must be one of {MEASURES}; got {measure!r}")
    bad = [w for w in weight_formats if w not in WEIGHT_FORMATS + TF_WEIGHT_FORMATS]
    if bad or not weight_formats:
        raise ValueError(f"weight_formats must be a non-empty subset of {WEIGHT_FORMATS + TF_WEIGHT_FORMATS}; "
                         f"got {list(weight_formats)}")
    formats = [w for w in WEIGHT_FORMATS if w in weight_formats or w == "pytorch_state_dict"]
    if any(w in TF_WEIGHT_FORMATS for w in weight_formats):  # the keras extra
        from ..keras.export import tensorflow_formats

        formats += tensorflow_formats(weight_formats, measure=measure)
    return formats


def _plan(model_dir: Path, out: Path, *, name: str | None, description: str | None, tta: Any, measure: str,
          formats: list[str], validation: Any, authors: Sequence[Any], maintainers: Sequence[Any],
          training_data: Any, card_notes: Any, license: str, tags: Sequence[str], version: str) -> Plan:
    """Read the ensemble (a folder, or one of our packages: its members, metadata and scores) and check
    what the package will say about it."""
    from ..nn.ensemble import load_ensemble
    from ..nn.predict import resolve_views
    from .members import ensemble_from_package

    views = resolve_views(tta)
    from_package = is_package(model_dir) and not (model_dir.is_dir() and (model_dir / "ensemble.json").is_file())
    ens = ensemble_from_package(model_dir) if from_package else load_ensemble(model_dir)
    roots = [REPO_ROOT, Path.cwd()]
    prov = dict(ens.metadata.get("provenance") or {})
    if from_package:  # where the members came from, not where that file lay on this machine
        prov.pop("package", None)
        prov["repackaged_from"] = model_dir.name
    meta = dict(ens.metadata, provenance=portable(prov, roots))
    people = [parse_person(a) for a in authors]
    if not people:
        raise ValueError("give at least one author")
    keepers = [parse_person(m, maintainer=True) for m in maintainers]
    data_descr = read_training_data(training_data)
    if isinstance(card_notes, (str, os.PathLike)):
        card_notes = read_card_notes(card_notes)
    cfg = dict(meta["architecture"]["config"])
    if int(cfg.get("in_channels", 1)) != 1 or int(cfg.get("out_channels", 1)) != 1:
        raise ValueError(f"only single-channel ensembles can be packaged; this one has config {cfg}")
    if meta["normalization"].get("method") != "scale_range":
        raise ValueError(f"unsupported normalisation {meta['normalization']} (expected scale_range)")
    name = check_name(name, model_dir)
    if from_package and not validation and meta.get("validation"):
        val = read_validation(Path(model_dir.name), model_dir, data=meta["validation"])
    else:
        val = read_validation(Path(validation) if validation else None, ens.path or model_dir)
    return Plan(out=out, model_dir=model_dir, ens=ens, meta=meta, name=name, description=description, views=views,
                measure=measure, formats=formats, people=people, keepers=keepers, data_descr=data_descr,
                card_notes=card_notes, validation=val, license=license, tags=tags, version=version, roots=roots)


def _read_sample_image(image: Any, channel: int | None) -> tuple[np.ndarray, str]:
    """The image of the test tensors (a file, an array, or the bundled sample) and where it came from."""
    from ..io import read_input

    if image is None:
        from ..datasets import sample_dir

        arr, _ = read_input(sample_dir() / "images" / "0001.png")
        return arr, "bundled sample lab-wue1/0001 (Segebarth et al. 2020)"
    if isinstance(image, (str, os.PathLike)):
        arr, _ = read_input(Path(image), channel=channel)
        return arr, Path(image).name
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image must be a 2-D array or an image file; got an array of shape {arr.shape}")
    return arr, "array"


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


def _test_sample(plan: Plan, net: Any, *, image: Any, channel: int | None, tile: int) -> TestSample:
    """The crop with the most structure of a valid tile size, and the network's outputs on it."""
    import torch

    from ..nn.data import apply_percentiles, compute_percentiles

    img, source = _read_sample_image(image, channel)
    smin, step, size = _test_size(plan.ens.depth, plan.halo, int(tile), min(img.shape))
    y0, x0 = choose_crop(img, size)
    crop = img[y0 : y0 + size, x0 : x0 + size]
    norm = plan.ens.normalization
    lo, hi = compute_percentiles(crop, low=norm["min_percentile"], high=norm["max_percentile"])
    x_norm = apply_percentiles(crop, lo, hi, eps=norm["eps"])[None, None]
    with torch.no_grad():
        p_t, u_t = net(torch.from_numpy(np.ascontiguousarray(x_norm)))
    return TestSample(source=source, crop=crop, y0=y0, x0=x0, size=size, smin=smin, step=step, lo=lo, hi=hi,
                      x_in=crop.astype(np.float32)[None, None], x_norm=x_norm,
                      prob=p_t.numpy().astype(np.float32), unc=u_t.numpy().astype(np.float32))


def _card(plan: Plan) -> str:
    """The model card; refused if it would name an absolute path of this machine."""
    doc = model_card(plan.meta, name=plan.name, measure=plan.measure, views=plan.views, validation=plan.validation,
                     description=plan.description, package_file=plan.out.name, weight_formats=plan.formats,
                     notes=plan.card_notes, authors=plan.people, training_data=plan.data_descr)
    if absolute_paths(doc):
        raise ValueError(f"the model card would name absolute paths of this machine: {absolute_paths(doc)}")
    return doc


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh staging folder beside ``out`` (removed afterwards; those of killed runs are removed first)."""
    from .._atomic import remove_temporary

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_temporary(out.parent, recursive=False, dirs_prefix=out.stem)  # left by killed runs of this package
    work = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_files(work: Path, plan: Plan, sample: TestSample, doc: str) -> None:
    """Test tensors, TIFF samples, the cover, the card, the training data's description, the architecture."""
    import tifffile

    from ..nn.ensemble_net import architecture_source

    np.save(work / "test_input.npy", sample.x_in)
    np.save(work / "test_probability.npy", sample.prob)
    np.save(work / "test_uncertainty.npy", sample.unc)
    tifffile.imwrite(work / "sample_input.tif", sample.crop.astype(np.float32))
    tifffile.imwrite(work / "sample_probability.tif", sample.prob[0, 0])
    tifffile.imwrite(work / "sample_uncertainty.tif", sample.unc[0, 0])
    write_png(work / "cover.png", cover(sample.crop, sample.prob[0, 0], sample.unc[0, 0], measure=plan.measure,
                                        threshold=plan.threshold, min_size=plan.min_size))
    (work / "documentation.md").write_text(doc, encoding="utf-8")
    if plan.data_descr:
        (work / "training_data.md").write_text(dataset_doc(plan.data_descr), encoding="utf-8")
    (work / "ensemble_net.py").write_text(architecture_source(), encoding="utf-8")


def _write_weights(work: Path, net: Any, x_norm: np.ndarray, formats: Sequence[str]) -> tuple[int, int] | None:
    """The state dict, and the TorchScript and ONNX weights asked for; ONNX's (IR version, opset) if written."""
    import torch

    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, work / "weights.pt")
    example = torch.from_numpy(np.ascontiguousarray(x_norm))
    if "torchscript" in formats:
        export_torchscript(net, example, work / "weights_torchscript.pt")
    if "onnx" in formats:
        return export_onnx(net, example, work / "weights.onnx")
    return None


def _save_zip(descr: Any, work: Path, out: Path, *, overwrite: bool) -> None:
    """Write the package zip in the staging folder and move it to ``out`` (never over a file that appeared)."""
    from bioimageio.spec import save_bioimageio_package

    from ._common import quiet_bioimageio

    with quiet_bioimageio():
        tmp_zip = save_bioimageio_package(descr, output_path=work / out.name)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} appeared while it was being written; not replacing it")
    os.replace(tmp_zip, out)


def _summary(plan: Plan, sample: TestSample, onnx_info: tuple[int, int] | None, *, seconds: float) -> dict[str, Any]:
    out = plan.out
    return {
        "ok": True,
        "command": "package",
        "out": str(out.resolve()),
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
        "name": plan.name,
        "members": len(plan.ens.members),
        "views": list(plan.views),
        "measure": plan.measure,
        "weight_formats": plan.formats,
        "onnx": {"ir_version": onnx_info[0], "opset": onnx_info[1]} if onnx_info else None,
        "test_shape": [1, 1, sample.size, sample.size],
        "tile_min": sample.smin,
        "tile_step": sample.step,
        "halo": plan.halo,
        "validation": plan.validation is not None,
        "seconds": seconds,
    }


# --------------------------------------------------------------------------------------------- the weights


def build_net(ensemble: Any, *, views: Sequence[str], measure: str) -> Any:
    """The members, the views and the uncertainty measure as one network (what the package runs)."""
    from ..nn.ensemble_net import EnsembleNet

    cfg = dict(ensemble.metadata["architecture"]["config"])
    net = EnsembleNet(cfg, n_members=len(ensemble.members), views=tuple(views), measure=measure)
    for dst, src in zip(net.members, ensemble.members):
        dst.load_state_dict(src.state_dict())
    return net.eval()


def export_torchscript(net: Any, example: Any, path: Path) -> None:
    """Traced TorchScript; its forward returns the list [probability, uncertainty] (what deepImageJ reads)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notices about TorchScript itself
        # strict=False: forward returns a list (what deepImageJ's engine reads), fixed in length
        traced = torch.jit.trace(net, example, check_trace=False, strict=False)
        torch.jit.save(traced, str(path))


def export_onnx(net: Any, example: Any, path: Path) -> tuple[int, int]:
    """ONNX by the legacy exporter (opset 17, IR version <= 8: deepImageJ's onnxruntime 1.13 loads it)."""
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


def onnx_versions(path: str | os.PathLike) -> tuple[int, int]:
    """``(ir_version, default-domain opset)`` of an ONNX file (deepImageJ needs IR <= 8, opset <= 17)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    opset = max((int(o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return int(m.ir_version), opset
