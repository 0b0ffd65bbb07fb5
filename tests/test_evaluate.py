"""Objectivity, reliability and validity: statistics against scipy and hand computations, the job on real crops."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from fiji_consensus import consensus, evaluate as E, evaluate_job as J, metrics
from fiji_consensus.cli import main
from fiji_consensus.config import EvaluateConfig

from _eval_data import make_project

# ------------------------------------------------------------------------------------------ statistics


def test_kruskal_wallis_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        k = int(rng.integers(2, 6))
        samples = [rng.integers(0, 8, size=int(rng.integers(2, 9))) + (g % 2) for g in range(k)]
        ours = E.kruskal_wallis(samples)
        ref = stats.kruskal(*samples)
        n = sum(len(s) for s in samples)
        assert ours.h == pytest.approx(ref.statistic, rel=1e-12)
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
        assert (ours.n, ours.k, ours.df) == (n, k, k - 1)
        assert ours.eta2_h == pytest.approx((ref.statistic - k + 1) / (n - k), rel=1e-12)


def test_kruskal_wallis_hand_value_and_undefined_cases():
    # no ties: ranks 1..9 in three groups of 3 -> H = 12/(9*10) * (6^2 + 15^2 + 24^2)/3 - 30 = 7.2
    r = E.kruskal_wallis([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert r.h == pytest.approx(7.2)
    assert r.eta2_h == pytest.approx((7.2 - 3 + 1) / (9 - 3))
    assert r.p == pytest.approx(math.exp(-7.2 / 2))  # chi2 with 2 df: sf = exp(-x/2)
    assert math.isnan(E.kruskal_wallis([[1.0], [2.0]]).h)  # N <= k
    assert math.isnan(E.kruskal_wallis([[3, 3], [3, 3]]).h)  # all equal
    nanr = E.kruskal_wallis([[1, 2, np.nan], [4, 5, 6]])  # NaN left out
    assert nanr.n == 5 and nanr.h == pytest.approx(stats.kruskal([1, 2], [4, 5, 6]).statistic)


def test_mann_whitney_matches_scipy_and_the_studys_z():
    rng = np.random.default_rng(1)
    for trial in range(30):
        a = rng.integers(0, 10, size=int(rng.integers(3, 15))).astype(float)
        b = rng.integers(2, 12, size=int(rng.integers(3, 15))).astype(float)
        n1, n2 = a.size, b.size
        r = E.mann_whitney(a, b)
        ref = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
        assert r.u == pytest.approx(ref.statistic)
        assert r.p == pytest.approx(ref.pvalue, rel=1e-10)
        # the study's Z: no tie correction, no continuity correction
        z_study = (ref.statistic - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
        assert r.z == pytest.approx(z_study, rel=1e-12)
        assert r.eta2 == pytest.approx(z_study**2 / (n1 + n2))
        # with the tie correction |Z| reproduces scipy's asymptotic p without continuity correction
        rt = E.mann_whitney(a, b, tie_correction=True)
        asym = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=False)
        assert 2 * stats.norm.sf(abs(rt.z)) == pytest.approx(asym.pvalue, rel=1e-9)
        assert abs(rt.z) >= abs(r.z) - 1e-12  # ties shrink the variance
        exact = E.mann_whitney(a, b, method="auto")
        assert exact.p == pytest.approx(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def test_mann_whitney_hand_values():
    # complete separation, n1 = n2 = 4: U = 0, Z = (0 - 8) / sqrt(4*4*9/12) = -8 / sqrt(12), eta2 = 64/12/8
    r = E.mann_whitney([1, 2, 3, 4], [5, 6, 7, 8])
    assert r.u == 0.0
    assert r.z == pytest.approx(-8 / math.sqrt(12))
    assert r.eta2 == pytest.approx(2 / 3)
    assert r.p == pytest.approx(2 * stats.norm.sf(7.5 / math.sqrt(12)))  # continuity correction 0.5
    assert E.mann_whitney([1, 2, 3, 4], [5, 6, 7, 8], method="exact").p == pytest.approx(2 / 70)
    assert (r.median1, r.median2) == (2.5, 6.5)
    assert math.isnan(E.mann_whitney([], [1, 2]).z)
    same = E.mann_whitney([2, 2, 2], [2, 2])
    assert (same.z, same.eta2, same.p) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="method"):
        E.mann_whitney([1], [2], method="bogus")


def test_bonferroni():
    assert E.bonferroni(0.01, 4) == pytest.approx(0.04)
    assert E.bonferroni(0.4, 4) == 1.0
    np.testing.assert_allclose(E.bonferroni([0.001, 0.3], 2), [0.002, 0.6])
    with pytest.raises(ValueError, match="m"):
        E.bonferroni(0.1, 0)


def test_grubbs_against_the_nist_example_and_table_values():
    # NIST/SEMATECH e-Handbook 1.3.5.17: G = 2.4687, two-sided critical value at 0.05 for N = 8: 2.1266
    x = [199.31, 199.53, 200.19, 200.82, 201.92, 201.95, 202.18, 245.57]
    r = E.grubbs(x, alpha=0.05)
    assert r.outlier.tolist() == [False] * 7 + [True]
    assert r.steps[0]["G"] == pytest.approx(2.4687, abs=1e-3)
    assert r.steps[0]["G_crit"] == pytest.approx(2.1266, abs=1e-4)
    assert r.steps[0]["index"] == 7
    # the repeated test on the remaining 7 values finds nothing: exactly 2 steps, the second not significant
    assert len(r.steps) == 2 and r.steps[1]["G"] <= r.steps[1]["G_crit"]
    # Grubbs (1969) table, two-sided alpha = 0.05: N = 3 -> 1.155 (the largest possible G), N = 10 -> 2.290
    assert E.grubbs_critical(3, 0.05) == pytest.approx(1.1543, abs=1e-3)
    assert E.grubbs_critical(10, 0.05) == pytest.approx(2.290, abs=1e-3)
    assert E.grubbs_critical(20, 0.05) == pytest.approx(2.709, abs=1e-3)


def test_grubbs_flags_never_removes_and_skips_nan():
    x = np.array([10.0, 10.2, 9.9, 10.1, np.nan, 10.0, 30.0, 9.8])
    before = x.copy()
    r = E.grubbs(x)
    np.testing.assert_array_equal(x, before)
    assert r.outlier.shape == x.shape
    assert r.outlier.tolist() == [False, False, False, False, False, False, True, False]
    assert not E.grubbs([1.0, 1.0, 1.0, 1.0]).outlier.any()  # SD 0: nothing to test
    assert not E.grubbs([1.0, 50.0]).outlier.any()  # fewer than 3 values
    rng = np.random.default_rng(3)
    assert not E.grubbs(rng.normal(size=30)).outlier.any()


# ------------------------------------------------------------------------------------------ tables


def _rows(values: dict[str, dict[str, list[float]]]) -> list[dict]:
    rows = []
    for rater, groups in values.items():
        for g, vals in groups.items():
            for i, v in enumerate(vals):
                rows.append({"image": f"{g}{i}", "group": g, "rater": rater, "count": v, "density": v / 2,
                             "mean_intensity": 100 - v})
    return rows


def test_validity_statistics_match_scipy_bonferroni_direction_and_outliers():
    ctrl = [10, 11, 12, 10, 11, 12]
    a = [20, 22, 21, 23, 20, 22]
    b = [11, 12, 10, 13, 11, 60]  # 60 is an outlier within group b
    rows = _rows({"m1": {"ctrl": ctrl, "a": a, "b": b}, "m2": {"ctrl": ctrl, "a": ctrl, "b": ctrl}})
    rows.append({"image": "x", "group": "", "rater": "m1", "count": 999, "density": 1, "mean_intensity": 1})
    res = E.validity_statistics(rows, alpha=0.05, control="ctrl")
    t = {(r["rater"], r["measure"]): r for r in res["tests"]}
    ref = stats.kruskal(ctrl, a, b)  # the row without a group is left out
    assert t[("m1", "count")]["H"] == pytest.approx(ref.statistic)
    assert t[("m1", "count")]["p"] == pytest.approx(ref.pvalue)
    assert t[("m1", "count")]["eta2_h"] == pytest.approx((ref.statistic - 3 + 1) / (18 - 3))
    assert t[("m1", "count")]["significant"]
    pw = {(p["rater"], p["measure"], p["group_a"], p["group_b"]): p for p in res["pairwise"]}
    p = pw[("m1", "count", "a", "ctrl")]
    mw = stats.mannwhitneyu(a, ctrl, alternative="two-sided", method="asymptotic")
    assert p["U"] == pytest.approx(mw.statistic) and p["p"] == pytest.approx(mw.pvalue)
    assert p["m"] == 3 and p["alpha_bonferroni"] == pytest.approx(0.05 / 3)
    assert p["p_bonferroni"] == pytest.approx(min(1, 3 * mw.pvalue))
    assert p["significant"] == (mw.pvalue <= 0.05 / 3) and p["direction"] == "a"
    # intensity falls where counts rise: the direction flips to the control
    assert pw[("m1", "mean_intensity", "a", "ctrl")]["direction"] == "ctrl"
    assert pw[("m2", "count", "a", "ctrl")]["direction"] == ""  # identical groups: no effect
    # the outlier is flagged, kept in the data and in the statistics
    outl = [o for o in res["outliers"] if o["measure"] == "count"]
    assert [(o["rater"], o["group"], o["value"]) for o in outl] == [("m1", "b", 60.0)]
    flagged = [r for r in res["rows"] if r.get("count_outlier")]
    assert [(r["rater"], r["count"]) for r in flagged] == [("m1", 60)]
    assert len(res["rows"]) == len(rows)
    # normalisation by the control group's mean
    m1_ctrl = [r["count_normalised"] for r in res["rows"] if r["rater"] == "m1" and r["group"] == "ctrl"]
    assert np.mean(m1_ctrl) == pytest.approx(1.0)
    # comparisons against the control only: k - 1 tests, Bonferroni over them
    res_c = E.validity_statistics(rows, control="ctrl", comparisons="control")
    pc = [p for p in res_c["pairwise"] if p["rater"] == "m1" and p["measure"] == "count"]
    assert {(p["group_a"], p["group_b"]) for p in pc} == {("ctrl", "a"), ("ctrl", "b")}
    assert all(p["m"] == 2 for p in pc)
    with pytest.raises(ValueError, match="control"):
        E.validity_statistics(rows, control="nope")


def test_effect_spread_is_the_sd_of_effect_sizes_across_models():
    rng = np.random.default_rng(2)
    values = {f"m{i}": {"x": list(rng.normal(10, 1, 8)), "y": list(rng.normal(10 + i, 1, 8))} for i in range(4)}
    res = E.validity_statistics(_rows(values))
    spread = E.effect_spread(res["tests"], res["pairwise"], {"seeds": ["m0", "m1", "m2", "m3"], "one": ["m0"]})
    row = next(r for r in spread if r["strategy"] == "seeds" and r["measure"] == "count"
               and r["comparison"] == "kruskal-wallis")
    eta = [t["eta2_h"] for t in res["tests"] if t["measure"] == "count"]
    assert row["n_raters"] == 4
    assert row["sd"] == pytest.approx(np.std(eta, ddof=1))
    assert row["mean"] == pytest.approx(np.mean(eta))
    pair = next(r for r in spread if r["strategy"] == "seeds" and r["measure"] == "count"
                and r["comparison"] == "x vs y")
    assert pair["sd"] == pytest.approx(np.std([p["eta2"] for p in res["pairwise"] if p["measure"] == "count"], ddof=1))
    one = next(r for r in spread if r["strategy"] == "one" and r["measure"] == "count")
    assert one["n_raters"] == 1 and math.isnan(one["sd"])


def test_agreement_summary_cv_and_icc():
    counts = {"a": [10, 20, 30, 40], "b": [12, 18, 33, 41], "c": [0, 0, 0, 0]}
    pairs = [{"rater_a": "a", "rater_b": "b", "roi_f1": 0.8, "dice": 0.7},
             {"rater_a": "a", "rater_b": "c", "roi_f1": 0.0, "dice": 0.1}]
    (row,) = E.agreement_summary(pairs, counts, {"s": ["a", "b"]})
    table = np.array([counts["a"], counts["b"]], float).T
    cv = np.mean(table.std(axis=1, ddof=1) / table.mean(axis=1))
    assert row["mean_count_cv"] == pytest.approx(cv)
    assert row["icc_counts"] == pytest.approx(metrics.icc(table, form="ICC(2,1)"))
    assert row["mean_pairwise_roi_f1"] == 0.8 and row["mean_pairwise_dice"] == 0.7  # pair with c left out


def test_classify_against_experts():
    assert E.classify_against_experts(0.9, [0.5, 0.7, np.nan]) == "above"
    assert E.classify_against_experts(0.7, [0.5, 0.7]) == "within"
    assert E.classify_against_experts(0.49, [0.5, 0.7]) == "below"
    assert E.classify_against_experts(np.nan, [0.5]) == "undefined"
    assert E.classify_against_experts(0.5, [np.nan]) == "undefined"


# ------------------------------------------------------------------------------------------ uncertainty


def test_qubiq_dice_strict_thresholds_and_float32_fractions():
    votes = np.array([[0, 1, 2, 3, 4, 5]])
    frac32 = (votes / 5).astype(np.float32)  # float32(0.2) lies just above 0.2: must count as equal
    prob = np.array([[0.0, 0.25, 0.45, 0.65, 0.85, 1.0]])
    d = E.qubiq_dice(prob, frac32)
    for t, v in zip(E.QUBIQ_THRESHOLDS, d):
        a, b = prob > t, votes * 10 > round(t * 10) * 5  # fraction > t without floating point
        assert v == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert E.qubiq_dice(prob, frac32, thresholds=[0.2])[0] == pytest.approx(2 * 4 / (5 + 4))
    assert math.isnan(E.qubiq_dice(np.zeros((2, 2)), np.zeros((2, 2)), thresholds=[0.5])[0])
    ign = np.array([[False, True, False, False, False, False]])
    assert E.qubiq_dice(prob, frac32, thresholds=[0.2], ignore=ign)[0] == pytest.approx(1.0)


def test_calibration_table_and_ece():
    rng = np.random.default_rng(4)
    p = rng.uniform(size=(64, 64))
    perfect = E.calibration_table(p, p, bins=10)
    assert E.expected_calibration_error(perfect) == pytest.approx(0.0, abs=1e-12)
    assert perfect["n_pixels"].sum() == p.size
    # bin by bin by hand: |mean p - mean target| weighted by the bin's share of pixels
    f = (rng.uniform(size=p.shape) < p).astype(float)
    t = E.calibration_table(p, f, bins=5)
    b = np.minimum((p * 5).astype(int), 4)
    ece = sum((b == k).mean() * abs(p[b == k].mean() - f[b == k].mean()) for k in range(5))
    assert E.expected_calibration_error(t) == pytest.approx(ece)
    assert E.calibration_table(np.ones((1, 1)), np.ones((1, 1)), bins=4)["n_pixels"].tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="probability"):
        E.calibration_table(np.full((2, 2), 1.5), np.zeros((2, 2)))


def test_the_tables_use_the_scores_ignore_rule():
    """Ignore masks are checked as by the metrics: binary, the maps' shape (one rule, _validate.ignore_mask)."""
    p = np.array([[0.1, 0.6, 0.9, 0.2]])
    f = np.array([[0.0, 0.6, 1.0, 0.2]])
    with pytest.raises(ValueError, match="ignore must be binary"):
        E.qubiq_dice(p, f, ignore=np.array([[0, 2, 3, 0]]))
    with pytest.raises(ValueError, match=r"ignore must have the same shape as the masks \(1, 4\); got \(1, 3\)"):
        E.calibration_table(p, f, ignore=np.zeros((1, 3), bool))
    ign = np.array([[0, 255, 0, 0]], np.uint8)  # 0/255 as ImageJ writes masks
    np.testing.assert_array_equal(E.qubiq_dice(p, f, ignore=ign), E.qubiq_dice(p[:, [0, 2, 3]], f[:, [0, 2, 3]]))


