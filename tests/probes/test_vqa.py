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


# -- vision gain -------------------------------------------------------------------------------------
import numpy as np  # noqa: E402

from probes.vqa import vision_gain  # noqa: E402


def _docs(values) -> dict:
    return {doc: float(value) for doc, value in enumerate(values)}


def test_a_model_that_ignores_its_image_has_zero_gain_within_the_ci():
    rng = np.random.default_rng(0)
    same = {"gqa": _docs(rng.integers(0, 2, 300)), "mmvp": _docs(rng.integers(0, 2, 150))}
    rows = vision_gain(same, same, {"gqa": "General", "mmvp": "Vision-centric"}, scale=100.0)
    assert [(row.name, row.level) for row in rows] == [("gqa", "task"), ("mmvp", "task"), ("General", "category"), ("Vision-centric", "category"), ("overall", "overall")]
    for row in rows:
        assert row.gain == 0.0 and row.ci_low == 0.0 == row.ci_high and not row.significant and row.p_value == 1.0


def test_independent_draws_from_one_distribution_are_rarely_significant():
    """The blind run's answers as a fresh draw of the same accuracy: the 95% interval excludes zero in about 5% of draws."""
    rng = np.random.default_rng(1)
    draws, flagged = 200, 0
    for draw in range(draws):
        seeing = {"a": _docs(rng.random(120) < 0.6), "b": _docs(rng.random(80) < 0.3)}
        blind = {"a": _docs(rng.random(120) < 0.6), "b": _docs(rng.random(80) < 0.3)}
        overall = vision_gain(seeing, blind, {"a": "X", "b": "Y"}, n_boot=500, seed=draw)[-1]
        flagged += overall.significant
    assert flagged / draws <= 0.09


def test_a_planted_gain_is_found_per_task_category_and_overall():
    rng = np.random.default_rng(2)
    blind = {"a": rng.random(200) < 0.3, "b": rng.random(200) < 0.5, "c": rng.random(100) < 0.5}
    seeing = {"a": blind["a"] | (rng.random(200) < 0.4), "b": blind["b"].copy(), "c": blind["c"].copy()}  # vision helps on task a only
    rows = {row.name: row for row in vision_gain({k: _docs(v) for k, v in seeing.items()}, {k: _docs(v) for k, v in blind.items()},
                                                 {"a": "X", "b": "X", "c": "Y"}, scale=100.0)}
    assert rows["a"].significant and rows["a"].gain == pytest.approx(100.0 * (seeing["a"].mean() - blind["a"].mean()))
    assert rows["a"].score == pytest.approx(100.0 * seeing["a"].mean()) and rows["a"].n == 200 and rows["a"].ci_low > 0
    assert not rows["b"].significant and rows["b"].gain == 0.0
    assert rows["X"].significant and rows["X"].gain == pytest.approx(rows["a"].gain / 2)  # mean of its tasks' gains
    assert rows["overall"].gain == pytest.approx(rows["X"].gain / 2) and rows["overall"].significant  # mean of category means
    assert rows["overall"].ci_high - rows["overall"].ci_low < rows["a"].ci_high - rows["a"].ci_low


def test_documents_are_paired_by_id_and_missing_members_leave_aggregates_out():
    seeing = {"a": {"x": 1.0, "y": 1.0, "z": 0.0}, "b": {0: 1.0}}
    blind = {"a": {"y": 0.0, "x": 0.0, "w": 1.0}}  # x and y are paired; z and w are not
    rows = {row.name: row for row in vision_gain(seeing, blind, {"a": "X", "b": "X", "c": "Y"})}
    assert rows["a"].gain == 1.0 and rows["a"].n == 2 and rows["a"].unpaired == 2
    assert rows["b"].gain is None and rows["b"].missing == ["blind run"] and not rows["b"].significant
    assert rows["X"].gain is None and rows["X"].missing == ["b"]
    assert rows["Y"].missing == ["c"] and rows["overall"].missing == ["X", "Y"]
    assert [row.level for row in vision_gain(seeing, blind)] == ["task", "task"]  # no category map: tasks only
    with pytest.raises(ValueError, match="task 'a' has NaN"):
        vision_gain({"a": {0: float("nan")}}, {"a": {0: 1.0}})
