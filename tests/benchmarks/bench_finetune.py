"""Real-data benchmark: fine-tune the lab-wue1 ensemble on a few images of another lab, test on the rest.

What a lab with another microscope does with a zoo model (``fiji-consensus train --init MODEL --split all``):
its experts annotate a few images, the ensemble is fine-tuned on their consensus, and it segments the
rest. For each held-out lab (lab-mue, lab-inns1: other labs and microscopes, never seen by the base
ensemble) the first ``--n-train`` images (sorted ids) are the fine-tuning set, the others the test set; on
the test images the script prints the ROI-F1 (Segebarth definition, the lab's MIN_PIXEL) and pixel Dice
against est_GT of the base ensemble (zero-shot), of the fine-tuned ensemble, and of every expert.

Usage::

    python tests/benchmarks/bench_finetune.py --model out/bench_wue1            # the ensemble of bench_train
    python tests/benchmarks/bench_finetune.py --model model_zoo/cfos-wue1/cfos-wue1.zip --iterations 60

Every member is fine-tuned for ``--iterations`` iterations (batch 4, 256 px, learning rate 5e-4 with
warm-up and cosine decay, the base recipe's augmentation) on the fraction of that lab's experts marking
each pixel (the base recipe's targets). The base ensemble's normalisation and architecture are kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import DEFAULT_DATA, MIN_PIXEL, REPO, consensus_targets, evaluate, read_lab  # noqa: E402


def subset(lab: dict, idx: list[int]) -> dict:
    return {"ids": [lab["ids"][j] for j in idx], "images": [lab["images"][j] for j in idx],
            "est_gt": [lab["est_gt"][j] for j in idx],
            "experts": {e: [m[j] for j in idx] for e, m in lab["experts"].items()}}


class WithViews:
    """An ensemble whose ``predict_members`` averages each member over test-time views (what ``predict``
    does by default: ``--tta flips``), for ``evaluate`` and ``calibrated``."""

    def __init__(self, ens, tta: str):
        self.ens, self.tta = ens, tta

    def __getattr__(self, name):
        return getattr(self.ens, name)

    @property
    def threshold(self) -> float:
        return self.ens.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.ens.threshold = value

    @property
    def object_threshold(self) -> float | None:
        return self.ens.object_threshold

    @object_threshold.setter
    def object_threshold(self, value: float | None) -> None:
        self.ens.object_threshold = value

    def predict_members(self, image: np.ndarray) -> np.ndarray:
        from fiji_consensus.nn.predict import predict_stack

        stack = predict_stack(self.ens, image, tta=self.tta)  # (M * V, Y, X), member-major
        return stack.reshape(len(self.ens.members), -1, *stack.shape[1:]).mean(axis=1)


def table(name: str, ev: dict) -> dict:
    means = ev["means"]
    experts = sorted(n for n in means if n.startswith("expert_"))
    med = {m: statistics.median(means[e][m] for e in experts) for m in ("roi_f1", "dice")}
    print(f"  {name:<22} {means['ensemble']['roi_f1']:>7.3f} {means['ensemble']['dice']:>7.3f}")
    return {"ensemble": means["ensemble"], "median_expert": med, "experts": {e: means[e] for e in experts}}


def calibrated(name: str, ens, tune: dict, test: dict, min_size: int, objects: bool = False) -> dict:
    """The ensemble with its threshold chosen on the tune images (best mean ROI-F1 vs their est_GT, what
    ``fiji-consensus calibrate --threshold-only`` does), scored on the test images; ``objects``: the
    threshold and the object threshold (what ``fiji-consensus calibrate`` does by default)."""
    from fiji_consensus.calibration import choose_threshold, choose_thresholds

    t0 = time.perf_counter()  # what calibrate costs the user: predicting the tune images and choosing
    probs = [ens.predict_members(img).mean(axis=0) for img in tune["images"]]
    if objects:
        best, obj, _ = choose_thresholds(probs, tune["est_gt"], min_size=min_size)
    else:
        (best, _), obj = choose_threshold(probs, tune["est_gt"], min_size=min_size), None
    seconds = time.perf_counter() - t0
    old, old_obj = ens.threshold, getattr(ens, "object_threshold", None)
    ens.threshold, ens.object_threshold = best, obj
    label = f"{name} + threshold {best:.2f}" + (f"/{obj:.2f}" if obj is not None else "")
    try:
        res = table(label, evaluate(ens, test, min_size))
    finally:
        ens.threshold, ens.object_threshold = old, old_obj
    return {**res, "threshold": best, "object_threshold": obj, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "out" / "bench_wue1",
                    help="base ensemble: a folder (bench_train.py --out) or one of our bioimage.io packages")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--labs", nargs="+", default=["lab-mue", "lab-inns1"])
    ap.add_argument("--n-train", type=int, default=2, help="images of each lab to fine-tune on (sorted ids)")
    ap.add_argument("--iterations", type=int, default=400, help="fine-tuning iterations per member")
    ap.add_argument("--learning-rate", type=float, default=5e-4)
    ap.add_argument("--train-layers", choices=["all", "decoder", "head"], default="all",
                    help="which layers fine-tuning updates (TrainConfig.train_layers)")
    ap.add_argument("--targets", choices=["fraction", "staple"], default="fraction")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tta", choices=["none", "flips"], default="none",
                    help="test-time views when scoring (predict's default is flips)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench_finetune", help="fine-tuned ensembles")
    ap.add_argument("--adabn", action="store_true",
                    help="also score the label-free adaptation: batch-norm statistics re-estimated on all of the "
                    "lab's images, no annotation used (fiji_consensus.nn.adapt)")
    ap.add_argument("--skip-finetune", action="store_true", help="only zero-shot (and --adabn)")
    ap.add_argument("--rehearse", nargs="+", default=[], metavar="LAB",
                    help="also train on these labs' images (the base's training labs): half the patches from them, "
                         "half from the new lab's annotated images, so two images cannot pull the model away from "
                         "what it knew")
    ap.add_argument("--calibrate", action="store_true",
                    help="also score each ensemble with its threshold chosen on the fine-tuning images (calibrate)")
    ap.add_argument("--objects", action="store_true",
                    help="with --calibrate: also with the threshold and object threshold chosen on them (calibrate's "
                         "default since the object threshold; '<name>_objects' in the results)")
    args = ap.parse_args(argv)

    import torch

    from fiji_consensus.nn.ensemble import json_safe, load_ensemble, write_text_atomic
    from fiji_consensus.nn.train import TrainConfig, train_ensemble

    torch.set_num_threads(args.threads)
    if args.model.is_file() or (args.model / "rdf.yaml").is_file():
        from fiji_consensus.zoo import ensemble_from_package

        base = ensemble_from_package(args.model)
    else:
        base = load_ensemble(args.model)
    views = (lambda e: e) if args.tta == "none" else (lambda e: WithViews(e, args.tta))
    aug = (base.metadata.get("training") or {}).get("augment") or {}
    results: dict = {"model": str(args.model), "n_train": args.n_train, "iterations": args.iterations,
                     "learning_rate": args.learning_rate, "train_layers": args.train_layers, "rehearse": args.rehearse,
               "tta": args.tta, "labs": {}}
    for lab_name in args.labs:
        lab = read_lab(args.data / lab_name)
        n = len(lab["ids"])
        if not 0 < args.n_train < n:
            print(f"--n-train must be between 1 and {n - 1} for {lab_name}", file=sys.stderr)
            return 2
        tune, test = subset(lab, list(range(args.n_train))), subset(lab, list(range(args.n_train, n)))
        targets, note = consensus_targets(tune, args.targets)
        images, ids, labs = list(tune["images"]), list(tune["ids"]), None
        if args.rehearse:  # the new lab and all rehearsed labs together are drawn equally often (balance_labs)
            labs = {i: lab_name for i in ids}
            for other in args.rehearse:
                src = read_lab(args.data / other)
                more, _ = consensus_targets(src, args.targets)
                images += src["images"]
                targets = targets + more
                ids += [f"{other}/{i}" for i in src["ids"]]
                labs.update({f"{other}/{i}": "rehearsed" for i in src["ids"]})
            note += f"; rehearsed with {', '.join(args.rehearse)} (half the patches)"
        cfg = TrainConfig(
            members=len(base.members), split="all", seed=0, iterations=args.iterations,
            learning_rate=args.learning_rate, train_layers=args.train_layers, batch_size=4, patch_size=256,
            validate_every=args.iterations,
            checkpoint_every=50, min_size=MIN_PIXEL[lab_name], device="cpu", threads=args.threads,
            augment={k: aug[k] for k in ("zoom", "noise", "blur", "contrast", "gamma", "background") if k in aug},
        )
        seconds, fine, adabn, cal = float("nan"), None, None, {}
        print(f"\n{lab_name}: test images {test['ids']} vs est_GT (MIN_PIXEL {MIN_PIXEL[lab_name]})")
        print(f"  {'':<22} {'ROI-F1':>7} {'Dice':>7}")
        zero = table("zero-shot ensemble", evaluate(views(base), test, MIN_PIXEL[lab_name]))
        if args.calibrate:
            cal["zero_shot"] = calibrated("zero-shot", views(base), tune, test, MIN_PIXEL[lab_name])
            if args.objects:
                cal["zero_shot_objects"] = calibrated("zero-shot", views(base), tune, test, MIN_PIXEL[lab_name], True)
        if args.adabn and args.model.is_dir():
            from fiji_consensus.nn.adapt import adapt_ensemble

            t0 = time.perf_counter()
            dest = args.out / f"{lab_name}-adabn"
            if not (dest / "ensemble.json").is_file():
                adapt_ensemble(args.model, lab["images"], dest, image_ids=lab["ids"])
            adabn = table(f"AdaBN ({time.perf_counter() - t0:.0f} s)", evaluate(views(load_ensemble(dest)), test,
                                                                             MIN_PIXEL[lab_name]))
            if args.calibrate:
                cal["adabn"] = calibrated("AdaBN", views(load_ensemble(dest)), tune, test, MIN_PIXEL[lab_name])
                if args.objects:
                    cal["adabn_objects"] = calibrated("AdaBN", views(load_ensemble(dest)), tune, test,
                                                      MIN_PIXEL[lab_name], True)
        if not args.skip_finetune:
            t0 = time.perf_counter()
            done = args.out / lab_name / "ensemble.json"
            if done.is_file():  # an earlier run's fine-tuned ensemble: its own training time is reported
                seconds = sum(float(m.get("seconds", 0.0)) for m in json.loads(done.read_text())["members"])
            else:
                train_ensemble(images, targets, args.out / lab_name, cfg, image_ids=ids, init=base, labs=labs,
                               provenance={"lab": lab_name, "consensus": note, "base": str(args.model)})
                seconds = time.perf_counter() - t0
            tuned = views(load_ensemble(args.out / lab_name))
            fine = table(f"fine-tuned ({len(tuned.members)}x{args.iterations} it on {','.join(tune['ids'])}, "
                         f"{seconds / 60:.1f} min)", evaluate(tuned, test, MIN_PIXEL[lab_name]))
            if args.calibrate:
                cal["fine_tuned"] = calibrated("fine-tuned", tuned, tune, test, MIN_PIXEL[lab_name])
                if args.objects:
                    cal["fine_tuned_objects"] = calibrated("fine-tuned", tuned, tune, test, MIN_PIXEL[lab_name], True)
        for e, v in zero["experts"].items():
            print(f"  {e:<22} {v['roi_f1']:>7.3f} {v['dice']:>7.3f}")
        med = zero["median_expert"]
        print(f"  {'median expert':<22} {med['roi_f1']:>7.3f} {med['dice']:>7.3f}")
        if fine is not None:
            print(f"  fine-tuned >= median expert (ROI-F1): {fine['ensemble']['roi_f1'] >= med['roi_f1']}")
        results["labs"][lab_name] = {"tune_ids": tune["ids"], "test_ids": test["ids"], "seconds": seconds,
                                     "zero_shot": zero, "fine_tuned": fine, "adabn": adabn, "calibrated": cal}
    args.out.mkdir(parents=True, exist_ok=True)
    # scored with views: a file of its own, next to the no-view scores of the same fine-tuned ensembles
    dest = args.out / ("bench_finetune.json" if args.tta == "none" else f"bench_finetune-{args.tta}.json")
    write_text_atomic(json.dumps(json_safe(results), indent=1) + "\n", dest)
    print(f"\nresults in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