def test_fraction_table_sums_per_vote_level():
    votes = np.array([[0, 0, 1, 3], [2, 3, 3, 0]])
    u = np.arange(8, dtype=float).reshape(2, 4) / 10
    t = E.fraction_table(votes, 3, probability=u, uncertainty=u)
    assert t["n_pixels"].tolist() == [3, 1, 1, 3]
    np.testing.assert_allclose(t["sum_uncertainty"], [0.0 + 0.1 + 0.7, 0.2, 0.4, 0.3 + 0.5 + 0.6])
    with pytest.raises(ValueError, match="votes"):
        E.fraction_table(votes + 1, 3, probability=u)


def test_spearman_matches_scipy_with_ties_and_skips_nan():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 40).astype(float)  # many ties
    y = x + rng.normal(0, 2, 40)
    assert E.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    x[[2, 7]] = np.nan
    y[11] = np.inf
    ok = np.isfinite(x) & np.isfinite(y)
    assert E.spearman(x, y) == pytest.approx(stats.spearmanr(x[ok], y[ok]).statistic)
    assert math.isnan(E.spearman([1, 2], [2, 1]))  # fewer than 3 pairs
    assert math.isnan(E.spearman([1, 2, 3], [4, 4, 4]))  # constant
    with pytest.raises(ValueError, match="equal length; got 3 and 2"):
        E.spearman([1, 2, 3], [1, 2])


