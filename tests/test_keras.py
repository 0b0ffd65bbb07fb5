"""Keras / TensorFlow: our ensembles exported to Keras and SavedModel (equal to torch within 1e-5, passing
bioimageio.core's test), and Keras models imported as ensemble members next to torch packages.

Needs the ``keras`` extra (Keras 3 + tensorflow-cpu); skipped without it. The real members are those of the
zoo package model_zoo/cfos-wue1 (trained on lab-wue1); the crops are real images of data/segebarth2020.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the keras extra: pip install 'fiji-consensus[keras]'")
pytest.importorskip("keras", reason="needs the keras extra: pip install 'fiji-consensus[keras]'")
torch = pytest.importorskip("torch")
pytest.importorskip("bioimageio.core")

import imageio.v3 as iio  # noqa: E402

from fiji_consensus import zoo  # noqa: E402
from fiji_consensus.keras import export as kx  # noqa: E402
from fiji_consensus.keras import member as km  # noqa: E402
from fiji_consensus.nn.ensemble_net import ENSEMBLE_VIEWS, EnsembleNet  # noqa: E402

# Keras converts variables with np.array(x), which numpy 2.4 flags for TensorFlow's __array__ (a library issue)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
DATA = ROOT / "data" / "segebarth2020"
TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def zoo_ensemble():
    """The members of the zoo package (real weights; read with weights_only, no package code runs)."""
    return zoo.ensemble_from_package(ZOO)


def _crops(n: int = 2, size: int = 128) -> list[np.ndarray]:
    """Real crops of two labs' images (lab-mue, lab-inns1), normalised as in training."""
    out = []
    for lab in ("lab-mue", "lab-inns1")[:n]:
        path = sorted((DATA / lab / "images").glob("*.png"))[0]
        img = iio.imread(path).astype(np.float64)
        img = img[..., 0] if img.ndim == 3 else img
        crop = img[200 : 200 + size, 300 : 300 + size]
        lo, hi = np.percentile(crop, [1.0, 99.99])
        out.append(((crop - lo) / (hi - lo + 1e-6)).astype(np.float32))
    return out


def _net(ens, *, n_members: int, views, measure: str) -> EnsembleNet:
    net = EnsembleNet(dict(ens.metadata["architecture"]["config"]), n_members=n_members, views=views,
                      measure=measure)
    for dst, src in zip(net.members, ens.members[:n_members]):
        dst.load_state_dict(src.state_dict())
    return net.eval()


def _torch_out(net: EnsembleNet, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in net(torch.from_numpy(x))]


