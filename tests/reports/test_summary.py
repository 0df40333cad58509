"""The report's first screen (reports.summary): per suite the headline value of each arm and the verdict
sentence taken from reports.compare's Holm-corrected verdicts; the controls' outcomes, red when a control
does not behave; degenerate rows never turned into a verdict."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.results import ResultRow, append_rows
from reports.build import build_report
from reports.compare import SIG_ARMS, lineage_analysis
from reports.format import mean_sd, p_text
from reports.load import PerItemCache, load_runs
from reports.summary import (
    NULL_CONTROL,
    POSITIVE_CONTROL,
    control_checks,
    controls_by_suite,
    lineage_summary,
)

N = 300


def _run(run: Path, encoders: list[tuple], suite: str = "loc", metric: str = "pointing_game", extra_lines: int = 0, seed: int = 7) -> Path:
    """One row per encoder (name, role, base, replicate, hit rate[, degenerate reason]) on shared items with 0/1
    per-item scores (a rate ``"=name"``: the scores of that encoder with 5 items flipped, a difference no test can
    see); ``extra_lines`` more lines of the suite at the same rates (other metrics of it)."""
    rng = np.random.default_rng(seed)
    (run / "per_item").mkdir(parents=True, exist_ok=True)
    rows = []
    for line in range(1 + extra_lines):
        difficulty = rng.uniform(-0.2, 0.2, N)
        name_of_metric = metric if line == 0 else f"{metric}_{line}"
        drawn: dict[str, np.ndarray] = {}
        for name, role, base, replicate, rate, *degenerate in encoders:
            if isinstance(rate, str):
                scores = drawn[rate.lstrip("=")].copy()
                scores[:5] = 1 - scores[:5]
            else:
                scores = (rng.random(N) < np.clip(rate + difficulty, 0, 1)).astype(np.float32)
            drawn[name] = scores
            relative = f"per_item/{name}_{line}.npy"
            np.save(run / relative, scores)
            extra = {"trivial_baseline": 20.0} | ({"replicate": replicate} if replicate is not None else {})
            if degenerate and line == 0:
                extra["degenerate"] = degenerate[0]
            rows.append(ResultRow(encoder=name, role=role, base=base, suite=suite, task="gradcam", dataset="d", metric=name_of_metric,
                                  value=float(scores.mean() * 100), n=N, per_item=relative, extra=extra))
    append_rows(run, rows)
    return run


def _analyse(run: Path):
    data = load_runs([run])
    found = []
    for index, lineage in enumerate(data.lineages, start=1):
        lines, verdicts, _, _ = lineage_analysis(lineage, PerItemCache(), n_boot=1000)
        found.append((lineage, lines, verdicts, lineage_summary(lineage, verdicts, index), control_checks(lineage, lines, verdicts)))
    return found


def _arms(k: int, sft: float, pivot: float, seed_sd: float = 0.0, seed: int = 3) -> list[tuple]:
    rng = np.random.default_rng(seed)
    encoders = [("o", "original", "", None, 0.45)]
    for replicate in range(k):
        encoders.append((f"s{replicate}", "sft", "o", replicate if k > 1 else None, sft + rng.normal(0, seed_sd)))
        encoders.append((f"p{replicate}", "pivot", "o", replicate if k > 1 else None, pivot + rng.normal(0, seed_sd)))
    return encoders


# ------------------------------------------------------------------ arms and verdict sentences


def test_replicated_arms_read_as_mean_sd_with_the_replicate_aware_holm_verdict(tmp_path):
    ((_, _, verdicts, summary, _),) = _analyse(_run(tmp_path / "run", _arms(k=3, sft=0.40, pivot=0.60, seed_sd=0.01)))
    assert [(column.label, column.k) for column in summary.columns] == [("original", 1), ("+SFT", 3), ("+PIVOT", 3)]
    (line,) = summary.lines
    (verdict,) = verdicts
    compared = verdict.pivot_vs_sft
    assert compared.test == SIG_ARMS and compared.significant  # the summary reuses this cell, it does not test again
    sft, pivot = verdict.entries[1][2], verdict.entries[2][2]
    expected = (f"+PIVOT is ahead of +SFT on pointing_game: {mean_sd(pivot.value, pivot.sd)} vs {mean_sd(sft.value, sft.sd)} "
                f"(K=3 seeds each), Holm p = {p_text(compared.p_adjusted)}")
    assert line.sentence == expected and line.tone == "good"
    assert [value.text for value in line.values] == [mean_sd(cell.value, cell.sd) for _, _, cell in verdict.entries]
    assert "±" in line.values[1].text and "±" not in line.values[0].text  # the original is one checkpoint, not a recipe's draw


def test_arms_that_seed_noise_explains_are_not_separated(tmp_path):
    ((_, _, verdicts, summary, _),) = _analyse(_run(tmp_path / "run", _arms(k=2, sft=0.45, pivot=0.46, seed_sd=0.04)))
    (line,) = summary.lines
    assert line.sentence.startswith("+PIVOT and +SFT are not separated on pointing_game: ")
    assert "(K=2 seeds each), Holm p = " in line.sentence and not verdicts[0].pivot_vs_sft.significant
    assert "not measured" not in line.sentence


def test_single_runs_say_that_training_seed_noise_is_not_measured(tmp_path):
    ((lineage, _, verdicts, summary, _),) = _analyse(_run(tmp_path / "run", _arms(k=1, sft=0.40, pivot=0.62)))
    assert not lineage.replicated and [column.k for column in summary.columns] == [1, 1, 1]
    (line,) = summary.lines
    assert line.sentence.startswith("+PIVOT is ahead of +SFT on pointing_game: ")
    assert "(one training run each)" in line.sentence and line.sentence.endswith("; training-seed noise is not measured")
    assert f"Holm p = {p_text(verdicts[0].pivot_vs_sft.p_adjusted)}" in line.sentence


def test_a_lineage_without_sft_and_pivot_is_compared_with_its_original(tmp_path):
    encoders = [("o", "original", "", None, 0.45), ("x", "dpo-long", "o", None, 0.70)]
    ((_, _, _, summary, _),) = _analyse(_run(tmp_path / "run", encoders))
    (line,) = summary.lines
    assert line.sentence.startswith("+dpo-long is significantly better than the original (+")
    assert line.values[1].tone == "good" and line.values[1].delta.startswith("+")
    assert line.sentence.endswith("training-seed noise is not measured")


# ------------------------------------------------------------------ degenerate rows


def test_a_degenerate_reference_is_not_compared(tmp_path):
    encoders = _arms(k=1, sft=0.21, pivot=0.60)
    encoders[1] = (*encoders[1], "not significantly above its trivial baseline 20")
    ((_, _, _, summary, _),) = _analyse(_run(tmp_path / "run", encoders))
    (line,) = summary.lines
    assert line.sentence.startswith("+PIVOT vs +SFT not compared: +SFT's row is degenerate (not significantly above its trivial baseline 20)")
    assert line.tone == "degenerate" and "ahead" not in line.sentence and "separated" not in line.sentence
    assert line.values[1].degenerate


def test_a_degenerate_pivot_is_not_a_verdict(tmp_path):
    encoders = _arms(k=1, sft=0.50, pivot=0.20)
    encoders[2] = (*encoders[2], "not significantly above its trivial baseline 20")
    ((_, _, _, summary, _),) = _analyse(_run(tmp_path / "run", encoders))
    (line,) = summary.lines
    assert line.sentence.startswith("not a verdict: +PIVOT's row is degenerate (not significantly above its trivial baseline 20); it fell significantly below +SFT")
    assert line.tone == "degenerate" and "behind" not in line.sentence


def test_a_metric_degenerate_for_every_arm_measures_nothing(tmp_path):
    reason = "constant predictions"
    encoders = [(*encoder, reason) for encoder in _arms(k=2, sft=0.2, pivot=0.2)]
    ((_, _, _, summary, _),) = _analyse(_run(tmp_path / "run", encoders))
    (line,) = summary.lines
    assert line.sentence.startswith("every arm's row is degenerate") and "measures nothing here" in line.sentence
    assert line.tone == "degenerate"


# ------------------------------------------------------------------ controls


def _controls(positive_rate: float | str, null_rate: float | str, reference_degenerate: str = "", extra_lines: int = 0) -> list[tuple]:
    stage1 = ("stage1", "original", "", None, 0.50) + ((reference_degenerate,) if reference_degenerate else ())
    return [stage1, ("shuffled", POSITIVE_CONTROL, "stage1", None, positive_rate),
            ("sft", "original", "", None, 0.50), ("sft-s1", NULL_CONTROL, "sft", None, null_rate)]


def _checks(tmp_path: Path, **kwargs) -> dict[str, object]:
    found = _analyse(_run(tmp_path / "run", _controls(**kwargs), extra_lines=kwargs.get("extra_lines", 0)))
    assert all(summary.controls_only for _, _, _, summary, _ in found)  # no table: the controls block says it
    checks = [check for *_, lineage_checks in found for check in lineage_checks]
    return {check.kind: check for check in checks}


def test_controls_that_behave(tmp_path):
    checks = _checks(tmp_path, positive_rate=0.25, null_rate="=sft", extra_lines=2)
    positive, null = checks[POSITIVE_CONTROL], checks[NULL_CONTROL]
    assert positive.behaved is True and positive.text.startswith("positive control shuffled flagged significantly worse on gradcam pointing_game: ")
    assert " vs " in positive.text and "(stage1), Holm p = " in positive.text
    assert null.behaved is True and null.text.startswith("null control sft-s1 left unflagged (3 tested lines; gradcam pointing_game ")


def test_a_positive_control_that_is_not_flagged_is_said_in_red(tmp_path):
    checks = _checks(tmp_path, positive_rate="=stage1", null_rate="=sft")
    positive = checks[POSITIVE_CONTROL]
    assert positive.behaved is False and positive.text.startswith("positive control shuffled NOT flagged on gradcam pointing_game: ")
    html = build_report([tmp_path / "run"], tmp_path / "report.html").read_text()
    answer = html[html.index('id="summary"'): html.index("</section>", html.index('id="summary"'))]
    assert re.search(r'<span class="control-bad">&#10007; positive control shuffled NOT flagged', answer)
    assert '<span class="control-ok">&#10003; null control sft-s1 left unflagged' in answer


def test_a_positive_control_against_a_degenerate_reference_is_not_flagged(tmp_path):
    checks = _checks(tmp_path, positive_rate=0.25, null_rate="=sft", reference_degenerate="constant maps")
    positive = checks[POSITIVE_CONTROL]
    assert positive.behaved is False and "NOT flagged" in positive.text and "the original row is degenerate (constant maps)" in positive.text


def test_a_flagged_null_control_is_a_false_alarm_in_red(tmp_path):
    checks = _checks(tmp_path, positive_rate=0.25, null_rate=0.25)
    null = checks[NULL_CONTROL]
    assert null.behaved is False and null.text.startswith("null control sft-s1 flagged on gradcam pointing_game (-") and "false alarm" in null.text
    (suite,) = controls_by_suite(list(checks.values()))
    assert [check.kind for check in suite.checks] == [POSITIVE_CONTROL, NULL_CONTROL] and suite.sentence.startswith("loc: positive control")
    html = build_report([tmp_path / "run"], tmp_path / "report.html").read_text()
    assert '<span class="control-bad">&#10007; null control sft-s1 flagged on' in html


def test_a_null_control_flagged_on_another_line_of_the_suite_is_a_false_alarm(tmp_path):
    run = tmp_path / "run"
    _run(run, _controls(positive_rate=0.25, null_rate="=sft"))
    rng = np.random.default_rng(0)
    rows = []
    for name, role, base, rate in (("stage1", "original", "", 0.5), ("shuffled", POSITIVE_CONTROL, "stage1", 0.5), ("sft", "original", "", 0.5),
                                   ("sft-s1", NULL_CONTROL, "sft", 0.2)):
        scores = (rng.random(N) < rate).astype(np.float32)
        np.save(run / f"per_item/{name}_energy.npy", scores)
        rows.append(ResultRow(encoder=name, role=role, base=base, suite="loc", task="gradcam", dataset="d", metric="energy_pointing",
                              value=float(scores.mean() * 100), n=N, per_item=f"per_item/{name}_energy.npy"))
    append_rows(run, rows)
    found = _analyse(run)
    null = next(check for *_, checks in found for check in checks if check.kind == NULL_CONTROL)
    assert null.behaved is False and "gradcam energy_pointing (-" in null.text


def test_no_controls_is_said_in_one_line(tmp_path):
    run = _run(tmp_path / "run", _arms(k=1, sft=0.4, pivot=0.4))
    html = build_report([run], tmp_path / "report.html").read_text()
    assert "No controls in these runs" in html and 'class="controls"' not in html


@pytest.mark.parametrize(("mean", "sd", "text"), [(31.234, 0.4123, "31.23 ± 0.41"), (0.0431, 0.00031, "0.043 ± 0.0003"), (28.1, None, "28.10")])
def test_mean_sd_format(mean, sd, text):
    assert mean_sd(mean, sd) == text


def test_a_comparison_without_per_item_scores_or_cis_says_untested(tmp_path):
    run = tmp_path / "run"
    append_rows(run, [ResultRow(encoder=name, role=role, base=base, suite="loc", task="gradcam", dataset="d", metric="pointing_game", value=value)
                      for name, role, base, value in (("o", "original", "", 40.0), ("s", "sft", "o", 41.0), ("p", "pivot", "o", 45.0))])
    ((_, _, _, summary, _),) = _analyse(run)
    (line,) = summary.lines
    assert line.sentence.startswith("+PIVOT vs +SFT untested (no per-item scores; no CIs either): 45.00 vs 41.00 (one training run each)")
    assert line.tone == "untested" and "ahead" not in line.sentence


def test_a_positive_control_is_judged_on_the_line_its_suite_declares_for_controls(tmp_path):
    # grad's headline is DPO minus SFT: shuffled tokens move both maps off the object, so the difference stays put
    # while each map's inside mass falls. A suite that declares a control headline has its positive control judged there.
    run = _run(tmp_path / "run", _controls(positive_rate="=stage1", null_rate="=sft"))
    rng = np.random.default_rng(1)
    rows = []
    for name, role, base, rate in (("stage1", "original", "", 0.5), ("shuffled", POSITIVE_CONTROL, "stage1", 0.2), ("sft", "original", "", 0.5),
                                   ("sft-s1", NULL_CONTROL, "sft", 0.5)):
        scores = (rng.random(N) < rate).astype(np.float32) if name != "sft-s1" else np.load(run / "per_item/sft_inside.npy")
        np.save(run / f"per_item/{name}_inside.npy", scores)
        rows.append(ResultRow(encoder=name, role=role, base=base, suite="loc", task="gradcam", dataset="d", metric="inside_mass",
                              value=float(scores.mean() * 100), n=N, per_item=f"per_item/{name}_inside.npy"))
    append_rows(run, rows)
    data = load_runs([run])
    for declared, flagged in (({"loc": [("gradcam", "inside_mass")]}, True), ({}, False)):
        checks = []
        for lineage in data.lineages:
            lines, verdicts, _, _ = lineage_analysis(lineage, PerItemCache(), n_boot=1000)
            checks += control_checks(lineage, lines, verdicts, declared)
        positive = next(check for check in checks if check.kind == POSITIVE_CONTROL)
        if flagged:
            assert positive.behaved is True and positive.text.startswith("positive control shuffled flagged significantly worse on gradcam inside_mass: ")
            assert "(stage1), Holm p = " in positive.text
        else:
            assert positive.behaved is False and "NOT flagged on gradcam pointing_game" in positive.text and "other lines of loc flag it worse: gradcam inside_mass" in positive.text


def test_both_controls_of_one_lineage_keep_their_own_lines_and_references(tmp_path):
    # The positive control judged on a declared line must not lend that line's reference to the null control.
    run = _run(tmp_path / "run", [("o", "original", "", None, 0.5), ("p", POSITIVE_CONTROL, "o", None, "=o"), ("n", NULL_CONTROL, "o", None, "=o")])
    rng = np.random.default_rng(2)
    rows = []
    for name, role, rate in (("o", "original", 0.6), ("p", POSITIVE_CONTROL, 0.2), ("n", NULL_CONTROL, 0.6)):
        scores = (rng.random(N) < rate).astype(np.float32)
        np.save(run / f"per_item/{name}_inside.npy", scores)
        rows.append(ResultRow(encoder=name, role=role, base="o" if name != "o" else "", suite="loc", task="gradcam", dataset="d", metric="inside_mass",
                              value=float(scores.mean() * 100), n=N, per_item=f"per_item/{name}_inside.npy"))
    append_rows(run, rows)
    (lineage,) = load_runs([run]).lineages
    lines, verdicts, _, _ = lineage_analysis(lineage, PerItemCache(), n_boot=1000)
    checks = {check.kind: check for check in control_checks(lineage, lines, verdicts, {"loc": [("gradcam", "inside_mass")]})}
    column = [info.name for info in lineage.encoders].index("o")
    pointing, inside = (next(line for line in lines if line.metric == metric).cells[column].value for metric in ("pointing_game", "inside_mass"))
    assert "flagged significantly worse on gradcam inside_mass" in checks[POSITIVE_CONTROL].text and f"vs {inside:.2f} (o)" in checks[POSITIVE_CONTROL].text
    assert f"vs {pointing:.2f} (o)" in checks[NULL_CONTROL].text and round(pointing, 2) != round(inside, 2)
