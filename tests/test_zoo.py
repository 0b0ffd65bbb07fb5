"""bioimage.io packaging and running packages, on a tiny ensemble trained on crops of the bundled real sample.

The ensemble is trained for real (train_ensemble, seconds), packaged with every weight format, and checked
with bioimageio.core's own test (offline), against our own prediction, and against packages broken on
purpose. Foreign packages are built with bioimageio.spec's API around small torchscript networks.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("bioimageio.core")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import imageio.v3 as iio  # noqa: E402
import tifffile  # noqa: E402
from ruyaml import YAML  # noqa: E402  (bioimageio.spec's YAML 1.2 library)

from fiji_consensus import uncertainty as U  # noqa: E402
from fiji_consensus import zoo  # noqa: E402
from fiji_consensus._util import sha256_file  # noqa: E402
from fiji_consensus.cli import main  # noqa: E402
from fiji_consensus.config import PackageConfig, PredictConfig  # noqa: E402
from fiji_consensus.nn.ensemble import load_ensemble  # noqa: E402
from fiji_consensus.nn.ensemble_net import EnsembleNet, architecture_source  # noqa: E402
from fiji_consensus.nn.predict import VIEWS, EnsemblePredictor, predict  # noqa: E402
from fiji_consensus.zoo.export import build_net  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "fiji_consensus" / "data" / "segebarth2020_wue1"
WINDOWS = {"0001": (320, 384), "0015": (320, 320), "0062": (704, 384), "0076": (64, 384), "0092": (832, 576)}
EXPERTS = ["expert_1", "expert_2", "expert_3", "expert_4", "expert_5"]
#: package (bioimageio.core, tiled) vs our predict (predict_tiled): measured max |difference| about 2e-7
TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


def _mask(path: Path) -> np.ndarray:
    m = iio.imread(path)
    return (m[..., 0] if m.ndim == 3 else m) > 0


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, shared_data):
    """A 2-member depth-2 ensemble trained on 96 px windows of the five bundled images, with real
    held-out scores on two 256 px crops of lab-mue (another lab)."""
    from fiji_consensus.metrics import dice, roi_f1
    from fiji_consensus.nn.train import TrainConfig, train_ensemble

    torch.set_num_threads(1)
    images, targets, ids = [], [], []
    for iid, (y, x) in WINDOWS.items():
        win = np.s_[y : y + 96, x : x + 96]
        ids.append(iid)
        images.append(iio.imread(SAMPLE / "images" / f"{iid}.png")[win])
        targets.append(_mask(SAMPLE / "labels" / "est_GT" / f"{iid}_cFOS.png")[win].astype(np.float32))
    out = tmp_path_factory.mktemp("zoo") / "tiny-wue1"
    cfg = TrainConfig(members=2, depth=2, base_channels=8, patch_size=48, batch_size=4, iterations=16,
                      validate_every=8, checkpoint_every=50, min_size=10, seed=0, device="cpu", threads=1)
    # an absolute source path, as a real training run records it: the package must not carry it
    train_ensemble(images, targets, out, cfg, image_ids=ids,
                   provenance={"lab": "lab-wue1 (bundled crops)", "consensus": "est_GT", "experts": EXPERTS,
                               "source": str(SAMPLE / "images")})
    ens = load_ensemble(out)
    mue = shared_data / "lab-mue"
    means: dict[str, dict[str, list[float]]] = {}
    for iid in sorted(p.stem for p in (mue / "images").glob("*.png"))[:2]:
        win = np.s_[256:512, 256:512]
        img = iio.imread(mue / "images" / f"{iid}.png")[win]
        gt = _mask(mue / "labels" / "est_GT" / f"{iid}_cFOS.png")[win]
        pred = ens.predict(img) > ens.threshold
        cands = {"ensemble": pred, **{f"member {k}": p > 0.5 for k, p in zip(ens.indices, ens.predict_members(img))}}
        for e in sorted(p.name for p in (mue / "labels").iterdir() if p.name.startswith("expert")):
            cands[e] = _mask(mue / "labels" / e / f"{iid}_cFOS.png")[win]
        for name, m in cands.items():
            r = means.setdefault(name, {"roi_f1": [], "dice": []})
            r["roi_f1"].append(roi_f1(gt, m, min_size=30))
            r["dice"].append(dice(gt, m))
    val = {"labs": {"lab-mue": {"images": 2, "means": {n: {k: float(np.nanmean(v)) for k, v in r.items()}
                                                        for n, r in means.items()}}}}
    (out / "validation.json").write_text(json.dumps(val))
    return out


@pytest.fixture(scope="module")
def package(ensemble_dir, tmp_path_factory):
    """The ensemble packaged with all weight formats, flips inside, entropy; its model card beside it."""
    d = tmp_path_factory.mktemp("pkg")
    notes = tmp_path_factory.mktemp("notes") / "notes.md"
    notes.write_text("Hand-written notes of the tiny model.\n\n## Validation\n\nA NOTE ON VALIDATION.\n\n"
                                "## Intended use and limits\n\nA NOTE ON LIMITS.\n")
    # bioimageiobot: a GitHub user that bioimageio.spec knows offline (it looks others up on api.github.com)
    summary = zoo.package_ensemble(ensemble_dir, d / "tiny-wue1.zip", name="tiny wue1 ensemble", tile=128,
                                   card=d / "README.md", description="Tiny test ensemble.",
                                   authors=["Jane Doe; affiliation=University of Example"],
                                   maintainers=["bioimageiobot"], training_data="segebarth2020",
                                   tags=["fluorescence-light-microscopy", "nuclei"], card_notes=notes)
    return d / "tiny-wue1.zip", summary


@pytest.fixture(scope="module")
def package_std(ensemble_dir, tmp_path_factory):
    """The same ensemble without views and with the member standard deviation as uncertainty (onnx)."""
    d = tmp_path_factory.mktemp("pkg_std")
    zoo.package_ensemble(ensemble_dir, d / "std.zip", name="tiny wue1 std", tta="none", uncertainty="std",
                         weight_formats=("onnx",), tile=96)
    return d / "std.zip"


@pytest.fixture(scope="module")
def image():
    return iio.imread(SAMPLE / "images" / "0015.png")[300:420, 300:448]  # 120 x 148: blocks of 80 (4 x 4)


@pytest.fixture(scope="module")
def odd_image():
    return iio.imread(SAMPLE / "images" / "0015.png")[300:422, 300:450]  # 122 x 150: not a multiple of 4


@pytest.fixture(scope="module")
def reference(ensemble_dir, image):
    """Our own prediction of ``image`` (flips, tiles of 64 px: another tiling than bioimageio.core's)."""
    return predict(load_ensemble(ensemble_dir), image, tta="flips", tile=64)


def _rdf(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return _yaml_load(zf.read("rdf.yaml").decode())


def _yaml_load(text: str) -> dict:
    return YAML(typ="safe").load(text)


def _yaml_dump(data: dict) -> str:
    buf = io.StringIO()
    YAML(typ="safe").dump(data, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- the network


def test_ensemble_net_equals_predictor_and_statistics(ensemble_dir):
    ens = load_ensemble(ensemble_dir)
    x = np.random.default_rng(0).normal(0.4, 0.3, (1, 1, 48, 64)).astype(np.float32)  # not square
    ref = EnsemblePredictor(ens, tta="dihedral", optimize=False)(x)[0]  # (M * V, h, w)
    stats = U.ensemble_statistics(ref)
    for measure in U.MEASURES:
        net = build_net(ens, views=VIEWS, measure=measure)
        with torch.no_grad():
            s = net.samples(torch.from_numpy(x))[:, 0, 0].numpy()
            p, u = net(torch.from_numpy(x))
        np.testing.assert_allclose(s, ref, atol=1e-6)
        np.testing.assert_allclose(p[0, 0].numpy(), stats["mean"], atol=1e-6)
        np.testing.assert_allclose(u[0, 0].numpy(), stats[measure], atol=1e-5, err_msg=measure)


def test_architecture_source_is_self_contained(ensemble_dir):
    ns: dict = {}
    exec(compile(architecture_source(), "ensemble_net.py", "exec"), ns)  # noqa: S102 - our own source
    ens = load_ensemble(ensemble_dir)
    ours = build_net(ens, views=("identity", "rot90"), measure="std")
    theirs = ns["EnsembleNet"](dict(ens.metadata["architecture"]["config"]), 2, ["identity", "rot90"], "std").eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x)):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="measure must be one of"):
        EnsembleNet({"depth": 2}, 1, measure="variance")
    with pytest.raises(ValueError, match="views must be"):
        EnsembleNet({"depth": 2}, 1, views=["spin"])


