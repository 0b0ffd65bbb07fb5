"""The command line end to end on crops of the bundled real sample, in every annotation format."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from fiji_consensus import datasets, io, rois
from fiji_consensus.cli import main

CROP = (slice(256, 512), slice(256, 512))
IDS = ["0001", "0015"]


@pytest.fixture(scope="module")
def sample():
    return datasets.load_sample()


@pytest.fixture
def mixed_inputs(tmp_path, sample):
    """Crops of two real images; expert_1 as PNG masks, expert_2 as RoiSet zips, expert_3 as overlay
    TIFFs, expert_4 as label TIFFs, expert_5 as RGB PNGs (as in the published data)."""
    images = tmp_path / "images"
    experts = {e: tmp_path / "annotations" / e for e in sample.experts}
    for d in [images, *experts.values()]:
        d.mkdir(parents=True)
    for image_id in IDS:
        img = sample.image(image_id)[CROP]
        iio.imwrite(images / f"{image_id}.png", img)
        masks = sample.masks(image_id)[:, CROP[0], CROP[1]]
        for k, e in enumerate(sample.experts):
            m = masks[k]
            if e == "expert_1":
                iio.imwrite(experts[e] / f"{image_id}_cFOS.png", m.astype(np.uint8) * 255)
            elif e == "expert_2":
                rois.write_roiset(experts[e] / f"{image_id}.zip", rois.mask_to_rois(m))
            elif e == "expert_3":
                rois.write_imagej_tiff(experts[e] / f"{image_id}.tif", img, rois=rois.mask_to_rois(m))
            elif e == "expert_4":
                from scipy import ndimage

                lab, _ = ndimage.label(m, structure=np.ones((3, 3)))
                tifffile.imwrite(experts[e] / f"{image_id}-labels.tif", lab.astype(np.uint16))
            else:
                iio.imwrite(experts[e] / f"{image_id}_cFOS.png", np.repeat(m[..., None], 3, 2).astype(np.uint8) * 255)
    return tmp_path, images, [experts[e] for e in sample.experts]


def _hashes(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_consensus_all_formats_json(mixed_inputs, sample, capsys):
    root, images, expert_dirs = mixed_inputs
    before = _hashes(root)
    out = root / "result"
    code, stdout, err = _run(
        ["consensus", "--images", str(images), "--experts", *map(str, expert_dirs), "--method", "staple",
         "--min-size", "30", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["ok"] is True and result["n_images"] == 2 and result["experts"] == sample.experts
    assert _hashes(root / "images") == {p: h for p, h in before.items() if "images" in p.parts}
    assert all(before[p] == h for p, h in _hashes(root).items() if p in before)  # inputs untouched

    # every format was read as the same pixels: the consensus equals the one of the plain masks
    from fiji_consensus import consensus

    for image_id in IDS:
        masks = sample.masks(image_id)[:, CROP[0], CROP[1]]
        expected = consensus.staple(masks).probability > 0.5
        got = tifffile.imread(out / "masks" / f"{image_id}.tif")
        assert got.dtype == np.uint8 and got.shape == masks.shape[1:]
        np.testing.assert_array_equal(got > 0, expected)
        assert set(np.unique(got)) <= {0, 255}
        prob = tifffile.imread(out / "probability" / f"{image_id}.tif")
        assert prob.dtype == np.float32 and prob.min() >= 0 and prob.max() <= 1
        crois = rois.read_rois(out / "rois" / f"{image_id}.zip")
        from fiji_consensus.matching import label_objects

        labels = label_objects(expected, min_size=30)
        assert len(crois) == labels.max()
        np.testing.assert_array_equal(rois.rois_to_mask(crois, expected.shape), labels > 0)
        overlay = rois.read_overlay(out / "overlays" / f"{image_id}.tif")
        names = [r.name for r in overlay]
        assert sum(n.startswith("consensus:") for n in names) == len(crois)
        for e in sample.experts:
            assert any(n.startswith(f"{e}:") for n in names), e
        assert len({r.stroke_color for r in overlay if not r.name.startswith("consensus:")}) == 5

    rows = list(_csv(out / "experts.csv"))
    assert len(rows) == 2 * 5
    assert {"image", "expert", "staple_sensitivity", "staple_specificity", "dice", "roi_f1"} <= set(rows[0])
    for r in rows:
        assert 0 <= float(r["staple_sensitivity"]) <= 1 and 0.9 <= float(r["staple_specificity"]) <= 1
        assert 0 <= float(r["dice"]) <= 1
    pairs = list(_csv(out / "agreement.csv"))
    assert len(pairs) == 6 * 5 // 2  # 5 experts + consensus
    matrix = list(_csv(out / "agreement_matrix_dice.csv"))
    assert [r["rater"] for r in matrix] == [*sample.experts, "consensus"]
    pair = next(p for p in pairs if p["rater_a"] == "expert_2" and p["rater_b"] == "consensus")
    assert float(matrix[1]["consensus"]) == float(matrix[5]["expert_2"]) == float(pair["dice"])
    assert float(matrix[0]["expert_1"]) == 1.0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["method"] == "staple" and cfg["config"]["min_size"] == 30


def _csv(path):
    import csv

    with open(path, newline="") as fh:
        yield from csv.DictReader(fh)


def test_existing_output_not_overwritten_and_resume(mixed_inputs, capsys):
    root, images, expert_dirs = mixed_inputs
    out = root / "res"
    args = ["consensus", "--images", str(images), "--experts", *map(str, expert_dirs[:3]),
            "--method", "majority", "--out", str(out), "--no-overlays", "--no-progress"]
    assert _run(args, capsys)[0] == 0
    full = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # a second run refuses to touch the folder
    code, _, err = _run(args, capsys)
    assert code == 1 and "exists and is not empty" in err and "--overwrite" in err
    # simulate a crash after the first image: its last file and the second image's files are missing
    for p in [out / "per_image" / "0015.json", out / "masks" / "0015.tif", out / "experts.csv"]:
        p.unlink()
    mtime = (out / "masks" / "0001.tif").stat().st_mtime_ns
    assert _run(args + ["--resume"], capsys)[0] == 0
    assert (out / "masks" / "0001.tif").stat().st_mtime_ns == mtime  # done image skipped
    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(again) == set(full)
    for k in full:
        if k.name != "config.json":
            assert again[k] == full[k], k
    assert not list(out.rglob("*.part"))
    # resuming with other settings is refused
    code, _, err = _run(args + ["--min-votes", "1", "--resume"], capsys)
    assert code == 1 and "other settings" in err
    assert _run(args + ["--overwrite"], capsys)[0] == 0


def test_bad_inputs_give_one_line_errors(mixed_inputs, tmp_path, capsys):
    root, images, expert_dirs = mixed_inputs
    # one expert only
    code, out, err = _run(["consensus", "--images", str(images), "--experts", str(expert_dirs[0]),
                           "--out", str(tmp_path / "o1"), "--json"], capsys)
    assert code == 1 and "at least 2 experts" in json.loads(out)["error"]
    assert "Traceback" not in err
    # empty expert folder
    empty = tmp_path / "nobody"
    empty.mkdir()
    code, out, err = _run(["consensus", "--images", str(images), "--experts", str(expert_dirs[0]), str(empty),
                           "--out", str(tmp_path / "o2")], capsys)
    assert code == 1 and "nobody" in err and "holds no annotation" in err
    # a corrupt RoiSet zip
    (expert_dirs[1] / "0001.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    code, out, err = _run(["consensus", "--images", str(images), "--experts", *map(str, expert_dirs[:2]),
                           "--out", str(tmp_path / "o3"), "--json"], capsys)
    payload = json.loads(out)
    assert code == 1 and payload["ok"] is False and "0001.zip" in payload["error"]
    assert not (tmp_path / "o3" / "experts.csv").exists()
    # fine-tuning from something that is not a model: named, before any image is read
    pytest.importorskip("torch")
    roiset = tmp_path / "RoiSet.zip"  # a zip, but no bioimage.io package
    rois.write_roiset(roiset, rois.mask_to_rois(np.pad(np.ones((5, 5), bool), 3)))
    image = next(images.iterdir())
    for bad, why in ((tmp_path / "missing.zip", "no such ensemble folder or package"),
                     (roiset, "RoiSet.zip"), (image, "expected an ensemble folder")):
        code, out, err = _run(["train", "--images", str(images), "--experts", *map(str, expert_dirs[:2]),
                               "--init", str(bad), "--members", "1", "--iterations", "1",
                               "--out", str(tmp_path / "m"), "--json"], capsys)
        payload = json.loads(out)
        assert code == 1 and why in payload["error"] and "Traceback" not in err, payload
        assert not (tmp_path / "m").exists()
    # usage errors exit 2
    with pytest.raises(SystemExit) as e:
        main(["consensus", "--method", "nonsense", "--out", "x"])
    assert e.value.code == 2


def test_agreement_with_reference(tmp_path, sample, capsys):
    root = tmp_path / "s"
    (root / "images").mkdir(parents=True)
    for d in ("a", "b", "ref"):
        (root / d).mkdir()
    image_id = "0001"
    iio.imwrite(root / "images" / f"{image_id}.png", sample.image(image_id)[CROP])
    m = sample.masks(image_id)[:, CROP[0], CROP[1]]
    iio.imwrite(root / "a" / f"{image_id}.png", m[1].astype(np.uint8) * 255)
    iio.imwrite(root / "b" / f"{image_id}.png", m[2].astype(np.uint8) * 255)
    iio.imwrite(root / "ref" / f"{image_id}.png", m[1].astype(np.uint8) * 255)
    code, out, err = _run(["agreement", "--images", str(root / "images"), "--experts", str(root / "a"),
                           str(root / "b"), "--reference", str(root / "ref"), "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    vs = {r["expert"]: r for r in res["vs_reference"]}
    assert vs["a"]["dice"] == 1.0 and vs["a"]["roi_f1"] == 1.0
    assert vs["b"]["dice"] < 1.0
    (pair,) = res["pairwise"]
    assert pair["rater_a"] == "a" and pair["rater_b"] == "b" and pair["dice"] == pytest.approx(vs["b"]["dice"])


def test_demo_reproduces_est_gt(tmp_path):
    """`fiji-consensus demo` on the bundled sample: the STAPLE consensus equals the published est_GT."""
    proc = subprocess.run(
        [sys.executable, "-m", "fiji_consensus", "demo", "--out", str(tmp_path / "demo"), "--json",
         "--consensus-only"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert "model" not in res and not (tmp_path / "demo" / "predictions").exists()
    assert (tmp_path / "demo" / "consensus" / "overlays" / "0001.tif").is_file()
    assert res["est_gt_differing_pixels"] == {i: 0 for i in datasets.load_sample().ids}
    assert set(res["experts"]) == {f"expert_{k}" for k in range(1, 6)}
    # expert 1 is the least sensitive annotator of lab-wue1 (anchors.md: sensitivity ~0.38)
    sens = {e: s["sensitivity"] for e, s in res["expert_scores"].items()}
    assert min(sens, key=sens.get) == "expert_1"


def test_fiji_install_macros(tmp_path, capsys):
    fiji_dir = tmp_path / "Fiji.app"
    (fiji_dir / "macros").mkdir(parents=True)
    code, out, err = _run(["fiji", "install-macros", str(fiji_dir), "--json"], capsys)
    assert code == 0, err
    written = json.loads(out)["written"]
    assert (fiji_dir / "macros" / "toolsets" / "Fiji Consensus.ijm").is_file()
    assert any(w.endswith("Compute_Consensus.ijm") for w in written)
    code, out, err = _run(["fiji", "install-macros", str(tmp_path / "not-fiji")], capsys)
    assert code == 1 and "not-fiji" in err


def test_project_with_ignore_regions(tmp_path, sample, capsys):
    """Ignored pixels are left out of the STAPLE estimate and of every score; the consensus is 0 there."""
    proj = tmp_path / "proj"
    (proj / "images").mkdir(parents=True)
    image_id = "0015"
    iio.imwrite(proj / "images" / f"{image_id}.png", sample.image(image_id)[CROP])
    masks = sample.masks(image_id)[:, CROP[0], CROP[1]]
    for k, e in enumerate(sample.experts[:3]):
        (proj / "annotations" / e).mkdir(parents=True)
        iio.imwrite(proj / "annotations" / e / f"{image_id}.png", masks[k].astype(np.uint8) * 255)
    ignore = np.zeros(masks.shape[1:], bool)
    ignore[:, :128] = True
    (proj / "ignore").mkdir()
    iio.imwrite(proj / "ignore" / f"{image_id}.png", ignore.astype(np.uint8) * 255)
    out = proj / "consensus"
    code, stdout, err = _run(["consensus", "--project", str(proj), "--out", str(out), "--json"], capsys)
    assert code == 0, err
    got = tifffile.imread(out / "masks" / f"{image_id}.tif") > 0
    assert not got[ignore].any() and got[~ignore].any()
    from fiji_consensus import consensus, metrics

    expected = consensus.staple(masks[:3], ignore=ignore).probability > 0.5
    np.testing.assert_array_equal(got, expected & ~ignore)
    rows = {r["expert"]: r for r in _csv(out / "experts.csv")}
    for k, e in enumerate(sample.experts[:3]):
        want = metrics.dice(got[:, 128:], masks[k][:, 128:])
        assert float(rows[e]["dice"]) == pytest.approx(want, abs=1e-6)


@pytest.mark.slow  # ~15 min on 2 cores: the package runs 4 members x 4 views through onnxruntime per image
def test_demo_with_the_zoo_model(tmp_path):
    """`make demo`'s command: consensus, then the committed zoo model (a bioimage.io package run through
    bioimageio.core) predicts the sample, and the evaluation report places it among the experts."""
    pytest.importorskip("bioimageio.core", reason="the zoo extra is part of `make test`")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "fiji_consensus", "demo", "--out", str(out), "--json", "--no-progress"],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["model"].endswith("cfos-wue1.zip")
    assert res["prediction"]["ok"] and res["prediction"]["n_images"] == 5
    for kind in ("probability", "uncertainty", "labels", "rois", "overlays"):
        assert len(list((out / "predictions" / "cfos-wue1" / kind).iterdir())) == 5, kind
    scores = res["evaluation"]["models"]["cfos-wue1"]
    # the sample's images were in the model's training folds: it must segment them about as well as an expert
    assert scores["roi_f1"] > 0.6 and scores["dice"] > 0.6, scores
    html = (out / "report" / "report.html").read_text()
    assert "cfos-wue1" in html and "<img" in html
