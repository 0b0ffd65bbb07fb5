"""Recipe of the cfos-wue1 zoo model: train on all of lab-wue1, validate on lab-mue and lab-inns1, package.

Rebuilds ``model_zoo/cfos-wue1/cfos-wue1.zip`` and its model card ``README.md`` from the Segebarth et al. 2020
data in ``data/segebarth2020`` of this repository (or ``$FIJI_CONSENSUS_DATA``):

1. ``tests/benchmarks/bench_train.py`` trains a 4-member U-Net ensemble (grouped 4-fold over the 9 groups of
   ``groups_wue1.csv``, the fraction of the 5 experts marking each pixel as soft targets, per-image 1-99.99
   percentile normalisation, a 60-minute CPU budget; its defaults are the recipe) into ``--ensemble`` and
   scores the ensemble, its members and every expert on the two held-out labs (``bench_results.json``). An
   interrupted run resumes; a finished one is only re-evaluated.
2. ``fiji-consensus package`` writes the ensemble as one bioimage.io model (4 members x 4 flip views inside,
   probability + predictive entropy), runs ``bioimageio test`` on it (offline, every weight format) and
   writes the model card from ``ensemble.json``, ``bench_results.json`` and the hand-written ``notes.md``
   (the card is both the package's ``documentation.md`` and ``README.md`` here).

Usage (from the repository root)::

    python model_zoo/cfos-wue1/build.py                                   # train (60 min) + package
    python model_zoo/cfos-wue1/build.py --skip-training --ensemble out/bench_wue1   # package a finished run
    python model_zoo/cfos-wue1/build.py --from-package --overwrite        # repackage the committed members
    python model_zoo/cfos-wue1/build.py -- --minutes 5 --fresh            # args after -- go to bench_train.py

The members were trained with ``build.py -- --minutes 55 --fresh`` (2-core CPU, 2026-12-01); the committed
package was rebuilt from them with ``--from-package`` (same weights, metadata and held-out scores; the current
export: TorchScript returning a list, pytorch_version 2.0.1, authors, training data, card notes).

Nothing is replaced without ``--overwrite``. Commit the package once, when the numbers are final.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAME = "cfos-wue1"
TITLE = "cFOS nuclei U-Net ensemble (lab-wue1 consensus)"
DESCRIPTION = (
    "Segmentation of cFOS-positive nuclei in fluorescence images of mouse brain sections: an ensemble of 4 "
    "U-Nets trained with fiji-consensus on the agreement of 5 experts (the fraction of experts marking each "
    "pixel) on the 36 lab-wue1 images of Segebarth et al. 2020 (eLife 9:e59780), validated on two other labs "
    "(lab-mue, lab-inns1). "
    "Outputs the mean foreground probability and its predictive entropy (bits) over members x flips."
)
#: modality and content; fiji-consensus adds 2d, pytorch, unet, deepimagej, fiji, imagej, semantic-segmentation
TAGS = ["cfos", "nuclei", "fluorescence-light-microscopy", "mouse", "brain"]
#: Authors of the package ("Name; affiliation=...; github_user=...; orcid=..."). Maintainers need a GitHub user,
#: which bioimageio.spec looks up on api.github.com when it validates (an unknown one fails offline tests).
AUTHORS = ["fiji-consensus developers"]
MAINTAINERS: list[str] = []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ensemble", type=Path, default=REPO / "out" / "bench_wue1", help="ensemble folder")
    ap.add_argument("--out", type=Path, default=HERE, help="zoo folder of this model (package + card)")
    ap.add_argument("--skip-training", action="store_true", help="package an existing, finished ensemble")
    ap.add_argument("--from-package", nargs="?", type=Path, const=HERE / f"{NAME}.zip", metavar="ZIP",
                    help="repackage the members, metadata and scores of a package (default: the committed one) "
                    "with the current export; no training")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing package and card")
    args = ap.parse_args(argv)
    py = sys.executable

    if args.from_package is not None:
        return package(args, source=args.from_package, results=None)
    if not args.skip_training:
        cmd = [py, str(REPO / "tests" / "benchmarks" / "bench_train.py"), "--out", str(args.ensemble), *extra]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO)
    results = args.ensemble / "bench_results.json"
    if not (args.ensemble / "ensemble.json").is_file() or not results.is_file():
        print(f"{args.ensemble} holds no finished ensemble with bench_results.json; train it first", file=sys.stderr)
        return 2
    return package(args, source=args.ensemble, results=results)


def package(args: argparse.Namespace, *, source: Path, results: Path | None) -> int:
    """``fiji-consensus package`` of ``source`` (an ensemble folder or a package) into ``args.out``."""
    import shutil
    import tempfile

    py = sys.executable
    zip_path = args.out / f"{NAME}.zip"
    tmp = None
    if source.suffix == ".zip":  # read from a copy: the package may be the one being replaced
        tmp = Path(tempfile.mkdtemp())
        source = Path(shutil.copy2(source, tmp / source.name))
    card = args.out / "README.md"
    if not zip_path.exists() and card.is_file() and card.read_text().startswith("<!-- placeholder"):
        card.unlink()  # the placeholder card of a model not built yet
    cmd = [py, "-m", "fiji_consensus", "package", "--model", str(source), "--out", str(zip_path),
           "--name", TITLE, "--description", DESCRIPTION, *(["--validation", str(results)] if results else []),
           "--card", str(card), "--card-notes", str(HERE / "notes.md"), "--training-data", "segebarth2020",
           "--tta", "flips", "--uncertainty", "entropy", *sum((["--author", a] for a in AUTHORS), []),
           *sum((["--maintainer", m] for m in MAINTAINERS), []), "--license", "MIT",
           *sum((["--tag", t] for t in TAGS), []), "--test", "--json"]
    if args.overwrite:
        cmd.append("--overwrite")
    print("+", " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.stderr.write(proc.stderr)
    summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    print(json.dumps({k: summary.get(k) for k in ("ok", "out", "bytes", "members", "views", "measure",
                                                    "weight_formats", "onnx", "test", "error")}, indent=1))
    if proc.returncode == 0 and summary.get("bytes", 0) > 25e6:
        print(f"warning: the package is {summary['bytes'] / 1e6:.1f} MB (aim: about 20 MB)", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
