"""The HTML report: self-contained, and every figure loads in a real headless Chromium."""

from __future__ import annotations

import re

import imageio.v3 as iio
import numpy as np
import pytest

from fiji_consensus import evaluate_job as J
from fiji_consensus.config import EvaluateConfig
from fiji_consensus.report import write_report

from _eval_data import chromium, make_project, run_chromium

NOTE = "groups a/b stand in for conditions <script>alert(1)</script>"


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_project")
    p = make_project(root)
    cfg = EvaluateConfig(
        project=p["root"], min_size=30, models={k: str(v) for k, v in p["models"].items()},
        strategies={"seeds": ["soft", "soft_seed1"]}, groups=p["root"] / "groups.csv", control="a",
        note=NOTE, out=root / "eval",
    )
    ev = J.evaluate(cfg)
    return ev, root / "eval" / "report.html"


def _dom_marker(html_path):
    proc = run_chromium(["--virtual-time-budget=2000", "--dump-dom", html_path.resolve().as_uri()])
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-figures-loaded="(\d+)/(\d+)"', proc.stdout)
    assert m, "the page's load script did not run: " + proc.stdout[:500]
    return int(m.group(1)), int(m.group(2))


def test_report_is_self_contained_and_readable(evaluation):
    ev, path = evaluation
    text = path.read_text(encoding="utf-8")
    # no network: every src/href is an embedded data URI or an in-page anchor; no CSS url(), no http(s)
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", text)
    assert refs and all(r.startswith("data:image/png;base64,") or r.startswith("#") for r in refs)
    assert "http://" not in text and "https://" not in text and "url(" not in text
    n_img = text.count("<img ")
    assert n_img == 7  # agreement, STAPLE, objectivity, example, uncertainty, counts, effect sizes
    for section in ("Objectivity", "Uncertainty vs expert disagreement", "Validity", "Reliability", "Provenance"):
        assert f"<h2>{section}" in text
    # the note is shown, escaped (no script injection)
    assert "groups a/b stand in for conditions &lt;script&gt;" in text and "<script>alert" not in text
    # the summary names each model's place among the experts and the selection rule
    assert "<b>copy_e2</b>" in text and "selection rule" in text and "<b>empty</b>" in text
    assert f"fiji-consensus {ev.provenance['version']}" in text
    with pytest.raises(FileExistsError):
        write_report(ev, path)


def test_report_renders_in_headless_chromium(evaluation, tmp_path):
    if chromium() is None:
        pytest.fail("chromium not found: apt-get install chromium (make test installs it)")
    ev, path = evaluation
    n_img = path.read_text(encoding="utf-8").count("<img ")
    loaded, total = _dom_marker(path)
    assert (loaded, total) == (n_img, n_img)
    # the check can fail: a page with one broken figure reports it
    broken = tmp_path / "broken.html"
    text = path.read_text(encoding="utf-8")
    i = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken.write_text(text[:i] + "AAAA" + text[i + 200:], encoding="utf-8")
    assert _dom_marker(broken) == (n_img - 1, n_img)
    # a screenshot of the top of the page: the heat map and the tables are drawn
    shot = tmp_path / "report.png"
    proc = run_chromium(["--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={shot}",
                         path.resolve().as_uri()])
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = iio.imread(shot)[..., :3].astype(int)
    assert img.shape[:2] == (2000, 1280)
    not_white = np.any(img < 235, axis=-1).mean()
    assert not_white > 0.1
    # viridis colours of the agreement heat map (dark blue-green to yellow) are on screen
    yellowish = (img[..., 0] > 200) & (img[..., 1] > 200) & (img[..., 2] < 80)
    tealish = (img[..., 0] < 80) & (img[..., 1] > 100) & (img[..., 2] > 100)
    assert yellowish.sum() > 500 and tealish.sum() > 500
