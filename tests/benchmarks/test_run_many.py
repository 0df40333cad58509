"""benchmarks.run_many: independent runs side by side, each with its own log, statuses combined."""
from __future__ import annotations

from benchmarks.run_many import RunJob, run_many


def test_every_run_writes_its_own_log_and_a_failing_run_makes_the_status_nonzero(tmp_path):
    lines: list[str] = []
    jobs = [RunJob("help", ["--help"]), RunJob("bad", ["--encoder", str(tmp_path / "missing.safetensors"), "--seg-iters", "0", "--out", str(tmp_path / "run")])]
    status = run_many(jobs, tmp_path / "logs", workers=2, log=lines.append)
    assert status == 2
    assert "--suite" in (tmp_path / "logs" / "help.log").read_text()
    assert "--seg-iters" in (tmp_path / "logs" / "bad.log").read_text()
    assert any(line.startswith("help: done") for line in lines) and any(line.startswith("bad: exit 2") and "bad.log" in line for line in lines)
    assert lines[0].startswith("2 runs, 2 at a time with ")


def test_all_runs_succeeding_is_status_zero_and_workers_never_exceed_the_jobs(tmp_path):
    lines: list[str] = []
    assert run_many([RunJob("help", ["--help"])], tmp_path / "logs", workers=8, log=lines.append) == 0
    assert lines[0].startswith("1 runs, 1 at a time")
