"""The report's first screen: the answer to the study's question, in a few lines per lineage.

Per lineage and suite, on the suite's headline metric (``reports.compare``'s verdict line): each arm's value
(the mean ± between-seed sd over its training-seed replicates, or a single run's value), and one sentence:
is +PIVOT ahead of +SFT, after the lineage's Holm correction, with the replicate-aware test when the arms
have seeds. Per suite where controls ran: was the positive control flagged significantly worse, and was
the null control left unflagged; a control that does not behave is a finding about the instrument.

Nothing is computed here: every value, delta and adjusted p-value comes from
``reports.compare.lineage_analysis`` (the verdicts, their cells and the lineage's table lines). A row marked
degenerate is said so, and never turned into a verdict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from reports.compare import Cell, TableLine, Verdict
from reports.format import mean_sd, num, p_text, signed
from reports.load import Arm, Lineage, arm_label, role_rank

POSITIVE_CONTROL = "positive-control"  # a copy of an encoder with a planted defect: must be flagged worse
NULL_CONTROL = "null-control"  # a seed-only retraining: must not be flagged
CONTROL_ROLES = (POSITIVE_CONTROL, NULL_CONTROL)

# Tones the template colours: the sentence or value is a normal result, a degenerate row, a failure, ...
OK, GOOD, BAD, DEGENERATE, PROBLEM, UNTESTED = "", "good", "bad", "degenerate", "problem", "untested"


def control_role(role: str) -> str:
    """``positive-control`` / ``null-control`` (underscores and case forgiven), else ''."""
    canonical = role.strip().lower().replace("_", "-")
    return canonical if canonical in CONTROL_ROLES else ""


@dataclass
class ArmValue:
    """One arm's headline value as the summary prints it."""

    label: str
    text: str  # "31.20 ± 0.41", "28.10", "failed", "—"
    delta: str = ""  # versus the original, "+1.20" ('' for the original or when not compared)
    tone: str = OK  # GOOD / BAD: significantly better / worse than the original after Holm
    title: str = ""  # hover text: CI, test, adjusted p, why not compared
    degenerate: str = ""


@dataclass
class SuiteLine:
    """One suite of one lineage: its headline line, the arms' values and the verdict sentence."""

    suite: str
    line: TableLine
    values: list[ArmValue]
    sentence: str
    tone: str = OK


@dataclass
class ArmColumn:
    label: str
    k: int
    control: str = ""  # POSITIVE_CONTROL / NULL_CONTROL / ''


@dataclass
class LineageSummary:
    """``columns``: the arms in verdict order; ``controls_only``: every trained encoder is a control (the
    controls block says what there is to say, no table is shown)."""

    name: str
    index: int  # the lineage's 1-based section number (its anchor is lineage-<index>)
    columns: list[ArmColumn]
    lines: list[SuiteLine]
    controls_only: bool = False


@dataclass
class ControlCheck:
    """Did one control behave on one suite? ``behaved``: True, False (said in red) or None (could not be checked)."""

    suite: str
    kind: str  # POSITIVE_CONTROL / NULL_CONTROL
    encoder: str
    behaved: bool | None
    text: str


@dataclass
class SuiteControls:
    suite: str
    checks: list[ControlCheck] = field(default_factory=list)

    @property
    def sentence(self) -> str:
        return f"{self.suite}: " + "; ".join(check.text for check in self.checks) + "."


def verdict_arms(lineage: Lineage) -> list[Arm]:
    """The arms that ``Verdict.entries`` follow: ``Lineage.arms`` when replicated (the verdicts compare arms),
    else one arm per encoder in lineage order."""
    if lineage.replicated:
        return lineage.arms()
    return [Arm(arm_label(info, lineage.name), [info], fixed=info.name == lineage.name) for info in lineage.encoders]


def _arm_control(arm: Arm) -> str:
    return control_role(arm.members[0].role) if not arm.fixed else ""


def _holm(cell: Cell) -> str:
    return f"Holm p = {p_text(cell.p_adjusted)}"


def _value_text(cell: Cell) -> str:
    return mean_sd(float(cell.value), cell.sd) if cell.status == "ok" else ("—" if cell.status == "absent" else cell.status)


