"""The demo's controls: encoders whose verdict is known before anything is measured.

``controls/lineage.toml`` inside a demo lineage folder holds two lineages:

- **positive control**: ``control-stage1`` (the Stage-1 MLLM's encoder, in that MLLM) and
  ``control-shuffled``, the same encoder with its patch tokens' order shuffled after the position embedding
  (``encoders.controls``), inside a copy of that MLLM. Every token computes what it did before, only its
  place on the grid is wrong, so ``loc``, ``seg`` and ``grad`` must call it significantly worse.
- **null control**: ``control-sft`` and ``control-sft-s1`` (the lineage's ``demo-vit-sft`` and ``demo-vit-sft-s1``),
  the same Stage-2 SFT recipe with another training seed. Nothing about the recipe differs, so no suite should
  call one better than the other.

The names are the controls' own, so that one report can hold the lineage and its controls side by side
(an encoder's name is its identity in a report; ``demo-vit-sft`` is an arm of the lineage there).
"""
from __future__ import annotations

import os
from pathlib import Path

from encoders.controls import shuffle_tokens

from .mllm import load_mllm, save_mllm

CONTROLS_MANIFEST = "controls/lineage.toml"
SHUFFLE_SEED = 0


def make_shuffled_mllm(mllm_dir: str | os.PathLike, out: str | os.PathLike, *, seed: int = SHUFFLE_SEED) -> Path:
    """Write ``out``: the MLLM of ``mllm_dir`` with its encoder replaced by the token_shuffle control of
    itself (projector and LM unchanged); its ``encoder.safetensors`` is the control checkpoint."""
    mllm = load_mllm(mllm_dir)
    shuffle_tokens(mllm.encoder, seed)
    return save_mllm(mllm, out, extra={"control_of": str(Path(mllm_dir).resolve())})


def write_control_lineage(lineage_dir: str | os.PathLike) -> Path:
    """``<lineage_dir>/controls/lineage.toml`` (see the module docstring) for a demo lineage trained with at
    least 2 replicates; the shuffled MLLM is written once and reused. Returns the manifest's path."""
    lineage_dir = Path(lineage_dir)
    if not (lineage_dir / "sft-s1" / "mllm").exists():
        raise FileNotFoundError(f"{lineage_dir / 'sft-s1' / 'mllm'}: the null control needs a second Stage-2 seed; train the lineage with --replicates 2 or more")
    shuffled = lineage_dir / "controls" / "shuffled-mllm"
    if not (shuffled / "mllm.json").exists():
        make_shuffled_mllm(lineage_dir / "pretrain" / "mllm", shuffled)
    manifest = lineage_dir / CONTROLS_MANIFEST
    manifest.write_text(
        "# Controls of the demo lineage (train.controls): a positive control that must be flagged worse on\n"
        "# loc, seg and grad, and a null control (a seed-only retraining) that must not be flagged.\n"
        '[[encoder]]\nname = "control-stage1"\ncheckpoint = "../pretrain/mllm/encoder.safetensors"\nrole = "original"\nmllm = "../pretrain/mllm"\n\n'
        '[[encoder]]\nname = "control-shuffled"\ncheckpoint = "shuffled-mllm/encoder.safetensors"\nrole = "positive-control"\n'
        'base = "control-stage1"\nmllm = "shuffled-mllm"\n\n'
        '[[encoder]]\nname = "control-sft"\ncheckpoint = "../sft/encoder.safetensors"\nrole = "original"\nmllm = "../sft/mllm"\n\n'
        '[[encoder]]\nname = "control-sft-s1"\ncheckpoint = "../sft-s1/encoder.safetensors"\nrole = "null-control"\n'
        'base = "control-sft"\nmllm = "../sft-s1/mllm"\n'
    )
    return manifest
