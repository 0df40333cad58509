"""benchmarks.demo's usage checks: refused before anything trains."""
from __future__ import annotations

import pytest

from benchmarks import demo


@pytest.mark.parametrize("argv, cause", [(["--replicates", "0"], "--replicates 0"), (["--replicates", "100000"], "--replicates 100000: the number of Stage-2 training seeds per arm must be a whole number >= 1 and <= 16"),
                                         (["--control", "--replicates", "1"], "--control needs --replicates 2 or more")])
def test_bad_usage_is_refused_before_training(argv, cause, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("train.demo.make_demo_lineage", lambda *a, **k: pytest.fail("the demo trained"))
    assert demo.main(["--out", str(tmp_path / "demo"), *argv]) == 2
    assert cause in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
