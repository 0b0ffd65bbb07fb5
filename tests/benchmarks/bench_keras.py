"""TensorFlow/Keras export: cost, and loading in the oldest TensorFlow that installs on this Python.

deepImageJ's TensorFlow engine (JDLL) runs TensorFlow 1.15 and 2.x up to 2.10.1, whose wheels need Python
3.10 or older (a venv of python3.10; ``bench_old_runtimes.py`` loads the zoo package itself in 2.10.1, 2.4.4
and 1.15.0). This script

1. rebuilds the zoo package's ensemble (model_zoo/cfos-wue1: its members, its views, entropy) in Keras with
   the members' weights, twice (weight-shared: one U-Net per member, the views as flip/transpose ops, for the
   SavedModel; built-in layers only: members x views U-Nets, for the Keras HDF5 file), checks both against
   torch on a real crop and writes the SavedModel and the HDF5 file as
   ``fiji-consensus package --weights ... tensorflow_saved_model_bundle keras_hdf5`` does;
2. creates (or reuses) a throw-away venv with ``tensorflow-cpu==OLD`` (default 2.10.1) and there loads the
   SavedModel twice: TensorFlow 2 style (``tf.saved_model.load``, signature ``serving_default``, as
   bioimageio.core's TF2 runner and JDLL's TF2 engine do) and TensorFlow 1 style
   (``tf.compat.v1.saved_model.loader.load`` into a Session and ``session.run`` on the signature's tensor names,
   as bioimageio.core's TF1 runner and JDLL's TF 1.15 engine do); it also tries the HDF5 file in that venv's
   tf.keras (Keras 2);
3. prints one JSON line: times, sizes, max differences to torch, the ops in the SavedModel graph.

Usage::

    .venv/bin/python tests/benchmarks/bench_keras.py [--old-venv /tmp/venv-tf2.10.1] [--old-tf 2.10.1]
        [--old-python PYTHON3.10] [--members N] [--tta none|flips]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
DATA = ROOT / "data" / "segebarth2020"

OLD_SCRIPT = r"""
import json, sys, time
import numpy as np
import tensorflow as tf
folder, h5, x_path, p_path, u_path = sys.argv[1:6]
x, p, u = np.load(x_path), np.load(p_path), np.load(u_path)
res = {"tensorflow": tf.__version__, "numpy": np.__version__}
t = time.perf_counter()
m = tf.saved_model.load(folder)
out = m.signatures["serving_default"](input=tf.constant(x))
res["tf2_load_run_s"] = time.perf_counter() - t
res["tf2_max_diff"] = [float(np.abs(out["probability"].numpy() - p).max()),
                       float(np.abs(out["uncertainty"].numpy() - u).max())]
g = tf.Graph()
with g.as_default():
    with tf.compat.v1.Session(graph=g) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], folder)
        sig = meta.signature_def["serving_default"]
        feeds = {sig.inputs["input"].name: x}
        names = [sig.outputs[k].name for k in ("probability", "uncertainty")]
        pp, uu = sess.run(names, feeds)
res["tf1_session_max_diff"] = [float(np.abs(pp - p).max()), float(np.abs(uu - u).max())]
res["tf1_signature"] = {"inputs": sorted(sig.inputs), "outputs": sorted(sig.outputs)}
try:
    km = tf.keras.models.load_model(h5, compile=False)
    kp, ku = km.predict(x, verbose=0)
    res["keras2_h5_max_diff"] = [float(np.abs(kp - p).max()), float(np.abs(ku - u).max())]
