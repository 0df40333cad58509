import math

import pytest

from probes.vqa import Score, category_table, mean_score


def test_mean_score_and_independent_stderr():
    mean = mean_score([Score(20.0, 1.0, 10), Score(30.0, 1.0, 30), Score(40.0, 1.0, 5), Score(50.0, 1.0, 5)])
    assert mean.value == 35.0 and mean.n == 50
    assert mean.stderr == pytest.approx(0.5)  # sqrt(4 * 1^2) / 4
    assert mean_score([Score(10.0, 1.0), Score(20.0, None)]).stderr is None


def test_category_table_overall_is_mean_of_category_means_not_of_benchmarks():
    scores = {"a": Score(90.0), "b": Score(10.0), "c": Score(30.0)}
    table = category_table(scores, {"X": ["a", "b"], "Y": ["c"]})
    assert [(row.name, row.score.value) for row in table] == [("X", 50.0), ("Y", 30.0), ("overall", 40.0)]
    assert math.isclose(sum(s.value for s in scores.values()) / 3, 43.333, rel_tol=1e-3)  # the other mean differs


def test_missing_member_makes_the_aggregate_missing():
    table = category_table({"a": Score(90.0)}, {"X": ["a", "b"], "Y": ["c"]})
    assert table[0].score is None and table[0].missing == ["b"]
    assert table[2].score is None and table[2].missing == ["X", "Y"]
