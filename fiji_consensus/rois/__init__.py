"""Label images and masks <-> ImageJ ROIs, RoiSet zips and TIFF overlays, without a JVM.

Everything here works on :class:`roifile.ImagejRoi` objects, so ROIs read from a RoiSet zip, a single
``.roi`` file or the overlay of an ImageJ TIFF can be rasterised, and masks or label images can be turned
into ROIs that ImageJ/Fiji opens natively.

Rasterisation reproduces ImageJ 1.53t's ``ImageProcessor.fill(Roi)`` pixel for pixel. The ImageJ code that
decides which pixels an area ROI covers is ported here (and checked against the real ``ij.jar`` by the test
suite):

* ``ij.io.RoiDecoder`` -- how a ROI's bytes become bounds and coordinates (signed 16-bit header values,
  relative integer coordinates clamped at 0, absolute float coordinates when the sub-pixel flag is set
  and the file version is >= 222, sub-pixel rectangles and ovals from version 223);
* ``ij.gui.PolygonRoi`` -- integer bounds from float coordinates (``floor``/``ceil`` of the float32 bounds)
  and coordinates relative to them in float32;
* ``ij.process.PolygonFiller`` -- the even-odd scan-line filler with pixel centres at ``+0.5``,
  ``Math.round`` of the vertex y coordinates, ``x + 0.5 * slope + 1e-8`` start values, x positions
  updated by repeated addition of the slope (reproduced bit for bit) and ``(int)(x + 0.5)`` span ends;
* ``ij.gui.OvalRoi.getMask`` -- the analytic ellipse test on the integer bounds;
* ``ij.gui.ShapeRoi`` -- composite ROIs: a float32 ``java.awt.geom.GeneralPath`` (even-odd), its integer
  bounds, Java's ``FlatteningPathIterator`` (flatness 0.01, 10 levels) for curves, then the filler with
  one sub-polygon per sub-path; rounded rectangles go the same way (``RoundRectangle2D``).

Unsupported (a :class:`RoiError` names them): line-type ROIs (straight line, polyline, freeline, angle,
arrow), points, text and image ROIs, spline-fitted polygons, and ImageJ's ellipse and rotated-rectangle
ROIs (ImageJ regenerates those from parameters).

The package is split along those seams: :mod:`.filling` (ImageJ-exact ROI -> mask), :mod:`.tracing`
(label image -> ROIs along pixel edges) and :mod:`.files` (RoiSet zips, ``.roi`` files, TIFF overlays);
every public name is importable from ``fiji_consensus.rois``.
"""

from ._base import SUPPORTED_TYPES, RoiError, roi_type_name
from .files import read_overlay, read_rois, write_imagej_tiff, write_roiset
from .filling import roi_bounds, roi_to_mask, rois_to_labels, rois_to_mask
from .tracing import labels_to_rois, mask_to_rois, set_stroke

__all__ = [
    "RoiError",
    "SUPPORTED_TYPES",
    "read_rois",
    "read_overlay",
    "roi_to_mask",
    "rois_to_labels",
    "rois_to_mask",
    "labels_to_rois",
    "mask_to_rois",
    "write_roiset",
    "write_imagej_tiff",
    "set_stroke",
    "roi_type_name",
    "roi_bounds",
]
