"""The bottom of the project: what every package may import (it imports nothing of this project).

- :mod:`common.errors`: the user-error family (``UserError``, ``UsageError``, ``DataError``): what the user
  can fix is one line naming the flag or file, plus a ``fix:`` line; every command prints it so and
  exits 2; only a bug prints a traceback.
- :mod:`common.records`: the one reader of image-record JSONL (preference and caption lines), with its
  record rules and the accounting of skipped records, shared by ``train/`` and ``benchmarks/``.
"""
from .errors import DataError, UsageError, UserError

__all__ = ["DataError", "UsageError", "UserError"]
