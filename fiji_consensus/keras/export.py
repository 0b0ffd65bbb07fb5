"""A fiji-consensus ensemble as a Keras model, and its TensorFlow weights in a bioimage.io package.

:func:`build_keras_ensemble` rebuilds :class:`fiji_consensus.nn.ensemble_net.EnsembleNet` in Keras from the
members' weights (copied, never retrained): the same input ``(N, 1, h, w)`` float32 and the same two outputs
``probability`` and ``uncertainty`` ``(N, 1, h, w)``. It has two layouts:

* **weight-shared** (the default; the ``tensorflow_saved_model_bundle`` weights): one sub-network
  ``member<k>`` per member, called once per test-time view, the view and its inverse applied to its input
  and output with ``keras.ops.flip`` / ``keras.ops.transpose`` (TensorFlow ``ReverseV2`` / ``Transpose``,
  ops that TensorFlow 1.x has too). The weights are stored once per member, so the SavedModel grows with
  the members, not members x views. Keras has no built-in flip *layer*, so this layout cannot be written
  as ``keras_hdf5`` (the legacy HDF5 format stores layers only; ``Flip`` is an op).
* **built-in layers only** (``builtin_layers_only=True``; the ``keras_hdf5`` weights, opt-in): only
  ``Permute``, ``Conv2D``, ``BatchNormalization`` / ``GroupNormalization``, ``ReLU``, ``MaxPooling2D``,
  ``Conv2DTranspose`` / ``UpSampling2D``, ``Concatenate``, ``Activation``, ``Average``, ``Add``,
  ``Subtract``, ``Multiply``, ``Rescaling``, so the HDF5 file loads without custom objects or Python code,
  as bioimageio.core's ``keras_hdf5`` runner needs. A test-time view of a member is then the member with
  its kernels transformed (a U-Net with "same" padding and 2x2 pooling is equivariant under flips and
  transpositions of tiles whose sides are multiples of ``2**depth``:
  ``inverse_view(unet(view(x))) == unet_with_inverse_view_kernels(x)``), each view of each member one
  sub-network ``member<k>_<view>``: members x views copies of the weights (8 views x 4 members of
  cfos-wue1: about 70 MB).

In both, the U-Net's optional background step (``background_radius``, :class:`fiji_consensus.nn.unet.TopHat`)
is ``x - opening(x)`` from built-in layers: negation by ``Rescaling(-1)``, max-pooling ``(1, k)`` then
``(k, 1)`` with stride 1 and ``padding="same"`` (TensorFlow's "same" max-pooling ignores outside pixels, as
torch's ``-inf`` padding does). Its square window is flip- and transpose-invariant, so it needs no kernel
transform; and

* the logarithms of the uncertainty measures come from ``softplus`` and ``log_softmax``:
  ``log sigmoid(z) = -softplus(-z)`` and ``log mean_s sigmoid(z_s) = logsumexp_s(log sigmoid(z_s)) - log S``,
  with ``logsumexp(a) = mean_s(a_s - log_softmax(a)_s)``, a 1x1 convolution of fixed weights.

The ``std`` measure needs a square root, which no built-in layer computes: its Keras model uses
``keras.ops.sqrt`` and is written only as a SavedModel (no ``keras_hdf5`` weights).

:data:`TENSORFLOW_VERSION` is the ``tensorflow_version`` the packages declare: the newest TensorFlow of
deepImageJ's engines, verified with 2.4.4 and 1.15.0 to load and run the SavedModel
(``tests/benchmarks/bench_old_runtimes.py``), not the newer one that wrote it.

:func:`save_saved_model` writes a TensorFlow SavedModel with one ``serving_default`` signature (input
``input``, outputs ``probability`` and ``uncertainty``), the layout that bioimageio.core (TensorFlow 2:
``TFSMLayer``; TensorFlow 1: ``tf.saved_model.loader``) and deepImageJ's TensorFlow engine read.
:func:`package_weights` writes both formats into a package being built by
:func:`fiji_consensus.zoo.package_ensemble`.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._backend import available, import_keras, import_tf

__all__ = [
    "KERAS_FORMATS",
    "TENSORFLOW_VERSION",
    "tensorflow_formats",
    "keras_unet",
    "build_keras_ensemble",
    "save_saved_model",
    "package_weights",
]

logger = logging.getLogger(__name__)

#: The TensorFlow/Keras weight formats written into a package (both run by bioimageio.core 0.11;
#: deepImageJ's TensorFlow engine runs the SavedModel).
KERAS_FORMATS = ("keras_hdf5", "tensorflow_saved_model_bundle")

#: ``tensorflow_version`` declared for the SavedModel: the newest TensorFlow of deepImageJ's engines (JDLL runs
#: TF 1.15 and TF 2 up to 2.10.1 and picks its engine by this number). TensorFlow 2.10.1, 2.4.4 and 1.15.0 each
#: load and run the SavedModel (TF 2 style and, all three, TF 1 style: a Session) within 1e-5 of the package's
#: test outputs (``tests/benchmarks/bench_old_runtimes.py``), once :func:`_for_old_tensorflow` has removed what
#: newer writers add.
TENSORFLOW_VERSION = "2.10.1"

_VIEWS = ("identity", "flip_y", "flip_x", "rot180", "rot90", "rot270", "transpose", "antitranspose")
_MEASURES = ("entropy", "expected_entropy", "mutual_information", "std", "deepflash2")
_LN2 = math.log(2.0)


def tensorflow_formats(requested: Sequence[str], *, measure: str = "entropy") -> list[str]:
    """The TensorFlow formats of ``requested`` (in :data:`KERAS_FORMATS` order) that a package of this
    uncertainty ``measure`` gets; an ImportError naming the extra when Keras/TensorFlow are missing.

    ``keras_hdf5`` is left out (with a warning) for the ``std`` measure, whose square root has no built-in
    Keras layer; its SavedModel carries it.
    """
    want = [f for f in KERAS_FORMATS if f in requested]
    if want and not available():
        raise ImportError(f"the weight formats {want} need TensorFlow and Keras: pip install 'fiji-consensus[keras]'")
    if "keras_hdf5" in want and not uses_only_builtin_layers(measure):
        logger.warning("no keras_hdf5 weights for the %r uncertainty (its square root needs a layer that is not "
                       "built into Keras); the tensorflow_saved_model_bundle weights carry it", measure)
        want.remove("keras_hdf5")
    return want


# --------------------------------------------------------------------------------------------- one U-Net


def _np(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float32)


def _view_kernel(w: np.ndarray, view: str) -> np.ndarray:
    """The kernel (``(out, in, kh, kw)`` or ``(in, out, kh, kw)``) of the member that computes
    ``inverse_view(member(view(x)))``: the inverse view applied to its spatial axes."""
    if view == "identity":
        return w
    if view == "flip_y":
        return w[:, :, ::-1, :]
    if view == "flip_x":
        return w[:, :, :, ::-1]
    if view == "rot180":
        return w[:, :, ::-1, ::-1]
    if view == "transpose":
        return w.swapaxes(2, 3)
    if view == "rot90":  # inverse = rot270 = flip y then transpose
        return w[:, :, ::-1, :].swapaxes(2, 3)
    if view == "rot270":  # inverse = rot90 = transpose then flip y
        return w.swapaxes(2, 3)[:, :, ::-1, :]
    if view == "antitranspose":
        return w.swapaxes(2, 3)[:, :, ::-1, ::-1]
    raise ValueError(f"unknown view {view!r}; expected one of {_VIEWS}")


def keras_unet(
    config: Mapping[str, Any], state_dict: Mapping[str, Any], *, name: str = "unet", view: str = "identity"
) -> Any:
    """A Keras model computing the logits of :class:`fiji_consensus.nn.unet.UNet` (``forward_logits``).

    Parameters
    ----------
    config : mapping
        The U-Net configuration (``UNet.config``, ``ensemble.json``'s ``architecture.config``).
    state_dict : mapping
        The torch member's ``state_dict`` (tensors or arrays), copied into the Keras layers.
    name : str
        Model name; prefixes every layer name.
    view : str
        A test-time view: the model then computes ``inverse_view(unet(view(x)))`` (see the module docstring).

    Returns
    -------
    keras.Model
        Input ``(N, h, w, in_channels)`` (channels last), output the logits ``(N, h, w, out_channels)``.
    """
    keras = import_keras()
    cfg = {"in_channels": 1, "out_channels": 1, "depth": 3, "base_channels": 16, "norm": "batch", "groups": 8,
           "upsample": "transpose", "convs_per_block": 2, "background_radius": 0, **dict(config)}
    if (cfg["norm"] not in ("batch", "group", "none") or cfg["upsample"] not in ("transpose", "nearest")
            or int(cfg["background_radius"] or 0) < 0):
        raise ValueError(f"unsupported U-Net config {cfg}")
    sd = {k: _np(v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    try:
        return _keras_unet(keras, cfg, sd, name=name, view=view)
    except ValueError as exc:
        if "state dict" in str(exc):
            raise
        raise ValueError(f"the state dict of {name} does not fit the U-Net config {cfg}: {exc}") from exc


def _keras_unet(keras: Any, cfg: dict[str, Any], sd: dict[str, np.ndarray], *, name: str, view: str) -> Any:
    L = keras.layers
    depth, norm, convs = int(cfg["depth"]), str(cfg["norm"]), int(cfg["convs_per_block"])
    used: set[str] = set()

    def w(key: str) -> np.ndarray:
        if key not in sd:
            raise ValueError(f"the state dict of {name} has no {key!r}; does it match the config {cfg}?")
        used.add(key)
        return sd[key]

    def conv_kernel(key: str) -> np.ndarray:  # torch (out, in, kh, kw) / (in, out, kh, kw) -> keras (kh, kw, ., .)
        return np.ascontiguousarray(_view_kernel(w(key), view).transpose(2, 3, 1, 0))

    def block(x: Any, prefix: str, cout: int, lname: str) -> Any:
        for j in range(convs):
            c = f"{prefix}.{3 * j}"
            conv = L.Conv2D(cout, 3, padding="same", use_bias=norm == "none", name=f"{name}_{lname}_conv{j}")
            x = conv(x)
            conv.set_weights([conv_kernel(f"{c}.weight")] + ([w(f"{c}.bias")] if norm == "none" else []))
            n = f"{prefix}.{3 * j + 1}"
            if norm == "batch":
                bn = L.BatchNormalization(epsilon=1e-5, name=f"{name}_{lname}_bn{j}")
                x = bn(x)
                bn.set_weights([w(f"{n}.weight"), w(f"{n}.bias"), w(f"{n}.running_mean"), w(f"{n}.running_var")])
            elif norm == "group":
                gn = L.GroupNormalization(groups=math.gcd(cout, max(1, int(cfg["groups"]))), epsilon=1e-5,
                                          name=f"{name}_{lname}_gn{j}")
                x = gn(x)
                gn.set_weights([w(f"{n}.weight"), w(f"{n}.bias")])
            x = L.ReLU(name=f"{name}_{lname}_relu{j}")(x)
        return x

    ch = [int(cfg["base_channels"]) * 2**i for i in range(depth + 1)]
    inp = keras.Input((None, None, int(cfg["in_channels"])), name=f"{name}_input")
    x, skips = inp, []
    radius = int(cfg.get("background_radius") or 0)
    if radius:  # white top-hat (TopHat): x - dilate(erode(x)); the square window needs no view transform
        k = 2 * radius + 1

        def max_filter(t: Any, tag: str) -> Any:
            t = L.MaxPooling2D((1, k), strides=1, padding="same", name=f"{name}_bg_{tag}_row")(t)
            return L.MaxPooling2D((k, 1), strides=1, padding="same", name=f"{name}_bg_{tag}_col")(t)

        neg = L.Rescaling(-1.0, name=f"{name}_bg_neg")(x)
        eroded = L.Rescaling(-1.0, name=f"{name}_bg_eroded")(max_filter(neg, "erode"))
        x = L.Subtract(name=f"{name}_bg_tophat")([x, max_filter(eroded, "dilate")])
    for i in range(depth):
        x = block(x, f"down.{i}", ch[i], f"down{i}")
        skips.append(x)
        x = L.MaxPooling2D(2, name=f"{name}_pool{i}")(x)
    x = block(x, "bottom", ch[depth], "bottom")
    for j, i in enumerate(reversed(range(depth))):
        if cfg["upsample"] == "transpose":
            up = L.Conv2DTranspose(ch[i], 2, strides=2, name=f"{name}_up{j}")
            u = up(x)
            up.set_weights([conv_kernel(f"up.{j}.weight"), w(f"up.{j}.bias")])
        else:
            u = L.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample{j}")(x)
            up = L.Conv2D(ch[i], 1, name=f"{name}_up{j}")
            u = up(u)
            up.set_weights([conv_kernel(f"up.{j}.1.weight"), w(f"up.{j}.1.bias")])
        x = L.Concatenate(axis=-1, name=f"{name}_cat{j}")([u, skips[i]])
        x = block(x, f"up_blocks.{j}", ch[i], f"upblock{j}")
    head = L.Conv2D(int(cfg["out_channels"]), 1, name=f"{name}_head")
    out = head(x)
    head.set_weights([conv_kernel("head.weight"), w("head.bias")])
    left = sorted(set(sd) - used)
    if left:
        raise ValueError(f"the state dict of {name} has weights the config {cfg} does not use: {left[:5]}")
    return keras.Model(inp, out, name=name)


# --------------------------------------------------------------------------------------------- the ensemble


def _neg_log_sigmoid(L: Any, z: Any, name: str, sign: float = 1.0) -> Any:
    """``-log sigmoid(sign * z) = softplus(-sign * z)`` (built-in layers only)."""
    return L.Activation("softplus", name=f"{name}_softplus")(L.Rescaling(-sign, name=f"{name}_neg")(z))


def _log_mean_sigmoid(L: Any, zs: list[Any], name: str, sign: float = 1.0) -> Any:
    """``log mean_s sigmoid(sign * z_s)`` from built-in layers (module docstring)."""
    a = [L.Rescaling(-1.0, name=f"{name}_a{s}")(_neg_log_sigmoid(L, z, f"{name}_{s}", sign)) for s, z in enumerate(zs)]
    n = len(a)
    if n == 1:
        return a[0]
    cat = L.Concatenate(axis=-1, name=f"{name}_cat")(a)
    lsm = L.Activation("log_softmax", name=f"{name}_log_softmax")(cat)
    diff = L.Subtract(name=f"{name}_lse_terms")([cat, lsm])  # every channel equals logsumexp(a)
    mean = L.Conv2D(1, 1, use_bias=False, trainable=False, name=f"{name}_lse")
    lse = mean(diff)
    mean.set_weights([np.full((1, 1, n, 1), 1.0 / n, np.float32)])
    return L.Rescaling(1.0, offset=-math.log(n), name=f"{name}_log_mean")(lse)


def _entropy_bits(L: Any, p: Any, q: Any, logp: Any, logq: Any, name: str) -> Any:
    """``-(p log p + q log q) / ln 2`` with ``q = 1 - p``."""
    s = L.Add(name=f"{name}_sum")([L.Multiply(name=f"{name}_plogp")([p, logp]),
                                   L.Multiply(name=f"{name}_qlogq")([q, logq])])
    return L.Rescaling(-1.0 / _LN2, name=f"{name}_bits")(s)


def _view_op(ops: Any, t: Any, view: str, *, inverse: bool = False) -> Any:
    """A test-time view of a channels-last tensor ``(N, h, w, C)`` (``EnsembleNet``'s views, axes 1 and 2)."""
    if inverse:  # the flips, rot180 and transpose are their own inverses; rot90 <-> rot270
        if view == "antitranspose":
            return ops.flip(ops.transpose(t, (0, 2, 1, 3)), axis=(1, 2))
        view = {"rot90": "rot270", "rot270": "rot90"}.get(view, view)
    if view == "identity":
        return t
    if view == "flip_y":
        return ops.flip(t, axis=1)
    if view == "flip_x":
        return ops.flip(t, axis=2)
    if view == "rot180":
        return ops.flip(t, axis=(1, 2))
    if view == "rot90":
        return ops.flip(ops.transpose(t, (0, 2, 1, 3)), axis=1)
    if view == "rot270":
        return ops.transpose(ops.flip(t, axis=1), (0, 2, 1, 3))
    if view == "transpose":
        return ops.transpose(t, (0, 2, 1, 3))
    if view == "antitranspose":
        return ops.transpose(ops.flip(t, axis=(1, 2)), (0, 2, 1, 3))
    raise ValueError(f"unknown view {view!r}; expected one of {_VIEWS}")


def build_keras_ensemble(
    unet_config: Mapping[str, Any],
    members: Sequence[Mapping[str, Any]],
    *,
    views: Sequence[str] = ("identity",),
    measure: str = "entropy",
    builtin_layers_only: bool = False,
) -> Any:
    """The Keras twin of :class:`fiji_consensus.nn.ensemble_net.EnsembleNet`, with the members' weights.

    Parameters
    ----------
    unet_config : mapping
        The members' U-Net configuration (single channel).
    members : sequence of mappings
        Each member's torch ``state_dict`` (``EnsembleNet.members[k].state_dict()``).
    views : sequence of str
        Test-time views (:data:`fiji_consensus.nn.ensemble_net.ENSEMBLE_VIEWS`).
    measure : str
        The ``uncertainty`` output (:data:`fiji_consensus.uncertainty.MEASURES`).
    builtin_layers_only : bool
        False (default): weight-shared, one sub-network per member, the views as flip/transpose ops around
        it (SavedModel, ``.keras``). True: built-in layers only, one sub-network per member x view with
        transformed kernels (what ``keras_hdf5`` needs; members x views times the weights). See the module
        docstring.

    Returns
    -------
    keras.Model
        Input ``input`` ``(N, 1, h, w)`` float32 (channels first, as the package's other weights), outputs
        ``[probability, uncertainty]``, each ``(N, 1, h, w)``; ``h, w`` multiples of ``2**depth``.

    Examples
    --------
    >>> from fiji_consensus.nn.ensemble_net import EnsembleNet             # doctest: +SKIP
    >>> net = EnsembleNet({"depth": 2, "base_channels": 4}, 2).eval()      # doctest: +SKIP
    >>> km = build_keras_ensemble(net.unet_config, [m.state_dict() for m in net.members])  # doctest: +SKIP
    >>> [tuple(o.shape) for o in km.outputs]                               # doctest: +SKIP
    [(None, 1, None, None), (None, 1, None, None)]
    """
    keras = import_keras()
    L = keras.layers
    cfg = dict(unet_config)
    if int(cfg.get("in_channels", 1)) != 1 or int(cfg.get("out_channels", 1)) != 1:
        raise ValueError(f"the Keras ensemble needs single-channel U-Nets (in/out 1); got config {cfg}")
    if not members:
        raise ValueError("give at least one member")
    views = tuple(str(v) for v in views)
    bad = [v for v in views if v not in _VIEWS]
    if bad or not views:
        raise ValueError(f"views must be a non-empty list of {_VIEWS}; got {list(views)}")
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {_MEASURES}; got {measure!r}")

    inp = keras.Input((1, None, None), name="input")
    x = L.Permute((2, 3, 1), name="channels_last")(inp)
    logits = []
    for k, sd in enumerate(members):
        if builtin_layers_only:
            for v in views:
                logits.append(keras_unet(cfg, sd, name=f"member{k}_{v}", view=v)(x))
        else:  # one U-Net per member, called on every view of the input
            unet = keras_unet(cfg, sd, name=f"member{k}")
            for v in views:
                logits.append(_view_op(keras.ops, unet(_view_op(keras.ops, x, v)), v, inverse=True))
    probs = [L.Activation("sigmoid", name=f"sigmoid{s}")(z) for s, z in enumerate(logits)]
    mean = probs[0] if len(probs) == 1 else L.Average(name="mean")(probs)
    one_minus = L.Rescaling(-1.0, offset=1.0, name="one_minus_mean")(mean)

    def expected_entropy() -> Any:
        hs = []
        for s, (z, p) in enumerate(zip(logits, probs)):
            q = L.Rescaling(-1.0, offset=1.0, name=f"one_minus{s}")(p)
            logp = L.Rescaling(-1.0, name=f"logp{s}")(_neg_log_sigmoid(L, z, f"lp{s}", 1.0))
            logq = L.Rescaling(-1.0, name=f"logq{s}")(_neg_log_sigmoid(L, z, f"lq{s}", -1.0))
            hs.append(_entropy_bits(L, p, q, logp, logq, f"h{s}"))
        return hs[0] if len(hs) == 1 else L.Average(name="expected_entropy")(hs)

    def entropy() -> Any:
        logp = _log_mean_sigmoid(L, logits, "logmean_p", 1.0)
        logq = _log_mean_sigmoid(L, logits, "logmean_q", -1.0)
        return _entropy_bits(L, mean, one_minus, logp, logq, "entropy")

    if measure == "entropy":
        unc = entropy()
    elif measure == "expected_entropy":
        unc = expected_entropy()
    elif measure == "mutual_information":
        unc = L.ReLU(max_value=1.0, name="clip01")(L.Subtract(name="mi")([entropy(), expected_entropy()]))
    elif measure == "deepflash2":
        unc = L.Rescaling(4.0, name="deepflash2")(L.Multiply(name="p_q")([mean, one_minus]))
    else:  # std: sqrt has no built-in layer (SavedModel only)
        sq = []
        for s, p in enumerate(probs):
            d = L.Subtract(name=f"dev{s}")([p, mean])
            sq.append(L.Multiply(name=f"sq{s}")([d, d]))
        var = sq[0] if len(sq) == 1 else L.Average(name="variance")(sq)
        unc = keras.ops.sqrt(var)
    out_p = L.Permute((3, 1, 2), name="probability")(mean)
    out_u = L.Permute((3, 1, 2), name="uncertainty")(unc)
    return keras.Model(inp, [out_p, out_u], name="fiji_consensus_ensemble")


def from_ensemble_net(net: Any, *, builtin_layers_only: bool = False) -> Any:
    """:func:`build_keras_ensemble` from a torch :class:`~fiji_consensus.nn.ensemble_net.EnsembleNet`."""
    return build_keras_ensemble(net.unet_config, [m.state_dict() for m in net.members], views=net.views,
                                measure=net.measure, builtin_layers_only=builtin_layers_only)


def uses_only_builtin_layers(measure: str) -> bool:
    """Whether the Keras model of this measure can be written as ``keras_hdf5`` (every measure but ``std``)."""
    return measure != "std"


# --------------------------------------------------------------------------------------------- files


def save_saved_model(model: Any, path: str | Path) -> Path:
    """Write ``model`` (one input, outputs ``[probability, uncertainty]``) as a TensorFlow SavedModel folder.

    One function, ``serve`` (also the ``serving_default`` signature), takes ``input`` ``(N, 1, h, w)`` float32
    and returns ``{"probability", "uncertainty"}``; the weights are variables (restored by the SavedModel's
    own saver, as TensorFlow 1's loader does), each stored once: a plain ``tf.Module`` tracks the model's
    TensorFlow variables only (Keras's ``ExportArchive`` also tracks the Keras variables wrapping them, which
    stores every weight twice).
    """
    import_keras()
    tf = import_tf()
    path = Path(path)
    names = [str(n) for n in model.output_names]
    spec = tf.TensorSpec([None, 1, None, None], tf.float32, name="input")

    def run(input: Any) -> dict[str, Any]:  # noqa: A002 - the signature's input key
        outs = model(input, training=False)
        return dict(zip(names, outs))

    module = tf.Module()
    module.weights = [v.value for v in model.weights]  # the tf.Variables the function reads
    module.serve = tf.function(run, input_signature=[spec])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})  # traced once
    _for_old_tensorflow(path / "saved_model.pb")
    return path


