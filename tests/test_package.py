"""Package-level contracts: cheap import, layered imports, config round trip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fiji_consensus.config import AgreementConfig, ConsensusConfig

HEAVY = ["torch", "jpype", "scyjava", "imagej", "bioimageio", "dask", "tensorflow", "keras"]


def test_import_does_not_pull_heavy_dependencies():
    code = (
        "import sys, fiji_consensus\n"
        "from fiji_consensus import consensus, matching, metrics, rois, io, config, datasets, jobs, cli\n"
        "from fiji_consensus import tiling, uncertainty, instances, predict, fiji, keras\n"
        "from fiji_consensus.keras import export, member\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"importing fiji_consensus loaded {proc.stdout.strip()}"


def test_import_contracts():
    """The module map of GUIDE.md, checked by import-linter (contracts in pyproject.toml)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports not found: install the test extra (pip install -e '.[test]')")
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_json_round_trip_and_forbids_unknown_fields():
    cfg = ConsensusConfig(images="i", experts=["a", "b"], out="o", method="majority", min_votes=2)
    assert ConsensusConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValueError, match="extra"):
        ConsensusConfig(images="i", experts=["a", "b"], out="o", colour="red")
    with pytest.raises(ValueError, match="either a project folder"):
        AgreementConfig(experts=["a"])
    with pytest.raises(ValueError, match="not both"):
        AgreementConfig(project="p", images="i", experts=["a"])
    with pytest.raises(ValueError, match="name every expert"):
        AgreementConfig(images="i", experts=["a", "b"], expert_names=["x"])


def test_cli_help_for_every_command():
    for cmd in ([], ["consensus"], ["agreement"], ["demo"], ["fiji", "install-macros"]):
        proc = subprocess.run([sys.executable, "-m", "fiji_consensus", *cmd, "--help"],
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "usage: fiji-consensus" in proc.stdout
