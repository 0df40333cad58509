"""Typed configuration of a training stage, with the study's defaults (docs/protocol.md "Training")."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

STAGES = ("align", "pretrain", "sft", "dpo")
STRATEGIES = ("ddp", "fsdp")


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
    """

    stage: str
    lr: float
    encoder_lr: float | None = None
    epochs: float = 3.0
    global_batch: int = 256
    micro_batch: int = 8
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.1
    sft_weight: float = 0.0
    cache_reference: bool = True
    max_length: int = 2048
    max_bad_fraction: float = 0.05
    gradient_checkpointing: bool = False
    save_every: int = 50
    seed: int = 0
    strategy: str = "ddp"
    workers: int = 0
    freeze_encoder: bool = False  # PIVOT's evaluation protocol: train projector (+ LM) around a frozen encoder

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose from {', '.join(STAGES)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        for name in ("lr", "epochs", "global_batch", "micro_batch"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

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
            raise ValueError(f"unknown stage settings {sorted(unknown)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


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
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    return STAGE_DEFAULTS[stage].with_overrides(**overrides)