# ----------------------------------------------------------------------------------------------- packaging


def test_package_passes_bioimageio_test_for_every_weight_format(package):
    path, summary = package
    assert summary["ok"] and summary["weight_formats"] == ["pytorch_state_dict", "torchscript", "onnx"]
    res = zoo.test_package(path)
    assert res["ok"], res["errors"]
    assert res["weight_formats"] == ["onnx", "pytorch_state_dict", "torchscript"]


def test_onnx_weights_load_in_deepimagej_runtimes(package):
    """deepImageJ's onnxruntime 1.13 reads IR version <= 8 and opset <= 17."""
    import onnx

    path, summary = package
    with zipfile.ZipFile(path) as zf:
        data = zf.read("weights.onnx")
    model = onnx.load_from_string(data)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert model.ir_version <= 8 and opsets[""] <= 17, (model.ir_version, opsets)
    assert summary["onnx"] == {"ir_version": model.ir_version, "opset": opsets[""]}
    assert [o.name for o in model.graph.output] == ["probability", "uncertainty"]
    onnx.checker.check_model(model)


def test_package_description(package, ensemble_dir):
    path, summary = package
    rdf = _rdf(path)
    meta = json.loads((ensemble_dir / "ensemble.json").read_text())
    arch, norm = meta["architecture"], meta["normalization"]
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert "http" not in _yaml_dump(rdf)  # URL fields make bioimageio look things up online
    inp = rdf["inputs"][0]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    step = 2 ** arch["config"]["depth"]
    for a in inp["axes"][2:]:
        assert a["size"] == {"min": 2 * arch["halo"] + step, "step": step}
    (pre,) = [p for p in inp["preprocessing"] if p["id"] == "scale_range"]
    assert pre["kwargs"] == {"axes": ["y", "x"], "min_percentile": norm["min_percentile"],
                  "max_percentile": norm["max_percentile"], "eps": norm["eps"]}
    for out in rdf["outputs"]:
        for a in out["axes"][2:]:
            assert a["halo"] >= arch["receptive_field_radius"] and a["size"]["tensor_id"] == "input"
    assert [o["id"] for o in rdf["outputs"]] == ["probability", "uncertainty"]
    assert {"pytorch_state_dict", "torchscript", "onnx"} == set(rdf["weights"])
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "EnsembleNet"
    assert rdf["cite"][0]["doi"] == "10.7554/eLife.59780" and rdf["license"] and rdf["authors"]
    fc = rdf["config"]["fiji_consensus"]
    assert fc["threshold"] == meta["threshold"] and fc["min_size"] == meta["training"]["min_size"] == 10
    assert fc["uncertainty"]["measure"] == "entropy" and "bits" in fc["uncertainty"]["definition"]
    assert fc["views"] == ["identity", "flip_y", "flip_x", "rot180"]
    assert [m["sha256"] for m in fc["members"]] == [m["sha256"] for m in meta["members"]]
    assert fc["provenance"]["image_ids"] == list(WINDOWS)
    assert fc["provenance"]["source"] == "fiji_consensus/data/segebarth2020_wue1/images"  # relative to the repo

    # metadata the zoo expects: people with affiliations, maintainers, training data, tags per category
    assert rdf["authors"] == [{"name": "Jane Doe", "affiliation": "University of Example"}]
    assert rdf["maintainers"] == [{"github_user": "bioimageiobot"}]
    td = rdf["training_data"]
    assert td["name"].startswith("Segebarth et al 2020") and td["license"] == "Apache-2.0"
    assert {"Dennis Segebarth", "Robert Blum"} <= {a["name"] for a in td["authors"]}
    assert all(a.get("affiliation") for a in td["authors"]) and td["cite"][0]["doi"] == "10.7554/eLife.59780"
    from bioimageio.spec._internal.constants import TAG_CATEGORIES

    for cat, entries in TAG_CATEGORIES["model"].items():
        assert set(entries) & set(rdf["tags"]), f"no {cat} tag in {rdf['tags']}"
    assert "semantic-segmentation" in rdf["tags"] and "instance-segmentation" not in rdf["tags"]
    # the oldest PyTorch that loads the files (deepImageJ's installer knows PyTorch up to 2.0.x)
    assert rdf["weights"]["torchscript"]["pytorch_version"] == "2.0.1"
    assert rdf["weights"]["pytorch_state_dict"]["pytorch_version"] == "2.0.1"

    # reflect padding survives a round trip (bioimageio.spec drops a default mode when it serialises)
    from bioimageio.spec import load_description

    assert load_description(path).inputs[0].pad.mode == "reflect"

    with zipfile.ZipFile(path) as zf:
        # the test input is a real crop of the sample image, raw intensities
        x = np.load(zf.open("test_input.npy"))
        y0, x0, h, w = fc["test_tensors"]["crop"]
        img = iio.imread(SAMPLE / "images" / "0001.png")
        assert x.shape == (1, 1, h, w) and x.dtype == np.float32
        np.testing.assert_array_equal(x[0, 0], img[y0 : y0 + h, x0 : x0 + w])
        with zf.open("sample_input.tif") as fh:
            np.testing.assert_array_equal(tifffile.imread(fh), x[0, 0])
        cover = zf.read("cover.png")
        assert len(cover) < 500_000
        c = iio.imread(cover)
        assert c.shape[2] == 3 and c.shape[1] == 2 * c.shape[0] >= 2 * h  # 2:1, panels and legend
        doc = zf.read("documentation.md").decode()
    heads = [ln for ln in doc.splitlines() if ln.startswith("#")]
    assert heads[0] == "# tiny wue1 ensemble" and all(h.startswith("## ") for h in heads[1:]), heads
    assert "## Validation" in heads and "lab-mue" in doc and "| member |" in doc
    # the notes sit at the end of their sections
    sections = doc.split("\n## ")
    assert "A NOTE ON VALIDATION." in next(x for x in sections if x.startswith("Validation"))
    assert "A NOTE ON LIMITS." in next(x for x in sections if x.startswith("Intended use"))
    assert "Hand-written notes" not in doc
    assert "Matthias Griebel" in doc and "Jane Doe" in doc
    vm = json.loads((ensemble_dir / "validation.json").read_text())["labs"]["lab-mue"]["means"]
    assert f"{vm['ensemble']['roi_f1']:.3f}" in doc
    assert (path.parent / "README.md").read_text() == doc  # the model card is the documentation


