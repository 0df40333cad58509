"""VQA category scores (Cambrian protocol): the mean of benchmark scores per category, and overall as
the mean of the category means.

All values are points on 0..100. A category (or overall) is only computed when every member is
present: a mean over a subset is a different number, so it is reported as missing with the list of
absent members instead. Standard errors treat the members as independent:
``stderr(mean of k) = sqrt(sum stderr_i^2) / k``, defined only when every member has one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Score:
    """A score in points (0..100) with its standard error (points, None when unknown) and item count."""

    value: float
    stderr: float | None = None
    n: int = 0


@dataclass
class Aggregate:
    """A mean of member scores; ``score`` is None when members are missing (listed in ``missing``)."""

    name: str
    members: list[str]
    score: Score | None
    missing: list[str] = field(default_factory=list)


def mean_score(scores: list[Score]) -> Score:
    """Unweighted mean of ``scores``, its standard error (independent members) and the total n."""
    if not scores:
        raise ValueError("mean of no scores")
    value = sum(s.value for s in scores) / len(scores)
    stderr = None
    if all(s.stderr is not None for s in scores):
        stderr = math.sqrt(sum(s.stderr**2 for s in scores)) / len(scores)
    return Score(value, stderr, sum(s.n for s in scores))


def aggregate(name: str, members: list[str], scores: dict[str, Score]) -> Aggregate:
    """The mean over ``members`` of ``scores`` (by member name), or a missing aggregate naming the absent ones."""
    missing = [member for member in members if member not in scores]
    if missing:
        return Aggregate(name, list(members), None, missing)
    return Aggregate(name, list(members), mean_score([scores[member] for member in members]))


def category_table(benchmark_scores: dict[str, Score], categories: dict[str, list[str]], overall: str = "overall") -> list[Aggregate]:
    """One aggregate per category (mean of its benchmarks) and a last one, ``overall``, the mean of
    the category means (present only when every category is)."""
    rows = [aggregate(category, members, benchmark_scores) for category, members in categories.items()]
    category_scores = {row.name: row.score for row in rows if row.score is not None}
    rows.append(aggregate(overall, list(categories), category_scores))
    return rows
