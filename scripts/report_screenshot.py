"""README picture of the evaluation report: render a report.html in headless Chromium and save a screenshot.

    python scripts/report_screenshot.py                       # report of the bundled sample (experts only)
    python scripts/report_screenshot.py --report OUT/report.html --out docs/report_screenshot.png

Needs Debian's ``chromium`` (scripts/install-system-deps.sh installs it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars"]


def sample_report(folder: Path) -> Path:
    from fiji_consensus import datasets
    from fiji_consensus.config import EvaluateConfig
    from fiji_consensus.evaluate_job import run_evaluate

    s = datasets.load_sample()
    run_evaluate(EvaluateConfig(
        images=s.images_dir, experts=s.expert_dirs, min_size=datasets.SAMPLE_MIN_SIZE, out=folder,
        note="Bundled sample: 5 lab-wue1 images of Segebarth et al. 2020, five experts, no model.",
    ))
    return folder / "report.html"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, help="report.html to render (default: make one of the bundled sample)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "report_screenshot.png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1500)
    a = ap.parse_args(argv)
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        report = a.report or sample_report(Path(tmp) / "eval")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([exe, *FLAGS, f"--window-size={a.width},{a.height}", f"--screenshot={a.out.resolve()}",
                               report.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not a.out.is_file():
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
