"""Annotation plans: which expert annotates which image next, so that expert time goes where it counts.

A plan is built from what is known about a project (who annotated what so far, and a per-image priority:
a model's uncertainty, or the experts' disagreement where two or more have annotated an image) and three
settings (the experts, a target number of experts per image, a budget of annotations). It is a list of
``(order, image, expert, reason)`` rows:

* images are taken in order of priority, the most uncertain (or most disputed) first;
* an image gets experts until it reaches the target; each next expert is the one that gives a pair of
  experts its first shared image (so that every pair's agreement can be measured and the pooled STAPLE
  links every expert with every other), then the one with the least work so far;
* the budget caps the number of new annotations: the plan stops where the money does.

Nothing here reads files (see :func:`fiji_consensus.jobs.run_plan`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

__all__ = ["Plan", "make_plan", "pair_overlap"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Result of :func:`make_plan`.

    Attributes
    ----------
    rows : list of dict
        ``{"order", "image", "expert", "reason", "priority"}`` in the order the work should be done.
    raters : dict
        image id -> the experts of that image after the plan (annotated before + planned).
    overlap : dict
        ``(expert_a, expert_b)`` -> number of images both annotated after the plan.
    short : list of str
        Images that stay below the target (budget spent, or too few experts).
    """

    rows: list[dict[str, Any]]
    raters: dict[str, list[str]]
    overlap: dict[tuple[str, str], int]
    short: list[str] = field(default_factory=list)

    @property
    def pairs_without_overlap(self) -> list[tuple[str, str]]:
        return [p for p, n in self.overlap.items() if n == 0]

    def per_expert(self) -> dict[str, int]:
        """Planned annotations per expert."""
        out: dict[str, int] = {}
        for r in self.rows:
            out[r["expert"]] = out.get(r["expert"], 0) + 1
        return out


def pair_overlap(raters: Mapping[str, Collection[str]], experts: Sequence[str]) -> dict[tuple[str, str], int]:
    """Number of images every pair of ``experts`` shares in ``raters`` (image -> its experts).

    >>> pair_overlap({"a": ["x", "y"], "b": ["y", "z"]}, ["x", "y", "z"])
    {('x', 'y'): 1, ('x', 'z'): 0, ('y', 'z'): 1}
    """
    out = {p: 0 for p in combinations(experts, 2)}
    for rs in raters.values():
        s = set(rs)
        for p in out:
            if p[0] in s and p[1] in s:
                out[p] += 1
    return out


def _key(a: str, b: str, experts: Sequence[str]) -> tuple[str, str]:
    return (a, b) if experts.index(a) < experts.index(b) else (b, a)


def make_plan(
    image_ids: Sequence[str],
    experts: Sequence[str],
    *,
    annotated: Mapping[str, Collection[str]] | None = None,
    priority: Mapping[str, float] | None = None,
    priority_name: str = "priority",
    target: int = 3,
    budget: int | None = None,
) -> Plan:
    """Plan which expert annotates which image next.

    Parameters
    ----------
    image_ids : sequence of str
        The project's images.
    experts : sequence of str
        The experts available (at least 2); annotations by others count for the target but get no work.
    annotated : mapping, optional
        image id -> the experts who have annotated it already.
    priority : mapping, optional
        image id -> how much an image needs experts (a model's uncertainty, the experts' disagreement);
        higher first. Images without a value (NaN or missing) come first: nothing is known about them.
    priority_name : str
        What the priority is, for the ``reason`` column.
    target : int
        Experts per image, ``2 <= target <= len(experts)``.
    budget : int, optional
        Largest number of new annotations; default: as many as the target needs.

    Returns
    -------
    Plan

    Examples
    --------
    >>> p = make_plan(["a", "b", "c"], ["x", "y", "z"], target=2, priority={"a": 0.1, "b": 0.9, "c": 0.5})
    >>> [(r["image"], r["expert"]) for r in p.rows]
    [('b', 'x'), ('b', 'y'), ('c', 'z'), ('c', 'x'), ('a', 'y'), ('a', 'z')]
    >>> p.pairs_without_overlap
    []
    """
    experts = list(dict.fromkeys(str(e) for e in experts))
    if len(experts) < 2:
        raise ValueError(f"a plan needs at least 2 experts; got {len(experts)}: {experts}")
    if isinstance(target, bool) or not isinstance(target, int) or not 2 <= target <= len(experts):
        raise ValueError(f"target must be an integer between 2 and the number of experts ({len(experts)}); got {target!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise ValueError(f"budget must be a whole number of annotations >= 0; got {budget!r}")
    ids = list(dict.fromkeys(str(i) for i in image_ids))
    annotated = annotated or {}
    unknown = sorted(set(annotated) - set(ids))
    if unknown:
        raise ValueError(f"annotated names images that are not in the project: {', '.join(unknown[:5])}")
    raters = {i: list(dict.fromkeys(annotated.get(i, ()))) for i in ids}
    prio = {i: float((priority or {}).get(i, math.nan)) for i in ids}

    def rank(i: str) -> tuple[int, float, str]:
        v = prio[i]
        return (0, 0.0, i) if not math.isfinite(v) else (1, -v, i)

    order = sorted(ids, key=rank)
    overlap = {p: 0 for p in combinations(experts, 2)}
    for rs in raters.values():
        for a, b in combinations([e for e in rs if e in experts], 2):
            overlap[_key(a, b, experts)] += 1
    load = {e: sum(1 for rs in raters.values() if e in rs) for e in experts}
    rows: list[dict[str, Any]] = []
    left = math.inf if budget is None else budget
    for i in order:
        while len(raters[i]) < target:
            if left <= 0:
                break
            have = [e for e in raters[i] if e in experts]
            free = [e for e in experts if e not in raters[i]]
            if not free:
                break

            def cost(e: str) -> tuple[int, int, int]:
                new_pairs = sum(1 for x in have if overlap[_key(e, x, experts)] == 0)
                return (-new_pairs, load[e], experts.index(e))

            e = min(free, key=cost)
            new_pairs = [x for x in have if overlap[_key(e, x, experts)] == 0]
            for x in have:
                overlap[_key(e, x, experts)] += 1
            raters[i].append(e)
            load[e] += 1
            left -= 1
            v = prio[i]
            why = (f"{priority_name} {v:.3g}" if math.isfinite(v) else f"{priority_name} unknown (fewer than 2 annotations)")
            why += f"; expert {len(raters[i])} of {target}"
            if new_pairs:
                why += "; first image shared with " + ", ".join(new_pairs)
            rows.append({"order": len(rows) + 1, "image": i, "expert": e, "reason": why,
                         "priority": v if math.isfinite(v) else None})
    short = [i for i in order if len(raters[i]) < target]
    if short:
        logger.info("%d image(s) stay below %d experts (budget or experts exhausted)", len(short), target)
    return Plan(rows, raters, overlap, short)
