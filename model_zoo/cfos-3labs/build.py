"""Recipe of the cfos-3labs zoo model: one ensemble trained on the consensus of all three Segebarth labs.

Trains on lab-wue1 (36 images, 5 experts), lab-mue (5 images, 4 experts) and lab-inns1 (5 images, 4 experts)
of ``data/segebarth2020`` together, each lab with its own experts, consensus (fraction of the lab's experts
marking each pixel) and MIN_PIXEL, patches drawn equally often from each lab, with the multi-lab recipe of
``tests/benchmarks/bench_crossval.py`` (the settings whose leave-one-lab-out scores are in the model card:
1-99.9 percentile normalisation, contrast 1 +- 0.5, gamma, noise and random smooth background fields).
Then ``fiji-consensus package`` writes it as one bioimage.io model.

Usage (from the repository root)::

    python model_zoo/cfos-3labs/build.py --ensemble out/cfos-3labs            # train (resumes) + package
    python model_zoo/cfos-3labs/build.py --ensemble out/cfos-3labs --skip-training
    python model_zoo/cfos-3labs/build.py --package-only --overwrite     # package --ensemble (out/cfos-3labs)
    python model_zoo/cfos-3labs/build.py --package-only out/cfos-3labs-bg --overwrite   # another trained folder

``--package-only [SOURCE]`` never trains: it packages an existing ensemble folder (default: ``--ensemble``;
e.g. one retrained with ``background_radius``) or a package ``.zip`` (read from a copy), with the
weight formats given explicitly (``--weights``; default: the torch ones and the weight-shared TensorFlow
SavedModel, which needs the ``keras`` extra), then runs ``bioimageio test`` once per format (the cfos-wue1
recipe's ``test_formats``). ``--out DIR`` writes the package and card elsewhere (to check before replacing).
Repackaging a ``.zip`` keeps the training range of image statistics (``config.fiji_consensus.domain``,
predict's out-of-domain check): ``zoo.ensemble_from_package`` carries it over; a statistic added to
fiji-consensus after the model was trained (``background_texture``) is fitted on the three labs' images and
their STAPLE consensus (``package --domain-lab``), the stored ones are kept.

Nothing is replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAME = "cfos-3labs"
LABS = ("lab-wue1", "lab-mue", "lab-inns1")  # of data/segebarth2020
TITLE = "cFOS nuclei U-Net ensemble (consensus of three labs)"
DESCRIPTION = (
    "Segmentation of cFOS-positive nuclei in fluorescence images of mouse brain sections: an ensemble of 3 "
    "U-Nets trained with fiji-consensus on the consensus of each of three labs of Segebarth et al. 2020 (eLife "
    "9:e59780): lab-wue1 (36 images, 5 experts), lab-mue and lab-inns1 (5 images, 4 experts each), every lab "
    "drawn equally often, with augmentation for other microscopes (contrast, gamma, noise, smooth bright "
    "backgrounds). Outputs the mean foreground probability and its predictive entropy (bits) over members x "
    "flips; stores the range of image statistics it was trained on, so predict warns on unlike images."
)
TAGS = ["cfos", "nuclei", "fluorescence-light-microscopy", "mouse", "brain"]


def _wue1_recipe():
    """The cfos-wue1 recipe module: the zoo's authors, maintainers, weight formats and per-format test."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfos_wue1_build", HERE.parent / "cfos-wue1" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_WUE1 = _wue1_recipe()
AUTHORS, MAINTAINERS, WEIGHTS = list(_WUE1.AUTHORS), list(_WUE1.MAINTAINERS), list(_WUE1.WEIGHTS)
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))


