""""How these numbers were made": one compact box per run, and the notes several runs share stated once.

A run's note (``config.json``'s ``note``, e.g. the demo's schedules) is split into sentences; sentences that
several runs carry are gathered into shared notes (consecutive sentences with the same runs stay one
note), each stated once and named by a letter in the boxes of the runs that carry it. What remains is the
run's own note. Long notes are shown collapsed (a ``<details>`` element); nothing of a note is dropped.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from benchmarks.results import STATUS_SKIPPED
from reports.format import num
from reports.load import RunData, is_ok

SHORT_NOTE_WORDS = 60  # a run's own note up to this length is shown in its box, a longer one collapsed
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@dataclass
class SharedNote:
    letter: str
    runs: list[str]
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())

    @property
    def opening(self) -> str:
        """The first words of the note, for its collapsed line."""
        words = self.text.split()
        return " ".join(words[:14]) + (" …" if len(words) > 14 else "")


@dataclass
class RunBox:
    """What one run did, in a few facts: suites, data, encoders, rows, time, and its notes."""

    label: str
    suites: list[str]
    data: list[str]
    encoders: int
    ok: int
    skipped: int
    failed: int
    seconds: str  # "41 s" or ''
    hardware: str  # '' when every run shares it (stated once)
    own_note: str = ""
    shared: list[str] = field(default_factory=list)  # letters of the shared notes it carries

    @property
    def own_note_is_short(self) -> bool:
        return len(self.own_note.split()) <= SHORT_NOTE_WORDS


@dataclass
class MethodView:
    boxes: list[RunBox]
    shared_notes: list[SharedNote]
    hardware: str  # the hardware every run reports, or ''


def note_text(note: Any) -> str:
    """A config's note as text (a string, or any JSON value written compactly)."""
    if not note:
        return ""
    return note if isinstance(note, str) else json.dumps(note, sort_keys=True, default=str)


def sentences(text: str) -> list[str]:
    """``text`` cut after each ``.``, ``!`` or ``?`` that is followed by a space and a capital letter."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def split_notes(notes: list[str]) -> tuple[list[list[tuple[frozenset[int], str]]], dict[str, frozenset[int]]]:
    """Each note as runs of consecutive sentences carried by the same set of notes: per note, a list of
    (owners, text); and the text of every part carried by more than one note -> its owners."""
    split = [sentences(note) for note in notes]
    owners: dict[str, set[int]] = {}
    for index, parts in enumerate(split):
        for sentence in parts:
            owners.setdefault(sentence, set()).add(index)
    grouped: list[list[tuple[frozenset[int], str]]] = []
    shared: dict[str, frozenset[int]] = {}
    for parts in split:
        groups: list[tuple[frozenset[int], list[str]]] = []
        for sentence in parts:
            key = frozenset(owners[sentence])
            if groups and groups[-1][0] == key:
                groups[-1][1].append(sentence)
            else:
                groups.append((key, [sentence]))
        grouped.append([(key, " ".join(texts)) for key, texts in groups])
        for key, texts in groups:
            if len(key) > 1:
                shared[" ".join(texts)] = key
    return grouped, shared


def _seconds(timings: Any) -> str:
    """The run's recorded time: its ``total*`` timing, else the sum of its top-level timings (seconds)."""
    if not isinstance(timings, dict):
        return ""
    numbers = {key: value for key, value in timings.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    total = next((value for key, value in numbers.items() if str(key).startswith("total")), None)
    total = sum(numbers.values()) if total is None and numbers else total
    return "" if total is None else f"{num(total)} s"


def _hardware(run: RunData) -> str:
    hardware = run.config.get("hardware")
    return ", ".join(f"{key} {value}" for key, value in hardware.items()) if isinstance(hardware, dict) else ""


def _data(run: RunData, suites: list[str]) -> list[str]:
    declared = run.config.get("suites") if isinstance(run.config.get("suites"), dict) else {}
    found = [str(declared[name]["data"]) for name in suites if isinstance(declared.get(name), dict) and declared[name].get("data")]
    found += [row.dataset for row in run.rows if is_ok(row) and row.suite in suites and row.suite not in declared]
    return list(dict.fromkeys(found))


def method_view(runs: list[RunData]) -> MethodView:
    """The boxes of ``runs`` (report order), their shared notes lettered A, B, ... in order of first use."""
    grouped, shared = split_notes([note_text(run.config.get("note")) for run in runs])
    letters: dict[str, str] = {}
    hardware = {_hardware(run) for run in runs}
    common_hardware = hardware.pop() if len(hardware) == 1 else ""
    boxes = []
    for run, parts in zip(runs, grouped):
        suites = list(dict.fromkeys(row.suite for row in run.rows if is_ok(row)))
        ok = sum(is_ok(row) for row in run.rows)
        skipped = sum(row.status == STATUS_SKIPPED for row in run.rows)
        box = RunBox(run.label, suites, _data(run, suites), len({row.encoder for row in run.rows}), ok, skipped, len(run.rows) - ok - skipped,
                     _seconds(run.config.get("timings")), "" if common_hardware else _hardware(run))
        own = []
        for _, text in parts:
            if text in shared:
                letter = letters.setdefault(text, chr(ord("A") + len(letters)) if len(letters) < 26 else str(len(letters) + 1))
                box.shared.append(letter)
            else:
                own.append(text)
        box.own_note = " ".join(own)
        boxes.append(box)
    notes = [SharedNote(letter, [runs[index].label for index in sorted(shared[text])], text) for text, letter in letters.items()]
    return MethodView(boxes, notes, common_hardware)
