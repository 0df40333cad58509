"""The dataset kinds moved to the top-level package :mod:`imagesets` (below ``train`` and ``benchmarks``,
which both read them). This alias is for ``benchmarks/suites/classification.py``, which another branch
is changing now; it goes when that file imports ``imagesets``."""
from imagesets import LABELS

__all__ = ["LABELS"]
