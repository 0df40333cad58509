"""A tiny causal LM directory and a tiny lineage (original + one trained copy) for the attribution suites."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.benchmarks.conftest import write_tiny_checkpoint

DATA = "shapes:n=60:n_val=24:seed=0:size=32"


def write_tiny_lm(folder: Path, corpus: list[str]) -> Path:
    """A randomly initialised 1-layer Qwen2 with a word-level tokenizer over ``corpus``, saved as a
    transformers model directory (what a real Qwen2.5 directory looks like, at toy size)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(corpus, trainer=trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<eos>"]))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(wrapped), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=64, pad_token_id=wrapped.pad_token_id, eos_token_id=wrapped.eos_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    wrapped.save_pretrained(folder)
    return folder


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
