"""Real-data benchmark: train a U-Net ensemble on lab-wue1 on this CPU, test it on two unseen labs.

Trains on the 36 lab-wue1 images (Segebarth et al. 2020) with STAPLE consensus targets, grouped k-fold over
the 9 groups of ``groups_wue1.csv``, within a wall-time budget for the whole ensemble (``--minutes``, default
60), then predicts lab-mue and lab-inns1 (other labs and microscopes, never seen in training) and prints per
lab the ROI-F1 (Segebarth definition; MIN_PIXEL mue 30, inns1 16) and pixel Dice against est_GT of the
ensemble, of each member, and of each expert, plus the training throughput. On lab-wue1 itself it prints the
out-of-fold scores (each image scored by the member whose validation fold held it) next to the experts'.

Prediction here is simple: every image whole, mirror-padded to a multiple of 2**depth, mean of the members
(the tiled predictor is another issue).

Usage::

    python tests/benchmarks/bench_train.py --minutes 60            # the benchmark
    python tests/benchmarks/bench_train.py --minutes 2 --out out/smoke --fresh   # a smoke test

Design for a 2-core CPU (defaults): a 4-level U-Net (depth 3 poolings, 16 base channels, batch norm,
0.48 M parameters, receptive-field radius 51 px, halo 56), 256 px patches, batch 4, AdamW with warm-up
and cosine decay over the time budget, BCE + soft Dice, foreground/boundary-weighted patch sampling,
flips/rot90/affine/gamma/contrast augmentation plus
zoom (apparent object size 0.5-1.3x: the other labs image smaller cells), noise and blur (cross-lab robustness), validation (full held-out images) every 200 iterations and
the best checkpoint kept per member. Each member gets minutes/members of wall time, checked before every
iteration, keeping back the estimated cost of its final validation (about 2 s per 1024^2 image).
The ensemble folder is kept in ``--out`` for the prediction and packaging issues (not in git; this script is
the recipe). Re-running with the same settings resumes an interrupted run or, if complete, only
re-evaluates.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("FIJI_CONSENSUS_DATA", REPO / "data" / "segebarth2020"))
MIN_PIXEL = {"lab-wue1": 30, "lab-mue": 30, "lab-inns1": 16}
DEEPFLASH2_REFERENCE = (
    "deepflash2 step cost not measured here (its venv is missing); the project notes report for a 2-core "
    "CPU: ConvNeXt-tiny encoder, 512 px, batch 4: about 37 s per step; ResNet-18 encoder, 256 px: about 1.3 s"
)


_DF2_STEP = r"""
import json, sys, time
import torch
from deepflash2.models import create_smp_model
from deepflash2.losses import get_loss
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
torch.manual_seed(0)
out = {"deepflash2": __import__("deepflash2").__version__, "torch": torch.__version__, "runs": []}
for enc, tile in a["nets"]:
    model = create_smp_model("Unet", encoder_name=enc, encoder_weights=None, in_channels=1, classes=2)
    loss_fn = get_loss("CrossEntropyDiceLoss", classes=[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(a["batch"], 1, tile, tile)
    y = (torch.rand(a["batch"], tile, tile) > 0.9).long()
    times = []
    for i in range(a["steps"] + 1):                                      # first step = warm-up
        t = time.perf_counter()
        opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()
        if i:
            times.append(time.perf_counter() - t)
    out["runs"].append({"encoder": enc, "tile": tile, "batch": a["batch"], "seconds_per_step": min(times),
                        "seconds_all": times, "parameters": sum(p.numel() for p in model.parameters())})
print("RESULT " + json.dumps(out))
"""

DF2_NETS = [("tu-convnextv2_tiny.fcmae_ft_in22k_in1k", 512), ("resnet18", 256)]


def bench_df2_step(venv: Path, threads: int, steps: int) -> dict | None:
    """deepflash2's training step (its default network and a ResNet-18 one) in its own venv, untrained."""
    import subprocess

    py = venv / "bin" / "python"
    if not py.is_file():
        print(f"deepflash2 venv not found at {venv}: create it with tests/benchmarks/bench_predict.py "
              "(--df2 auto); deepflash2 step cost not measured", file=sys.stderr)
        return None
    arg = json.dumps({"threads": threads, "steps": steps, "batch": 4, "nets": DF2_NETS})
    r = subprocess.run([str(py), "-c", _DF2_STEP, arg], capture_output=True, text=True)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode or line is None:
        print(f"deepflash2 step measurement failed: {r.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(line[len("RESULT "):])


def print_df2(df2: dict | None, ours_s_per_iter: float | None) -> None:
    if df2 is None:
        print(DEEPFLASH2_REFERENCE)
        return
    for r in df2["runs"]:
        ratio = f"; ours {ours_s_per_iter:.2f} s/iter = {r['seconds_per_step'] / ours_s_per_iter:.1f}x cheaper" \
            if ours_s_per_iter else ""
        print(f"deepflash2 {df2['deepflash2']} training step, measured here: Unet/{r['encoder']} "
              f"({r['parameters'] / 1e6:.1f} M parameters), {r['tile']} px, batch {r['batch']}: "
              f"{r['seconds_per_step']:.2f} s per step (min of {len(r['seconds_all'])}){ratio}")


def read_mask(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    m = iio.imread(path)
    if m.ndim == 3:  # the expert masks are RGB PNGs
        m = m[..., 0]
    return m > 0


def read_lab(lab_dir: Path) -> dict:
    import imageio.v3 as iio

    ids = sorted(p.stem for p in (lab_dir / "images").glob("*.png"))
    experts = sorted(p.name for p in (lab_dir / "labels").iterdir() if p.name.startswith("expert_"))
    return {
        "ids": ids,
        "images": [iio.imread(lab_dir / "images" / f"{i}.png") for i in ids],
        "est_gt": [read_mask(lab_dir / "labels" / "est_GT" / f"{i}_cFOS.png") for i in ids],
        "experts": {e: [read_mask(lab_dir / "labels" / e / f"{i}_cFOS.png") for i in ids] for e in experts},
    }


def consensus_targets(lab: dict, kind: str) -> tuple[list[np.ndarray], str]:
    """Training targets: the experts' STAPLE consensus (hard > 0.5 or the soft posterior), the fraction of
    experts marking each pixel, or the published est_GT."""
    if kind == "est_gt":
        return [m.astype(np.float32) for m in lab["est_gt"]], "est_GT PNGs (= STAPLE > 0.5)"
    from fiji_consensus.consensus import expert_fraction, staple

    experts = sorted(lab["experts"])
    if kind == "fraction":
        targets = [expert_fraction(np.stack([lab["experts"][e][j] for e in experts])) for j in range(len(lab["ids"]))]
        return targets, f"fraction of the {len(experts)} experts marking each pixel (soft; > 0.5 = majority)"
    targets, same = [], 0
    for j in range(len(lab["ids"])):
        res = staple(np.stack([lab["experts"][e][j] for e in experts]))
        hard = res.probability > 0.5
        same += int(np.array_equal(hard, lab["est_gt"][j]))
        targets.append(res.probability.astype(np.float32) if kind == "staple-soft" else hard.astype(np.float32))
    label = "STAPLE posterior (soft)" if kind == "staple-soft" else "STAPLE > 0.5"
    return targets, f"{label}; STAPLE > 0.5 equals est_GT on {same}/{len(targets)} images"


def evaluate(ens, lab: dict, min_size: int) -> dict:
    from fiji_consensus.metrics import dice, roi_f1

    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, gt: np.ndarray, pred: np.ndarray) -> None:
        r = rows.setdefault(name, {"roi_f1": [], "dice": []})
        r["roi_f1"].append(roi_f1(gt, pred, min_size=min_size))
        r["dice"].append(dice(gt, pred))

    from fiji_consensus.instances import foreground

    t0 = time.perf_counter()
    for j, img in enumerate(lab["images"]):
        gt = lab["est_gt"][j]
        probs = ens.predict_members(img)
        add("ensemble", gt, foreground(probs.mean(axis=0), ens.threshold, getattr(ens, "object_threshold", None)))
        for k, p in zip(ens.indices, probs):
            add(f"member {k}", gt, p > ens.threshold)
        for e, masks in lab["experts"].items():
            add(e, gt, masks[j])
    seconds = time.perf_counter() - t0
    means = {n: {m: float(np.nanmean(v)) for m, v in r.items()} for n, r in rows.items()}
    return {"means": means, "per_image": rows, "seconds": seconds, "images": len(lab["images"])}


def within_lab(members: list[dict], lab: dict, min_size: int) -> dict | None:
    """Out-of-fold scores on the training lab (each image scored by the member that held it out) next to each
    expert's against est_GT, and the paper's rule (ROI-F1 >= the lowest expert's on every image)."""
    from fiji_consensus.metrics import dice, roi_f1

    oof = {}
    for m in members:  # ensemble.json's members (their val_per_image)
        oof.update(m.get("val_per_image") or {})
    ids = [i for i in lab["ids"] if i in oof]
    if not ids:
        return None
    pos = {i: j for j, i in enumerate(lab["ids"])}
    experts = {e: {"roi_f1": [roi_f1(lab["est_gt"][pos[i]], ms[pos[i]], min_size=min_size) for i in ids],
                   "dice": [dice(lab["est_gt"][pos[i]], ms[pos[i]]) for i in ids]} for e, ms in lab["experts"].items()}
    f1 = [oof[i]["roi_f1"] for i in ids]
    lowest = [min(experts[e]["roi_f1"][j] for e in experts) for j in range(len(ids))]
    means = {e: {k: float(np.nanmean(v)) for k, v in r.items()} for e, r in experts.items()}
    res = {
        "images": len(ids), "out_of_fold": {"roi_f1": float(np.nanmean(f1)),
                                            "dice": float(np.nanmean([oof[i]["dice"] for i in ids]))},
        "experts": means,
        "median_expert": {k: statistics.median(means[e][k] for e in means) for k in ("roi_f1", "dice")},
        "images_at_least_lowest_expert": int(sum(a >= b for a, b in zip(f1, lowest))),
    }
    print(f"\nlab-wue1, held-out groups ({len(ids)} images; each scored by the member that did not train on it) vs "
          "est_GT, mean over images")
    print(f"  {'':<16} {'ROI-F1':>7} {'Dice':>7}")
    for name, r in [("out-of-fold", res["out_of_fold"]), *sorted(means.items()), ("median expert", res["median_expert"])]:
        print(f"  {name:<16} {r['roi_f1']:>7.3f} {r['dice']:>7.3f}")
    print(f"  paper's rule (ROI-F1 >= the lowest expert's): {res['images_at_least_lowest_expert']}/{len(ids)} images")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding lab-wue1, lab-mue, lab-inns1")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench_wue1", help="ensemble folder")
    ap.add_argument("--minutes", type=float, default=60.0, help="training wall budget for the whole ensemble")
    ap.add_argument("--members", type=int, default=4, help="members = grouped folds (the paper: 4)")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--base-channels", type=int, default=14)
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--validate-every", type=int, default=200)
    ap.add_argument("--border-weight", type=float, default=0.0)
    ap.add_argument("--zoom", type=float, nargs=2, default=(0.5, 1.3), metavar=("MIN", "MAX"),
                    help="apparent object size range of the augmentation (other labs image cells smaller)")
    ap.add_argument("--noise", type=float, default=0.08, help="largest Gaussian noise sigma (normalised units)")
    ap.add_argument("--blur", type=float, default=1.0, help="largest Gaussian blur sigma (pixels)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", choices=["fraction", "staple", "staple-soft", "est_gt"], default="fraction",
                    help="training targets (default: the fraction of experts marking each pixel)")
    ap.add_argument("--high-percentile", type=float, default=99.99,
                    help="upper percentile of the per-image normalisation (99.99: the brightest cells set the "
                    "scale, so a sparse image's background is not stretched)")
    ap.add_argument("--paper-selection", action="store_true", help="apply the paper's member selection rule")
    ap.add_argument("--fresh", action="store_true", help="start over instead of resuming in --out")
    ap.add_argument("--progress", action="store_true", help="tqdm bars")
    ap.add_argument("--df2-venv", type=Path, default=Path("/tmp/df2venv"),
                    help="deepflash2's venv (made by bench_predict.py) for measuring its training step")
    ap.add_argument("--df2-steps", type=int, default=3, help="timed deepflash2 steps per network (0 = skip)")
    ap.add_argument("--df2-only", action="store_true", help="only measure deepflash2's training step")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.df2_only:
        print_df2(bench_df2_step(args.df2_venv, args.threads, max(args.df2_steps, 1)), None)
        return 0

    import torch

    from fiji_consensus.nn.ensemble import json_safe, load_ensemble, write_text_atomic
    from fiji_consensus.nn.train import TrainConfig, train_ensemble

    torch.set_num_threads(args.threads)
    wue1_dir = args.data / "lab-wue1"
    if not wue1_dir.is_dir():
        print(f"data not found: {wue1_dir}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    wue1 = read_lab(wue1_dir)
    with open(wue1_dir / "groups_wue1.csv", newline="") as fh:
        groups = {row["file_id"]: row["group_id"] for row in csv.DictReader(fh)}
    targets, target_note = consensus_targets(wue1, args.targets)
    print(f"lab-wue1: {len(wue1['ids'])} images, {len(set(groups.values()))} groups; targets: {target_note} "
          f"({time.perf_counter() - t0:.1f} s to read and build)")

    cfg = TrainConfig(
        members=args.members, split="group_kfold", seed=args.seed, depth=args.depth,
        base_channels=args.base_channels, patch_size=args.patch_size, batch_size=args.batch_size,
        iterations=None, max_minutes=args.minutes, learning_rate=args.learning_rate,
        validate_every=args.validate_every, checkpoint_every=50, min_size=MIN_PIXEL["lab-wue1"],
        border_weight=args.border_weight, paper_selection=args.paper_selection, device="cpu",
        high_percentile=args.high_percentile,
        threads=args.threads,
        augment={"zoom": tuple(args.zoom), "noise": args.noise, "blur": args.blur},
    )
    print("config:", cfg.model_dump_json())
    t_train = time.perf_counter()
    summary = train_ensemble(
        wue1["images"], targets, args.out, cfg, image_ids=wue1["ids"], groups=groups,
        expert_masks=wue1["experts"], progress=args.progress, resume=not args.fresh,
        provenance={"lab": "lab-wue1", "consensus": target_note, "experts": sorted(wue1["experts"]),
                    "source": str(wue1_dir), "recipe": "tests/benchmarks/bench_train.py"},
    )
    wall = time.perf_counter() - t_train
    print(f"\ntraining: {wall / 60:.1f} min wall in this call (budget {args.minutes} min for the ensemble; "
          f"recorded {summary['seconds'] / 60:.1f} min)")
    print(f"{'member':>6} {'iters':>6} {'best@':>6} {'s/iter':>7} {'patch/s':>8} {'val ROI-F1':>10} {'val Dice':>9}  selected")
    nan = float("nan")
    for m in summary["members"]:
        pps_m = m["patches_per_second"] or nan
        print(f"{m['index']:>6} {m['iterations']:>6} {m['best_iteration']:>6} {cfg.batch_size / pps_m:>7.2f} "
              f"{pps_m:>8.2f} {m['val_roi_f1'] if m['val_roi_f1'] is not None else nan:>10.3f} "
              f"{m['val_dice'] if m['val_dice'] is not None else nan:>9.3f}  {m['selected']}")
    pps = summary["patches_per_second"] or nan
    print(f"throughput: {pps:.2f} patches/s of {cfg.patch_size}^2 ({cfg.batch_size / pps:.2f} s per iteration of "
          f"batch {cfg.batch_size}, training steps only, {torch.get_num_threads()} threads)")

    ens = load_ensemble(args.out)
    results = {"summary": summary, "labs": {},
               "within_lab": within_lab(ens.metadata["members"], wue1, MIN_PIXEL["lab-wue1"])}
    ok = True
    for lab_name in ("lab-mue", "lab-inns1"):
        lab = read_lab(args.data / lab_name)
        ev = evaluate(ens, lab, MIN_PIXEL[lab_name])
        results["labs"][lab_name] = ev
        means = ev["means"]
        experts = sorted(n for n in means if n.startswith("expert_"))
        members = sorted(n for n in means if n.startswith("member "))
        med = {m: statistics.median(means[e][m] for e in experts) for m in ("roi_f1", "dice")}
        avg_member = {m: float(np.mean([means[k][m] for k in members])) for m in ("roi_f1", "dice")}
        print(f"\n{lab_name} ({ev['images']} images, MIN_PIXEL {MIN_PIXEL[lab_name]}, prediction {ev['seconds']:.0f} s) "
              "vs est_GT, mean over images")
        print(f"  {'':<16} {'ROI-F1':>7} {'Dice':>7}")
        for name in ["ensemble", *members, *experts]:
            print(f"  {name:<16} {means[name]['roi_f1']:>7.3f} {means[name]['dice']:>7.3f}")
        print(f"  {'median expert':<16} {med['roi_f1']:>7.3f} {med['dice']:>7.3f}")
        print(f"  {'average member':<16} {avg_member['roi_f1']:>7.3f} {avg_member['dice']:>7.3f}")
        goal_expert = means["ensemble"]["roi_f1"] >= med["roi_f1"]
        goal_members = means["ensemble"]["roi_f1"] > avg_member["roi_f1"]
        print(f"  ensemble >= median expert (ROI-F1): {goal_expert}; ensemble > average member: {goal_members}")
        ok &= goal_expert and goal_members
    out_json = args.out / "bench_results.json"
    write_text_atomic(json.dumps(json_safe(results), indent=1) + "\n", out_json)
    df2 = bench_df2_step(args.df2_venv, args.threads, args.df2_steps) if args.df2_steps else None
    print()
    print_df2(df2, cfg.batch_size / pps if pps == pps else None)
    results["deepflash2_step"] = df2
    write_text_atomic(json.dumps(json_safe(results), indent=1) + "\n", out_json)
    print(f"\ngoals met on both held-out labs: {ok}; results in {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
