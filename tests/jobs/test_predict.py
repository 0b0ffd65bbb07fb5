"""Ensemble prediction: TTA views, tiled = whole image, uncertainty and objects, the prediction job and its
files (also opened in the real ImageJ), on crops of the bundled sample.

Two tiny ensembles are built through the real nn/ API (UNet → save_ensemble → load_ensemble):

* ``bn``: randomly initialised U-Nets with batch normalisation (not symmetric: every TTA view differs);
* ``thr``: U-Nets whose weights make them per-pixel thresholds ``sigmoid(12 (x - t))`` of the normalised
  image with t = 0.35, 0.45, 0.55 -- a "trained" ensemble whose members disagree near the thresholds,
  with a probability that can be computed by hand.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tifffile  # noqa: E402

from fiji_consensus import rois as R  # noqa: E402
from fiji_consensus import uncertainty as U  # noqa: E402
from fiji_consensus.instances import label_instances  # noqa: E402
from fiji_consensus.nn.ensemble import load_ensemble, save_ensemble  # noqa: E402
from fiji_consensus.nn.predict import VIEWS, EnsemblePredictor, predict, predict_stack, resolve_views  # noqa: E402
from fiji_consensus.nn.unet import UNet  # noqa: E402
from fiji_consensus.jobs.predict import (  # noqa: E402
    ImageInputError,
    PredictConfig,
    read_input,
    run_predict,
    uncertainty_color,
)

SAMPLE = Path(__file__).resolve().parents[2] / "fiji_consensus" / "data" / "segebarth2020_wue1" / "images"
THRESHOLDS = (0.35, 0.45, 0.55)
SLOPE = 12.0
NORM = {"method": "scale_range", "mode": "per_sample", "min_percentile": 1.0, "max_percentile": 99.8, "eps": 1e-6}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def crop():
    return iio.imread(SAMPLE / "0001.png")[320:416, 384:500]  # 96 x 116, several nuclei


def _threshold_net(t: float) -> UNet:
    net = UNet(depth=2, base_channels=4, norm="none")
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.down[0][0].weight[0, 0, 1, 1] = 1  # level-0 path carries relu(x) in channel 0
        net.down[0][3].weight[0, 0, 1, 1] = 1
        net.up_blocks[-1][0].weight[0, 4, 1, 1] = 1  # the skip connection's channel 0
        net.up_blocks[-1][3].weight[0, 0, 1, 1] = 1
        net.head.weight[0, 0, 0, 0] = SLOPE
        net.head.bias[0] = -SLOPE * t
    return net.eval()


def _meta(net: UNet, n: int, **extra) -> dict:
    return {
        "architecture": {"name": "UNet", "config": net.config, "halo": net.halo},
        "normalization": NORM,
        "members": [{"index": k, "selected": True} for k in range(n)],
        "threshold": 0.5,
        **extra,
    }


@pytest.fixture(scope="module")
def thr_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("thr_model")
    nets = {k: _threshold_net(t).state_dict() for k, t in enumerate(THRESHOLDS)}
    save_ensemble(d, nets, _meta(_threshold_net(0.5), len(THRESHOLDS), training={"min_size": 10}))
    return d


@pytest.fixture(scope="module")
def thr(thr_dir):
    return load_ensemble(thr_dir)


@pytest.fixture(scope="module")
def bn(tmp_path_factory):
    d = tmp_path_factory.mktemp("bn_model")
    torch.manual_seed(0)
    nets = {}
    for k in range(2):
        net = UNet(depth=2, base_channels=4)
        with torch.no_grad():  # non-trivial batch-norm statistics
            net.train()
            net(torch.randn(4, 1, 32, 32) * 2 + 0.5)
        nets[k] = net.eval().state_dict()
    save_ensemble(d, nets, _meta(net, 2))
    return load_ensemble(d)


def _by_hand(ens, image):
    """The threshold ensemble's mean probability, computed with numpy."""
    x = np.maximum(ens.normalize(image).astype(np.float64), 0)
    return np.mean([1 / (1 + np.exp(-SLOPE * (x - t))) for t in THRESHOLDS], axis=0)


# ----------------------------------------------------------------------------------------------- TTA

