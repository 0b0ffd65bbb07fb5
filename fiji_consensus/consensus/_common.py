"""Shared by the consensus methods: argument checks and STAPLE's stopping constants."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fiji_consensus._validate import as_mask_stack, ignore_mask

#: ITK's STAPLE stops when every sensitivity and specificity changed by at most this much between two
#: iterations (it compares the squared change with ``1e-14``).
STAPLE_TOL = 1e-7
#: Default iteration cap. SimpleITK's default is ``2**32 - 1`` (effectively unlimited); on real data the
#: EM converges in tens of iterations, and on ``<= 2**R`` patterns an iteration costs microseconds.
STAPLE_MAX_ITER = 10_000
#: Largest number of distinct pattern codes for which a dense ``bincount`` table is used.
_DENSE_PATTERNS = 1 << 16


def _masks(masks: Any, *, min_raters: int, name: str = "masks") -> np.ndarray:
    """``(R, Y, X)`` C-contiguous bool stack; errors name the argument and what was got."""
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        raise ValueError(
            f"{name} must be (n_experts, Y, X) or a sequence of (Y, X) masks; got a single 2-D mask of "
            f"shape {masks.shape}. Stack the experts' masks along a new first axis"
        )
    if isinstance(masks, np.ndarray) and masks.ndim == 4:
        raise ValueError(
            f"{name} must be (n_experts, Y, X) binary masks (3-D/RGB stacks are not supported); got "
            f"shape {masks.shape}. For RGB masks take one channel, e.g. masks[..., 0] > 0"
        )
    stack = as_mask_stack(masks, name=name, min_raters=min_raters)
    return np.ascontiguousarray(stack)


def _ignore(ignore: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """The scores' one ignore rule (:func:`fiji_consensus._validate.ignore_mask`): None or a bool mask of ``shape``."""
    return ignore_mask(ignore, shape)


def _check_int(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {rng}; got {value}")
    return value


def _check_float(value: Any, name: str, *, lo: float, hi: float, open_: bool = True) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r} ({type(value).__name__})") from None
    ok = (lo < out < hi) if open_ else (lo <= out <= hi)
    if not math.isfinite(out) or not ok:
        br = ("(", ")") if open_ else ("[", "]")
        raise ValueError(f"{name} must lie in {br[0]}{lo}, {hi}{br[1]}; got {value!r}")
    return out


class Convergence:
    """ITK's STAPLE stopping rule: stop after the first iteration (but never the first) in which every
    sensitivity and specificity changed by at most ``tol`` (ITK: squared change ``<= 1e-14``). With
    ``nan_equal``, a value that stays NaN counts as unchanged (the pooled EM: an expert without foreground)."""

    def __init__(self, r: int, tol: float, *, nan_equal: bool = False) -> None:
        self.min_sq = 1e-14 if tol == STAPLE_TOL else tol * tol  # ITK's literal threshold on the squared change
        self.last_p = np.full(r, -10.0)
        self.last_q = np.full(r, -10.0)
        self.nan_equal = nan_equal

    def reached(self, it: int, p: np.ndarray, q: np.ndarray) -> bool:
        """Whether iteration ``it`` (from 0), which gave ``p`` and ``q``, ends the EM."""
        if it != 0:
            dp, dq = p - self.last_p, q - self.last_q
            if self.nan_equal:
                dp = np.where(np.isnan(p) & np.isnan(self.last_p), 0.0, dp)
                dq = np.where(np.isnan(q) & np.isnan(self.last_q), 0.0, dq)
            if np.all(dp ** 2 <= self.min_sq) and np.all(dq ** 2 <= self.min_sq):
                return True
        self.last_p, self.last_q = p, q
        return False


def check_em_options(
    prior: float | None, confidence_weight: float, tol: float, max_iter: int
) -> tuple[float | None, float, float, int]:
    """The binary STAPLE EM's options checked (``prior`` in (0, 1) or None, ``tol >= 0``, ``max_iter >= 1``)."""
    if prior is not None:
        prior = _check_float(prior, "prior", lo=0.0, hi=1.0)
    confidence_weight = _check_float(confidence_weight, "confidence_weight", lo=0.0, hi=math.inf)
    tol = _check_float(tol, "tol", lo=0.0, hi=math.inf, open_=False)
    max_iter = _check_int(max_iter, "max_iter", 1)
    return prior, confidence_weight, tol, max_iter
