"""Small projects cut from the real lab-wue1 data, with annotations removed by design (missing raters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAB = Path(__file__).resolve().parents[1] / "data" / "segebarth2020" / "lab-wue1"
EXPERTS = ("expert_1", "expert_2", "expert_3", "expert_4", "expert_5")


def read_gray(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    a = iio.imread(path)
    return a[..., 0] if a.ndim == 3 else a


def lab_masks(image_id: str, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """``(5, Y, X)`` bool masks of the five experts for one lab-wue1 image (optionally a crop)."""
    sl = window or (slice(None), slice(None))
    return np.stack([read_gray(LAB / "labels" / e / f"{image_id}_cFOS.png")[sl] > 0 for e in EXPERTS])


def make_project(
    root: Path,
    ids: list[str],
    design: dict[str, list[str]] | None = None,
    *,
    window: tuple[slice, slice] = (slice(384, 640), slice(384, 640)),
) -> Path:
    """Write ``root/images`` and ``root/annotations/<expert>/`` from lab-wue1 crops.

    ``design`` maps image id -> the experts who annotated it (default: all five); an expert without any
    image gets no folder.
    """
    import imageio.v3 as iio

    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in ids:
        iio.imwrite(root / "images" / f"{i}.png", read_gray(LAB / "images" / f"{i}.png")[window])
        masks = lab_masks(i, window)
        for k, e in enumerate(EXPERTS):
            if design is None or e in design[i]:
                (root / "annotations" / e).mkdir(parents=True, exist_ok=True)
                iio.imwrite(root / "annotations" / e / f"{i}.png", masks[k].astype(np.uint8) * 255)
    return root
