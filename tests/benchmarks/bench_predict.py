"""Benchmark of ensemble prediction (issue 4). A script, not collected by pytest.

Parts (each can be skipped):

1. **speed**: seconds per 1024² image for K members × V views (default 3 × 4 flips) with our tiled
   predictor, the network's convolution FLOPs per image and the achieved FLOP/s, next to a dense float32
   matrix product on the same threads as the machine's practical limit;
2. **deepflash2**: the same image through deepflash2's own ``InferenceEnsemble`` (its Gaussian-blended
   512 px tiles, 4 flip views, K segmentation_models_pytorch U-Nets with random weights; default
   ConvNeXt-tiny encoder and a ResNet-18 one), in a separate virtual environment that the script creates
   with ``pip install torch==<ours>`` and ``pip install deepflash2`` (``--df2-venv``; ``--df2 skip``);
3. **uncertainty vs expert disagreement** on the shared Segebarth labs (``--labs``; needs a trained
   ensemble, ``--model DIR``): mean uncertainty per expert-fraction bin, the Spearman correlation of pixel
   uncertainty with disagreement ``4 f (1 - f)`` (f = fraction of experts marking the pixel), QUBIQ-style
   Dice of ``probability > t`` against ``f > t`` for t = 0.1 … 0.9, and ROI-F1 vs est_GT of the
   ensemble next to every expert's.

Usage::

    python tests/benchmarks/bench_predict.py                       # speed (untrained), deepflash2 if possible
    python tests/benchmarks/bench_predict.py --model models/wue1 --df2 skip --labs lab-mue lab-inns1
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SAMPLE = REPO / "fiji_consensus" / "data" / "segebarth2020_wue1" / "images" / "0001.png"
SHARED = Path(os.environ.get("FIJI_CONSENSUS_DATA", REPO / "data" / "segebarth2020"))
MIN_PIXEL = {"lab-inns1": 16, "lab-inns2": 60, "lab-mue": 30, "lab-wue1": 30, "lab-wue2": 112}


def _untrained_ensemble(members: int, depth: int, base: int, out: Path):
    import torch

    from fiji_consensus.nn.ensemble import load_ensemble, save_ensemble
    from fiji_consensus.nn.unet import UNet

    torch.manual_seed(0)
    nets = {k: UNet(depth=depth, base_channels=base).eval().state_dict() for k in range(members)}
    net = UNet(depth=depth, base_channels=base)
    meta = {
        "architecture": {"name": "UNet", "config": net.config, "halo": net.halo},
        "normalization": {"method": "scale_range", "mode": "per_sample", "min_percentile": 1.0,
                          "max_percentile": 99.8, "eps": 1e-6},
        "members": [{"index": k, "selected": True} for k in range(members)],
        "threshold": 0.5,
    }
    save_ensemble(out, nets, meta)
    return load_ensemble(out)


def gemm_flops(threads: int, n: int = 2048, repeat: int = 5) -> float:
    """FLOP/s of a dense float32 n×n matrix product (the practical CPU limit for convolutions)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def bench_ours(args) -> dict:
    import imageio.v3 as iio
    import torch

    from fiji_consensus.nn.ensemble import load_ensemble
    from fiji_consensus.nn.predict import conv_flops, predict, resolve_views
    from fiji_consensus.tiling import tile_grid

    torch.set_num_threads(args.threads)
    if args.model:
        ens = load_ensemble(args.model)
        if args.members and args.members < len(ens.members):
            ens.members = ens.members[: args.members]
    else:
        ens = _untrained_ensemble(args.members, args.depth, args.base, Path(tempfile.mkdtemp()) / "ens")
    img = iio.imread(args.image)
    views = resolve_views(args.tta)
    K, V = len(ens.members), len(views)
    predict(ens, img[:128, :128], tta=args.tta, tile=args.tile)  # warm-up
    results = []
    for tile in args.tiles:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            res = predict(ens, img, tta=args.tta, tile=tile, overlap=args.overlap, batch_size=args.batch_size)
            times.append(time.perf_counter() - t)
        m = ens.tile_multiple
        t_eff = tile // m * m
        ov = args.overlap
        if ov is None:  # as predict_stack resolves it
            ov = 0.0 if ens.metadata["architecture"]["config"].get("norm", "batch") in ("batch", "none") else 0.125
        gy = tile_grid(img.shape[0], tile=t_eff, halo=ens.halo, overlap=ov, multiple=m)
        gx = tile_grid(img.shape[1], tile=t_eff, halo=ens.halo, overlap=ov, multiple=m)
        per_window = conv_flops(ens, (gy[0], gx[0]))
        n_windows = gy[3] * gx[3]
        flops = per_window * n_windows * K * V
        best = min(times)
        results.append({
            "tile": tile, "window": [gy[0], gx[0]], "windows": n_windows, "seconds_per_image": best,
            "seconds_all": times, "gflop_per_image": flops / 1e9, "gflop_per_s": flops / best / 1e9,
            "gflop_whole_image_one_view": conv_flops(ens, tuple(-(-s // m) * m for s in img.shape)) / 1e9,
            "n_objects": int(res.labels.max()),
        })
    gemm = gemm_flops(args.threads)
    return {
        "image": str(args.image), "shape": list(img.shape), "members": K, "views": list(views),
        "architecture": ens.metadata["architecture"]["config"], "halo": ens.halo, "threads": args.threads,
        "torch": torch.__version__, "gemm_gflop_per_s": gemm / 1e9, "runs": results,
    }


_DF2_SCRIPT = r"""
import json, sys, time
import numpy as np, torch, imageio.v3 as iio
import segmentation_models_pytorch as smp
from deepflash2.inference import InferenceEnsemble
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
torch.manual_seed(0)
img = iio.imread(a["image"]).astype(np.float32) / 255.0
x = torch.from_numpy(img)[..., None]                                     # HWC, as deepflash2 expects
out = {"deepflash2": __import__("deepflash2").__version__, "torch": torch.__version__, "runs": []}
for enc in a["encoders"]:
    models = [smp.Unet(encoder_name=enc, encoder_weights=None, in_channels=1, classes=2) for _ in range(a["members"])]
    ens = InferenceEnsemble(models, num_classes=2, in_channels=1, channel_means=[0.5], channel_stds=[0.25],
                            tile_shape=(a["tile"], a["tile"]), use_tta=a["tta"], max_tile_shift=0.5,
                            border_padding_factor=0.25, use_gaussian=True, device="cpu")
    with torch.inference_mode():
        ens(x[:256, :256])                                               # warm-up
        times = []
        for _ in range(a["repeat"]):
            t = time.perf_counter(); ens(x); times.append(time.perf_counter() - t)
    n_tiles = len(ens.tiler.get_slices_and_centers(list(img.shape))[2])
    out["runs"].append({"encoder": enc, "seconds_per_image": min(times), "seconds_all": times, "tiles": n_tiles,
                        "models": a["members"], "views": 4 if a["tta"] else 1})
print("RESULT " + json.dumps(out))
"""


def _df2_python(venv: Path, install: bool) -> Path | None:
    py = venv / "bin" / "python"
    ok = py.is_file() and subprocess.run([str(py), "-c", "import torchvision, deepflash2, segmentation_models_pytorch"],
                                         capture_output=True).returncode == 0
    if ok or not install:
        return py if ok else None
    import torch

    ver = torch.__version__.split("+")[0]
    major, minor = (int(v) for v in ver.split(".")[:2])
    tv = f"0.{minor + 15}.*" if major == 2 else "*"  # torchvision release paired with this torch
    t0 = time.perf_counter()
    # PyPI's torch build of our version (a CPU-only local wheel would not match PyPI's torchvision)
    env = {**os.environ, "PIP_FIND_LINKS": ""}
    cons = Path(tempfile.mkdtemp()) / "constraints.txt"
    cons.write_text(f"torch=={ver}\n")
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(py), "-m", "pip", "install", "--quiet", f"torch=={ver}", f"torchvision=={tv}"],
             [str(py), "-m", "pip", "install", "--quiet", "-c", str(cons), "deepflash2"]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        if r.returncode:
            print(f"deepflash2 install failed at {' '.join(cmd[-2:])}: {r.stderr[-800:]}", file=sys.stderr)
            return None
    check = [str(py), "-c", "import torchvision, deepflash2, segmentation_models_pytorch"]
    if subprocess.run(check, capture_output=True).returncode:
        # where pip resolves our torch version to a local CPU wheel, PyPI's torchvision does not load beside
        # it ("operator torchvision::nms does not exist"); the next release pair loads (a CUDA build, run on
        # the CPU here): deepflash2 then runs on another torch than ours, which the results record
        print("torchvision does not load beside torch " + ver + "; installing torch 2.14.1 + torchvision 0.29.1",
              file=sys.stderr)
        r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "torch==2.14.1", "torchvision==0.29.1"],
                           capture_output=True, text=True, timeout=3600)
        if r.returncode or subprocess.run(check, capture_output=True).returncode:
            print(f"deepflash2's torch/torchvision do not load: {r.stderr[-800:]}", file=sys.stderr)
            return None
    print(f"deepflash2 venv created in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return py


def bench_df2(args) -> dict | None:
    py = _df2_python(Path(args.df2_venv), install=args.df2 == "auto")
    if py is None:
        return None
    members = args.df2_members or args.members
    a = {"image": str(args.image), "threads": args.threads, "members": members, "tile": 512,
         "repeat": args.repeat, "encoders": args.df2_encoders, "tta": not args.df2_no_tta}
    r = subprocess.run([str(py), "-c", _DF2_SCRIPT, json.dumps(a)], capture_output=True, text=True, timeout=7200)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        print(f"deepflash2 run failed: {r.stderr[-2000:]}", file=sys.stderr)
        return None
    res = json.loads(line[7:])
    for run in res["runs"]:  # its loop over tiles x views x models is sequential: time scales linearly
        factor = (args.members * 4) / (run["models"] * run["views"])
        run["factor_to_members_x_4_views"] = factor
        run["seconds_per_image_scaled"] = run["seconds_per_image"] * factor
    return res


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def bench_uncertainty(args) -> dict:
    import torch

    from fiji_consensus import io as fio
    from fiji_consensus import metrics
    from fiji_consensus.nn.ensemble import load_ensemble
    from fiji_consensus.nn.predict import predict

    torch.set_num_threads(args.threads)
    ens = load_ensemble(args.model)
    rng = np.random.default_rng(0)
    out = {}
    thresholds = np.round(np.arange(0.1, 0.91, 0.1), 1)
    for lab in args.labs:
        root = Path(args.labs_root) / lab
        images = fio.list_images(root / "images")
        experts = sorted(p for p in (root / "labels").iterdir() if p.is_dir() and p.name.startswith("expert"))
        ids = list(images)[: args.max_images]
        n_exp = len(experts)
        bins = {k: {"entropy": [], "mutual_information": [], "probability": [], "n": 0} for k in range(n_exp + 1)}
        u_all, d_all, dice_t, f1_ens, f1_exp = [], [], {t: [] for t in thresholds}, [], {e.name: [] for e in experts}
        t0 = time.perf_counter()
        for iid in ids:
            img = fio.read_image(images[iid])
            masks = np.stack([fio.read_mask(fio.pair_annotations([iid], e)[iid], img.shape) for e in experts])
            gt = fio.read_mask(fio.pair_annotations([iid], root / "labels" / "est_GT")[iid], img.shape)
            res = predict(ens, img, tta=args.tta, tile=args.tile, min_size=MIN_PIXEL.get(lab, 0))
            votes = masks.sum(0)
            f = votes / n_exp
            for k in range(n_exp + 1):
                sel = votes == k
                if sel.any():
                    bins[k]["entropy"].append(float(res.maps["entropy"][sel].sum()))
                    bins[k]["mutual_information"].append(float(res.maps["mutual_information"][sel].sum()))
                    bins[k]["probability"].append(float(res.probability[sel].sum()))
                    bins[k]["n"] += int(sel.sum())
            idx = rng.choice(f.size, size=min(200_000, f.size), replace=False)
            u_all.append(res.maps["entropy"].ravel()[idx])
            d_all.append((4 * f * (1 - f)).ravel()[idx])
            for t in thresholds:
                dice_t[t].append(metrics.dice(res.probability > t, f > t))
            f1_ens.append(metrics.roi_f1(gt, res.labels > 0, min_size=MIN_PIXEL.get(lab, 0)))
            for e, m in zip(experts, masks):
                f1_exp[e.name].append(metrics.roi_f1(gt, m, min_size=MIN_PIXEL.get(lab, 0)))
        table = []
        for k, b in bins.items():
            if b["n"]:
                table.append({"experts_marking": k, "fraction": k / n_exp, "pixels": b["n"],
                              "mean_entropy": sum(b["entropy"]) / b["n"],
                              "mean_mutual_information": sum(b["mutual_information"]) / b["n"],
                              "mean_probability": sum(b["probability"]) / b["n"]})
        # disagreement levels: |f - 1/2| from 1/2 (all agree) down to 0 (split vote)
        by_level: dict[float, list] = {}
        for r in table:
            by_level.setdefault(round(abs(r["fraction"] - 0.5), 6), []).append(r)
        levels = sorted(by_level, reverse=True)
        level_u = [sum(r["mean_entropy"] * r["pixels"] for r in by_level[lv]) / sum(r["pixels"] for r in by_level[lv])
                   for lv in levels]
        out[lab] = {
            "images": len(ids), "experts": [e.name for e in experts], "seconds": time.perf_counter() - t0,
            "by_expert_fraction": table,
            "entropy_by_disagreement": [{"abs_f_minus_half": lv, "mean_entropy": u} for lv, u in zip(levels, level_u)],
            "monotonic": bool(all(b > a for a, b in zip(level_u, level_u[1:]))),
            "spearman_entropy_vs_disagreement": _spearman(np.concatenate(u_all), np.concatenate(d_all)),
            "qubiq_dice": {str(t): float(np.nanmean(v)) for t, v in dice_t.items()},
            "qubiq_dice_mean": float(np.nanmean([np.nanmean(v) for v in dice_t.values()])),
            "roi_f1_vs_est_gt": {"ensemble": float(np.nanmean(f1_ens)),
                                 **{e: float(np.nanmean(v)) for e, v in f1_exp.items()}},
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="ensemble folder (default: an untrained ensemble of --members U-Nets)")
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--depth", type=int, default=3, help="untrained U-Net depth (TrainConfig default 3)")
    p.add_argument("--base", type=int, default=16, help="untrained U-Net base channels (TrainConfig default 16)")
    p.add_argument("--tta", default="flips")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--tiles", type=int, nargs="+", default=[1152, 512])
    p.add_argument("--overlap", type=float, default=None, help="default: automatic, as predict()")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--image", default=str(SAMPLE))
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--df2", choices=["auto", "existing", "skip"], default="auto",
                   help="auto: create the deepflash2 venv if missing; existing: only use it if present")
    p.add_argument("--df2-venv", default=str(Path(tempfile.gettempdir()) / "df2venv"))
    p.add_argument("--df2-encoders", nargs="+", default=["tu-convnext_tiny", "resnet18"])
    p.add_argument("--df2-members", type=int, help="models in deepflash2's run (default --members); the time "
                   "is scaled linearly to --members x 4 views")
    p.add_argument("--df2-no-tta", action="store_true", help="deepflash2 without its 4 flips (time scaled x4)")
    p.add_argument("--labs", nargs="*", default=[], help="shared labs for part 3, e.g. lab-mue lab-inns1")
    p.add_argument("--labs-root", default=str(SHARED))
    p.add_argument("--max-images", type=int, default=1000)
    p.add_argument("--json", help="also write all results to this JSON file")
    a = p.parse_args(argv)
    results: dict = {}
    if not a.skip_speed:
        results["ours"] = ours = bench_ours(a)
        print(f"ours: {ours['members']} members x {len(ours['views'])} views, {ours['shape']} image, "
              f"{a.threads} threads, torch {ours['torch']}, U-Net {ours['architecture']}")
        for r in ours["runs"]:
            print(f"  tile {r['tile']} (windows {r['window']} x {r['windows']}): {r['seconds_per_image']:.2f} s/image, "
                  f"{r['gflop_per_image']:.0f} GFLOP/image, {r['gflop_per_s']:.1f} GFLOP/s "
                  f"(one whole-image view {r['gflop_whole_image_one_view']:.1f} GFLOP)")
        print(f"  dense float32 GEMM on {a.threads} threads: {ours['gemm_gflop_per_s']:.1f} GFLOP/s")
    if a.df2 != "skip":
        df2 = bench_df2(a)
        results["deepflash2"] = df2
        if df2 is None:
            print("deepflash2: not available (see stderr); skipped")
        else:
            runs = results.get("ours", {}).get("runs", [{"seconds_per_image": float("nan")}])
            best = min(r["seconds_per_image"] for r in runs)
            for r in df2["runs"]:
                scaled = "" if r["factor_to_members_x_4_views"] == 1 else (
                    f" (measured {r['seconds_per_image']:.1f} s with {r['models']} model(s) x {r['views']} view(s), "
                    f"scaled x{r['factor_to_members_x_4_views']:g})")
                print(f"deepflash2 {df2['deepflash2']} ({r['encoder']}, {a.members} models x 4 flips, {r['tiles']} "
                      f"tiles of 512, torch {df2['torch']}): {r['seconds_per_image_scaled']:.1f} s/image{scaled} "
                      f"-> ours is {r['seconds_per_image_scaled'] / best:.1f}x faster")
    if a.labs:
        if not a.model:
            print("uncertainty vs disagreement needs a trained ensemble (--model DIR); skipped")
        else:
            results["uncertainty"] = unc = bench_uncertainty(a)
            for lab, r in unc.items():
                print(f"{lab} ({r['images']} images, {len(r['experts'])} experts, {r['seconds']:.0f} s):")
                for row in r["by_expert_fraction"]:
                    print(f"  f = {row['fraction']:.2f}: entropy {row['mean_entropy']:.3f}, MI "
                          f"{row['mean_mutual_information']:.3f}, p {row['mean_probability']:.3f} ({row['pixels']} px)")
                levels = [round(x["mean_entropy"], 3) for x in r["entropy_by_disagreement"]]
                print(f"  entropy by disagreement (|f - 1/2| from 1/2 to 0): {levels} monotonic={r['monotonic']}")
                print(f"  Spearman(entropy, 4f(1-f)) = {r['spearman_entropy_vs_disagreement']:.3f}")
                print(f"  QUBIQ Dice(p > t, f > t), t = 0.1..0.9: "
                      f"{[round(v, 3) for v in r['qubiq_dice'].values()]} mean {r['qubiq_dice_mean']:.3f}")
                print(f"  ROI-F1 vs est_GT: " + ", ".join(f"{k} {v:.3f}" for k, v in r["roi_f1_vs_est_gt"].items()))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
