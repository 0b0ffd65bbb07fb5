"""Probability → objects (8-connectivity, watershed split, min size) and the per-object table."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from skimage.measure import regionprops

from fiji_consensus.instances import OBJECT_COLUMNS, label_instances, object_table

SAMPLE = Path(__file__).resolve().parents[1] / "fiji_consensus" / "data" / "segebarth2020_wue1"


def test_eight_connectivity_and_strict_threshold():
    p = np.zeros((6, 6))
    p[1, 1] = p[2, 2] = 0.9  # diagonal neighbours: one object
    p[4, 4] = 0.5  # exactly at the threshold: background
    p[4, 1] = 0.51
    L = label_instances(p)
    assert L.dtype == np.int32
    assert L[1, 1] == L[2, 2] == 1 and L[4, 1] == 2 and L[4, 4] == 0 and L.max() == 2


def test_min_size_keeps_area_equal_to_min_size():
    p = np.zeros((10, 10))
    p[0:2, 0:2] = 1  # area 4
    p[5:8, 5:6] = 1  # area 3
    p[9, 0] = 1  # area 1
    assert label_instances(p, min_size=4).max() == 1
    L = label_instances(p, min_size=3)
    assert L.max() == 2 and set(np.unique(L)) == {0, 1, 2}  # renumbered 1..n
    assert (L[0:2, 0:2] == 1).all() and (L[5:8, 5] == 2).all()


def _two_disks(shape=(40, 60), r=9, centres=((20, 20), (20, 35))):
    yy, xx = np.indices(shape)
    m = np.zeros(shape, bool)
    for cy, cx in centres:
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m


@pytest.mark.parametrize("split", ["distance", "probability"])
def test_watershed_splits_touching_disks_and_loses_nothing(split):
    m = _two_disks()
    yy, xx = np.indices(m.shape)
    prob = np.maximum(np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 60), np.exp(-((yy - 20) ** 2 + (xx - 35) ** 2) / 60))
    p = np.where(m, np.maximum(prob, 0.6), 0.0) if split == "probability" else m.astype(float)
    assert label_instances(p).max() == 1
    L = label_instances(p, split=split)
    assert L.max() == 2
    np.testing.assert_array_equal(L > 0, m)  # no pixel lost
    assert L[20, 14] != L[20, 41]  # the two centres' sides differ
    # a valley shallower than h is not split
    assert label_instances(p, split=split, h=6.0 if split == "distance" else 0.9).max() == 1
    # each piece is 8-connected
    from scipy import ndimage as ndi

    for i in (1, 2):
        assert ndi.label(L == i, structure=np.ones((3, 3)))[1] == 1


def test_split_keeps_plateaus_whole_and_every_component():
    p = np.zeros((30, 30))
    p[0:30, 0] = 1  # a thin line on the border: one plateau of distance 1
    p[10:12, 10:12] = 1
    p[20, 20] = 1  # a single pixel
    for split in ("distance", "probability"):
        L = label_instances(p, split=split)
        assert L.max() == 3 and (L > 0).sum() == 35
        assert label_instances(p, split=split, min_size=5).max() == 1


def test_object_table_by_hand():
    L = np.array(
        [
            [1, 1, 0, 0],
            [0, 0, 0, 0],
            [0, 2, 2, 0],
            [0, 2, 0, 0],
        ]
    )
    img = np.arange(16, dtype=float).reshape(4, 4)
    prob = np.full((4, 4), 0.7)
    unc = np.zeros((4, 4))
    unc[2, 1], unc[2, 2], unc[3, 1] = 0.1, 0.4, 0.7
    rows = object_table(L, image=img, probability=prob, uncertainty=unc)
    assert [list(r) for r in rows] == [list(OBJECT_COLUMNS)] * 2
    a, b = rows
    assert (a["id"], a["area"], a["centroid_y"], a["centroid_x"]) == (1, 2, 0.0, 0.5)
    assert (a["bbox_y0"], a["bbox_x0"], a["bbox_y1"], a["bbox_x1"]) == (0, 0, 1, 2)
    assert a["mean_intensity"] == pytest.approx(0.5) and a["touches_border"] is True
    assert (b["id"], b["area"]) == (2, 3)
    assert b["centroid_y"] == pytest.approx(7 / 3) and b["centroid_x"] == pytest.approx(4 / 3)
    assert (b["bbox_y0"], b["bbox_x0"], b["bbox_y1"], b["bbox_x1"]) == (2, 1, 4, 3)
    assert b["mean_intensity"] == pytest.approx((9 + 10 + 13) / 3)
    assert b["mean_probability"] == pytest.approx(0.7)
    assert b["mean_uncertainty"] == pytest.approx(0.4) and b["max_uncertainty"] == pytest.approx(0.7)
    assert b["touches_border"] is True  # row 3 is the last row
    L2 = np.zeros((5, 5), int)
    L2[2, 2] = 4
    (c,) = object_table(L2)
    assert c["id"] == 4 and c["touches_border"] is False and math.isnan(c["mean_uncertainty"])
    assert object_table(np.zeros((3, 3), int)) == []


def test_object_table_matches_regionprops_on_real_objects():
    gt = iio.imread(SAMPLE / "labels" / "est_GT" / "0001_cFOS.png")
    img = iio.imread(SAMPLE / "images" / "0001.png")
    L = label_instances((gt > 0).astype(float), min_size=30)
    assert L.max() > 30
    rows = object_table(L, image=img)
    props = regionprops(L, intensity_image=img)
    assert len(rows) == len(props)
    for r, p in zip(rows, props):
        assert r["id"] == p.label and r["area"] == p.area
        assert (r["centroid_y"], r["centroid_x"]) == pytest.approx(p.centroid)
        assert (r["bbox_y0"], r["bbox_x0"], r["bbox_y1"], r["bbox_x1"]) == p.bbox
        assert r["mean_intensity"] == pytest.approx(p.intensity_mean)


def test_object_table_every_column_against_per_object_masks():
    """Every column of every real object against a plain numpy computation on that object's pixels."""
    gt = iio.imread(SAMPLE / "labels" / "est_GT" / "0001_cFOS.png")
    img = iio.imread(SAMPLE / "images" / "0001.png")
    L = label_instances((gt > 0).astype(float), min_size=0)[256:768, 256:768]  # objects cut by the crop's edges
    rng = np.random.default_rng(0)
    prob, unc = rng.random(L.shape), rng.random(L.shape).astype(np.float32)
    rows = object_table(L, image=img[256:768, 256:768], probability=prob, uncertainty=unc)
    ids = np.unique(L[L > 0])
    assert [r["id"] for r in rows] == ids.tolist() and len(ids) > 10
    n_border = 0
    for r in rows:
        m = L == r["id"]
        yy, xx = np.nonzero(m)
        assert r["area"] == m.sum() and isinstance(r["area"], int)
        assert (r["centroid_y"], r["centroid_x"]) == pytest.approx((yy.mean(), xx.mean()), rel=1e-12)
        assert (r["bbox_y0"], r["bbox_x0"], r["bbox_y1"], r["bbox_x1"]) == (
            yy.min(), xx.min(), yy.max() + 1, xx.max() + 1)
        assert r["mean_intensity"] == pytest.approx(img[256:768, 256:768][m].mean(), rel=1e-12)
        assert r["mean_probability"] == pytest.approx(prob[m].mean(), rel=1e-12)
        assert r["mean_uncertainty"] == pytest.approx(unc[m].astype(np.float64).mean(), rel=1e-12)
        assert r["max_uncertainty"] == float(unc[m].max())
        edge = bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
        assert r["touches_border"] is edge
        n_border += edge
    assert 0 < n_border < len(rows)


def test_bad_inputs_say_what_they_got():
    with pytest.raises(ValueError, match=r"2-D \(Y, X\).*got shape \(2, 3, 4\)"):
        label_instances(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="split must be one of"):
        label_instances(np.zeros((3, 3)), split="cellpose")
    with pytest.raises(ValueError, match="h must be a positive number; got 0"):
        label_instances(np.zeros((3, 3)), split="distance", h=0)
    with pytest.raises(ValueError, match="min_size must be >= 0"):
        label_instances(np.zeros((3, 3)), min_size=-1)
    with pytest.raises(ValueError, match=r"uncertainty must have the shape of labels \(3, 3\); got \(2, 2\)"):
        object_table(np.zeros((3, 3), int), uncertainty=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="integers"):
        object_table(np.zeros((3, 3), float))
