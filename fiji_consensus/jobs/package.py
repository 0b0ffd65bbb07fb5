"""The ``package`` job: an ensemble as one bioimage.io model (:func:`fiji_consensus.zoo.package_ensemble`).

The job adds one thing to the zoo layer's packaging: ``domain_labs``, the labs a model was trained on, read
here (each image with its experts' STAPLE consensus) so that a model that stores no training range of image
statistics gets one in its package, and ``predict`` can warn about images unlike its training images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["run_package"]


def run_package(config: Any) -> dict[str, Any]:
    """Run :func:`fiji_consensus.zoo.package_ensemble` from a :class:`fiji_consensus.config.PackageConfig`."""
    from .. import zoo

    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_dump().items()}
    labs = opts.pop("domain_labs")
    pairs = _lab_images(labs) if labs else None
    return zoo.package_ensemble(opts.pop("model"), opts.pop("out"), domain_images=pairs, **opts)


def _lab_images(labs: Sequence[Path]) -> Iterator[tuple[Any, Any]]:
    """Each image of the labs with its experts' STAPLE consensus, read one lab at a time when drawn."""
    from .crossval import load_lab

    for path in labs:
        lab = load_lab(path)
        log.info("training range of image statistics: %d images of %s", len(lab.ids), lab.name)
        yield from zip(lab.images, lab.consensus("staple"))
