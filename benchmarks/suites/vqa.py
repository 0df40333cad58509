"""Suite ``vqa``: VQA benchmarks through lmms-eval (docs/protocol.md "VQA"), beside the vision probes.

Per encoder, results come from one of (in this order):

1. the manifest's ``vqa_results`` (an lmms-eval results file or folder, any model): ingested;
2. ``--vqa-results DIR``: ``DIR/<encoder name>`` when it exists, else ``DIR`` itself for a single
   encoder: ingested, nothing is run;
3. the manifest's ``mllm`` (an MLLM directory, ``train.mllm``): lmms-eval runs ``--vqa-tasks`` (default:
   the 16 Cambrian benchmarks) on it with the ``vee_mllm`` model, then its results file is ingested.
   ``shapes_vqa`` / ``shapes_vqa_mc`` are written from the shapes world first (``--vqa-items`` items).

Rows: one per Cambrian benchmark (metric ``score``: points 0..100 per ``benchmarks.lmms.cambrian``, the
lmms-eval metric and value in ``extra``; CI = value +-
1.96 x lmms-eval's stderr, n = documents evaluated, per-item scores from the samples file when they
are numbers), one per Cambrian category and ``overall`` (mean of the category means; task = the
category, dataset ``cambrian16``, metric ``score``), and rows for tasks outside the map
(``category: uncategorised``, value as lmms-eval reports it unless known to be a fraction). A
requested task that produced nothing is a failed row with lmms-eval's message; a partial run
(``--limit``) is kept under dataset ``lmms-eval:limit=<n>/<total>`` so it never meets full-benchmark
numbers in a comparison.

Blind baseline (``--vqa-blind``, on by default when lmms-eval runs): every MLLM is scored a second time
with ``vee_mllm``'s ``blind=true`` (every image replaced by its encoder's mean colour, Cambrian-1's
vision-disabled control). Rows ``<metric>_vision_gain`` per task, question kind, Cambrian category and
overall hold score minus blind score with a paired bootstrap CI over documents (``probes.vqa.vision_gain``);
each score row gets ``extra["blind_score"]``, ``extra["vision_gain"]`` and, when the gain is not
significantly above 0, ``extra["degenerate"]`` ("does not measure vision"), so no verdict uses it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lmms.cambrian import BENCHMARKS, CAMBRIAN_TASKS, CATEGORIES, KNOWN_FRACTIONS, OVERALL, Benchmark, benchmark_of
from benchmarks.lmms.results import Collected, LmmsResultsError, PerItem, TaskResult, collect_results, per_item_scores
from benchmarks.lmms.shapes_task import DEFAULT_ITEMS, TASKS as SHAPES_TASKS, write_shapes_tasks
from benchmarks.results import STATUS_FAILED, STATUS_SKIPPED, ResultRow
from common.options import option
from imagesets import PREFERENCES, dataset_capabilities
from probes.vqa import Score, category_table

from .base import LoadedEncoder, RunContext
from .spec import DataNeeds, has_mllm, register_suite

DATASET = "lmms-eval"
CATEGORY_DATASET = "cambrian16"
SCORE = "score"  # the metric of Cambrian rows: points 0..100 (the lmms-eval metric is in extra["lmms_metric"])
Z95 = 1.959964
SHAPES_DEFAULT_DATA = "shapes:n=800:seed=0"


def _tasks_problem(tasks: tuple[str, ...]) -> str:
    """Every ``--vqa-tasks`` name is a task (group or tag) of the installed lmms-eval or a shapes-world task."""
    from benchmarks.lmms.task_index import unknown_tasks_problem

    return unknown_tasks_problem(tasks, SHAPES_TASKS)


def _results_problem(path: str) -> str:
    return f"no such file or directory ({path}); pass an lmms-eval results file or a folder of them" if path and not Path(path).exists() else ""


@dataclass(frozen=True)
class VqaOptions:
    """Options of the ``vqa`` suite (flags ``--vqa-...``)."""

    tasks: tuple[str, ...] = option((), "lmms-eval tasks to run on each encoder's MLLM, comma list (default: the 16 Cambrian benchmarks; shapes_vqa,shapes_vqa_mc = the offline shapes-world tasks)", check=_tasks_problem, metavar="TASKS")
    items: int = option(DEFAULT_ITEMS, "shapes-world VQA items written for shapes_vqa / shapes_vqa_mc (from the suite's dataset when it has preference items, else " + SHAPES_DEFAULT_DATA + ")", minimum=1)
    limit: int = option(0, "lmms-eval --limit: documents per task (0 = all; rows are then marked partial)", minimum=0)
    results: str = option("", "ingest lmms-eval results (a file, or a folder with one subfolder per encoder name) instead of running anything", check=_results_problem, metavar="PATH")
    batch_size: int = option(32, "lmms-eval batch size of the vee_mllm model", minimum=1)
    blind: bool = option(True, "also score every MLLM with its images replaced by a constant one (the blind baseline) and write the vision gain, score minus blind score, per task, kind, category and overall")
    processes: int = option(1, "lmms-eval processes per run (accelerate launch --num_processes N): each scores its shard of the documents, on CPU with 1/N of the cores, on GPUs one GPU each; same per-document scores as one process",
                            minimum=1, affects_numbers=False)


def _encoder_check(options: VqaOptions, specs) -> str:
    if options.results or any(has_mllm(spec) or spec.vqa_results for spec in specs):
        return ""
    return "no encoder has an MLLM or lmms-eval results: set mllm or vqa_results in the manifest, or pass --vqa-results DIR"


def _dataset(result: TaskResult) -> str:
    return f"{DATASET}:limit={result.n}/{result.n_original}" if result.partial else DATASET


class _Rows:
    """Builds the rows of one encoder from one source (results files found under ``path``)."""

    def __init__(self, context: RunContext, loaded: LoadedEncoder, source: str, provenance: dict[str, Any]) -> None:
        self.context, self.loaded, self.source, self.provenance = context, loaded, source, provenance
        # task -> the question kind of each document (by doc_id), for tasks whose documents we wrote
        self.doc_kinds: dict[str, list[str]] = {}

    def row(self, **fields: Any) -> ResultRow:
        extra = {"source": self.source, **self.provenance, **fields.pop("extra", {})}
        fields.setdefault("dataset", DATASET)
        return self.context.row(self.loaded, suite="vqa", extra=extra, **fields)

    def failed(self, task: str, reason: str, dataset: str = DATASET) -> ResultRow:
        return self.row(task=task, dataset=dataset, metric="-", value=None, status=STATUS_FAILED, reason=reason)

    def metric_row(self, result: TaskResult, metric: str, scale: float, benchmark: Benchmark | None) -> tuple[ResultRow, Score]:
        measured = result.metrics[metric]
        value = measured.value * scale  # type: ignore[operator]
        stderr = measured.stderr * abs(scale) if measured.stderr is not None else None
        per_item = per_item_scores(result, metric)
        notes = list(result.notes)
        extra: dict[str, Any] = {
            "category": benchmark.category if benchmark else "uncategorised",
            "lmms_metric": f"{metric},{measured.filter}", "lmms_value": measured.value, "scale": scale,
            "stderr": stderr, "results_file": str(result.file), "n_original": result.n_original, "lmms": result.provenance,
        }
        if benchmark:
            extra["benchmark"] = benchmark.name
        relative = fingerprint = ""
        if isinstance(per_item, PerItem):
            relative = self.context.save_per_item(per_item.scores, self.loaded.name, "vqa", result.task, metric)
            fingerprint = per_item.fingerprint
        else:
            extra["per_item_missing"] = per_item
        if notes:
            extra["notes"] = notes
        row = self.row(
            task=result.task, dataset=_dataset(result), dataset_fingerprint=fingerprint, metric=SCORE if benchmark else metric, value=value,
            higher_is_better=result.higher_is_better.get(metric, True), n=result.n or 0,
            ci_low=value - Z95 * stderr if stderr is not None else None, ci_high=value + Z95 * stderr if stderr is not None else None,
            per_item=relative, extra=extra,
        )
        return row, Score(value, stderr, result.n or 0)

    def kind_rows(self, result: TaskResult, metric: str, scale: float) -> list[ResultRow]:
        """One row per question kind (task ``<task>:<kind>``): the metric's mean over that kind's documents
        (times ``scale``), its standard error and per-item scores, from the samples file."""
        kinds = self.doc_kinds.get(result.task)
        per_item = per_item_scores(result, metric) if kinds else None
        if not isinstance(per_item, PerItem) or not all(isinstance(doc, int) and 0 <= doc < len(kinds) for doc in per_item.doc_ids):
            return []
        of_doc = np.array([kinds[doc] for doc in per_item.doc_ids])
        rows = []
        for kind in sorted(set(of_doc)):
            mask = of_doc == kind
            scores = per_item.scores[mask]
            value = float(scores.mean()) * scale
            stderr = float(scores.std(ddof=1)) / np.sqrt(scores.size) * scale if scores.size > 1 else None
            docs = [doc for doc, keep in zip(per_item.doc_ids, mask) if keep]
            fingerprint = hashlib.sha256(f"{per_item.fingerprint}:{kind}:{docs}".encode()).hexdigest()[:16]
            task = f"{result.task}:{kind}"
            rows.append(self.row(
                task=task, dataset=_dataset(result), dataset_fingerprint=fingerprint, metric=metric, value=value,
                higher_is_better=result.higher_is_better.get(metric, True), n=int(scores.size),
                ci_low=value - Z95 * stderr if stderr is not None else None, ci_high=value + Z95 * stderr if stderr is not None else None,
                per_item=self.context.save_per_item(scores, self.loaded.name, "vqa", task, metric),
                extra={"category": "uncategorised", "kind": kind, "of_task": result.task, "lmms_metric": metric, "scale": scale,
                       "stderr": stderr, "results_file": str(result.file)},
            ))
        return rows

    def task_rows(self, result: TaskResult) -> tuple[list[ResultRow], tuple[Benchmark, Score, bool] | None]:
        """Rows of one task, and its Cambrian score (benchmark, score, partial) when it is one."""
        benchmark = benchmark_of(result.task)
        if benchmark is not None:
            for source in benchmark.sources:
                if source.task == result.task and source.metric in result.metrics and result.metrics[source.metric].value is not None:
                    row, score = self.metric_row(result, source.metric, source.scale, benchmark)
                    return [row], (benchmark, score, result.partial)
            wanted = [s.metric for s in benchmark.sources if s.task == result.task]
            found = {name: (m.value if m.value is not None else m.raw) for name, m in result.metrics.items()}
            return [self.failed(result.task, f"{benchmark.name}: no numeric {' / '.join(wanted)} for {result.task} in {result.file} "
                                             f"(found {found}); lmms-eval could not compute it (a judge model it needs, or a crashed aggregation: see its log)",
                                _dataset(result))], None
        rows = []
        for metric, measured in result.metrics.items():
            if measured.value is None:
                continue
            scale = 100.0 if (result.task, metric) in KNOWN_FRACTIONS else 1.0
            rows.append(self.metric_row(result, metric, scale, None)[0])
            rows.extend(self.kind_rows(result, metric, scale))
        if not rows:
            rows.append(self.failed(result.task, f"{result.task}: no numeric metric in {result.file} (found {sorted(result.metrics)})", _dataset(result)))
        return rows, None

    def category_rows(self, scores: dict[str, tuple[Score, bool]], where: str) -> list[ResultRow]:
        members = {category: [b.name for b in BENCHMARKS if b.category == category] for category in CATEGORIES}
        table = category_table({name: score for name, (score, _) in scores.items()}, members, OVERALL)
        partial = sorted(name for name, (_, is_partial) in scores.items() if is_partial)
        dataset = CATEGORY_DATASET + (":partial" if partial else "")
        task_of = {b.name: b.task for b in BENCHMARKS}
        rows = []
        for aggregate in table:
            level = "overall" if aggregate.name == OVERALL else "category"
            extra = {"level": level, "category": aggregate.name, "benchmarks": aggregate.members}
            if partial:
                extra["notes"] = [f"partial runs (--limit) among: {', '.join(partial)}"]
            if aggregate.score is None:
                missing = aggregate.missing if level == "overall" else [f"{name} ({task_of[name]})" for name in aggregate.missing]
                reason = (f"{aggregate.name} needs all of its members; missing: {', '.join(missing)} "
                          f"(no result for them in {where}); a mean over fewer is a different number")
                rows.append(self.row(task=aggregate.name, dataset=dataset, metric=SCORE, value=None, status=STATUS_SKIPPED, reason=reason, extra=extra))
                continue
            score = aggregate.score
            ci = (score.value - Z95 * score.stderr, score.value + Z95 * score.stderr) if score.stderr is not None else (None, None)
            rows.append(self.row(task=aggregate.name, dataset=dataset, metric=SCORE, value=score.value, n=score.n, ci_low=ci[0], ci_high=ci[1], extra={**extra, "stderr": score.stderr}))
        return rows

    def ingest(self, path: str | Path, expected: list[str] | None = None, run_error: str = "") -> list[ResultRow]:
        """Rows from the results files under ``path``; ``expected`` tasks that are absent become failed
        rows carrying ``run_error`` (lmms-eval's message) when there is one."""
        try:
            collected = collect_results(path)
        except LmmsResultsError as err:
            if expected:
                return [self.failed(task, f"lmms-eval produced no result for {task}: {run_error or err}") for task in expected]
            return [self.failed("-", str(err))]
        return self._rows(collected, str(path), expected, run_error)

    def _rows(self, collected: Collected, where: str, expected: list[str] | None, run_error: str) -> list[ResultRow]:
        rows: list[ResultRow] = [self.failed("-", error) for error in collected.errors]
        scores: dict[str, tuple[Score, bool]] = {}
        task_rows: list[ResultRow] = []
        tasks = dict(collected.tasks)
        if expected is not None:
            tasks = {task: tasks[task] for task in tasks if task in expected}
        for task, result in tasks.items():
            new_rows, cambrian = self.task_rows(result)
            task_rows.extend(new_rows)
            if cambrian:
                scores[cambrian[0].name] = (cambrian[1], cambrian[2])
        for task in expected or []:
            if task not in collected.tasks:
                why = run_error or "the results file has no entry for it"
                task_rows.append(self.failed(task, f"lmms-eval produced no result for {task}: {why}"))
        cambrian_wanted = any(benchmark_of(task) for task in (expected or [])) or bool(scores)
        if cambrian_wanted:
            rows.extend(self.category_rows(scores, where))
        if collected.notes:
            for row in task_rows:
                row.extra.setdefault("file_notes", collected.notes)
        return rows + task_rows


def _check_mllm_dir(path: Path) -> str:
    """Why ``path`` is not a usable MLLM directory ('' when its parts are there), without loading it.
    Layouts other than the project's (transformers Llava, LLaVA-NeXT) are checked by their reader."""
    from train.mllm_layouts import detect_layout

    layout = detect_layout(path)
    if layout is not None and layout.name != "project":
        return ""
    for part, fix in (("mllm.json", "pass a folder written by `python -m train` or train.mllm.save_mllm"),
                      ("encoder.safetensors", "re-export the MLLM"), ("projector.safetensors", "re-export the MLLM"),
                      ("lm", "re-export the MLLM (its LM directory, with config.json and the tokenizer, belongs in lm/)"),
                      ("lm/config.json", "copy the LM's transformers files (save_pretrained) into lm/")):
        if not (path / part).exists():
            return f"MLLM {path}: {path / part} is missing; {fix}"
    return ""


def _results_path(loaded: LoadedEncoder, option: str, count: int) -> Path | None:
    if loaded.spec.vqa_results:
        return Path(loaded.spec.vqa_results)
    if not option:
        return None
    folder = Path(option) / loaded.name
    if folder.exists():
        return folder
    if count == 1:
        return Path(option)
    raise LmmsResultsError(f"--vqa-results {option}: no folder {folder} for encoder {loaded.name!r}; with several encoders put each one's lmms-eval output in DIR/<encoder name>/ (or set vqa_results per encoder in the manifest)")


def _protocol(mllm_dir: Path) -> dict[str, str]:
    """``{"protocol": ...}`` when the MLLM records how it was built (``python -m train pivot-eval`` writes
    ``pivot-eval``), else empty: part of the row's identity, so lineage MLLMs and fresh ones never mix."""
    try:
        protocol = json.loads((mllm_dir / "mllm.json").read_text()).get("protocol")
    except (OSError, ValueError, AttributeError):  # unreadable: loading the MLLM fails later with the full message
        return {}
    return {"protocol": str(protocol)} if protocol else {}


@register_suite(
    "vqa", options=VqaOptions, needs=DataNeeds(none=True), encoder_check=_encoder_check,
    headline=(("overall", "score", "protocol=pivot-eval"), ("shapes_vqa", "exact_match", "protocol=pivot-eval"), ("shapes_vqa_mc", "acc", "protocol=pivot-eval")), variant_fields=("protocol",),
    flag_prefix="vqa", order=60, summary="VQA benchmarks through lmms-eval on each encoder's MLLM",
)
def vqa_suite(context: RunContext, encoders: list[LoadedEncoder]) -> list[ResultRow]:
    options: VqaOptions = context.options
    tasks = list(options.tasks or CAMBRIAN_TASKS)
    rows: list[ResultRow] = []
    to_run: list[tuple[LoadedEncoder, _Rows]] = []
    for loaded in encoders:
        try:
            results = _results_path(loaded, options.results, len(encoders))
        except LmmsResultsError as err:
            rows.append(_Rows(context, loaded, "vqa_results", {}).failed("-", str(err)))
            continue
        if results is not None:
            context.log(f"vqa: {loaded.name}: ingesting lmms-eval results from {results}")
            rows.extend(_Rows(context, loaded, "vqa_results", {"vqa_results": str(results)}).ingest(results))
        elif loaded.spec.mllm:
            problem = _check_mllm_dir(Path(loaded.spec.mllm))
            builder = _Rows(context, loaded, "lmms-eval run", {"mllm": loaded.spec.mllm, **_protocol(Path(loaded.spec.mllm))})
            if problem:
                rows.extend(builder.failed(task, problem) for task in tasks)
            else:
                to_run.append((loaded, builder))
        else:
            rows.append(context.skipped(loaded, "no MLLM and no lmms-eval results for this encoder: set mllm or vqa_results in the manifest, or pass --vqa-results DIR", dataset=DATASET))
    if to_run:
        rows.extend(_run(context, to_run, tasks))
    return rows


def processes_problem(processes: int, device: str) -> str:
    """Why ``--vqa-processes`` cannot run on ``device`` ('' when it can): on GPUs each process takes one."""
    if processes > 1 and device.split(":")[0] == "cuda":
        import torch

        if torch.cuda.device_count() < processes:
            return f"--vqa-processes {processes} runs one process per GPU, and {torch.cuda.device_count()} GPU(s) are visible; lower --vqa-processes"
    return ""


def _run(context: RunContext, to_run: list[tuple[LoadedEncoder, _Rows]], tasks: list[str]) -> list[ResultRow]:
    from benchmarks.lmms.runner import Job, run_jobs

    options: VqaOptions = context.options
    problem = processes_problem(options.processes, context.extraction.device)
    if problem:
        return [builder.failed(task, problem) for _, builder in to_run for task in tasks]
    root = context.run_dir / "vqa"
    include_path = None
    if any(task in SHAPES_TASKS for task in tasks):
        data = context.data if PREFERENCES in dataset_capabilities(context.data) else SHAPES_DEFAULT_DATA
        written = write_shapes_tasks(data, root / "tasks", n_items=options.items)
        include_path = written.include_path
        context.log(f"vqa: shapes VQA tasks: {written.n_items} items of {data} ({written.kinds}) in {include_path}")
    jobs = [Job(loaded.name, str(loaded.spec.mllm), str(root / folder / loaded.name), tasks, batch_size=options.batch_size,
                limit=options.limit or None, device=context.extraction.device, blind=blind)
            for blind, folder in ((False, "lmms"), (True, "lmms-blind"))[: 2 if options.blind else 1] for loaded, _ in to_run]
    # Local shapes tasks only: keep their processed copies out of the user's Hugging Face cache.
    hf_cache = root / "hf-datasets" if all(task in SHAPES_TASKS for task in tasks) else None
    outcomes = run_jobs(jobs, include_path, root, hf_cache, log=context.log, processes=options.processes)
    rows: list[ResultRow] = []
    kinds = [json.loads(line)["kind"] for line in written.docs.read_text().splitlines()] if include_path else []
    blind_outcomes = outcomes[len(to_run):] if options.blind else [None] * len(to_run)
    for (loaded, builder), outcome, blind in zip(to_run, outcomes, blind_outcomes):
        builder.doc_kinds = {task: kinds for task in SHAPES_TASKS if kinds}
        context.log(f"vqa: {loaded.name}: lmms-eval {'failed: ' + outcome.error.splitlines()[0] if outcome.error else 'done'} in {outcome.seconds:.1f} s (log {outcome.log})")
        builder.provenance["lmms_log"] = outcome.log
        encoder_rows = builder.ingest(outcome.job.output_dir, expected=tasks, run_error=outcome.error)
        if blind is not None:
            encoder_rows += gain_rows(builder, encoder_rows, Path(outcome.job.output_dir), blind)
        rows.extend(encoder_rows)
    return rows


@dataclass
class DocScores:
    """One row's per-document scores (doc_id -> value in the row's unit, i.e. times ``scale``)."""

    task: str  # the row's task (a kind row: ``<task>:<kind>``)
    metric: str  # the row's metric
    scores: dict[Any, float]
    category: str | None = None


def doc_scores(collected: Collected, doc_kinds: dict[str, list[str]]) -> dict[tuple[str, str], DocScores]:
    """(row task, row metric) -> per-document scores, for every row ``_Rows`` writes from ``collected``
    that has per-document values (Cambrian benchmarks: metric ``score`` in points; other tasks: each
    metric, and per question kind where the documents' kinds are known)."""
    found: dict[tuple[str, str], DocScores] = {}
    for task, result in collected.tasks.items():
        benchmark = benchmark_of(task)
        if benchmark is not None:
            source = next((s for s in benchmark.sources if s.task == task and s.metric in result.metrics and result.metrics[s.metric].value is not None), None)
            wanted = [(source.metric, source.scale, SCORE)] if source else []
        else:
            wanted = [(m, 100.0 if (task, m) in KNOWN_FRACTIONS else 1.0, m) for m, value in result.metrics.items() if value.value is not None]
        for metric, scale, row_metric in wanted:
            per_item = per_item_scores(result, metric)
            if not isinstance(per_item, PerItem):
                continue
            values = {doc: float(value) * scale for doc, value in zip(per_item.doc_ids, per_item.scores)}
            found[(task, row_metric)] = DocScores(task, row_metric, values, benchmark.category if benchmark else None)
            kinds = doc_kinds.get(task)
            if benchmark is None and kinds:
                for kind in sorted(set(kinds)):
                    chosen = {doc: v for doc, v in values.items() if isinstance(doc, int) and 0 <= doc < len(kinds) and kinds[doc] == kind}
                    if chosen:
                        found[(f"{task}:{kind}", row_metric)] = DocScores(f"{task}:{kind}", row_metric, chosen)
    return found


def gain_rows(builder: "_Rows", rows: list[ResultRow], output_dir: Path, blind: Any) -> list[ResultRow]:
    """The vision gain rows of one MLLM (see the module docstring), and the gain noted on its score rows."""
    from probes.vqa import vision_gain

    try:
        blind_collected = collect_results(blind.job.output_dir)
        seeing = doc_scores(collect_results(output_dir), builder.doc_kinds)
    except LmmsResultsError as err:
        return [builder.failed("-", f"the blind run produced no results, so no vision gain: {blind.error or err}")]
    unseen = doc_scores(blind_collected, builder.doc_kinds)
    keys = [key for key in seeing if key in unseen]
    categories = {f"{t}|{m}": seeing[(t, m)].category for t, m in keys if seeing[(t, m)].category}
    # A category (and overall) only over all of its benchmarks, as its score row is: a mean over fewer is another number.
    complete = {c for c in CATEGORIES if sum(1 for cat in categories.values() if cat == c) == sum(1 for b in BENCHMARKS if b.category == c)}
    categories = {name: cat for name, cat in categories.items() if cat in complete} if len(complete) == len(CATEGORIES) else {}
    gains = vision_gain({f"{t}|{m}": seeing[(t, m)].scores for t, m in keys}, {f"{t}|{m}": unseen[(t, m)].scores for t, m in keys},
                        categories, overall=OVERALL, seed=builder.context.seed)
    by_identity = {(row.task, row.metric): row for row in rows if row.status == "ok"}
    found = []
    for gain in gains:
        if gain.level == "task":
            task, metric = gain.name.split("|", 1)
        else:
            task, metric = gain.name, SCORE
        score_row = by_identity.get((task, metric))
        dataset = score_row.dataset if score_row is not None else (CATEGORY_DATASET if gain.level != "task" else DATASET)
        extra = {"level": gain.level, "of_metric": metric, "score": gain.score, "blind_score": gain.blind, "p_value": gain.p_value,
                 "paired_documents": gain.n, "unpaired_documents": gain.unpaired, "blind_run": str(blind.job.output_dir),
                 "control": "vee_mllm blind=true: every image replaced by the encoder's mean colour"}
        if gain.gain is None:
            found.append(builder.row(task=task, dataset=dataset, metric=f"{metric}_vision_gain", value=None, status=STATUS_SKIPPED,
                                     reason=f"no paired per-document scores for {', '.join(gain.missing)}", extra=extra))
            continue
        found.append(builder.row(task=task, dataset=dataset, metric=f"{metric}_vision_gain", value=gain.gain, ci_low=gain.ci_low, ci_high=gain.ci_high,
                                 n=gain.n, extra={**extra, "measures_vision": gain.significant and gain.gain > 0}))
        if score_row is not None:
            score_row.extra.update(blind_score=gain.blind, vision_gain=gain.gain, vision_gain_ci=[gain.ci_low, gain.ci_high], trivial_baseline=gain.blind)
            if not (gain.significant and gain.gain > 0):
                score_row.extra["degenerate"] = (f"does not measure vision: score minus blind score {gain.gain:+.3g} points, 95% CI "
                                                 f"[{gain.ci_low:.3g}, {gain.ci_high:.3g}] over {gain.n} documents")
    return found
