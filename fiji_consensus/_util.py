"""Small rules every layer needs, each in one place: the SHA-256 of a file, strict-JSON cleaning, and the
lazy names of a package whose backend is imported only on first use (``lazy_getattr``).

>>> json_safe({"a": float("nan"), "b": [np.float32(0.5), np.int64(3), np.bool_(True)], 1: Path("x")})
{'a': None, 'b': [0.5, 3, True], '1': 'x'}
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["sha256_file", "json_safe", "lazy_getattr"]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (memory stays flat for large weights or images).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "f.txt"; _ = p.write_bytes(b"abc")
    ...     sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts: NaN and ±inf become ``None``,
    numpy scalars Python ones, tuples lists, paths strings and mapping keys strings. Other objects are
    returned as they are (pass ``default=str`` to :func:`json.dumps` for those)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def lazy_getattr(
    package: str, exports: dict[str, str], before: Callable[[str], None] | None = None
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: name ``n`` of ``exports`` (name -> submodule) is imported
    from ``package.<exports[n]>`` when first used (``before(submodule)`` runs first, e.g. to name a missing
    extra), so importing the package itself stays cheap.

    >>> getattr_ = lazy_getattr("fiji_consensus", {"sha": "_util"})
    >>> getattr_("sha")
    Traceback (most recent call last):
    ...
    AttributeError: module 'fiji_consensus._util' has no attribute 'sha'
    >>> lazy_getattr("fiji_consensus", {"json_safe": "_util"})("json_safe") is json_safe
    True
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if before is not None:
            before(exports[name])
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
