"""A tiny causal LM directory and a tiny lineage (original + one trained copy) for the attribution suites."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.benchmarks.conftest import write_tiny_checkpoint

DATA = "shapes:n=60:n_val=24:seed=0:size=32"


def write_tiny_lm(folder: Path, corpus: list[str]) -> Path:
    """train.tiny_lm's randomly initialised Qwen2 with a word-level tokenizer over ``corpus``, at its smallest."""
    from train.tiny_lm import TinyLMConfig, build_tiny_lm

    return build_tiny_lm(folder, corpus, TinyLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64))


def write_lineage(folder: Path, *, mllm: bool = False) -> Path:
    """orig + its trained copy ``tuned`` (a different seed) as a manifest; with ``mllm`` both point to
    an MLLM directory holding only ``lm/`` (all the align suite reads from it)."""
    from benchmarks.datasets import open_split

    write_tiny_checkpoint(folder / "orig.safetensors", seed=0)
    write_tiny_checkpoint(folder / "tuned.safetensors", seed=1)
    link = ""
    if mllm:
        split = open_split(DATA, "val")
        write_tiny_lm(folder / "mllm" / "lm", [split.caption(i) for i in range(len(split))])
        link = 'mllm = "mllm"\n'
    manifest = folder / "lineage.toml"
    manifest.write_text(
        f'[[encoder]]\nname = "orig"\ncheckpoint = "orig.safetensors"\nrole = "original"\n{link}\n'
        f'[[encoder]]\nname = "tuned"\ncheckpoint = "tuned.safetensors"\nrole = "pivot"\nbase = "orig"\n{link}'
    )
    return manifest
