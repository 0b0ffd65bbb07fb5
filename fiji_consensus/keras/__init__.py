"""The Keras / TensorFlow backend: our ensembles as Keras models and TensorFlow SavedModels; Keras models
as ensemble members.

Needs the ``keras`` extra (``pip install 'fiji-consensus[keras]'``: Keras 3 with the TensorFlow CPU
backend). Importing this package is cheap: TensorFlow and Keras are imported only inside the functions of
its modules, so ``import fiji_consensus`` never loads them.

* :mod:`fiji_consensus.keras.export`: :func:`~fiji_consensus.keras.export.build_keras_ensemble` rebuilds an
  :class:`fiji_consensus.nn.ensemble_net.EnsembleNet` (members, test-time views, sigmoid, mean and
  uncertainty) as a Keras model from the members' weights (weight-shared: one U-Net per member, the views as
  flip/transpose ops; or, for ``keras_hdf5``, built-in layers only), and
  :func:`~fiji_consensus.keras.export.package_weights` writes it into a bioimage.io package as
  ``tensorflow_saved_model_bundle`` (declaring :data:`~fiji_consensus.keras.export.TENSORFLOW_VERSION`) and,
  on request, ``keras_hdf5`` weights.
* :mod:`fiji_consensus.keras.member`: :func:`~fiji_consensus.keras.member.load_keras_member` loads a plain
  ``.keras`` / ``.h5`` model with an explicit normalisation as one member of a package ensemble.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "KERAS_FORMATS": "export",
    "TENSORFLOW_VERSION": "export",
    "bioimageio_scratch": "_backend",
    "build_keras_ensemble": "export",
    "keras_unet": "export",
    "package_weights": "export",
    "save_saved_model": "export",
    "tensorflow_formats": "export",
    "KerasMember": "member",
    "is_keras_model": "member",
    "load_keras_member": "member",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
