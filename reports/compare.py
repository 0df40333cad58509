"""Summary tables of one lineage: every metric of every encoder, and each trained encoder's delta
versus the original with a significance mark; and the headline verdict of the lineage.

The test of one delta, in order of preference:

* ``paired`` -- both rows have per-item score files of the same length (same items): a paired
  bootstrap (``evidence.stats.paired_bootstrap``) of ``new - original``; its two-sided p-value (floored
  at 1 / number of resamples, the test's resolution).
* ``ci`` -- no usable per-item scores but both rows have 95% CIs: an unpaired z-test with each
  standard error taken as its CI half-width / 1.96 (normal approximation).
* ``none`` -- neither: the delta is shown without a test.

Arms of training-seed replicates (``Lineage.arms``: encoders with one role and base and a ``replicate``
index): each arm is summarised by the mean over its replicates and the between-seed standard deviation,
and arms are compared with ``evidence.replicates.compare_arms`` (test ``arms``: seed and item variance
together), never replicate by replicate. With one replicate per arm the per-encoder tests above stand,
and the verdict says that training-seed noise is not measured.

Multiple comparisons: every p-value of one lineage (all table lines, per-layer lines included, plus
the headline's +PIVOT-vs-+SFT tests) is one family, adjusted with Holm's step-down method (controls
the family-wise error rate at ``ALPHA``). A delta is ``significant`` only when its *adjusted* p-value
is below ``ALPHA``; raw and adjusted p are both kept.

Deltas are in the metric's own unit (percentage points for accuracies): ``value(new) - value(original)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from evidence.replicates import TEST_NAME as ARMS_TEST, compare_arms
from evidence.stats import paired_bootstrap
from reports.load import Arm, Lineage, LoadedRow, PerItemCache, arm_label, is_ok, role_rank, row_layer

SIG_PAIRED = "paired"
SIG_CI = "ci"
SIG_NONE = "none"
SIG_ARMS = "arms"
ALPHA = 0.05
CORRECTION = "Holm"
@dataclass
class Cell:
    """One encoder's value on one table line, with its delta versus the lineage's original."""

    status: str  # ok | skipped | failed | absent
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    reason: str = ""
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None
    test: str = SIG_NONE
    significant: bool = False
    better: bool | None = None  # delta in the good direction (None: no delta or zero)
    note: str = ""  # why no paired test was possible, p-value, ...
    p_value: float | None = None  # raw two-sided p of the delta's test
    p_adjusted: float | None = None  # after the lineage's multiple-comparison correction
    selected: dict = field(default_factory=dict)  # hyperparameters the probe chose (from the row)
    degenerate: str = ""  # why the row measures nothing (constant predictions, not above its trivial baseline)
    sd: float | None = None  # an arm's between-seed standard deviation of its replicates' values
    vision_gain: float | None = None  # VQA: score minus the blind score (images replaced by a constant one)
    blind: float | None = None  # VQA: the blind score
    k: int = 1  # replicates behind the value


@dataclass
class TableLine:
    suite: str
    task: str
    dataset: str
    metric: str
    variant: str
    higher_is_better: bool
    layer: object
    cells: list[Cell] = field(default_factory=list)
    n: int = 0
    n_classes: int | None = None
    chance: float | None = None
    baseline: float | None = None  # the trivial baseline of the line's first row, in the metric's units


def degenerate(row) -> str:
    """Why a row measures nothing ('' when it does): its ``extra["degenerate"]``."""
    reason = row.extra.get("degenerate")
    return str(reason) if reason else ""


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _scale(values: np.ndarray, reported: float) -> float:
    """1 or 100: the factor that turns the per-item mean into the reported value (accuracies are in %)."""
    mean = float(values.mean())
    return min((1.0, 100.0), key=lambda scale: abs(mean * scale - reported))


def _compare(base: LoadedRow, new: LoadedRow, cells: Cell, cache: PerItemCache, n_boot: int) -> None:
    base_row, new_row = base.row, new.row
    cells.delta = float(new_row.value) - float(base_row.value)
    if cells.delta != 0:
        cells.better = (cells.delta > 0) == bool(base_row.higher_is_better)
    base_scores, new_scores = cache.get(base), cache.get(new)
    why_not = ""
    if isinstance(base_scores, str) or isinstance(new_scores, str):
        why_not = base_scores if isinstance(base_scores, str) else new_scores
    elif base_scores.shape != new_scores.shape:
        why_not = f"per-item lengths differ ({base_scores.size} vs {new_scores.size})"
    elif (
        base_row.dataset_fingerprint
        and new_row.dataset_fingerprint
        and base_row.dataset_fingerprint != new_row.dataset_fingerprint
    ):
        why_not = "dataset fingerprints differ"
    if not why_not:
        scale = _scale(new_scores, float(new_row.value))
        diff = paired_bootstrap(base_scores, new_scores, scale=scale, n_boot=n_boot, seed=0)
        cells.test = SIG_PAIRED
        cells.p_value = max(diff.p_value, 1.0 / n_boot)
        cells.significant = cells.p_value < ALPHA
        cells.delta_ci = (diff.ci_low, diff.ci_high)
        cells.note = f"paired bootstrap over {diff.n} items: 95% CI [{diff.ci_low:.3g}, {diff.ci_high:.3g}]"
        return
    p_value = _p_from_cis(base_row, new_row)
    if p_value is not None:
        cells.test = SIG_CI
        cells.p_value = p_value
        cells.significant = p_value < ALPHA
        cells.note = f"{why_not}; z-test from the two 95% CIs"
    else:
        cells.note = f"{why_not}; no CIs either: untested"


def _p_from_cis(base_row, new_row) -> float | None:
    """Two-sided p of an unpaired z-test, standard errors = CI half-widths / 1.96; None without CIs."""
    bounds = (base_row.ci_low, base_row.ci_high, new_row.ci_low, new_row.ci_high)
    if any(value is None or not math.isfinite(float(value)) for value in bounds):
        return None
    se = math.hypot((base_row.ci_high - base_row.ci_low) / 3.92, (new_row.ci_high - new_row.ci_low) / 3.92)
    delta = float(new_row.value) - float(base_row.value)
    if se == 0:
        return 1.0 if delta == 0 else 0.0
    return math.erfc(abs(delta) / se / math.sqrt(2.0))


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the i-th smallest p times (m - i),
    made monotone and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def apply_correction(cells: list[Cell]) -> int:
    """Adjust the p-values of ``cells`` as one family (Holm) and set ``significant`` from the adjusted
    p; returns the family size."""
    tested = [cell for cell in cells if cell.p_value is not None]
    for cell, adjusted in zip(tested, holm_adjust([cell.p_value for cell in tested])):
        cell.p_adjusted = adjusted
        cell.significant = adjusted < ALPHA
    return len(tested)


def lineage_table(lineage: Lineage, cache: PerItemCache, n_boot: int = 2000, correct: bool = True) -> list[TableLine]:
    """One line per row identity (suite, task, dataset, metric, variant), one cell per encoder of the
    lineage; with ``correct``, the p-values of all its cells are Holm-adjusted as one family."""
    by_id: dict[tuple, dict[str, LoadedRow]] = {}
    for item in lineage.rows:
        by_id.setdefault(item.row.identity, {})[item.row.encoder] = item
    original = lineage.original.name if lineage.original else None
    replicate_of = {name: arm for arm in lineage.arms() if arm.k > 1 for name in arm.names}
    lines = []
    for ident, per_encoder in by_id.items():
        first = next(iter(per_encoder.values())).row
        if original in per_encoder:
            first = per_encoder[original].row
        line = TableLine(*ident, higher_is_better=bool(first.higher_is_better), layer=row_layer(first), n=first.n,
                         n_classes=first.extra.get("n_classes"), chance=first.extra.get("chance"), baseline=_number(first.extra.get("trivial_baseline")))
        base_item = per_encoder.get(original) if original else None
        for info in lineage.encoders:
            item = per_encoder.get(info.name)
            if item is None:
                line.cells.append(Cell(status="absent"))
                continue
            row = item.row
            cell = Cell(
                status=row.status if is_ok(row) or row.status != "ok" else "failed",
                value=row.value,
                ci_low=row.ci_low,
                ci_high=row.ci_high,
                n=row.n,
                reason=row.reason or ("" if is_ok(row) else "row has status ok but no value"),
                selected=row.extra.get("selected") if isinstance(row.extra.get("selected"), dict) else {},
                degenerate=degenerate(row),
                vision_gain=_number(row.extra.get("vision_gain")),
                blind=_number(row.extra.get("blind_score")),
            )
            if info.name in replicate_of:
                cell.note = f"replicate {info.replicate} of {replicate_of[info.name].label}: compared as an arm, see the arms table"
            elif is_ok(row) and base_item is not None and info.name != original and is_ok(base_item.row):
                # A degenerate original measures nothing, so nothing is compared with it; a row that fell to its
                # trivial baseline where the original stands above it is compared: that fall is the finding.
                if degenerate(base_item.row):
                    cell.note = f"not compared: the original row is degenerate ({degenerate(base_item.row)})"
                else:
                    _compare(base_item, item, cell, cache, n_boot)
                    if cell.degenerate:
                        cell.note = f"{cell.note}; this row is degenerate ({cell.degenerate})" if cell.note else f"this row is degenerate ({cell.degenerate})"
            line.cells.append(cell)
        lines.append(line)
    if correct:
        apply_correction([cell for line in lines for cell in line.cells])
    return lines


@dataclass
class Verdict:
    """The headline of one suite in a lineage: its primary line, the cells of original / +SFT / +PIVOT
    (or whatever roles the lineage has) and the +PIVOT-vs-+SFT comparison when both exist."""

    line: TableLine
    entries: list[tuple[str, str, Cell]]  # (label, encoder name, cell)
    pivot_vs_sft: Cell | None = None
    summary: str = ""


def _primary_line(suite: str, lines: list[TableLine], headlines: dict[str, list]) -> TableLine | None:
    """The suite's headline line: the first of its declared (task, metric[, preferred variant]) that has
    an ok cell (the preferred variant among that task's lines, else the first), else its first line."""
    candidates = [line for line in lines if line.suite == suite and line.layer is None and line.task != "data"
                  and any(cell.status == "ok" for cell in line.cells)]
    if not candidates:
        return None
    for task, metric, *preferred in headlines.get(suite, []):
        matches = [line for line in candidates if (line.task, line.metric) == (task, metric)]
        if matches:
            return next((line for line in matches if preferred and preferred[0] in line.variant), matches[0])
    return candidates[0]


def _label(info, lineage: Lineage) -> str:
    return arm_label(info, lineage.name)


def _describe(cell: Cell) -> str:
    if cell.delta is None:
        return "untested"
    if cell.p_adjusted is None:
        return f"{cell.delta:+.3g}, untested (neither per-item scores nor CIs)"
    if not cell.significant:
        return f"no significant difference ({cell.delta:+.3g}, Holm-adjusted p={cell.p_adjusted:.2g})"
    word = "better" if cell.better else "worse"
    return f"significantly {word} ({cell.delta:+.3g}, Holm-adjusted p={cell.p_adjusted:.2g})"


@dataclass
class ArmLine:
    """One table line summarised per arm (``Lineage.arms`` order): mean over replicates, between-seed sd,
    and each trained arm's delta versus the original with the replicate-aware test."""

    line: TableLine
    cells: list[Cell]


def _items_by_line(lineage: Lineage) -> dict[tuple, dict[str, LoadedRow]]:
    found: dict[tuple, dict[str, LoadedRow]] = {}
    for item in lineage.rows:
        found.setdefault(item.row.identity, {})[item.row.encoder] = item
    return found


def _arm_cell(arm: Arm, items: dict[str, LoadedRow]) -> Cell:
    """The arm's mean over its replicates' ok values, their sd, and the count; degenerate when one is."""
    present = [items[name] for name in arm.names if name in items]
    if not present:
        return Cell(status="absent")
    ok = [item for item in present if is_ok(item.row)]
    if len(ok) < len(present):
        bad = next(item for item in present if not is_ok(item.row))
        return Cell(status=bad.row.status if bad.row.status != "ok" else "failed", reason=f"{len(present) - len(ok)} of {len(present)} replicates: {bad.row.reason}")
    values = np.array([float(item.row.value) for item in ok])
    broken = [degenerate(item.row) for item in ok if degenerate(item.row)]
    return Cell(status="ok", value=float(values.mean()), sd=float(values.std(ddof=1)) if len(values) > 1 else None, k=len(values), n=ok[0].row.n,
                degenerate=f"{len(broken)} of {len(ok)} replicates: {broken[0]}" if broken else "")


def _compare_arm(base: Arm, base_items: dict[str, LoadedRow], arm: Arm, items: dict[str, LoadedRow], cell: Cell, base_cell: Cell, cache: PerItemCache, higher: bool) -> None:
    """``cell`` (arm) minus ``base_cell`` with ``evidence.replicates.compare_arms`` on the replicates' per-item scores."""
    cell.delta = float(cell.value) - float(base_cell.value)
    if cell.delta != 0:
        cell.better = (cell.delta > 0) == higher
    if base_cell.degenerate:  # as in lineage_table: a degenerate reference measures nothing; a fall to the baseline is a finding
        cell.note = f"not compared: {base.label} is degenerate ({base_cell.degenerate})"
        return
    scores = {name: cache.get(items_of[name]) for items_of in (base_items, items) for name in items_of if name in base.names + arm.names}
    problem = next((value for value in scores.values() if isinstance(value, str)), "")
    if not problem and len({value.shape for value in scores.values()}) != 1:
        problem = "per-item lengths differ"
    if problem:
        cell.note = f"{problem}: untested"
        return
    first = items[arm.names[0]].row
    scale = _scale(scores[arm.names[0]], float(first.value))
    result = compare_arms([scores[n] for n in base.names], [scores[n] for n in arm.names], scale=scale, a_is_fixed=base.fixed, b_is_fixed=arm.fixed)
    cell.test, cell.p_value, cell.significant = SIG_ARMS, result.p_value, result.p_value < ALPHA
    cell.delta_ci = (result.ci_low, result.ci_high)
    seeds = "" if result.seed_noise_measured else "; training-seed noise not measured (one replicate)"
    cell.note = f"{ARMS_TEST}: {result.k_b} vs {result.k_a} replicates, {result.n} items, 95% CI [{result.ci_low:.3g}, {result.ci_high:.3g}], df {result.df:.3g}{seeds}"


def arm_table(lineage: Lineage, lines: list[TableLine], cache: PerItemCache) -> list[ArmLine]:
    """The lines per arm when the lineage has replicates (else empty); trained arms are compared with
    the original arm. P-values are not yet corrected (``lineage_analysis`` adds them to the family)."""
    if not lineage.replicated:
        return []
    arms, by_line = lineage.arms(), _items_by_line(lineage)
    original = next((arm for arm in arms if arm.fixed), None)
    found = []
    for line in lines:
        items = by_line.get((line.suite, line.task, line.dataset, line.metric, line.variant), {})
        cells = [_arm_cell(arm, items) for arm in arms]
        if original is not None:
            base_cell = cells[arms.index(original)]
            for arm, cell in zip(arms, cells):
                if arm is not original and cell.status == "ok" and base_cell.status == "ok":
                    _compare_arm(original, items, arm, items, cell, base_cell, cache, line.higher_is_better)
        found.append(ArmLine(line, cells))
    return found


def lineage_verdicts(lineage: Lineage, lines: list[TableLine], cache: PerItemCache, n_boot: int = 2000, headlines: dict[str, list] | None = None,
                     arm_lines: list[ArmLine] | None = None) -> list[Verdict]:
    """One verdict per suite (its headline metric, as the runs' config.json declare it: ``headlines``
    suite -> [(task, metric[, preferred variant]), ...]); the +PIVOT-vs-+SFT cells are *not* yet
    corrected: the caller adds them to the lineage's family (see ``lineage_analysis``)."""
    suites = list(dict.fromkeys(line.suite for line in lines))
    if arm_lines:
        return _arm_verdicts(lineage, lines, arm_lines, suites, cache, headlines or {})
    index = {info.name: position for position, info in enumerate(lineage.encoders)}
    by_rank = {}
    for info in lineage.encoders:
        if info.name != lineage.name:
            by_rank.setdefault(role_rank(info.role), info)
    sft, pivot = by_rank.get(1), by_rank.get(2)
    rows = {(item.row.identity, item.row.encoder): item for item in lineage.rows}
    verdicts = []
    for suite in suites:
        line = _primary_line(suite, lines, headlines or {})
        if line is None:
            continue
        entries = [(_label(info, lineage), info.name, line.cells[index[info.name]]) for info in lineage.encoders]
        verdict = Verdict(line, entries)
        ident = (line.suite, line.task, line.dataset, line.metric, line.variant)
        if sft and pivot and (ident, sft.name) in rows and (ident, pivot.name) in rows:
            base, new = rows[(ident, sft.name)], rows[(ident, pivot.name)]
            if is_ok(base.row) and is_ok(new.row) and not degenerate(base.row):  # as in lineage_table: a degenerate reference is never compared
                cell = Cell(status="ok", value=new.row.value, ci_low=new.row.ci_low, ci_high=new.row.ci_high, n=new.row.n)
                _compare(base, new, cell, cache, n_boot)
                verdict.pivot_vs_sft = cell
        verdicts.append(verdict)
    return verdicts


def _arm_verdicts(lineage: Lineage, lines: list[TableLine], arm_lines: list[ArmLine], suites: list[str], cache: PerItemCache, headlines: dict[str, list]) -> list[Verdict]:
    """Verdicts over arms: each arm's mean ± between-seed sd, and +PIVOT's arm against +SFT's with the
    replicate-aware test."""
    arms = lineage.arms()
    by_line = {id(item.line): item for item in arm_lines}
    sft = next((arm for arm in arms if not arm.fixed and role_rank(arm.members[0].role) == 1), None)
    pivot = next((arm for arm in arms if not arm.fixed and role_rank(arm.members[0].role) == 2), None)
    items_by_line = _items_by_line(lineage)
    verdicts = []
    for suite in suites:
        line = _primary_line(suite, lines, headlines)
        if line is None:
            continue
        cells = by_line[id(line)].cells
        entries = [(f"{arm.label} ({arm.k} seeds)" if arm.k > 1 else arm.label, ", ".join(arm.names), cell) for arm, cell in zip(arms, cells)]
        verdict = Verdict(line, entries)
        if sft and pivot:
            sft_cell, pivot_cell = cells[arms.index(sft)], cells[arms.index(pivot)]
            if sft_cell.status == "ok" and pivot_cell.status == "ok":
                cell = Cell(status="ok", value=pivot_cell.value, sd=pivot_cell.sd, k=pivot_cell.k, n=pivot_cell.n)
                items = items_by_line.get((line.suite, line.task, line.dataset, line.metric, line.variant), {})
                _compare_arm(sft, items, pivot, items, cell, sft_cell, cache, line.higher_is_better)
                verdict.pivot_vs_sft = cell
        verdicts.append(verdict)
    return verdicts


def summarise(verdict: Verdict, lineage: Lineage) -> str:
    """The verdict sentence (after correction): how each trained encoder compares with the original,
    and +PIVOT with +SFT."""
    parts = [f"{label} vs original: {_describe(cell)}" + (f", and degenerate ({cell.degenerate})" if cell.degenerate else "")
             for label, name, cell in verdict.entries if name != lineage.name and cell.status == "ok" and cell.delta is not None]
    parts += [f"{label} is degenerate and not compared ({cell.degenerate})" for label, _, cell in verdict.entries
              if cell.status == "ok" and cell.degenerate and cell.delta is None]
    if verdict.pivot_vs_sft is not None:
        cell = verdict.pivot_vs_sft
        across = f" across {cell.k} training seeds" if cell.test == SIG_ARMS and cell.k > 1 else ""
        if cell.delta is None or cell.p_adjusted is None:
            parts.insert(0, f"+PIVOT vs +SFT: {'untested' if cell.delta is None else f'{cell.delta:+.3g}, untested'} ({cell.note or 'neither per-item scores nor CIs'})")
        elif cell.significant:
            parts.insert(0, f"+PIVOT {'beats' if cell.better else 'is worse than'} +SFT significantly{across} ({cell.delta:+.3g}, Holm-adjusted p={cell.p_adjusted:.2g})")
        else:
            parts.insert(0, f"+PIVOT does not beat +SFT significantly{across} ({cell.delta:+.3g}, Holm-adjusted p={cell.p_adjusted:.2g})")
    if not lineage.replicated and any(name != lineage.name for _, name, _ in verdict.entries):
        parts.append("training-seed noise is not measured (one training run per recipe)")
    return "; ".join(parts) or "no trained encoder to compare"


def lineage_analysis(lineage: Lineage, cache: PerItemCache, n_boot: int = 2000, headlines: dict[str, list] | None = None) -> tuple[list[TableLine], list[Verdict], int, list[ArmLine]]:
    """Table lines, arm lines (replicated lineages) and headline verdicts of a lineage with one Holm
    correction over all their tests; returns (lines, verdicts, family size, arm lines)."""
    lines = lineage_table(lineage, cache, n_boot=n_boot, correct=False)
    arm_lines = arm_table(lineage, lines, cache)
    verdicts = lineage_verdicts(lineage, lines, cache, n_boot=n_boot, headlines=headlines, arm_lines=arm_lines)
    family = [cell for line in lines for cell in line.cells] + [cell for item in arm_lines for cell in item.cells] + [v.pivot_vs_sft for v in verdicts if v.pivot_vs_sft]
    size = apply_correction(family)
    for verdict in verdicts:
        verdict.summary = summarise(verdict, lineage)
    return lines, verdicts, size, arm_lines
