"""What a suite gets (RunContext) and gives (result rows)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.features import ExtractionConfig
from benchmarks.results import ResultRow, variant_of
from benchmarks.validate import parse_layers
from encoders import Encoder, EncoderSpec
from imagesets import ImageSplit, open_split

LAYERS_SUITE = "cls"  # the suite whose --layers choose the feature store's extra blocks (RunContext.layers)


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
    """Everything one suite gets in a run: its own dataset spec (``data``) and typed ``options`` (an
    instance of its spec's ``options`` class), where to cache and write, the extraction settings, the
    seed, the suite's config hash and row variant fields.

    ``shared``: results that one suite of the run computes and another reuses, keyed by what determines
    them (e.g. the linear head selection ``loc`` shares with ``cls``), so the outcome never depends on
    the suites' order. ``options_of(name)``: another suite's options, for the suites in ``uses`` (the
    spec's declaration). ``opened``: the splits the run opened before loading any model, by (dataset
    spec, split), which ``open_split`` hands out instead of reading the files again.
    """

    data: str
    run_dir: Path
    cache_dir: Path
    extraction: ExtractionConfig
    seed: int
    config_hash: str = ""
    options: Any = None
    log: Callable[[str], None] = print
    suite: str = ""
    variant_fields: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    shared: dict[Any, Any] = field(default_factory=dict)
    options_of: Callable[[str], Any] | None = None
    opened: dict[tuple[str, str], ImageSplit] = field(default_factory=dict)

    @property
    def layers(self) -> list[int] | str | None:
        """The blocks the ``cls`` suite probes besides the output (``--layers``), for ``cls`` and the suites
        that declare they use it (``loc`` fits its head on the same features), so they extract once into
        the same store entry; ``None`` (the output only) for the others."""
        if self.options_of is None or not (self.suite == LAYERS_SUITE or LAYERS_SUITE in self.uses):
            return None
        return parse_layers(self.options_of(LAYERS_SUITE).layers)

    def row(self, loaded: LoadedEncoder, **fields: Any) -> ResultRow:
        """A result row with the encoder's identity, the run's provenance and the row's variant filled in."""
        encoder = loaded.encoder
        extra = {"remap": encoder.remap.summary(), **fields.pop("extra", {})}
        if getattr(loaded.spec, "replicate", None) is not None:  # a training-seed replicate of its arm (role + base)
            extra["replicate"] = loaded.spec.replicate
        return ResultRow(
            encoder=encoder.name,
            role=loaded.spec.role,
            base=loaded.spec.base,
            weights_hash=encoder.weights_hash,
            checkpoint=encoder.checkpoint,
            config_hash=self.config_hash,
            seed=self.seed,
            variant=variant_of(extra, self.variant_fields),
            extra=extra,
            **fields,
        )

    def open_split(self, split: str) -> ImageSplit:
        """Split ``split`` of this suite's dataset (the one the run opened before loading, when it did);
        what opening it skipped (the split's ``notes``: missing images, unusable annotations) goes to the
        run log once per run."""
        opened = self.opened.get((self.data, split))
        if not isinstance(opened, ImageSplit):
            opened = open_split(self.data, split)
        key = ("notes logged", self.data, split)
        if opened.notes and key not in self.shared:
            self.shared[key] = True
            for note in opened.notes:
                self.log(f"{self.data} ({split}): {note}")
        return opened

    def skipped(self, loaded: LoadedEncoder, reason: str, **fields: Any) -> ResultRow:
        """A skipped row of this suite for ``loaded`` (task '-', metric '-' unless given)."""
        fields = {"suite": self.suite, "task": "-", "metric": "-", "dataset": self.data, **fields}
        return self.row(loaded, value=None, status="skipped", reason=reason, **fields)

    def save_per_item(self, scores: np.ndarray, *parts: str) -> str:
        """Write per-item scores to ``per_item/<parts>.npy``; returns the path relative to the run dir."""
        name = "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", part) for part in parts) + ".npy"
        path = self.run_dir / "per_item" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(scores))
        return str(path.relative_to(self.run_dir))
