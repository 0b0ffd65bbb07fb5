"""Faults of the consensus and agreement commands (issue 17), each tried on real lab-wue1 crops."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from fiji_consensus.cli import main

EMPTY = (slice(0, 128), slice(256, 384))  # a field of lab-wue1 0062 in which no expert marked anything
CELLS = (slice(384, 640), slice(384, 640))


def _project(tmp_path: Path, ids=("0062",), window=EMPTY, design=None) -> Path:
    from _design_data import make_project

    return make_project(tmp_path / "p", list(ids), design, window=window)


def _cli(argv, capsys) -> tuple[int, dict | None, str]:
    code = main([*argv, "--no-progress", "--json"])
    cap = capsys.readouterr()
    line = cap.out.strip().splitlines()
    return code, (json.loads(line[-1]) if line else None), cap.err


def test_every_expert_marks_nothing(tmp_path: Path, capsys, shared_data: Path) -> None:
    """An empty field of view is a normal image: consensus, summary.json and --resume work."""
    from _design_data import lab_masks

    assert not lab_masks("0062", EMPTY).any()
    proj = _project(tmp_path, ids=("0062", "0001"))  # the empty crop and one more image (its crop of cells)
    out = tmp_path / "c"
    for method in ("staple", "majority", "objects"):
        o = out / method
        code, res, err = _cli(["consensus", "--project", str(proj), "--out", str(o), "--method", method], capsys)
        assert code == 0, err
        assert (o / "summary.json").is_file() and res["n_images"] == 2
        assert not (o.joinpath("masks", "0062.tif").exists() and
                    __import__("tifffile").imread(o / "masks" / "0062.tif").any())
    # a killed run (one image done, no summary) resumes to the same summary
    o = out / "staple"
    before = json.loads((o / "summary.json").read_text())
    (o / "summary.json").unlink()
    (o / "per_image" / "0062.json").unlink()
    code, res, err = _cli(["consensus", "--project", str(proj), "--out", str(o), "--resume"], capsys)
    assert code == 0, err
    after = json.loads((o / "summary.json").read_text())
    assert after["expert_scores"] == before["expert_scores"] and after["n_images"] == 2
    # only-empty images, too (the whole project): sensitivities are NaN, nothing fails
    proj2 = _project(tmp_path / "only", ids=("0062",))
    code, res, err = _cli(["consensus", "--project", str(proj2), "--out", str(tmp_path / "e")], capsys)
    assert code == 0, err
    assert res["mean_consensus_objects"] == 0


def test_overwrite_clears_the_previous_outputs(tmp_path: Path, capsys, shared_data: Path) -> None:
    proj = _project(tmp_path, ids=("0001", "0004"), window=CELLS)
    out = tmp_path / "c"
    assert _cli(["consensus", "--project", str(proj), "--out", str(out)], capsys)[0] == 0
    assert (out / "probability" / "0004.tif").is_file()
    # majority with --overwrite: no STAPLE probability maps left beside the new majority masks
    assert _cli(["consensus", "--project", str(proj), "--out", str(out), "--method", "majority",
                 "--overwrite"], capsys)[0] == 0
    assert not (out / "probability").exists()
    # an image no longer given: its masks, rois, overlays and per-image record go
    for d in ("images",):
        (proj / d / "0004.png").unlink()
    for e in (proj / "annotations").iterdir():
        (e / "0004.png").unlink()
    assert _cli(["consensus", "--project", str(proj), "--out", str(out), "--overwrite"], capsys)[0] == 0
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*0004*"))
    assert left == [], left
    # a user's own file in the output folder is never removed: the command refuses the folder instead
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, _, err = _cli(["consensus", "--project", str(proj), "--out", str(mine), "--overwrite"], capsys)
    assert code == 1 and (mine / "notes.txt").read_text() == "mine"


def test_failed_run_leaves_nothing_that_blocks_the_rerun(tmp_path: Path, capsys, shared_data: Path) -> None:
    proj = _project(tmp_path, ids=("0001", "0004"), window=CELLS)
    bad = proj / "annotations" / "expert_2" / "0001.png"
    good = bad.read_bytes()
    bad.write_bytes(b"not a png")
    out = tmp_path / "c"
    code, _, err = _cli(["consensus", "--project", str(proj), "--out", str(out)], capsys)
    assert code == 1 and "0001" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not (out / "config.json").exists()
    bad.write_bytes(good)  # the corrected rerun needs neither --overwrite nor --resume
    code, res, err = _cli(["consensus", "--project", str(proj), "--out", str(out)], capsys)
    assert code == 0, err
    # with missing raters the pooled fit reads every image first: a bad file fails before any output
    (proj / "annotations" / "expert_5" / "0004.png").unlink()
    bad.write_bytes(b"not a png")
    code, _, err = _cli(["consensus", "--project", str(proj), "--out", str(tmp_path / "d")], capsys)
    assert code == 1 and not (tmp_path / "d").exists()


def test_agreement_never_suggests_resume(tmp_path: Path, capsys, monkeypatch, shared_data: Path) -> None:
    proj = _project(tmp_path, ids=("0001",), window=CELLS)
    out = tmp_path / "a"
    assert _cli(["agreement", "--project", str(proj), "--out", str(out)], capsys)[0] == 0
    code, _, err = _cli(["agreement", "--project", str(proj), "--out", str(out)], capsys)
    assert code == 1 and "--overwrite" in err and "--resume" not in err
    import fiji_consensus.jobs as jobs

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "run_agreement", interrupted)
    code, _, err = _cli(["agreement", "--project", str(proj)], capsys)
    assert code == 130 and "--resume" not in err and "rerun" in err
    # consensus does have --resume: its hint keeps it
    code, _, err = _cli(["consensus", "--project", str(proj), "--out", str(out)], capsys)
    assert code == 1 and "--resume" not in err  # the agreement's folder is not the consensus's to write


def test_agreement_all_empty_masks_no_warning(tmp_path: Path, capsys, shared_data: Path) -> None:
    proj = _project(tmp_path, ids=("0062",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, res, err = _cli(["agreement", "--project", str(proj)], capsys)
    assert code == 0, err
    assert "RuntimeWarning" not in err and res["mean_fleiss_kappa"] is None


def test_staple_on_uint8_masks_is_the_bool_result_without_a_sort(monkeypatch, shared_data: Path) -> None:
    """0/1 and 0/255 uint8 masks are checked without np.unique (the 3.5x cost) and give the bool result."""
    from _design_data import lab_masks

    from fiji_consensus import _validate
    from fiji_consensus.consensus import staple

    m = lab_masks("0001")
    want = staple(m)

    def no_unique(*a, **k):
        raise AssertionError("np.unique called on a 0/1 mask stack")

    monkeypatch.setattr(_validate.np, "unique", no_unique)
    for arr in (m.astype(np.uint8), m.astype(np.uint8) * 255):
        got = staple(arr)
        np.testing.assert_array_equal(got.probability, want.probability)
    monkeypatch.undo()
    bad = m.astype(np.uint8)
    bad[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"must be binary \(0/1, 0/255 or bool\); got 3 distinct values"):
        staple(bad)


def test_killed_consensus_leaves_nothing_half_done(tmp_path: Path, capsys, monkeypatch, shared_data: Path) -> None:
    """A kill while an image's outputs are moved into place: no probability map without its marker remains
    looking finished after the resume, and no temporary .part file is left."""
    from fiji_consensus import _atomic

    proj = _project(tmp_path, ids=("0001", "0004"), window=CELLS)
    out = tmp_path / "c"
    real = _atomic.commit_staged
    calls = {"n": 0}

    def killed_midway(pairs):
        calls["n"] += 1
        if calls["n"] == 2:  # second image: move its probability map, then die
            real([p for p in pairs if p[1].parent.name == "probability"])
            raise KeyboardInterrupt
        real(pairs)

    monkeypatch.setattr(_atomic, "commit_staged", killed_midway)
    code, _, err = _cli(["consensus", "--project", str(proj), "--out", str(out)], capsys)
    assert code == 130 and "--resume" in err
    assert (out / "per_image" / "0001.json").is_file() and not (out / "per_image" / "0004.json").exists()
    assert (out / "probability" / "0004.tif").is_file()  # what the kill left, as the issue describes
    monkeypatch.setattr(_atomic, "commit_staged", real)
    code, res, err = _cli(["consensus", "--project", str(proj), "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert not list(out.rglob("*.part"))
    for d in ("masks", "probability", "labels", "rois", "overlays", "per_image"):
        assert len(list((out / d).iterdir())) == 2, d
