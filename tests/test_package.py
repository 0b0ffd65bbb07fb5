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


def test_wheel_works_without_the_source_tree(tmp_path):
    """The wheel carries what its commands need: unpacked away from the source tree (and run from a folder
    with no model_zoo/), `zoo list` says how to get the zoo's models, finds them through FIJI_CONSENSUS_ZOO,
    and `fiji install-macros` installs the macros. .ci/run also installs it into a clean venv and runs the
    demo there."""
    import json
    import os
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(repo)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = dist.glob("fiji_consensus-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "site")
    assert any(n.startswith("fiji_consensus/macros/") and n.endswith(".ijm") for n in names)
    assert "fiji_consensus/data/segebarth2020_wue1/images/0001.png" in names
    assert not [n for n in names if n.startswith(("tests/", "model_zoo/", "data/"))]
    assert wheel.stat().st_size < 10e6, "the wheel should not carry the zoo's packages"

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    env.pop("FIJI_CONSENSUS_ZOO", None)

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fiji_consensus", *args], capture_output=True, text=True,
                              cwd=work, env={**env, **extra})

    where = subprocess.run([sys.executable, "-c", "import fiji_consensus; print(fiji_consensus.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env).stdout.strip()
    assert where.startswith(str(tmp_path / "site")), where  # the unpacked wheel, not the source tree
    p = cli("zoo", "list")
    assert p.returncode == 0 and "FIJI_CONSENSUS_ZOO" in p.stdout, p.stdout + p.stderr
    p = cli("zoo", "list", "--json", FIJI_CONSENSUS_ZOO=str(repo / "model_zoo"))
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and "cfos-wue1" in {m["name"] for m in res["models"]}, p.stdout + p.stderr
    p = cli("zoo", "list", FIJI_CONSENSUS_ZOO=str(tmp_path / "nowhere"))
    assert p.returncode != 0 and "nowhere" in p.stderr + p.stdout
    fiji_dir = tmp_path / "Fiji.app"
    (fiji_dir / "plugins").mkdir(parents=True)
    (fiji_dir / "macros").mkdir()
    p = cli("fiji", "install-macros", str(fiji_dir), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert list((fiji_dir / "plugins").rglob("*.ijm")) and list((fiji_dir / "macros" / "toolsets").glob("*.ijm"))
