"""Macro install and the model summary (fiji/macros.py, no Java): the files written, the CLI's
``fiji`` commands naming themselves, what Train Ensemble shows at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fiji_consensus import fiji


def test_install_macros(tmp_path):
    app = tmp_path / "Fiji.app"
    (app / "jars").mkdir(parents=True)
    written = fiji.install_macros(app)
    names = sorted(p.name for p in written)
    assert names == sorted([*fiji.MACROS, "Fiji Consensus.ijm"])
    helpers = fiji.macro_files()[fiji.HELPERS].read_text("ascii")
    for name in fiji.MACROS:
        installed = (app / "plugins" / "Fiji_Consensus" / name).read_text("ascii")
        assert installed == fiji.macro_text(name) and installed.endswith(helpers)  # helpers appended, once
        assert installed.count("function fcPython()") == 1
    assert not (app / "plugins" / "Fiji_Consensus" / fiji.HELPERS).exists()
    assert (app / "macros" / "toolsets" / "Fiji Consensus.ijm").read_bytes() == \
        fiji.macro_files()[fiji.TOOLSET].read_bytes()
    assert fiji.install_macros(app) == []  # identical files are left alone
    target = app / "plugins" / "Fiji_Consensus" / "Compute_Consensus.ijm"
    target.write_text("// edited by the user\n")
    with pytest.raises(FileExistsError, match="Compute_Consensus.ijm"):
        fiji.install_macros(app)
    assert target.read_text() == "// edited by the user\n"
    assert fiji.install_macros(app, overwrite=True) == [target]
    with pytest.raises(ValueError, match="Fiji.app or ImageJ folder"):
        fiji.install_macros(tmp_path / "empty")


def test_fiji_commands_name_themselves_in_json_and_errors(tmp_path):
    """Issue 16, bug 8: ``install-macros --json`` reported ``"command": "fiji"`` on failure."""
    r = subprocess.run([sys.executable, "-m", "fiji_consensus", "fiji", "install-macros", str(tmp_path / "nope"),
                        "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["ok"] is False and res["command"] == "fiji install-macros" and "nope" in res["error"]
    assert "fiji-consensus fiji install-macros: error:" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fiji_consensus", "fiji", "model-summary", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=120)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["command"] == "fiji model-summary" and "ensemble.json" in res["error"]


def test_model_summary_puts_validation_next_to_the_experts_and_warns(tmp_path):
    """What Train Ensemble shows at the end (issue 16): a model far below the experts is called useless."""
    def write(f1s, dices, experts):
        meta = {"members": [{"val_roi_f1": f, "val_dice": d, "val_ids": ["a", "b"]} for f, d in zip(f1s, dices)],
                "provenance": {"expert_roi_f1": experts}}
        (tmp_path / "ensemble.json").write_text(json.dumps(meta))
        return fiji.model_summary(tmp_path)

    experts = {"a": {"e1": 0.8, "e2": 0.7}, "b": {"e1": 0.9, "e2": 0.6}, "c": {"e1": 0.0}}  # c: not validated
    good = write([0.7, 0.74], [0.8, 0.8], experts)
    assert good["val_roi_f1"] == 0.72 and good["expert_roi_f1"] == 0.75 and good["useless"] is False
    assert "ROI-F1 0.720" in good["text"] and "0.750" in good["text"] and "WARNING" not in good["text"]
    bad = write([0.007], [0.01], experts)
    assert bad["useless"] is True and "WARNING: this model is not useful yet" in bad["text"]
    assert write([0.3], [0.5], experts)["useless"] is True  # below half the experts' ROI-F1
    none = write([None], [None], {})
    assert none["val_roi_f1"] is None and none["useless"] is False and "n/a" in none["text"]
    assert "Calibrated" not in good["text"]
    # a calibrated model says which thresholds it was given, and that its validation is at the training one
    meta = json.loads((tmp_path / "ensemble.json").read_text())
    meta.update(threshold=0.2, object_threshold=0.95, provenance={**meta["provenance"], "calibrations": [
        {"images": ["a", "b"], "previous_threshold": 0.5, "roi_f1": 0.81},
        {"images": ["a", "b", "c"], "previous_threshold": 0.3, "roi_f1": 0.8234}]})
    (tmp_path / "ensemble.json").write_text(json.dumps(meta))
    text = fiji.model_summary(tmp_path)["text"]
    assert ("Calibrated on 3 annotated image(s): threshold 0.2, object threshold 0.95 (ROI-F1 on those images "
            "0.823; the validation above is at the threshold 0.5 it was trained with)") in text
    with pytest.raises(ValueError, match="ensemble.json"):
        fiji.model_summary(tmp_path / "nope")
