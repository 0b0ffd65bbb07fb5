"""One of our own packages as an :class:`~fiji_consensus.nn.ensemble.Ensemble` of U-Nets (for fine-tuning and
for fiji-consensus's own predictor): the ``pytorch_state_dict`` weights read as tensors only, checked against
their SHA-256, into our :class:`~fiji_consensus.nn.unet.UNet`; no code from the package runs."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import load_yaml, package_source, read_rdf

__all__ = ["ensemble_from_package"]


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
    from .._validate import require

    torch = require("torch", extra="train")
    from ..nn.ensemble import Ensemble

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no bioimage.io package at {path}")
    rdf, read = _open(path)
    fc, kwargs, sd = _our_weights(path, rdf, read)
    cfg = dict(kwargs["unet_config"])
    n = int(kwargs.get("n_members", 0))
    members = _unets(path, sd, cfg, n, device)
    meta = _metadata(path, rdf, fc, cfg, n, halo=members[0].halo)
    listed = meta["members"]
    return Ensemble(
        members=members, indices=[int(m.get("index", k)) for k, m in enumerate(listed)],
        normalization=meta["normalization"], halo=int(meta["architecture"]["halo"]), threshold=meta["threshold"],
        metadata=meta, path=path, device=torch.device(device), object_threshold=meta["object_threshold"],
    )


def _open(path: Path) -> tuple[dict[str, Any], Callable[[str], bytes]]:
    """The package's description and a reader of its files (a zip or a folder)."""
    if path.is_dir():
        rdf_file = package_source(path)
        if rdf_file == path:
            raise ValueError(f"{path} holds no rdf.yaml or bioimageio.yaml: not a bioimage.io package")
        return load_yaml(rdf_file.read_text(encoding="utf-8")), lambda name: (path / name).read_bytes()
    try:
        rdf = read_rdf(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is not a zip file: {exc}") from exc

    def read(name: str) -> bytes:
        with zipfile.ZipFile(path) as zf:
            return zf.read(name)

    return rdf, read


def _our_weights(path: Path, rdf: dict[str, Any], read: Callable[[str], bytes]) -> tuple[dict, dict, dict]:
    """``config.fiji_consensus``, the EnsembleNet's kwargs and its state dict (tensors only, SHA-256 checked);
    packages that are not ours are refused."""
    from ..nn.ensemble import load_state_dict

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
    sd = load_state_dict(io.BytesIO(data), name=f"{weights['source']} in {path}")  # tensors only, or refused
    return fc, kwargs, sd


def _unets(path: Path, sd: dict[str, Any], cfg: dict[str, Any], n: int, device: str) -> list[Any]:
    """The ``n`` members (``members.<k>.`` of the EnsembleNet's state dict) as U-Nets in eval mode."""
    from ..nn.unet import UNet

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
    return members


def _metadata(path: Path, rdf: dict[str, Any], fc: dict[str, Any], cfg: dict[str, Any], n: int, *,
              halo: int) -> dict[str, Any]:
    """The ensemble's metadata (as ``ensemble.json`` holds it) from ``config.fiji_consensus``."""
    arch = dict(fc.get("architecture") or {})
    arch.setdefault("name", "UNet")
    arch["config"] = cfg
    arch.setdefault("halo", halo)
    listed = list(fc.get("members") or [])  # the packaged members, in weight order
    if len(listed) != n:
        listed = [{"index": k, "selected": True} for k in range(n)]
    return {
        "name": rdf.get("name"),
        "format_version": fc.get("ensemble_json_format_version"),
        "architecture": arch,
        "normalization": dict(fc["normalization"]),
        "threshold": float(fc.get("threshold", 0.5)),
        "object_threshold": None if fc.get("object_threshold") is None else float(fc["object_threshold"]),
        "min_size": int(fc.get("min_size", 0) or 0),
        "domain": fc.get("domain"),  # the training range of image statistics: kept through a repackaging
        "members": listed,
        "training": fc.get("training"),
        "provenance": {**(fc.get("provenance") or {}), "package": str(path)},
        "validation": fc.get("validation"),
    }
