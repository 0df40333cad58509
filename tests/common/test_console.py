"""No progress bar in a log: where stderr is not a terminal, the entry points (benchmarks, python -m train) switch the libraries' bars off."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.console import QUIET_ENVIRONMENT, quiet_progress_bars
from tests.benchmarks.conftest import write_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
BAR = "%|"  # what every tqdm bar draws between its percentage and its bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clean_environment(monkeypatch):
    for name in QUIET_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def test_a_log_stream_switches_the_bars_off_and_a_terminal_does_not(clean_environment, monkeypatch):
    assert not quiet_progress_bars(_Terminal())
    assert not any(name in os.environ for name in QUIET_ENVIRONMENT)
    monkeypatch.setenv("TQDM_DISABLE", "0")  # a choice the user made stays
    assert quiet_progress_bars(io.StringIO())
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TQDM_DISABLE"] == "0"


@pytest.fixture(scope="module")
def mllm_dir(tmp_path_factory) -> Path:
    """A tiny MLLM directory (train.mllm): loading its LM is where transformers draws "Loading weights"."""
    from encoders import load_encoder
    from tests.benchmarks.suites.conftest import write_tiny_lm
    from train.mllm import build_mllm, save_mllm

    folder = tmp_path_factory.mktemp("console")
    lm = write_tiny_lm(folder / "lm", ["a red square", "a blue circle"])
    return save_mllm(build_mllm(load_encoder(write_tiny_checkpoint(folder / "enc.safetensors")), lm, seed=0), folder / "mllm")


def _stderr_of(command: list[str], tmp_path: Path, env: dict[str, str]) -> str:
    log = tmp_path / "stderr.log"
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=handle, env=env, timeout=600, check=False, text=True)
    text = log.read_text(errors="replace")
    assert done.returncode == 0, done.stdout[-2000:] + text[-2000:]
    return text


def test_benchmarks_run_writes_no_progress_bar_to_a_log_file(mllm_dir, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in QUIET_ENVIRONMENT}  # as a user's shell has it
    # The same load without the switch draws a bar, so the check below can fail.
    unswitched = _stderr_of([sys.executable, "-c", f"from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained({str(mllm_dir / 'lm')!r})"], tmp_path, env)
    assert BAR in unswitched
    logged = _stderr_of([sys.executable, "-m", "benchmarks.run", "--encoder", str(mllm_dir), "--features", "projector", "--suite", "cls",
                         "--data", "shapes:n=100:n_val=20:seed=0:size=32", "--linear-epochs", "1", "--no-grid-extend", "--out", str(tmp_path / "run"),
                         "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-report"], tmp_path, env)
    assert BAR not in logged, logged[-2000:]


def test_python_m_train_writes_no_progress_bar_to_a_log_file(mllm_dir, tmp_path):
    """``python -m train`` switches the bars off itself (it imports nothing of benchmarks): building an MLLM
    loads the LM, where transformers draws "Loading weights" (the unswitched load above draws it)."""
    env = {key: value for key, value in os.environ.items() if key not in QUIET_ENVIRONMENT}
    logged = _stderr_of([sys.executable, "-m", "train", "build", "--encoder", str(mllm_dir.parent / "enc.safetensors"), "--lm", str(mllm_dir / "lm"),
                         "--out", str(tmp_path / "built")], tmp_path, env)
    assert (tmp_path / "built" / "mllm.json").is_file()
    assert BAR not in logged, logged[-2000:]
