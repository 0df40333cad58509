"""How the report writes numbers: one rule for tables, summary sentences and hover text."""
from __future__ import annotations

import math
from typing import Any


def _decimals(magnitude: float) -> int | None:
    """Decimals of :func:`num` for a magnitude (None: 3 significant digits, below 0.001)."""
    if magnitude < 0.001:
        return None
    if magnitude < 1:
        return 3
    return 2 if magnitude < 1000 else 1


def num(value: Any) -> str:
    """Compact number: 3 decimals below 1 (3 significant digits below 0.001), 2 decimals up to 1000, 1 above."""
    if value is None:
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return str(number)
    if number == 0:
        return "0"
    decimals = _decimals(abs(number))
    return f"{number:.3g}" if decimals is None else f"{number:.{decimals}f}"


def signed(value: Any) -> str:
    """:func:`num` with a sign: ``+1.20``, ``-0.300``, ``0``."""
    text = num(value)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def mean_sd(mean: float, sd: float | None) -> str:
    """``31.20 ± 0.41``: the mean as :func:`num` writes it, the sd with the same decimals (``31.20`` without one)."""
    if sd is None or not math.isfinite(sd):
        return num(mean)
    decimals = _decimals(abs(mean)) if mean else _decimals(abs(sd)) if sd else 2
    if decimals is None or (sd and round(sd, decimals) == 0):  # an sd the mean's decimals would show as 0: one significant digit
        return f"{num(mean)} ± {sd:.1g}"
    return f"{num(mean)} ± {sd:.{decimals}f}"


def p_text(p: float) -> str:
    """A p-value in two significant digits, as the tables show it (``0.013``, ``1``, ``0.0005``)."""
    return f"{p:.2g}"
