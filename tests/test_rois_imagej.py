"""fiji_consensus.rois against the real ImageJ 1.53t (ij.jar via JPype): rasterisation and files.

Both sides see the same bytes: every Java Roi is built by ``RoiDecoder.openFromByteArray(roi.tobytes())``
and filled with ``ByteProcessor.fill(Roi)``.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from roifile import ROI_OPTIONS, ROI_TYPE, ImagejRoi

from fiji_consensus import rois as R
from fiji_consensus.rois import filling as RF

pytestmark = pytest.mark.imagej

DATA = Path(R.__file__).parents[1] / "data" / "segebarth2020_wue1"
H, W = 48, 56


@pytest.fixture(scope="module")
def ij(ij_jar):
    import _imagej

    return _imagej.start(ij_jar)


def _assert_same(ij, rois, shape=(H, W)):
    """Every ROI: 0 differing pixels with ImageJ; returns how many masks were non-empty."""
    nonempty = 0
    for i, roi in enumerate(rois):
        ours = R.roi_to_mask(roi, shape)
        theirs = ij.fill(roi, shape)
        diff = int((ours != theirs).sum())
        assert diff == 0, f"ROI {i} ({R.roi_type_name(roi)}): {diff} pixels differ from ImageJ"
        nonempty += bool(theirs.any())
    return nonempty


def _polygons(rng, n, roitype):
    out = []
    for i in range(n):
        k = int(rng.integers(3, 14))
        if i % 3 == 0:  # integer coordinates
            pts = rng.integers(-10, W + 10, size=(k, 2))
        elif i % 3 == 1:  # float coordinates
            pts = rng.uniform(-10, W + 10, size=(k, 2)).astype(np.float32)
        else:  # half and quarter pixels: exact ties of ImageJ's rounding rules
            pts = (rng.integers(-40, 4 * W + 40, size=(k, 2)) / 4).astype(np.float32)
        roi = ImagejRoi.frompoints(pts, name=f"p{i}")
        roi.roitype = roitype
        out.append(roi)
    return out


@pytest.mark.parametrize(
    "roitype", [ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED], ids=["polygon", "freehand", "traced"]
)
def test_polygon_types_match_imagej(ij, roitype):
    rng = np.random.default_rng(0)
    rois = _polygons(rng, 120, roitype)
    assert _assert_same(ij, rois) > 80


def _boxes(rng, n, roitype, rounded=False):
    out = []
    for i in range(n):
        r = ImagejRoi(roitype=roitype, version=228, name=f"b{i}")
        if i % 2:
            r.options = ROI_OPTIONS.SUB_PIXEL_RESOLUTION
            r.xd, r.yd = (float(v) for v in rng.uniform(-12, W, 2))
            r.widthd, r.heightd = (float(v) for v in rng.uniform(0.3, 35, 2))
            r.left, r.top = int(r.xd), int(r.yd)
            r.right, r.bottom = r.left + int(r.widthd), r.top + int(r.heightd)
        else:
            r.left, r.top = (int(v) for v in rng.integers(-12, W, 2))
            r.right = r.left + int(rng.integers(0, 35))
            r.bottom = r.top + int(rng.integers(0, 35))
        if rounded:
            r.rounded_rect_arc_size = int(rng.integers(1, 30))
        out.append(r)
    return out


@pytest.mark.parametrize("kind", ["rectangle", "oval", "rounded rectangle"])
def test_rectangles_and_ovals_match_imagej(ij, kind):
    rng = np.random.default_rng(1)
    roitype = ROI_TYPE.OVAL if kind == "oval" else ROI_TYPE.RECT
    rois = _boxes(rng, 100, roitype, rounded=kind == "rounded rectangle")
    assert {R.roi_type_name(r) for r in rois} == {kind}
    assert _assert_same(ij, rois) > 60


def _java_primitive(ij, rng):
    u = rng.random()
    if u < 0.5:
        k = int(rng.integers(3, 10))
        pts = rng.uniform(-10, W + 10, size=(k, 2))
        if rng.random() < 0.5:
            pts = np.round(pts)
        xs = ij.JArray(ij.JFloat)(pts[:, 0].tolist())
        ys = ij.JArray(ij.JFloat)(pts[:, 1].tolist())
        return ij.PolygonRoi(xs, ys, k, 2)
    if u < 0.75:
        x, y = rng.uniform(-10, W - 10, 2)
        w, h = rng.uniform(1, 35, 2)
        return ij.OvalRoi(float(x), float(y), float(w), float(h))
    x, y = (int(v) for v in rng.integers(-10, W - 10, 2))
    w, h = (int(v) for v in rng.integers(1, 35, 2))
    r = ij.Roi(x, y, w, h)
    if rng.random() < 0.5:
        r.setCornerDiameter(int(rng.integers(1, 30)))  # curves in the composite path
    return r


def test_composites_made_by_imagej_match(ij):
    """ShapeRoi unions/differences/xors built and encoded by ImageJ itself (disjoint parts, holes, curves)."""
    rng = np.random.default_rng(2)
    rois = []
    while len(rois) < 120:
        s = ij.ShapeRoi(_java_primitive(ij, rng))
        for _ in range(int(rng.integers(1, 4))):
            other = ij.ShapeRoi(_java_primitive(ij, rng))
            s = [s.or_, s.xor, s.and_, s.not_][int(rng.integers(0, 4))](other)
        roi = ImagejRoi.frombytes(ij.encode(s))
        if roi.shape_roi_size > 0:
            rois.append(roi)
    kinds = [RF._path_from_array(r.multi_coordinates, "")[0] for r in rois]
    assert sum(RF._CUBICTO in k for k in kinds) > 10  # some hold curves
    assert sum(k.count(RF._MOVETO) > 1 for k in kinds) > 30  # several parts or holes
    assert _assert_same(ij, rois) > 80


def test_edge_cases_match_imagej(ij):
    f32 = np.float32
    cases = [
        ImagejRoi.frompoints([[-20, -20], [10, -20], [10, 10], [-20, 10]]),  # negative, partly outside
        ImagejRoi.frompoints(np.array([[-20.5, -3.25], [70.5, 2.5], [30.0, 60.75]], f32)),
        ImagejRoi.frompoints(np.array([[0.5, 0.5], [10.5, 0.5], [10.5, 10.5], [0.5, 10.5]], f32)),
        ImagejRoi.frompoints([[3, 3], [3, 3], [3, 3]]),  # degenerate
        ImagejRoi.frompoints([[3, 3], [9, 9]]),  # two points
        ImagejRoi.frompoints(np.array([[5.0, 5.0], [30.0, 5.0], [5.0, 30.0], [30.0, 30.0]], f32)),  # bow tie
        ImagejRoi.frompoints([[W + 5, 5], [W + 9, 5], [W + 9, 9]]),  # entirely outside
    ]
    r = ImagejRoi(roitype=ROI_TYPE.RECT, left=-5, top=-5, right=3, bottom=2, version=228)
    cases.append(r)
    # a stroke width does not change what an area ROI fills
    wide = R.set_stroke(ImagejRoi.frompoints([[2, 2], [20, 3], [9, 17]]), "#ff0000", 7)
    cases.append(wide)
    _assert_same(ij, cases)


def test_the_comparison_can_fail(ij):
    """The same polygon shifted by a quarter pixel is filled differently: equality above is not vacuous."""
    a = ImagejRoi.frompoints(np.array([[2.1, 2.2], [30.3, 4.4], [17.9, 25.6]], np.float32))
    b = ImagejRoi.frompoints(np.array([[2.35, 2.45], [30.55, 4.65], [18.15, 25.85]], np.float32))
    assert (R.roi_to_mask(b, (H, W)) != ij.fill(a, (H, W))).any()


def test_expert_masks_via_rois_are_filled_back_by_imagej(ij):
    files = sorted((DATA / "labels").glob("expert_*/0001_cFOS.png")) + sorted(
        (DATA / "labels").glob("expert_*/0062_cFOS.png")
    )
    assert len(files) == 10
    kinds = set()
    for f in files:
        m = iio.imread(f)
        m = (m[..., 0] if m.ndim == 3 else m) > 0
        rois = R.mask_to_rois(m)
        kinds |= {R.roi_type_name(r) for r in rois}
        ours = R.rois_to_labels(rois, m.shape)
        theirs = ij.fill_labels(rois, m.shape)
        assert int((ours != theirs).sum()) == 0, f
        assert np.array_equal(theirs > 0, m), f
    assert kinds == {"traced", "composite"}


def test_random_label_images_are_filled_back_by_imagej(ij):
    rng = np.random.default_rng(3)
    for trial in range(80):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        L = rng.integers(0, int(rng.integers(1, 6)) + 1, size=(h, w)).astype(np.int32)
        L *= rng.random((h, w)) < 0.6
        rois = R.labels_to_rois(L)
        values = np.concatenate([[0], np.unique(L[L > 0])])
        assert np.array_equal(values[ij.fill_labels(rois, L.shape)], L), trial


def test_roiset_opens_in_imagej(ij, tmp_path):
    L = np.zeros((40, 50), np.int32)
    L[5:15, 5:20] = 1
    L[20:35, 10:40] = 2
    L[25:30, 20:30] = 0  # hole
    rois = R.labels_to_rois(L, stroke_color="#ffff00", name_prefix="cell")
    sub = np.array([[1.5, 1.5], [8.25, 2.0], [4.0, 9.75]], np.float32)
    rois.append(ImagejRoi.frompoints(sub, name="cell0001"))  # a duplicate name
    z = R.write_roiset(tmp_path / "RoiSet.zip", rois)
    import zipfile

    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        jrois = [ij.decode(zf.read(n)) for n in names]
    assert [str(j.getName()) for j in jrois] == ["cell0001", "cell0002", "cell0001-2"]
    b = jrois[0].getBounds()
    assert (b.x, b.y, b.width, b.height) == (5, 5, 15, 10)
    assert str(jrois[1].getTypeAsString()) == "Composite"
    assert jrois[0].getStrokeColor().getRGB() & 0xFFFFFF == 0xFFFF00
    back = R.read_rois(z)
    _assert_same(ij, back, shape=L.shape)


def test_imagej_tiff_opens_in_imagej(ij, tmp_path):
    img = np.zeros((2, 40, 50), np.uint8)
    img[1, 10:20, 10:30] = 200
    rois = R.labels_to_rois((img[1] > 0).astype(np.int32), names=["blob"])
    p = R.write_imagej_tiff(
        tmp_path / "x.tif", img, rois=rois, channel_names=["a", "b"], spacing=0.5, unit="micron",
        luts=["gray", "green"],
    )
    imp = ij.IJ.openImage(str(p))
    assert imp is not None
    assert (imp.getWidth(), imp.getHeight(), imp.getNChannels(), imp.getNSlices()) == (50, 40, 2, 1)
    cal = imp.getCalibration()
    assert cal.pixelWidth == pytest.approx(0.5) and str(cal.getUnit()) in ("micron", "µm")
    overlay = imp.getOverlay()
    assert overlay is not None and overlay.size() == 1
    roi = overlay.get(0)
    b = roi.getBounds()
    assert str(roi.getName()) == "blob" and (b.x, b.y, b.width, b.height) == (10, 10, 20, 10)
    assert str(imp.getStack().getSliceLabel(2)) == "b"


def test_rois_written_by_imagej_are_read(ij, tmp_path):
    xs = ij.JArray(ij.JFloat)([1.5, 20.25, 9.0])
    ys = ij.JArray(ij.JFloat)([2.0, 4.5, 30.75])
    poly = ij.PolygonRoi(xs, ys, 3, 2)
    poly.setName("from-ij")
    p = tmp_path / "from-ij.roi"
    p.write_bytes(ij.encode(poly))
    (roi,) = R.read_rois(p)
    assert roi.name == "from-ij"
    _assert_same(ij, [roi])
