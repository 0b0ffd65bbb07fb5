"""Shared fixtures: paths to the real Segebarth data and the bundled sample."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FIJI_CONSENSUS_DATA", REPO / "data" / "segebarth2020"))
"""The three Segebarth labs, carried by the repository (data/segebarth2020, Apache-2.0)."""
IJ_JAR_CANDIDATES = [os.environ.get("IJ_JAR", ""), "/usr/share/java/ij.jar"]


def find_ij_jar() -> str | None:
    for c in IJ_JAR_CANDIDATES:
        if c and Path(c).is_file():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"the Segebarth data is not at {SHARED_DATA}: it ships in the repository's data/segebarth2020 "
            "(or set FIJI_CONSENSUS_DATA to a segebarth2020 folder)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def ij_jar() -> str:
    jar = find_ij_jar()
    if jar is None:
        pytest.fail("ij.jar not found: install Debian's libij-java (make test does) or set IJ_JAR")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("no Java found: install a JDK (Java 17)")
    return jar
