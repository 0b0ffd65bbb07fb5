"""The Java door: ImageJ/Fiji from Python, with ImageJ1 classes only.

Two ways in, one code path after that:

* a **pyimagej gateway** (``connect(ij)`` with a gateway from a user's script or napari-imagej, or
  ``connect(fiji_dir="Fiji.app")``, which starts one with pyimagej), or
* **plain ImageJ1** through JPype (``connect()``): ``ij.jar`` from ``ij_jar=``, the ``IJ_JAR`` environment
  variable (a jar, or an ImageJ/Fiji folder whose ``jars/ij-*.jar`` is used) or Debian's ``libij-java``.

Every image, ROI and overlay function below uses only ImageJ1 classes (``ij.ImagePlus``, processors,
``ij.gui.Roi``/``Overlay``, ``ij.io.RoiDecoder``/``RoiEncoder``), which are the same classes under a pyimagej
gateway, so the same code serves both. Java ROIs and :class:`roifile.ImagejRoi` objects are converted through
their bytes (``RoiEncoder`` / ``RoiDecoder.openFromByteArray``), the ROI file format, so a ROI keeps its name,
colours, group, position and properties both ways; ImageJ alone decides what the bytes mean (roifile's public
decoder and encoder on the Python side, with a small faster encoder for the kinds pushed most; all ROIs of an
overlay are encoded in one Java stream; 10,000 ROIs take well under 1 s each way).

The package, along its seams: :mod:`.jvm` (JVM start, :func:`connect`), :mod:`.images` (numpy ↔ ImagePlus,
calibration, the probability image, saving and showing), :mod:`.roi_bytes` (ROIs ↔ bytes ↔ Java ROIs),
:mod:`.pull` and :mod:`.push` (ROIs from and into overlays and the ROI Manager), :mod:`.operations`
(consensus and prediction on an open image) and :mod:`.macros` (macro install; no Java).

``import fiji_consensus.fiji`` imports no Java module: jpype, scyjava and imagej are imported inside the
functions, and a JVM starts on the first call that needs one (``connect()`` with its defaults). A JVM can start
only once per process and cannot be restarted.

>>> from fiji_consensus import fiji                                          # doctest: +SKIP
>>> imp = fiji.to_imageplus(image, title="0001", pixel_size=0.5, unit="um")  # doctest: +SKIP
>>> fiji.consensus(imp, method="staple")   # the experts' ROIs are in imp's overlay  # doctest: +SKIP
"""

from __future__ import annotations

from .images import Calibration, from_imageplus, get_calibration, probability_image, save_tiff, show, to_imageplus
from .jvm import DEBIAN_IJ_JAR, Connection, connect, connection, find_ij_jar
from .macros import HELPERS, MACROS, TOOLSET, install_macros, macro_files, macro_text, model_summary, write_macros
from .operations import consensus, predict
from .pull import pull_experts, pull_rois, rasterize, split_by_expert
from .push import push_consensus, push_labels, push_rois
from .roi_bytes import from_java_roi, to_java_roi

__all__ = [
    "Calibration",
    "Connection",
    "connect",
    "connection",
    "find_ij_jar",
    "to_imageplus",
    "from_imageplus",
    "get_calibration",
    "to_java_roi",
    "from_java_roi",
    "pull_rois",
    "split_by_expert",
    "rasterize",
    "pull_experts",
    "push_rois",
    "push_labels",
    "push_consensus",
    "consensus",
    "predict",
    "probability_image",
    "save_tiff",
    "show",
    "install_macros",
    "write_macros",
    "macro_files",
    "macro_text",
    "model_summary",
    "MACROS",
    "TOOLSET",
]
