"""Leave-one-lab-out over the three Segebarth labs: is the recipe at expert level on a lab it never saw?

For each of lab-wue1, lab-mue and lab-inns1 (data/segebarth2020): train an ensemble on the other two labs
(each lab with its own experts, consensus and MIN_PIXEL, patches drawn equally often from both labs), predict
the left-out lab and score every image against that lab's consensus (STAPLE > 0.5 = est_GT) next to each of
its experts. Prints, per left-out lab, the model's mean ROI-F1 / Dice, every expert's, the median and lowest
expert, and the paper's rule (model ROI-F1 >= the lowest expert's, per image). Writes crossval.csv and
summary.json into ``--out``; an interrupted run resumes (same settings).

Run: python tests/benchmarks/bench_crossval.py --out out/crossval [--minutes-per-fold 20] [--members 2]
     [--subtract-background 30]   (also score the left-out labs with their background subtracted first)
     [--zoom 0.67 1.5]            (a recipe variant: apparent object size augmentation)

The recipe's defaults here are the ones the zoo model ``cfos-3labs`` is trained with (see its build.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("FIJI_CONSENSUS_DATA", REPO / "data" / "segebarth2020"))
LABS = ["lab-wue1", "lab-mue", "lab-inns1"]


def recipe(args: argparse.Namespace):
    """The training settings (the multi-lab recipe)."""
    from fiji_consensus.config import AugmentOptions, TrainConfig

    return TrainConfig(
        members=args.members, split="kfold", folds=max(args.members, args.folds), seed=args.seed,
        depth=3, base_channels=args.base_channels, patch_size=256, batch_size=4,
        iterations=args.iterations, max_minutes=args.minutes,
        low_percentile=1.0, high_percentile=args.high_percentile, background_radius=args.background_radius,
        augment=AugmentOptions(contrast=args.contrast, gamma=0.4, background=args.background, noise=0.02,
                               background_renormalize=args.background_renormalize,
                               zoom=tuple(args.zoom) if args.zoom else None),
        validate_every=args.validate_every, threads=args.threads, keep_checkpoints=False,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "crossval")
    ap.add_argument("--labs", nargs="+", default=LABS)
    ap.add_argument("--hold-out", nargs="*", default=None, help="labs to leave out in turn (default: all)")
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--minutes-per-fold", dest="minutes", type=float, default=20.0)
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--folds", type=int, default=4, help="k of the k-fold split of the training images (members "
                    "<= k: each member trains on (k-1)/k of them and picks its checkpoint on the rest)")
    ap.add_argument("--validate-every", type=int, default=200)
    ap.add_argument("--base-channels", type=int, default=14)
    ap.add_argument("--high-percentile", type=float, default=99.9)
    ap.add_argument("--contrast", type=float, default=0.5)
    ap.add_argument("--background", type=float, default=0.6)
    ap.add_argument("--background-renormalize", action="store_true",
                    help="divide background-augmented patches as the per-image normalisation of such an image would "
                    "(AugmentOptions.background_renormalize)")
    ap.add_argument("--zoom", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="apparent object size drawn in [MIN, MAX] (AugmentOptions.zoom; default: none, the recipe's)")
    ap.add_argument("--background-radius", type=int, default=0,
                    help="in-network top-hat background removal, window 2r+1 px (0 = none)")
    ap.add_argument("--targets", default="fraction")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adabn", action="store_true",
                    help="also score each fold's ensemble after label-free adaptation to the left-out lab (batch-norm "
                    "statistics re-estimated on that lab's images, no annotation: fiji_consensus.nn.adapt)")
    ap.add_argument("--subtract-background", type=float, default=None, metavar="R",
                    help="also score each fold's ensemble on the left-out lab's images with their rolling-ball "
                    "background subtracted first (what predict --subtract-background R does); maps in "
                    "predictions_bg<R>")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    from fiji_consensus.config import CrossvalConfig
    from fiji_consensus.crossval import run_crossval

    cfg = CrossvalConfig(labs=[DATA / lab for lab in args.labs], hold_out=args.hold_out, targets=args.targets,
                         out=args.out, train=recipe(args))
    res = run_crossval(cfg, progress=False)
    print(f"\nleave-one-lab-out ({args.members} members, {args.minutes} min per fold, targets {args.targets}); "
          "mean over the left-out lab's images vs its consensus (STAPLE > 0.5 = est_GT)")
    print(f"{'left out':<10} {'':<16} {'ROI-F1':>7} {'Dice':>7}")
    for lab, s in res["labs"].items():
        rows = [("model", s["model"]), *sorted(s["experts"].items()), ("median expert", s["median_expert"]),
                ("lowest expert", s["lowest_expert"])]
        for name, r in rows:
            print(f"{lab:<10} {name:<16} {r['roi_f1']:>7.3f} {r['dice']:>7.3f}")
        st = s["standing"]
        print(f"{lab:<10} paper's rule (ROI-F1 >= lowest expert): {s['images_at_least_lowest_expert']}/{s['images']} "
              f"images; above/within/below the experts: {st['above']}/{st['within']}/{st['below']}; "
              f"training {s['train_seconds'] / 60:.1f} min on {', '.join(s['train_labs'])}\n")
    if args.adabn:
        adabn(cfg, res)
    if args.subtract_background:
        subtracted(cfg, res, args.subtract_background)
    return 0


def subtracted(cfg, res: dict, radius: float) -> None:
    """Each fold's ensemble on the left-out lab's images after Fiji's rolling-ball background subtraction,
    scored against the same consensus and experts: what the remedy for a bright background costs or gains
    on a lab the model never saw, when applied to every image."""
    import dataclasses

    from fiji_consensus.background import subtract_background
    from fiji_consensus.crossval import _predict_lab, lab_summary, load_lab, score_lab

    print(f"rolling-ball background subtraction (radius {radius:g}) before the model vs zero-shot, ROI-F1 / Dice")
    for held, s in res["labs"].items():
        lab = load_lab(next(p for p in cfg.labs if p.name == held))
        sub = dataclasses.replace(lab, images=[subtract_background(im, radius) for im in lab.images])
        fold = cfg.out / f"without_{held}"
        prob, thr = _predict_lab(fold / "model", sub, fold / f"predictions_bg{radius:g}", tta=cfg.tta)
        a = lab_summary(score_lab(prob, lab, threshold=thr))
        print(f"{held:<10} zero-shot {s['model']['roi_f1']:.3f} / {s['model']['dice']:.3f}   subtracted "
              f"{a['model']['roi_f1']:.3f} / {a['model']['dice']:.3f} (paper's rule "
              f"{a['images_at_least_lowest_expert']}/{a['images']}; median expert {a['median_expert']['roi_f1']:.3f})")


def adabn(cfg, res: dict) -> None:
    """Each fold's ensemble adapted to the left-out lab without labels (AdaBN), scored the same way."""
    import time

    from fiji_consensus.crossval import _predict_lab, lab_summary, load_lab, score_lab
    from fiji_consensus.nn.adapt import adapt_ensemble

    print("label-free adaptation (AdaBN on the left-out lab's images) vs zero-shot, ROI-F1 / Dice")
    for held, s in res["labs"].items():
        lab = load_lab(next(p for p in cfg.labs if p.name == held))
        fold = cfg.out / f"without_{held}"
        t0 = time.perf_counter()
        if not (fold / "adabn" / "ensemble.json").is_file():
            adapt_ensemble(fold / "model", lab.images, fold / "adabn", image_ids=lab.ids)
        secs = time.perf_counter() - t0
        prob, thr = _predict_lab(fold / "adabn", lab, fold / "predictions_adabn", tta=cfg.tta)
        a = lab_summary(score_lab(prob, lab, threshold=thr))
        print(f"{held:<10} zero-shot {s['model']['roi_f1']:.3f} / {s['model']['dice']:.3f}   AdaBN "
              f"{a['model']['roi_f1']:.3f} / {a['model']['dice']:.3f} (adaptation {secs:.0f} s; paper's rule "
              f"{a['images_at_least_lowest_expert']}/{a['images']}; median expert {a['median_expert']['roi_f1']:.3f})")


if __name__ == "__main__":
    raise SystemExit(main())
