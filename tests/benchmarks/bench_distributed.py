"""Benchmark of the Dask paths (issue 8). A script, not collected by pytest.

1. **batch**: images per second of ``predict`` on a local Dask cluster with 1 and with 2 worker processes
   (1 thread and 1 torch thread each; workers started and warmed up -- torch imported, ensemble loaded --
   before timing) and the ratio, next to the single-process run with 1 and 2 torch threads. Inputs: ``--n-images`` real
   images of the shared Segebarth data (lab-wue1, cropped to ``--size``²).
2. **chunked**: a synthetic ``--big``² image made by tiling one real 1024² image, written as a zarr array in
   1024² chunks, predicted with the chunked path (``map_overlap``, halo = the ensemble's) into a zarr
   group: megapixels per second and peak memory (resident set), on Dask's local threaded scheduler in a
   child process (its own peak) and on a local cluster of 2 worker processes (each worker's peak), next to
   what the in-memory path would hold (the member × view stack alone).

The ensemble is ``--model DIR`` or an untrained one of ``--members`` U-Nets (``--depth``, ``--base``): the
speed does not depend on the weights. Usage::

    python tests/benchmarks/bench_distributed.py                       # both parts, JSON on stdout
    python tests/benchmarks/bench_distributed.py --part batch --n-images 16 --size 1024
    python tests/benchmarks/bench_distributed.py --part chunked --big 8192 --chunked-tta flips
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("FIJI_CONSENSUS_DATA", REPO / "data" / "segebarth2020"))
LAB = SHARED / "lab-wue1" / "images"


def _ensemble(args, folder: Path) -> Path:
    if args.model:
        return Path(args.model)
    import torch

    from fiji_consensus.nn.ensemble import save_ensemble
    from fiji_consensus.nn.unet import UNet

    torch.manual_seed(0)
    nets = {}
    for k in range(args.members):
        net = UNet(depth=args.depth, base_channels=args.base)
        with torch.no_grad():  # non-trivial batch-norm statistics
            net.train()
            net(torch.randn(2, 1, 64, 64))
        nets[k] = net.eval().state_dict()
    meta = {
        "architecture": {"name": "UNet", "config": net.config, "halo": net.halo},
        "normalization": {"method": "scale_range", "mode": "per_sample", "min_percentile": 1.0,
                          "max_percentile": 99.8, "eps": 1e-6},
        "members": [{"index": k, "selected": True} for k in range(args.members)],
        "threshold": 0.5,
    }
    save_ensemble(folder, nets, meta)
    return folder


def _peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (Linux; unlike ru_maxrss not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------- batch


def bench_batch(args, model: Path, work: Path) -> dict:
    import imageio.v3 as iio
    import torch
    from distributed import LocalCluster

    from fiji_consensus.config import DaskOptions, PredictConfig
    from fiji_consensus.predict import run_predict

    src = sorted(LAB.glob("*.png"))[: args.n_images]
    if len(src) < args.n_images:
        raise SystemExit(f"need {args.n_images} images in {LAB}; found {len(src)}")
    imgs = work / "images"
    imgs.mkdir()
    for p in src:
        img = iio.imread(p)
        img = img[..., 0] if img.ndim == 3 else img
        iio.imwrite(imgs / p.name, img[: args.size, : args.size])
    warm = work / "warm"
    warm.mkdir()
    for p in src[:2]:
        iio.imwrite(warm / p.name, iio.imread(imgs / p.name))

    def cfg(inputs: Path, out: Path, **kw) -> PredictConfig:
        return PredictConfig(model=model, inputs=[inputs], out=out, tta=args.tta, **kw)

    res: dict = {"n_images": len(src), "size": args.size, "tta": args.tta}
    for threads in (1, 2):  # single process, no Dask
        torch.set_num_threads(threads)
        run_predict(cfg(warm, work / f"warm-seq{threads}", threads=threads))
        t = time.perf_counter()
        s = run_predict(cfg(imgs, work / f"seq{threads}", threads=threads))
        dt = time.perf_counter() - t
        res[f"single_process_{threads}_threads"] = {"seconds": dt, "images_per_second": s["n_predicted"] / dt}
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as lc:
            opts = DaskOptions(scheduler=lc.scheduler_address)
            # one torch thread per task: the ratio measures scaling by workers (by default a lone worker
            # would take both cores with 2 torch threads, like the single process with 2 threads)
            run_predict(cfg(warm, work / f"warm-dask{n}", dask=opts, threads=1))  # import torch, load the model
            t = time.perf_counter()
            s = run_predict(cfg(imgs, work / f"dask{n}", dask=opts, threads=1))
            dt = time.perf_counter() - t
        assert s["n_predicted"] == len(src), s
        res[f"dask_{n}_workers"] = {"seconds": dt, "images_per_second": s["n_predicted"] / dt}
    ips = {k: v["images_per_second"] for k, v in res.items() if isinstance(v, dict)}
    res["ratio_2_vs_1_workers"] = ips["dask_2_workers"] / ips["dask_1_workers"]
    res["ratio_2_workers_vs_1_process_2_threads"] = ips["dask_2_workers"] / ips["single_process_2_threads"]
    return res


# --------------------------------------------------------------------------------------------- chunked


def _chunked_child(spec: dict) -> dict:
    """Runs in a child process: one chunked prediction; returns its numbers and this process's peak RSS."""
    from fiji_consensus.config import DaskOptions, PredictConfig
    from fiji_consensus.distributed import predict_zarr

    before = _peak_rss_mb()
    dask = DaskOptions(workers=spec["workers"]) if spec["workers"] else None
    cfg = PredictConfig(model=spec["model"], inputs=[spec["zarr"]], out=spec["out"], tta=spec["tta"],
                        chunk=spec["chunk"], dask=dask, threads=spec["threads"], overwrite=True)
    worker_peaks: list[float] = []
    if dask is not None:
        import fiji_consensus.distributed as D

        orig = D.dask_client

        def spying(options):  # read every worker's peak RSS before the cluster closes
            import contextlib

            @contextlib.contextmanager
            def cm():
                with orig(options) as client:
                    yield client
                    worker_peaks.extend(client.run(_peak_rss_mb).values())
            return cm()

        D.dask_client = spying
    t = time.perf_counter()
    s = predict_zarr(cfg)
    dt = time.perf_counter() - t
    return {"seconds": dt, "seconds_compute": s["seconds_compute"],
            "megapixels_per_second": s["megapixels_per_second"], "n_blocks": s["n_blocks"],
            "peak_rss_mb_client": _peak_rss_mb(), "rss_mb_before": before, "peak_rss_mb_workers": worker_peaks}


