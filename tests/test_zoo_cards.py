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
