"""--vqa-tasks names are checked against lmms-eval's task YAMLs without its 13-25 s TaskManager indexing."""
from __future__ import annotations

from benchmarks.lmms.cambrian import BENCHMARKS, CAMBRIAN_TASKS
from benchmarks.lmms.shapes_task import TASKS as SHAPES_TASKS
from benchmarks.lmms.task_index import known_tasks, unknown_tasks_problem


def test_the_cambrian_tasks_and_their_older_names_are_known():
    known = known_tasks()
    assert len(known) > 1000
    assert set(CAMBRIAN_TASKS) <= known and {source.task for benchmark in BENCHMARKS for source in benchmark.sources} <= known
    assert {"mme", "mathvista_testmini_format", "verl_reasoning", "vstar_bench"} <= known  # a tag from an included template; a task named in its template


def test_an_unknown_task_is_named_with_the_close_ones():
    assert unknown_tasks_problem(("mme", *SHAPES_TASKS), SHAPES_TASKS) == ""
    problem = unknown_tasks_problem(("mmbench_en_dvv", "bogus_task"), SHAPES_TASKS)
    assert problem.startswith("unknown lmms-eval task(s) mmbench_en_dvv, bogus_task (close: ") and "mmbench_en_dev" in problem and "shapes_vqa" in problem
