"""Read the files lmms-eval writes: ``<date>_results.json`` and ``<date>_samples_<task>.jsonl``.

lmms-eval 0.4-0.7 (``--output_path DIR --log_samples``) writes into ``DIR/<model name>/``:

* ``<date>_results.json``: ``results`` maps task -> ``{"alias": ..., "<metric>,<filter>": value,
  "<metric>_stderr,<filter>": value or "N/A", ...}``; ``n-samples`` maps task -> ``{"original": docs in
  the split, "effective": docs evaluated}`` (fewer with ``--limit``); ``config`` holds the model, its
  arguments and the limit; ``lmms_eval_version`` the version.
* ``<date>_samples_<task>.jsonl``: one line per document with ``doc_id``, ``target`` and each metric's
  per-document value (a number for mean-aggregated metrics, a dict for metrics that lmms-eval
  aggregates with its own function, such as MME's).

Older releases wrote metric keys without the ``,<filter>`` suffix and no ``n-samples``; both are read,
and the difference is recorded as a note. Anything else (not JSON, no ``results`` map of task -> metric
values) is an ``LmmsResultsError`` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_GLOB = "*_results.json"
LEGACY_RESULTS_NAME = "results.json"
_DATE = re.compile(r"^(?P<date>.+)_results\.json$")
_NON_METRIC_KEYS = {"alias", "name", "sample_len", "sample_count"}


class LmmsResultsError(ValueError):
    """A file that is not an lmms-eval results file, or one that cannot be read; names the file and the fix."""


@dataclass
class MetricValue:
    """One metric of one task as lmms-eval aggregated it (its own unit: a fraction for most metrics)."""

    value: float | None
    stderr: float | None = None
    filter: str = "none"
    raw: Any = None  # what the file held when it was not a number ("N/A", a dict, ...)


@dataclass
class TaskResult:
    """One task of one results file."""

    task: str
    metrics: dict[str, MetricValue]
    file: Path
    n: int | None = None  # documents evaluated
    n_original: int | None = None  # documents in the task's split
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    samples: Path | None = None
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)  # model, model_args, lmms_eval_version, date

    @property
    def partial(self) -> bool:
        return self.n is not None and self.n_original is not None and self.n < self.n_original


@dataclass
class ResultsFile:
    """One ``<date>_results.json``: its tasks and where it came from."""

    path: Path
    date: str
    model: str
    model_args: str
    version: str
    layout: str  # "lmms-eval 0.4+" or "older lmms-eval (...)"
    tasks: dict[str, TaskResult]
    notes: list[str] = field(default_factory=list)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def _split_key(key: str) -> tuple[str, str]:
    metric, _, filter_name = key.partition(",")
    return metric, filter_name


def _metrics(entry: dict[str, Any]) -> tuple[dict[str, MetricValue], bool]:
    """Metric values of one ``results`` entry (filter ``none`` preferred); True when keys had no filter suffix."""
    values: dict[tuple[str, str], Any] = {}
    stderrs: dict[tuple[str, str], Any] = {}
    legacy = False
    for key, value in entry.items():
        if key in _NON_METRIC_KEYS:
            continue
        metric, filter_name = _split_key(key)
        if not filter_name:
            legacy, filter_name = True, "none"
        if metric.endswith("_stderr"):
            stderrs[(metric[: -len("_stderr")], filter_name)] = value
        elif re.search(r"_stderr_[a-z]+$", metric):  # _stderr_clt, _stderr_clustered: other estimators
            continue
        else:
            values[(metric, filter_name)] = value
    chosen: dict[str, MetricValue] = {}
    for (metric, filter_name), value in sorted(values.items(), key=lambda item: item[0][1] != "none"):
        if metric in chosen:
            continue
        chosen[metric] = MetricValue(_number(value), _number(stderrs.get((metric, filter_name))), filter_name, None if _number(value) is not None else value)
    return chosen, legacy


def _not_lmms(path: Path, why: str) -> LmmsResultsError:
    return LmmsResultsError(
        f"{path}: not an lmms-eval results file ({why}). Expected the <date>_results.json that "
        "`lmms-eval --output_path DIR` writes: a JSON object whose 'results' maps each task to its "
        "'<metric>,<filter>' values. Point --vqa-results (or the manifest's vqa_results) at that file or its folder."
    )


def read_results_file(path: str | os.PathLike) -> ResultsFile:
    """Parse one lmms-eval results file (any model, lmms-eval 0.1-0.7); see the module docstring."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _not_lmms(path, "not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise _not_lmms(path, f"not JSON: {err}") from None
    except OSError as err:
        raise LmmsResultsError(f"{path}: cannot read ({err})") from None
    if not isinstance(data, dict):
        raise _not_lmms(path, f"the top level is a JSON {type(data).__name__}, not an object")
    results = data.get("results")
    if not isinstance(results, dict):
        raise _not_lmms(path, f"no 'results' map; top-level keys: {sorted(data)[:12]}")
    if not all(isinstance(entry, dict) for entry in results.values()):
        raise _not_lmms(path, "'results' entries are not task -> metric maps")
    match = _DATE.match(path.name)
    date = match.group("date") if match else str(data.get("date", ""))
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    n_samples = data.get("n-samples") if isinstance(data.get("n-samples"), dict) else None
    higher = data.get("higher_is_better") if isinstance(data.get("higher_is_better"), dict) else {}
    groups = {name for name, members in (data.get("group_subtasks") or {}).items() if members}
    model_args = config.get("model_args", "")
    model_args = model_args if isinstance(model_args, str) else json.dumps(model_args, sort_keys=True)
    model = str(config.get("model", data.get("model_name", "")))
    version = str(data.get("lmms_eval_version", ""))
    provenance = {"model": model, "model_args": model_args, "lmms_eval_version": version, "date": date}
    tasks: dict[str, TaskResult] = {}
    legacy_keys = False
    for task, entry in results.items():
        metrics, legacy = _metrics(entry)
        legacy_keys |= legacy
        if not metrics and task in groups:
            continue  # a group line without its own aggregate: its subtasks have their own entries
        counts = (n_samples or {}).get(task) or {}
        result = TaskResult(
            task=task, metrics=metrics, file=path,
            n=counts.get("effective") if isinstance(counts.get("effective"), int) else None,
            n_original=counts.get("original") if isinstance(counts.get("original"), int) else None,
            higher_is_better={k: bool(v) for k, v in (higher.get(task) or {}).items() if v is not None},
            samples=_samples_file(path, date, task), provenance=provenance,
        )
        if result.n is None and result.samples is not None:
            result.n = _count_documents(result.samples)
        if result.partial:
            result.notes.append(
                f"partial run: {result.n} of {result.n_original} documents evaluated (lmms-eval --limit "
                f"{config.get('limit')}); not comparable with full-benchmark numbers"
            )
        tasks[task] = result
    notes = []
    layout = "lmms-eval 0.4+"
    if n_samples is None or legacy_keys:
        reasons = (["no n-samples"] if n_samples is None else []) + (["metric keys without ',<filter>'"] if legacy_keys else [])
        layout = f"older lmms-eval ({', '.join(reasons)})"
        notes.append(f"{path.name}: {layout}; read with the older layout" + ("; n taken from the samples files" if n_samples is None else ""))
    return ResultsFile(path=path, date=date, model=model, model_args=model_args, version=version, layout=layout, tasks=tasks, notes=notes)