def train(args: argparse.Namespace) -> None:
    import bench_crossval as bc

    from fiji_consensus import __version__
    from fiji_consensus.crossval import load_lab, multi_lab_inputs
    from fiji_consensus.nn.train import train_ensemble

    rargs = bc.main.__globals__["argparse"].Namespace(
        members=args.members, folds=4, seed=0, base_channels=14, iterations=args.iterations, minutes=args.minutes,
        high_percentile=99.9, contrast=0.5, background=args.background, threads=args.threads,
        validate_every=args.iterations or 200, background_radius=0, background_renormalize=args.background_renormalize,
        zoom=None,
    )
    cfg = bc.recipe(rargs)
    labs = [load_lab(bc.DATA / lab) for lab in bc.LABS]
    kw = multi_lab_inputs(labs, "fraction")
    summary = train_ensemble(
        kw["images"], kw["targets"], args.ensemble, cfg, image_ids=kw["image_ids"], groups=None,
        expert_masks=kw["expert_masks"], labs=kw["labs"], min_sizes=kw["min_sizes"],
        provenance={"tool": "fiji-consensus", "version": __version__, "recipe": "model_zoo/cfos-3labs/build.py",
                    "targets": "fraction of each lab's own experts", "data": "data/segebarth2020 (3 labs)"},
        progress=False, resume=True,
    )
    for m in summary["members"]:
        logging.info("member %s: %s iterations, validation ROI-F1 %.3f Dice %.3f", m["index"], m["iterations"],
                     m["val_roi_f1"], m["val_dice"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ensemble", type=Path, default=REPO / "out" / NAME)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=600.0, help="time budget (a safety net; --iterations decides)")
    ap.add_argument("--iterations", type=int, default=1500,
                    help="iterations per member: 3x the first version's 500, because 3x the budget raised the "
                    "mean leave-one-lab-out ROI-F1 (300 -> 900 iterations per fold: 0.603 -> 0.671; see the card)")
    ap.add_argument("--background", type=float, default=0.6, help="peak of the background augmentation")
    ap.add_argument("--background-renormalize", action="store_true",
                    help="divide background-augmented patches as the per-image normalisation would")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--skip-package", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--package-only", nargs="?", type=Path, const=True, metavar="SOURCE",
                    help="no training: package an ensemble folder (default: --ensemble) or a package .zip "
                    "(its training range of image statistics is kept)")
    ap.add_argument("--out", type=lambda p: Path(p).resolve(), default=HERE,  # bioimageio test runs elsewhere
                    help="folder of the package and card (default: here)")
    ap.add_argument("--weights", nargs="+", default=WEIGHTS, help=f"weight formats (default: {' '.join(WEIGHTS)})")
    ap.add_argument("--no-test", action="store_true", help="skip bioimageio test")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.package_only is not None:
        source = args.ensemble if args.package_only is True else args.package_only
        if not (source.suffix == ".zip" and source.is_file()) and not (source / "ensemble.json").is_file():
            ap.error(f"--package-only takes an ensemble folder (with ensemble.json) or a package .zip; got {source}")
        return package(args, source=source)
    if not args.skip_training:
        train(args)
    if args.skip_package:
        return 0
    return package(args, source=args.ensemble)


def crossval_tables(path: Path, what: str) -> str:
    """Markdown: per left-out lab, the ROI-F1 of the fold ensemble and of each of that lab's experts on every
    image, from a ``crossval.csv`` (``fiji-consensus crossval``), with the mean row and the paper's rule."""
    import csv
    import statistics

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows; expected a crossval.csv (lab, image, rater, roi_f1, ...)")
    out = []
    for lab in dict.fromkeys(r["lab"] for r in rows):
        lab_rows = [r for r in rows if r["lab"] == lab]
        experts = sorted({r["rater"] for r in lab_rows if r["kind"] == "expert"})
        cols = ["model", *experts]
        score = {(r["image"], r["rater"]): float(r["roi_f1"]) for r in lab_rows}
        images = sorted({r["image"] for r in lab_rows})
        model = {r["image"]: r for r in lab_rows if r["kind"] == "model"}
        passes = sum(model[i]["passes_paper_rule"] == "True" for i in images)
        out += [f"**{lab} left out** ({what}): ROI-F1 per image against the lab's consensus; the paper's rule "
                f"(model ≥ the image's lowest expert) holds on {passes}/{len(images)} images.", "",
                "| image | " + " | ".join(cols) + " | lowest expert | model vs experts |",
                "|---" * (len(cols) + 3) + "|"]
        for i in images:
            vals = " | ".join(f"{score[(i, c)]:.3f}" if (i, c) in score else "n/a" for c in cols)
            out.append(f"| {i} | {vals} | {float(model[i]['lowest_expert_roi_f1']):.3f} | {model[i]['standing']} |")
        means = " | ".join(f"{statistics.fmean(score[(i, c)] for i in images if (i, c) in score):.3f}" for c in cols)
        out += [f"| mean | {means} | | |", ""]
    return "\n".join(out)


#: leave-one-lab-out runs of this recipe whose per-image scores the card shows (committed next to this file)
CROSSVAL = [(HERE / "crossval" / "folds-900it.csv", "2 members × 900 iterations per fold")]


def card_notes(tmp: Path) -> Path:
    """notes.md with the per-image leave-one-lab-out tables added to its ``## Validation`` section."""
    text = (HERE / "notes.md").read_text(encoding="utf-8")
    tables = "\n".join(crossval_tables(p, what) for p, what in CROSSVAL)
    head, sep, rest = text.partition("\n## Intended use")
    if not sep:
        raise ValueError(f"{HERE / 'notes.md'}: no '## Intended use' section after '## Validation'")
    out = tmp / "notes.md"
    out.write_text(head.rstrip() + "\n\n" + tables + sep + rest, encoding="utf-8")
    return out


def package(args: argparse.Namespace, *, source: Path) -> int:
    """``fiji-consensus package`` of ``source`` (an ensemble folder or a package) into ``args.out`` (package +
    model card), then ``bioimageio test`` of every weight format."""
    import json
    import shutil
    import tempfile

    zip_path = args.out / f"{NAME}.zip"
    card = args.out / "README.md"
    tmp = Path(tempfile.mkdtemp())
    notes = card_notes(tmp)
    if source.suffix == ".zip":  # read from a copy: the package may be the one being replaced
        source = Path(shutil.copy2(source, tmp / source.name))
    cmd = [sys.executable, "-m", "fiji_consensus", "package", "--model", str(source), "--out", str(zip_path),
           "--name", TITLE, "--description", DESCRIPTION, "--card", str(card), "--card-notes",
           str(notes), "--training-data", "segebarth2020", "--tta", "flips", "--uncertainty", "entropy",
           *sum((["--author", a] for a in AUTHORS), []), *sum((["--maintainer", m] for m in MAINTAINERS), []),
           "--license", "MIT", *sum((["--tag", t] for t in TAGS), []), "--weights", *args.weights, "--json"]
    if args.overwrite:
        cmd.append("--overwrite")
    if _WUE1.missing_statistics(source):  # statistics added after it was trained: from its three labs
        cmd += sum((["--domain-lab", str(_WUE1.DATA / lab)] for lab in LABS), [])
    logging.info("+ %s", " ".join(cmd))
    returncode, summary = _WUE1.run_package(cmd, zip_path, tmp=tmp, test=not args.no_test)
    print(json.dumps({k: summary.get(k) for k in ("ok", "out", "bytes", "members", "views", "measure",
                                                    "weight_formats", "test", "error")}, indent=1))
    return returncode or (0 if summary.get("ok") else 1)

if __name__ == "__main__":
    raise SystemExit(main())