def test_qa_agreement_ranks_the_image_to_review_first():
    rows = [{"image": i, "qa_score": q, "roi_f1": f, "dice": d}
            for i, q, f, d in [("a", 0.2, 0.9, 0.8), ("b", 0.6, 0.7, 0.5), ("c", 0.4, 0.5, 0.6),
                               ("d", math.nan, 0.1, 0.1)]]
    r = E.qa_agreement(rows)
    assert r["qa_n_images"] == 3  # d has no QA score (no uncertainty map)
    assert r["qa_spearman_roi_f1"] == pytest.approx(stats.spearmanr([0.2, 0.6, 0.4], [0.9, 0.7, 0.5]).statistic)
    assert r["qa_spearman_dice"] == pytest.approx(-1.0)
    assert r["qa_review_first"] == "b" and r["qa_review_first_roi_f1_rank"] == 2  # c is worse
    none = E.qa_agreement([{"image": "a", "qa_score": math.nan, "roi_f1": 0.5, "dice": 0.5}])
    assert none["qa_n_images"] == 0 and none["qa_review_first"] is None and math.isnan(none["qa_spearman_roi_f1"])


def test_region_measures_count_inside_region_with_ignore_before_labelling():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:3] = True  # 4 px, inside
    m[5:9, 5:9] = True  # 16 px, cut by the region to 8 px
    m[0, 9] = True  # outside
    img = np.arange(100, dtype=float).reshape(10, 10)
    region = np.zeros_like(m)
    region[:, :7] = True
    r = E.region_measures(m, img, region=region)
    assert r["count"] == 2 and r["region_area"] == 70
    assert r["density"] == pytest.approx(2 / 70 * 1e6)
    expect = np.mean([img[1:3, 1:3].mean(), img[5:9, 5:7].mean()])
    assert r["mean_intensity"] == pytest.approx(expect)
    assert E.region_measures(m, img, region=region, min_size=5)["count"] == 1  # the cut object is 8 px
    ign = np.zeros_like(m)
    ign[1:3, 1:3] = True
    r2 = E.region_measures(m, img, region=region, ignore=ign)
    assert r2["count"] == 1 and r2["region_area"] == 66
    assert math.isnan(E.region_measures(np.zeros_like(m), img)["mean_intensity"])


