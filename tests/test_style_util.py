"""The one home of the output style (colours, colour map, ROI names, label dtype) and of hashing / JSON."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fiji_consensus import style
from fiji_consensus._util import json_safe, sha256_file
from fiji_consensus.uncertainty import MEASURE_RANGE


def test_uncertainty_color_is_piecewise_linear_on_the_absolute_scale():
    for measure, top in MEASURE_RANGE.items():
        assert style.uncertainty_color(0.0, measure) == "#00ffff"
        assert style.uncertainty_color(top / 2, measure) == "#ffff00"
        assert style.uncertainty_color(top, measure) == "#ff0000"
        assert style.uncertainty_color(10 * top, measure) == "#ff0000"  # clipped, never rescaled
        assert style.uncertainty_color(math.nan, measure) == "#00ffff"
    # a quarter of the way: half-way between cyan and yellow
    assert style.uncertainty_color(0.25) == "#80ff80"
    with pytest.raises(ValueError, match="measure must be one of .*got 'bogus'"):
        style.uncertainty_color(0.1, "bogus")


def test_uncertainty_lut_matches_the_colour_of_each_entry():
    lut = style.uncertainty_lut()
    assert lut.shape == (3, 256) and lut.dtype == np.uint8
    for i in (0, 1, 64, 127, 128, 200, 255):
        hexed = style.uncertainty_color(i / 255)
        assert [int(hexed[k : k + 2], 16) for k in (1, 3, 5)] == lut[:, i].tolist()
    rgb = style.uncertainty_rgb(np.linspace(0, 1, 256))
    np.testing.assert_array_equal(np.round(rgb).astype(np.uint8).T, lut)


def test_label_dtype_one_rule_int32_above_65535():
    assert style.label_dtype(0) == np.uint16 and style.label_dtype(65535) == np.uint16
    assert style.label_dtype(65536) == np.int32
    big = np.array([[0, 1], [65536, 70000]])
    out = style.as_label_output(big)
    assert out.dtype == np.int32 and out.tolist() == big.tolist()  # exact, never float
    assert style.as_label_output(np.array([[0, 7]], np.int64)).dtype == np.uint16
    with pytest.raises(ValueError, match="max_label must be >= 0; got -1"):
        style.label_dtype(-1)


def test_roi_names_and_palettes():
    assert style.object_roi_name(7, 0.13249) == "0007_u0.132"
    assert style.object_roi_name(12345) == "12345"
    for palette in (style.EXPERT_COLORS, style.MODEL_COLORS):
        assert len(set(palette)) == len(palette) and all(len(c) == 7 and c[0] == "#" for c in palette)
    assert not set(style.EXPERT_COLORS) & set(style.MODEL_COLORS)  # a model never looks like an expert


def test_sha256_file_equals_hashlib_across_chunks(tmp_path: Path):
    data = np.random.default_rng(0).integers(0, 256, size=(1 << 20) + 12345, dtype=np.uint8).tobytes()
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_json_safe_gives_strict_json():
    obj = {"nan": math.nan, "inf": np.float32(np.inf), "f32": np.float32(0.5), "i": np.int64(3), "b": np.bool_(False),
           "t": (1, math.nan), "p": Path("a/b"), 2: "int key", "nested": [{"x": -math.inf}]}
    out = json_safe(obj)
    assert out == {"nan": None, "inf": None, "f32": 0.5, "i": 3, "b": False, "t": [1, None], "p": "a/b",
                   "2": "int key", "nested": [{"x": None}]}
    assert type(out["i"]) is int and type(out["b"]) is bool and type(out["f32"]) is float
    json.dumps(out, allow_nan=False)  # raises if anything non-finite or non-JSON remained