def test_import_fiji_consensus_loads_no_tensorflow_keras_or_torch():
    code = ("import sys, fiji_consensus, fiji_consensus.keras, fiji_consensus.keras.export, "
            "fiji_consensus.keras.member, fiji_consensus.zoo, fiji_consensus.predict\n"
            "print(','.join(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"imported {proc.stdout.strip()}"


def test_keras_ensemble_equals_torch_on_real_crops(zoo_ensemble):
    """Real members, all 8 dihedral views inside, predictive entropy: the built-in-layers model (keras_hdf5)
    within 1e-5 of torch."""
    net = _net(zoo_ensemble, n_members=2, views=ENSEMBLE_VIEWS, measure="entropy")
    model = kx.from_ensemble_net(net, builtin_layers_only=True)
    x = np.stack(_crops())[:, None]  # (2, 1, 128, 128)
    got = model.predict(x, verbose=0)
    ref = _torch_out(net, x)
    assert [o.shape for o in got] == [r.shape for r in ref] == [(2, 1, 128, 128)] * 2
    for g, r in zip(got, ref):
        assert np.abs(g - r).max() <= TOL
    assert 0.01 < float((ref[0] > 0.5).mean()) < 0.5 and float(ref[1].max()) > 0.5  # real, informative crops
    assert [layer.__class__.__module__.split(".")[0] for layer in model.layers] == ["keras"] * len(model.layers)


def test_weight_shared_ensemble_equals_torch_on_real_crops(zoo_ensemble):
    """The SavedModel's layout: one U-Net per member, the 8 views as flips/transposes around it; within 1e-5
    of torch on real crops, and one sub-network (one set of weights) per member."""
    net = _net(zoo_ensemble, n_members=2, views=ENSEMBLE_VIEWS, measure="entropy")
    model = kx.from_ensemble_net(net)
    x = np.stack(_crops())[:, None]
    got = model.predict(x, verbose=0)
    for g, r in zip(got, _torch_out(net, x)):
        assert g.shape == r.shape == (2, 1, 128, 128)
        assert np.abs(g - r).max() <= TOL
    assert sorted(layer.name for layer in model.layers if hasattr(layer, "layers")) == ["member0", "member1"]
    n_member = sum(int(np.prod(w.shape)) for w in model.get_layer("member0").weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    assert 2 * n_member <= total <= 2 * n_member + 64  # + the fixed 1x1 averaging of the entropy's logsumexp


def _saved_model_bytes(tmp: Path, k: int, views, cfg) -> tuple[int, int]:
    """(bytes of the variables, bytes of the zipped SavedModel) of a weight-shared ensemble."""
    torch.manual_seed(k)
    net = EnsembleNet(cfg, n_members=k, views=views).eval()
    folder = kx.save_saved_model(kx.from_ensemble_net(net), tmp / f"sm{k}_{len(views)}")
    var = sum(f.stat().st_size for f in (folder / "variables").rglob("*") if f.is_file())
    return var, kx._zip_folder(folder, tmp / f"sm{k}_{len(views)}.zip").stat().st_size


def test_saved_model_size_scales_with_members_not_views(tmp_path):
    """The SavedModel stores each member's weights once, however many test-time views run."""
    cfg = {"depth": 2, "base_channels": 16}  # 0.47 MB of weights per member
    v11, z11 = _saved_model_bytes(tmp_path, 1, ("identity",), cfg)
    v24, z24 = _saved_model_bytes(tmp_path, 2, ("identity", "flip_y", "flip_x", "rot180"), cfg)
    assert v11 > 400_000
    assert 1.9 * v11 <= v24 <= 2.1 * v11  # 2 members x 4 views: twice the weights of one U-Net, not 8 times
    assert z24 <= 2.1 * z11 + 200_000  # the graph of the views adds little


def test_saved_model_graph_holds_nothing_old_tensorflow_refuses(tmp_path):
    """deepImageJ's TensorFlow engines (1.15 to 2.10.1) refuse the ``debug_name`` attribute and the
    ``DisableCopyOnRead`` op that newer TensorFlow writes (bench_old_runtimes.py loads the result in 1.15.0,
    2.4.4 and 2.10.1): the written graph has neither, and it still runs TF 2 style and TF 1 style."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    torch.manual_seed(0)
    net = EnsembleNet({"depth": 2, "base_channels": 4}, n_members=2, views=("identity", "flip_x")).eval()
    model = kx.from_ensemble_net(net)
    folder = kx.save_saved_model(model, tmp_path / "sm")
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((folder / "saved_model.pb").read_bytes())
    nodes = [n for mg in sm.meta_graphs for n in mg.graph_def.node]
    nodes += [n for mg in sm.meta_graphs for f in mg.graph_def.library.function for n in f.node_def]
    assert sum(n.op == "VarHandleOp" for n in nodes) >= 2 * 8  # the members' variables are there
    assert [n.name for n in nodes if n.op == "DisableCopyOnRead" or "debug_name" in n.attr] == []
    assert kx._for_old_tensorflow(folder / "saved_model.pb") == {"debug_name": 0, "DisableCopyOnRead": 0}
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    want = model.predict(x, verbose=0)
    out = tf.saved_model.load(str(folder)).signatures["serving_default"](input=tf.constant(x))
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        sig = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(folder)).signature_def["serving_default"]
        got = sess.run([sig.outputs[k].name for k in ("probability", "uncertainty")], {sig.inputs["input"].name: x})
    for k, w, g in zip(("probability", "uncertainty"), want, got):
        assert np.abs(out[k].numpy() - w).max() <= TOL and np.abs(g - w).max() <= TOL


@pytest.mark.parametrize("builtin", [False, True], ids=["weight-shared", "builtin-layers"])
def test_background_tophat_matches_torch(zoo_ensemble, builtin):
    """The U-Net's in-network background step (TopHat, background_radius) in Keras: within 1e-5 of torch on a
    real crop with a bright uneven background added, in both layouts; and it does change the output."""
    cfg = dict(zoo_ensemble.metadata["architecture"]["config"], background_radius=6)
    net = EnsembleNet(cfg, n_members=1, views=("identity", "rot90"), measure="entropy")
    net.members[0].load_state_dict(zoo_ensemble.members[0].state_dict())  # the top-hat has no weights
    net.eval()
    crop = _crops(1, 96)[0]
    x = (crop + 0.8 * np.linspace(0.0, 1.0, 96, dtype=np.float32)[None, :] ** 2)[None, None]
    model = kx.from_ensemble_net(net, builtin_layers_only=builtin)
    pools = [layer.pool_size for layer in model.layers[2].layers if "MaxPooling" in type(layer).__name__]
    assert pools[:4] == [(1, 13), (13, 1), (1, 13), (13, 1)]
    ref = _torch_out(net, x)
    for g, r in zip(model.predict(x, verbose=0), ref):
        assert np.abs(g - r).max() <= TOL
    plain = _torch_out(_net(zoo_ensemble, n_members=1, views=("identity", "rot90"), measure="entropy"), x)
    assert np.abs(plain[0] - ref[0]).max() > 0.05


@pytest.mark.parametrize("measure", ["expected_entropy", "mutual_information", "std", "deepflash2"])
def test_every_uncertainty_measure_matches_torch(zoo_ensemble, measure):
    net = _net(zoo_ensemble, n_members=2, views=("identity", "rot90"), measure=measure)
    x = _crops(1, 96)[0][None, None]
    got = kx.from_ensemble_net(net).predict(x, verbose=0)
    for g, r in zip(got, _torch_out(net, x)):
        assert np.abs(g - r).max() <= TOL


@pytest.mark.parametrize("cfg", [{"norm": "group", "groups": 4, "upsample": "nearest"},
                                 {"norm": "none", "convs_per_block": 1}])
def test_other_unet_configurations_match_torch(cfg):
    torch.manual_seed(0)
    net = EnsembleNet({"depth": 2, "base_channels": 4, **cfg}, n_members=1, views=("flip_x", "antitranspose"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net.eval()
    x = _crops(1, 64)[0][None, None]
    for g, r in zip(kx.from_ensemble_net(net).predict(x, verbose=0), _torch_out(net, x)):
        assert np.abs(g - r).max() <= TOL


def test_keras_unet_refuses_mismatched_weights(zoo_ensemble):
    cfg = dict(zoo_ensemble.metadata["architecture"]["config"], depth=2)
    with pytest.raises(ValueError, match="state dict of unet (does not fit|does not use|has no)"):
        kx.keras_unet(cfg, zoo_ensemble.members[0].state_dict())


# --------------------------------------------------------------------------------------------- packages


def _ensemble_dir(ens, out: Path, n_members: int) -> Path:
    """An ensemble folder holding the first ``n_members`` members of ``ens`` (weights copied)."""
    from fiji_consensus.nn.ensemble import save_ensemble

    meta = json.loads(json.dumps(ens.metadata))
    keep = ens.indices[:n_members]
    meta["members"] = [m for m in meta["members"] if int(m["index"]) in keep]
    for k in ("format", "format_version"):
        meta.pop(k, None)
    save_ensemble(out, {k: ens.members[i].state_dict() for i, k in enumerate(keep)}, meta)
    return out


@pytest.fixture(scope="module")
def tf_package(zoo_ensemble, tmp_path_factory):
    """One real member, no views: torchscript + keras_hdf5 + SavedModel weights, tested by bioimageio.core."""
    d = tmp_path_factory.mktemp("tfpkg")
    src = _ensemble_dir(zoo_ensemble, d / "cfos1", 1)
    summary = zoo.package_ensemble(src, d / "cfos1.zip", tta="none", tile=128,
                                   weight_formats=["torchscript", "keras_hdf5", "tensorflow_saved_model_bundle"])
    return d / "cfos1.zip", summary, src


@pytest.fixture(scope="module")
def image():
    img = iio.imread(sorted((DATA / "lab-mue" / "images").glob("*.png"))[1])
    return (img[..., 0] if img.ndim == 3 else img)[300:420, 200:348]  # 120 x 148


def test_package_tensorflow_weights_pass_bioimageio_test(tf_package, tmp_path, monkeypatch):
    """bioimageio.core's test passes for the keras_hdf5 weights (and the torch ones); the SavedModel is the
    same network, checked by its signature's names (as TensorFlow 1, JDLL and our runner read it)."""
    path, summary, _ = tf_package
    assert summary["weight_formats"] == ["pytorch_state_dict", "torchscript", "keras_hdf5",
                                         "tensorflow_saved_model_bundle"]
    for wf in ("keras_hdf5", "torchscript"):
        res = zoo.test_package(path, weight_format=wf)
        assert res["ok"] and res["weight_formats"] == [wf], res
    import tensorflow as tf
    import yaml

    with zipfile.ZipFile(path) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        with zf.open(rdf["weights"]["tensorflow_saved_model_bundle"]["source"]) as fh, zipfile.ZipFile(fh) as sm:
            sm.extractall(tmp_path / "sm")
        x = np.load(zf.open("test_input.npy"))
        expected = [np.load(zf.open(f"test_{k}.npy")) for k in ("probability", "uncertainty")]
    for wf in ("keras_hdf5", "tensorflow_saved_model_bundle"):
        assert rdf["weights"][wf]["parent"] == "pytorch_state_dict"
    assert rdf["weights"]["keras_hdf5"]["tensorflow_version"] == tf.__version__  # the Keras 3 that wrote it
    # the SavedModel: the newest TensorFlow of deepImageJ's engines (bench_old_runtimes.py), not the newer writer
    assert rdf["weights"]["tensorflow_saved_model_bundle"]["tensorflow_version"] == kx.TENSORFLOW_VERSION
    norm = next(p["kwargs"] for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range")
    lo, hi = np.percentile(x.astype(np.float64), [float(norm["min_percentile"]), float(norm["max_percentile"])])
    xn = ((x - lo) / (hi - lo + float(norm["eps"]))).astype(np.float32)
    out = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](input=tf.constant(xn))
    for k, e in zip(("probability", "uncertainty"), expected):
        assert np.abs(out[k].numpy() - e).max() <= TOL
    # bioimageio.core unzips SavedModels into the working directory: ours stays clean
    monkeypatch.chdir(tmp_path / "sm")
    before = sorted(p.name for p in Path.cwd().iterdir())
    zoo.test_package(path, weight_format="tensorflow_saved_model_bundle")
    assert sorted(p.name for p in Path.cwd().iterdir()) == before


def test_package_with_tensorflow_weights_breaks_the_bioimageio_test_when_they_differ(tf_package, zoo_ensemble,
                                                                                      tmp_path):
    """The test can fail: the SavedModel replaced by one of a different member."""
    path, _, _ = tf_package
    model = kx.from_ensemble_net(_net(zoo_ensemble, n_members=2, views=("identity",), measure="entropy"))
    kx.save_saved_model(model, tmp_path / "sm")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            if item.filename.endswith("weights_tf_saved_model.zip"):
                kx._zip_folder(tmp_path / "sm", tmp_path / "w.zip")
                dst.writestr(item.filename, (tmp_path / "w.zip").read_bytes())
            else:
                dst.writestr(item, src.read(item.filename))
    res = zoo.test_package(bad, weight_format="tensorflow_saved_model_bundle")
    assert not res["ok"]


@pytest.mark.parametrize("weight_format", ["keras_hdf5", "tensorflow_saved_model_bundle"])
def test_our_package_runs_on_its_tensorflow_weights(tf_package, image, weight_format):
    """load_package runs the TensorFlow weights through bioimageio.core: same maps as the torchscript ones."""
    path, _, _ = tf_package
    with zoo.load_package(path) as ts:
        assert ts.weight_format == "torchscript"
        p_ref, u_ref = ts.predict(image)
    with zoo.load_package(path, weight_format=weight_format) as pkg:
        assert pkg.weight_format == weight_format and not pkg.executes_code and pkg.ours
        p, u = pkg.predict(image)
    assert np.abs(p - p_ref).max() <= 1e-4 and np.abs(u - u_ref).max() <= 1e-4


def test_our_package_keras_weights_round_trip_as_a_keras_member(tf_package, image, tmp_path):
    """The package's keras_hdf5 file, loaded as a plain Keras member with the package's normalisation,
    predicts what the package predicts."""
    path, _, src = tf_package
    with zipfile.ZipFile(path) as zf:
        (tmp_path / "cfos1.h5").write_bytes(zf.read("weights_keras.h5"))
    norm = json.loads((src / "ensemble.json").read_text())["normalization"]
    member = km.load_keras_member(tmp_path / "cfos1.h5",
                                  normalization=f"percentile:{norm['min_percentile']},{norm['max_percentile']}")
    assert member.channels_first and member.multiple == 8 and member.weight_format == "keras_hdf5"
    img = image[:, :144]  # a multiple of 2**depth: bioimageio.core and our tiling pad other sizes differently
    p, u = member.predict(img)
    assert u is None
    with zoo.load_package(path) as ts:
        p_ref, _ = ts.predict(img)
    assert np.abs(p - p_ref).max() <= 1e-4


# --------------------------------------------------------------------------------------------- Keras members


def _tiny_keras_unet(seed: int = 0):
    """A small Keras U-Net (channels last, sigmoid output), built here: no downloads."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = keras.Input((None, None, 1))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    b = L.MaxPooling2D(2)(a)
    b = L.Conv2D(8, 3, padding="same", activation="relu")(b)
    b = L.MaxPooling2D(2)(b)
    b = L.Conv2D(8, 3, padding="same", activation="relu")(b)
    b = L.UpSampling2D(2)(b)
    b = L.UpSampling2D(2)(b)
    c = L.Concatenate()([a, b])
    y = L.Conv2D(1, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(-0.5))(c)
    return keras.Model(x, y)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_plain_keras_model_as_a_member(image, tmp_path, suffix):
    model = _tiny_keras_unet()
    path = tmp_path / f"tiny{suffix}"
    model.save(path)
    member = km.load_keras_member(path, normalization="percentile:1,99.8", halo=16)
    assert not member.channels_first and member.multiple == 4 and not member.executes_code
    p, _ = member.predict(image, tile=64)  # tiled: 64 px windows with a 16 px halo (receptive field: 10 px)
    lo, hi = np.percentile(image.astype(np.float64), [1, 99.8])
    x = ((image - lo) / (hi - lo + 1e-6)).astype(np.float32)
    pad = ((0, 128 - 120), (0, 152 - 148))
    ref = model.predict(np.pad(x, pad, mode="reflect")[None, ..., None], verbose=0)[0, :120, :148, 0]
    assert p.shape == image.shape
    inner = np.s_[16:-16, 16:-16]  # the borders see different padding (reflect halo vs zero padding)
    assert np.abs(p - ref)[inner].max() <= 1e-5 and np.abs(p - ref).max() < 0.2


def test_keras_member_refuses_what_it_cannot_run(tmp_path):
    import keras

    model = _tiny_keras_unet()
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match="normalisation of a Keras model.*got None"):
        km.load_keras_member(tmp_path / "m.keras", normalization=None)
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        km.load_keras_member(tmp_path / "m.keras", normalization="percentile:99,1")
    x = keras.Input((None, None, 1))
    lam = keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0)(x))
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="without running code"):
        km.load_keras_member(tmp_path / "lambda.keras", normalization="none")
    x3 = keras.Input((None, None, 3))
    keras.Model(x3, keras.layers.Conv2D(1, 1)(x3)).save(tmp_path / "rgb.keras")
    with pytest.raises(ValueError, match="not single-channel"):
        km.load_keras_member(tmp_path / "rgb.keras", normalization="none")
    x1 = keras.Input((None, None, 1))
    keras.Model(x1, keras.layers.Conv2D(2, 1, activation="softmax")(x1)).save(tmp_path / "two.keras")
    with pytest.raises(ValueError, match="has 2 channels; say which"):
        km.load_keras_member(tmp_path / "two.keras", normalization="none")
    assert km.load_keras_member(tmp_path / "two.keras", normalization="none", output_channel=1).output_channel == 1


def test_mixed_torch_and_keras_ensemble_predicts_through_the_cli(tf_package, image, tmp_path, capsys):
    """A torch package (torchscript) and a plain Keras U-Net in one ensemble: the probability is their mean
    and the uncertainty spans both frameworks."""
    from fiji_consensus.cli import main

    path, _, _ = tf_package
    model = _tiny_keras_unet(seed=1)
    model.save(tmp_path / "tiny.keras")
    (tmp_path / "images").mkdir()
    iio.imwrite(tmp_path / "images" / "0001.tif", image)
    out = tmp_path / "pred"
    args = ["predict", str(tmp_path / "images"), "--model", str(path), "--model", str(tmp_path / "tiny.keras"),
            "--out", str(out), "--uncertainty", "std", "--json"]
    assert main(args) != 0  # no normalisation for the Keras model
    assert "--keras-normalization" in "".join(capsys.readouterr())
    code = main([*args, "--keras-normalization", "percentile:1,99.8"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and res["ok"] and res["n_predicted"] == 1, res
    rec = json.loads((out / "per_image" / "0001.json").read_text()) if (out / "per_image").is_dir() else None
    prob = iio.imread(out / "probability" / "0001.tif")
    unc = iio.imread(out / "uncertainty" / "0001.tif")
    with zoo.load_package(path) as ts:
        p_torch, _ = ts.predict(image)
    p_keras, _ = km.load_keras_member(tmp_path / "tiny.keras", normalization="percentile:1,99.8").predict(image)
    assert np.abs(prob - (p_torch + p_keras) / 2).max() <= 1e-5
    assert np.abs(unc - np.abs(p_torch - p_keras) / 2).max() <= 1e-5  # std of two samples
    assert float(unc.max()) > 0.05
    if rec is not None:
        assert [p["weights"] for p in rec["packages"]] == ["torchscript", "keras_v3"]