def _samples_file(results_path: Path, date: str, task: str) -> Path | None:
    for candidate in (results_path.parent / f"{date}_samples_{task}.jsonl", results_path.parent / f"{task}.json"):
        if candidate.is_file():
            return candidate
    return None


def _sample_lines(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        lines = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    lines.append(json.loads(line))
        return lines
    data = json.loads(path.read_text(encoding="utf-8"))  # lmms-eval 0.1: {"args": ..., "logs": [...]}
    return list(data.get("logs", [])) if isinstance(data, dict) else []


def _count_documents(path: Path) -> int | None:
    try:
        return len({line.get("doc_id") for line in _sample_lines(path)})
    except (OSError, ValueError):
        return None


@dataclass
class PerItem:
    """Per-document scores of one metric, in ``doc_id`` order, and a fingerprint of which documents they are."""

    scores: np.ndarray
    doc_ids: list
    fingerprint: str


def per_item_scores(result: TaskResult, metric: str) -> PerItem | str:
    """The metric's per-document values from the task's samples file (repeats averaged per document),
    or a string saying why there are none (no samples file, values that are not numbers, ...)."""
    if result.samples is None:
        return f"no samples file for {result.task} next to {result.file.name} (run lmms-eval with --log_samples)"
    try:
        lines = _sample_lines(result.samples)
    except (OSError, ValueError) as err:
        return f"{result.samples}: unreadable ({err})"
    per_doc: dict[Any, list[float]] = {}
    targets: dict[Any, str] = {}
    for line in lines:
        value = _number(line.get(metric))
        if value is None:
            shown = line.get(metric)
            return (f"{result.samples.name}: per-document {metric!r} is {type(shown).__name__}, not a number "
                    "(lmms-eval aggregates it with the task's own function)")
        per_doc.setdefault(line.get("doc_id"), []).append(value)
        targets[line.get("doc_id")] = str(line.get("target", ""))
    if not per_doc:
        return f"{result.samples.name}: no documents"
    doc_ids = sorted(per_doc, key=lambda doc: (isinstance(doc, str), doc))
    digest = hashlib.sha256("\n".join(f"{doc}\t{targets[doc]}" for doc in doc_ids).encode()).hexdigest()[:16]
    return PerItem(np.array([np.mean(per_doc[doc]) for doc in doc_ids]), doc_ids, digest)


def find_results_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself when it is a file, else every ``*_results.json`` (and legacy ``results.json``)
    below it, oldest first; an error naming the folder when there is none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LmmsResultsError(f"{path}: no such file or folder; --vqa-results takes an lmms-eval results file or the --output_path folder it was written to")
    found = sorted({*path.rglob(RESULTS_GLOB), *path.rglob(LEGACY_RESULTS_NAME)}, key=lambda p: (p.name, str(p)))
    if not found:
        raise LmmsResultsError(f"{path}: no lmms-eval results file (*_results.json) in this folder or below; did lmms-eval run with --output_path {path}?")
    return found


@dataclass
class Collected:
    """Every task found under a path, the latest file winning when two report the same task."""

    tasks: dict[str, TaskResult]
    files: list[ResultsFile]
    notes: list[str]
    errors: list[str]  # files that matched the naming pattern but are not readable lmms-eval results


def collect_results(path: str | os.PathLike) -> Collected:
    """Read all results files under ``path`` (see ``find_results_files``). Later files (by their date
    prefix) override earlier ones task by task; bad files are listed in ``errors`` and skipped, unless
    ``path`` names a single file, whose error is raised."""
    files = find_results_files(path)
    single = Path(path).is_file()
    parsed: list[ResultsFile] = []
    errors: list[str] = []
    for file in files:
        try:
            parsed.append(read_results_file(file))
        except LmmsResultsError as err:
            if single:
                raise
            errors.append(str(err))
    parsed.sort(key=lambda f: (f.date, str(f.path)))
    tasks: dict[str, TaskResult] = {}
    notes = [note for f in parsed for note in f.notes]
    for f in parsed:
        for task, result in f.tasks.items():
            if task in tasks:
                notes.append(f"{task}: {f.path.name} replaces the earlier {tasks[task].file.name}")
            tasks[task] = result
    return Collected(tasks, parsed, notes, errors)
