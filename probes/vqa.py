"""VQA category scores (Cambrian protocol): the mean of benchmark scores per category, and overall as
the mean of the category means; and the vision gain (:func:`vision_gain`): score minus the blind score
of the same MLLM (every image replaced by a constant one), with paired CIs over documents.

All values are points on 0..100. A category (or overall) is only computed when every member is
present: a mean over a subset is a different number, so it is reported as missing with the list of
absent members instead. Standard errors treat the members as independent:
``stderr(mean of k) = sqrt(sum stderr_i^2) / k``, defined only when every member has one.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np

from evidence.stats import check_level, percentile_interval, resample_means, two_sided_p


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


# --------------------------------------------------------------------------------------------------
# Vision gain: score minus the blind score (the same MLLM with every image replaced by a constant one)


@dataclass(frozen=True)
class VisionGain:
    """``gain = score - blind`` in points over the documents scored in both runs (paired), for one task,
    one category (mean of its tasks' gains) or ``overall`` (mean of the category means).

    ``ci_low`` / ``ci_high``: percentile bootstrap interval over documents (resampled within each task,
    i.e. stratified by task for the aggregates); ``p_value``: two-sided, how often the resampled gain
    crosses zero. ``n``: paired documents; ``unpaired``: documents scored in only one of the two runs.
    An aggregate with a member lacking paired scores has ``gain`` None and names it in ``missing``.
    """

    name: str
    level: str  # "task", "category" or "overall"
    members: list[str]
    score: float | None = None
    blind: float | None = None
    gain: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n: int = 0
    unpaired: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        """True when the confidence interval of the gain excludes zero (the task measures vision)."""
        return self.gain is not None and (self.ci_low > 0.0 or self.ci_high < 0.0)  # type: ignore[operator]


def _paired(task: str, seeing: Mapping[Hashable, float], blind: Mapping[Hashable, float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of the documents present in both runs (in a fixed order), and how many are in only one."""
    shared = sorted(set(seeing) & set(blind), key=lambda doc: (str(type(doc)), doc))
    values = np.array([[seeing[doc], blind[doc]] for doc in shared], dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(values).all():
        raise ValueError(f"vision_gain: task {task!r} has NaN or Inf per-document scores")
    return values[:, 0], values[:, 1], len(set(seeing) ^ set(blind))


def vision_gain(
    scores: Mapping[str, Mapping[Hashable, float]],
    blind: Mapping[str, Mapping[Hashable, float]],
    categories: Mapping[str, str] | None = None,
    *,
    scale: float | Mapping[str, float] = 1.0,
    overall: str = "overall",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[VisionGain]:
    """Score minus blind score per task, per category and overall, with paired bootstrap CIs over documents.

    ``scores`` / ``blind``: task -> {doc_id: the document's score} from the run with images and the blind
    run (any lmms-eval task; per-item values in the metric's unit, times ``scale``, a number or a
    task -> number map, give points). ``categories``: task -> category (e.g. Cambrian's); a category is
    the mean of its tasks' gains and ``overall`` the mean of the category means, as
    :func:`category_table` computes scores, each only when every member has paired documents. The
    bootstrap resamples each task's documents independently with the same replicate index across tasks, so
    the aggregates' intervals are stratified by task. Returns the task rows (in ``scores``' order, then
    tasks only in ``blind``), then the categories (in order of first appearance) and ``overall``;
    no categories, no aggregates.
    """
    check_level(level)
    rows: list[VisionGain] = []
    paired: dict[str, _Gain] = {}
    for task in list(scores) + [task for task in blind if task not in scores]:
        row, gain = _task_gain(task, scores, blind, scale, n_boot, seed, level)
        rows.append(row)
        if gain is not None:
            paired[task] = gain
    if not categories:
        return rows
    members: dict[str, list[str]] = {}
    for task, category in dict(categories).items():
        members.setdefault(category, []).append(task)
    done: dict[str, _Gain] = {}
    for category, tasks_of in members.items():
        row, gain = _mean_gain(category, "category", tasks_of, paired, level)
        rows.append(row)
        if gain is not None:
            done[category] = gain
    rows.append(_mean_gain(overall, "overall", list(members), done, level)[0])
    return rows


@dataclass(frozen=True)
class _Gain:
    """Mean score with and without images (points), the bootstrap distribution of their difference, documents."""

    seeing: float
    unseen: float
    boot: np.ndarray
    n: int


def _summary(name: str, level_name: str, members: list[str], gain: _Gain, level: float, unpaired: int = 0) -> VisionGain:
    low, high = percentile_interval(gain.boot, level)
    return VisionGain(name, level_name, members, gain.seeing, gain.unseen, gain.seeing - gain.unseen, low, high, two_sided_p(gain.boot), gain.n, unpaired)


def _task_gain(task: str, scores: Mapping[str, Mapping[Hashable, float]], blind: Mapping[str, Mapping[Hashable, float]], scale: float | Mapping[str, float],
               n_boot: int, seed: int, level: float) -> tuple[VisionGain, _Gain | None]:
    """The row of one task, and its gain when it has paired documents."""
    if task not in scores or task not in blind:
        return VisionGain(task, "task", [task], missing=[("blind" if task not in blind else "with-image") + " run"]), None
    factor = float(scale[task] if isinstance(scale, Mapping) else scale)
    seeing, unseen, unpaired = _paired(task, scores[task], blind[task])
    if not seeing.size:
        return VisionGain(task, "task", [task], unpaired=unpaired, missing=["documents scored in both runs"]), None
    # Each task its own stream of resamples (stable whatever the other tasks are), the same count for all.
    stream = seed * 1_000_003 + zlib.crc32(task.encode())
    gain = _Gain(float(seeing.mean()) * factor, float(unseen.mean()) * factor, resample_means(seeing - unseen, n_boot, stream) * factor, int(seeing.size))
    return _summary(task, "task", [task], gain, level, unpaired), gain


def _mean_gain(name: str, level_name: str, members: list[str], gains: dict[str, _Gain], level: float) -> tuple[VisionGain, _Gain | None]:
    """The row of an aggregate (the mean of its members' gains, replicate by replicate), and its gain when every member has one."""
    absent = [member for member in members if member not in gains]
    if absent:
        return VisionGain(name, level_name, members, missing=absent), None
    parts = [gains[member] for member in members]
    gain = _Gain(float(np.mean([p.seeing for p in parts])), float(np.mean([p.unseen for p in parts])), np.mean([p.boot for p in parts], axis=0), sum(p.n for p in parts))
    return _summary(name, level_name, members, gain, level), gain
