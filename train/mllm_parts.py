"""The MLLM: vision encoder -> 2-layer MLP projector -> causal LM (LLaVA style, docs/protocol.md).

Visual tokens are the tokens of one encoder block (default the penultimate, ``-2``, as the study) or of
several blocks concatenated along channels, prefix tokens (CLS, registers) removed by count unless kept
(transformers' ``full``). The prompt (:class:`train.prompts.PromptFormat`) holds one image placeholder that
is expanded to as many positions as there are visual tokens and filled with the projector's outputs. For the
project's own MLLMs the placeholder comes before the question (``prompt_layout`` ``image-question``, LLaVA's)
or after it (``question-image``: with causal attention the visual tokens then see the question, which lets a
tiny LM trained from scratch find the object asked about). Labels keep only the answer tokens (and the
closing end-of-turn token), so log-probabilities and losses concern the answer alone. On disk:
:mod:`train.mllm_layouts.project`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import DataError
from encoders import Encoder, PreprocessConfig

from .image_input import ImageInput
from .prompts import IMAGE_TOKEN, PROMPT_LAYOUTS, PromptError, PromptFormat

IGNORE = -100
__all__ = ["IGNORE", "IMAGE_TOKEN", "MLLM", "MLLMBatch", "MLLMError", "PROMPT_LAYOUTS", "Projector", "load_lm", "load_tokenizer", "projector_encoder"]


class MLLMError(DataError):
    """An MLLM directory or input that cannot be used; the message names the file and the fix."""


class Projector(nn.Module):
    """``Linear(D_enc, H) -> act -> Linear(H, D_lm)``: encoder tokens into the LM's embedding space
    (LLaVA's ``mlp2x_gelu``); with ``depth`` 1 a single ``Linear(D_enc, D_lm)`` (LLaVA's ``linear``).

    ``act`` is a transformers activation name (``ACT2FN``: ``gelu`` is the exact GELU); ``bias`` False for
    projectors without biases (transformers' ``multimodal_projector_bias``)."""

    def __init__(self, encoder_dim: int, lm_dim: int, hidden: int | None = None, act: str = "gelu", bias: bool = True, depth: int = 2) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        if act not in ACT2FN:
            raise MLLMError(f"projector activation {act!r} is not one transformers knows (ACT2FN); e.g. gelu, gelu_pytorch_tanh, relu")
        if depth not in (1, 2):
            raise MLLMError(f"projector depth {depth}: 1 (linear) or 2 (mlp2x)")
        self.act_name, self.bias, self.depth = act, bias, depth
        if depth == 1:
            self.fc1 = nn.Linear(encoder_dim, lm_dim, bias=bias)
            return
        hidden = hidden or lm_dim
        self.fc1, self.act, self.fc2 = nn.Linear(encoder_dim, hidden, bias=bias), ACT2FN[act], nn.Linear(hidden, lm_dim, bias=bias)

    @property
    def out_features(self) -> int:
        return (self.fc2 if self.depth == 2 else self.fc1).out_features

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc1(tokens) if self.depth == 1 else self.fc2(self.act(self.fc1(tokens)))

    def describe(self) -> dict[str, Any]:
        """mllm.json's ``projector`` entry: sizes, activation, biases, depth."""
        return {"encoder_dim": self.fc1.in_features, "hidden": self.fc1.out_features, "lm_dim": self.out_features, "act": self.act_name, "bias": self.bias, "depth": self.depth}


@dataclass
class MLLMBatch:
    """Tokenised prompts with the image placeholder already expanded to ``N`` positions.

    ``input_ids`` (B, L) (image positions hold the image token id), ``attention_mask`` (B, L),
    ``labels`` (B, L) with ``-100`` everywhere but answer tokens, ``images`` (B, 3, R, R) normalised.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor

    def to(self, device: torch.device | str) -> "MLLMBatch":
        return MLLMBatch(*(t.to(device, non_blocking=True) for t in (self.input_ids, self.attention_mask, self.labels, self.images)))

    def select(self, index: torch.Tensor | slice) -> "MLLMBatch":
        return MLLMBatch(self.input_ids[index], self.attention_mask[index], self.labels[index], self.images[index])

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def load_tokenizer(lm_dir: str | os.PathLike):
    """The tokenizer of a transformers model directory, as its ``tokenizer_config.json`` declares it.

    A directory that declares the generic fast tokenizer (``TokenizersBackend`` /
    ``PreTrainedTokenizerFast``, e.g. a word-level one built with the ``tokenizers`` library) is read as
    such; ``AutoTokenizer`` alone would substitute the model type's own class (Qwen2's BPE).
    """
    lm_dir = Path(lm_dir)
    config_path = lm_dir / "tokenizer_config.json"
    if not (lm_dir / "tokenizer.json").exists() and not config_path.exists():
        raise MLLMError(f"{lm_dir}: no tokenizer (tokenizer.json / tokenizer_config.json); copy the tokenizer files of the LM into this directory (tokenizer.save_pretrained)")
    declared = json.loads(config_path.read_text()).get("tokenizer_class", "") if config_path.exists() else ""
    if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(lm_dir)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(lm_dir)


def load_lm(lm_dir: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """A causal LM and its tokenizer from a local transformers directory (never the hub)."""
    from transformers import AutoModelForCausalLM

    lm_dir = Path(lm_dir)
    if not (lm_dir / "config.json").exists():
        raise MLLMError(f"{lm_dir}: not a transformers model directory (no config.json); pass the folder that save_pretrained wrote (e.g. a local Qwen2.5 copy)")
    tokenizer = load_tokenizer(lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=dtype, local_files_only=True)
    return lm, tokenizer


class MLLM(nn.Module):
    """Encoder + projector + causal LM (see the module docstring). The calls the suites use:
    :meth:`encoder_tokens`, :meth:`visual_tokens`, :meth:`prepare`, :meth:`answer_logprobs`, :meth:`generate`.

    ``visual_layer``: the encoder block(s) whose tokens the projector reads (an int, or a list whose tokens
    are concatenated along channels, as transformers' ``vision_feature_layer``); ``keep_prefix``: the
    prefix tokens (CLS) come first among the visual tokens (transformers' ``full``; LLaVA's ``cls_patch``).
    ``prompt`` (:class:`train.prompts.PromptFormat`) makes the prompt; ``image_input`` the pixels.
    ``image_token_id``: the placeholder id; None adds ``<image>`` to the tokenizer (resizing the LM's
    embeddings when it has no spare row), as :func:`build_mllm` needs. A negative id never reaches the
    embedding table (LLaVA's ``IMAGE_TOKEN_INDEX``). ``answer_end``: the tokens that close an answer
    (default the tokenizer's EOS). ``source``: where an imported MLLM came from (goes into mllm.json).
    """

    def __init__(self, encoder: Encoder, projector: Projector, lm: nn.Module, tokenizer: Any, visual_layer: int | Sequence[int] = -2, max_length: int = 2048,
                 prompt_layout: str = "image-question", *, prompt: PromptFormat | None = None, keep_prefix: bool = False, image_input: ImageInput | None = None,
                 image_token_id: int | None = None, answer_end: Sequence[str] | None = None, source: dict[str, Any] | None = None) -> None:
        super().__init__()
        try:
            self.prompt = prompt or PromptFormat("chat-template", layout=prompt_layout)
        except PromptError as err:
            raise MLLMError(str(err)) from None
        self.encoder, self.projector, self.lm, self.tokenizer = encoder, projector, lm, tokenizer
        self.visual_layer = list(visual_layer) if isinstance(visual_layer, (list, tuple)) else int(visual_layer)
        self.keep_prefix = bool(keep_prefix)
        self.max_length = max_length
        self.image_input = image_input or ImageInput(encoder.preprocess)
        self.source = dict(source or {})
        self._layer_indices = self._resolve_visual_layers(encoder, self.visual_layer)
        if image_token_id is None:
            image_token_id = self._add_image_token(tokenizer, lm)
        self.image_token_id = int(image_token_id)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.answer_end = list(answer_end) if answer_end else [tokenizer.eos_token]
        self._answer_end_ids = [int(tokenizer.convert_tokens_to_ids(token)) for token in self.answer_end]
        self._grid: tuple[int, int] | None = None

    @staticmethod
    def _resolve_visual_layers(encoder: Encoder, visual_layer: int | list[int]) -> list[int]:
        """Block indices in the order given (their tokens are concatenated in that order)."""
        layers = visual_layer if isinstance(visual_layer, list) else [visual_layer]
        return [encoder.resolve_layers([layer])[0] for layer in layers]

    @staticmethod
    def _add_image_token(tokenizer: Any, lm: nn.Module) -> int:
        """``<image>``'s id, added to the tokenizer when missing (the LM's embeddings grow only if needed)."""
        if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
            lm.resize_token_embeddings(len(tokenizer))
        return int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))

    @property
    def prompt_layout(self) -> str:
        """Where the image goes in a ``chat-template`` prompt (``image-question`` for the other formats)."""
        return self.prompt.layout

    @prompt_layout.setter
    def prompt_layout(self, layout: str) -> None:
        if self.prompt.kind != "chat-template":
            raise MLLMError(f"prompt_layout applies to chat-template prompts; this MLLM's prompt is {self.prompt.kind} (its source's format)")
        try:
            self.prompt = PromptFormat("chat-template", layout=layout)
        except PromptError as err:
            raise MLLMError(str(err)) from None

    # -- vision side ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def image_transform(self):
        """PIL RGB image -> normalised float tensor (3, R, R): the encoder's preprocessing, or the image
        processor an imported MLLM was trained with."""
        return self.image_input.transform()

    @property
    def preprocess(self) -> PreprocessConfig:
        """Where an image's pixels land in the input (size, mean/std, resize rule): for mapping regions."""
        return self.image_input.geometry

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (h, w) of the visual tokens at the input resolution."""
        if self._grid is None:
            size = self.preprocess.resolution
            with torch.no_grad():
                probe = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
                self._grid = self.encoder.features(probe, layers=self._layer_indices[:1]).grid
        return self._grid

    @property
    def visual_prefix(self) -> int:
        """How many visual tokens come before the grid's (CLS kept by ``keep_prefix``)."""
        return self.encoder.num_prefix_tokens if self.keep_prefix else 0

    @property
    def num_visual_tokens(self) -> int:
        h, w = self.grid
        return self.visual_prefix + h * w

    def encoder_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, D_enc) of the visual block(s): patch tokens (prefix tokens first with
        ``keep_prefix``), several blocks concatenated along channels."""
        output = self.encoder.features(images, layers=sorted(set(self._layer_indices)))
        if self._grid is None:
            self._grid = output.grid
        parts = []
        for index in self._layer_indices:
            layer = output.layers[index]
            parts.append(torch.cat([layer.prefix, layer.patches], dim=1) if self.keep_prefix else layer.patches)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def grid_tokens(self, per_token: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) values per visual token -> (B, h, w, ...) over the patch grid (prefix tokens left out)."""
        h, w = self.grid
        return per_token[:, self.visual_prefix:].reshape(per_token.shape[0], h, w, *per_token.shape[2:])

    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Projector outputs (B, N, D_lm): what the LM sees in place of ``<image>``."""
        return self.projector(self.encoder_tokens(images))

    # -- text side -----------------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the chat prompt for ``question`` up to the assistant's turn, ``<image>`` expanded."""
        try:
            ids = self.prompt.ids(self.tokenizer, question, self.image_token_id)
        except PromptError as err:
            raise MLLMError(str(err)) from None
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * self.num_visual_tokens + ids[at + 1:]

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of an answer followed by the end-of-turn token(s) (what the labels score)."""
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + self._answer_end_ids

    def sequence_length(self, question: str, answer: str) -> int:
        """Tokens of prompt (visual tokens included) + answer: compare with ``max_length``."""
        return len(self.prompt_ids(question)) + len(self.answer_ids(answer))

    def prepare(self, images: torch.Tensor, questions: Sequence[str], answers: Sequence[str] | None = None) -> MLLMBatch:
        """Tokenise a batch. With ``answers`` (training / scoring): right padding, labels on the answers.
        Without (generation): left padding, no labels."""
        if len(questions) != images.shape[0] or (answers is not None and len(answers) != len(questions)):
            raise MLLMError(f"prepare: {images.shape[0]} images, {len(questions)} questions, {len(answers or [])} answers; one of each per item")
        pad = self.tokenizer.pad_token_id
        rows, label_rows = [], []
        for i, question in enumerate(questions):
            prompt = self.prompt_ids(question)
            answer = self.answer_ids(answers[i]) if answers is not None else []
            rows.append(prompt + answer)
            label_rows.append([IGNORE] * len(prompt) + answer)
        longest = max(len(row) for row in rows)
        if longest > self.max_length:
            raise MLLMError(f"a sequence of {longest} tokens exceeds max_length {self.max_length}; shorten the question or raise max_length")
        left = answers is None
        ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
        for i, (row, label_row) in enumerate(zip(rows, label_rows)):
            span = slice(longest - len(row), longest) if left else slice(0, len(row))
            ids[i, span], mask[i, span], labels[i, span] = torch.tensor(row), 1, torch.tensor(label_row)
        return MLLMBatch(ids, mask, labels, images).to(self.device)

    def embed(self, batch: MLLMBatch, visual_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings (B, L, D_lm): token embeddings with the image positions replaced, in order,
        by ``visual_tokens`` (computed from ``batch.images`` when not given)."""
        if visual_tokens is None:
            visual_tokens = self.visual_tokens(batch.images)
        is_image = batch.input_ids == self.image_token_id
        embeddings = self.lm.get_input_embeddings()(batch.input_ids.masked_fill(is_image, 0))
        expected = int(is_image.sum())
        if visual_tokens.numel() // visual_tokens.shape[-1] != expected:
            raise MLLMError(f"{visual_tokens.shape[0]}x{visual_tokens.shape[1]} visual tokens for {expected} image positions; the encoder's grid changed since prepare()")
        return embeddings.masked_scatter(is_image.unsqueeze(-1), visual_tokens.to(embeddings.dtype))

    def answer_logits(self, batch: MLLMBatch, visual_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (K, V) of the K positions that predict an answer token, in fp32, with those tokens (K,)
        and the item each belongs to (K,). Only these positions go through the LM head, so memory stays
        small with large vocabularies. ``visual_tokens`` (B, N, D_lm) replaces the images' projector outputs."""
        hidden = self.lm.get_decoder()(inputs_embeds=self.embed(batch, visual_tokens), attention_mask=batch.attention_mask).last_hidden_state
        targets = batch.labels[:, 1:]
        scored = targets != IGNORE
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][scored]).float()
        return logits, targets[scored], scored.nonzero()[:, 0]

    def answer_logprobs(self, batch: MLLMBatch, visual_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability (nats) of each item's answer tokens (B,) and their count (B,)."""
        logits, targets, item = self.answer_logits(batch, visual_tokens)
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        logp = torch.zeros(len(batch), dtype=token_logp.dtype, device=token_logp.device).index_add(0, item, token_logp)
        return logp, (batch.labels[:, 1:] != IGNORE).sum(dim=1)

    def forward(self, batch: MLLMBatch, image_repeats: int = 1, encoded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`answer_logprobs` (the call that DDP / FSDP wrap). With ``image_repeats`` k the batch holds
        k answers per image (rows ``j * B + i`` use image ``i``): each image is encoded once. ``encoded``:
        ``batch.images`` already holds the encoder's tokens (B, N, D_enc) of a frozen encoder."""
        visual = self.projector(batch.images) if encoded else self.visual_tokens(batch.images)
        if image_repeats > 1:
            visual = visual.repeat(image_repeats, 1, 1)
        return self.answer_logprobs(batch, visual)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, questions: Sequence[str], max_new_tokens: int = 16) -> list[str]:
        """Greedy answers to ``questions`` about ``images`` (batched, left padded), special tokens stripped."""
        batch = self.prepare(images, questions)
        positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        output = self.lm.generate(
            inputs_embeds=self.embed(batch), attention_mask=batch.attention_mask, position_ids=positions,
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self._answer_end_ids[0],
        )
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def describe(self) -> dict[str, Any]:
        """Identity: the encoder's description, LM architecture and size, visual layer, token count."""
        return {
            "encoder": self.encoder.describe(), "visual_layer": self.visual_layer, "keep_prefix": self.keep_prefix, "prompt": self.prompt.kind,
            "prompt_layout": self.prompt_layout, "grid": list(self.grid), **({"source": self.source} if self.source else {}),
            "lm": type(self.lm).__name__, "lm_parameters": sum(p.numel() for p in self.lm.parameters()),
            "projector_parameters": sum(p.numel() for p in self.projector.parameters()),
        }


def projector_encoder(mllm: MLLM, name: str = "") -> Encoder:
    """The MLLM's vision side as an :class:`Encoder` whose features are the projector's outputs (the
    study's "encoder + projector" features): patch tokens = projected visual tokens (B, N, D_lm),
    pooled = their mean; one addressable layer. Its hash covers the encoder's and the projector's weights."""
    from encoders import weights_hash

    state = {**{f"encoder.{k}": v for k, v in mllm.encoder.model.state_dict().items()}, **{f"projector.{k}": v for k, v in mllm.projector.state_dict().items()}}

    def adapter(module: nn.Module, images: torch.Tensor, layers: Sequence[int]):
        from encoders import EncoderOutput, LayerTokens

        tokens = mllm.visual_tokens(images)
        prefix, patches = tokens[:, : mllm.visual_prefix], tokens[:, mllm.visual_prefix :]
        return EncoderOutput(patches.mean(dim=1), patches, mllm.grid, prefix, {index: LayerTokens(prefix, patches) for index in layers})

    source = mllm.encoder
    return Encoder(
        nn.ModuleDict({"encoder": source.model, "projector": mllm.projector}), name=name or f"{source.name}+projector", family="mllm-projector",
        arch=f"{source.family}:{source.arch}+projector", preprocess=source.preprocess, adapter=adapter, num_layers=1, num_prefix_tokens=mllm.visual_prefix,
        embed_dim=mllm.projector.out_features, weights_hash=weights_hash(state), checkpoint=source.checkpoint,
        checkpoint_format="mllm", remap=source.remap, options={**source.options, "visual_layer": mllm.visual_layer},
    )
