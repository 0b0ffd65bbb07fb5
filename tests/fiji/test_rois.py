"""ROIs between Python and ImageJ 1.53t (fiji/roi_bytes.py, pull.py, push.py): bytes both ways, every ROI
field kept, the fast encoder equal to roifile's, experts told apart, rasterised by ImageJ, the ROI Manager.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import roifile
import tifffile

from fiji_consensus import fiji, matching, rois

from ._common import _run_py


def _sample_rois(masks, experts):
    out = {}
    for k, e in enumerate(experts):
        out[e] = rois.labels_to_rois(matching.label_objects(masks[k]), name_prefix=f"{e}:",
                                     stroke_color="#E69F00")
    return out


@pytest.mark.imagej
def test_roi_bytes_roundtrip(ij):
    lab = np.zeros((30, 30), np.int32)
    lab[2:20, 2:20] = 1
    lab[8:12, 8:12] = 0  # a hole: a composite ROI
    lab[22:28, 5:9] = 2
    for r in [*rois.labels_to_rois(lab, name_prefix="A:", stroke_color="#56B4E9"),
              roifile.ImagejRoi.frompoints(np.array([[1.5, 2.25], [10.0, 3.0], [6.0, 12.5]], np.float32),
                                           name="sub\u00e9pixel")]:
        j = fiji.to_java_roi(r)
        assert str(j.getName()) == r.name
        back = fiji.from_java_roi(j)
        assert back.name == r.name and back.roitype == r.roitype
        assert np.allclose(back.coordinates(), r.coordinates())
        assert np.array_equal(rois.roi_to_mask(back, (30, 30)), rois.roi_to_mask(r, (30, 30)))
    with pytest.raises(TypeError, match="roifile.ImagejRoi or an ij.gui.Roi"):
        fiji.to_java_roi("not a roi")


def _java_roi_zoo():
    """ROIs of most ImageJ kinds, made by ImageJ's own classes, with names, colours, positions and groups."""
    import jpype

    J = jpype.JClass
    JF, JI = jpype.JArray(jpype.JFloat), jpype.JArray(jpype.JInt)
    Roi, PolygonRoi, ShapeRoi = J("ij.gui.Roi"), J("ij.gui.PolygonRoi"), J("ij.gui.ShapeRoi")
    Color = J("java.awt.Color")
    FloatPolygon = J("ij.process.FloatPolygon")
    zoo = [
        Roi(3, 4, 20, 10), Roi(3, 4, 20, 10, 6), J("ij.gui.OvalRoi")(5, 6, 12, 9),
        PolygonRoi(FloatPolygon(JF([1.5, 30.25, 12.0]), JF([2.0, 5.5, 28.75])), Roi.POLYGON),
        PolygonRoi(JI([1, 30, 12, 4]), JI([2, 5, 28, 20]), 4, Roi.POLYLINE),
        PolygonRoi(JI([1, 9, 9, 1]), JI([1, 1, 9, 9]), 4, Roi.TRACED_ROI),
        PolygonRoi(FloatPolygon(JF([1.0, 9.0, 5.0]), JF([1.0, 1.0, 7.0])), Roi.FREEROI),
        J("ij.gui.Line")(1.5, 2.5, 20.25, 10.0), J("ij.gui.Arrow")(1.0, 2.0, 20.0, 10.0),
        J("ij.gui.PointRoi")(JI([3, 8, 20]), JI([4, 9, 2]), 3), J("ij.gui.TextRoi")(5, 5, "text \u00e9"),
        J("ij.gui.EllipseRoi")(1.0, 1.0, 20.0, 10.0, 0.5),
        ShapeRoi(Roi(0, 0, 12, 12)).xor(ShapeRoi(Roi(3, 3, 4, 4))),
    ]
    for k, j in enumerate(zoo):
        j.setName(f"expert \u00e9 {k}:{k + 1:04d}")
        j.setStrokeColor(Color(10 * k, 200, 30, 255 - k))
        if k % 3 == 0:
            j.setFillColor(Color(1, 2, 3, 40))
        if k in (1, 5):  # (a point ROI's stroke width is its marker size: left alone)
            j.setStrokeWidth(2.5)
        if k % 2:
            j.setPosition(1 + k % 2, 2, 3)
        else:
            j.setPosition(k + 1)
        j.setProperty("expert", f"E{k}")
    zoo[5].setGroup(3)
    return zoo


