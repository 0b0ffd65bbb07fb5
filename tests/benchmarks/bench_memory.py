"""Peak memory of ``fiji-consensus predict`` against the image size (issue 17). A script, not collected by pytest.

Each run is one fresh Python process that predicts one TIFF image with the prediction job
(:func:`fiji_consensus.predict.run_predict`, every output written) and reports its peak resident memory
(``ru_maxrss``) and its resident memory just before the prediction (imports and the model loaded). The
images are the real lab-wue1 image 0001 (1024²) mirrored to 2048², 4096² and 8192². The model is a
2-member ensemble of small U-Nets (depth 2, 4 channels) whose weights make each member a per-pixel threshold
of the normalised image (as in tests/test_predict.py), so the prediction finds the image's real nuclei;
test-time views: flips (4), the job's default: 8 probability planes per pixel.

``--old REV`` runs the same job from the package as it was at git revision REV (default f5cc8e4, before the
streamed prediction), extracted with ``git archive`` into a temporary folder, next to the working tree's.

Measured (2 shared CPU cores, torch 1 thread; peak RSS, GB): 1024² new 0.53 / old 0.51, 2048² 0.71 / 0.81,
4096² 1.01 / 2.37, 8192² 2.66 / not run (the old path grew by 135 bytes per pixel: about 9 GB).

Usage::

    python tests/benchmarks/bench_memory.py                          # 1024, 2048, 4096 (old and new), 8192 (new)
    python tests/benchmarks/bench_memory.py --sizes 1024 4096 --old-max 4096 --phases
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

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "data" / "segebarth2020" / "lab-wue1" / "images" / "0001.png"

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path

def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
model, image, out = sys.argv[1:4]
import torch
torch.set_num_threads(1)
from fiji_consensus.config import PredictConfig
from fiji_consensus.predict import run_predict
from fiji_consensus.nn.ensemble import load_ensemble
load_ensemble(model)  # imports and model code paths warm
before = rss_mb()
t0 = time.perf_counter()
summary = run_predict(PredictConfig(model=model, inputs=[image], out=out, tta="flips"))
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import fiji_consensus
print(json.dumps({"ok": summary["ok"], "before_mb": before, "peak_mb": peak, "seconds": seconds,
                  "n_objects": summary["n_objects"], "package": fiji_consensus.__file__}))
"""


_PHASES = r"""
import json, sys, tracemalloc
import numpy as np
model, image_path = sys.argv[1:3]
import torch
torch.set_num_threads(1)
from fiji_consensus import instances as I, uncertainty as U
from fiji_consensus.nn import predict as NP
from fiji_consensus.nn.ensemble import load_ensemble
from fiji_consensus.predict import read_input
ens = load_ensemble(model)
image, info = read_input(image_path)
out = {}
tracemalloc.start()
def phase(name):
    out[name] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.reset_peak()
kw = dict(tta="flips", tile=1152, overlap=None, batch_size=1)
if hasattr(NP, "_predict_streamed"):
    prob, maps, qa = NP._predict_streamed(ens, image, measure="entropy", threshold=0.5, all_maps=False,
                                          blending="cosine", stack_views=None, progress=False, **kw)
else:
    stack = NP.predict_stack(ens, image, **kw)
    maps = U.ensemble_statistics(stack)
    prob = maps.pop("mean")
    del stack
phase("tiles + maps")
labels = I.label_instances(prob, threshold=0.5, min_size=30, split="none")
phase("labels")
objects = I.object_table(labels, image=image, probability=prob, uncertainty=maps["entropy"])
phase("object table")
print(json.dumps(out))
"""


