"""A tiny causal LM directory and a tiny lineage (original + one trained copy) for the attribution suites."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.conftest import write_tiny_checkpoint

DATA = "shapes:n=60:n_val=24:seed=0:size=32"


def write_tiny_lm(folder: Path, corpus: list[str]) -> Path:
    """train.tiny_lm's randomly initialised Qwen2 with a word-level tokenizer over ``corpus``, at its smallest."""
    from train.mllm import IMAGE_TOKEN
    from train.tiny_lm import TinyLMConfig, build_tiny_lm

    config = TinyLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)
    return build_tiny_lm(folder, corpus, config, extra_special=[IMAGE_TOKEN])


def write_lineage(folder: Path, *, mllm: bool = False) -> Path:
    """orig + its trained copy ``tuned`` (a different seed) as a manifest; with ``mllm`` each gets an MLLM
    directory (train.mllm: its encoder, a projector, a tiny LM over the shapes world's words)."""
    from imagesets import open_split

    write_tiny_checkpoint(folder / "orig.safetensors", seed=0)
    write_tiny_checkpoint(folder / "tuned.safetensors", seed=1)
    links = {"orig": "", "tuned": ""}
    if mllm:
        from encoders import load_encoder
        from train.mllm import build_mllm, save_mllm

        split = open_split(DATA, "val")
        corpus = [split.caption(i) for i in range(len(split))]
        corpus += [f"{item.question} {item.chosen} {item.rejected}" for i in range(len(split)) for item in split.vqa_items(i)]
        lm = write_tiny_lm(folder / "lm", corpus)
        for seed, name in enumerate(links):
            save_mllm(build_mllm(load_encoder(folder / f"{name}.safetensors"), lm, seed=seed), folder / f"mllm_{name}")
            links[name] = f'mllm = "mllm_{name}"\n'
    manifest = folder / "lineage.toml"
    manifest.write_text(
        f'[[encoder]]\nname = "orig"\ncheckpoint = "orig.safetensors"\nrole = "original"\n{links["orig"]}\n'
        f'[[encoder]]\nname = "tuned"\ncheckpoint = "tuned.safetensors"\nrole = "pivot"\nbase = "orig"\n{links["tuned"]}'
    )
    return manifest


@pytest.fixture(scope="session")
def plain_lineage(tmp_path_factory) -> Path:
    """A lineage without MLLMs, written once per test session (runs write elsewhere)."""
    return write_lineage(tmp_path_factory.mktemp("lineage"))


@pytest.fixture(scope="session")
def mllm_lineage(tmp_path_factory) -> Path:
    """A lineage whose encoders have MLLM directories, written once per test session."""
    return write_lineage(tmp_path_factory.mktemp("mllm_lineage"), mllm=True)
