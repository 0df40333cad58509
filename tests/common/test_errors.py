"""The user-error family: one line and a fix line, pickles whole, and every project error type is a member."""
from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from common.errors import DataError, UsageError, UserError

COMMON = Path(__file__).resolve().parents[2] / "common"
PROJECT_PACKAGES = {"benchmarks", "encoders", "probes", "reports", "train", "evidence", "tests"}


def test_problem_and_fix_print_as_two_lines_and_join_into_one_for_a_row():
    err = DataError("/data/x.json: not valid JSON", "restore the file")
    assert str(err) == "/data/x.json: not valid JSON\n  fix: restore the file" and err.one_line() == "/data/x.json: not valid JSON; restore the file"
    assert str(UsageError("--seed 'x': expected an integer")) == "--seed 'x': expected an integer"  # a fix already in the line: one line
    assert isinstance(err, ValueError) and not isinstance(UsageError("x"), ValueError)


@pytest.mark.parametrize("err", [DataError("p", "f"), UsageError("p")], ids=["data", "usage"])
def test_it_survives_pickling(err):
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err) and (again.problem, again.fix, str(again)) == (err.problem, err.fix, str(err))


def test_the_projects_error_types_are_members():
    from benchmarks.check import UsageError as CheckUsageError
    from common.options import UsageError as OptionsUsageError
    from encoders import CheckpointError, ManifestError
    from imagesets import BadImageError
    from train.config import SettingsError
    from train.data import DataError as TrainDataError
    from train.mllm import MLLMError

    assert CheckUsageError is OptionsUsageError is UsageError and TrainDataError is DataError
    for kind in (BadImageError, CheckpointError, ManifestError, SettingsError, MLLMError):
        assert issubclass(kind, UserError), kind
    checkpoint = pickle.loads(pickle.dumps(CheckpointError("/m/ckpt.pt", "truncated zip", "re-save it")))
    assert checkpoint.path == "/m/ckpt.pt" and str(checkpoint) == "/m/ckpt.pt: truncated zip\n  fix: re-save it"
    image = pickle.loads(pickle.dumps(BadImageError("/d/a.jpg", "truncated")))
    assert image.path == "/d/a.jpg" and image.problem == "cannot read image /d/a.jpg: truncated" and image.fix.startswith("restore this file")


def test_common_imports_nothing_of_the_project():
    for path in COMMON.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not {name.split(".")[0] for name in names} & PROJECT_PACKAGES, f"{path.name} imports {names}"
