"""benchmarks.demo's usage checks: refused before anything trains."""
from __future__ import annotations

import pytest

from benchmarks import demo


@pytest.mark.parametrize("argv, cause", [(["--replicates", "0"], "--replicates 0"), (["--replicates", "100000"], "--replicates 100000: the number of Stage-2 training seeds per arm must be a whole number >= 1 and <= 16")])
def test_bad_usage_is_refused_before_training(argv, cause, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("train.demo.make_demo_lineage", lambda *a, **k: pytest.fail("the demo trained"))
    assert demo.main(["--out", str(tmp_path / "demo"), *argv]) == 2
    assert cause in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_the_demo_runs_read_one_plan_and_the_controls_run_beside_the_lineage(tmp_path):
    jobs = {job.name: job.argv for job in demo.eval_jobs(tmp_path, tmp_path / "lineage" / "lineage.toml", "cache", "note", tmp_path / "controls.toml")}
    assert list(jobs) == ["seg", "shapes", "pivot-eval", "controls", "digits"]
    for argv in jobs.values():
        assert argv[argv.index("--plan") + 1] == str(demo.DEMO_PLAN) and demo.DEMO_PLAN.is_file()
        assert not any(flag.startswith(("--seg-", "--vqa-")) for flag in argv)  # the schedule is the plan's, written once
    assert jobs["controls"][jobs["controls"].index("--suite") + 1] == "loc,seg,grad"
    assert "controls" not in {job.name for job in demo.eval_jobs(tmp_path, tmp_path / "lineage.toml", "cache", "note")}


def test_the_note_states_the_plans_schedule_against_the_suites_defaults():
    note = demo.eval_note()
    assert "iters 60 (default 40000)" in note.replace("4e+04", "40000") and "min_steps 150 (default 1000)" in note and "shapes:n=800:seed=0" in note
