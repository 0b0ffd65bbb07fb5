"""bioimageio.core's TensorFlow 2 runner, with the outputs of a SavedModel taken by name.

bioimageio.core 0.11 runs ``tensorflow_saved_model_bundle`` weights through ``keras.layers.TFSMLayer`` and
takes the outputs as ``list(result.values())``: the order of a dict that TensorFlow decodes from a protobuf
map, which the upb protobuf runtime iterates in a per-process random order. A SavedModel with two outputs
(ours: ``probability``, ``uncertainty``) then comes back swapped in about half of all processes. This adapter
(passed to ``create_prediction_pipeline(model_adapter=...)``, a public parameter) takes the outputs by the
description's output ids when the SavedModel's output names are those ids, and behaves as bioimageio.core's
own adapter otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._backend import import_tf


def saved_model_adapter(descr: Any, devices: Sequence[str] | None = None) -> Any:
    """A loaded bioimageio.core model adapter for ``descr``'s ``tensorflow_saved_model_bundle`` weights."""
    import_tf()
    from bioimageio.core.backends.tensorflow_backend import KerasModelAdapter

    class _ByName(KerasModelAdapter):  # type: ignore[misc, valid-type]
        def _forward_impl(self, device: Any, model: Any, input_arrays: Any) -> Any:
            import tensorflow as tf

            ids = [str(t.id) for t in self._model_descr.outputs]
            result = model(*[None if a is None else tf.convert_to_tensor(a) for a in input_arrays])
            if isinstance(result, dict) and set(ids) <= set(result):
                return [None if result[i] is None else result[i].numpy() for i in ids]
            return super()._forward_impl(device, model, input_arrays)

    return _ByName(descr, devices=None)
