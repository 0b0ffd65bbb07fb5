"""Fiji's Subtract Background (rolling ball) in numpy, checked against ImageJ 1.53t itself, and
``predict --subtract-background``: the remedy the out-of-domain warning names for a bright, uneven background."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from fiji_consensus.background import ball_patch, rolling_ball_background, subtract_background

CFOS_3LABS = Path(__file__).resolve().parents[1] / "model_zoo" / "cfos-3labs" / "cfos-3labs.zip"


def _imagej_background(ij_jar: str, image: np.ndarray, radius: float, light: bool) -> np.ndarray:
    """ImageJ's own rolling-ball background of a 32-bit image (BackgroundSubtracter, default options)."""
    import _imagej

    _imagej.start(ij_jar)
    import jpype

    fp = jpype.JClass("ij.process.FloatProcessor")(
        int(image.shape[1]), int(image.shape[0]), jpype.JArray(jpype.JFloat)(image.ravel().tolist()))
    # radius, createBackground, lightBackground, useParaboloid, doPresmooth, correctCorners
    jpype.JClass("ij.plugin.filter.BackgroundSubtracter")().rollingBallBackground(
        fp, float(radius), True, bool(light), False, True, True)
    return np.array(fp.getPixels(), np.float32).reshape(image.shape)


@pytest.mark.parametrize("radius", [5, 20, 50, 150])  # one radius per shrink factor: 1, 2, 4, 8
def test_rolling_ball_is_imagejs_subtract_background(ij_jar, shared_data, radius):
    # a real image, cropped to an odd size so that the shrunk image's last block is partial
    img = iio.imread(shared_data / "lab-mue" / "images" / "1049.png")[:397, :451].astype(np.float32)
    for light in (False, True):
        ref = _imagej_background(ij_jar, img, radius, light)
        ours = rolling_ball_background(img, radius, light_background=light)
        assert ours.shape == img.shape and ours.dtype == np.float32
        assert np.abs(ours - ref).max() < 1e-4 * (1 + np.abs(ref).max()), (radius, light)
    # the background is not trivial: it varies and the subtraction removes it
    assert np.ptp(ref) > 1 and np.median(subtract_background(img, radius)) < np.median(img)


