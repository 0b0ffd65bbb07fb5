"""How outputs look, defined once: colours of experts, consensus and models, the uncertainty colour map
(ROI outlines, the LUT of the uncertainty channel, the model card's cover), ROI names, and the dtype of
label images.

The uncertainty colour map runs cyan (certain) → yellow → red (maximally uncertain) on the measure's
**absolute** scale (:data:`fiji_consensus.uncertainty.MEASURE_RANGE`), never normalised per image.

>>> uncertainty_color(0.0), uncertainty_color(0.5), uncertainty_color(1.0)
('#00ffff', '#ffff00', '#ff0000')
>>> object_roi_name(7, 0.1324), object_roi_name(7)
('0007_u0.132', '0007')
>>> label_dtype(65535), label_dtype(65536)
(dtype('uint16'), dtype('int32'))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .uncertainty import MEASURE_RANGE

__all__ = [
    "EXPERT_COLORS",
    "CONSENSUS_COLOR",
    "CONSENSUS_FIGURE_COLOR",
    "MODEL_COLORS",
    "UNCERTAINTY_COLORS",
    "uncertainty_color",
    "uncertainty_rgb",
    "uncertainty_lut",
    "object_roi_name",
    "MAX_UINT16_LABEL",
    "label_dtype",
    "as_label_output",
]

#: Stroke colours of the experts' outlines (colour-blind-safe Okabe-Ito palette, then more); also the experts'
#: colours in the report's figures.
EXPERT_COLORS = (
    "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#999999",
    "#882255", "#44AA99", "#117733", "#AA4499",
)
#: Stroke colour of consensus outlines drawn on an image.
CONSENSUS_COLOR = "#FFFFFF"
#: Colour of the consensus in the report's figures (white paper).
CONSENSUS_FIGURE_COLOR = "#000000"
#: Colours of the models in the report's figures.
MODEL_COLORS = ("#D62728", "#9467BD", "#17BECF", "#8C564B", "#BCBD22", "#7F7F7F", "#1F77B4", "#FF7F0E")

#: Stops of the uncertainty colour map: (position in [0, 1] of the measure's range, (R, G, B)).
UNCERTAINTY_COLORS = ((0.0, (0, 255, 255)), (0.5, (255, 255, 0)), (1.0, (255, 0, 0)))

#: Largest label that a uint16 label image holds; above it labels are int32 (:func:`label_dtype`).
MAX_UINT16_LABEL = 65535


def uncertainty_rgb(t: Any) -> np.ndarray:
    """RGB (float, 0..255) of positions ``t`` in [0, 1] on the colour map (clipped), shape ``(..., 3)``.

    >>> uncertainty_rgb([0.0, 0.25]).round(1).tolist()
    [[0.0, 255.0, 255.0], [127.5, 255.0, 127.5]]
    """
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    xs = [a for a, _ in UNCERTAINTY_COLORS]
    return np.stack([np.interp(t, xs, [c[k] for _, c in UNCERTAINTY_COLORS]) for k in range(3)], axis=-1)


def uncertainty_color(value: float, measure: str = "entropy") -> str:
    """``"#RRGGBB"`` of an uncertainty value on the measure's absolute scale (NaN is drawn as certain)."""
    if measure not in MEASURE_RANGE:
        raise ValueError(f"measure must be one of {sorted(MEASURE_RANGE)}; got {measure!r}")
    v = float(value)
    t = v / MEASURE_RANGE[measure] if math.isfinite(v) else 0.0
    rgb = uncertainty_rgb(t)
    return "#" + "".join(f"{int(round(c)):02x}" for c in rgb)


def uncertainty_lut() -> np.ndarray:
    """The colour map as an ImageJ LUT, ``(3, 256)`` uint8 (entry ``i`` is position ``i / 255``; the same for
    every measure, since each channel is written on its measure's absolute range).

    >>> lut = uncertainty_lut(); lut.shape, lut[:, 0].tolist(), lut[:, 255].tolist()
    ((3, 256), [0, 255, 255], [255, 0, 0])
    """
    hexes = [uncertainty_color(i / 255 * MEASURE_RANGE["entropy"]) for i in range(256)]
    return np.array([[int(h[k : k + 2], 16) for h in hexes] for k in (1, 3, 5)], dtype=np.uint8)


def object_roi_name(label: int, mean_uncertainty: float | None = None) -> str:
    """Name of an object's ROI: its label with 4 digits, and its mean uncertainty when known
    (``"0007_u0.132"``), so ImageJ's ROI Manager sorts by object and shows the uncertainty."""
    base = f"{int(label):04d}"
    return base if mean_uncertainty is None else f"{base}_u{float(mean_uncertainty):.3f}"


def label_dtype(max_label: int) -> np.dtype:
    """The one rule for label images written to disk: uint16 up to 65,535 objects (ImageJ's 16-bit), int32
    above (never float)."""
    if int(max_label) < 0:
        raise ValueError(f"max_label must be >= 0; got {max_label}")
    return np.dtype(np.uint16) if int(max_label) <= MAX_UINT16_LABEL else np.dtype(np.int32)


def as_label_output(labels: Any) -> np.ndarray:
    """``labels`` in the dtype of :func:`label_dtype` for its largest label.

    >>> as_label_output(np.array([[0, 70000]])).dtype
    dtype('int32')
    """
    arr = np.asarray(labels)
    return arr.astype(label_dtype(int(arr.max(initial=0))), copy=False)