_NP = {
    "identity": (lambda a: a, lambda a: a),
    "flip_y": (lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, :]),
    "flip_x": (lambda a: a[..., ::-1], lambda a: a[..., ::-1]),
    "rot180": (lambda a: a[..., ::-1, ::-1], lambda a: a[..., ::-1, ::-1]),
    "rot90": (lambda a: np.rot90(a, 1, (-2, -1)), lambda a: np.rot90(a, -1, (-2, -1))),
    "rot270": (lambda a: np.rot90(a, -1, (-2, -1)), lambda a: np.rot90(a, 1, (-2, -1))),
    "transpose": (lambda a: a.swapaxes(-1, -2), lambda a: a.swapaxes(-1, -2)),
    "antitranspose": (lambda a: a[..., ::-1, ::-1].swapaxes(-1, -2), lambda a: a[..., ::-1, ::-1].swapaxes(-1, -2)),
}


@pytest.mark.parametrize("stack_views", [True, False])
def test_every_view_is_undone_exactly(bn, stack_views):
    assert set(_NP) == set(VIEWS)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 1, 32, 48)).astype(np.float32)  # not square: rotations change the shape
    out = EnsemblePredictor(bn, tta="dihedral", stack_views=stack_views)(x)
    assert out.shape == (2, 2 * 8, 32, 48) and out.dtype == np.float32
    with torch.no_grad():
        for m, member in enumerate(bn.members):
            for v, name in enumerate(VIEWS):
                fwd, inv = _NP[name]
                y = member(torch.from_numpy(np.ascontiguousarray(fwd(x)))).numpy()
                np.testing.assert_allclose(out[:, m * 8 + v], inv(y)[:, 0], atol=1e-6, err_msg=name)
    assert np.abs(out[:, 0] - out[:, 4]).max() > 1e-3  # the views really differ for this network


def test_view_presets():
    assert resolve_views("none") == ("identity",)
    assert resolve_views("flips") == ("identity", "flip_y", "flip_x", "rot180")
    assert len(resolve_views("dihedral")) == 8 and resolve_views(["rot90"]) == ("rot90",)
    with pytest.raises(ValueError, match="tta must be one of"):
        resolve_views("all")
    with pytest.raises(ValueError, match="must not repeat"):
        resolve_views(["rot90", "rot90"])


# ----------------------------------------------------------------------------------------------- tiling


def test_tiled_prediction_equals_whole_image(bn, crop):
    h = bn.halo
    x = bn.normalize(crop)
    Y, X = crop.shape
    xp = np.pad(x, ((h, h + (-(Y + 2 * h)) % 4), (h, h + (-(X + 2 * h)) % 4)), mode="reflect")
    with torch.no_grad():
        ref = np.stack([m(torch.from_numpy(xp)[None, None])[0, 0, h : h + Y, h : h + X].numpy() for m in bn.members])
    for tile, overlap in [(64, 0.0), (80, 0.3), (512, 0.125)]:
        st = predict_stack(bn, crop, tta="none", tile=tile, overlap=overlap, batch_size=2)
        assert st.shape == (2, Y, X)
        np.testing.assert_allclose(st, ref, atol=2e-6, err_msg=f"tile {tile}")
    with pytest.raises(ValueError, match="tile must be larger than twice the ensemble's halo"):
        predict_stack(bn, crop, tile=48)


# ----------------------------------------------------------------------------------------------- predict


@pytest.mark.parametrize("overlap", [0.0, 0.25])
def test_streamed_prediction_equals_the_stack_bit_for_bit(bn, crop, overlap):
    """predict() reduces the tiles band by band (the stack is never held); its maps and QA scores are those
    of the whole member x view stack, exactly, also with blended overlaps and several rows of tiles."""
    kw = dict(tta="flips", tile=64, overlap=overlap, batch_size=3)  # crop 96 x 116: several tile rows
    stack = predict_stack(bn, crop, **kw)
    full = U.ensemble_statistics(stack)
    t = float(np.median(full["mean"]))  # half of the pixels are foreground
    res = predict(bn, crop, **kw, threshold=t)
    np.testing.assert_array_equal(res.probability, full["mean"])
    for m in U.MEASURES:
        np.testing.assert_array_equal(res.maps[m], full[m])
        fg = full["mean"] > t
        assert fg.any() and res.qa_scores[m] == pytest.approx(float(full[m][fg].mean(dtype=np.float64)), rel=1e-12)
    assert res.qa_score == U.qa_score(full["entropy"], full["mean"], threshold=t)
    lean = predict(bn, crop, **kw, threshold=t, measure="std", all_maps=False)
    assert list(lean.maps) == ["std"] and lean.qa_scores == res.qa_scores
    np.testing.assert_array_equal(lean.uncertainty, full["std"])
    kept = predict(bn, crop, **kw, keep_stack=True)
    np.testing.assert_array_equal(kept.stack, stack)