def test_package_validates_without_warnings(package):
    """bioimageio.spec's own checks, file checks included: no warning about authors, maintainers, tags,
    documentation or anything else, except two about the inline training-data description that cannot be
    met offline: its ``source`` (a URL, which bioimageio.spec would look up online) and a format-version
    notice bioimageio.spec 0.5.12 itself raises for every inline dataset."""
    from bioimageio.spec import load_description

    path, _ = package
    descr = load_description(path, perform_io_checks=True)
    summary = descr.validation_summary
    assert summary.status == "valid-format", summary.format()
    warned = [(".".join(map(str, d.loc)), d.msg) for det in summary.details for d in det.warnings]
    allowed = [(loc, msg) for loc, msg in warned if loc.startswith("training_data.") and (
        loc.endswith(".source") or "treated as" in msg)]
    assert len(allowed) <= 2 and [w for w in warned if w not in allowed] == [], warned


def _text_members(zip_path: Path) -> dict[str, str]:
    with zipfile.ZipFile(zip_path) as zf:
        return {n: zf.read(n).decode("utf-8") for n in zf.namelist() if n.endswith((".yaml", ".md", ".py", ".json"))}


def test_packages_and_model_cards_name_no_absolute_path(package):
    """Nothing shipped names the build machine: every text file of our package and of every committed zoo
    package, and every model card (the tiny ensemble's provenance held an absolute source path)."""
    path, _ = package
    found = {f"{path.name}:{n}": zoo.absolute_paths(t) for n, t in _text_members(path).items()}
    found["README.md"] = zoo.absolute_paths((path.parent / "README.md").read_text())
    zoo_dir = Path(__file__).resolve().parents[1] / "model_zoo"
    for f in sorted(zoo_dir.rglob("*")):
        if f.suffix == ".zip":
            found.update({f"{f.name}:{n}": zoo.absolute_paths(t) for n, t in _text_members(f).items()})
        elif f.suffix == ".md":
            found[str(f.relative_to(zoo_dir))] = zoo.absolute_paths(f.read_text())
    assert len(found) > 5
    assert {k: v for k, v in found.items() if v} == {}
    assert zoo.absolute_paths("source: /home/me/data/x; https://doi.org/10.1/x") == ["/home/me/data/x"]


def test_torchscript_returns_a_list_of_tensors(package):
    """deepImageJ's PyTorch engine (JDLL) reads a Tensor or a list of Tensors from forward, not a tuple."""
    path, _ = package
    with zipfile.ZipFile(path) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript itself
        m = torch.jit.load(io.BytesIO(zf.read("weights_torchscript.pt"))).eval()
        x = torch.from_numpy(np.load(zf.open("test_input.npy")))
        want = [np.load(zf.open(f"test_{k}.npy")) for k in ("probability", "uncertainty")]
    assert str(next(iter(m.graph.outputs())).type()) == "List[Tensor]"
    assert str(m.forward.schema).endswith("-> Tensor[]")
    from fiji_consensus.nn.data import apply_percentiles

    fc = _rdf(path)["config"]["fiji_consensus"]
    lo, hi = fc["test_tensors"]["percentiles"]
    with torch.no_grad():
        out = m(torch.from_numpy(apply_percentiles(x[0, 0].numpy(), lo, hi, eps=fc["normalization"]["eps"]))[None, None])
    assert isinstance(out, list) and len(out) == 2
    for got, exp in zip(out, want):
        np.testing.assert_allclose(got.numpy(), exp, atol=1e-4)


