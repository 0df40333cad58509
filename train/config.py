"""Typed configuration of a training stage, with the study's defaults (docs/protocol.md "Training").

Every setting is one :func:`common.options.option` field of :class:`StageConfig`: its help, its valid
range and what a value outside it would do (``why``), and so its ``python -m train stage`` flag (the
field's name with dashes: ``max_grad_norm`` -> ``--max-grad-norm``). The same declaration refuses a bad
value from the command line (``train.commands``) and from a library caller (``StageConfig.__post_init__``,
so ``stage_config``, ``with_overrides`` and ``StageConfig(...)`` are refused alike).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from common.errors import UsageError
from common.options import field_problem, format_value, option, options_of

STAGES = ("align", "pretrain", "sft", "dpo")
STRATEGIES = ("ddp", "fsdp")
MAX_SEED = 2**32 - 1


class SettingsError(UsageError, ValueError):
    """A stage setting outside its valid range; one line naming the flag, the range and the fix (exit 2)."""


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
    Each field declares its valid range; ``stage`` and ``lr`` have no default (:data:`STAGE_DEFAULTS`
    holds the study's per stage).
    """

    stage: str = option(help="the stage to train: align (projector only), pretrain (all parameters), sft (chosen answers) or dpo (chosen vs rejected)",
                        choices=STAGES)
    lr: float = option(help="learning rate of every trainable parameter but the encoder's", above=0,
                       why="0 trains nothing and a negative rate trains backwards")
    encoder_lr: float | None = option(None, "the encoder's learning rate (unset: --lr)", above=0,
                                      why="0 leaves a trainable encoder unchanged (use the align stage or freeze_encoder to freeze it) and a negative rate trains backwards")
    epochs: float = option(3.0, "passes over the data", above=0, why="0 or less trains nothing")
    global_batch: int = option(256, "items per optimiser step (reached by gradient accumulation)", minimum=1, why="fewer than 1 trains nothing")
    micro_batch: int = option(8, "items per forward pass and process", minimum=1, why="fewer than 1 trains nothing")
    warmup_ratio: float = option(0.03, "the share of steps spent warming up before the cosine decay", minimum=0, below=1,
                                 why="1 or more skips the cosine schedule")
    weight_decay: float = option(0.0, "AdamW's weight decay", minimum=0, why="a negative decay grows the weights")
    max_grad_norm: float = option(1.0, "the L2 norm gradients are clipped to", above=0, why="0 zeroes every gradient and a negative norm flips it")
    beta: float = option(0.1, "DPO's inverse temperature", above=0, why="0 trains nothing and a negative beta prefers the rejected answers")
    sft_weight: float = option(0.0, "DPO: the weight of an added SFT loss on the chosen answers (the study's dpo_alpha)", minimum=0,
                               why="a negative weight trains them away")
    cache_reference: bool = option(True, "DPO: compute the frozen reference's log-probs once before training (--no-reference-cache: run a frozen copy every step)",
                                   flag="--reference-cache")
    max_length: int = option(2048, "the longest sequence in tokens, visual tokens included", minimum=1, why="below 1 every item is skipped")
    max_bad_fraction: float = option(0.05, "the share of unusable lines a data file may hold", minimum=0, maximum=1,
                                     why="below 0 even a clean file is refused")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory, more time)")
    save_every: int = option(50, "optimiser steps between resumable checkpoints (0: only at the end)", minimum=0,
                             why="a negative count is meaningless")
    seed: int = option(0, "the seed of initialisation and data order", minimum=0, maximum=MAX_SEED, why="torch and numpy take seeds in this range")
    strategy: str = option("ddp", "how torchrun's processes share the model: ddp (a copy each) or fsdp (torch fully_shard)", choices=STRATEGIES)
    workers: int = option(0, "data-loading processes (0: load in the training process)", minimum=0, why="a negative count is meaningless")
    freeze_encoder: bool = option(False, "keep the encoder frozen in every stage (PIVOT's evaluation protocol: train projector and LM around it)")

    def __post_init__(self) -> None:
        found = field_problem(self)
        if found:
            opt, trouble = found
            raise SettingsError(f"{opt.name} = {getattr(self, opt.name)!r} ({opt.flag}): {trouble}")
        trouble = batch_problem(self.global_batch, self.micro_batch)
        if trouble:
            raise SettingsError(trouble)

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


def batch_problem(global_batch: int, micro_batch: int) -> str:
    """'' when ``global_batch`` items split into micro-batches of ``micro_batch``; else the refusal."""
    if global_batch % micro_batch == 0:
        return ""
    return (f"global_batch = {global_batch} (--global-batch) is not a multiple of micro_batch = {micro_batch} (--micro-batch); "
            f"choose a global batch that is (e.g. {max(1, global_batch // micro_batch) * micro_batch})")


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


def shown_defaults(defaults: dict[str, StageConfig]) -> dict[str, str]:
    """Field -> its default as ``--help`` shows it, for the fields whose default differs between the
    configs of ``defaults`` (name -> config): ``align 0.001, pretrain 1e-05, ...``."""
    shown = {}
    for opt in options_of(StageConfig):
        if opt.name == "stage":
            continue
        values = {name: getattr(config, opt.name) for name, config in defaults.items()}
        if len(set(values.values())) > 1:
            shown[opt.name] = ", ".join(f"{name} {'unset' if value is None else format_value(value)}" for name, value in values.items())
    return shown