@pytest.mark.imagej
def test_roi_bytes_come_through_one_java_stream(ij):
    """pull reads all ROIs of an overlay from one RoiEncoder stream: the same bytes as one RoiEncoder call per
    ROI, read by roifile's public decoder."""
    import jpype

    from fiji_consensus.fiji import roi_bytes

    jzoo = _java_roi_zoo()
    enc = jpype.JClass("ij.io.RoiEncoder").saveAsByteArray
    java_bytes = [bytes(memoryview(enc(j))) for j in jzoo]
    assert roi_bytes._java_rois_to_bytes(jzoo) == java_bytes and roi_bytes._java_rois_to_bytes([]) == []
    pulled = roi_bytes._rois_from_bytes(java_bytes)
    assert [r.name for r in pulled] == [str(j.getName()) for j in jzoo]
    assert [r.tobytes() for r in pulled] == [roifile.ImagejRoi.frombytes(b).tobytes() for b in java_bytes]


@pytest.mark.imagej
def test_fast_encoder_gives_roifile_bytes(ij, sample_crop):
    """push writes the common ROI kinds with a small struct encoder (2x faster, bench_roi_encoder.py): for
    every kind of ROI and every style push sets, it gives roifile's bytes or leaves the ROI to roifile."""
    import copy

    import jpype

    from fiji_consensus.fiji import roi_bytes

    assert roi_bytes._fast_encoder() is not None, "the fast ROI encoder disagrees with the installed roifile"
    _, _, masks = sample_crop
    enc = jpype.JClass("ij.io.RoiEncoder").saveAsByteArray
    blobs = [bytes(memoryview(enc(j))) for j in _java_roi_zoo()]
    blobs += [r.tobytes() for r in rois.labels_to_rois(matching.label_objects(masks[0]))]
    styles = [{}, {"name": "B:x \u00e9", "stroke_color": b"\x80\x11\x22\x33", "group": 4},
              {"props": "expert: B\nscore: 0.5\n", "fill_color": b"\xff\x01\x02\x03", "stroke_width": 2,
               "float_stroke_width": 1.5}]
    fast = 0
    for b in blobs:
        ref = roifile.ImagejRoi.frombytes(b)
        for changes in styles:
            expected = copy.copy(ref)
            for k, v in changes.items():
                setattr(expected, k, v)
            mine = roi_bytes._encode(ref, **{**roi_bytes._own_style(ref), **changes})
            fast += mine is not None
            assert mine is None or mine == expected.tobytes(), (ref, changes)
            assert roi_bytes.styled_bytes(ref, changes) == expected.tobytes()
        assert ref.tobytes() == roifile.ImagejRoi.frombytes(b).tobytes()  # (the ROI itself is not changed)
    # the kinds pushed most (polygons, traced outlines, composite shapes, rectangles, ovals) are fast
    assert fast >= len(styles) * (len(blobs) - 6)


@pytest.mark.imagej
def test_fast_encoder_turns_itself_off_when_roifile_differs(ij, monkeypatch):
    from fiji_consensus.fiji import roi_bytes

    roi_bytes._fast_encoder.cache_clear()
    try:
        monkeypatch.setattr(roi_bytes, "_encode", lambda r, **kw: b"not roifile's bytes")
        assert roi_bytes._fast_encoder() is None
        imp = fiji.to_imageplus(np.zeros((20, 20), np.uint8))
        lab = np.zeros((20, 20), np.int32)
        lab[2:6, 3:9] = 1
        fiji.push_labels(imp, lab, name_prefix="A:")
        assert [r.name for r in fiji.pull_rois(imp)] == ["A:0001"]
    finally:
        monkeypatch.undo()
        roi_bytes._fast_encoder.cache_clear()
    assert roi_bytes._fast_encoder() is not None