# ------------------------------------------------------------------------------------------ the job


def test_statistics_never_import_the_job_or_the_report():
    """``evaluate`` is statistics only: importing it loads neither the job nor the report (no cycle); the
    job's names are still reachable from it for older callers."""
    import subprocess
    import sys

    code = ("import sys, fiji_consensus.evaluate as E; "
            "assert 'fiji_consensus.report' not in sys.modules, 'report'; "
            "assert 'fiji_consensus.evaluate_job' not in sys.modules, 'job'; "
            "assert 'fiji_consensus.jobs' not in sys.modules, 'jobs'; "
            "import fiji_consensus.evaluate_job as J; "
            "assert E.run_evaluate is J.run_evaluate and E.evaluate is J.evaluate; "
            "assert E.TABLE_COLUMNS is J.TABLE_COLUMNS")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        E.nope  # noqa: B018



@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("eval_project"))


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_on_real_crops(project, tmp_path):
    p = project
    out = tmp_path / "eval"
    cfg = EvaluateConfig(
        project=p["root"], min_size=30, models={k: str(v) for k, v in p["models"].items()},
        strategies={"seeds": ["soft", "soft_seed1"]}, groups=p["root"] / "groups.csv", control="a",
        out=out, report=False,
    )
    ev = J.evaluate(cfg)
    objs = ev.tables["objectivity"]
    experts = p["experts"]
    # the consensus is STAPLE > 0.5 of the crops: expert 2's Dice against it computed directly
    for image_id in p["ids"]:
        masks = p["masks"][image_id]
        ref = consensus.staple(masks).mask()
        row = next(r for r in objs if r["image"] == image_id and r["rater"] == experts[1])
        assert row["dice"] == pytest.approx(metrics.dice(ref, masks[1]))
        assert row["roi_f1"] == pytest.approx(metrics.roi_f1(ref, masks[1], min_size=30))
        st = consensus.staple(masks)
        assert row["staple_sensitivity"] == pytest.approx(st.sensitivity[1])
        # a model that is a copy of expert 2 scores exactly as expert 2
        copy = next(r for r in objs if r["image"] == image_id and r["rater"] == "copy_e2")
        for k in ("dice", "roi_f1", "average_precision", "sensitivity", "n_objects"):
            assert copy[k] == pytest.approx(row[k]), k
        assert copy["class_roi_f1"] == "within"
        # an empty model is below the worst expert wherever the experts found objects
        empty = next(r for r in objs if r["image"] == image_id and r["rater"] == "empty")
        assert empty["roi_f1"] == 0.0
        assert empty["class_roi_f1"] == ("below" if empty["expert_min_roi_f1"] > 0 else "within")
    summ = {r["rater"]: r for r in ev.tables["objectivity_summary"]}
    assert summ["copy_e2"]["passes_selection"] and not summ["empty"]["passes_selection"]
    n_below = sum(r["expert_min_roi_f1"] > 0 for r in objs if r["rater"] == "empty")
    assert summ["empty"]["n_below"] == n_below >= 3
    assert summ["copy_e2"]["roi_f1"] == pytest.approx(summ[experts[1]]["roi_f1"])
    # agreement: copy_e2 vs expert 2 is perfect
    ag = {(r["rater_a"], r["rater_b"]): r for r in ev.tables["agreement"]}
    assert ag[(experts[1], "copy_e2")]["roi_f1"] == 1.0 and ag[(experts[1], "copy_e2")]["dice"] == 1.0
    # validity: the Kruskal-Wallis H of the consensus counts equals scipy's on the counts table
    counts = [r for r in ev.tables["counts"] if r["rater"] == "consensus"]
    by_g = {g: [r["count"] for r in counts if r["group"] == g] for g in ("a", "b")}
    kw = next(t for t in ev.tables["validity_tests"] if t["rater"] == "consensus" and t["measure"] == "count")
    if len(set(by_g["a"] + by_g["b"])) > 1:
        assert kw["H"] == pytest.approx(stats.kruskal(by_g["a"], by_g["b"]).statistic)
    assert kw["n"] == 5 and kw["k"] == 2
    # the count of each rater is the number of objects >= MIN_PIXEL
    img0 = p["ids"][0]
    c0 = next(r for r in counts if r["image"] == img0)
    assert c0["count"] == metrics.count_objects(consensus.staple(p["masks"][img0]).mask(), min_size=30)
    # reliability: experts and the strategy "seeds"
    rel = {r["strategy"]: r for r in ev.tables["reliability"]}
    assert set(rel) == {"experts", "seeds"} and rel["seeds"]["n_raters"] == 2
    assert rel["seeds"]["mean_pairwise_roi_f1"] > rel["experts"]["mean_pairwise_roi_f1"]
    spread = [r for r in ev.tables["effect_spread"] if r["strategy"] == "experts" and r["comparison"] == "kruskal-wallis"]
    assert {r["measure"] for r in spread} == set(E.MEASURES)
    # uncertainty vs disagreement: entropy of a smoothed expert fraction is highest where experts disagree
    us = {r["model"]: r for r in ev.tables["uncertainty_summary"]}
    assert set(us) == {"soft", "soft_seed1"}  # the mask models have no probability
    assert us["soft"]["uncertainty_rises_with_disagreement"] is True
    assert us["soft"]["mean_uncertainty_disagreement"] > 3 * us["soft"]["mean_uncertainty_unanimous_background"]
    assert 0 <= us["soft"]["ece"] < 0.1 and 0.5 < us["soft"]["qubiq_mean_dice"] <= 1
    frac = [r for r in ev.tables["uncertainty_vs_fraction"] if r["model"] == "soft"]
    assert [r["experts_marking"] for r in frac] == list(range(len(experts) + 1))
    assert sum(r["n_pixels"] for r in frac) == 5 * 384 * 384
    # files: tables, config with provenance, inputs with checksums; nothing overwritten without overwrite
    for name in ("objectivity", "objectivity_summary", "agreement", "reliability", "counts", "validity_tests",
                 "validity_pairwise", "effect_spread", "uncertainty_vs_fraction", "calibration", "qubiq"):
        assert (out / f"{name}.csv").is_file(), name
    assert not (out / "report.html").exists()
    rows = _read_csv(out / "objectivity.csv")
    assert len(rows) == len(objs) and set(rows[0]) == set(J.TABLE_COLUMNS["objectivity"])
    inputs = _read_csv(out / "inputs.csv")
    assert len(inputs) == 5 * (1 + len(experts) + 4 + 2) and all(len(r["sha256"]) == 64 for r in inputs)
    record = json.loads((out / "config.json").read_text())
    assert record["command"] == "evaluate" and record["config"]["min_size"] == 30
    assert record["models"]["soft"]["kind"] == "predict" and record["models"]["copy_e2"]["kind"] == "masks"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["empty"]["passes_selection"] is False
    with pytest.raises(FileExistsError, match="overwrite"):
        J.run_evaluate(cfg)


