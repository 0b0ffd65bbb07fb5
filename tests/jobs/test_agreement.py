"""The agreement job called directly (not through the CLI), on crops of the real lab-wue1 data with experts
who annotated different images."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from fiji_consensus import metrics
from fiji_consensus.config import AgreementConfig
from fiji_consensus.jobs import run_agreement

from _design_data import lab_masks, make_project  # noqa: I001

WINDOW = (slice(384, 512), slice(384, 512))
DESIGN = {"0001": ["expert_1", "expert_2", "expert_3"], "0015": ["expert_1", "expert_2"]}


def _pair(rows, a, b):
    return next(r for r in rows if (r["rater_a"], r["rater_b"]) == (a, b))


def test_pairs_are_scored_on_the_images_both_annotated(tmp_path):
    project = make_project(tmp_path / "proj", list(DESIGN), DESIGN, window=WINDOW)
    out = tmp_path / "out"
    s = run_agreement(AgreementConfig(project=project, out=out))
    assert s["ok"] and s["n_images"] == 2 and s["design"] == "experts annotated different images"
    assert s["annotated_by"] == {"expert_1": 2, "expert_2": 2, "expert_3": 1}
    m = {i: lab_masks(i, WINDOW) for i in DESIGN}  # (5, Y, X): expert_k is index k - 1
    both = [metrics.dice(m[i][0], m[i][1]) for i in DESIGN]
    p12 = _pair(s["pairwise"], "expert_1", "expert_2")
    assert p12["n_images"] == 2 and p12["dice"] == pytest.approx(np.mean(both))
    p13 = _pair(s["pairwise"], "expert_1", "expert_3")
    assert p13["n_images"] == 1 and p13["dice"] == pytest.approx(metrics.dice(m["0001"][0], m["0001"][2]))
    assert p13["cohen_kappa"] == pytest.approx(metrics.cohen_kappa(m["0001"][0], m["0001"][2]))
    # the same numbers in the files, and a symmetric matrix with 1 on the diagonal
    with open(out / "agreement.csv", encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert float(_pair(table, "expert_1", "expert_3")["dice"]) == pytest.approx(p13["dice"])
    with open(out / "agreement_matrix_dice.csv", encoding="utf-8", newline="") as fh:
        mat = {r["rater"]: r for r in csv.DictReader(fh)}
    assert float(mat["expert_3"]["expert_1"]) == float(mat["expert_1"]["expert_3"]) == pytest.approx(p13["dice"])
    assert float(mat["expert_2"]["expert_2"]) == 1.0
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        run_agreement(AgreementConfig(project=project, out=out))


def test_experts_against_a_reference(tmp_path):
    import imageio.v3 as iio

    project = make_project(tmp_path / "proj", list(DESIGN), window=WINDOW)
    ref = tmp_path / "ref"
    ref.mkdir()
    m = {i: lab_masks(i, WINDOW) for i in DESIGN}  # (5, Y, X): expert_k is index k - 1
    for i in DESIGN:  # expert_5's masks as the reference: expert_5 scores Dice 1 against it
        iio.imwrite(ref / f"{i}.png", m[i][4].astype(np.uint8) * 255)
    s = run_agreement(AgreementConfig(project=project, reference=ref))
    scores = {r["expert"]: r for r in s["vs_reference"]}
    assert scores["expert_5"]["dice"] == pytest.approx(1.0)
    d = [metrics.dice(m[i][4], m[i][0]) for i in DESIGN]
    assert scores["expert_1"]["dice"] == pytest.approx(np.mean(d)) and scores["expert_1"]["dice"] < 1
