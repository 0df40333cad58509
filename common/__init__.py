"""The bottom of the project: what every package may import (it imports nothing of this project).

- :mod:`common.errors`: the user-error family (``UserError``, ``UsageError``, ``DataError``): what the user
  can fix is one line naming the flag or file, plus a ``fix:`` line; every command prints it so and
  exits 2; only a bug prints a traceback.
- :mod:`common.records`: the one reader of image-record JSONL (preference and caption lines), with its
  record rules and the accounting of skipped records, shared by ``train/`` and ``imagesets/``.
- :mod:`common.options`: typed options, one dataclass field per setting (flag, plan key, bounds, help,
  config hash), for the suites of ``benchmarks`` and the commands of ``python -m train``.
- :mod:`common.registry`: the one name -> object registry class (encoder families, suites, dataset kinds,
  MLLM layouts), duplicates refused, entry points for other packages.
- :mod:`common.console`: no third-party progress bar in a log file (the entry points call it).
"""
from .errors import DataError, UsageError, UserError

__all__ = ["DataError", "UsageError", "UserError"]