def test_evaluate_with_given_consensus_and_regions(project, tmp_path):
    p = project
    regions = tmp_path / "regions"
    regions.mkdir()
    import tifffile

    for i in p["ids"]:
        r = np.zeros((384, 384), np.uint8)
        r[:, :192] = 255
        tifffile.imwrite(regions / f"{i}.tif", r)
    cfg = EvaluateConfig(project=p["root"], consensus=p["est_gt"], regions=regions, min_size=30,
                         out=tmp_path / "o", report=False)
    ev = J.evaluate(cfg)
    from fiji_consensus import io

    for i in p["ids"]:
        ref = io.read_mask(p["est_gt"] / f"{i}.tif")
        row = next(r for r in ev.tables["objectivity"] if r["image"] == i and r["rater"] == p["experts"][0])
        assert row["dice"] == pytest.approx(metrics.dice(ref, p["masks"][i][0]))
        c = next(r for r in ev.tables["counts"] if r["image"] == i and r["rater"] == "consensus")
        half = np.zeros((384, 384), bool)
        half[:, :192] = True
        assert c["count"] == E.region_measures(ref, np.zeros((384, 384)), region=half, min_size=30)["count"]
        assert c["region_area"] == 384 * 192
    assert ev.tables["validity_tests"] == [] and ev.summary["models"] == {}
    assert ev.summary["reference"].startswith("consensus folder")