def test_subtract_background_keeps_objects_and_removes_a_smooth_field():
    yy, xx = np.mgrid[:120, :160]
    field = 40.0 + 0.4 * xx + 60.0 * np.exp(-((yy - 60) ** 2 + (xx - 80) ** 2) / (2 * 50.0**2))
    img = field.copy()
    img[50:58, 70:78] += 80.0
    out = subtract_background(img, 20)
    assert abs(out[54, 74] - 80.0) < 8 and np.median(np.abs(out)) < 1.5
    assert np.array_equal(subtract_background(img, np.float32(20)), out)  # numpy scalars are numbers too
    balls, shrink = ball_patch(20)
    assert shrink == 2 and balls.shape[0] % 2 == 1 and balls.max() == balls[balls.shape[0] // 2, balls.shape[0] // 2]


@pytest.mark.parametrize("radius", [0, -3, float("nan"), float("inf"), "30", True, None])
def test_a_bad_radius_is_refused_naming_it(radius):
    with pytest.raises(ValueError, match="rolling ball radius must be a positive number"):
        subtract_background(np.zeros((64, 64)), radius)


def test_bad_images_are_refused_naming_what_was_received():
    with pytest.raises(ValueError, match=r"2-D image; got shape \(2, 64, 64\)"):
        subtract_background(np.zeros((2, 64, 64)), 10)
    with pytest.raises(ValueError, match="too small for a rolling ball of radius 200"):
        subtract_background(np.zeros((10, 64)), 200)
    bad = np.zeros((64, 64))
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        subtract_background(bad, 10)


def _bright_uneven(im: np.ndarray, peak: float = 90.0) -> np.ndarray:
    h, w = im.shape
    yy, xx = np.mgrid[:h, :w]
    bump = np.exp(-((yy - 0.5 * h) ** 2 + (xx - 0.55 * w) ** 2) / (2 * (0.3 * max(h, w)) ** 2))
    return np.clip(im.astype(np.float64) + peak * (0.7 * bump + 0.3 * xx / w), 0, 255).astype(np.uint8)


def test_predict_subtract_background_on_a_bright_uneven_image(shared_data, tmp_path, capsys):
    """The zoo model on a real image with a bright, uneven background: the warning names the remedy, and
    with it the objects are closer to those found on the clean image; the setting is recorded and binds a
    resumed run; a zarr input is refused."""
    from fiji_consensus.cli import main
    from fiji_consensus.metrics import dice

    im = iio.imread(shared_data / "lab-mue" / "images" / "1049.png")[128:640, 128:640]
    src = tmp_path / "images"
    src.mkdir()
    iio.imwrite(src / "bright.png", _bright_uneven(im, peak=float(np.percentile(im, 99.9)) * 1.2))
    iio.imwrite(src / "clean.png", im)

    def predict(out, *extra):
        code = main(["predict", str(src), "--model", str(CFOS_3LABS), "--out", str(tmp_path / out), "--tta", "none",
                     "--no-progress", "--json", *extra])
        cap = capsys.readouterr()
        rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / out / "images.csv", encoding="utf-8"))} \
            if code == 0 else {}
        return code, rows, cap

    code, rows, cap = predict("plain")
    assert code == 0 and "background" in rows["bright"]["out_of_domain"], rows["bright"]["out_of_domain"]
    assert "bright looks unlike" in cap.err and "try --subtract-background 30 " in cap.err  # from its objects
    code, rows_sub, cap = predict("subtracted", "--subtract-background", "30")
    assert code == 0 and "try --subtract-background" not in cap.err
    record = json.loads((tmp_path / "subtracted" / "per_image" / "bright.json").read_text())
    assert record["subtract_background"] == 30
    assert json.loads((tmp_path / "subtracted" / "config.json").read_text())["config"]["subtract_background"] == 30

    def labels(out, image_id):
        return iio.imread(tmp_path / out / "labels" / f"{image_id}.tif") > 0

    clean = labels("plain", "clean")
    assert clean.sum() > 500  # the clean crop has nuclei
    # the bright background costs the plain model its nuclei; subtracted, the result is much closer to clean
    assert dice(clean, labels("subtracted", "bright")) > dice(clean, labels("plain", "bright")) + 0.1
    # the overlay keeps the user's image as it was, not the corrected one
    overlay = iio.imread(tmp_path / "subtracted" / "overlays" / "bright.tif")
    assert np.array_equal(overlay[0], iio.imread(src / "bright.png").astype(np.float32))

    # only where flagged: the bright image again with the suggested radius (its result = the subtracted run's),
    # the clean one as it is (= the plain run's)
    code, rows_if, cap = predict("if-flagged", "--subtract-background-if-flagged")
    assert code == 0 and "predicted again with the background subtracted (rolling ball radius 30)" in cap.err
    assert rows_if["bright"]["subtract_background"] == "30" and rows_if["clean"]["subtract_background"] == ""
    assert json.loads(cap.out.strip().splitlines()[-1])["background_subtracted"] == ["bright"]
    assert np.array_equal(labels("if-flagged", "bright"), labels("subtracted", "bright"))
    assert np.array_equal(labels("if-flagged", "clean"), labels("plain", "clean"))
    because = json.loads((tmp_path / "if-flagged" / "per_image" / "bright.json").read_text())
    assert "background_unevenness" in [f["statistic"] for f in because["background_subtracted_because"]]

    # an image too small for the ball fails alone, named, and the others are predicted
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    iio.imwrite(tiny / "dot.png", im[:3, :40])
    iio.imwrite(tiny / "ok.png", im[:64, :64])
    code = main(["predict", str(tiny), "--model", str(CFOS_3LABS), "--out", str(tmp_path / "tiny-out"), "--tta",
                 "none", "--subtract-background", "30", "--no-progress", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and summary["n_predicted"] == 1 and summary["failed"][0]["image"] == "dot"
    assert "too small for a rolling ball of radius 30" in summary["failed"][0]["error"]

    # a finished folder binds its setting: another radius is refused, the same one resumes
    code, _, cap = predict("subtracted", "--subtract-background", "15")
    assert code == 1 and "other settings" in cap.out
    code, _, cap = predict("subtracted", "--subtract-background", "30")
    assert code == 0 and json.loads(cap.out.strip().splitlines()[-1])["n_skipped"] == 2
    (tmp_path / "in.zarr").mkdir()
    code = main(["predict", str(tmp_path / "in.zarr"), "--model", str(CFOS_3LABS), "--out", str(tmp_path / "z.zarr"),
                 "--subtract-background", "30", "--json", "--no-progress"])
    err = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert code == 1 and "not available for a zarr input" in err


def test_predict_names_a_textured_background_that_the_rolling_ball_leaves(shared_data, tmp_path, capsys):
    """Tissue texture at the nuclei's scale on a bright, uneven background: predicted again after the rolling
    ball (the smooth part is flagged), and then still flagged for the texture the ball leaves, with a hint
    that does not offer the ball again; the clean crop is flagged for nothing."""
    from scipy import ndimage as ndi

    from fiji_consensus.cli import main

    im = iio.imread(shared_data / "lab-mue" / "images" / "1049.png")[128:640, 128:640]
    span = float(np.percentile(im, 99.9))
    tissue = ndi.gaussian_filter(np.random.default_rng(1).normal(size=im.shape), 6.0)
    src = tmp_path / "images"
    src.mkdir()
    iio.imwrite(src / "tissue.png", np.clip(_bright_uneven(im, peak=1.2 * span).astype(np.float64)
                                            + 0.2 * span * tissue / tissue.std(), 0, 255).astype(np.uint8))
    iio.imwrite(src / "clean.png", im)
    code = main(["predict", str(src), "--model", str(CFOS_3LABS), "--out", str(tmp_path / "out"), "--tta", "none",
                 "--subtract-background-if-flagged", "--no-progress", "--json"])
    err = capsys.readouterr().err
    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "out" / "images.csv", encoding="utf-8"))}
    assert code == 0 and rows["tissue"]["subtract_background"] == "30", rows
    assert "background_texture" in rows["tissue"]["out_of_domain"] and rows["clean"]["out_of_domain"] == ""
    warning = next(line for line in err.splitlines() if "tissue looks unlike" in line)
    assert "textured at the objects' scale" in warning and "try --subtract-background" not in warning