def _threshold_model(out: Path) -> Path:
    import torch

    from fiji_consensus.nn.ensemble import save_ensemble
    from fiji_consensus.nn.unet import UNet

    def net_for(t: float) -> UNet:
        net = UNet(depth=2, base_channels=4, norm="none")
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
            net.down[0][0].weight[0, 0, 1, 1] = 1
            net.down[0][3].weight[0, 0, 1, 1] = 1
            net.up_blocks[-1][0].weight[0, 4, 1, 1] = 1
            net.up_blocks[-1][3].weight[0, 0, 1, 1] = 1
            net.head.weight[0, 0, 0, 0] = 12.0
            net.head.bias[0] = -12.0 * t
        return net.eval()

    nets = {k: net_for(t).state_dict() for k, t in enumerate((0.45, 0.55))}
    probe = net_for(0.5)
    meta = {
        "architecture": {"name": "UNet", "config": probe.config, "halo": probe.halo},
        "normalization": {"method": "scale_range", "mode": "per_sample", "min_percentile": 1.0,
                          "max_percentile": 99.8, "eps": 1e-6},
        "members": [{"index": k, "selected": True} for k in range(2)],
        "threshold": 0.5,
        "training": {"min_size": 30},
    }
    save_ensemble(out, nets, meta)
    return out


def _image(size: int, out: Path) -> Path:
    import imageio.v3 as iio
    import numpy as np
    import tifffile

    img = iio.imread(IMAGE)
    reps = -(-size // img.shape[0])
    tiles = [[img[:: (1 if i % 2 == 0 else -1), :: (1 if j % 2 == 0 else -1)] for j in range(reps)]
             for i in range(reps)]
    big = np.block(tiles)[:size, :size]
    path = out / f"img{size}.tif"
    tifffile.imwrite(path, np.ascontiguousarray(big))
    return path


def _run(pythonpath: Path, model: Path, image: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    # cwd outside the repository: `python -c` puts the working directory first on sys.path
    r = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(image), str(out)], env=env,
                       capture_output=True, text=True, cwd=out.parent)
    if r.returncode != 0:
        return {"ok": False, "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _phases(pythonpath: Path, model: Path, image: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", _PHASES, str(model), str(image)], env=env, capture_output=True,
                       text=True, cwd=image.parent)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--old", default="f5cc8e4", help="git revision of the old path ('' to skip)")
    ap.add_argument("--old-max", type=int, default=4096, help="largest image for the old path (memory)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--phases", action="store_true",
                    help="also the peak of numpy's allocations (tracemalloc) in each phase: tiles + maps, labels, "
                    "object table")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model = _threshold_model(tmp / "model")
        old_pkg = None
        if a.old:
            old_pkg = tmp / "old"
            old_pkg.mkdir()
            arch = subprocess.run(["git", "-C", str(REPO), "archive", a.old, "fiji_consensus"], check=True,
                                  capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old_pkg)], input=arch, check=True)
        for size in a.sizes:
            image = _image(size, tmp)
            runs = [("new", REPO)] + ([("old " + a.old, old_pkg)] if old_pkg and size <= a.old_max else [])
            for name, path in runs:
                t0 = time.perf_counter()
                res = _run(path, model, image, tmp / f"out-{name.split()[0]}-{size}")
                res.update(path=name, size=size, wall=time.perf_counter() - t0)
                rows.append(res)
                if res.get("ok"):
                    grow = res["peak_mb"] - res["before_mb"]
                    print(f"{size:>5}²  {name:<12} peak RSS {res['peak_mb'] / 1024:6.2f} GB  (model loaded: "
                          f"{res['before_mb'] / 1024:4.2f} GB; prediction adds {grow / 1024:5.2f} GB = "
                          f"{grow * 2**20 / size**2:5.1f} bytes/pixel)  {res['seconds']:6.1f} s  "
                          f"{res['n_objects']} objects", flush=True)
                else:
                    print(f"{size:>5}²  {name:<12} failed: {res.get('error')}", flush=True)
                if res.get("ok"):
                    assert Path(res["package"]).resolve().is_relative_to(Path(path).resolve()), res["package"]
                if a.phases and name == "new":
                    ph = _phases(path, model, image)
                    res["phases_mb"] = ph
                    print("        numpy peak per phase: " + ", ".join(
                        f"{k} {v:.0f} MB ({v * 2**20 / size**2:.1f} B/px)" if isinstance(v, float) else f"{k}: {v}"
                        for k, v in ph.items()), flush=True)
            image.unlink()
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
