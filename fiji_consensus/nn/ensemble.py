"""The ensemble folder: ``ensemble.json`` + one weight file per member; saving (atomic) and loading (safe).

Layout of ``models/<name>/``::

    ensemble.json          format, architecture (UNet config, receptive field, halo), normalisation,
                           threshold, members (file, sha256, seed, split, best iteration, validation
                           scores, selected), training config, provenance (image ids, splits, seeds,
                           package versions, ...)
    member_<k>.pt          state_dict of member k (tensors only; loaded with ``weights_only=True``)
    logs/member_<k>.csv    per-member training log (iteration, loss, lr, validation scores, seconds)
    checkpoints/           resume state while training (removed when training finishes unless kept)

Weights are loaded with ``torch.load(..., weights_only=True)`` and checked against the SHA-256 recorded in
``ensemble.json``, so a shared folder cannot run code on the user's machine.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_path
from .._util import json_safe, sha256_file  # noqa: F401  (their one home; kept importable from here)
from .data import apply_percentiles, compute_percentiles, pad_to_multiple
from .unet import UNet

__all__ = ["Ensemble", "load_ensemble", "save_ensemble", "ensemble_json_file", "FORMAT", "FORMAT_VERSION", "ENSEMBLE_JSON"]

log = logging.getLogger(__name__)

FORMAT = "fiji-consensus-ensemble"
FORMAT_VERSION = 1
ENSEMBLE_JSON = "ensemble.json"


def _disk_full(path: Path, exc: OSError) -> OSError:
    return OSError(
        errno.ENOSPC,
        f"no space left on the device while writing {path}: free some space or write the model to "
        f"another folder (the files written so far are intact; training can resume)",
    )


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename; a full disk gives a clear error."""
    path = Path(path)
    try:
        buf = io.BytesIO()  # saving to memory first makes the bytes independent of the temporary name
        torch.save(obj, buf)
        with atomic_path(path, overwrite=True) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(buf.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(path, exc) from exc
        raise


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write text atomically (temporary file + rename); a full disk gives a clear error."""
    path = Path(path)
    try:
        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _disk_full(path, exc) from exc
        raise


def _refusal_reason(text: str) -> str | None:
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return f"the Python object {m.group(1)}"
    m = re.search(r"Unsupported operand \d+", text)
    return m.group(0) if m else None


def load_state_dict(
    path: Any, *, map_location: str | torch.device = "cpu", name: str | None = None
) -> dict[str, Any]:
    """Load a weight or checkpoint file (a path, or a file object with ``name``) without unpickling arbitrary
    objects (``weights_only=True``).

    A file holding anything but tensors and plain containers is refused with one line that says so and why
    (unpickling it could run code); a corrupt file with one line too. Neither suggests turning the
    protection off.
    """
    label = name or str(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:
        reason = _refusal_reason(str(exc)) or "not a plain tensor pickle"
        raise ValueError(
            f"refusing to unpickle {label}: it holds more than tensors ({reason}), and unpickling that can run "
            "code; fiji-consensus loads only plain weights"
        ) from None
    except Exception as exc:  # truncated or corrupt archives
        text = " ".join(str(exc).split())
        raise ValueError(
            f"cannot read {label} as weights: the file is corrupt or truncated ({type(exc).__name__}: {text[:100]})"
        ) from None


def save_ensemble(
    out_dir: str | os.PathLike,
    state_dicts: dict[int, dict[str, torch.Tensor]],
    metadata: dict[str, Any],
) -> Path:
    """Write member weights and ``ensemble.json`` (last, so a complete json means a complete folder).

    ``metadata["members"]`` must list one dict per member with an ``index``; ``file`` and ``sha256`` are
    filled in here. Returns the path of ``ensemble.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    members = []
    for m in meta["members"]:
        m = dict(m)
        k = int(m["index"])
        fname = f"member_{k}.pt"
        if k in state_dicts:
            sd = {n: t.detach().to("cpu").contiguous() for n, t in state_dicts[k].items()}
            torch_save_atomic(sd, out / fname)
        if not (out / fname).is_file():
            raise FileNotFoundError(f"weights of member {k} missing: {out / fname}")
        m["file"] = fname
        m["sha256"] = sha256_file(out / fname)
        members.append(m)
    meta["members"] = members
    path = out / ENSEMBLE_JSON
    write_text_atomic(json.dumps(json_safe(meta), indent=2, allow_nan=False) + "\n", path)
    return path


@dataclass
class Ensemble:
    """A loaded ensemble: members in eval mode plus what is needed to use them.

    Attributes
    ----------
    members : list of UNet
        The selected members (eval mode, on ``device``).
    indices : list of int
        Member indices (as in ``ensemble.json``) of ``members``.
    normalization : dict
        ``{"method": "scale_range", "mode": "per_sample", "min_percentile", "max_percentile", "eps", ...}``.
    halo : int
        Pixels to crop on each side of a tile (receptive-field radius rounded up to a multiple of 2**depth).
    metadata : dict
        The full ``ensemble.json``.
    object_threshold : float or None
        Objects count only where their peak probability exceeds it (hysteresis,
        :func:`fiji_consensus.instances.foreground`; chosen by ``calibrate``); None: every object.
    """

    members: list[UNet]
    indices: list[int]
    normalization: dict[str, Any]
    halo: int
    threshold: float
    metadata: dict[str, Any] = field(repr=False)
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    object_threshold: float | None = None

    @property
    def depth(self) -> int:
        return int(self.metadata["architecture"]["config"]["depth"])

    @property
    def tile_multiple(self) -> int:
        return 2**self.depth

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """Per-image percentile normalisation exactly as in training."""
        n = self.normalization
        lo, hi = compute_percentiles(image, low=n["min_percentile"], high=n["max_percentile"])
        return apply_percentiles(image, lo, hi, eps=n["eps"])

    @torch.no_grad()
    def predict_members(self, image: np.ndarray, *, normalize: bool = True) -> np.ndarray:
        """Foreground probability of every member for a whole 2-D image: ``(M, Y, X)`` float32.

        The image is mirror-padded to a multiple of ``2**depth`` and run in one piece (for large images
        use tiled prediction with :attr:`halo`).
        """
        from .._validate import as_image_2d

        img = as_image_2d(image, name="image")
        x = self.normalize(img) if normalize else np.asarray(img, np.float32)
        xp, (y, w) = pad_to_multiple(x, self.tile_multiple)
        t = torch.from_numpy(np.ascontiguousarray(xp, dtype=np.float32))[None, None].to(self.device)
        out = [m(t)[0, 0, :y, :w].float().cpu().numpy() for m in self.members]
        return np.stack(out)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Mean foreground probability of the members, ``(Y, X)`` float32."""
        return self.predict_members(image).mean(axis=0)


def ensemble_json_file(path: str | os.PathLike) -> Path:
    """The ``ensemble.json`` of an ensemble folder (or the file itself): a clear error for anything else
    (ValueError for another kind of file, FileNotFoundError when there is none)."""
    p = Path(path)
    if p.is_dir():
        p = p / ENSEMBLE_JSON
    elif p.is_file() and p.name != ENSEMBLE_JSON:
        raise ValueError(
            f"{p}: expected an ensemble folder (holding {ENSEMBLE_JSON}), its {ENSEMBLE_JSON} or one of our "
            f"bioimage.io packages; got a {p.suffix or 'plain'} file"
        )
    if not p.is_file():
        raise FileNotFoundError(f"no {ENSEMBLE_JSON} found at {p}: is this an ensemble folder?")
    return p


def load_ensemble(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    include_rejected: bool = False,
    verify: bool = True,
) -> Ensemble:
    """Load an ensemble folder written by :func:`~fiji_consensus.nn.train.train_ensemble`.

    Parameters
    ----------
    path : path-like
        The folder (or its ``ensemble.json``).
    device : str or torch.device
        Where to put the members.
    include_rejected : bool
        Also load members that the paper's selection rule rejected.
    verify : bool
        Check every weight file's SHA-256 against ``ensemble.json``.

    Examples
    --------
    >>> ens = load_ensemble("models/wue1")                           # doctest: +SKIP
    >>> prob = ens.predict(image)                                    # doctest: +SKIP
    """
    p = ensemble_json_file(path)
    folder = p.parent
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p} is not a {FORMAT} file; got format {meta.get('format')!r}")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ValueError(
            f"{p} has format_version {meta.get('format_version')}, newer than this package reads "
            f"({FORMAT_VERSION}); update fiji-consensus"
        )
    arch = meta["architecture"]
    if arch.get("name") != "UNet":
        raise ValueError(f"unknown architecture {arch.get('name')!r} in {p}")
    dev = torch.device(device)
    members, indices = [], []
    for m in meta["members"]:
        if not m.get("selected", True) and not include_rejected:
            continue
        wpath = folder / m["file"]
        if not wpath.is_file():
            raise FileNotFoundError(f"member {m['index']} weights missing: {wpath}")
        if verify and m.get("sha256") and sha256_file(wpath) != m["sha256"]:
            raise ValueError(f"member {m['index']} weights {wpath} do not match the SHA-256 in {p}")
        net = UNet.from_config(arch["config"])
        sd = load_state_dict(wpath, map_location="cpu")
        try:
            net.load_state_dict(sd)
        except RuntimeError as exc:
            raise ValueError(f"{wpath} does not fit the architecture in {p}: {exc}") from exc
        members.append(net.to(dev).eval())
        indices.append(int(m["index"]))
    if not members:
        raise ValueError(f"{p} lists no usable member (all rejected?); pass include_rejected=True")
    return Ensemble(
        members=members,
        indices=indices,
        normalization=dict(meta["normalization"]),
        halo=int(arch["halo"]),
        threshold=float(meta.get("threshold", 0.5)),
        metadata=meta,
        path=folder,
        device=dev,
        object_threshold=_optional_float(meta.get("object_threshold")),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