except Exception as exc:
    res["keras2_h5_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
print(json.dumps(res))
"""


def _old_venv(path: Path, version: str, python: str) -> tuple[Path, float | None]:
    py = path / "bin" / "python"
    if py.exists():
        return py, None
    t = time.perf_counter()
    subprocess.run([python, "-m", "venv", str(path)], check=True)
    from bench_old_runtimes import TF_OLD  # the pins an old TensorFlow needs (numpy 1.x, protobuf 3)

    reqs = TF_OLD[version][1] if version in TF_OLD else [f"tensorflow-cpu=={version}", "numpy<2"]
    subprocess.run([str(py), "-m", "pip", "install", "-q", *reqs], check=True)
    return py, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-venv", type=Path, default=Path(tempfile.gettempdir()) / "venv-tf2.10.1")
    ap.add_argument("--old-tf", default="2.10.1", help="deepImageJ's newest TensorFlow (the packages declare it)")
    ap.add_argument("--old-python", default=None,
                    help="the Python of the old venv (default: python3.10 on PATH or from pyenv; TensorFlow 2.10.1 "
                         "has no wheels for newer Pythons)")
    ap.add_argument("--members", type=int, default=0, help="members to use (default: all of the zoo package)")
    ap.add_argument("--tta", default=None, help="views (default: the zoo package's)")
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import imageio.v3 as iio
    import torch

    from fiji_consensus import zoo
    from fiji_consensus.keras import export as kx
    from fiji_consensus.nn.ensemble_net import EnsembleNet
    from fiji_consensus.nn.predict import resolve_views

    torch.set_num_threads(1)
    res: dict = {"bench": "keras"}
    ens = zoo.ensemble_from_package(ZOO)
    rdf = zoo._read_rdf(ZOO)
    views = resolve_views(a.tta) if a.tta else tuple(rdf["config"]["fiji_consensus"]["views"])
    k = a.members or len(ens.members)
    net = EnsembleNet(dict(ens.metadata["architecture"]["config"]), k, views=views, measure="entropy")
    for dst, src in zip(net.members, ens.members[:k]):
        dst.load_state_dict(src.state_dict())
    net.eval()
    img = iio.imread(sorted((DATA / "lab-mue" / "images").glob("*.png"))[0]).astype(np.float64)
    crop = img[256:512, 256:512]
    lo, hi = np.percentile(crop, [ens.normalization["min_percentile"], ens.normalization["max_percentile"]])
    x = ((crop - lo) / (hi - lo + ens.normalization["eps"])).astype(np.float32)[None, None]
    with torch.no_grad():
        p, u = (t.numpy() for t in net(torch.from_numpy(x)))
    res.update(members=k, views=list(views), crop=list(x.shape))
    t = time.perf_counter()
    model = kx.from_ensemble_net(net)  # weight-shared: the SavedModel
    res["keras_build_s"] = time.perf_counter() - t
    kp, ku = model.predict(x, verbose=0)
    res["keras_vs_torch_max_diff"] = [float(np.abs(kp - p).max()), float(np.abs(ku - u).max())]
    t = time.perf_counter()
    builtin = kx.from_ensemble_net(net, builtin_layers_only=True)  # members x views U-Nets: the HDF5 file
    res["keras_builtin_build_s"] = time.perf_counter() - t
    bp, bu = builtin.predict(x, verbose=0)
    res["keras_builtin_vs_torch_max_diff"] = [float(np.abs(bp - p).max()), float(np.abs(bu - u).max())]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        builtin.save(tmp / "w.h5")
        res["h5_write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        kx.save_saved_model(model, tmp / "sm")
        res["saved_model_write_s"] = time.perf_counter() - t
        z = kx._zip_folder(tmp / "sm", tmp / "sm.zip")
        res["h5_mb"] = (tmp / "w.h5").stat().st_size / 1e6
        res["saved_model_zip_mb"] = z.stat().st_size / 1e6
        import tensorflow as tf

        from tensorflow.core.protobuf import saved_model_pb2

        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((tmp / "sm" / "saved_model.pb").read_bytes())
        ops = set()
        for mg in sm.meta_graphs:
            ops |= {n.op for n in mg.graph_def.node}
            for f in mg.graph_def.library.function:
                ops |= {n.op for n in f.node_def}
        res["saved_model_ops"] = sorted(ops)
        res["tensorflow_written_with"] = tf.__version__
        for name, arr in (("x", x), ("p", p), ("u", u)):
            np.save(tmp / f"{name}.npy", arr)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_old_runtimes import find_python

        python = a.old_python or find_python("3.10")
        if python is None:
            raise SystemExit("no python3.10 here (PATH, pyenv) for TensorFlow 2.10.1; pass --old-python")
        py, install_s = _old_venv(a.old_venv, a.old_tf, python)
        res["old_venv_install_s"] = install_s
        t = time.perf_counter()
        proc = subprocess.run([str(py), "-c", OLD_SCRIPT, str(tmp / "sm"), str(tmp / "w.h5"), str(tmp / "x.npy"),
                               str(tmp / "p.npy"), str(tmp / "u.npy")], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        res["old_tf_s"] = time.perf_counter() - t
        if proc.returncode != 0:
            res["old_tf_error"] = proc.stderr.strip().splitlines()[-3:]
        else:
            res["old_tf"] = json.loads(proc.stdout.strip().splitlines()[-1])
    old = res.get("old_tf", {})
    ok = all(d <= 1e-4 for key in ("tf2_max_diff", "tf1_session_max_diff") for d in old.get(key, [1.0]))
    # the packages declare kx.TENSORFLOW_VERSION for the SavedModel: this run verifies it when it is that version
    res["declared_tensorflow_version"] = kx.TENSORFLOW_VERSION
    res["declared_version_verified"] = bool(ok and old.get("tensorflow") == kx.TENSORFLOW_VERSION)
    res["ok"] = bool(ok and max(res["keras_vs_torch_max_diff"] + res["keras_builtin_vs_torch_max_diff"]) <= 1e-5)
    print(json.dumps(res))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
