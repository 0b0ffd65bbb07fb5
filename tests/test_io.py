"""Reading images and annotations, pairing by id, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from fiji_consensus import io
from fiji_consensus._atomic import atomic_path


def _png(path, arr):
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, arr)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_pairing_is_by_id_not_sort_order(tmp_path, rng):
    img = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    for i in ("b", "a", "c"):
        _png(tmp_path / "images" / f"{i}.png", img)
    # expert files whose sorted order differs from the images' and with different suffix conventions
    _png(tmp_path / "e1" / "c.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "e1" / "a_cFOS.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "e1" / "b-mask.png", np.zeros((8, 8), np.uint8))
    pairs = io.pair_annotations(io.list_images(tmp_path / "images"), tmp_path / "e1")
    assert {k: v.name for k, v in pairs.items()} == {"a": "a_cFOS.png", "b": "b-mask.png", "c": "c.png"}


def test_longest_id_wins(tmp_path):
    for name in ("0001_b.png", "0001_cFOS.png"):
        _png(tmp_path / "e" / name, np.zeros((4, 4), np.uint8))
    pairs = io.pair_annotations(["0001", "0001_b"], tmp_path / "e")
    assert pairs["0001_b"].name == "0001_b.png"
    assert pairs["0001"].name == "0001_cFOS.png"


def test_prefix_without_separator_does_not_pair(tmp_path):
    _png(tmp_path / "e" / "00012.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(io.AnnotationError, match=r"no annotation for 1 image\(s\): 0001"):
        io.pair_annotations(["0001"], tmp_path / "e", expert="anna")


def test_ambiguous_annotation_names_image_expert_and_candidates(tmp_path):
    _png(tmp_path / "anna" / "0001_a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "anna" / "0001.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(io.AnnotationError) as e:
        io.pair_annotations(["0001"], tmp_path / "anna")
    msg = str(e.value)
    assert "'0001'" in msg and "'anna'" in msg and "0001_a.png" in msg and "0001.png" in msg


def test_empty_expert_folder(tmp_path):
    (tmp_path / "bob").mkdir()
    with pytest.raises(io.AnnotationError, match="expert 'bob'.*holds no annotation"):
        io.pair_annotations(["0001"], tmp_path / "bob")


def test_missing_folders(tmp_path):
    with pytest.raises(io.AnnotationError, match="does not exist"):
        io.list_images(tmp_path / "nope")
    with pytest.raises(io.AnnotationError, match="does not exist"):
        io.pair_annotations(["a"], tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(io.AnnotationError, match="no images found"):
        io.list_images(tmp_path / "empty")


def test_mask_formats(tmp_path):
    base = np.zeros((6, 7), np.uint8)
    base[1:3, 2:5] = 1
    p01 = _png(tmp_path / "m01.png", base)
    p255 = _png(tmp_path / "m255.png", base * 255)
    prgb = _png(tmp_path / "rgb.png", np.repeat((base * 255)[..., None], 3, axis=2))
    labels = base.astype(np.uint16) * 7
    labels[4, 0] = 3
    plab = tmp_path / "lab.tif"
    tifffile.imwrite(plab, labels)
    for p in (p01, p255, prgb):
        np.testing.assert_array_equal(io.read_annotation(p, (6, 7)), base.astype(np.int32))
    np.testing.assert_array_equal(io.read_annotation(plab, (6, 7)), labels.astype(np.int32))
    assert io.read_mask(plab).sum() == base.sum() + 1


def test_bad_masks_are_clear_errors(tmp_path):
    rgb = np.zeros((5, 5, 3), np.uint8)
    rgb[0, 0, 1] = 255
    p = _png(tmp_path / "colour.png", rgb)
    with pytest.raises(io.AnnotationError, match="unequal channels"):
        io.read_annotation(p)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((4, 5, 5), np.uint8), photometric="minisblack")
    with pytest.raises(io.AnnotationError, match="3-D stacks are not supported yet"):
        io.read_annotation(stack)
    with pytest.raises(io.AnnotationError, match="3-D stacks .*are not supported yet"):
        io.read_image(stack)
    fl = tmp_path / "float.tif"
    tifffile.imwrite(fl, np.full((5, 5), 0.5, np.float32))
    with pytest.raises(io.AnnotationError, match="non-integer"):
        io.read_annotation(fl)
    ok = _png(tmp_path / "ok.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(io.AnnotationError, match=r"shape \(5, 5\).*image has shape \(6, 5\)"):
        io.read_annotation(ok, (6, 5))
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(io.AnnotationError, match="cannot read"):
        io.read_annotation(bad)


def test_dataset_shape_mismatch_names_image_and_expert(tmp_path):
    _png(tmp_path / "images" / "x.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "carla" / "x.png", np.zeros((8, 9), np.uint8))
    _png(tmp_path / "dan" / "x.png", np.zeros((8, 8), np.uint8))
    ds = io.open_dataset(tmp_path / "images", [tmp_path / "carla", tmp_path / "dan"])
    with pytest.raises(io.AnnotationError, match=r"image 'x', expert 'carla'.*\(8, 9\).*\(8, 8\)"):
        ds.load("x")


def test_duplicate_expert_names_rejected(tmp_path):
    _png(tmp_path / "images" / "x.png", np.zeros((4, 4), np.uint8))
    for parent in ("a", "b"):
        _png(tmp_path / parent / "exp" / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="expert names must be unique"):
        io.open_dataset(tmp_path / "images", [tmp_path / "a" / "exp", tmp_path / "b" / "exp"])
    ds = io.open_dataset(
        tmp_path / "images", [tmp_path / "a" / "exp", tmp_path / "b" / "exp"], expert_names=["A", "B"]
    )
    assert ds.expert_names == ["A", "B"]


def test_project_folder_with_ignore(tmp_path, rng):
    img = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    _png(tmp_path / "images" / "i1.png", img)
    for e in ("x", "y"):
        _png(tmp_path / "annotations" / e / "i1.png", (img > 128).astype(np.uint8) * 255)
    ign = np.zeros((8, 8), np.uint8)
    ign[:2] = 255
    _png(tmp_path / "ignore" / "i1_ignore.png", ign)
    ds = io.open_project(tmp_path)
    image, ann, ignore = ds.load("i1")
    assert ds.expert_names == ["x", "y"]
    np.testing.assert_array_equal(image, img)
    np.testing.assert_array_equal(ignore, ign > 0)
    np.testing.assert_array_equal(ann["x"], (img > 128).astype(np.int32))


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_writers_refuse_to_overwrite(tmp_path):
    p = io.write_csv(tmp_path / "t.csv", [{"a": 1, "b": float("nan")}])
    assert p.read_text() == "a,b\n1,nan\n"
    with pytest.raises(FileExistsError, match="overwrite"):
        io.write_csv(p, [{"a": 2}])
    io.write_csv(p, [{"a": 2}], overwrite=True)
    assert p.read_text() == "a\n2\n"
    j = io.write_json(tmp_path / "x.json", {"v": float("nan"), "w": np.float32(1.5)})
    assert io.read_json(j) == {"v": None, "w": 1.5}
    t = io.write_tiff(tmp_path / "m.tif", np.ones((3, 3), np.uint8))
    with pytest.raises(FileExistsError):
        io.write_tiff(t, np.zeros((3, 3), np.uint8))
    np.testing.assert_array_equal(tifffile.imread(t), np.ones((3, 3), np.uint8))


def test_intensity_image_given_as_annotation_is_refused(tmp_path):
    from fiji_consensus import datasets

    sample = datasets.load_sample()
    raw = sample.image("0001")[:128, :128]
    p = _png(tmp_path / "0001_mask.png", raw)
    with pytest.raises(io.AnnotationError, match="looks like an intensity image"):
        io.read_annotation(p, raw.shape)
    # a dense label image with many objects is fine
    labels = np.zeros((64, 64), np.uint16)
    labels[:32] = np.arange(1, 64 * 32 + 1).reshape(32, 64)
    lp = tmp_path / "labels.tif"
    tifffile.imwrite(lp, labels)
    np.testing.assert_array_equal(io.read_annotation(lp, (64, 64)), labels.astype(np.int32))


def test_atomic_write_gives_normal_permissions(tmp_path):
    """Results are readable like files written with open() (mkstemp alone would leave them 0600)."""
    import os

    umask = os.umask(0o022)
    try:
        import importlib

        import fiji_consensus._atomic as at

        importlib.reload(at)  # the module reads the umask once, at import
        with at.atomic_path(tmp_path / "r.csv") as tmp:
            tmp.write_text("x")
        assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "r.csv", 0o640)
        with at.atomic_path(tmp_path / "r.csv", overwrite=True) as tmp:
            tmp.write_text("y")
        assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    finally:
        os.umask(umask)


def test_one_image_reader_keeps_the_calibration(tmp_path):
    """io.read_input is the one image reader: pixels + calibration; read_image is its pixels only."""
    img = np.arange(6 * 7, dtype=np.uint16).reshape(6, 7)
    p = tmp_path / "cal.tif"
    tifffile.imwrite(p, img, imagej=True, resolution=(1 / 0.5, 1 / 0.25), metadata={"unit": "micron"})
    arr, info = io.read_input(p)
    np.testing.assert_array_equal(arr, img)
    assert info["spacing"] == pytest.approx((0.25, 0.5)) and info["unit"] == "micron"
    assert io.read_calibration(p) == {"spacing": info["spacing"], "unit": "micron"}
    np.testing.assert_array_equal(io.read_image(p), arr)
    png = _png(tmp_path / "plain.png", img.astype(np.uint8))
    assert io.read_input(png)[1]["spacing"] is None and io.read_calibration(png) == {"spacing": None, "unit": None}
    # NaN: refused for prediction and the experts' images, allowed for maps (read_image)
    fl = tmp_path / "nan.tif"
    tifffile.imwrite(fl, np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(io.ImageInputError, match="1 NaN or infinite"):
        io.read_input(fl)
    assert np.isnan(io.read_image(fl)).sum() == 1
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        io.read_image(tmp_path / "missing.tif")
