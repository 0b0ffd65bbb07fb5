"""A whole ensemble as one network: K U-Nets x test-time views -> mean probability and an uncertainty map.

:class:`EnsembleNet` is what a bioimage.io package of an ensemble runs (:mod:`fiji_consensus.zoo`): one
``(N, 1, h, w)`` float32 input (normalised as in training), two ``(N, 1, h, w)`` float32 outputs,
``probability`` (mean foreground probability over members x views, sigmoid inside the members) and
``uncertainty`` (one measure of :mod:`fiji_consensus.uncertainty`, absolute scale), returned as a **list**
``[probability, uncertainty]``: deepImageJ's PyTorch engine (JDLL, libtorch 2.0.1) reads a Tensor or a list
of Tensors from ``forward`` and refuses a tuple; bioimageio.core and the ONNX exporter take either. It uses only plain
operations (convolutions, batch/group normalisation, ReLU, max-pooling, transposed convolutions, cat,
sigmoid, flip/transpose, mean, log, sqrt), so the TorchScript and ONNX (opset 17) exports run in old
runtimes such as deepImageJ's.

This file is also the architecture source of the ``pytorch_state_dict`` weights of a package: it is
appended to ``unet.py`` by :func:`architecture_source`, which gives one self-contained file.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .unet import UNet

__all__ = ["EnsembleNet", "ENSEMBLE_VIEWS", "ENSEMBLE_MEASURES", "architecture_source"]

#: Test-time views (the names of :data:`fiji_consensus.nn.predict.VIEWS`).
ENSEMBLE_VIEWS = ("identity", "flip_y", "flip_x", "rot180", "rot90", "rot270", "transpose", "antitranspose")

#: Uncertainty measures (the names of :data:`fiji_consensus.uncertainty.MEASURES`).
ENSEMBLE_MEASURES = ("entropy", "expected_entropy", "mutual_information", "std", "deepflash2")

_LN2 = math.log(2.0)
_EPS = 1e-7  # probabilities are clamped to [eps, 1 - eps] before log: entropies are off by < 3e-6 bits


def _forward_view(t: torch.Tensor, view: str) -> torch.Tensor:
    if view == "identity":
        return t
    if view == "flip_y":
        return t.flip([2])
    if view == "flip_x":
        return t.flip([3])
    if view == "rot180":
        return t.flip([2, 3])
    if view == "rot90":
        return t.transpose(2, 3).flip([2])
    if view == "rot270":
        return t.flip([2]).transpose(2, 3)
    if view == "transpose":
        return t.transpose(2, 3)
    if view == "antitranspose":
        return t.flip([2, 3]).transpose(2, 3)
    raise ValueError(f"unknown view {view!r}; expected one of {ENSEMBLE_VIEWS}")


def _inverse_view(t: torch.Tensor, view: str) -> torch.Tensor:
    if view == "rot90":
        return _forward_view(t, "rot270")
    if view == "rot270":
        return _forward_view(t, "rot90")
    if view == "antitranspose":
        return t.transpose(2, 3).flip([2, 3])
    return _forward_view(t, view)  # the flips, rot180 and transpose are their own inverses


def check_views_and_measure(views: Any, measure: str) -> tuple[str, ...]:
    """The test-time views as a tuple, after checking them (:data:`ENSEMBLE_VIEWS`, at least one) and the
    uncertainty measure (:data:`ENSEMBLE_MEASURES`)."""
    names = tuple(str(v) for v in views)
    if not names or any(v not in ENSEMBLE_VIEWS for v in names):
        raise ValueError(f"views must be a non-empty list of {ENSEMBLE_VIEWS}; got {list(names)}")
    if measure not in ENSEMBLE_MEASURES:
        raise ValueError(f"measure must be one of {ENSEMBLE_MEASURES}; got {measure!r}")
    return names


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    q = p.clamp(_EPS, 1.0 - _EPS)
    return -(q * torch.log(q) + (1.0 - q) * torch.log(1.0 - q)) / _LN2


class EnsembleNet(nn.Module):
    """K U-Nets (same architecture) x test-time views as one network with two outputs.

    Parameters
    ----------
    unet_config : dict
        The :class:`UNet` configuration (``ensemble.json``'s ``architecture.config``); single channel.
    n_members : int
        Number of members (K).
    views : sequence of str
        Test-time views applied around every member (:data:`ENSEMBLE_VIEWS`); ``("identity",)`` for none.
        Rotations by 90 degrees need tiles whose height and width are both multiples of ``2**depth``.
    measure : str
        The uncertainty output (:data:`ENSEMBLE_MEASURES`), computed over the K x V samples as
        :func:`fiji_consensus.uncertainty.ensemble_statistics` does (entropies in bits, std with ddof 0).

    ``forward(x)`` takes ``(N, 1, h, w)`` (``h, w`` multiples of ``2**depth``) and returns the list
    ``[probability, uncertainty]``, both ``(N, 1, h, w)`` float32 (a list, not a tuple: what deepImageJ's
    TorchScript engine reads).

    Examples
    --------
    >>> net = EnsembleNet({"depth": 2, "base_channels": 4}, n_members=2, views=("identity", "flip_x"))
    >>> p, u = net.eval()(torch.rand(1, 1, 32, 32))
    >>> tuple(p.shape), tuple(u.shape)
    ((1, 1, 32, 32), (1, 1, 32, 32))
    """

    def __init__(
        self,
        unet_config: dict[str, Any],
        n_members: int,
        views: Any = ("identity",),
        measure: str = "entropy",
    ) -> None:
        super().__init__()
        if int(n_members) < 1:
            raise ValueError(f"n_members must be >= 1; got {n_members}")
        views = check_views_and_measure(views, measure)
        cfg = dict(unet_config)
        if int(cfg.get("in_channels", 1)) != 1 or int(cfg.get("out_channels", 1)) != 1:
            raise ValueError(f"EnsembleNet needs single-channel U-Nets (in/out 1); got config {cfg}")
        self.members = nn.ModuleList([UNet(**cfg) for _ in range(int(n_members))])
        self.views = views
        self.measure = measure
        self.unet_config = cfg

    def samples(self, x: torch.Tensor) -> torch.Tensor:
        """The member x view probabilities, ``(K * V, N, 1, h, w)``, member-major (as EnsemblePredictor)."""
        out = []
        for member in self.members:
            for v in self.views:
                out.append(_inverse_view(member(_forward_view(x, v)), v))
        return torch.stack(out)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s = self.samples(x)
        mean = s.mean(0)
        if self.measure == "std":
            unc = torch.sqrt(((s - mean) ** 2).mean(0))
        elif self.measure == "deepflash2":
            unc = 4.0 * mean * (1.0 - mean)
        elif self.measure == "entropy":
            unc = _entropy_bits(mean)
        elif self.measure == "expected_entropy":
            unc = _entropy_bits(s).mean(0)
        else:  # mutual_information
            unc = (_entropy_bits(mean) - _entropy_bits(s).mean(0)).clamp(0.0, 1.0)
        return [mean, unc]


def architecture_source() -> str:
    """One self-contained Python file defining :class:`UNet` and :class:`EnsembleNet` (needs only torch).

    It is ``unet.py`` followed by this module without its relative import, the architecture source that
    a bioimage.io ``pytorch_state_dict`` weights entry names (callable ``EnsembleNet``).
    """
    from pathlib import Path

    here = Path(__file__).resolve().parent
    unet = (here / "unet.py").read_text(encoding="utf-8")
    this = (here / "ensemble_net.py").read_text(encoding="utf-8")
    drop = ("from __future__ import annotations", "from .unet import UNet")
    this = "\n".join(line for line in this.splitlines() if line.strip() not in drop)
    head = "# fiji-consensus: a U-Net ensemble as one network (fiji_consensus/nn/unet.py + ensemble_net.py)\n"
    return head + unet + "\n\n# ---- ensemble_net.py ----\n" + this + "\n"
