"""Typed options moved to :mod:`common.options` (the bottom of the house: ``train`` declares its settings
the same way). This alias is for ``benchmarks/suites/classification.py``, which another branch is changing
now; it goes when that file imports ``common.options``."""
from common.options import option

__all__ = ["option"]
