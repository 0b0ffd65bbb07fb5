"""fiji-consensus: multi-expert consensus, ensembles with uncertainty and bioimage.io models for Fiji users.

Importing the package is cheap: it never imports torch, Java (jpype/scyjava/imagej), bioimageio or dask.
Submodules are loaded on first attribute access.
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_SUBMODULES = {
    "consensus",
    "matching",
    "metrics",
    "rois",
    "io",
    "config",
    "datasets",
}

__all__ = sorted(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