def _arm_value(label: str, cell: Cell, is_original: bool) -> ArmValue:
    if cell.status != "ok":
        return ArmValue(label, _value_text(cell), title=cell.reason)
    hover = [f"95% CI [{num(cell.ci_low)}, {num(cell.ci_high)}]"] if cell.ci_low is not None and cell.ci_high is not None else []
    hover += [f"mean of {cell.k} training seeds ± their sd"] if cell.k > 1 else []
    hover += [cell.note] if cell.note else []
    value = ArmValue(label, _value_text(cell), title="; ".join(hover), degenerate=cell.degenerate)
    if not is_original and cell.delta is not None:
        value.delta = signed(cell.delta)
        if cell.p_adjusted is not None:
            value.title += f"{'; ' if value.title else ''}vs original {signed(cell.delta)}, {_holm(cell)}"
            if cell.significant and cell.better is not None:
                value.tone = GOOD if cell.better else BAD
    return value


def _seeds(label_a: str, cell_a: Cell, label_b: str, cell_b: Cell) -> tuple[str, str]:
    """(``K=2 seeds each`` / ``K=3 and 2 seeds`` / ``one run each``, and what is then not measured or '')."""
    if cell_a.k > 1 and cell_b.k > 1:
        return (f"K={cell_a.k} seeds each" if cell_a.k == cell_b.k else f"K={cell_a.k} and {cell_b.k} seeds"), ""
    if cell_a.k == 1 and cell_b.k == 1:
        return "one training run each", "training-seed noise is not measured"
    single = label_a if cell_a.k == 1 else label_b
    return f"K={cell_a.k} and {cell_b.k}", f"the training-seed noise of {single} is not measured"


def _pair_sentence(line: TableLine, sft: tuple[str, Cell], pivot: tuple[str, Cell], compared: Cell | None) -> tuple[str, str]:
    """(sentence, tone) of +PIVOT against +SFT on the line's metric, from the verdict's comparison cell."""
    (sft_label, sft_cell), (pivot_label, pivot_cell) = sft, pivot
    head = f"{pivot_label} vs {sft_label}"
    broken = [(label, cell) for label, cell in (sft, pivot) if cell.status != "ok"]
    if broken:
        label, cell = broken[0]
        return f"{head} not compared: {label} is {cell.status}{f' ({cell.reason})' if cell.reason else ''}", PROBLEM
    if sft_cell.degenerate:
        whose = "both rows are" if pivot_cell.degenerate else f"{sft_label}'s row is"
        return f"{head} not compared: {whose} degenerate ({sft_cell.degenerate}): the reference measures nothing here", DEGENERATE
    seeds, unmeasured = _seeds(pivot_label, pivot_cell, sft_label, sft_cell)
    values = f"{_value_text(pivot_cell)} vs {_value_text(sft_cell)} ({seeds})"
    tail = f"; {unmeasured}" if unmeasured else ""
    if compared is None or compared.delta is None:
        return f"{head} not compared ({values}){tail}", UNTESTED
    if compared.p_adjusted is None:
        why = compared.note.removesuffix(": untested") if compared.note else "neither per-item scores nor CIs"
        return f"{head} untested ({why}): {values}{tail}", UNTESTED
    if pivot_cell.degenerate:
        fell = compared.significant and compared.better is False
        outcome = f"it fell significantly below {sft_label}" if fell else f"{signed(compared.delta)} against {sft_label}"
        return f"not a verdict: {pivot_label}'s row is degenerate ({pivot_cell.degenerate}); {outcome}: {values}, {_holm(compared)}{tail}", DEGENERATE
    if compared.significant and compared.better is not None:
        where = "ahead of" if compared.better else "behind"
        return f"{pivot_label} is {where} {sft_label} on {line.metric}: {values}, {_holm(compared)}{tail}", GOOD if compared.better else BAD
    return f"{pivot_label} and {sft_label} are not separated on {line.metric}: {values}, {_holm(compared)}{tail}", OK


