"""The one place that imports Keras and TensorFlow (lazily, with the TensorFlow backend)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from .._validate import require


def available() -> bool:
    """Whether the ``keras`` extra (Keras 3 and TensorFlow) is installed (nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ("keras", "tensorflow"))


def import_keras() -> Any:
    """Keras 3 on the TensorFlow backend; a clear error naming the extra otherwise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    require("tensorflow", extra="keras")
    keras = require("keras", extra="keras")
    major = int(str(keras.__version__).split(".")[0])
    if major < 3:
        raise ImportError(f"fiji-consensus needs Keras 3; got keras {keras.__version__}: "
                          "pip install 'fiji-consensus[keras]'")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(f"fiji-consensus's Keras code needs the TensorFlow backend; Keras runs on {backend!r} "
                           "(set KERAS_BACKEND=tensorflow before Keras is imported)")
    return keras


def import_tf() -> Any:
    import_keras()
    import tensorflow as tf

    return tf


@contextlib.contextmanager
def bioimageio_scratch() -> Iterator[None]:
    """Run bioimageio.core's TensorFlow runner inside a temporary working directory.

    bioimageio.core 0.11 unzips ``tensorflow_saved_model_bundle`` weights into
    ``./bioimageio_unzipped_tf_weights`` of the current directory; this keeps that out of the user's folder
    (the SavedModel is read into memory when the model is loaded, then the folder is deleted). Paths given
    to the calls inside must be absolute.
    """
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="fiji-consensus-tf-") as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(old)
