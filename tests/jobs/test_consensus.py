"""The consensus job called directly (not through the CLI), on crops of the real lab-wue1 data."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from fiji_consensus import io as fio
from fiji_consensus import rois
from fiji_consensus.config import ConsensusConfig
from fiji_consensus.consensus import majority_vote, staple
from fiji_consensus.jobs import run_consensus
from fiji_consensus.matching import label_objects

from _design_data import EXPERTS, lab_masks, make_project, read_gray  # noqa: I001

WINDOW = (slice(384, 512), slice(384, 512))
IDS = ["0001", "0015"]


@pytest.fixture
def project(tmp_path):
    """Two real crops with all five experts; image 0001 as a calibrated ImageJ TIFF (0.5 micron pixels)."""
    root = make_project(tmp_path / "proj", IDS, window=WINDOW)
    png = root / "images" / "0001.png"
    tifffile.imwrite(root / "images" / "0001.tif", read_gray(png), imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "micron"})
    png.unlink()
    return root


def test_majority_consensus_is_what_the_core_computes_and_keeps_the_calibration(project, tmp_path):
    out = tmp_path / "out"
    s = run_consensus(ConsensusConfig(project=project, out=out, method="majority", min_size=30))
    assert s["ok"] and s["n_images"] == 2 and s["experts"] == list(EXPERTS) and s["method"] == "majority"
    for image_id in IDS:
        masks = lab_masks(image_id, WINDOW)
        expected = majority_vote(masks)  # strict majority of 5: 3 votes
        assert expected.any() and not expected.all()
        np.testing.assert_array_equal(tifffile.imread(out / "masks" / f"{image_id}.tif") > 0, expected)
        labels = tifffile.imread(out / "labels" / f"{image_id}.tif")
        assert labels.dtype == np.uint16
        np.testing.assert_array_equal(labels > 0, label_objects(expected, min_size=30) > 0)
        record = fio.read_json(out / "per_image" / f"{image_id}.json")
        assert record["consensus_objects"] == labels.max() == len(rois.read_rois(out / "rois" / f"{image_id}.zip"))
        assert [r["expert"] for r in record["experts"]] == list(EXPERTS)
    # the input's calibration is on every TIFF of the calibrated image, none on the PNG's
    for sub in ("overlays", "masks", "labels"):
        assert fio.read_calibration(out / sub / "0001.tif") == {"spacing": (0.5, 0.5), "unit": "micron"}, sub
    assert fio.read_calibration(out / "overlays" / "0015.tif")["unit"] is None
    with open(out / "experts.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(IDS) * len(EXPERTS)


def test_staple_consensus_probability_is_staples_posterior(project, tmp_path):
    out = tmp_path / "out"
    run_consensus(ConsensusConfig(project=project, out=out, method="staple"))
    masks = lab_masks("0015", WINDOW)
    prob = tifffile.imread(out / "probability" / "0015.tif")
    np.testing.assert_allclose(prob, staple(masks).probability, atol=1e-6)
    np.testing.assert_array_equal(tifffile.imread(out / "masks" / "0015.tif") > 0, prob > 0.5)


def test_consensus_job_resumes_and_refuses_other_settings(project, tmp_path):
    out = tmp_path / "out"
    cfg = ConsensusConfig(project=project, out=out, method="majority")
    run_consensus(cfg)
    first = (out / "masks" / "0001.tif").stat().st_mtime_ns
    for sub, suffix in (("per_image", ".json"), ("masks", ".tif")):  # as if killed before 0015 was done
        (out / sub / f"0015{suffix}").unlink()
    s = run_consensus(cfg.model_copy(update={"resume": True}))
    assert s["n_images"] == 2 and (out / "masks" / "0015.tif").is_file()
    assert (out / "masks" / "0001.tif").stat().st_mtime_ns == first  # done earlier: not redone
    with pytest.raises(ValueError, match="other settings"):
        run_consensus(cfg.model_copy(update={"resume": True, "method": "staple"}))
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        run_consensus(cfg)