def _versus_original(line: TableLine, trained: list[tuple[str, Cell]], has_original: bool, replicated: bool) -> tuple[str, str]:
    """(sentence, tone) for a lineage without a +SFT/+PIVOT pair: each trained arm against the original."""
    if not trained:
        return "only the original in these runs: nothing to compare", OK
    if not has_original:
        return "the original is not in these runs: nothing is compared", PROBLEM
    parts = []
    for label, cell in trained:
        if cell.status != "ok":
            parts.append(f"{label} is {cell.status}")
        elif cell.delta is None:
            parts.append(f"{label} not compared ({cell.note or 'no test'})")
        elif cell.p_adjusted is None:
            parts.append(f"{label} {signed(cell.delta)} vs original, untested")
        elif cell.significant and cell.better is not None:
            parts.append(f"{label} is significantly {'better' if cell.better else 'worse'} than the original ({signed(cell.delta)}, {_holm(cell)})")
        else:
            parts.append(f"{label} is not separated from the original ({signed(cell.delta)}, {_holm(cell)})")
        if cell.status == "ok" and cell.degenerate:
            parts[-1] += f", and its row is degenerate ({cell.degenerate})"
    if not replicated:
        parts.append("one training run each: training-seed noise is not measured")
    return "; ".join(parts), OK


def _suite_line(lineage: Lineage, arms: list[Arm], verdict: Verdict) -> SuiteLine:
    line = verdict.line
    cells = [cell for _, _, cell in verdict.entries]
    values = [_arm_value(arm.label, cell, arm.fixed) for arm, cell in zip(arms, cells)]
    ok = [cell for cell in cells if cell.status == "ok"]
    if ok and all(cell.degenerate for cell in ok):
        return SuiteLine(line.suite, line, values, f"every arm's row is degenerate ({ok[0].degenerate}): {line.metric} measures nothing here", DEGENERATE)
    by_rank = {}
    for arm, cell in zip(arms, cells):
        if not arm.fixed and not _arm_control(arm):
            by_rank.setdefault(role_rank(arm.members[0].role), (arm.label, cell))
    if 1 in by_rank and 2 in by_rank:
        sentence, tone = _pair_sentence(line, by_rank[1], by_rank[2], verdict.pivot_vs_sft)
    else:
        trained = [(arm.label, cell) for arm, cell in zip(arms, cells) if not arm.fixed and not _arm_control(arm)]
        sentence, tone = _versus_original(line, trained, lineage.original is not None, lineage.replicated)
    return SuiteLine(line.suite, line, values, sentence, tone)


def lineage_summary(lineage: Lineage, verdicts: list[Verdict], index: int) -> LineageSummary:
    """The summary table of one lineage: a column per arm, a line per suite (its verdict's headline)."""
    arms = verdict_arms(lineage)
    columns = [ArmColumn(arm.label, arm.k, _arm_control(arm)) for arm in arms]
    trained = [arm for arm in arms if not arm.fixed]
    controls_only = bool(trained) and all(_arm_control(arm) for arm in trained)
    return LineageSummary(lineage.name, index, columns, [_suite_line(lineage, arms, verdict) for verdict in verdicts], controls_only)


def _line_name(line: TableLine) -> str:
    return f"{line.task} {line.metric}" + (f" ({line.variant})" if line.variant else "")


def _against(cell: Cell, reference: tuple[str, Cell] | None) -> str:
    """``24.00 vs 46.50 (control-stage1)``: the control's value and its reference's, when both are ok."""
    if reference is None or reference[1].status != "ok" or cell.status != "ok":
        return ""
    return f"{_value_text(cell)} vs {_value_text(reference[1])} ({reference[0]})"


def _positive(suite: str, name: str, cell: Cell, metric: str, reference: tuple[str, Cell] | None, worse_elsewhere: list[str]) -> ControlCheck:
    """The positive control must be flagged significantly worse than its reference on the suite's headline."""
    subject = f"positive control {name}"
    if cell.status != "ok":
        return ControlCheck(suite, POSITIVE_CONTROL, name, None, f"{subject} could not be checked: its row is {cell.status}{f' ({cell.reason})' if cell.reason else ''}")
    values = _against(cell, reference)
    if cell.significant and cell.better is False:
        return ControlCheck(suite, POSITIVE_CONTROL, name, True, f"{subject} flagged significantly worse on {metric}: {values}, {_holm(cell)}")
    if cell.significant and cell.better:
        text = f"{subject} flagged significantly BETTER on {metric}: {values}, {_holm(cell)}; the planted defect is seen the wrong way round"
    elif cell.p_adjusted is not None:
        text = f"{subject} NOT flagged on {metric}: {values}, {_holm(cell)}"
    else:
        text = f"{subject} NOT flagged on {metric}: {cell.note or 'untested'}"
    if worse_elsewhere:
        text += f" (other lines of {suite} flag it worse: {', '.join(worse_elsewhere[:3])}{', ...' if len(worse_elsewhere) > 3 else ''})"
    return ControlCheck(suite, POSITIVE_CONTROL, name, False, text)


