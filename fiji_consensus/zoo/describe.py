"""The bioimage.io description (format 0.5, bioimageio.spec's Python API) of a packaged ensemble: its input
with the percentile preprocessing, the ``probability`` and ``uncertainty`` outputs with the halo, the weights
and ``config.fiji_consensus``. Every function takes what :mod:`fiji_consensus.zoo.export` has checked and
written into the staging folder ``work``: ``plan`` and ``sample`` are its ``Plan`` and ``TestSample`` records
(not imported here: export imports this module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from .._util import json_safe
from ..uncertainty import MEASURE_RANGE
from ._common import (
    CITATION_DOI,
    CITATION_TEXT,
    DEFAULT_TAGS,
    ONNX_OPSET,
    PYTORCH_MIN_VERSION,
    TF_WEIGHT_FORMATS,
    TOLERANCE,
    UNCERTAINTY_DEFINITIONS,
    quiet_bioimageio,
)
from .metadata import is_segebarth2020, portable

__all__ = ["model_descr", "weights_descr", "dataset_descr"]

_MEMBER_KEYS = ("index", "seed", "sha256", "iterations", "best_iteration", "val_dice", "val_roi_f1", "selected",
                "seconds", "val_images")


def model_descr(plan: Any, sample: Any, work: Path, *, weights: dict[str, Any], n_params: int) -> Any:
    """The package's ``ModelDescr``; the files it names are in ``work`` already."""
    from bioimageio.spec.model import v0_5 as bm

    n, views, measure = len(plan.ens.members), plan.views, plan.measure
    with quiet_bioimageio():  # bioimageio.spec logs FAIR-compliance hints to stderr
        return bm.ModelDescr(
            name=plan.name,
            description=(plan.description or f"U-Net ensemble ({n} members, {len(views)} views) "
                         "trained on multi-expert consensus with fiji-consensus; outputs probability and "
                         f"{measure}")[:1024],
            authors=[bm.Author(**a) for a in plan.people],
            maintainers=[bm.Maintainer(**m) for m in plan.keepers],
            cite=[bm.CiteEntry(text=CITATION_TEXT, doi=bm.Doi(CITATION_DOI))],
            license=bm.LicenseId(plan.license),
            tags=sorted({*DEFAULT_TAGS, *plan.tags}),
            training_data=dataset_descr(plan.data_descr, work / "training_data.md") if plan.data_descr else None,
            version=bm.Version(plan.version),
            documentation=bm.FileDescr(source=work / "documentation.md"),
            covers=[bm.FileDescr(source=work / "cover.png")],
            inputs=[_input_descr(plan, sample, work)],
            outputs=_output_descrs(plan, work),
            weights=bm.WeightsDescr(**weights),
            config={
                "bioimageio": {
                    "reproducibility_tolerance": [TOLERANCE],
                    "architecture_type": "U-Net ensemble",
                    "architecture_description": f"{n} U-Nets x {len(views)} test-time views "
                    "averaged inside one network; outputs mean probability and an uncertainty map",
                    "task": "semantic segmentation with uncertainty",
                    "model_parameter_count": n_params,
                },
                "fiji_consensus": json_safe(portable(_fiji_consensus_config(plan, sample), plan.roots)),
            },
        )


def weights_descr(plan: Any, work: Path, net: Any, x_norm: Any) -> dict[str, Any]:
    """The weights entries: ``pytorch_state_dict`` (the parent), then the formats exported from it."""
    from bioimageio.spec.model import v0_5 as bm

    torch_version = bm.Version(PYTORCH_MIN_VERSION)  # the oldest that loads them, not the one running
    kwargs = {"unet_config": plan.unet_config, "n_members": len(plan.ens.members), "views": list(plan.views),
              "measure": plan.measure}
    weights: dict[str, Any] = {
        "pytorch_state_dict": bm.PytorchStateDictWeightsDescr(
            source=work / "weights.pt",
            architecture=bm.ArchitectureFromFileDescr(
                source=work / "ensemble_net.py", callable=bm.Identifier("EnsembleNet"), kwargs=kwargs
            ),
            pytorch_version=torch_version,
        )
    }
    if "torchscript" in plan.formats:
        weights["torchscript"] = bm.TorchscriptWeightsDescr(
            source=work / "weights_torchscript.pt", pytorch_version=torch_version, parent="pytorch_state_dict"
        )
    if "onnx" in plan.formats:
        weights["onnx"] = bm.OnnxWeightsDescr(
            source=work / "weights.onnx", opset_version=ONNX_OPSET, parent="pytorch_state_dict"
        )
    if any(w in TF_WEIGHT_FORMATS for w in plan.formats):  # the same members rebuilt in Keras
        from ..keras.export import package_weights

        weights.update(package_weights(net, work, x_norm, [w for w in plan.formats if w in TF_WEIGHT_FORMATS]))
    return weights


