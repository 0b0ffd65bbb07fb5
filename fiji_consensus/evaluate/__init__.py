r"""Objectivity, reliability and validity: the analyses of Segebarth et al. (eLife 2020) for experts,
consensus and models side by side.

This package is array- and table-level only (numpy, scipy, :mod:`~fiji_consensus.metrics`): statistics
with the paper's effect sizes and Grubbs' outlier test (:mod:`.stats`), per-image measures, group
differences and reliability (:mod:`.validity`), uncertainty against expert disagreement
(:mod:`.disagreement`). It reads and writes no files. The job behind ``fiji-consensus evaluate``
(:func:`fiji_consensus.evaluate_job.run_evaluate`) reads experts, an optional consensus, model predictions,
groups and regions, calls these functions and writes the CSV tables, ``summary.json``, ``config.json``,
``inputs.csv`` (every input file with its SHA-256) and, through :mod:`fiji_consensus.report`,
``report.html``.

Definitions (``docs/anchors.md``)
---------------------------------
Kruskal-Wallis
    ``H`` with the tie correction, ``p`` from χ² with ``k - 1`` degrees of freedom; effect size
    ``η²_H = (H - k + 1) / (N - k)`` (Tomczak & Tomczak 2014; it can be slightly negative for tiny effects,
    and is reported as computed).
Mann-Whitney U
    As the study's code computes it: ``U`` of the first sample, ``Z = (U - n₁n₂/2) / √(n₁n₂(N+1)/12)``
    (no tie or continuity correction), effect size ``η² = Z² / N`` with ``N = n₁ + n₂``; the two-sided
    ``p`` from the normal approximation with tie and continuity correction (scipy's asymptotic method).
    Pairwise tests are Bonferroni-corrected: significant when ``p <= α / m`` for ``m`` comparisons
    (the study divides by the number of groups, which equals ``m`` for its 3 groups), with
    ``p_bonferroni = min(1, m p)``. The direction of a significant effect is the group with the larger
    median.
Grubbs (two-sided)
    ``G = max |x - x̄| / s`` (``s`` with ``ddof = 1``) against
    ``G_crit = (N - 1)/√N · √(t² / (N - 2 + t²))`` with ``t`` the upper ``α / (2N)`` quantile of Student's
    t with ``N - 2`` degrees of freedom; repeated on the remaining values while an outlier is found.
    Outliers are **flagged, never removed** (the study used ``outliers.smirnov_grubbs``, which iterates
    the same way).
Reliability
    Spread (sample standard deviation, ``ddof = 1``) of an effect size across the models of one training
    strategy (and, for comparison, across the experts); pairwise ROI-F1 between them; per-image
    coefficient of variation of object counts; ICC(2,1) of the counts.
Uncertainty vs disagreement
    For each pixel the number ``k`` of the ``R`` experts who marked it (fraction ``k / R``): mean
    uncertainty and probability per ``k``; QUBIQ-style Dice of ``probability > τ`` against
    ``fraction > τ`` for ``τ = 0.1, ..., 0.9`` (strictly above, so ``τ = 0.5`` is a strict majority);
    calibration of the probability against the fraction in equal-width bins, with the expected calibration
    error ``ECE = Σ_b (n_b / N) |p̄_b - f̄_b|``.
"""

from __future__ import annotations

from typing import Any

from .disagreement import (
    QUBIQ_THRESHOLDS,
    calibration_table,
    expected_calibration_error,
    fraction_table,
    qa_agreement,
    qubiq_dice,
    spearman,
)
from .result import Evaluation
from .stats import (
    GrubbsResult,
    KruskalResult,
    MannWhitneyResult,
    bonferroni,
    classify_against_experts,
    grubbs,
    grubbs_critical,
    kruskal_wallis,
    mann_whitney,
)
from .validity import MEASURES, agreement_summary, effect_spread, region_measures, validity_statistics

__all__ = [
    "QUBIQ_THRESHOLDS",
    "MEASURES",
    "KruskalResult",
    "MannWhitneyResult",
    "GrubbsResult",
    "kruskal_wallis",
    "mann_whitney",
    "bonferroni",
    "grubbs_critical",
    "grubbs",
    "classify_against_experts",
    "region_measures",
    "fraction_table",
    "calibration_table",
    "expected_calibration_error",
    "qubiq_dice",
    "validity_statistics",
    "effect_spread",
    "agreement_summary",
    "spearman",
    "qa_agreement",
    "Evaluation",
]

#: Names of the evaluate job that older code imports from here; they live in :mod:`fiji_consensus.evaluate_job`
#: and are looked up only when asked for, so this package never imports the job (nor, through it, the report).
_JOB_NAMES = frozenset({"evaluate", "run_evaluate", "TABLE_COLUMNS"})


def __getattr__(name: str) -> Any:
    if name in _JOB_NAMES:
        import importlib

        return getattr(importlib.import_module("fiji_consensus.evaluate_job"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
