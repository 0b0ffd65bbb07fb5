"""Annotation plans: targets reached, every pair of experts overlapping, uncertain images first; plan next."""

from __future__ import annotations

import csv
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from fiji_consensus.cli import main
from fiji_consensus.plan import make_plan, pair_overlap

EXPERTS = ["ann", "ben", "cai", "dev", "eve"]


@pytest.mark.parametrize("target", [2, 3, 4])
def test_plan_reaches_target_keeps_pairs_overlapping_uncertain_first(target: int) -> None:
    rng = np.random.default_rng(0)
    ids = [f"{k:04d}" for k in range(36)]
    prio = dict(zip(ids, rng.random(36).tolist()))
    plan = make_plan(ids, EXPERTS, priority=prio, target=target)
    assert all(len(r) == target for r in plan.raters.values()) and not plan.short
    assert len(plan.rows) == 36 * target
    assert plan.pairs_without_overlap == [] and min(pair_overlap(plan.raters, EXPERTS).values()) >= 1
    # images appear in order of decreasing uncertainty
    first_seen = list(dict.fromkeys(r["image"] for r in plan.rows))
    assert first_seen == sorted(ids, key=lambda i: -prio[i])
    # balanced load: no expert gets more than one annotation above another
    per = plan.per_expert()
    assert max(per.values()) - min(per.values()) <= 1, per
    assert [r["order"] for r in plan.rows] == list(range(1, len(plan.rows) + 1))


def test_plan_budget_existing_annotations_and_errors() -> None:
    ids = ["a", "b", "c", "d"]
    done = {"a": ["ann", "ben"], "b": ["ann"]}
    plan = make_plan(ids, EXPERTS[:3], annotated=done, priority={"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.2}, target=3,
                     budget=4)
    assert len(plan.rows) == 4
    assert [r["image"] for r in plan.rows] == ["a", "c", "c", "c"]  # a needs one more; then the next most uncertain
    assert plan.rows[0]["expert"] == "cai" and plan.short == ["d", "b"]
    # images never annotated twice have no disagreement yet: they come first
    plan = make_plan(ids, EXPERTS[:3], annotated=done, priority={"a": 0.3, "c": 0.9}, target=2)
    assert [r["image"] for r in plan.rows][:1] == ["b"]
    with pytest.raises(ValueError, match=r"target must be an integer between 2 and the number of experts \(3\); got 4"):
        make_plan(ids, EXPERTS[:3], target=4)
    with pytest.raises(ValueError, match="at least 2 experts"):
        make_plan(ids, ["ann"], target=2)
    with pytest.raises(ValueError, match="not in the project: zz"):
        make_plan(ids, EXPERTS, annotated={"zz": ["ann"]})


def _cli(argv, capsys):
    code = main([*argv, "--json", "--no-progress"])
    cap = capsys.readouterr()
    return code, json.loads(cap.out.strip().splitlines()[-1]), cap.err


def test_plan_command_on_real_project_and_plan_next(tmp_path: Path, capsys, shared_data: Path) -> None:
    """A lab-wue1 project in which two images have been annotated by some experts; the model's QA scores rank."""
    from _design_data import make_project

    ids = ["0001", "0004", "0006", "0007", "0008", "0011", "0015", "0062"]
    design = {i: [] for i in ids}
    design["0001"] = ["expert_1", "expert_2"]
    design["0004"] = ["expert_3"]
    proj = make_project(tmp_path / "p", ids, design, window=(slice(384, 512), slice(384, 512)))
    preds = tmp_path / "pred"
    preds.mkdir()
    qa = dict(zip(ids, [0.05, 0.2, 0.9, 0.1, 0.7, 0.3, 0.6, 0.4]))
    with open(preds / "images.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "image", "qa_score"])
        for k, i in enumerate(sorted(ids, key=lambda i: -qa[i])):
            w.writerow([k + 1, i, qa[i]])
    experts = ["expert_1", "expert_2", "expert_3", "expert_4", "expert_5"]
    code, s, err = _cli(["plan", "--project", str(proj), "--experts", *experts, "--target", "3",
                         "--predictions", str(preds)], capsys)
    assert code == 0, err
    assert s["images_at_target"] == 8 and s["pairs_without_overlap"] == [] and s["priority"] == "model QA score"
    assert s["annotations_existing"] == 3 and s["annotations_planned"] == 8 * 3 - 3
    rows = list(csv.DictReader(open(proj / "plan" / "plan.csv")))
    assert list(rows[0]) == ["order", "image", "expert", "reason", "priority"]
    assert list(dict.fromkeys(r["image"] for r in rows)) == sorted(ids, key=lambda i: -qa[i])
    assert not any(r["image"] == "0001" and r["expert"] in ("expert_1", "expert_2") for r in rows)
    # a second plan needs --overwrite
    code, _, err = _cli(["plan", "--project", str(proj)], capsys)
    assert code == 1 and "--overwrite" in err
    # plan next: the expert's first planned image, then the next once it is annotated
    e = rows[0]["expert"]
    mine = [r["image"] for r in rows if r["expert"] == e]
    code, nxt, err = _cli(["plan", "next", "--project", str(proj), "--expert", e], capsys)
    assert code == 0, err
    assert nxt["image"] == mine[0] and nxt["remaining"] == len(mine)
    assert Path(nxt["path"]).is_absolute() and Path(nxt["path"]).is_file() and Path(nxt["path"]).stem == mine[0]
    (proj / "annotations" / e).mkdir(parents=True, exist_ok=True)
    (proj / "annotations" / e / f"{mine[0]}.png").write_bytes((proj / "images" / f"{mine[0]}.png").read_bytes())
    code, nxt, err = _cli(["plan", "next", "--project", str(proj), "--expert", e], capsys)
    assert nxt["image"] == mine[1] and nxt["remaining"] == len(mine) - 1
    code, nxt, err = _cli(["plan", "next", "--project", str(proj), "--expert", "nobody"], capsys)
    assert code == 0 and nxt["image"] is None and nxt["remaining"] == 0
    # without a plan: one clear line
    code, res, err = _cli(["plan", "next", "--project", str(tmp_path / "p2"), "--expert", e], capsys)
    assert code == 1 and "no annotation plan" in res["error"]


def test_plan_by_disagreement_and_budget(tmp_path: Path, capsys, shared_data: Path) -> None:
    """Without a model: the image the experts disagree on most (of those with 2+ annotations) comes first."""
    from _design_data import lab_masks, make_project

    from fiji_consensus import metrics

    ids = ["0001", "0004", "0006", "0007"]
    design = {i: ["expert_1", "expert_2", "expert_3"] for i in ids}
    window = (slice(384, 640), slice(384, 640))
    proj = make_project(tmp_path / "p", ids, design, window=window)
    dis = {}
    for i in ids:
        m = lab_masks(i, window)[:3]
        d = np.array([metrics.dice(m[a], m[b]) for a, b in combinations(range(3), 2)], dtype=float)
        dis[i] = 1 - d[np.isfinite(d)].mean() if np.isfinite(d).any() else 0.0
    code, s, err = _cli(["plan", "--project", str(proj), "--experts", "expert_1", "expert_2", "expert_3",
                         "expert_4", "expert_5", "--target", "4", "--budget", "2"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(proj / "plan" / "plan.csv")))
    assert len(rows) == 2 and s["priority"].startswith("expert disagreement")
    worst = max(ids, key=lambda i: dis[i])
    assert rows[0]["image"] == worst and float(rows[0]["priority"]) == pytest.approx(dis[worst], abs=1e-5)
    assert {rows[0]["expert"], rows[1]["expert"]} <= {"expert_4", "expert_5"}