def _for_old_tensorflow(pb: Path) -> dict[str, int]:
    """Rewrite a SavedModel's graph so that TensorFlow 1.15 to 2.10 (deepImageJ's engines) can load it.

    Newer TensorFlow writes two things older ones refuse, both bookkeeping that computes nothing: the
    ``debug_name`` attribute of every variable handle (``VarHandleOp``; TF 1.15: "NodeDef mentions attr
    'debug_name' not in Op") and a ``DisableCopyOnRead`` op per variable in the save and restore functions
    (TF <= 2.10: "Op type not registered"). Both are removed, with the control edges to those ops; nothing else
    changes. Returns how many of each were removed.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(pb.read_bytes())
    removed = {"debug_name": 0, "DisableCopyOnRead": 0}

    def clean(nodes: Any) -> set[str]:
        drop = {n.name for n in nodes if n.op == "DisableCopyOnRead"}
        keep = [n for n in nodes if n.op != "DisableCopyOnRead"]
        for n in keep:
            if "debug_name" in n.attr:
                del n.attr["debug_name"]
                removed["debug_name"] += 1
            inputs = [i for i in n.input if not (i.startswith("^") and i[1:].split(":")[0] in drop)]
            del n.input[:]
            n.input.extend(inputs)
        del nodes[:]
        nodes.extend(keep)
        removed["DisableCopyOnRead"] += len(drop)
        return drop

    for meta in sm.meta_graphs:
        clean(meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            drop = clean(fn.node_def)
            for key in [k for k, v in fn.control_ret.items() if v in drop]:
                del fn.control_ret[key]
                outputs = [o for o in fn.signature.control_output if o != key]
                del fn.signature.control_output[:]
                fn.signature.control_output.extend(outputs)
    pb.write_bytes(sm.SerializeToString())
    logger.debug("SavedModel graph for TensorFlow >= 1.15: removed %s", removed)
    return removed


def _zip_folder(folder: Path, dst: Path) -> Path:
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return dst


def package_weights(
    net: Any,
    work: str | Path,
    example: np.ndarray,
    formats: Sequence[str],
    *,
    parent: str = "pytorch_state_dict",
) -> dict[str, Any]:
    """Write the TensorFlow weights of a package under construction; returns bioimage.io weight entries.

    The hook of :func:`fiji_consensus.zoo.package_ensemble`: ``net`` is the package's torch
    :class:`~fiji_consensus.nn.ensemble_net.EnsembleNet`, ``work`` the package's build folder, ``example``
    its normalised test input ``(1, 1, h, w)``, ``formats`` the wanted subset of :data:`KERAS_FORMATS`.
    The Keras model is checked against ``net`` on ``example`` (at most 1e-4 apart, else RuntimeError).

    Returns
    -------
    dict
        ``{format: bioimageio.spec WeightsEntryDescr}`` for ``keras_hdf5`` (``weights_keras.h5``, built-in
        layers only, members x views sub-networks; not for the ``std`` measure; declares the TensorFlow that
        wrote it) and ``tensorflow_saved_model_bundle`` (``weights_tf_saved_model.zip``, weight-shared;
        declares :data:`TENSORFLOW_VERSION`).
    """
    import shutil
    import warnings

    import torch
    from bioimageio.spec.model import v0_5 as bm

    tf = import_tf()
    work = Path(work)
    x = np.ascontiguousarray(example, dtype=np.float32)
    with torch.no_grad():
        ref = [t.numpy() for t in net(torch.from_numpy(x))]

    def checked(builtin: bool) -> Any:
        model = from_ensemble_net(net, builtin_layers_only=builtin)
        got = model.predict(x, verbose=0)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
        if not diff <= 1e-4:
            raise RuntimeError(f"the Keras model differs from the torch ensemble by {diff:.3g} on the test input")
        n_sub = sum(1 for layer in model.layers if hasattr(layer, "layers"))
        logger.info("Keras ensemble built (%d U-Nets, %s); max difference to torch %.2g", n_sub,
                    "built-in layers, members x views" if builtin else "weight-shared, one per member", diff)
        return model

    out: dict[str, Any] = {}
    if "keras_hdf5" in formats:
        if not uses_only_builtin_layers(net.measure):
            raise ValueError(f"no keras_hdf5 weights for the {net.measure!r} uncertainty (see tensorflow_formats)")
        h5 = work / "weights_keras.h5"
        model = checked(builtin=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(h5)  # legacy HDF5 (Keras warns that the format is legacy: it is what bioimage.io runs)
        del model
        # the Keras 3 HDF5 layout; TensorFlow 2.10's tf.keras (Keras 2) cannot read it (bench_keras.py)
        out["keras_hdf5"] = bm.KerasHdf5WeightsDescr(source=h5, tensorflow_version=bm.Version(str(tf.__version__)),
                                                     parent=parent)
    if "tensorflow_saved_model_bundle" in formats:
        folder = work / "tf_saved_model"
        save_saved_model(checked(builtin=False), folder)
        sig = tf.saved_model.load(str(folder)).signatures["serving_default"]
        res = sig(input=tf.constant(x))
        back = max(float(np.abs(res[k].numpy() - r).max()) for k, r in zip(("probability", "uncertainty"), ref))
        if not back <= 1e-4:
            raise RuntimeError(f"the SavedModel, loaded back, differs from the torch ensemble by {back:.3g}")
        z = _zip_folder(folder, work / "weights_tf_saved_model.zip")
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("SavedModel: %.1f MB zipped (TensorFlow %s wrote it; declared %s, the oldest verified)",
                    z.stat().st_size / 1e6, tf.__version__, TENSORFLOW_VERSION)
        out["tensorflow_saved_model_bundle"] = bm.TensorflowSavedModelBundleWeightsDescr(
            source=z, tensorflow_version=bm.Version(TENSORFLOW_VERSION), parent=parent)
    return out