def test_package_refuses_to_overwrite_and_writes_atomically(package, ensemble_dir):
    path, summary = package
    before = sha256_file(path)
    with pytest.raises(FileExistsError, match="exists"):
        zoo.package_ensemble(ensemble_dir, path)
    assert sha256_file(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["README.md", "tiny-wue1.zip"]  # no leftovers
    with pytest.raises(ValueError, match=r"must be a \.zip"):
        zoo.package_ensemble(ensemble_dir, path.with_suffix(".tar"))
    with pytest.raises(ValueError, match="name must be 5 to 128"):
        zoo.package_ensemble(ensemble_dir, path.parent / "x.zip", name="a/b")
    with pytest.raises(ValueError, match="weight_formats"):
        zoo.package_ensemble(ensemble_dir, path.parent / "x.zip", weight_formats=["tensorflow_js"])
    assert not (path.parent / "x.zip").exists()


def _rezip(src_dir: Path, dst: Path) -> Path:
    with zipfile.ZipFile(dst, "w") as zf:
        for f in sorted(src_dir.iterdir()):
            zf.write(f, f.name)
    return dst


def test_packages_broken_on_purpose_fail_the_bioimageio_test(package, tmp_path):
    path, _ = package
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    sd = torch.load(folder / "weights.pt", weights_only=True)
    sd["members.0.head.bias"] = sd["members.0.head.bias"] + 2.0  # changed weights
    rdf = _yaml_load((folder / "rdf.yaml").read_text())
    rdf["weights"] = {"pytorch_state_dict": rdf["weights"]["pytorch_state_dict"]}

    # 1. changed weights file, old checksum: refused
    torch.save(sd, folder / "weights.pt")
    (folder / "rdf.yaml").write_text(_yaml_dump(rdf))
    res = zoo.test_package(_rezip(folder, tmp_path / "bad_hash.zip"))
    assert not res["ok"] and res["errors"]

    # 2. changed weights with a matching checksum: a valid package whose outputs no longer match
    rdf["weights"]["pytorch_state_dict"]["sha256"] = sha256_file(folder / "weights.pt")
    (folder / "rdf.yaml").write_text(_yaml_dump(rdf))
    res = zoo.test_package(_rezip(folder, tmp_path / "bad_weights.zip"))
    assert not res["ok"]
    assert any("Reproduce test outputs" in e for e in res["errors"]), res["errors"]


# ----------------------------------------------------------------------------------------------- running packages


@pytest.mark.parametrize("weight_format", ["onnx", "torchscript", "pytorch_state_dict"])
def test_package_predictions_match_our_predict(package, reference, image, weight_format, caplog):
    """bioimageio.core tiles the image differently (blocks of 80 px with the halo); results agree to TOL
    when the image size is a multiple of 2**depth (see the next test otherwise)."""
    path, _ = package
    ref = reference
    with caplog.at_level("WARNING", logger="fiji_consensus.zoo"):
        pkg = zoo.load_package(path, weight_format=weight_format, trust_code=True)
    assert pkg.ours and pkg.measure == "entropy" and pkg.weight_format == weight_format
    assert pkg.executes_code == (weight_format == "pytorch_state_dict")
    assert ("execute the architecture code" in caplog.text) == pkg.executes_code
    with pkg:
        res = zoo.predict_packages([pkg], image, tile=80)  # 4 x 4 blocks
    assert res.probability.shape == image.shape and res.n_members == 1 and res.views == ("identity",)
    np.testing.assert_allclose(res.probability, ref.probability, atol=TOL)
    np.testing.assert_allclose(res.uncertainty, ref.uncertainty, atol=TOL)
    np.testing.assert_allclose(res.maps["deepflash2"], ref.maps["deepflash2"], atol=TOL)
    assert np.isnan(res.maps["std"]).all()  # one package: the spread of its members is not an output
    np.testing.assert_array_equal(res.labels > 0, ref.labels > 0)
    assert res.threshold == ref.threshold and len(res.objects) == len(ref.objects)


def test_package_predictions_on_odd_sizes(package, ensemble_dir, odd_image):
    """For sizes that are not multiples of 2**depth, bioimageio.core shifts its last block row/column off
    the U-Net's pooling grid (ours pads to a multiple first): values there differ slightly, the rest is exact."""
    ens = load_ensemble(ensemble_dir)
    ref = predict(ens, odd_image, tta="flips", tile=64)
    with zoo.load_package(package[0]) as pkg:
        res = zoo.predict_packages([pkg], odd_image, tile=80)
    diff = np.abs(res.probability - ref.probability)
    inner = 80 - 2 * ens.halo  # the block core; the last block starts at size - inner
    np.testing.assert_allclose(diff[: 122 - inner, : 150 - inner], 0, atol=TOL)
    assert diff[122 - inner :].max() > TOL  # the shifted blocks do differ
    assert diff.max() < 0.01 and np.percentile(diff, 99) < 2e-3, (diff.max(), np.percentile(diff, 99))


def test_block_progress_bar_is_off_unless_asked_and_restored(package, image, capfd):
    """bioimageio.core draws a bar over the blocks with no switch of its own; Package.predict hides it unless
    progress=True, and puts bioimageio.core's own tqdm back afterwards (also after nested and failing uses)."""
    import tqdm
    from bioimageio.core import _prediction_pipeline as pp

    with zoo.load_package(package[0]) as pkg:
        capfd.readouterr()
        quiet = pkg.predict(image, tile=80)
        assert "block" not in capfd.readouterr().err
        loud = pkg.predict(image, tile=80, progress=True)
        assert "block" in capfd.readouterr().err  # tqdm's unit: "16/16 [..., block/s]"
    np.testing.assert_array_equal(quiet[0], loud[0])
    assert pp.tqdm is tqdm.tqdm
    from fiji_consensus.zoo.runtime import _no_block_progress

    with pytest.raises(RuntimeError), _no_block_progress(False):
        with _no_block_progress(False):
            assert pp.tqdm is not tqdm.tqdm
        assert pp.tqdm is not tqdm.tqdm  # the outer use still holds it off
        raise RuntimeError("fails inside")
    assert pp.tqdm is tqdm.tqdm


def test_package_normalises_the_unpadded_image(package, ensemble_dir, image):
    """Percentiles over the image itself, before any padding, as deepImageJ (JDLL) and our predict do: an image
    smaller than the package's smallest tile is normalised first, then mirror-padded. Normalising the padded
    image instead (bioimageio.core's whole-image mode; our Package before) moves further from our predict."""
    ens = load_ensemble(ensemble_dir)
    small = image[:32, :36].astype(np.float32)
    small[31, 28:] = 0  # 8 dark pixels (< 1 %) in the corner that mirror padding repeats (> 1 % after it)
    ref = predict(ens, small, tta="flips", tile=64)
    with zoo.load_package(package[0]) as pkg:
        smin = pkg._param_axes["y"][0]
        assert max(small.shape) < smin
        new, _ = pkg.predict(small)
        padded = np.pad(small, [(0, smin - 32), (0, smin - 36)], mode="symmetric")
        old = pkg.predict(padded)[0][:32, :36]  # normalised over the padded image
    assert np.percentile(padded, 1) < np.percentile(small, 1) - 5  # padding shifts the 1st percentile
    d_new = np.abs(new - ref.probability).max()
    d_old = np.abs(old - ref.probability).max()
    assert d_old > 2.5 * d_new and d_old > 5e-3, (d_new, d_old)  # measured 0.0035 vs 0.0141


def test_bioimageio_core_blockwise_mode_normalises_like_deepimagej(package, image):
    """The card's advice: bioimageio.core's blockwise mode gives our Package's result (whole unpadded image
    normalised first); its whole-image mode pads by the halo first and differs."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core import predict as bc_predict
    from bioimageio.spec import load_description

    descr = load_description(package[0])
    x = image[:, :, None].transpose(2, 0, 1)[None].astype(np.float32)  # (batch, channel, y, x)
    with zoo.load_package(package[0], weight_format="onnx") as pkg:
        ours, _ = pkg.predict(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"model": create_prediction_pipeline(descr, weight_format="onnx", devices=["cpu"]), "inputs": x}
        block = bc_predict(**kw, blocksize_parameter=4).members["probability"].data.values[0, 0]
        whole = bc_predict(**kw).members["probability"].data.values[0, 0]
    np.testing.assert_allclose(block, ours, atol=TOL)
    assert np.abs(whole - ours).max() > 10 * TOL


def test_several_packages_form_an_ensemble(package, package_std, ensemble_dir, image):
    ens = load_ensemble(ensemble_dir)
    with zoo.load_package(package[0]) as a, zoo.load_package(package_std) as b:
        pa, _ = a.predict(image)
        pb, ub = b.predict(image)
        # the std package alone: its own uncertainty output is the member SD (no views)
        solo = zoo.predict_packages([b], image, measure="std")
        ref = predict(ens, image, tta="none", measure="std")
        np.testing.assert_allclose(solo.uncertainty, ref.uncertainty, atol=TOL)
        np.testing.assert_allclose(ub, ref.uncertainty, atol=TOL)
        with pytest.raises(ValueError, match="needs several samples"):
            zoo.predict_packages([a], image, measure="mutual_information")
        both = zoo.predict_packages([a, b], image, measure="mutual_information", keep_stack=True)
    stats = U.ensemble_statistics(np.stack([pa, pb]))
    np.testing.assert_allclose(both.stack, np.stack([pa, pb]))
    np.testing.assert_allclose(both.probability, (pa + pb) / 2, atol=1e-6)
    np.testing.assert_allclose(both.uncertainty, stats["mutual_information"], atol=1e-6)
    assert both.n_members == 2 and set(both.maps) == set(U.MEASURES)


def test_predict_cli_with_packages(package, package_std, image, tmp_path, capsys):
    imgs = tmp_path / "images"
    imgs.mkdir()
    iio.imwrite(imgs / "a.png", image)
    out = tmp_path / "pred"
    code = main(["predict", str(imgs), "--model", str(package[0]), "--model", str(package_std), "--out", str(out),
                 "--uncertainty", "std", "--threads", "1", "--json"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and res["ok"] and res["n_predicted"] == 1, res
    assert res["model"] == [str(package[0].resolve()), str(package_std.resolve())]
    rec = json.loads((out / "per_image" / "a.json").read_text())
    assert rec["views"] == ["identity"] and rec["n_members"] == 2 and rec["measure"] == "std"
    assert [p["weights"] for p in rec["packages"]] == ["onnx", "onnx"]
    for kind in ("probability", "uncertainty", "labels", "overlays"):
        assert (out / kind / "a.tif").is_file()
    unc = tifffile.imread(out / "uncertainty" / "a.tif")
    assert unc.shape == image.shape and 0 <= unc.min() and unc.max() <= 0.5

    # one package that cannot give the std: a clear error, exit code 1
    code = main(["predict", str(imgs), "--model", str(package[0]), "--out", str(tmp_path / "p2"),
                 "--uncertainty", "std", "--json"])
    err = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and "needs several samples" in err["error"]
    # a package and an ensemble folder cannot be mixed
    code = main(["predict", str(imgs), "--model", str(package[0]), "--model", str(tmp_path), "--out",
                 str(tmp_path / "p3"), "--json"])
    err = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and "mixes bioimage.io packages and ensemble folders" in err["error"]


def test_predict_config_accepts_one_or_several_models():
    one = PredictConfig(model=["m.zip"], inputs=["i"], out="o")
    assert one.model == Path("m.zip") and one.models == [Path("m.zip")]
    two = PredictConfig(model=["a.zip", "b.zip"], inputs=["i"], out="o")
    assert two.models == [Path("a.zip"), Path("b.zip")]
    assert PredictConfig.model_validate_json(two.model_dump_json()) == two
    with pytest.raises(ValueError, match="at least one model"):
        PredictConfig(model=[], inputs=["i"], out="o")
    cfg = PackageConfig(model="m", out="m.zip")
    assert cfg.weight_formats == ["pytorch_state_dict", "torchscript", "onnx"] and cfg.tta == "flips"
    with pytest.raises(ValueError):
        PackageConfig(model="m", out="m.zip", weight_formats=["tensorflow_js"])


# ----------------------------------------------------------------------------------------------- foreign packages


def _foreign(tmp: Path, name: str, *, net: torch.nn.Module, axes: str = "bcyx", cin: int = 1, cout: int = 1,
             formats: tuple[str, ...] = ("torchscript",), size: int = 64) -> Path:
    """A package made by someone else: a small torchscript/state-dict network, built with bioimageio.spec."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bm

    d = tmp / name
    d.mkdir()
    shape = {"b": 1, "c": cin, "z": 4, "y": size, "x": size}
    x = iio.imread(SAMPLE / "images" / "0062.png")[:size, :size].astype(np.float32) / 255
    x = np.broadcast_to(x, tuple(shape[a] for a in axes)).copy()
    with torch.no_grad():
        y = net.eval()(torch.from_numpy(x)).numpy()
    np.save(d / "in.npy", x)
    np.save(d / "out.npy", y)
    (d / "README.md").write_text("# Foreign\n\n# Validation\n\nNone.\n")

    def ax(a: str, out: bool) -> object:
        if a == "b":
            return bm.BatchAxis()
        if a == "c":
            n = cout if out else cin
            return bm.ChannelAxis(channel_names=[bm.Identifier(f"c{i}") for i in range(n)])
        if out:
            ref = bm.SizeReference(tensor_id=bm.TensorId("raw"), axis_id=bm.AxisId(a))
            if a in "yx":
                return bm.SpaceOutputAxisWithHalo(id=bm.AxisId(a), size=ref, halo=4)
            return bm.SpaceOutputAxis(id=bm.AxisId(a), size=ref)
        return bm.SpaceInputAxis(id=bm.AxisId(a), size=bm.ParameterizedSize(min=16, step=16) if a in "yx" else 4)

    weights = {}
    if "torchscript" in formats:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript itself
            torch.jit.save(torch.jit.trace(net, torch.from_numpy(x)), str(d / "ts.pt"))
        weights["torchscript"] = bm.TorchscriptWeightsDescr(source=d / "ts.pt", pytorch_version=bm.Version("2.0"))
    if "pytorch_state_dict" in formats:
        torch.save(net.state_dict(), d / "sd.pt")
        (d / "arch.py").write_text("import torch\n\ndef Net():\n    return torch.nn.Sequential(torch.nn.Conv2d("
                                   f"{cin}, {cout}, 3, padding=1), torch.nn.Sigmoid())\n")
        weights["pytorch_state_dict"] = bm.PytorchStateDictWeightsDescr(
            source=d / "sd.pt", pytorch_version=bm.Version("2.0"),
            architecture=bm.ArchitectureFromFileDescr(source=d / "arch.py", callable=bm.Identifier("Net")))
    if "keras_hdf5" in formats:  # only its checksum is checked when the package is read
        (d / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n not really")
        weights["keras_hdf5"] = bm.KerasHdf5WeightsDescr(source=d / "w.h5", tensorflow_version=bm.Version("2.10"))
    descr = bm.ModelDescr(
        name=name, description="a foreign model", authors=[bm.Author(name="someone")],
        cite=[bm.CiteEntry(text="someone", doi=bm.Doi("10.7554/eLife.59780"))], license=bm.LicenseId("MIT"),
        documentation=bm.FileDescr(source=d / "README.md"),
        inputs=[bm.InputTensorDescr(id=bm.TensorId("raw"), axes=[ax(a, False) for a in axes],
                                    test_tensor=bm.FileDescr(source=d / "in.npy"))],
        outputs=[bm.OutputTensorDescr(id=bm.TensorId("fg"), axes=[ax(a, True) for a in axes],
                                      test_tensor=bm.FileDescr(source=d / "out.npy"))],
        weights=bm.WeightsDescr(**weights),
    )
    return save_bioimageio_package(descr, output_path=tmp / f"{name}.zip")


def _conv_sigmoid(cin: int, cout: int, dims: int = 2) -> torch.nn.Module:
    torch.manual_seed(1)
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(cin, cout, 3, padding=1)
    return torch.nn.Sequential(conv, torch.nn.Sigmoid())


def test_foreign_packages_run_or_fail_clearly(tmp_path, image, caplog):
    # a two-channel probability output: channel 1 chosen; two views outside the package
    net = _conv_sigmoid(1, 2)
    path = _foreign(tmp_path, "foreign-two", net=net, cout=2)
    with zoo.load_package(path, output_channel=1) as pkg:
        assert not pkg.ours and pkg.weight_format == "torchscript" and pkg.probability_output == "fg"
        res = zoo.predict_packages([pkg], image, tta=["identity", "flip_x"], tile=64)
    x = torch.from_numpy(image.astype(np.float32)[None, None])
    with torch.no_grad():  # zero padding inside the conv; bioimageio pads the image border by symmetry
        direct = (net(x)[0, 1] + net(x.flip(-1)).flip(-1)[0, 1]).numpy() / 2
    inner = np.s_[2:-2, 2:-2]
    np.testing.assert_allclose(res.probability[inner], direct[inner], atol=1e-5)
    assert res.maps["std"].max() > 0  # two views: a spread
    with pytest.raises(ValueError, match="channel 2 does not exist"):
        zoo.load_package(path, output_channel=2)

    # only code-bearing weights: refused unless trusted; then runs, and says so
    sd_only = _foreign(tmp_path, "foreign-sd", net=_conv_sigmoid(1, 1), formats=("pytorch_state_dict",))
    with pytest.raises(PermissionError, match=r"would run its own Python code \(arch.py:Net\)"):
        zoo.load_package(sd_only)
    with caplog.at_level("WARNING", logger="fiji_consensus.zoo"):
        with zoo.load_package(sd_only, trust_code=True) as pkg:
            assert pkg.executes_code and pkg.weight_format == "pytorch_state_dict"
    assert "execute the architecture code" in caplog.text
    with pytest.raises(ValueError, match="has no onnx weights"):
        zoo.load_package(sd_only, weight_format="onnx")

    # only TensorFlow/Keras weights: they need the keras extra (tests/test_keras.py runs real ones)
    keras = _foreign(tmp_path, "foreign-keras", net=_conv_sigmoid(1, 1), formats=("keras_hdf5",))
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        with pytest.raises(ImportError, match=r"fiji-consensus\[keras\]"):
            zoo.load_package(keras)
    else:
        with pytest.raises(OSError):  # its w.h5 is not an HDF5 file
            zoo.load_package(keras)

    # unsupported inputs: three channels, a z axis
    rgb = _foreign(tmp_path, "foreign-rgb", net=_conv_sigmoid(3, 1), cin=3)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        zoo.load_package(rgb)
    vol = _foreign(tmp_path, "foreign-3d", net=_conv_sigmoid(1, 1, dims=3), axes="bczyx", size=32)
    with pytest.raises(ValueError, match=r"z \(space\).*unsupported"):
        zoo.load_package(vol)
    with pytest.raises(FileNotFoundError):
        zoo.load_package(tmp_path / "missing.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid bioimage.io description"):
        zoo.load_package(tmp_path / "junk.zip")


# ----------------------------------------------------------------------------------------------- zoo and CLI


def test_package_cli_and_zoo_list(ensemble_dir, package, tmp_path, capsys):
    root = tmp_path / "model_zoo"
    (root / "planned").mkdir(parents=True)
    (root / "planned" / "build.py").write_text("# recipe\n")
    (root / "tiny").mkdir()
    code = main(["package", "--model", str(ensemble_dir), "--out", str(root / "tiny" / "tiny.zip"), "--name",
                 "tiny cli model", "--weights", "onnx", "--tile", "96", "--card", str(root / "tiny" / "README.md"),
                 "--tag", "cfos", "--json"])
    res = json.loads(capsys.readouterr().out.strip())
    assert code == 0 and res["ok"] and res["weight_formats"] == ["pytorch_state_dict", "onnx"], res
    assert "cfos" in _rdf(root / "tiny" / "tiny.zip")["tags"]
    code = main(["package", "--model", str(ensemble_dir), "--out", str(root / "tiny" / "tiny.zip"), "--json"])
    err = json.loads(capsys.readouterr().out.strip())
    assert code == 1 and "exists" in err["error"]

    rows = {r["name"]: r for r in zoo.list_zoo(root)}
    assert rows["planned"]["built"] is False
    t = rows["tiny"]
    assert t["built"] and t["members"] == 2 and t["views"] == 4 and t["measure"] == "entropy"
    vm = json.loads((ensemble_dir / "validation.json").read_text())["labs"]["lab-mue"]["means"]
    assert t["labs"]["lab-mue"]["ensemble_roi_f1"] == pytest.approx(vm["ensemble"]["roi_f1"])
    code = main(["zoo", "list", "--root", str(root)])
    out = capsys.readouterr().out
    assert code == 0 and "tiny" in out and "not built" in out and "lab-mue" in out


def test_our_package_as_an_ensemble_for_fine_tuning(package, package_std, ensemble_dir, image, tmp_path, capsys):
    ens = load_ensemble(ensemble_dir)
    back = zoo.ensemble_from_package(package[0])
    assert back.indices == ens.indices and back.halo == ens.halo and back.threshold == ens.threshold
    assert back.normalization["max_percentile"] == ens.normalization["max_percentile"]
    for a, b in zip(ens.members, back.members):  # the very same weights, read without running package code
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    np.testing.assert_array_equal(back.predict(image), ens.predict(image))
    # fine-tuning from the package with the CLI: members start from the package's (split all, 2 images)
    imgs, labels = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir(), labels.mkdir()
    for iid, (y, x) in list(WINDOWS.items())[:2]:
        win = np.s_[y : y + 96, x : x + 96]
        tifffile.imwrite(imgs / f"{iid}.tif", iio.imread(SAMPLE / "images" / f"{iid}.png")[win])
        gt = _mask(SAMPLE / "labels" / "est_GT" / f"{iid}_cFOS.png")[win]
        tifffile.imwrite(labels / f"{iid}.tif", (gt * 255).astype(np.uint8))
    code = main(["train", "--images", str(imgs), "--labels", str(labels), "--init", str(package[0]),
                 "--split", "all", "--members", "2", "--iterations", "2", "--validate-every", "2",
                 "--patch-size", "48", "--batch-size", "2", "--learning-rate", "1e-4", "--threads", "1",
                 "--out", str(tmp_path / "tuned"), "--json"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and res["ok"], res
    meta = json.loads((tmp_path / "tuned" / "ensemble.json").read_text())
    assert meta["architecture"]["config"] == ens.metadata["architecture"]["config"]
    assert meta["provenance"]["init"]["path"] == str(package[0])
    # the std package: other views and measure, the same members
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for a, b in
               zip(ens.members, zoo.ensemble_from_package(package_std).members) for k in a.state_dict())
    # packages made by other tools are refused clearly
    with pytest.raises(ValueError, match="not a fiji-consensus package"):
        zoo.ensemble_from_package(_foreign(tmp_path, "foreign-init", net=_conv_sigmoid(1, 1)))
    code = main(["train", "--images", str(imgs), "--labels", str(labels), "--init", str(tmp_path / "none.zip"),
                 "--iterations", "2", "--out", str(tmp_path / "t2"), "--json"])
    err = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and "none.zip" in err["error"]


@pytest.mark.slow
def test_package_loads_in_the_oldest_runtimes(package):
    """deepImageJ's engines are old: the TorchScript loads in torch 2.0.1 and returns a list, the state dict
    loads with the packaged architecture there, the ONNX runs in onnxruntime 1.15.0 (the oldest that installs
    for Python 3.11), each reproducing the test outputs. The runtimes live in throw-away venvs made by
    ``python tests/benchmarks/bench_old_runtimes.py`` (PyPI; tests never download), found in
    ``$FIJI_CONSENSUS_OLD_RUNTIMES`` (default: the temp folder)."""
    import os
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
    import bench_old_runtimes as bo

    root = Path(os.environ.get("FIJI_CONSENSUS_OLD_RUNTIMES", tempfile.gettempdir()))
    pys = [root / v / "bin" / "python" for v in ("venv-torch201", "venv-ort115")]
    if not all(p.exists() for p in pys):
        pytest.skip(f"old runtimes not installed in {root}: run python tests/benchmarks/bench_old_runtimes.py once")
    res = bo.check(package[0], torch_python=pys[0], ort_python=pys[1])
    assert res["ok"], res
    assert res["torch"].startswith(bo.TORCH_OLD) and res["onnxruntime"] == bo.ORT_OLD
    assert res["torchscript_output_type"] == "list" and res["declared_pytorch_version"] == bo.TORCH_OLD


def test_a_model_without_training_range_says_unchecked_and_packaging_adds_one(ensemble_dir, shared_data, tmp_path,
                                                                                capsys):
    """A model trained before the training range was recorded: predict says its images are unchecked (not
    silently in domain); ``package --domain-lab`` gives its package the range from the training labs."""
    import csv
    import shutil

    old = tmp_path / "old-model"
    shutil.copytree(ensemble_dir, old)
    ej = json.loads((old / "ensemble.json").read_text())
    assert ej.pop("domain")
    (old / "ensemble.json").write_text(json.dumps(ej))
    src = tmp_path / "images"
    src.mkdir()
    iio.imwrite(src / "crop.png", iio.imread(shared_data / "lab-mue" / "images" / "1049.png")[256:384, 256:384])

    def predict(model, out):
        code = main(["predict", str(src), "--model", str(model), "--out", str(tmp_path / out), "--tta", "none",
                     "--no-progress", "--json"])
        cap = capsys.readouterr()
        row = next(csv.DictReader(open(tmp_path / out / "images.csv", encoding="utf-8")))
        return code, json.loads(cap.out.strip().splitlines()[-1]), row, cap.err

    code, summary, row, err = predict(old, "pred-old")
    assert code == 0 and summary["domain_unchecked"] == ["crop"] and row["out_of_domain"] == "unchecked"
    assert "stores no training range" in err and "--domain-lab" in err
    # nothing to decide "if flagged" on: predicted as it is, and still said to be unchecked
    code = main(["predict", str(src), "--model", str(old), "--out", str(tmp_path / "pred-if"), "--tta", "none",
                 "--subtract-background-if-flagged", "--no-progress", "--json"])
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert code == 0 and summary["background_subtracted"] == [] and summary["domain_unchecked"] == ["crop"]
    code, summary, row, err = predict(ensemble_dir, "pred-new")  # the model that has one: checked, no warning
    assert code == 0 and summary["domain_unchecked"] == [] and row["out_of_domain"] != "unchecked"
    assert "stores no training range" not in err

    zip_path = tmp_path / "old.zip"
    code = main(["package", "--model", str(old), "--out", str(zip_path), "--weights", "onnx", "--tile", "96",
                 "--domain-lab", str(shared_data / "lab-mue"), "--json"])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    stats = _rdf(zip_path)["config"]["fiji_consensus"]["domain"]["statistics"]
    assert stats["background_level"]["n"] == 5 and stats["foreground_fraction"]["min"] > 0
    code, summary, row, _ = predict(zip_path, "pred-pkg")
    assert code == 0 and summary["domain_unchecked"] == [] and row["out_of_domain"] != "unchecked"

    code = main(["package", "--model", str(ensemble_dir), "--out", str(tmp_path / "x.zip"), "--weights", "onnx",
                 "--domain-lab", str(shared_data / "lab-mue"), "--json"])
    err = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and "already stores the training range of every" in err["error"]
    assert not (tmp_path / "x.zip").exists()

    # a model trained before a statistic was added: the labs give that one, the stored ones are kept
    partial = tmp_path / "partial-model"
    shutil.copytree(ensemble_dir, partial)
    ej = json.loads((partial / "ensemble.json").read_text())
    kept = ej["domain"]["statistics"]
    assert kept.pop("background_texture")["n"] > 0
    (partial / "ensemble.json").write_text(json.dumps(ej))
    code, summary, row, err = predict(partial, "pred-partial")  # checked for the others, and says what is not
    assert code == 0 and row["out_of_domain"] != "unchecked"
    assert "no training range for background_texture" in err and "--domain-lab" in err
    code = main(["package", "--model", str(partial), "--out", str(tmp_path / "partial.zip"), "--weights", "onnx",
                 "--tile", "96", "--domain-lab", str(shared_data / "lab-mue"), "--json"])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    rdf = _rdf(tmp_path / "partial.zip")["config"]["fiji_consensus"]
    stats = rdf["domain"]["statistics"]
    assert stats["background_texture"]["n"] == 5 and stats["background_texture"]["max"] > 0
    assert {k: v for k, v in stats.items() if k != "background_texture"} == kept
    assert "background_texture from 5 training images" in json.dumps(rdf)
    code, summary, row, err = predict(tmp_path / "partial.zip", "pred-partial-pkg")
    assert code == 0 and "no training range for" not in err


def test_an_object_threshold_travels_from_ensemble_to_package_and_predict(ensemble_dir, image, tmp_path, capsys):
    """A calibrated model's object threshold (objects count where their peak probability exceeds it) is kept
    in its package and applied by predict (CLI and package), a threshold given alone is the plain one, and
    an object threshold below the threshold is a one-line error."""
    import shutil

    from fiji_consensus.instances import foreground
    from fiji_consensus.zoo.members import ensemble_from_package

    prob = predict(load_ensemble(ensemble_dir), image, tta="none").probability
    t = float(np.quantile(prob, 0.85))
    plain = foreground(prob, t)
    from scipy import ndimage

    lab, n = ndimage.label(plain, structure=np.ones((3, 3), bool))
    peaks = np.asarray(ndimage.maximum(prob, lab, np.arange(1, n + 1)))
    assert n >= 2 and peaks.max() > peaks.min()
    s = float(np.median(peaks))
    cal = tmp_path / "calibrated"
    shutil.copytree(ensemble_dir, cal)
    ej = json.loads((cal / "ensemble.json").read_text())
    ej.update(threshold=t, object_threshold=s)
    (cal / "ensemble.json").write_text(json.dumps(ej))
    zip_path = tmp_path / "cal.zip"
    assert main(["package", "--model", str(cal), "--out", str(zip_path), "--weights", "onnx", "--tile", "96",
                 "--tta", "none", "--json"]) == 0, capsys.readouterr()
    capsys.readouterr()
    fc = _rdf(zip_path)["config"]["fiji_consensus"]
    assert fc["threshold"] == t and fc["object_threshold"] == s
    assert zoo.load_package(zip_path).object_threshold == s
    assert ensemble_from_package(zip_path).object_threshold == s
    src = tmp_path / "in"
    src.mkdir()
    iio.imwrite(src / "crop.tif", image)

    def run(model, out, *extra):
        code = main(["predict", str(src), "--model", str(model), "--out", str(tmp_path / out), "--tta", "none",
                     "--min-size", "0", "--no-progress", "--json", *extra])
        cap = capsys.readouterr()
        if code:
            return code, cap.err, None
        rec = json.loads((tmp_path / out / "per_image" / "crop.json").read_text())
        return code, rec, tifffile.imread(next((tmp_path / out / "labels").glob("crop*")))

    expected = foreground(prob, t, s)
    assert 0 < expected.sum() < plain.sum()
    for model, out in ((cal, "ens"), (zip_path, "pkg")):
        code, rec, labels = run(model, out)
        assert code == 0 and rec["object_threshold"] == s and rec["threshold"] == t
        got = labels > 0
        assert np.mean(got == expected) > 0.999  # the package's onnx probability within 1e-5 of torch's
    code, rec, labels = run(cal, "plain", "--threshold", str(t))
    assert code == 0 and rec["object_threshold"] is None and np.array_equal(labels > 0, plain)
    code, err, _ = run(cal, "bad", "--threshold", "0.6", "--object-threshold", "0.4")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "object_threshold" in err and "0.4" in err
    # below the model's own threshold: refused when the model is loaded, before any image is predicted
    code, err, _ = run(zip_path, "bad2", "--object-threshold", f"{t / 2:.4f}")
    assert code != 0 and f"the threshold ({t})" in err.strip().splitlines()[-1]
    assert not (tmp_path / "bad2" / "per_image").exists()