def test_predict_probability_uncertainty_objects(thr, crop):
    res = predict(thr, crop, tta="flips", tile=96, keep_stack=True)
    assert res.stack.shape == (3 * 4, *crop.shape)
    np.testing.assert_allclose(res.probability, _by_hand(thr, crop), atol=1e-5)
    np.testing.assert_allclose(res.uncertainty, U.binary_entropy(res.probability.astype(np.float64)), atol=1e-5)
    assert res.measure == "entropy" and res.threshold == 0.5 and res.n_members == 3
    # min_size defaults to the ensemble's training min_size (10)
    np.testing.assert_array_equal(res.labels, label_instances(res.probability, threshold=0.5, min_size=10))
    assert res.labels.max() >= 2 and len(res.objects) == res.labels.max()
    assert min(o["area"] for o in res.objects) >= 10
    assert res.qa_score == pytest.approx(U.qa_score(res.uncertainty, res.probability))
    # members disagree between their thresholds: epistemic uncertainty there, none on dark background
    mi = res.maps["mutual_information"]
    assert mi.max() > 0.1 > 5 * float(np.median(mi[res.probability < 0.05]))
    other = predict(thr, crop, tta="none", tile=96, measure="deepflash2", min_size=0, threshold=0.3)
    np.testing.assert_allclose(other.uncertainty, 4 * other.probability * (1 - other.probability), atol=1e-6)
    assert other.labels.max() >= res.labels.max()


def test_predict_channels_and_errors(thr, crop):
    two = np.stack([255 - crop, crop])
    a = predict(thr, two, channel=1, tta="none", tile=96)
    b = predict(thr, crop, tta="none", tile=96)
    np.testing.assert_array_equal(a.probability, b.probability)
    with pytest.raises(ValueError, match="pass channel="):
        predict(thr, two, tta="none")
    with pytest.raises(ValueError, match="not supported yet"):
        predict(thr, np.zeros((2, 3, 40, 40)), tta="none")
    with pytest.raises(TypeError, match="load_ensemble"):
        predict(object(), crop)
    with pytest.raises(ValueError, match="measure must be one of"):
        predict(thr, crop, measure="variance")


def test_predict_dataarray_keeps_coords_and_attrs(thr, crop):
    xr = pytest.importorskip("xarray")
    da = xr.DataArray(
        np.stack([crop, crop]),
        dims=("c", "y", "x"),
        coords={"y": np.arange(crop.shape[0]) * 0.5, "x": np.arange(crop.shape[1]) * 0.5, "c": ["a", "b"]},
        attrs={"unit": "micron"},
    )
    res = predict(thr, da, channel=0, tta="none", tile=96)
    for out in (res.probability, res.uncertainty, res.labels):
        assert isinstance(out, xr.DataArray) and out.dims == ("y", "x") and out.attrs == {"unit": "micron"}
        np.testing.assert_array_equal(out["x"].values, da["x"].values)
    np.testing.assert_allclose(res.probability.values, predict(thr, crop, tta="none", tile=96).probability)


# ----------------------------------------------------------------------------------------------- reading


