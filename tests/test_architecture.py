"""ARCHITECTURE.md names every module of the package, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fiji_consensus"


def _rows() -> list[str]:
    return [line for line in (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| `")]


def _named(row: str) -> tuple[list[str], str]:
    """The modules or packages a table row is about (its first cell) and the whole row."""
    first = row.split("|")[1]
    return re.findall(r"`([^`]+)`", first), row


def test_every_module_is_on_the_map():
    rows = [_named(r) for r in _rows()]
    missing = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG)
        if len(rel.parts) == 1:
            ok = any(rel.name in names for names, _ in rows)
        else:  # a package's module: named in the package's row
            pkg = rel.parts[0] + "/"
            ok = any(pkg in names and (rel.name == "__init__.py" or f"`{rel.name}`" in row) for names, row in rows)
        if not ok:
            missing.append(str(rel))
    assert not missing, f"modules not on the map of ARCHITECTURE.md: {missing}"


def test_the_map_names_only_what_exists():
    names = [n for r in _rows() for n in _named(r)[0]]
    assert len(names) > 30
    gone = [n for n in names if not ((PKG / n).exists() or (ROOT / n).exists())]
    assert not gone, f"ARCHITECTURE.md names what is not in the tree: {gone}"
    for names_, row in (_named(r) for r in _rows()):
        for pkg in (n for n in names_ if n.endswith("/") and (PKG / n).is_dir()):
            listed = set(re.findall(r"`([A-Za-z_0-9]+\.py)`", row.split("|", 2)[2]))
            absent = sorted(m for m in listed if not (PKG / pkg / m).is_file())
            assert not absent, f"ARCHITECTURE.md lists {absent} in {pkg}, which has no such module"
