"""Pure-Python tests of fiji_consensus.rois (no JVM; tests/test_rois_imagej.py checks against ImageJ)."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import roifile
import tifffile
from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi

from fiji_consensus import rois as R
from fiji_consensus.rois import RoiError
from fiji_consensus.rois import _base as RB, filling as RF

DATA = Path(R.__file__).parents[1] / "data" / "segebarth2020_wue1"


def _sample_masks():
    files = sorted((DATA / "labels").glob("*/*_cFOS.png"))
    assert len(files) >= 25, files
    for f in files:
        m = iio.imread(f)
        yield f, (m[..., 0] if m.ndim == 3 else m) > 0


def _rect(left, top, right, bottom, **kw) -> ImagejRoi:
    r = ImagejRoi(roitype=kw.pop("roitype", ROI_TYPE.RECT), left=left, top=top, right=right, bottom=bottom)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def _poly(points, roitype=ROI_TYPE.POLYGON, name="p") -> ImagejRoi:
    r = ImagejRoi.frompoints(np.asarray(points), name=name)
    r.roitype = roitype
    return r


# ---------------------------------------------------------------------------------------------------
# the scan-line filler against a literal (loop) transcription of ImageJ 1.53t's PolygonFiller


def _reference_fill(xf, yf, width, height):
    """Line-by-line transcription of ij.process.PolygonFiller (1.53t, float mode), slow but obvious."""
    n = len(xf)
    ex, ey1, ey2, esl = [], [], [], []
    poly_start = 0
    for i in range(n):
        ip1 = poly_start if i == n - 1 else i + 1
        if math.isnan(xf[ip1]):
            ip1 = poly_start
        if math.isnan(xf[i]):
            poly_start = i + 1
            continue
        y1f, y2f, x1f, x2f = yf[i], yf[ip1], xf[i], xf[ip1]
        y1, y2 = math.floor(y1f + 0.5), math.floor(y2f + 0.5)  # Math.round (no exact ties here)
        if y1 == y2 or (y1 <= 0 and y2 <= 0):
            continue
        if y1 > y2:
            y1, y2, y1f, y2f, x1f, x2f = y2, y1, y2f, y1f, x2f, x1f
        slope = (x2f - x1f) / (y2f - y1f)
        ex.append(x1f + (y1 - y1f + 0.5) * slope + 1e-8)
        ey1.append(y1)
        ey2.append(y2)
        esl.append(slope)
    mask = np.zeros((height, width), bool)
    if not ex:
        return mask
    y_min, y_max = min(ey1), max(ey2)
    y0 = max(y_min, 0)
    active = []
    if y_min != 0:
        for e in range(len(ex)):
            if ey1[e] < y0 <= ey2[e]:
                ex[e] = ex[e] + esl[e] * (y0 - ey1[e])
                active.append(e)
    for y in range(y0, min(height, y_max + 1)):
        active = [e for e in active if ey1[e] <= y < ey2[e]]
        active += [e for e in range(len(ex)) if ey1[e] == y]
        active.sort(key=lambda e: ex[e])
        for k in range(0, len(active) - 1, 2):
            x1 = min(max(int(ex[active[k]] + 0.5), 0), width)
            x2 = min(max(int(ex[active[k + 1]] + 0.5), 0), width)
            mask[y, x1:x2] = True
        for e in active:
            ex[e] = ex[e] + esl[e]
    return mask


def test_filler_matches_a_literal_transcription_of_imagej():
    rng = np.random.default_rng(0)
    for trial in range(150):
        n = int(rng.integers(3, 25))
        pts = rng.uniform(-15, 60, size=(n, 2))
        if trial % 3 == 0:
            pts = np.round(pts * 4) / 4 + 0.001  # avoid exact .5 ties in the reference's Math.round
        if trial % 5 == 0:  # two sub-polygons separated by NaN
            k = n // 2
            pts = np.concatenate([pts[:k], [[np.nan, np.nan]], pts[k:]])
        w, h = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        ours = RF._fill_polygon(pts[:, 0].copy(), pts[:, 1].copy(), w, h)
        ref = _reference_fill(pts[:, 0].tolist(), pts[:, 1].tolist(), w, h)
        assert np.array_equal(ours, ref), trial


def test_java_round_is_exact():
    v = np.array([0.5, -0.5, 1.5, 2.4999999999999996, 0.49999999999999994, -1.5, 3.0])
    assert RB._java_round(v).tolist() == [1, 0, 2, 2, 0, -1, 3]


def test_x_positions_accumulate_by_repeated_addition():
    """ImageJ adds the slope once per row; x0 + k * slope rounds differently (checked bit for bit)."""
    rng = np.random.default_rng(0)
    n = 120
    length = rng.integers(1, 1000, n)
    first = rng.integers(-5, 50, n)
    x0 = rng.uniform(-100, 1000, n)
    slope = rng.uniform(-3, 3, n) / 3.0
    slope[::7] = 0.0
    rows, vals = RF._edge_positions(first, length, x0, slope)
    exp_rows, exp_vals = [], []
    for f, ln, x, sl in zip(first.tolist(), length.tolist(), x0.tolist(), slope.tolist()):
        for k in range(ln):
            exp_rows.append(f + k)
            exp_vals.append(x)
            x = x + sl
    got = sorted(zip(rows.tolist(), vals.tolist()))  # edges come back grouped by length
    assert got == sorted(zip(exp_rows, exp_vals))  # exact float equality
    multiplied = np.concatenate([x + np.arange(ln) * sl for x, ln, sl in zip(x0, length, slope)])
    assert sorted(multiplied.tolist()) != sorted(exp_vals)  # so the distinction is real


# ---------------------------------------------------------------------------------------------------
# rasterisation, small cases checked by hand


def test_integer_polygon_covers_pixel_centres_inside():
    roi = _poly([[1, 1], [5, 1], [5, 4], [1, 4]])
    m = R.roi_to_mask(roi, (6, 7))
    expect = np.zeros((6, 7), bool)
    expect[1:4, 1:5] = True
    assert np.array_equal(m, expect)


def test_rectangle_integer_and_subpixel():
    m = R.roi_to_mask(_rect(2, 1, 5, 3), (5, 6))
    assert m.sum() == 6 and m[1:3, 2:5].all()
    sub = _rect(0, 0, 0, 0, options=ROI_OPTIONS.SUB_PIXEL_RESOLUTION, version=228)
    sub.xd, sub.yd, sub.widthd, sub.heightd = 1.7, 0.2, 2.1, 1.5  # ImageJ: x=(int)1.7, w=ceil(2.1)
    m = R.roi_to_mask(sub, (5, 6))
    assert np.array_equal(np.argwhere(m)[[0, -1]], [[0, 1], [1, 3]])


def test_oval_is_imagejs_analytic_mask():
    m = R.roi_to_mask(_rect(0, 0, 5, 5, roitype=ROI_TYPE.OVAL), (5, 5))
    assert m.sum() == 21  # 5x5 disc without the 4 corners
    assert not m[0, 0] and m[0, 1] and m[2, 2]


def test_clipping_and_negative_coordinates():
    roi = _poly([[-5, -5], [3, -5], [3, 2], [-5, 2]])
    m = R.roi_to_mask(roi, (4, 4))
    assert m.sum() == 6 and m[:2, :3].all()
    assert not R.roi_to_mask(_poly([[10, 10], [12, 10], [12, 12]]), (4, 4)).any()
    r = _rect(-3, -3, 2, 1)
    assert R.roi_to_mask(r, (3, 3)).sum() == 2


def test_composite_with_hole_is_even_odd():
    L = np.zeros((7, 7), np.int32)
    L[1:6, 1:6] = 3
    L[3, 3] = 0
    (roi,) = R.labels_to_rois(L)
    assert R.roi_type_name(roi) == "composite"
    assert np.array_equal(R.roi_to_mask(roi, L.shape), L == 3)


def test_rois_to_labels_later_rois_overwrite():
    a = _poly([[0, 0], [4, 0], [4, 4], [0, 4]])
    b = _poly([[2, 2], [6, 2], [6, 6], [2, 6]])
    lab = R.rois_to_labels([a, b], (6, 6))
    assert lab.dtype == np.int32
    assert lab[3, 3] == 2 and lab[1, 1] == 1 and lab[0, 5] == 0
    assert np.array_equal(R.rois_to_mask([a, b], (6, 6)), lab > 0)


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4), (-1, 3)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        R.roi_to_mask(_poly([[0, 0], [2, 0], [2, 2]]), shape)


# ---------------------------------------------------------------------------------------------------
# labels -> ROIs -> labels


def _random_labels(rng, h, w, n):
    L = rng.integers(0, n + 1, size=(h, w)).astype(np.int32)
    return L * (rng.random((h, w)) < 0.6)


def test_label_round_trip_random_images():
    rng = np.random.default_rng(0)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        L = _random_labels(rng, h, w, int(rng.integers(1, 6)))
        rois = R.labels_to_rois(L)
        back = R.rois_to_labels(rois, L.shape)
        values = np.unique(L[L > 0])
        assert len(rois) == values.size
        lut = np.concatenate([[0], values])
        assert np.array_equal(lut[back], L), trial


def test_label_round_trip_tricky_layouts():
    L = np.zeros((12, 12), np.int32)
    L[0, 0] = L[1, 1] = L[2, 2] = 1  # diagonal chain (one 8-connected object)
    L[0:2, 10:12] = 2  # touches the image corner
    L[4:11, 4:11] = 3  # ring with a hole ...
    L[6:9, 6:9] = 0
    L[7, 7] = 4  # ... holding an object
    L[4:7, 0:4] = 5  # touching 3
    L[11, 0:3] = 6  # bottom border
    L[9, 1] = L[10, 2] = 6  # diagonal to the bottom strip, and a second piece of label 6:
    L[0, 5] = 6
    rois = R.labels_to_rois(L)
    assert [r.name for r in rois] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    kinds = [R.roi_type_name(r) for r in rois]
    assert kinds == ["traced", "traced", "composite", "traced", "traced", "composite"]
    back = R.rois_to_labels(rois, L.shape)
    assert np.array_equal(np.array([0, 1, 2, 3, 4, 5, 6])[back], L)


def test_label_round_trip_bundled_sample():
    for f, m in _sample_masks():
        rois = R.mask_to_rois(m)
        assert np.array_equal(R.rois_to_mask(rois, m.shape), m), f
        lab = R.rois_to_labels(rois, m.shape)
        assert lab.max() == len(rois)


def test_labels_to_rois_options():
    L = np.zeros((6, 6), np.uint16)
    L[1:3, 1:3] = 5
    L[4:6, 4:6] = 9
    rois = R.labels_to_rois(L, name_prefix="cell_", stroke_color="#00ff00", stroke_width=2, position=3)
    assert [r.name for r in rois] == ["cell_0005", "cell_0009"]
    assert all(r.stroke_color == bytes.fromhex("ff00ff00") and r.stroke_width == 2 for r in rois)
    assert all(r.position == 3 for r in rois)
    assert [r.name for r in R.labels_to_rois(L, names=["a", "b"])] == ["a", "b"]
    assert [r.name for r in R.labels_to_rois(L, names={9: "nine"})] == ["0005", "nine"]
    assert R.labels_to_rois(np.zeros((3, 3), np.int32)) == []
    assert len(R.labels_to_rois(np.ones((3, 3), bool))) == 1
    with pytest.raises(ValueError, match="one name per label"):
        R.labels_to_rois(L, names=["a"])


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 4, 3), np.uint8), "RGB"),
        (np.zeros((2, 4, 4), np.int32), "2-D"),
        (np.zeros((4, 4), np.float32), "integer"),
        (-np.ones((4, 4), np.int32), ">= 0"),
    ],
)
def test_labels_to_rois_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        R.labels_to_rois(bad)


def test_mask_to_rois_components_and_min_size():
    m = np.zeros((8, 8), np.uint8)
    m[1, 1] = m[2, 2] = 255  # diagonal pair: one 8-connected object
    m[5:8, 5:8] = 255
    rois = R.mask_to_rois(m, name_prefix="obj")
    assert [r.name for r in rois] == ["obj0001", "obj0002"]
    assert [r.name for r in R.mask_to_rois(m, min_size=3)] == ["0001"]
    with pytest.raises(ValueError, match="binary"):
        R.mask_to_rois(np.arange(16).reshape(4, 4))
    with pytest.raises(ValueError, match="RGB"):
        R.mask_to_rois(np.zeros((4, 4, 3), np.uint8))


def test_large_coordinates_use_float_coordinates():
    L = np.zeros((3, 40000), np.uint8)
    L[1, 39990:39995] = 1
    (roi,) = R.labels_to_rois(L)
    assert roi.options & ROI_OPTIONS.SUB_PIXEL_RESOLUTION
    back = R.rois_to_labels([ImagejRoi.frombytes(roi.tobytes())], L.shape)
    assert np.array_equal(back, L)


def test_many_objects_round_trip():
    """100 objects on 1024^2 (timings: tests/benchmarks/bench_objects.py)."""
    rng = np.random.default_rng(0)
    L = np.zeros((1024, 1024), np.int32)
    yy, xx = np.mgrid[:1024, :1024]
    for k in range(100):
        cy, cx = rng.integers(30, 994, 2)
        r = rng.integers(8, 30)
        L[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k + 1
    rois = R.labels_to_rois(L)
    assert len(rois) == len(np.unique(L)) - 1
    back = R.rois_to_labels([ImagejRoi.frombytes(r.tobytes()) for r in rois], L.shape)
    ids = np.unique(L)[1:]
    recon = np.zeros_like(L)
    recon[back > 0] = ids[back[back > 0] - 1]
    assert np.array_equal(recon, L)


# ---------------------------------------------------------------------------------------------------
# reading


def _line() -> ImagejRoi:
    r = ImagejRoi(roitype=ROI_TYPE.LINE, name="a line", version=228)
    r.x1, r.y1, r.x2, r.y2 = 1.0, 1.0, 5.0, 5.0
    return r


def _point() -> ImagejRoi:
    r = _poly([[1, 1], [3, 3]], roitype=ROI_TYPE.POINT, name="points")
    return r


def _wide_polyline() -> ImagejRoi:
    r = _poly([[1, 1], [3, 3], [5, 1]], roitype=ROI_TYPE.POLYLINE, name="wide")
    r.stroke_width = 5
    return r


def test_read_rois_from_roi_zip_tiff_and_bytes(tmp_path):
    rois = R.labels_to_rois(np.kron(np.arange(4).reshape(2, 2), np.ones((3, 3), np.int32)))
    one = tmp_path / "one.roi"
    rois[0].tofile(one)
    assert [r.name for r in R.read_rois(one)] == ["0001"]
    assert [r.name for r in R.read_rois(rois[1].tobytes())] == ["0002"]
    z = R.write_roiset(tmp_path / "RoiSet.zip", rois)
    assert [r.name for r in R.read_rois(z)] == ["0001", "0002", "0003"]
    t = R.write_imagej_tiff(tmp_path / "img.tif", np.zeros((6, 6), np.uint8), rois=rois)
    assert [r.name for r in R.read_rois(t)] == ["0001", "0002", "0003"]
    assert [r.name for r in R.read_overlay(t)] == ["0001", "0002", "0003"]
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 4), np.uint8))
    assert R.read_rois(plain) == [] and R.read_overlay(plain) == []


def test_read_rois_entry_name_used_when_roi_has_none(tmp_path):
    r = _poly([[0, 0], [3, 0], [3, 3]], name="")
    z = tmp_path / "x.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("cell-7.roi", r.tobytes())
    assert R.read_rois(z)[0].name == "cell-7"


def test_read_rois_errors(tmp_path):
    good = _poly([[0, 0], [3, 0], [3, 3]]).tobytes()
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(RoiError, match="corrupt.zip.*zip"):
        R.read_rois(corrupt)
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("a.roi", good)
        zf.writestr("notes.txt", b"hello")
    with pytest.raises(RoiError, match="foreign.zip.*'notes.txt'.*not an ImageJ ROI"):
        R.read_rois(foreign)
    fake = tmp_path / "fake.zip"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("a.roi", b"not a roi at all" * 8)
    with pytest.raises(RoiError, match="fake.zip.*'a.roi'.*Iout"):
        R.read_rois(fake)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(5):
            zf.writestr(f"{i}.roi", good)
    with pytest.raises(RoiError, match="big.zip.*max_bytes=100"):
        R.read_rois(big, max_bytes=100)
    with pytest.raises(RoiError, match="big.zip.*5 entries.*max_entries=3"):
        R.read_rois(big, max_entries=3)
    with pytest.raises(RoiError, match="max_bytes=10"):
        R.read_rois(good, max_bytes=10)
    with pytest.raises(RoiError, match="no such file"):
        R.read_rois(tmp_path / "missing.zip")
    with pytest.raises(RoiError, match="Iout"):
        R.read_rois(b"\x00" * 80)


@pytest.mark.parametrize(
    "roi, kind",
    [(_line(), "line"), (_point(), "point"), (_wide_polyline(), "polyline with width")],
)
def test_unsupported_roi_types(tmp_path, roi, kind):
    z = tmp_path / "set.zip"
    R.write_roiset(z, [_poly([[0, 0], [3, 0], [3, 3]], name="ok"), roi])
    expect = rf"set.zip: ROI #1 '{roi.name}' is a {kind} ROI.*supported ROI types are"
    with pytest.raises(RoiError, match=expect):
        R.read_rois(z)
    with pytest.raises(RoiError, match=f"is a {kind} ROI"):
        R.roi_to_mask(roi, (8, 8))


def test_other_unsupported_kinds():
    text = _rect(0, 0, 5, 5, subtype=ROI_SUBTYPE.TEXT, name="t")
    spline = _poly([[0, 0], [5, 0], [5, 5]], name="s")
    spline.options |= ROI_OPTIONS.SPLINE_FIT
    ellipse = _poly([[0, 0], [5, 0], [5, 5]], roitype=ROI_TYPE.FREEHAND, name="e")
    ellipse.subtype = ROI_SUBTYPE.ELLIPSE
    for roi, kind in [(text, "text"), (spline, "spline-fitted polygon"), (ellipse, "ellipse")]:
        with pytest.raises(RoiError, match=f"is a {kind} ROI"):
            R.roi_to_mask(roi, (8, 8))


# ---------------------------------------------------------------------------------------------------
# writing


def test_write_roiset_unique_names_and_no_overwrite(tmp_path):
    rois = [_poly([[0, 0], [3, 0], [3, 3]], name="cell") for _ in range(3)]
    z = R.write_roiset(tmp_path / "RoiSet.zip", rois)
    with zipfile.ZipFile(z) as zf:
        assert zf.namelist() == ["cell.roi", "cell-2.roi", "cell-3.roi"]
    assert [r.name for r in roifile.roiread(z)] == ["cell", "cell-2", "cell-3"]
    assert [r.name for r in rois] == ["cell"] * 3  # inputs untouched
    with pytest.raises(FileExistsError):
        R.write_roiset(z, rois[:1])
    R.write_roiset(z, rois[:1], overwrite=True)
    assert len(R.read_rois(z)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RoiSet.zip"]  # no temporary left behind


def test_write_imagej_tiff_hyperstack(tmp_path):
    img = np.random.default_rng(0).integers(0, 4000, size=(2, 10, 12)).astype(np.uint16)
    rois = R.labels_to_rois(np.pad(np.ones((3, 3), np.int32), 2))
    p = R.write_imagej_tiff(
        tmp_path / "x.tif", img, rois=rois, channel_names=["dapi", "cfos"], spacing=(0.5, 0.25),
        unit="um", luts=["gray", "green"],
    )
    with tifffile.TiffFile(p) as tif:
        meta = tif.imagej_metadata
        assert tif.series[0].axes == "CYX" and tif.series[0].shape == (2, 10, 12)
        assert np.array_equal(tif.asarray(), img)
        assert meta["channels"] == 2 and meta["unit"] == "um" and meta["Labels"] == ["dapi", "cfos"]
        xres = tif.pages[0].tags["XResolution"].value
        yres = tif.pages[0].tags["YResolution"].value
        assert xres[0] / xres[1] == pytest.approx(4.0) and yres[0] / yres[1] == pytest.approx(2.0)
        overlays = meta["Overlays"]
    overlays = [overlays] if isinstance(overlays, bytes) else overlays
    assert [ImagejRoi.frombytes(b).name for b in overlays] == ["0001"]
    with pytest.raises(FileExistsError):
        R.write_imagej_tiff(p, img)
    R.write_imagej_tiff(p, np.ones((4, 4), bool), overwrite=True)
    assert tifffile.imread(p).max() == 255
    with pytest.raises(ValueError, match="channel_names"):
        R.write_imagej_tiff(tmp_path / "y.tif", img, channel_names=["one"])
    with pytest.raises(ValueError, match="image must be"):
        R.write_imagej_tiff(tmp_path / "y.tif", np.zeros((1, 2, 3, 4)))


@pytest.mark.parametrize(
    "color, expect",
    [("#ff0000", "ffff0000"), ("#80112233", "80112233"), ((1, 2, 3), "ff010203"), ((1, 2, 3, 4), "04010203")],
)
def test_set_stroke(color, expect):
    roi = _poly([[0, 0], [3, 0], [3, 3]])
    out = R.set_stroke(roi, color, 1.5)
    assert out.stroke_color.hex() == expect and out.float_stroke_width == 1.5 and out.stroke_width == 2
    assert roi.stroke_color != out.stroke_color  # a copy


@pytest.mark.parametrize("color", ["red", "#12345", (1, 2), (300, 0, 0)])
def test_set_stroke_rejects_bad_colors(color):
    with pytest.raises(ValueError, match="color"):
        R.set_stroke(_poly([[0, 0], [3, 0], [3, 3]]), color)
