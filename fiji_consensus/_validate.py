"""Checks at the public boundary.

Every check raises a :class:`ValueError` (or :class:`TypeError`) whose message names the argument, what
was expected and what was received, so a user never has to read a traceback to learn what went wrong.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

__all__ = [
    "ignore_mask",
    "as_binary",
    "as_mask_stack",
    "as_image_2d",
    "as_label_image",
    "check_same_shape",
    "require",
]


def require(module: str, *, extra: str) -> Any:
    """Import an optional heavy dependency, or say which extra installs it.

    >>> np_ = require("numpy", extra="core")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{module!r} is needed for this feature but is not installed; "
            f"install it with: pip install 'fiji-consensus[{extra}]'"
        ) from exc


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def as_image_2d(image: Any, *, name: str = "image") -> np.ndarray:
    """Return ``image`` as a 2-D numpy array or raise a clear error (3-D stacks are not supported yet)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        raise ValueError(
            f"{name} must be a 2-D (Y, X) grayscale array; got an RGB(A) {_describe(arr)}: "
            "convert it to one channel first"
        )
    if arr.ndim != 2:
        extra = " (3-D stacks are not supported yet)" if arr.ndim == 3 else ""
        raise ValueError(f"{name} must be a 2-D (Y, X) array{extra}; got {_describe(arr)}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got {_describe(arr)}")
    return arr


def as_binary(mask: Any, *, name: str = "mask") -> np.ndarray:
    """Return a boolean copy of a binary mask given as bool, 0/1 or 0/255; anything else is an error."""
    arr = np.asarray(mask)
    if arr.dtype == bool:
        return arr.copy()
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be a numeric or boolean array; got {_describe(arr)}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must not contain NaN or infinite values")
    if np.issubdtype(arr.dtype, np.integer) and arr.size:
        # fast path (no sort): 0/1 or 0/255 integer masks are checked with min/max and one count
        lo, hi = arr.min(), arr.max()
        if lo >= 0 and (hi <= 1 or (hi == 255 and np.count_nonzero(arr) == np.count_nonzero(arr == 255))):
            return arr > 0
    values = np.unique(arr)
    if values.size > 2 or not set(values.tolist()) <= {0, 1} and not set(values.tolist()) <= {0, 255}:
        shown = values[:8].tolist()
        raise ValueError(
            f"{name} must be binary (0/1, 0/255 or bool); got {values.size} distinct values "
            f"{shown}{' ...' if values.size > 8 else ''}. For label images use the label-image readers."
        )
    return arr > 0


def as_mask_stack(masks: Any, *, name: str = "masks", min_raters: int = 1) -> np.ndarray:
    """Return an ``(R, Y, X)`` boolean stack of binary masks, validating shape and values.

    A list of 2-D arrays is stacked (all must have one shape).
    """
    if isinstance(masks, (list, tuple)):
        if len(masks) == 0:
            raise ValueError(f"{name} must hold at least {min_raters} mask(s); got an empty sequence")
        arrays = [np.asarray(m) for m in masks]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(
                f"all {name} must have the same shape; got shapes {[a.shape for a in arrays]}"
            )
        arr = np.stack(arrays)
    else:
        arr = np.asarray(masks)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (n_experts, Y, X); got {_describe(arr)}")
    if arr.shape[0] < min_raters:
        raise ValueError(f"{name} must hold at least {min_raters} experts; got {arr.shape[0]}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} must not be empty; got {_describe(arr)}")
    return as_binary(arr, name=name)


def ignore_mask(ignore: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """The one ignore rule of the scores: ``None``, or a binary mask (bool, 0/1 or 0/255) of exactly ``shape``,
    returned as bool (True = left out).

    >>> ignore_mask([[0, 1]], (1, 2)).tolist(), ignore_mask(None, (1, 2))
    ([[False, True]], None)
    """
    if ignore is None:
        return None
    ign = as_binary(ignore, name="ignore")
    if ign.shape != tuple(shape):
        raise ValueError(f"ignore must have the same shape as the masks {tuple(shape)}; got {ign.shape}")
    return ign


def check_same_shape(a: np.ndarray, b: np.ndarray, *, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise if two arrays differ in shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape; got {a.shape} and {b.shape}"
        )


def as_label_image(labels: Any, *, name: str = "labels") -> np.ndarray:
    """Return a 2-D non-negative integer label image (bool becomes int32 0/1) or raise a clear error."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        rgb = arr.ndim == 3 and arr.shape[-1] in (3, 4)
        extra = " (an RGB image? convert it to labels first)" if rgb else ""
        raise ValueError(f"{name} must be a 2-D (Y, X) label image{extra}; got an array of shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.int32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label image (integers >= 0); got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0; got minimum {arr.min()}")
    return arr