def test_evaluate_input_errors(project, tmp_path):
    p = project
    with pytest.raises(ValueError, match="unknown models"):
        EvaluateConfig(project=p["root"], models={"a": "x"}, strategies={"s": ["b"]}, out=tmp_path / "o")
    with pytest.raises(ValueError, match="control needs"):
        EvaluateConfig(project=p["root"], control="a", out=tmp_path / "o")
    with pytest.raises(ValueError, match="model names"):
        EvaluateConfig(project=p["root"], models={"consensus": "x"}, out=tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="model 'm'"):
        J.evaluate(EvaluateConfig(project=p["root"], models={"m": tmp_path / "nope"}, out=tmp_path / "o"))
    with pytest.raises(ValueError, match="not among the groups"):
        J.evaluate(EvaluateConfig(project=p["root"], groups=p["root"] / "groups.csv", control="zz",
                                  out=tmp_path / "o2"))
    bad = tmp_path / "bad_model"
    bad.mkdir()
    import tifffile

    tifffile.imwrite(bad / f"{p['ids'][0]}.tif", np.zeros((3, 3), np.uint8))
    with pytest.raises(Exception, match="model 'bad'"):
        J.evaluate(EvaluateConfig(project=p["root"], models={"bad": bad}, out=tmp_path / "o3"))


