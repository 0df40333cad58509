"""Typed configuration of a training stage, with the study's defaults (docs/protocol.md "Training").

Every numeric setting declares its valid range next to its field (:class:`Bound`); :func:`check_settings`
is the one check, used by :class:`StageConfig` itself (so ``stage_config``, ``with_overrides`` and a
library caller are refused alike) and by ``python -m train`` before anything loads.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from common.errors import UsageError

STAGES = ("align", "pretrain", "sft", "dpo")
STRATEGIES = ("ddp", "fsdp")
MAX_SEED = 2**32 - 1


class SettingsError(UsageError, ValueError):
    """A stage setting outside its valid range; one line naming the flag, the range and the fix (exit 2)."""


@dataclass(frozen=True)
class Bound:
    """The valid values of one numeric setting: ``low``/``high`` (``None``: unbounded), each included
    unless ``*_open``; ``integer`` for counts; ``optional`` when ``None`` is allowed; ``why`` says what a
    value outside would do to training."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False
    why: str = ""

    def describe(self) -> str:
        """The range in words: ``a finite number in [0, 1)``, ``an integer >= 1``."""
        kind = "an integer" if self.integer else "a finite number"
        low, high = (f"{v:d}" if isinstance(v, int) else f"{v:g}" for v in (self.low or 0, self.high or 0))
        if self.low is not None and self.high is not None:
            text = f"{kind} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {low}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {high}"
        else:
            text = kind
        return text + (" (or unset)" if self.optional else "")

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


def _bounded(default: Any, bound: Bound) -> Any:
    return field(default=default, metadata={"bound": bound})


_POSITIVE_LR = Bound(low=0, low_open=True, why="the learning rate; 0 trains nothing and a negative rate trains backwards")


