"""A tiny causal LM built offline: a word-level tokenizer over a given corpus and a small Qwen2 model.

The result is an ordinary transformers model directory (``config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json`` with a Qwen-style chat template), so everything that reads
a real Qwen2.5 directory reads it the same way (``AutoModelForCausalLM`` / ``AutoTokenizer``).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IM_START, IM_END, PAD, UNK = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<unk>"
# Qwen2.5's template, without its default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyLMConfig:
    """Size of the tiny Qwen2: hidden width, layers, attention heads (query / key-value), MLP width."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    seed: int = 0


def build_tokenizer(corpus: Iterable[str], extra_special: Iterable[str] = ()):
    """A word-level ``PreTrainedTokenizerFast`` whose vocabulary is every word and punctuation mark of
    ``corpus`` plus the chat roles, with Qwen's special tokens and ``extra_special`` (e.g. ``<image>``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    special = [PAD, UNK, IM_START, IM_END, *extra_special]
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    trainer = trainers.WordLevelTrainer(special_tokens=special, min_frequency=1)
    tokenizer.train_from_iterator(["system user assistant", *corpus], trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=UNK, pad_token=PAD, eos_token=IM_END, bos_token=None,
        additional_special_tokens=[IM_START, *extra_special],
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.padding_side = "right"
    return wrapped


def build_tiny_lm(out: str | os.PathLike, corpus: Iterable[str], config: TinyLMConfig = TinyLMConfig(), extra_special: Iterable[str] = ()) -> Path:
    """Write a randomly initialised tiny ``Qwen2ForCausalLM`` and its tokenizer to ``out``; returns it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tokenizer = build_tokenizer(corpus, extra_special)
    lm_config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(config.seed)
    model = Qwen2ForCausalLM(lm_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
