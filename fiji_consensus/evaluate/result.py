"""The result of an evaluation run, as the report reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Evaluation"]


@dataclass
class Evaluation:
    """Everything :func:`fiji_consensus.evaluate_job.run_evaluate` computed: the tables (lists of dict rows,
    as written to CSV), the summary, the provenance record and the example crops for the report."""

    tables: dict[str, list[dict[str, Any]]]
    summary: dict[str, Any]
    provenance: dict[str, Any]
    experts: list[str]
    models: list[str]
    strategies: dict[str, list[str]]
    example: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