@dataclass(frozen=True)
class StageConfig:
    """One stage of MLLM training.

    ``lr`` applies to every trainable parameter except the encoder's, which use ``encoder_lr`` (``None``:
    same as ``lr``). ``global_batch`` items per optimiser step, reached by gradient accumulation of
    ``micro_batch`` items per process. Cosine schedule with ``warmup_ratio`` of the steps as linear
    warm-up; AdamW with ``weight_decay``; gradients clipped to ``max_grad_norm`` (L2). DPO: ``beta``,
    ``sft_weight`` (the study's ``dpo_alpha``: weight of an added SFT loss on the chosen answers),
    ``cache_reference`` (reference log-probs computed once before training instead of a frozen copy
    run every step). ``save_every`` optimiser steps between resumable checkpoints (0: only at the end).
    The valid range of each number is the :class:`Bound` declared with its field.
    """

    stage: str
    lr: float = field(metadata={"bound": _POSITIVE_LR})
    encoder_lr: float | None = _bounded(None, Bound(low=0, low_open=True, optional=True, why="the encoder's learning rate; 0 leaves a trainable encoder unchanged (use the align stage or freeze_encoder to freeze it) and a negative rate trains backwards"))
    epochs: float = _bounded(3.0, Bound(low=0, low_open=True, why="the number of passes over the data; 0 or less trains nothing"))
    global_batch: int = _bounded(256, Bound(low=1, integer=True, why="items per optimiser step; fewer than 1 trains nothing"))
    micro_batch: int = _bounded(8, Bound(low=1, integer=True, why="items per forward pass and process; fewer than 1 trains nothing"))
    warmup_ratio: float = _bounded(0.03, Bound(low=0, high=1, high_open=True, why="the share of steps spent warming up; 1 or more skips the cosine schedule"))
    weight_decay: float = _bounded(0.0, Bound(low=0, why="a negative decay grows the weights"))
    max_grad_norm: float = _bounded(1.0, Bound(low=0, low_open=True, why="the L2 norm gradients are clipped to; 0 zeroes every gradient and a negative norm flips it"))
    beta: float = _bounded(0.1, Bound(low=0, low_open=True, why="DPO's inverse temperature; 0 trains nothing and a negative beta prefers the rejected answers"))
    sft_weight: float = _bounded(0.0, Bound(low=0, why="the weight of the SFT loss on the chosen answers; a negative weight trains them away"))
    cache_reference: bool = True
    max_length: int = _bounded(2048, Bound(low=1, integer=True, why="the longest sequence in tokens, visual tokens included; below 1 every item is skipped"))
    max_bad_fraction: float = _bounded(0.05, Bound(low=0, high=1, why="the share of unusable lines a data file may hold; below 0 even a clean file is refused"))
    gradient_checkpointing: bool = False
    save_every: int = _bounded(50, Bound(low=0, integer=True, why="optimiser steps between resumable checkpoints; 0 saves only at the end, a negative count is meaningless"))
    seed: int = _bounded(0, Bound(low=0, high=MAX_SEED, integer=True, why="the seed of initialisation and data order, as torch and numpy take it"))
    strategy: str = "ddp"
    workers: int = _bounded(0, Bound(low=0, integer=True, why="data-loading processes; 0 loads in the training process, a negative count is meaningless"))
    freeze_encoder: bool = False  # PIVOT's evaluation protocol: train projector (+ LM) around a frozen encoder

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise SettingsError(f"unknown stage {self.stage!r}; choose from {', '.join(STAGES)}")
        if self.strategy not in STRATEGIES:
            raise SettingsError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        for name in ("cache_reference", "gradient_checkpointing", "freeze_encoder"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_settings({name: getattr(self, name) for name in BOUNDS})

    @property
    def trains_encoder(self) -> bool:
        """The encoder is trainable in every stage but ``align`` (projector only), unless ``freeze_encoder``."""
        return self.stage != "align" and not self.freeze_encoder

    @property
    def trains_lm(self) -> bool:
        return self.stage != "align"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> "StageConfig":
        """A copy with the given fields replaced; ``None`` values are ignored (unset CLI flags)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise SettingsError(f"unknown stage settings {sorted(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


BOUNDS: dict[str, Bound] = {f.name: f.metadata["bound"] for f in fields(StageConfig) if "bound" in f.metadata}


def flag_of(name: str) -> str:
    """The ``python -m train stage`` flag of a setting: ``max_grad_norm`` -> ``--max-grad-norm``."""
    return "--" + name.replace("_", "-")


def check_settings(values: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> None:
    """Refuse any value of ``values`` (setting name -> value) outside its :data:`BOUNDS`, and a global
    batch that is not a multiple of the micro-batch; raises :class:`SettingsError` naming ``flags[name]``
    (default: the setting and its ``stage`` flag). Names without a bound are ignored."""
    flags = flags or {}

    def given(name: str, value: Any) -> str:
        return f"{flags[name]} {value!r}" if name in flags else f"{name} = {value!r} ({flag_of(name)})"

    for name, value in values.items():
        bound = BOUNDS.get(name)
        if bound is not None and not bound.admits(value):
            raise SettingsError(f"{given(name, value)} is out of range ({bound.why}); pass {bound.describe()}")
    global_batch, micro_batch = values.get("global_batch"), values.get("micro_batch")
    if isinstance(global_batch, int) and isinstance(micro_batch, int) and global_batch % micro_batch:
        raise SettingsError(f"{given('global_batch', global_batch)} is not a multiple of {given('micro_batch', micro_batch)}; choose a global batch that is (e.g. {max(1, global_batch // micro_batch) * micro_batch})")


def check_world(config: StageConfig, world: int) -> None:
    """Refuse a global batch that ``world`` processes of ``config.micro_batch`` items cannot split evenly."""
    per_step = config.micro_batch * world
    if config.global_batch % per_step:
        raise SettingsError(
            f"--global-batch {config.global_batch} is not a multiple of --micro-batch x processes = {config.micro_batch} x {world}; "
            f"choose a global batch that is (e.g. --global-batch {max(1, config.global_batch // per_step) * per_step}) or another --micro-batch or process count"
        )


def check_out_folder(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse an output folder that is, or lies under, an existing file (:class:`SettingsError`, one line)."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            where = "is a file" if candidate == path else f"lies under {candidate}, which is a file"
            raise SettingsError(f"{flag} {path}: {where}; pass a folder path (it is created when missing)")


# The study's settings (docs/protocol.md): Stage 1a/1b, then SFT vs DPO from the same Stage-1 model.
STAGE_DEFAULTS: dict[str, StageConfig] = {
    "align": StageConfig("align", lr=1e-3, epochs=1.0),
    "pretrain": StageConfig("pretrain", lr=1e-5, encoder_lr=2e-6, epochs=1.0),
    "sft": StageConfig("sft", lr=5e-6),
    "dpo": StageConfig("dpo", lr=1e-6, beta=0.1),
}


def stage_config(stage: str, **overrides: Any) -> StageConfig:
    """The study's defaults for ``stage`` with ``overrides`` applied."""
    if stage not in STAGE_DEFAULTS:
        raise SettingsError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    return STAGE_DEFAULTS[stage].with_overrides(**overrides)
