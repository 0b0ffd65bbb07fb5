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
    python model_zoo/cfos-wue1/build.py --from-package --overwrite --weights pytorch_state_dict onnx
    python model_zoo/cfos-wue1/build.py -- --minutes 5 --fresh            # args after -- go to bench_train.py

The members were trained with ``build.py -- --minutes 55 --fresh`` (2-core CPU, 2026-12-01); the committed
package was rebuilt from them with ``--from-package`` (same weights, metadata and held-out scores; the current
export: TorchScript returning a list, pytorch_version 2.0.1, authors, training data, card notes). They were
trained before fiji-consensus recorded the training range of image statistics, so repackaging adds it from
the 36 lab-wue1 images and their STAPLE consensus (``package --domain-lab``): ``predict`` then warns about
images unlike them. A statistic added to fiji-consensus later (``background_texture``) is added the same way
when the package is rebuilt; the stored ranges are kept.

The weight formats are passed explicitly (``--weights``; default :data:`WEIGHTS`: the torch ones and the
weight-shared TensorFlow SavedModel, which needs the ``keras`` extra). ``bioimageio test`` runs once per
format (:func:`test_formats`), each in its own process.

Nothing is replaced without ``--overwrite``. Commit the package once, when the numbers are final.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = Path(os.environ.get("FIJI_CONSENSUS_DATA", REPO / "data" / "segebarth2020"))
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

#: Weight formats of the zoo packages (``package``'s default is the torch ones only). ``keras_hdf5`` is
#: opt-in: it holds members x views U-Nets (see fiji_consensus.keras.export), the SavedModel one per member.
WEIGHTS = ["pytorch_state_dict", "torchscript", "onnx", "tensorflow_saved_model_bundle"]

_TEST_ONE = r"""
import json, sys, tempfile, zipfile
from pathlib import Path
from fiji_consensus import zoo
path, wf = sys.argv[1], sys.argv[2]
res = zoo.test_package(path, weight_format=wf)
if wf == "tensorflow_saved_model_bundle":  # the output order this process's bioimageio.core runner saw
    import numpy as np, yaml
    from fiji_consensus.keras._backend import import_keras
    keras = import_keras()
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory() as tmp:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        with zf.open(rdf["weights"][wf]["source"]) as fh, zipfile.ZipFile(fh) as sm:
            sm.extractall(tmp)
        x = np.load(zf.open(rdf["inputs"][0]["test_tensor"]["source"]))
        out = keras.layers.TFSMLayer(tmp, call_endpoint="serve")(np.zeros((1, 1) + x.shape[-2:], np.float32))
        res["bioimageio_output_order"] = list(out)
        res["described_order"] = [o["id"] for o in rdf["outputs"]]
print(json.dumps(res))
"""


def test_formats(zip_path: Path, formats: list[str], *, tries: int = 4) -> dict[str, dict]:
    """``bioimageio test`` (bioimageio.core's ``test_model``, offline) of each weight format, one process each.

    bioimageio.core 0.11's TensorFlow 2 runner takes a SavedModel's outputs as ``list(result.values())``,
    whose order protobuf randomises per process (its own TODO: "Use RDF's outputs[i].id"), so for a
    two-output SavedModel it swaps probability and uncertainty in about half of all processes. The
    SavedModel's test is therefore repeated (up to ``tries`` processes) only while the run saw the outputs
    swapped; a failure with the outputs in the described order is a failure. Every run is recorded.
    """
    results: dict[str, dict] = {}
    for wf in sorted(formats, key=lambda f: f != "tensorflow_saved_model_bundle"):  # the newest export first
        runs = []
        for _ in range(tries if wf == "tensorflow_saved_model_bundle" else 1):
            proc = subprocess.run([sys.executable, "-c", _TEST_ONE, str(zip_path), wf], cwd=REPO,
                                  capture_output=True, text=True)
            lines = proc.stdout.strip().splitlines()
            res = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"ok": False,
                                                                                  "error": proc.stderr[-2000:]}
            runs.append(res)
            swapped = res.get("bioimageio_output_order", []) != res.get("described_order", [])
            if res.get("ok") or not swapped:
                break
        results[wf] = {"ok": bool(runs[-1].get("ok")), "runs": len(runs),
                       "swapped_runs": sum(r.get("bioimageio_output_order") != r.get("described_order")
                                           for r in runs if "described_order" in r),
                       "error": runs[-1].get("error")}
        print(f"bioimageio test {wf}: {'passed' if results[wf]['ok'] else 'FAILED'} ({results[wf]})", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ensemble", type=Path, default=REPO / "out" / "bench_wue1", help="ensemble folder")
    ap.add_argument("--out", type=lambda p: Path(p).resolve(), default=HERE,  # bioimageio test runs elsewhere
                    help="zoo folder of this model (package + card)")
    ap.add_argument("--skip-training", action="store_true", help="package an existing, finished ensemble")
    ap.add_argument("--from-package", nargs="?", type=Path, const=HERE / f"{NAME}.zip", metavar="ZIP",
                    help="repackage the members, metadata and scores of a package (default: the committed one) "
                    "with the current export; no training")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing package and card")
    ap.add_argument("--weights", nargs="+", default=WEIGHTS, help=f"weight formats (default: {' '.join(WEIGHTS)})")
    ap.add_argument("--no-test", action="store_true", help="skip bioimageio test")
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
           *sum((["--tag", t] for t in TAGS), []), "--weights", *args.weights, "--json"]
    if args.overwrite:
        cmd.append("--overwrite")
    if missing_statistics(source):  # trained before (some of) the training range was recorded: from its lab
        cmd += ["--domain-lab", str(DATA / "lab-wue1")]
    print("+", " ".join(cmd), flush=True)
    returncode, summary = run_package(cmd, zip_path, tmp=tmp, test=not args.no_test)
    print(json.dumps({k: summary.get(k) for k in ("ok", "out", "bytes", "members", "views", "measure",
                                                    "weight_formats", "onnx", "test", "error")}, indent=1))
    if returncode == 0 and summary.get("bytes", 0) > 25e6:
        print(f"warning: the package is {summary['bytes'] / 1e6:.1f} MB (aim: about 20 MB)", file=sys.stderr)
    return returncode or (0 if summary.get("ok") else 1)


def missing_statistics(source: Path) -> list[str]:
    """The image statistics (:data:`fiji_consensus.domain.STATISTICS`) whose training range an ensemble folder
    or package does not store: all of them for a model trained before the range was recorded, the newer ones
    for a model trained before they were added. Shared by the zoo recipes."""
    from fiji_consensus.domain import missing_statistics as missing

    if source.suffix != ".zip":
        return missing(json.loads((source / "ensemble.json").read_text()).get("domain"))
    from fiji_consensus.zoo._common import read_rdf

    return missing(((read_rdf(source).get("config") or {}).get("fiji_consensus") or {}).get("domain"))


def run_package(cmd: list[str], zip_path: Path, *, tmp: Path | None, test: bool) -> tuple[int, dict]:
    """Run one ``fiji-consensus package`` command (removing ``tmp`` afterwards), then, unless ``test`` is
    false, test every weight format of the package (:func:`test_formats`). Returns the command's exit code
    and its JSON summary (with ``test`` and ``ok`` filled in). Shared by the zoo recipes."""
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.stderr.write(proc.stderr)
    summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    if proc.returncode == 0 and test:
        summary["test"] = test_formats(zip_path, list(summary["weight_formats"]))
        summary["ok"] = all(t["ok"] for t in summary["test"].values())
    return proc.returncode, summary


if __name__ == "__main__":
    sys.exit(main())
