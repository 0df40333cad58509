"""What the command-line tools write to the console: no progress bar in a log file.

A progress bar redraws one line with carriage returns; in a terminal that is one moving line, in a log
file (``make demo``'s ``runs/demo/logs/*.log``, a CI log, ``2> run.log``) it is every intermediate
state glued together. Our own bars are switched on only for a terminal (``sys.stderr.isatty()``);
:func:`quiet_progress_bars` does the same for the libraries that draw their own: transformers
("Loading weights", "Writing model shards"), huggingface_hub, datasets, and tqdm's default for any
library that does not choose (``TQDM_DISABLE``). It sets environment variables, so the processes the
tools start (``benchmarks.run_many``'s runs, the lmms-eval subprocess, torchrun workers) inherit it.

``import benchmarks`` calls it, so every entry point under ``benchmarks`` (run, demo, run_many, check,
the lmms-eval runner) starts with it before any of those libraries is imported; ``python -m train``
calls it first thing too (its torchrun workers included).
"""
from __future__ import annotations

import os
import sys
from typing import TextIO

# Each library's own switch, read when the library is imported (so children inherit it).
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub, and transformers' bars (they follow the hub's switch)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets (lmms-eval's task loading)
    "TQDM_DISABLE": "1",  # tqdm's default for callers that do not pass disable= themselves
}


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def quiet_progress_bars(stream: TextIO | None = None) -> bool:
    """Switch third-party progress bars off when ``stream`` (default ``sys.stderr``, where they draw) is
    not a terminal; returns whether it did. A variable the user set stays as set. In a Jupyter kernel
    (whose streams are no terminals but render bars as widgets) nothing changes."""
    stream = sys.stderr if stream is None else stream
    if stream is None or is_terminal(stream) or "ipykernel" in sys.modules:
        return False
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # Libraries imported already read their switch at import: tell them directly.
    if "huggingface_hub" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    return True
