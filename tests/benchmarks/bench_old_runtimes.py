"""A package in the runtimes deepImageJ has: old PyTorch and old onnxruntime, each in a throw-away venv.

deepImageJ (JDLL) runs TorchScript in libtorch 2.0.1 and ONNX in onnxruntime 1.12.1. This script checks a
fiji-consensus bioimage.io package the way those engines use it:

* **torch 2.0.1** (the oldest PyTorch that installs here for Python 3.11; its PyPI wheel is the CUDA build,
  about 2.5 GB with its NVIDIA libraries, and runs on the CPU): ``torch.jit.load`` of the TorchScript
  weights, ``forward`` returns a list of Tensors (what JDLL reads) that reproduces the package's test
  outputs; and the ``pytorch_state_dict`` weights with the packaged architecture source.
* **onnxruntime 1.15.0** (the oldest that installs here; 1.12.1 has no wheel for Python 3.11): an
  ``InferenceSession`` of the ONNX weights reproduces the test outputs.
* **TensorFlow 2.10.1, 2.4.4 and 1.15.0** (deepImageJ's TensorFlow engines run 1.15 and 2.x up to 2.10.1;
  each in a venv of the newest Python it has wheels for: 3.10, 3.8, 3.7): the SavedModel
  (``tensorflow_saved_model_bundle``) loaded TF 2 style (``tf.saved_model.load``, signature
  ``serving_default``; TF 2 only) and TF 1 style (a Session on the signature's tensor names) reproduces the
  test outputs.
* **speed** (the running venv, torch and onnxruntime with the same threads): eager PyTorch, the
  TorchScript file, a frozen TorchScript and ONNX on one ``--size``-pixel tile, best of ``--repeats``.

The venvs are made with ``python3 -m venv`` and pip (PyPI) when missing, and kept for reruns.

Usage (from the repository root)::

    python tests/benchmarks/bench_old_runtimes.py                    # the cfos-wue1 zoo package
    python tests/benchmarks/bench_old_runtimes.py --package PKG.zip --size 376 --no-speed

Measured on the 2-core build machine (cfos-wue1, 4 members x 4 flips; see the end of this docstring).

Results 2026-12-02, both zoo packages rebuilt with the texture statistic's range (``--no-speed --size 376``):
cfos-3labs: TorchScript and state dict in torch 2.0.1 2.0e-6, ONNX in onnxruntime 1.15.0 2.5e-6, the SavedModel
in TensorFlow 2.10.1 / 2.4.4 2.8e-6 (TF 2 and TF 1 style), 1.15.0 2.4e-6; cfos-wue1: 1.0e-6, 2.6e-6, 3.1e-6 /
2.7e-6, 3.3e-6.

Results 2026-12-02 (cfos-wue1 repackaged, ``--no-speed``): TorchScript in torch 2.0.1 9.5e-7 (a list of
Tensors), state dict 9.5e-7, ONNX in onnxruntime 1.15.0 2.6e-6; the SavedModel in TensorFlow 2.10.1 3.1e-6
(TF 2 and TF 1 style), 2.4.4 2.7e-6 (both), 1.15.0 3.3e-6 (TF 1 style); the SavedModel as TensorFlow 2.21
wrote it, before the export removed its ``debug_name`` attributes and ``DisableCopyOnRead`` ops, failed in
2.4.4 ("Op type not registered 'DisableCopyOnRead'") and 1.15.0 ("NodeDef mentions attr 'debug_name' not in
Op<name=VarHandleOp ...>") and ran in 2.10.1.

Results 2026-12-01 (cfos-wue1, torch 2.13.0 and onnxruntime of the zoo extra, 2 threads, a 504 px tile,
under heavy load from other jobs): eager 36.7 s, TorchScript 30.7 s, frozen TorchScript 28.9 s, ONNX 12.1 s
(minimums of 4); profile of one member: 73 % of the time in oneDNN convolutions (14 to 112 channels).
TorchScript is not the cause (eager PyTorch is as slow) and neither are the views; freezing gains about
10 %, channels-last about 25 %, ``optimize_for_inference`` nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TORCH_OLD = "2.0.1"
ORT_OLD = "1.15.0"

#: Run inside the old-torch venv: argv = the unpacked package. Prints one JSON line.
_TORCH_CHILD = r'''
import json, sys, types
import numpy as np
import torch
d = sys.argv[1]
spec = json.loads(open(f"{d}/_spec.json").read())
x = torch.from_numpy(np.load(f"{d}/_input_normalised.npy"))
want = [np.load(f"{d}/{n}") for n in spec["outputs"]]
res = {"torch": torch.__version__}
with torch.no_grad():
    m = torch.jit.load(f"{d}/{spec['torchscript']}", map_location="cpu").eval()
    out = m(x)
    res["torchscript_output_type"] = type(out).__name__
    res["torchscript_schema"] = str(m.forward.schema).split("->")[-1].strip()
    out = out if isinstance(out, (list, tuple)) else [out]
    res["torchscript_max_abs_diff"] = max(float(np.abs(o.numpy() - w).max()) for o, w in zip(out, want))
    if spec.get("state_dict"):
        ns = {"__name__": "arch"}
        exec(compile(open(f"{d}/{spec['architecture']}").read(), spec["architecture"], "exec"), ns)
        net = ns[spec["callable"]](**spec["kwargs"]).eval()
        net.load_state_dict(torch.load(f"{d}/{spec['state_dict']}", map_location="cpu"))
        out = net(x)
        out = out if isinstance(out, (list, tuple)) else [out]
        res["state_dict_max_abs_diff"] = max(float(np.abs(o.numpy() - w).max()) for o, w in zip(out, want))
print(json.dumps(res))
'''

_ORT_CHILD = r'''
import json, sys
import numpy as np
import onnxruntime as ort
d = sys.argv[1]
spec = json.loads(open(f"{d}/_spec.json").read())
x = np.load(f"{d}/_input_normalised.npy")
want = [np.load(f"{d}/{n}") for n in spec["outputs"]]
s = ort.InferenceSession(f"{d}/{spec['onnx']}", providers=["CPUExecutionProvider"])
out = s.run(None, {s.get_inputs()[0].name: x})
print(json.dumps({"onnxruntime": ort.__version__,
                  "onnx_max_abs_diff": max(float(np.abs(o - w).max()) for o, w in zip(out, want))}))
'''


_TF_CHILD = r'''
import json, sys, zipfile
import numpy as np
import tensorflow as tf
d = sys.argv[1]
spec = json.loads(open(f"{d}/_spec.json").read())
x = np.load(f"{d}/_input_normalised.npy")
want = [np.load(f"{d}/{n}") for n in spec["outputs"]]
names = spec["output_names"]
sm = f"{d}/_tf_saved_model"
zipfile.ZipFile(f"{d}/{spec['tensorflow']}").extractall(sm)
res = {"tensorflow": tf.__version__}
if int(tf.__version__.split(".")[0]) >= 2:  # TF 2 style: what bioimageio.core's TF 2 runner and JDLL's TF 2 engines do
    out = tf.saved_model.load(sm).signatures["serving_default"](input=tf.constant(x))
    res["tf2_max_abs_diff"] = max(float(np.abs(out[n].numpy() - w).max()) for n, w in zip(names, want))
g = tf.Graph()  # TF 1 style (a Session on the signature's tensor names): JDLL's TF 1.15 engine
with g.as_default():
    with tf.compat.v1.Session(graph=g) as sess:
        sig = tf.compat.v1.saved_model.loader.load(sess, ["serve"], sm).signature_def["serving_default"]
        outs = sess.run([sig.outputs[n].name for n in names], {sig.inputs["input"].name: x})
res["tf1_session_max_abs_diff"] = max(float(np.abs(o - w).max()) for o, w in zip(outs, want))
print(json.dumps(res))
'''

#: TensorFlow versions of deepImageJ's engines (JDLL: TF 1.15 and TF 2 up to 2.10.1) whose CPU wheels install
#: here, each with the newest Python it has wheels for and the pins it needs (numpy 1.x, protobuf 3).
TF_OLD = {
    "2.10.1": ("3.10", ["tensorflow-cpu==2.10.1", "numpy<1.24"]),
    "2.4.4": ("3.8", ["tensorflow-cpu==2.4.4", "protobuf<3.21"]),
    "1.15.0": ("3.7", ["tensorflow-cpu==1.15.0", "numpy<1.19", "protobuf<3.21", "h5py<3"]),
}


def find_python(version: str) -> str | None:
    """A working ``python<version>`` (X.Y): on PATH, else a pyenv installation of it; None when there is none."""
    found = [shutil.which(f"python{version}")]
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if shutil.which("pyenv") else ""
    if root:
        found += [str(p / "bin" / "python") for p in sorted(Path(root, "versions").glob(f"{version}.*"), reverse=True)]
    for py in filter(None, found):
        if subprocess.run([py, "-c", "pass"], capture_output=True).returncode == 0:
            return py
    return None


def ensure_venv(path: Path, requirements: list[str], python: str = sys.executable) -> Path:
    """The python of a venv at ``path`` holding ``requirements`` (made with ``python`` and pip from PyPI when
    missing)."""
    py = path / "bin" / "python"
    stamp = path / ".bench-installed"
    if stamp.is_file() and stamp.read_text() == " ".join(requirements):
        return py
    if not py.exists():
        subprocess.run([python, "-m", "venv", str(path)], check=True)
    print(f"installing {' '.join(requirements)} into {path} (PyPI)", file=sys.stderr, flush=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *requirements], check=True)
    stamp.write_text(" ".join(requirements))
    return py


def unpack(package: Path, dest: Path) -> dict:
    """Extract ``package`` into ``dest`` and write the normalised test input and a spec for the children."""
    import numpy as np
    from ruyaml import YAML

    with zipfile.ZipFile(package) as zf:
        zf.extractall(dest)
    rdf = YAML(typ="safe").load((dest / "rdf.yaml").read_text())
    inp = rdf["inputs"][0]
    x = np.load(dest / inp["test_tensor"]["source"]).astype(np.float32)
    (pre,) = [p for p in inp.get("preprocessing", []) if p["id"] == "scale_range"]
    kw = pre["kwargs"]
    fc = (rdf.get("config") or {}).get("fiji_consensus") or {}
    if fc.get("test_tensors", {}).get("percentiles"):
        lo, hi = fc["test_tensors"]["percentiles"]  # exactly the ones the test outputs were made with
    else:
        lo, hi = np.percentile(x, [kw["min_percentile"], kw["max_percentile"]])
    xn = ((x - lo) / (hi - lo + kw.get("eps", 1e-6))).astype(np.float32)
    np.save(dest / "_input_normalised.npy", xn)
    w = rdf["weights"]
    sd = w.get("pytorch_state_dict") or {}
    spec = {
        "outputs": [o["test_tensor"]["source"] for o in rdf["outputs"]],
        "torchscript": (w.get("torchscript") or {}).get("source"),
        "onnx": (w.get("onnx") or {}).get("source"),
        "state_dict": sd.get("source"),
        "architecture": (sd.get("architecture") or {}).get("source"),
        "callable": (sd.get("architecture") or {}).get("callable"),
        "kwargs": (sd.get("architecture") or {}).get("kwargs") or {},
        "declared_pytorch_version": (w.get("torchscript") or {}).get("pytorch_version"),
        "tensorflow": (w.get("tensorflow_saved_model_bundle") or {}).get("source"),
        "declared_tensorflow_version": (w.get("tensorflow_saved_model_bundle") or {}).get("tensorflow_version"),
        "output_names": [o.get("id") or o.get("name") for o in rdf["outputs"]],
    }
    (dest / "_spec.json").write_text(json.dumps(spec))
    return spec


def _child(py: Path, code: str, folder: Path) -> dict:
    proc = subprocess.run([str(py), "-c", code, str(folder)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(package: Path, *, torch_python: Path | None, ort_python: Path | None,
          tf_pythons: dict[str, Path] | None = None, atol: float = 1e-4) -> dict:
    """Load ``package``'s weights in the old runtimes (``tf_pythons``: TensorFlow version -> the python of its
    venv); ``ok`` when every check passes within ``atol``."""
    res: dict = {"package": str(package)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = unpack(package, folder)
        res["declared_pytorch_version"] = spec["declared_pytorch_version"]
        res["declared_tensorflow_version"] = spec["declared_tensorflow_version"]
        if torch_python is not None and spec["torchscript"]:
            res.update(_child(torch_python, _TORCH_CHILD, folder))
        if ort_python is not None and spec["onnx"]:
            res.update(_child(ort_python, _ORT_CHILD, folder))
        if spec["tensorflow"]:
            res["tensorflow"] = {v: _child(py, _TF_CHILD, folder) for v, py in (tf_pythons or {}).items()}
    fails = [k for k in ("torchscript_max_abs_diff", "state_dict_max_abs_diff", "onnx_max_abs_diff")
             if k in res and not res[k] <= atol]
    for v, r in (res.get("tensorflow") or {}).items():
        fails += [f"tensorflow {v}: {r.get('error') or k}" for k in ("tf2_max_abs_diff", "tf1_session_max_abs_diff")
                  if "error" in r or (k in r and not r[k] <= atol)][:1]
    if torch_python is not None and res.get("torchscript_output_type") != "list":
        fails.append(f"torchscript returns {res.get('torchscript_output_type')}, not a list")
    res["ok"] = "error" not in res and not fails
    res["failures"] = fails
    return res


def speed(package: Path, *, size: int, repeats: int, threads: int) -> dict:
    """Best-of-``repeats`` seconds of eager PyTorch, the TorchScript, a frozen TorchScript and ONNX on one tile."""
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    from fiji_consensus import zoo

    torch.set_num_threads(threads)
    ens = zoo.ensemble_from_package(package)
    fc = zoo._read_rdf(package)["config"]["fiji_consensus"]
    net = zoo._build_net(ens, views=fc["views"], measure=fc["uncertainty"]["measure"])
    step = 2 ** int(ens.depth)
    size = max(step, size // step * step)
    x = torch.rand(1, 1, size, size)
    with zipfile.ZipFile(package) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(__import__("io").BytesIO(zf.read("weights_torchscript.pt"))).eval()
        frozen = torch.jit.freeze(torch.jit.load(__import__("io").BytesIO(zf.read("weights_torchscript.pt"))).eval())
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(zf.read("weights.onnx"), so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    runs = {"eager": net, "torchscript": ts, "torchscript_frozen": frozen,
            "onnx": lambda _: sess.run(None, {"input": xn})}
    best = {k: float("inf") for k in runs}
    with torch.no_grad():
        for f in runs.values():
            f(x)  # warm-up (TorchScript profiles its first runs)
        for _ in range(repeats):
            for k, f in runs.items():  # interleaved, so load from other jobs hits all alike
                t0 = time.perf_counter()
                f(x)
                best[k] = min(best[k], time.perf_counter() - t0)
    return {"size": size, "threads": threads, "seconds": {k: round(v, 2) for k, v in best.items()},
            "torchscript_over_onnx": round(best["torchscript"] / best["onnx"], 2),
            "eager_over_onnx": round(best["eager"] / best["onnx"], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", type=Path, default=REPO / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip")
    ap.add_argument("--torch-venv", type=Path, default=Path(tempfile.gettempdir()) / "venv-torch201")
    ap.add_argument("--ort-venv", type=Path, default=Path(tempfile.gettempdir()) / "venv-ort115")
    ap.add_argument("--tf", nargs="*", default=list(TF_OLD), choices=list(TF_OLD), metavar="VERSION",
                    help=f"TensorFlow versions to load the SavedModel in (default: {' '.join(TF_OLD)}; each needs its "
                         "Python, on PATH or from pyenv; versions whose Python is missing are skipped)")
    ap.add_argument("--size", type=int, default=504, help="tile edge for the speed runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--no-speed", action="store_true")
    a = ap.parse_args(argv)
    torch_py = ensure_venv(a.torch_venv, [f"torch=={TORCH_OLD}", "numpy<2"])
    ort_py = ensure_venv(a.ort_venv, [f"onnxruntime=={ORT_OLD}", "numpy<2"])
    tf_py, skipped = {}, {}
    for v in a.tf:
        python = find_python(TF_OLD[v][0])
        if python is None:
            skipped[v] = f"no python{TF_OLD[v][0]} here (PATH, pyenv)"
            continue
        tf_py[v] = ensure_venv(Path(tempfile.gettempdir()) / f"venv-tf{v}", TF_OLD[v][1], python)
    res = check(a.package, torch_python=torch_py, ort_python=ort_py, tf_pythons=tf_py)
    if skipped:
        res["tensorflow_skipped"] = skipped
    if not a.no_speed:
        res["speed"] = speed(a.package, size=a.size, repeats=a.repeats, threads=a.threads)
    print(json.dumps(res, indent=1))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
