"""bioimage.io packages: a whole ensemble as one model for deepImageJ and bioimage.io; running any package.

**Packaging** (:func:`package_ensemble`, CLI ``fiji-consensus package``): an ensemble folder
(``ensemble.json`` + member weights) becomes one bioimage.io model package (format 0.5, built and validated
with bioimageio.spec's Python API) in which the K members, the test-time views and the sigmoid run inside
one network (:class:`fiji_consensus.nn.ensemble_net.EnsembleNet`):

* input ``input``: axes ``batch, channel (1), y, x``, float32; preprocessing ``scale_range`` over ``y, x``
  with the training percentiles (``min_percentile``, ``max_percentile``, ``eps`` of ``ensemble.json``), which
  is exactly fiji-consensus's per-image percentile normalisation and which deepImageJ implements; ``y, x``
  sizes ``ParameterizedSize(min = 2 * halo + 2**depth, step = 2**depth)``; reflect padding.
* outputs ``probability`` (mean foreground probability over members x views, [0, 1]) and ``uncertainty``
  (one measure of :mod:`fiji_consensus.uncertainty` over the same samples, absolute scale, never rescaled),
  axes ``batch, channel (1), y, x`` with ``halo`` = the ensemble's halo (the receptive-field radius rounded up
  to a multiple of ``2**depth``), so that tiled prediction is seamless.
* weights, all from the same members: ``pytorch_state_dict`` (the architecture as a source file that
  needs only torch), ``torchscript`` (traced) and ``onnx`` (legacy exporter, opset 17, IR version 8, which
  deepImageJ's onnxruntime 1.13 loads).
* test tensors from a real image crop, a TIFF sample for Java tools, a cover (the crop with the predicted
  objects outlined and coloured by their uncertainty, next to the uncertainty map), a documentation with a
  ``# Validation`` section (member and held-out-lab scores, how to run it), the Segebarth et al. 2020
  citation, and ``config.fiji_consensus`` (threshold, min size, the uncertainty's definition, normalisation,
  members, provenance and validation scores from ``ensemble.json``).

**Testing** (:func:`test_package`): bioimageio.core's ``test_model``, offline, for every weight format.

**Running any package** (:func:`load_package`, :func:`predict_packages`, CLI ``fiji-consensus predict
--model PACKAGE.zip``): tiled prediction through bioimageio.core, for our packages and for others'. A foreign
package's first output (channel 0 unless chosen) must be a foreground probability. Several packages form an
ensemble with the same uncertainty measures as our own ensembles (over packages x views). Weights are
chosen in the order onnx, torchscript, pytorch_state_dict: the last executes the package's Python
architecture code, which is logged as a warning.

**The zoo** (:func:`list_zoo`, CLI ``fiji-consensus zoo list``): the packages under ``model_zoo/<name>/``
with their held-out scores.

Needs the ``zoo`` extra (``pip install 'fiji-consensus[zoo]'``: bioimageio.core, onnx, onnxruntime) and
torch; every heavy import is inside the functions.

The modules, one seam each: :mod:`.export` (packaging in named steps; TorchScript, ONNX and state-dict
weights), :mod:`.describe` (the bioimage.io description), :mod:`.card` (the model card), :mod:`.cover`,
:mod:`.metadata` (name, people, training data, held-out scores, portable paths), :mod:`.runtime` (running any
package), :mod:`.members` (our package as an ensemble of U-Nets), :mod:`.catalogue` (the local zoo) and
:mod:`._common` (constants, reading a package's description). Every name below is importable as
``fiji_consensus.zoo.<name>``.
"""

from __future__ import annotations

from ._common import (
    CITATION_DOI,
    CITATION_TEXT,
    DEFAULT_TAGS,
    ONNX_MAX_IR_VERSION,
    ONNX_OPSET,
    PYTORCH_MIN_VERSION,
    RUN_PREFERENCE,
    TF_WEIGHT_FORMATS,
    UNCERTAINTY_DEFINITIONS,
    WEIGHT_FORMATS,
    is_package,
    package_source,
)
from ._common import package_source as _package_source  # noqa: F401  (the old private name)
from ._common import quiet_bioimageio as _quiet_bioimageio  # noqa: F401  (tests and benchmarks use it)
from ._common import read_rdf as _read_rdf  # noqa: F401
from .card import model_card, read_card_notes
from .catalogue import ZOO_ENV, ZOO_HINT, list_zoo, zoo_root
from .export import build_net as _build_net  # noqa: F401
from .export import onnx_versions, package_ensemble
from .members import ensemble_from_package
from .metadata import SEGEBARTH2020_DATASET, TRAINING_DATA, absolute_paths, parse_person
from .prediction import predict_packages
from .runtime import Package, load_package, test_package

__all__ = [
    "WEIGHT_FORMATS",
    "TF_WEIGHT_FORMATS",
    "RUN_PREFERENCE",
    "ONNX_OPSET",
    "ONNX_MAX_IR_VERSION",
    "CITATION_TEXT",
    "CITATION_DOI",
    "UNCERTAINTY_DEFINITIONS",
    "package_ensemble",
    "test_package",
    "onnx_versions",
    "model_card",
    "is_package",
    "package_source",
    "Package",
    "load_package",
    "predict_packages",
    "ensemble_from_package",
    "list_zoo",
    "zoo_root",
    "ZOO_ENV",
    "ZOO_HINT",
    "PYTORCH_MIN_VERSION",
    "DEFAULT_TAGS",
    "TRAINING_DATA",
    "SEGEBARTH2020_DATASET",
    "parse_person",
    "absolute_paths",
    "read_card_notes",
]