@pytest.mark.imagej
def test_push_pull_keep_every_roi_field(ij):
    """Names, colours, stroke widths, positions, groups and properties of ImageJ's own ROIs survive
    pull -> push -> pull exactly; push styles copies (roifile's encoder), never the caller's ROIs."""
    import jpype

    jzoo = _java_roi_zoo()
    imp = fiji.to_imageplus(np.zeros((40, 40), np.uint8))
    ov = jpype.JClass("ij.gui.Overlay")()
    for j in jzoo:
        ov.add(j)
    imp.setOverlay(ov)
    first = fiji.pull_rois(imp)
    assert len(first) == len(jzoo)
    target = fiji.to_imageplus(np.zeros((40, 40), np.uint8))
    fiji.push_rois(target, first)
    again = fiji.pull_rois(target)
    # (ImageJ itself may add subpixel bounds to a decoded TextRoi, index 10: compared by name and text)
    assert [r.tobytes() for k, r in enumerate(again) if k != 10] == [r.tobytes() for k, r in enumerate(first)
                                                                      if k != 10]
    assert (again[10].name, again[10].text) == (first[10].name, first[10].text)
    assert (first[10].name, first[10].text.rstrip("\n")) == (str(jzoo[10].getName()), "text \u00e9")
    for k, (r, j) in enumerate(zip(first, jzoo)):
        assert r.name == str(j.getName()) and r.properties == {"expert": f"E{k}"}
        assert r.group == int(j.getGroup())
        if k % 2:
            assert (r.c_position, r.z_position, r.t_position) == (2, 2, 3)
        elif k not in (9, 10):  # (ImageJ keeps no plain position for point and text ROIs here)
            assert r.position == k + 1, k
        if k != 5:  # (a group sets the stroke colour from a LUT that plain ImageJ lacks)
            c = j.getStrokeColor()
            assert r.stroke_color == bytes([c.getAlpha(), c.getRed(), c.getGreen(), c.getBlue()]), k
    assert first[1].float_stroke_width == 2.5 and first[5].group == 3
    styled = dict(name_prefix="B:", stroke_color="#80112233", fill_color=(1, 2, 3), stroke_width=1.5,
                  properties={"expert": "B", "score": 0.5}, replace=True)
    before = [r.tobytes() for r in first]
    fiji.push_rois(target, first, **styled)
    pushed = fiji.pull_rois(target)
    assert [r.tobytes() for r in first] == before  # push styles copies, never the caller's ROIs
    b = pushed[0]
    assert b.name == "B:" + first[0].name and b.stroke_color == bytes.fromhex("80112233")
    assert b.fill_color == bytes.fromhex("FF010203") and b.float_stroke_width == 1.5
    assert b.properties == {"expert": "B", "score": 0.5}
    # a group (ImageJ then strokes the ROI in the group's colour)
    fiji.push_rois(target, first[:3], group=9, replace=True)
    assert [r.group for r in fiji.pull_rois(target)] == [9, 9, 9]


@pytest.mark.imagej
def test_pulled_rois_equal_the_file_rois(ij, sample_crop, tmp_path):
    experts, image, masks = sample_crop
    file_rois = _sample_rois(masks, experts)[experts[0]]
    zip_path = tmp_path / "RoiSet.zip"
    rois.write_roiset(zip_path, file_rois)
    from_file = rois.read_rois(zip_path)
    imp = fiji.to_imageplus(image)
    assert fiji.push_rois(imp, from_file) == len(from_file) > 10
    pulled = fiji.pull_rois(imp)
    assert [r.name for r in pulled] == [r.name for r in from_file]
    for a, b in zip(pulled, from_file):
        assert a.roitype == b.roitype and a.stroke_color == b.stroke_color
        assert (a.left, a.top, a.right, a.bottom) == (b.left, b.top, b.right, b.bottom)
        assert np.array_equal(a.coordinates(), b.coordinates())
    # rasterised by ImageJ itself == by roifile (rois.py) == the expert's mask
    by_ij = fiji.rasterize(pulled, image.shape)
    assert np.array_equal(by_ij, rois.rois_to_labels(from_file, image.shape))
    assert np.array_equal(by_ij > 0, masks[0])


@pytest.mark.imagej
def test_pull_experts_from_an_overlay_tiff(ij, sample_crop, tmp_path):
    """The CLI's overlay TIFFs (ROIs named 'expert_1:0003') opened by ImageJ give back each expert's mask."""
    import jpype

    experts, image, masks = sample_crop
    by_expert = _sample_rois(masks, experts)
    path = tmp_path / "with overlay.tif"
    rois.write_imagej_tiff(path, image, rois=[r for e in experts for r in by_expert[e]])
    imp = jpype.JClass("ij.IJ").openImage(str(path))
    got = fiji.pull_experts(imp)
    assert list(got) == experts
    for k, e in enumerate(experts):
        assert got[e].dtype == np.int32 and np.array_equal(got[e] > 0, masks[k])
        assert got[e].max() == len(by_expert[e])
    # one RoiSet per expert
    sets = {}
    for e in experts[:2]:
        sets[e] = tmp_path / f"{e}.zip"
        rois.write_roiset(sets[e], by_expert[e])
    got2 = fiji.pull_experts(fiji.to_imageplus(image), roisets=sets)
    assert list(got2) == experts[:2] and np.array_equal(got2[experts[1]] > 0, masks[1])


