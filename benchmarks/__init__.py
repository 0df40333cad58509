"""Datasets, the feature store, suites and the command-line tools (run, demo, run_many, check).

Every entry point here writes its console output to terminals and log files alike; where stderr is not a
terminal, third-party progress bars are switched off first (``common.console``)."""
from common.console import quiet_progress_bars

quiet_progress_bars()
