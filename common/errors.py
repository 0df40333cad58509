"""The user-error family: problems the user can fix, as opposed to bugs.

A :class:`UserError` carries ``problem`` (one line naming the flag, file or record and what is wrong)
and, optionally, ``fix`` (one line saying what to do). Its text is the problem, then ``  fix: ...`` on a
second line when there is a fix; a command prints it after its name and exits 2
(:func:`format_user_error`). Anything else that escapes is a bug and keeps its traceback.

- :class:`UsageError`: the command line, a plan or a manifest (a flag's value, a missing option).
- :class:`DataError`: a dataset or training file (missing, unreadable, too many unusable records). It is
  also a ``ValueError``, so callers that caught the readers' ``ValueError`` keep working.

The project's other error types are members: ``encoders.CheckpointError`` (a checkpoint),
``train.mllm.MLLMError`` (an MLLM directory), ``train.config.SettingsError`` (a stage setting),
``imagesets.BadImageError`` (an image file).
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: ``problem`` (one line) and an optional ``fix`` (one line)."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = str(problem)
        self.fix = str(fix)
        super().__init__(self.problem + (f"\n  fix: {self.fix}" if self.fix else ""))

    def __reduce__(self):  # survives pickling (DataLoader workers, process pools) with both parts
        return (type(self), (self.problem, self.fix))

    def one_line(self) -> str:
        """Problem and fix on one line (for a result row's reason or a log line)."""
        return f"{self.problem}; {self.fix}" if self.fix else self.problem


class UsageError(UserError):
    """A bad flag, plan or manifest value: names the flag (or file and key) and the fix."""


class DataError(UserError, ValueError):
    """A dataset or training file that cannot be used: names the file (and record) and the fix."""

