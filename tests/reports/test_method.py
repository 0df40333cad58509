""""How these numbers were made" (reports.method): one box per run, a note several runs carry stated once and
collapsed, nothing of any note dropped; on the demo's runs (tests/reports/demo_like.py) as the demo writes them."""
from __future__ import annotations

import html as html_lib
import re

import pytest

from reports.build import build_report
from reports.method import sentences, split_notes
from tests.reports.demo_like import (
    DIGITS_NOTE,
    EVAL_NOTE,
    PIVOT_EVAL_NOTE,
    SCHEDULE_NOTE,
    make_demo_runs,
)


def test_sentences_split_after_a_full_stop_before_a_capital():
    assert sentences("Stage 1 on a (lr 0.002, 2 epochs). Learning rates are scaled; seg: x. ") == ["Stage 1 on a (lr 0.002, 2 epochs).", "Learning rates are scaled; seg: x."]


def test_split_notes_groups_consecutive_shared_sentences():
    shared_text = "Schedule one. Schedule two."
    grouped, shared = split_notes([shared_text, f"Own note. {shared_text}", "Digits only.", ""])
    assert shared == {shared_text: frozenset({0, 1})}
    assert grouped[1] == [(frozenset({1}), "Own note."), (frozenset({0, 1}), shared_text)]
    assert grouped[2] == [(frozenset({2}), "Digits only.")] and grouped[3] == []


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    runs = make_demo_runs(root, k=2)
    return build_report(runs, root / "report.html", title="Demo").read_text(encoding="utf-8"), runs


def _section(html: str, anchor: str) -> str:
    start = html.index(f'id="{anchor}"')
    return html[start: html.index("</section>", start)]


def test_the_shared_schedule_is_stated_once_collapsed(demo_report):
    html, runs = demo_report
    method = html_lib.unescape(_section(html, "method"))
    schedule = f"{SCHEDULE_NOTE.format(k=2)} {EVAL_NOTE}"
    assert method.count(schedule) == 1
    details = re.search(r'<details id="note-A" class="schedule">(.*?)</details>', method, re.DOTALL)
    assert details and schedule in details.group(1) and "carried by 3 runs" in details.group(1)
    for run in runs[:3]:
        assert str(run) in details.group(1)
    assert method.count('<div class="run-box">') == 4 and method.count('href="#note-A"') == 3


def test_every_runs_own_note_is_in_its_box_and_nothing_is_dropped(demo_report):
    html, _ = demo_report
    method = html_lib.unescape(_section(html, "method"))
    boxes = method.split('<div class="run-box">')[1:]
    assert PIVOT_EVAL_NOTE in boxes[2] and DIGITS_NOTE in boxes[3]
    assert "seg on shapes:n=800:seed=0" in boxes[0] and "5 encoders, 15 rows ok" in boxes[0]
    for note in (SCHEDULE_NOTE.format(k=2), EVAL_NOTE, PIVOT_EVAL_NOTE, DIGITS_NOTE):
        for sentence in sentences(note):
            assert sentence in method, sentence


def test_no_note_stands_before_the_answer(demo_report):
    html, _ = demo_report
    before = html_lib.unescape(html[: html.index('id="summary"')])
    assert "Demo lineage, really trained" not in before and "scikit-learn digits" not in before
    assert html.index('id="summary"') < html.index('id="method"')