@pytest.mark.imagej
def test_split_by_expert_rules(ij):
    def roi(name, **kw):
        r = roifile.ImagejRoi.frompoints(np.array([[0, 0], [4, 0], [4, 4]], np.float32), name=name)
        for k, v in kw.items():
            setattr(r, k, v)
        return r

    by_prefix = fiji.split_by_expert([roi("A:1"), roi("expert_1_0003"), roi("A:2"), roi("consensus:0001")])
    assert {k: len(v) for k, v in by_prefix.items()} == {"A": 2, "expert_1": 1}
    p = roi("x")
    p.properties = {"expert": "Bob"}
    assert list(fiji.split_by_expert([p])) == ["Bob"]
    g = roi("0001-0002", group=3)
    assert list(fiji.split_by_expert([g], group_names={3: "Carol"})) == ["Carol"]
    assert list(fiji.split_by_expert([g], by="group")) == ["group3"]
    known = fiji.split_by_expert([roi("expert_1_0003")], experts=["expert_1", "expert_2"])
    assert {k: len(v) for k, v in known.items()} == {"expert_1": 1, "expert_2": 0}
    with pytest.raises(ValueError, match="1 of 2 ROIs have no expert"):
        fiji.split_by_expert([roi("A:1"), roi("0001-0002")])
    with pytest.raises(ValueError, match="by must be"):
        fiji.split_by_expert([], by="colour")


@pytest.mark.imagej
def test_pushed_overlay_reads_back_from_the_saved_tiff(ij, sample_crop, tmp_path):
    from fiji_consensus.jobs import CONSENSUS_COLOR, EXPERT_COLORS

    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image, title="crop")
    cons = masks.sum(0) >= 3
    n = fiji.push_consensus(imp, cons, {e: masks[k] for k, e in enumerate(experts)})
    p = fiji.save_tiff(imp, tmp_path / "pushed.tif")
    with tifffile.TiffFile(p) as t:
        back = [roifile.ImagejRoi.frombytes(b) for b in t.imagej_metadata["Overlays"]]
        assert np.array_equal(t.asarray(), image)
    assert len(back) == n
    counts = {}
    for r in back:
        src = r.name.split(":")[0]
        counts[src] = counts.get(src, 0) + 1
        color = CONSENSUS_COLOR if src == "consensus" else EXPERT_COLORS[experts.index(src)]
        assert r.stroke_color == bytes.fromhex("FF" + color.lstrip("#")), (r.name, r.stroke_color)
        if src != "consensus":
            assert r.properties["expert"] == src
    for k, e in enumerate(experts):
        assert counts[e] == matching.label_objects(masks[k]).max()
    c_labels = matching.label_objects(cons)
    assert counts["consensus"] == c_labels.max()
    # bounds of each consensus ROI are those of its object
    c_rois = [r for r in back if r.name.startswith("consensus:")]
    for r in c_rois:
        ys, xs = np.nonzero(c_labels == int(r.name.split(":")[1]))
        assert (r.top, r.left, r.bottom, r.right) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


@pytest.mark.imagej
def test_headless_refuses_the_roi_manager(ij, sample_crop):
    _, image, masks = sample_crop
    imp = fiji.to_imageplus(image)
    with pytest.raises(RuntimeError, match="display"):
        fiji.push_labels(imp, masks[0], roi_manager=True)
    with pytest.raises(RuntimeError, match="display"):
        fiji.pull_rois(source="roi_manager")
    with pytest.raises(RuntimeError, match="headless"):
        fiji.show(imp)
    with pytest.raises(ValueError, match="stroke_color must be"):
        fiji.push_labels(imp, masks[0], stroke_color="blue-ish")


@pytest.mark.imagej
@pytest.mark.xvfb
def test_roi_manager_with_a_display(ij_jar, tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.fail("xvfb-run not found: apt-get install xvfb xauth")
    r = _run_py(f"""
        import numpy as np
        from fiji_consensus import fiji, rois
        c = fiji.connect(ij_jar={ij_jar!r})
        assert not c.headless
        lab = np.zeros((40, 40), np.int32); lab[2:9, 3:7] = 1; lab[20:30, 20:35] = 2
        imp = fiji.to_imageplus(np.zeros((40, 40), np.uint8))
        n = fiji.push_rois(imp, rois.labels_to_rois(lab), name_prefix="A:", stroke_color="#00ff00")
        pulled = fiji.pull_rois(source="roi_manager")
        print("RM", n, len(pulled), [r.name for r in pulled], imp.getOverlay().size())
        print("EQ", np.array_equal(fiji.rasterize(pulled, (40, 40)), lab), flush=True)
        fiji.show(imp)
        print("SHOWN", imp.getWindow() is not None and imp.getWindow().isVisible(), flush=True)
        import jpype
        jpype.JClass("java.lang.System").exit(0)  # AWT threads would keep the process alive
    """, display=True, timeout=60)
    assert "RM 2 2 ['A:0001', 'A:0002'] 2" in r.stdout, r.stdout + r.stderr
    assert "EQ True" in r.stdout and "SHOWN True" in r.stdout
