"""Small helpers shared by the statistics modules (NaN-aware means, value parsing, map checks)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validate import ignore_mask


def _finite(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def _nanmean(x: Any) -> float:
    a = _finite(x)
    return float(a.mean()) if a.size else math.nan


def _nansd(x: Any) -> float:
    a = _finite(x)
    return float(a.std(ddof=1)) if a.size >= 2 else math.nan


def _float(v: Any) -> float:
    try:
        return float(v) if v is not None and v != "" else math.nan
    except (TypeError, ValueError):
        return math.nan


def _natural_key(s: str) -> tuple:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def _check_maps(*arrays: tuple[str, Any]) -> list[np.ndarray]:
    out = []
    shape = None
    for name, a in arrays:
        arr = np.asarray(a)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (Y, X) array; got shape {arr.shape}")
        if shape is not None and arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}; got {arr.shape}")
        shape = arr.shape
        out.append(arr)
    return out


def _keep(ignore: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The pixels that count: everything but ``ignore`` (the scores' one ignore rule, :func:`ignore_mask`)."""
    ign = ignore_mask(ignore, shape)
    return np.ones(shape, dtype=bool) if ign is None else ~ign
