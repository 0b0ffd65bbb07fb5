"""The bundled real sample: 5 images of Segebarth et al. 2020, lab-wue1, with 5 experts and est_GT.

Real fluorescence microscopy (cFOS, 1024x1024, 8-bit) annotated independently by five experts; ``est_GT`` is
the authors' published consensus (``SimpleITK.STAPLE(masks) > 0.5``). Apache License 2.0; cite
Segebarth et al., eLife 9:e59780 (2020), doi:10.7554/eLife.59780.

>>> from fiji_consensus import datasets
>>> sample = datasets.load_sample()
>>> sample.ids
['0001', '0015', '0062', '0076', '0092']
>>> sample.masks("0001").shape
(5, 1024, 1024)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from . import io

__all__ = ["SAMPLE_CITATION", "SAMPLE_LICENSE", "SAMPLE_MIN_SIZE", "Sample", "sample_dir", "load_sample"]

SAMPLE_CITATION = (
    "Segebarth D, Griebel M, Stein N, et al. (2020). On the objectivity, reliability, and validity of deep "
    "learning enabled bioimage analyses. eLife 9:e59780. doi:10.7554/eLife.59780"
)
SAMPLE_LICENSE = "Apache-2.0"
SAMPLE_MIN_SIZE = 30
"""MIN_PIXEL of lab-wue1 in the paper (the smallest area annotated by an expert)."""


def sample_dir() -> Path:
    """Folder of the bundled sample (``images/``, ``labels/expert_k/``, ``labels/est_GT/``, ``groups.csv``)."""
    return Path(str(resources.files("fiji_consensus") / "data" / "segebarth2020_wue1"))


@dataclass(frozen=True)
class Sample:
    """The bundled sample, read lazily."""

    root: Path

    @cached_property
    def dataset(self) -> io.ExpertDataset:
        labels = self.root / "labels"
        experts = sorted(p for p in labels.iterdir() if p.name.startswith("expert_"))
        return io.open_dataset(self.root / "images", experts)

    @property
    def ids(self) -> list[str]:
        return self.dataset.ids

    @property
    def experts(self) -> list[str]:
        return self.dataset.expert_names

    @property
    def expert_dirs(self) -> list[Path]:
        return [self.root / "labels" / e for e in self.experts]

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def reference_dir(self) -> Path:
        return self.root / "labels" / "est_GT"

    def image(self, image_id: str) -> np.ndarray:
        """The image, uint8 (Y, X)."""
        return io.read_image(self.dataset.images[image_id])

    def masks(self, image_id: str) -> np.ndarray:
        """The experts' masks as a bool ``(n_experts, Y, X)`` stack, experts in :attr:`experts` order."""
        _, ann, _ = self.dataset.load(image_id)
        return np.stack([ann[e] > 0 for e in self.experts])

    def est_gt(self, image_id: str) -> np.ndarray:
        """The published consensus (bool (Y, X))."""
        (path,) = io.pair_annotations([image_id], self.reference_dir, expert="est_GT").values()
        return io.read_mask(path)

    @cached_property
    def groups(self) -> dict[str, str]:
        """Image id → group id (``groups_wue1.csv`` of the paper)."""
        with open(self.root / "groups.csv", encoding="utf-8") as fh:
            return {row["file_id"]: row["group_id"] for row in csv.DictReader(fh)}


def load_sample() -> Sample:
    """Return the bundled lab-wue1 sample (5 images, 5 experts, est_GT)."""
    return Sample(sample_dir())