def test_read_input_channels_stacks_and_calibration(tmp_path, crop):
    rgb = np.stack([crop] * 3, axis=-1)
    iio.imwrite(tmp_path / "gray_rgb.png", rgb)
    iio.imwrite(tmp_path / "gray_rgba.png", np.concatenate([rgb, np.full_like(crop, 255)[..., None]], axis=-1))
    for name in ("gray_rgb.png", "gray_rgba.png"):
        img, info = read_input(tmp_path / name)
        np.testing.assert_array_equal(img, crop)
        assert info["spacing"] is None
    colour = rgb.copy()
    colour[..., 2] = 0
    iio.imwrite(tmp_path / "colour.png", colour)
    with pytest.raises(ImageInputError, match="3 channels.*choose one with channel="):
        read_input(tmp_path / "colour.png")
    np.testing.assert_array_equal(read_input(tmp_path / "colour.png", channel=2)[0], 0)
    hyper = np.stack([crop, 255 - crop]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cyx.tif", hyper, imagej=True, metadata={"axes": "CYX", "unit": "micron"},
                     resolution=(2.0, 4.0))
    img, info = read_input(tmp_path / "cyx.tif", channel=1)
    np.testing.assert_array_equal(img, 255 - crop)
    assert info["spacing"] == (0.25, 0.5) and info["unit"] == "micron" and info["axes"] == "CYX"
    with pytest.raises(ImageInputError, match="2 channels"):
        read_input(tmp_path / "cyx.tif")
    with pytest.raises(ImageInputError, match="channel 5 does not exist"):
        read_input(tmp_path / "cyx.tif", channel=5)
    tifffile.imwrite(tmp_path / "zyx.tif", np.zeros((3, 8, 8), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(ImageInputError, match="3-D stacks .* not supported yet"):
        read_input(tmp_path / "zyx.tif")
    f = crop.astype(np.float32)
    f[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", f)
    with pytest.raises(ImageInputError, match="NaN"):
        read_input(tmp_path / "nan.tif")


# ----------------------------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def job(tmp_path_factory, thr_dir, crop):
    """One prediction run over good and bad inputs; outputs shared read-only by the tests below."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("job")
    imgs = d / "images"
    imgs.mkdir()
    tifffile.imwrite(imgs / "a16.tif", crop.astype(np.uint16) * 257, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "micron"})
    iio.imwrite(imgs / "b8.png", crop)
    other = iio.imread(SAMPLE / "0015.png")[300:380, 300:390]
    tifffile.imwrite(imgs / "cfloat.tif", other.astype(np.float32) / 255)
    (imgs / "d_broken.tif").write_bytes(b"II*\x00not really a tiff")
    tifffile.imwrite(imgs / "e_stack.tif", np.zeros((4, 16, 16), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    colour = np.stack([crop, crop // 2, crop], axis=-1)
    iio.imwrite(imgs / "f_rgb.png", colour)
    cfg = PredictConfig(model=thr_dir, inputs=[imgs], out=d / "out", tile=96, tta="flips", threads=1)
    summary = run_predict(cfg)
    return {"dir": d, "out": d / "out", "cfg": cfg, "summary": summary, "crop": crop, "other": other}


def test_job_reports_bad_images_and_fails(job):
    s = job["summary"]
    assert s["ok"] is False and s["n_images"] == 6 and s["n_predicted"] == 3 and s["n_failed"] == 3
    failed = {f["image"]: f["error"] for f in s["failed"]}
    assert set(failed) == {"d_broken", "e_stack", "f_rgb"}
    assert "cannot read" in failed["d_broken"]
    assert "3-D stacks and time series are not supported yet" in failed["e_stack"]
    assert "choose one with channel=" in failed["f_rgb"]
    assert "3 of 6 image(s) could not be predicted" in s["error"]
    assert json.loads((job["out"] / "summary.json").read_text())["n_failed"] == 3


def test_job_files(job, thr):
    out, crop = job["out"], job["crop"]
    prob = tifffile.imread(out / "probability" / "b8.tif")
    assert prob.dtype == np.float32 and prob.shape == crop.shape
    np.testing.assert_allclose(prob, _by_hand(thr, crop), atol=1e-5)
    # 16-bit (x257) and 8-bit versions of one image: the same result after per-image normalisation
    np.testing.assert_allclose(tifffile.imread(out / "probability" / "a16.tif"), prob, atol=1e-4)
    unc = tifffile.imread(out / "uncertainty" / "b8.tif")
    assert unc.dtype == np.float32 and 0 <= unc.min() and unc.max() <= 1
    np.testing.assert_allclose(unc, U.binary_entropy(prob.astype(np.float64)), atol=1e-5)  # absolute, not rescaled
    labels = tifffile.imread(out / "labels" / "b8.tif")
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, label_instances(prob, threshold=0.5, min_size=10))
    n = int(labels.max())
    assert n >= 2
    # RoiSet: one ROI per object, named with id and mean uncertainty, coloured by it, exact outlines
    rows = list(csv.DictReader(open(out / "objects" / "b8.csv", encoding="utf-8")))
    assert len(rows) == n
    rois = R.read_rois(out / "rois" / "b8.zip")
    assert [r.name for r in rois] == [row["roi_name"] for row in rows]
    for roi, row in zip(rois, rows):
        assert re.fullmatch(r"\d{4}_u\d\.\d{3}", roi.name)
        assert roi.name == f"{int(row['id']):04d}_u{float(row['mean_uncertainty']):.3f}"
        assert roi.stroke_color.hex()[2:] == uncertainty_color(float(row["mean_uncertainty"]))[1:]
    np.testing.assert_array_equal(R.rois_to_labels(rois, labels.shape), labels)
    # hyperstack: image, probability, uncertainty; calibration of the input; ROIs as overlay
    with tifffile.TiffFile(out / "overlays" / "a16.tif") as tif:
        meta = tif.imagej_metadata
        data = tif.asarray()
        xres = tif.pages[0].tags["XResolution"].value
    assert data.shape == (3, *crop.shape) and meta["channels"] == 3 and meta["unit"] == "micron"
    assert xres[0] / xres[1] == pytest.approx(2.0)
    np.testing.assert_array_equal(data[0], crop.astype(np.float32) * 257)
    np.testing.assert_allclose(data[1], tifffile.imread(out / "probability" / "a16.tif"))
    assert len(meta["Overlays"]) == int(tifffile.imread(out / "labels" / "a16.tif").max())
    with tifffile.TiffFile(out / "probability" / "a16.tif") as tif:
        assert tif.imagej_metadata["unit"] == "micron"
    # tables
    allobj = list(csv.DictReader(open(out / "objects.csv", encoding="utf-8")))
    assert {r["image"] for r in allobj} == {"a16", "b8", "cfloat"}
    assert len([r for r in allobj if r["image"] == "b8"]) == n
    images = list(csv.DictReader(open(out / "images.csv", encoding="utf-8")))
    assert [r["rank"] for r in images] == ["1", "2", "3"]
    qa = [float(r["qa_score"]) for r in images]
    assert qa == sorted(qa, reverse=True)
    rec = json.loads((out / "per_image" / "b8.json").read_text())
    assert rec["n_objects"] == n and rec["views"] == ["identity", "flip_y", "flip_x", "rot180"]
    assert json.loads((out / "config.json").read_text())["config"]["tta"] == "flips"


def test_job_resumes_and_never_overwrites_silently(job):
    out, cfg = job["out"], job["cfg"]
    before = {p: p.stat().st_mtime_ns for p in out.glob("probability/*.tif")}
    again = run_predict(cfg)
    assert again["n_skipped"] == 3 and again["n_predicted"] == 0 and again["n_failed"] == 3
    assert {p: p.stat().st_mtime_ns for p in out.glob("probability/*.tif")} == before
    with pytest.raises(ValueError, match="other settings"):
        run_predict(cfg.model_copy(update={"tta": "none"}))
    # an interrupted image (no per_image record) is predicted again; overwrite=True redoes everything
    copy = job["dir"] / "copy"
    shutil.copytree(out, copy)
    (copy / "per_image" / "b8.json").unlink()
    s = run_predict(cfg.model_copy(update={"out": copy, "inputs": [job["dir"] / "images" / "b8.png"]}))
    assert s["ok"] and s["n_predicted"] == 1 and s["n_skipped"] == 0
    s = run_predict(cfg.model_copy(update={"out": copy, "tta": "none", "overwrite": True,
                                            "inputs": [job["dir"] / "images" / "b8.png"]}))
    assert s["ok"] and s["n_predicted"] == 1
    stranger = job["dir"] / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # a folder predict did not make is never written into
        with pytest.raises(FileExistsError, match=r"did not write \(notes.txt\)"):
            run_predict(cfg.model_copy(update={"out": stranger, "overwrite": overwrite}))
    assert sorted(p.name for p in stranger.iterdir()) == ["notes.txt"]


def test_config_is_strict():
    with pytest.raises(ValueError, match="extra"):
        PredictConfig(model="m", inputs=["i"], out="o", colour="red")
    with pytest.raises(ValueError, match="tta"):
        PredictConfig(model="m", inputs=["i"], out="o", tta="all")
    with pytest.raises(ValueError, match="at least 1"):
        PredictConfig(model="m", inputs=[], out="o")
    cfg = PredictConfig(model="m", inputs=["i"], out="o", channel=1, split="distance")
    assert PredictConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert all(f.description for f in PredictConfig.model_fields.values())


def test_duplicate_ids_are_refused(tmp_path, thr_dir, crop):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    iio.imwrite(tmp_path / "x" / "s.png", crop)
    iio.imwrite(tmp_path / "y" / "s.png", crop)
    with pytest.raises(ValueError, match="two input images have the id 's'"):
        run_predict(PredictConfig(model=thr_dir, inputs=[tmp_path / "x", tmp_path / "y"], out=tmp_path / "o"))


# ----------------------------------------------------------------------------------------------- ImageJ


@pytest.mark.imagej
def test_outputs_open_in_imagej(job, ij_jar):
    import _imagej

    ij = _imagej.start(ij_jar)
    out, crop = job["out"], job["crop"]
    Y, X = crop.shape
    rows = list(csv.DictReader(open(out / "objects" / "a16.csv", encoding="utf-8")))
    imp = ij.IJ.openImage(str(out / "overlays" / "a16.tif"))
    assert imp is not None
    assert (imp.getWidth(), imp.getHeight(), imp.getNChannels(), imp.getNSlices(), imp.getNFrames()) == (X, Y, 3, 1, 1)
    assert imp.getBitDepth() == 32 and imp.isComposite()
    cal = imp.getCalibration()
    assert cal.pixelWidth == pytest.approx(0.5) and cal.pixelHeight == pytest.approx(0.5)
    assert str(cal.getUnit()) in ("micron", "µm")
    labels = [str(imp.getStack().getSliceLabel(c)) for c in (1, 2, 3)]
    assert labels == ["image", "probability", "uncertainty (entropy)"]
    ov = imp.getOverlay()
    assert ov is not None and ov.size() == len(rows) >= 2
    for k in (0, len(rows) - 1):
        roi, row = ov.get(k), rows[k]
        b = roi.getBounds()
        assert (b.x, b.y, b.width, b.height) == (
            int(row["bbox_x0"]), int(row["bbox_y0"]),
            int(row["bbox_x1"]) - int(row["bbox_x0"]), int(row["bbox_y1"]) - int(row["bbox_y0"]),
        )
        assert str(roi.getName()) == row["roi_name"]
        c = roi.getStrokeColor()
        colour = "#%02x%02x%02x" % (c.getRed(), c.getGreen(), c.getBlue())
        assert colour == uncertainty_color(float(row["mean_uncertainty"]))
    # the single-channel TIFFs
    prob = ij.IJ.openImage(str(out / "probability" / "a16.tif"))
    assert (prob.getWidth(), prob.getHeight(), prob.getBitDepth()) == (X, Y, 32)
    assert prob.getCalibration().pixelWidth == pytest.approx(0.5)
    lab = ij.IJ.openImage(str(out / "labels" / "a16.tif"))
    assert lab.getBitDepth() == 16
    labels = tifffile.imread(out / "labels" / "a16.tif")
    yx = np.argwhere(labels == 1)[0]
    assert lab.getProcessor().getPixel(int(yx[1]), int(yx[0])) == 1
    # the RoiSet: every entry decodes in ImageJ with the object's bounds
    with zipfile.ZipFile(out / "rois" / "a16.zip") as zf:
        names = zf.namelist()
        assert names == [r["roi_name"] + ".roi" for r in rows]
        jroi = ij.decode(zf.read(names[0]))
    b = jroi.getBounds()
    bbox = tuple(int(rows[0][k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
    assert (b.x, b.y, b.x + b.width, b.y + b.height) == bbox
