"""What the tests of the Java door share: the repository, the sample crop, a Python subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CROP = ("0015", slice(128, 320), slice(128, 320))  # 192 x 192, ~25 objects per expert


def _run_py(code: str, *, env: dict | None = None, timeout: int = 60, display: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", textwrap.dedent(code)]
    if display:
        cmd = ["xvfb-run", "-a", *cmd]
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if not display:
        e.pop("DISPLAY", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