def _input_descr(plan: Any, sample: Any, work: Path) -> Any:
    """One single-channel image, any size of ``min + n * step``, normalised per image inside (scale_range)."""
    from bioimageio.spec.model import v0_5 as bm

    norm = plan.ens.normalization

    def space(axis: str) -> Any:
        return bm.SpaceInputAxis(id=bm.AxisId(axis), size=bm.ParameterizedSize(min=sample.smin, step=sample.step))

    return bm.InputTensorDescr(
        id=bm.TensorId("input"),
        description="single-channel 2-D image (any intensity range; normalised per image inside)",
        axes=[bm.BatchAxis(), bm.ChannelAxis(channel_names=[bm.Identifier("image")]), space("y"), space("x")],
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


def _output_descrs(plan: Any, work: Path) -> list[Any]:
    """``probability`` and ``uncertainty``, the input's size, with the ensemble's halo."""
    from bioimageio.spec.model import v0_5 as bm

    measure, rng = plan.measure, float(MEASURE_RANGE[plan.measure])

    def space(axis: str) -> Any:
        return bm.SpaceOutputAxisWithHalo(id=bm.AxisId(axis), halo=plan.halo,
                                          size=bm.SizeReference(tensor_id=bm.TensorId("input"), axis_id=bm.AxisId(axis)))

    def output(name: str, channel: str, description: str, upper: float) -> Any:
        return bm.OutputTensorDescr(
            id=bm.TensorId(name), description=description,
            axes=[bm.BatchAxis(), bm.ChannelAxis(channel_names=[bm.Identifier(channel)]), space("y"), space("x")],
            test_tensor=bm.FileDescr(source=work / f"test_{name}.npy"),
            sample_tensor=bm.FileDescr(source=work / f"sample_{name}.tif"),
            data=bm.IntervalOrRatioDataDescr(type="float32", range=(0.0, upper)),
        )

    return [output("probability", "foreground", "mean foreground probability over members x views", 1.0),
            output("uncertainty", measure, f"{measure} over members x views, absolute scale"[:128], rng)]


def _fiji_consensus_config(plan: Any, sample: Any) -> dict[str, Any]:
    """``config.fiji_consensus``: what our tools read back (threshold, measure, members, normalisation,
    provenance, validation, where the test tensors came from)."""
    meta, norm, measure = plan.meta, plan.ens.normalization, plan.measure
    members = [m for m in meta["members"] if int(m["index"]) in plan.ens.indices]
    return {
        "tool": "fiji-consensus",
        "version": __version__,
        "threshold": plan.threshold,
        **({"object_threshold": plan.object_threshold} if plan.object_threshold is not None else {}),
        "min_size": plan.min_size,
        "uncertainty": {"measure": measure, "definition": UNCERTAINTY_DEFINITIONS[measure],
                        "range": [0.0, float(MEASURE_RANGE[measure])], "samples": "members x views"},
        "views": list(plan.views),
        "members": [
            {**{k: m.get(k) for k in _MEMBER_KEYS if k in m},
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
        "validation": plan.validation,
        "test_tensors": {"image": sample.source, "crop": [int(sample.y0), int(sample.x0), int(sample.size),
                                                          int(sample.size)],
                         "percentiles": [sample.lo, sample.hi]},
    }


def dataset_descr(data: dict[str, Any], doc: Path | None = None) -> Any:
    """A bioimage.io dataset description (inline ``training_data``) from
    :func:`~fiji_consensus.zoo.metadata.training_data`'s dict; it cites Segebarth et al. 2020 when it is
    their data (the only data fiji-consensus names itself)."""
    from bioimageio.spec.dataset import v0_3 as dv
    from bioimageio.spec.model import v0_5 as bm

    cite = [bm.CiteEntry(text=CITATION_TEXT, doi=bm.Doi(CITATION_DOI))] if is_segebarth2020(data) else []
    return dv.DatasetDescr(
        name=data["name"], description=data.get("description", ""),
        authors=[bm.Author(**a) for a in data["authors"]], cite=cite,
        license=bm.LicenseId(data["license"]) if data.get("license") else None,
        tags=list(data.get("tags") or []),
        documentation=bm.FileDescr(source=doc) if doc is not None else None,
    )