def _null(suite: str, name: str, cell: Cell, metric: str, reference: tuple[str, Cell] | None, flagged: list[str], tested: int) -> ControlCheck:
    """The null control must not be flagged on any line of the suite."""
    subject = f"null control {name}"
    if flagged:
        return ControlCheck(suite, NULL_CONTROL, name, False, f"{subject} flagged on {', '.join(flagged[:3])}{', ...' if len(flagged) > 3 else ''}: "
                                                              "a seed-only retraining called different (a false alarm)")
    if not tested:
        why = f"its row is {cell.status}" if cell.status != "ok" else (cell.note or "no line of the suite was tested")
        return ControlCheck(suite, NULL_CONTROL, name, None, f"{subject} could not be checked: {why}")
    headline = f"{metric} {_against(cell, reference)}, {_holm(cell)}" if cell.p_adjusted is not None else f"{metric}: {cell.note or 'untested'}"
    lines = f"{tested} tested line{'s' if tested != 1 else ''}"
    return ControlCheck(suite, NULL_CONTROL, name, True, f"{subject} left unflagged ({lines}; {headline})")


def _control_line(suite: str, lines: list[TableLine], verdict: Verdict, control_headlines: dict[str, list]) -> TableLine:
    """The line a positive control of ``suite`` is judged on: the first of the suite's declared control
    headline (task, metric) present among ``lines`` (its first variant), else the verdict's line."""
    for task, metric, *_ in control_headlines.get(suite, []):
        found = next((line for line in lines if (line.suite, line.task, line.metric) == (suite, task, metric) and line.layer is None), None)
        if found is not None:
            return found
    return verdict.line


def control_checks(lineage: Lineage, lines: list[TableLine], verdicts: list[Verdict], control_headlines: dict[str, list] | None = None) -> list[ControlCheck]:
    """One check per control encoder of the lineage and suite: a positive control on the suite's control headline
    (``control_headlines``, as the runs declare it; else the verdict's headline, the value the summary shows), a null
    control on that cell and on the suite's other lines (the positive control's flags there are named; for the null
    control a flag anywhere is a false alarm)."""
    arms = verdict_arms(lineage)
    column = {info.name: index for index, info in enumerate(lineage.encoders)}
    checks = []
    for verdict in verdicts:
        suite = verdict.line.suite
        others = [line for line in lines if line.suite == suite and line is not verdict.line]
        reference = next(((arm.names[0], cell) for arm, (_, _, cell) in zip(arms, verdict.entries) if arm.fixed), None)
        metric = _line_name(verdict.line)
        judged_on = _control_line(suite, lines, verdict, control_headlines or {})
        for arm, (_, _, cell) in zip(arms, verdict.entries):
            kind = _arm_control(arm)
            if not kind or cell.status == "absent":
                continue
            name = arm.names[0]
            elsewhere = [(line, line.cells[column[name]]) for line in others]
            if kind == POSITIVE_CONTROL:
                judged, against = cell, reference  # the verdict's cells, unless the suite declares another line for controls
                if judged_on is not verdict.line:
                    judged = judged_on.cells[column[name]]
                    against = (reference[0], judged_on.cells[column[reference[0]]]) if reference and reference[0] in column else None
                worse = [_line_name(line) for line, other in elsewhere if other.significant and other.better is False and line is not judged_on]
                checks.append(_positive(suite, name, judged, _line_name(judged_on), against, worse))
            else:
                flagged = [f"{metric} ({signed(cell.delta)}, {_holm(cell)})"] if cell.significant else []
                flagged += [f"{_line_name(line)} ({signed(other.delta)}, {_holm(other)})" for line, other in elsewhere if other.significant]
                tested = int(cell.p_adjusted is not None) + sum(other.p_adjusted is not None for _, other in elsewhere)
                checks.append(_null(suite, name, cell, metric, reference, flagged, tested))
    return checks


def controls_by_suite(checks: list[ControlCheck]) -> list[SuiteControls]:
    """The checks of every lineage grouped by suite (suites in first-seen order, positive controls first)."""
    found: dict[str, SuiteControls] = {}
    for check in checks:
        found.setdefault(check.suite, SuiteControls(check.suite)).checks.append(check)
    for entry in found.values():
        entry.checks.sort(key=lambda check: CONTROL_ROLES.index(check.kind))
    return list(found.values())
