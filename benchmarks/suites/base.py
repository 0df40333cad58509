"""What a suite gets (RunContext) and gives (result rows)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from benchmarks.features import ExtractionConfig
from benchmarks.results import ResultRow
from encoders import Encoder, EncoderSpec


@dataclass
class LoadedEncoder:
    """An encoder of the run with its lineage metadata."""

    spec: EncoderSpec
    encoder: Encoder

    @property
    def name(self) -> str:
        return self.encoder.name


@dataclass
class RunContext:
    """Everything a suite needs: data spec, where to cache and write, extraction settings, seed, and
    the probe settings (``options``, e.g. linear-probe epochs)."""

    data: str
    run_dir: Path
    cache_dir: Path
    extraction: ExtractionConfig
    seed: int
    config_hash: str
    layers: list[int] | str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def row(self, loaded: LoadedEncoder, **fields: Any) -> ResultRow:
        """A result row with the encoder's identity and the run's provenance filled in."""
        encoder = loaded.encoder
        extra = {"remap": encoder.remap.summary(), **fields.pop("extra", {})}
        return ResultRow(
            encoder=encoder.name,
            role=loaded.spec.role,
            base=loaded.spec.base,
            weights_hash=encoder.weights_hash,
            checkpoint=encoder.checkpoint,
            config_hash=self.config_hash,
            seed=self.seed,
            extra=extra,
            **fields,
        )

    def save_per_item(self, scores: np.ndarray, *parts: str) -> str:
        """Write per-item scores to ``per_item/<parts>.npy``; returns the path relative to the run dir."""
        name = "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", part) for part in parts) + ".npy"
        path = self.run_dir / "per_item" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(scores))
        return str(path.relative_to(self.run_dir))


class Suite(Protocol):
    def __call__(self, context: RunContext, encoders: list[LoadedEncoder]) -> list[ResultRow]: ...
