"""Validation of ``benchmarks.run``'s command line before any model is loaded.

Every user error is a :class:`UsageError` whose message is one line naming the flag or file and the
fix; ``benchmarks.run`` prints it and exits 2. Checks that need a loaded encoder (``--layers`` out of
range) run right after loading, before any feature is computed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from common.errors import UsageError

__all__ = ["UsageError"]  # raised by every check here; benchmarks.run prints it and exits 2


def parse_layers(text: str) -> list[int] | str | None:
    """``--layers``: '' -> None, ``all``, or a comma list of block indices (negative counts from the end)."""
    text = (text or "").strip()
    if not text:
        return None
    if text == "all":
        return "all"
    return _block_indices("--layers", text, "-1,-2,-4", ", or 'all'")


def _block_indices(flag: str, text: str, example: str = "-1,-2", alternative: str = "") -> list[int]:
    """A comma list of block indices (``-1,-2``), or a UsageError naming ``flag`` with ``example``."""
    try:
        blocks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a comma list of block indices such as {example} (write {flag}={example}){alternative}") from None
    if not blocks:
        raise UsageError(f"{flag} {text!r}: no block index given; e.g. {flag}={example}{alternative}")
    return blocks


def parse_suites(values: Sequence[str] | str | None, known: Sequence[str], extra: Sequence[str] = (), default: str = "all") -> list[str]:
    """Repeated and comma-separated ``--suite`` values merged in order (duplicates dropped); ``all``
    expands to ``known``; ``extra`` names further registered suites that may be asked for by name."""
    if values is None or (not isinstance(values, str) and not values):
        values = [default]
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts:
            raise UsageError(f"--suite {value!r}: empty; choose all or a comma list of {', '.join(known)}")
        for part in parts:
            expanded = list(known) if part == "all" else [part]
            names.extend(name for name in expanded if name not in names)
    unknown = [name for name in names if name not in known and name not in extra]
    if unknown:
        raise UsageError(f"--suite: unknown suite(s) {', '.join(unknown)}; choose all or a comma list of {', '.join(known)}")
    return names


def check_device(device: str) -> None:
    """``--device``: a device torch knows; ``cuda`` only with a visible GPU (and an index below the count),
    ``mps`` / ``xpu`` only when this torch has that backend and sees the device."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r}: not a torch device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {device}: no CUDA GPU is visible here; use --device cpu (or check CUDA_VISIBLE_DEVICES and the driver)")
        if parsed.index is not None and parsed.index >= count:
            raise UsageError(f"--device {device}: only {count} GPU(s) visible (cuda:0..cuda:{count - 1})")
    elif parsed.type in ("mps", "xpu"):
        backend = torch.backends.mps if parsed.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise UsageError(f"--device {device}: this torch ({torch.__version__}) has no usable {parsed.type.upper()} device here "
                             f"(torch.{'backends.mps' if parsed.type == 'mps' else 'xpu'}.is_available() is False); use --device cpu, or cuda on a GPU")
    elif parsed.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: unsupported device type {parsed.type!r}; use cpu or cuda")


def check_out(out: Path) -> None:
    """``--out``: a directory (created if absent), not a file."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a directory; pass a directory for the run (e.g. --out runs/mine)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {out}: {parent} is a file; pass a directory path")
            break


def check_cache_dir(cache: Path) -> None:
    if cache.exists() and not cache.is_dir():
        raise UsageError(f"--cache-dir {cache}: is a file, not a directory; pass a directory (or set VEE_CACHE)")


def make_dir(path: Path, flag: str) -> None:
    """Create a directory the run writes to; UsageError naming the flag when that is not allowed."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot create it ({err.strerror or err}); pass a writable directory") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path}: not writable; pass a writable directory")


def check_encoder_paths(paths: Sequence[str]) -> None:
    """``--encoder``: every path exists (a file or an HF model directory)."""
    for path in paths:
        if not Path(path).exists():
            raise UsageError(f"--encoder {path}: no such file or directory; pass a checkpoint file or a Hugging Face model directory")


def check_arch(arch: str) -> None:
    """``--arch``: an explicit ``family:`` prefix names a registered family."""
    if ":" not in arch:
        return
    from encoders.family import FAMILIES

    family = arch.split(":", 1)[0]
    if family not in FAMILIES:
        raise UsageError(f"--arch {arch!r}: unknown family {family!r}; families: {', '.join(FAMILIES.names())}")


def layers_problem(text: str) -> str:
    """Option check of ``--layers``: '' or what is wrong."""
    try:
        parse_layers(text)
    except UsageError as err:
        return str(err).split(": ", 1)[-1]
    return ""


def blocks_problem(blocks: Sequence[int]) -> str:
    """Option check of a block list such as ``--loc-layers``: at least one index."""
    return "" if blocks else "no block index given; e.g. -1,-2"


def layers_out_of_range(layers: list[int] | str | None, encoders, flag: str = "--layers") -> str:
    """After loading: '' when every ``flag`` index exists in every encoder (a negative index counts from
    the end), else the problem naming the flag and the valid range."""
    if layers is None or layers == "all":
        return ""
    for loaded in encoders:
        try:
            loaded.encoder.resolve_layers(layers)
        except ValueError as err:
            return f"{flag}: {err}"
    return ""