def test_cli_evaluate_json(project, tmp_path, capsys):
    p = project
    out = tmp_path / "cli"
    argv = ["evaluate", "--images", str(p["root"] / "images"),
            "--experts", *[str(p["root"] / "annotations" / e) for e in p["experts"]],
            "--min-size", "30", "--model-predictions", f"copy={p['models']['copy_e2']}",
            f"soft={p['models']['soft']}", "--strategy", "both=copy,soft",
            "--groups", str(p["root"] / "groups.csv"), "--control", "a", "--no-report",
            "--out", str(out), "--json"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert res["ok"] and res["command"] == "evaluate" and set(res["models"]) == {"copy", "soft"}
    assert res["strategies"] == {"both": ["copy", "soft"]}
    assert (out / "validity_pairwise.csv").is_file()
    # a second run without --overwrite refuses, with exit code 1 and a JSON error line
    assert main(argv) == 1
    err = json.loads(capsys.readouterr().out.strip())
    assert err["ok"] is False and "overwrite" in err["error"]
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--project", str(p["root"]), "--model-predictions", "noequals", "--out", str(out)])
    assert exc.value.code == 2


@pytest.mark.slow
def test_wue1_expert_scores_reproduce_the_study(shared_data, tmp_path):
    """All 36 lab-wue1 images: per-expert ROI-F1 and Dice against the STAPLE consensus are the study's."""
    lab = shared_data / "lab-wue1"
    cfg = EvaluateConfig(images=lab / "images", experts=[lab / "labels" / f"expert_{k}" for k in range(1, 6)],
                         min_size=30, groups=lab / "groups_wue1.csv", out=tmp_path / "wue1", report=False)
    ev = J.evaluate(cfg)
    summ = {r["rater"]: r for r in ev.tables["objectivity_summary"]}
    golden_f1 = [0.508, 0.812, 0.772, 0.789, 0.810]  # anchors.md, mean over the 36 images
    golden_dice = [0.532, 0.824, 0.790, 0.777, 0.810]
    for k in range(5):
        r = summ[f"expert_{k + 1}"]
        assert r["n_images"] == 36
        assert r["roi_f1"] == pytest.approx(golden_f1[k], abs=6e-4)
        assert r["dice"] == pytest.approx(golden_dice[k], abs=6e-4)
    assert summ["expert_1"]["staple_sensitivity"] < 0.5 < summ["expert_2"]["staple_sensitivity"]
    kw = {t["rater"]: t for t in ev.tables["validity_tests"] if t["measure"] == "count"}
    assert kw["consensus"]["n"] == 36 and kw["consensus"]["k"] == 9 and math.isfinite(kw["consensus"]["eta2_h"])


def test_evaluate_reads_the_output_of_predict(project, tmp_path, capsys):
    """A real `predict` run (tiny threshold U-Nets of tests/jobs/test_predict.py) is read back as a model."""
    torch = pytest.importorskip("torch")
    import tifffile
    from jobs.test_predict import THRESHOLDS, _meta, _threshold_net

    from fiji_consensus.nn.ensemble import save_ensemble
    from fiji_consensus.predict import PredictConfig, run_predict

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ens = tmp_path / "ens"
        nets = {k: _threshold_net(t).state_dict() for k, t in enumerate(THRESHOLDS)}
        save_ensemble(ens, nets, _meta(_threshold_net(0.5), len(THRESHOLDS)))
        pred = tmp_path / "pred"
        assert run_predict(PredictConfig(model=ens, inputs=[project["root"] / "images"], out=pred, tta="none",
                                         threads=1))["ok"]
    finally:
        torch.set_num_threads(old)
    ev = J.evaluate(EvaluateConfig(project=project["root"], models={"thr": pred}, min_size=30,
                                   out=tmp_path / "o", report=False))
    assert ev.provenance["models"]["thr"]["kind"] == "predict"
    assert ev.provenance["models"]["thr"]["uncertainty"] == "entropy"
    for i in project["ids"]:
        prob = tifffile.imread(pred / "probability" / f"{i}.tif")
        ref = consensus.staple(project["masks"][i]).mask()
        row = next(r for r in ev.tables["objectivity"] if r["image"] == i and r["rater"] == "thr")
        assert row["dice"] == pytest.approx(metrics.dice(ref, prob > 0.5))
        q = next(r for r in ev.tables["qubiq"] if r["image"] == i and r["model"] == "thr")
        assert q["dice_0.5"] == pytest.approx(
            E.qubiq_dice(prob, project["masks"][i].mean(axis=0), thresholds=[0.5])[0], nan_ok=True)
    (u,) = ev.tables["uncertainty_summary"]
    assert u["measure"] == "entropy" and math.isfinite(u["mean_uncertainty_disagreement"])
    assert 0 <= u["ece"] <= 1
    # the per-image QA score is the one predict ranked the images by (images.csv), and its correlation with
    # the model's ROI-F1 is Spearman's over those images
    listed = {r["image"]: float(r["qa_score"]) for r in _read_csv(pred / "images.csv")}
    rows = {r["image"]: r for r in ev.tables["objectivity"] if r["rater"] == "thr"}
    assert set(listed) == set(rows) == set(project["ids"])
    for i, q in listed.items():
        assert rows[i]["qa_score"] == pytest.approx(q, rel=1e-5)
    qa = [rows[i]["qa_score"] for i in project["ids"]]
    f1 = [rows[i]["roi_f1"] for i in project["ids"]]
    assert u["qa_n_images"] == len(project["ids"])
    assert u["qa_spearman_roi_f1"] == pytest.approx(stats.spearmanr(qa, f1).statistic, nan_ok=True)
    assert u["qa_review_first"] == max(listed, key=listed.get)
    assert math.isfinite(u["qa_spearman_roi_f1"])
    # the CLI says it in one line
    assert main(["evaluate", "--project", str(project["root"]), "--model-predictions", f"thr={pred}",
                 "--min-size", "30", "--out", str(tmp_path / "cli"), "--no-report", "--no-progress", "-q"]) == 0
    assert f"thr: QA score vs ROI-F1 Spearman rho {u['qa_spearman_roi_f1']:.2f}" in capsys.readouterr().out