def bench_chunked(args, model: Path, work: Path) -> dict:
    import imageio.v3 as iio
    import zarr

    from fiji_consensus.nn.ensemble import load_ensemble
    from fiji_consensus.nn.predict import resolve_views

    real = iio.imread(LAB / "0001.png")
    real = real[..., 0] if real.ndim == 3 else real
    reps = -(-args.big // real.shape[0]), -(-args.big // real.shape[1])
    big = np.tile(real, reps)[: args.big, : args.big]
    path = work / "big.zarr"
    z = zarr.create_array(str(path), shape=big.shape, chunks=(1024, 1024), dtype=big.dtype)
    z[:] = big
    del big
    ens = load_ensemble(model)
    k = len(ens.members) * len(resolve_views(args.chunked_tta))
    res: dict = {
        "shape": [args.big, args.big], "source": str(LAB / "0001.png"), "chunk": args.chunk, "tta": args.chunked_tta,
        "members": len(ens.members), "halo": ens.halo,
        "in_memory_stack_mb": k * args.big * args.big * 4 / 2**20,  # (M·V, Y, X) float32, before statistics
    }
    for name, workers, threads in (("threads", 0, args.threads), ("dask_2_workers", 2, None)):
        spec = {"model": str(model), "zarr": str(path), "out": str(work / f"{name}.zarr"), "tta": args.chunked_tta,
                "chunk": args.chunk, "workers": workers, "threads": threads}
        proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        res[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "batch", "chunked"], default="all")
    ap.add_argument("--model", help="an ensemble folder (default: an untrained one, see --members)")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--tta", default="flips", choices=["none", "flips", "dihedral"], help="batch part")
    ap.add_argument("--chunked-tta", default="none", choices=["none", "flips", "dihedral"], help="chunked part")
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="batch: crop side of the real images")
    ap.add_argument("--big", type=int, default=8192, help="chunked: side of the synthetic image")
    ap.add_argument("--chunk", type=int, default=1024, help="chunked: block side")
    ap.add_argument("--threads", type=int, help="chunked, threaded scheduler: Dask threads (default: cores)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(_chunked_child(json.loads(args._child))))
        return
    import torch

    from fiji_consensus.distributed import _cpu_count

    out: dict = {"cores": _cpu_count(), "torch": torch.__version__, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = _ensemble(args, work / "model")
        out["ensemble"] = {"members": args.members, "depth": args.depth, "base": args.base} if not args.model \
            else str(args.model)
        if args.part in ("all", "batch"):
            (work / "batch").mkdir()
            out["batch"] = bench_batch(args, model, work / "batch")
            print(json.dumps({"batch": out["batch"]}), file=sys.stderr)
        if args.part in ("all", "chunked"):
            (work / "chunked").mkdir()
            out["chunked"] = bench_chunked(args, model, work / "chunked")
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
