"""The zoo model cards show the leave-one-lab-out scores that the committed crossval tables hold."""

from __future__ import annotations

import csv
import importlib.util
import statistics
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parents[1] / "model_zoo"


def _recipe():
    spec = importlib.util.spec_from_file_location("cfos_3labs_build", ZOO / "cfos-3labs" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_crossval_tables_show_every_image_and_the_csv_means(tmp_path):
    recipe = _recipe()
    for path, what in recipe.CROSSVAL:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        text = recipe.crossval_tables(path, what)
        for lab in {r["lab"] for r in rows}:
            block = text.split(f"**{lab} left out**")[1].split("**")[0]
            model = [r for r in rows if r["lab"] == lab and r["kind"] == "model"]
            lines = [ln for ln in block.splitlines() if ln.startswith("| ") and not ln.startswith("| image")]
            assert sorted(ln.split(" | ")[0][2:] for ln in lines[:-1]) == sorted(r["image"] for r in model)
            mean = statistics.fmean(float(r["roi_f1"]) for r in model)
            assert lines[-1].startswith(f"| mean | {mean:.3f} |")
            passes = sum(r["passes_paper_rule"] == "True" for r in model)
            assert f"holds on {passes}/{len(model)} images" in block
    # the card shipped next to the package was made with these tables
    card = (ZOO / "cfos-3labs" / "README.md").read_text(encoding="utf-8")
    for path, what in recipe.CROSSVAL:
        assert recipe.crossval_tables(path, what) in card
    empty = tmp_path / "crossval.csv"
    empty.write_text("lab,image,rater,kind,roi_f1\n")
    with pytest.raises(ValueError, match="no rows; expected a crossval.csv"):
        recipe.crossval_tables(empty, "x")


def test_run_package_removes_its_temporary_folder(tmp_path):
    """The recipes' package step removes the folder of its temporary inputs (card notes, a copied zip), also
    when the package command fails."""
    import sys

    run_package = _recipe()._WUE1.run_package
    for code in (0, 3):
        tmp = tmp_path / f"tmp{code}"
        tmp.mkdir()
        (tmp / "notes.md").write_text("x")
        cmd = [sys.executable, "-c", f"import sys; print('{{\"ok\": false}}'); sys.exit({code})"]
        returncode, summary = run_package(cmd, tmp_path / "x.zip", tmp=tmp, test=False)
        assert (returncode, summary) == (code, {"ok": False}) and not tmp.exists()


def _meta(labs: dict[str, list[str]] | None) -> dict:
    ids = sorted(i for v in labs.values() for i in v) if labs else ["0001", "0004"]
    prov = {"recipe": "r.py", "experts": ["expert_1", "expert_2"], "image_ids": ids}
    if labs:  # what multi-lab training records (jobs.train: `targets`, `data`; nn._run: `labs`, lab -> ids)
        prov.update(targets="fraction of each lab's own experts", data="data/segebarth2020 (3 labs)", labs=labs)
    else:  # what single-lab training records
        prov.update(consensus="STAPLE > 0.5 of 2 experts", source="data/x", lab="lab-wue1")
    return {"provenance": prov, "members": [{"index": 0, "seed": 1, "val_dice": 0.8, "val_roi_f1": 0.7}]}


def test_card_of_a_multi_lab_model_names_its_labs_targets_and_source():
    from fiji_consensus.zoo import ensemble_from_package
    from fiji_consensus.zoo.card import model_card

    # the shipped multi-lab model's own metadata (what `package --model cfos-3labs.zip` reads)
    shipped = model_card(ensemble_from_package(ZOO / "cfos-3labs" / "cfos-3labs.zip").metadata, name="m",
                         measure="entropy", views=["identity"])
    assert "* Training images: 46 (lab-inns1: 5, lab-mue: 5, lab-wue1: 36)" in shipped

    labs = {"lab-b": ["b/1"], "lab-a": ["a/1", "a/2"]}
    card = model_card(_meta(labs), name="m", measure="entropy", views=["identity"])
    assert "* Training images: 3 (lab-a: 2, lab-b: 1)" in card
    assert "* Training targets (consensus): fraction of each lab's own experts." in card
    assert "* Source: data/segebarth2020 (3 labs);" in card
    assert "held-out images of the training labs (Dice and ROI-F1 of Segebarth et al. 2020 against each lab's own " \
           "consensus):" in card
    assert "No held-out-lab scores were given" in card
    # hand-written leave-one-lab-out scores replace the "none given" line
    noted = model_card(_meta(labs), name="m", measure="entropy", views=["identity"],
                       notes={"Validation": "Leave-one-lab-out: see the table."})
    assert "No held-out-lab scores were given" not in noted and "Leave-one-lab-out: see the table." in noted
    single = model_card(_meta(None), name="m", measure="entropy", views=["identity"])
    assert "* Training images: 2 (lab-wue1)" in single and "held-out images of the training lab (Dice and ROI-F1 of Segebarth et al. 2020 against the consensus):" in single
    assert "* Training targets (consensus): STAPLE > 0.5 of 2 experts." in single
    assert "* Source: data/x;" in single
