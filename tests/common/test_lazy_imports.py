"""Deferred imports: a process that uses timm does not load wandb, and the real package still loads on use."""
from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_importing_the_encoders_does_not_load_wandb_but_using_it_does():
    out = _run("import sys, encoders, timm.utils.summary\n"
               "loaded = 'wandb.sdk' in sys.modules\n"
               "import wandb\n"
               "print(loaded, isinstance(wandb.__version__, str), 'wandb.sdk' in sys.modules)")
    assert out == "False True True"


def test_libraries_that_ask_whether_it_is_installed_get_the_answer_without_loading_it():
    out = _run("import sys, importlib.util, encoders\n"
               "found = importlib.util.find_spec('wandb') is not None\n"
               "import accelerate, transformers\n"
               "print(found, 'wandb.sdk' in sys.modules)")
    assert out == "True False"


def test_an_absent_package_is_left_absent():
    assert _run("import sys\nfrom common.lazy_imports import defer_import\ndefer_import('no_such_package_xyz')\nprint('no_such_package_xyz' in sys.modules)") == "False"
