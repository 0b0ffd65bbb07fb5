"""numpy <-> ImagePlus (fiji/images.py) in real ImageJ 1.53t: exact round trips, conversions, RGB,
calibration, xarray.
"""

from __future__ import annotations


import numpy as np
import pytest
import tifffile

from fiji_consensus import fiji


@pytest.mark.imagej
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape,axes", [((37, 53), None), ((3, 37, 53), "CYX"), ((2, 3, 37, 53), "ZCYX"),
                                        ((4, 37, 53), "TYX"), ((37, 53, 2), "YXC")])
def test_numpy_imageplus_roundtrip_exact(ij, dtype, shape, axes):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    a = (rng.integers(0, info.max, shape, endpoint=True) if info else rng.normal(size=shape)).astype(dtype)
    imp = fiji.to_imageplus(a, axes=axes, title="t")
    assert imp.getBitDepth() == {np.uint8: 8, np.uint16: 16, np.float32: 32}[dtype]
    assert (imp.getWidth(), imp.getHeight()) == (53, 37)
    b = fiji.from_imageplus(imp)
    expected = np.moveaxis(a, -1, 0) if axes == "YXC" else a
    assert b.dtype == a.dtype and np.array_equal(b, expected)
    if axes in ("CYX", "YXC"):
        assert imp.getNChannels() == expected.shape[0] and imp.isComposite()
    if axes == "ZCYX":
        assert (imp.getNChannels(), imp.getNSlices()) == (3, 2)
        assert fiji.from_imageplus(imp, squeeze=False).shape == (1, 2, 3, 37, 53)
    if axes == "TYX":
        assert imp.getNFrames() == 4


@pytest.mark.imagej
def test_conversions_convert_and_validate(ij):
    m = np.zeros((5, 6), bool)
    m[1:3, 2:4] = True
    assert np.array_equal(fiji.from_imageplus(fiji.to_imageplus(m)), m.astype(np.uint8) * 255)
    d = np.linspace(0, 1, 30).reshape(5, 6)
    assert fiji.from_imageplus(fiji.to_imageplus(d)).dtype == np.float32
    with pytest.raises(ValueError, match="dtype must be uint8, uint16 or float32.*got int32"):
        fiji.to_imageplus(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match=r"got shape \(4, 4\) with axes 'CYX'"):
        fiji.to_imageplus(np.zeros((4, 4), np.uint8), axes="CYX")
    with pytest.raises(ValueError, match="either calibration or pixel_size"):
        fiji.to_imageplus(np.zeros((4, 4), np.uint8), pixel_size=1, calibration=fiji.Calibration())
    with pytest.raises(TypeError, match="ij.ImagePlus"):
        fiji.from_imageplus(np.zeros((4, 4)))


@pytest.mark.imagej
def test_rgb_imageplus(ij):
    import jpype

    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3)).astype(np.uint8)
    packed = (rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]).astype(np.int32)
    cp = jpype.JClass("ij.process.ColorProcessor")(9, 7, jpype.JArray(jpype.JInt)(packed.ravel()))
    imp = jpype.JClass("ij.ImagePlus")("rgb", cp)
    assert np.array_equal(fiji.from_imageplus(imp), rgb)


@pytest.mark.imagej
def test_calibration_kept_and_saved(ij, tmp_path):
    a = np.arange(2 * 20 * 30, dtype=np.uint16).reshape(2, 20, 30)
    imp = fiji.to_imageplus(a, pixel_size=(0.5, 0.25), unit="um")
    cal = fiji.get_calibration(imp)
    assert (cal.pixel_height, cal.pixel_width) == (0.5, 0.25) and cal.unit in ("um", "\u00b5m", "micron")
    full = fiji.Calibration(pixel_width=0.1, pixel_height=0.2, pixel_depth=2.0, unit="mm",
                            frame_interval=3.0, time_unit="min")
    assert fiji.get_calibration(fiji.to_imageplus(a, calibration=full)) == full
    p = fiji.save_tiff(imp, tmp_path / "cal.tif")
    with tifffile.TiffFile(p) as t:
        page = t.pages[0]
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        assert np.isclose(xres[1] / xres[0], 0.25) and np.isclose(yres[1] / yres[0], 0.5)
        assert t.imagej_metadata["channels"] == 2
        assert np.array_equal(t.asarray(), a)
    with pytest.raises(FileExistsError):
        fiji.save_tiff(imp, p)
    with pytest.raises(ValueError, match="pixel_width must be"):
        fiji.Calibration(pixel_width=0)


@pytest.mark.imagej
def test_xarray_in_and_out(ij):
    xr = pytest.importorskip("xarray")
    da = xr.DataArray(np.ones((2, 4, 5), np.float32), dims=("c", "y", "x"),
                      coords={"y": np.arange(4) * 0.5, "x": np.arange(5) * 0.5}, attrs={"unit": "um"})
    imp = fiji.to_imageplus(da)
    assert imp.getNChannels() == 2 and fiji.get_calibration(imp).pixel_width == 0.5
    back = fiji.from_imageplus(imp, xarray=True)
    assert back.dims == ("c", "y", "x") and np.allclose(back.coords["x"], da.coords["x"])
