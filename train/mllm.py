"""The MLLM: vision encoder -> 2-layer GELU MLP projector -> causal LM (LLaVA style, docs/protocol.md).

This is the one module of ``train/`` that the suites import. Visual tokens are the patch tokens of one
encoder block (default the penultimate, ``-2``, as the study), prefix tokens (CLS, registers) removed by
count; the chat prompt holds one ``<image>`` placeholder that is expanded to as many positions as there
are visual tokens and filled with the projector's outputs. The placeholder comes before the question
(``prompt_layout`` ``image-question``, LLaVA's) or after it (``question-image``: with causal attention the
visual tokens then see the question, which lets a tiny LM trained from scratch find the object asked about). Labels keep only the answer tokens (and the
closing end-of-turn token), so log-probabilities and losses concern the answer alone.

An MLLM directory::

    mllm.json               {"format": "vision-encoder-eval-mllm", "version": 1, "visual_layer": -2, "prompt_layout": ..., ...}
    encoder.safetensors     the vision tower (a project encoder checkpoint: loads with no --arch)
    projector.safetensors   fc1.weight, fc1.bias, fc2.weight, fc2.bias
    lm/                     a transformers model directory with its tokenizer and chat template
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
from encoders import CheckpointError, Encoder, load_encoder, save_encoder_checkpoint

IMAGE_TOKEN = "<image>"
MLLM_FORMAT = "vision-encoder-eval-mllm"
MLLM_VERSION = 1
IGNORE = -100
PROMPT_LAYOUTS = ("image-question", "question-image")


class MLLMError(DataError):
    """An MLLM directory or input that cannot be used; the message names the file and the fix."""


class Projector(nn.Module):
    """``Linear(D_enc, H) -> GELU -> Linear(H, D_lm)``: encoder tokens into the LM's embedding space."""

    def __init__(self, encoder_dim: int, lm_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or lm_dim
        self.fc1, self.act, self.fc2 = nn.Linear(encoder_dim, hidden), nn.GELU(), nn.Linear(hidden, lm_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(tokens)))


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
    :meth:`encoder_tokens`, :meth:`visual_tokens`, :meth:`prepare`, :meth:`answer_logprobs`, :meth:`generate`."""

    def __init__(self, encoder: Encoder, projector: Projector, lm: nn.Module, tokenizer: Any, visual_layer: int = -2, max_length: int = 2048,
                 prompt_layout: str = "image-question") -> None:
        super().__init__()
        if prompt_layout not in PROMPT_LAYOUTS:
            raise MLLMError(f"prompt_layout {prompt_layout!r}: choose {' or '.join(PROMPT_LAYOUTS)}")
        self.prompt_layout = prompt_layout
        self.encoder, self.projector, self.lm, self.tokenizer = encoder, projector, lm, tokenizer
        self.visual_layer = visual_layer
        self.max_length = max_length
        self._layer_index = encoder.resolve_layers([visual_layer])[0]
        if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
            lm.resize_token_embeddings(len(tokenizer))
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._grid: tuple[int, int] | None = None

    # -- vision side ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    def image_transform(self):
        """PIL RGB image -> normalised float tensor (3, R, R), the encoder's own preprocessing."""
        return self.encoder.preprocess.transform()

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (h, w) of the visual tokens at the encoder's resolution."""
        if self._grid is None:
            size = self.encoder.preprocess.resolution
            with torch.no_grad():
                probe = torch.zeros(1, 3, size, size, device=self.device)
                self._grid = self.encoder.features(probe, layers=[self._layer_index]).grid
        return self._grid

    @property
    def num_visual_tokens(self) -> int:
        h, w = self.grid
        return h * w

    def encoder_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, D_enc) of block ``visual_layer``, prefix tokens removed by count."""
        output = self.encoder.features(images, layers=[self._layer_index])
        if self._grid is None:
            self._grid = output.grid
        return output.layers[self._layer_index].patches

    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Projector outputs (B, N, D_lm): what the LM sees in place of ``<image>``."""
        return self.projector(self.encoder_tokens(images))

    # -- text side -----------------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the chat prompt for ``question`` up to the assistant's turn, ``<image>`` expanded."""
        content = f"{IMAGE_TOKEN}\n{question}" if self.prompt_layout == "image-question" else f"{question}\n{IMAGE_TOKEN}"
        messages = [{"role": "user", "content": content}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids.count(self.image_token_id) != 1:
            raise MLLMError(f"the chat template of this LM does not keep exactly one {IMAGE_TOKEN} in the prompt ({ids.count(self.image_token_id)} found); check tokenizer_config.json's chat_template")
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * self.num_visual_tokens + ids[at + 1:]

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of an answer followed by the end-of-turn token (what the labels score)."""
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

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

    def answer_logprobs(self, batch: MLLMBatch, visual_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability (nats) of each item's answer tokens (B,) and their count (B,).

        Only the positions that predict an answer token go through the LM head, so memory stays small
        with large vocabularies. ``visual_tokens`` (B, N, D_lm) replaces the images' projector outputs.
        """
        hidden = self.lm.get_decoder()(inputs_embeds=self.embed(batch, visual_tokens), attention_mask=batch.attention_mask).last_hidden_state
        targets = batch.labels[:, 1:]
        scored = targets != IGNORE
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][scored]).float()
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[scored].unsqueeze(-1)).squeeze(-1)
        item = scored.nonzero()[:, 0]
        logp = torch.zeros(len(batch), dtype=token_logp.dtype, device=token_logp.device).index_add(0, item, token_logp)
        return logp, scored.sum(dim=1)

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
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def describe(self) -> dict[str, Any]:
        """Identity: the encoder's description, LM architecture and size, visual layer, token count."""
        return {
            "encoder": self.encoder.describe(), "visual_layer": self.visual_layer, "prompt_layout": self.prompt_layout, "grid": list(self.grid),
            "lm": type(self.lm).__name__, "lm_parameters": sum(p.numel() for p in self.lm.parameters()),
            "projector_parameters": sum(p.numel() for p in self.projector.parameters()),
        }


def build_mllm(encoder: Encoder | str | os.PathLike, lm_dir: str | os.PathLike, *, visual_layer: int = -2, projector_hidden: int | None = None, max_length: int = 2048, seed: int = 0,
               prompt_layout: str = "image-question") -> MLLM:
    """A new MLLM: an encoder (or its checkpoint), a freshly initialised projector, and the LM of ``lm_dir``;
    ``prompt_layout`` places the image before (LLaVA) or after the question (see the module docstring)."""
    if not isinstance(encoder, Encoder):
        encoder = load_encoder(encoder)
    try:
        encoder.resolve_layers([visual_layer])  # before the LM loads
    except ValueError as err:
        raise MLLMError(f"--visual-layer {visual_layer}: {err}") from None
    lm, tokenizer = load_lm(lm_dir)
    torch.manual_seed(seed)
    projector = Projector(encoder.embed_dim, lm.get_input_embeddings().embedding_dim, projector_hidden)
    return MLLM(encoder, projector, lm, tokenizer, visual_layer=visual_layer, max_length=max_length, prompt_layout=prompt_layout)


def save_mllm(mllm: MLLM, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``mllm`` as an MLLM directory (see the module docstring); returns the path.

    Files are written into a temporary sibling folder that replaces ``path`` at the end, so a reader
    never sees a half-written MLLM.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    encoder = mllm.encoder
    save_encoder_checkpoint(encoder.model.state_dict(), {"family": encoder.family, "arch": encoder.arch, "options": encoder.options}, tmp / "encoder.safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in mllm.projector.state_dict().items()}, str(tmp / "projector.safetensors"))
    mllm.lm.save_pretrained(tmp / "lm")
    mllm.tokenizer.save_pretrained(tmp / "lm")
    projector = mllm.projector
    meta = {
        "format": MLLM_FORMAT, "version": MLLM_VERSION, "visual_layer": mllm.visual_layer, "max_length": mllm.max_length, "prompt_layout": mllm.prompt_layout,
        "projector": {"encoder_dim": projector.fc1.in_features, "hidden": projector.fc1.out_features, "lm_dim": projector.fc2.out_features},
        "encoder_weights_hash": encoder.weights_hash, **(extra or {}),
    }
    (tmp / "mllm.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if path.exists():
        import shutil

        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)
    return path


def load_mllm(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> MLLM:
    """Read an MLLM directory written by :func:`save_mllm`; MLLMError names the file and the fix.
    ``dtype`` (e.g. ``torch.bfloat16``) casts the tower, the projector and the LM; None keeps fp32."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path / "mllm.json"
    if not meta_path.exists():
        raise MLLMError(f"{path}: not an MLLM directory (no mllm.json); pass a folder written by `python -m train` or train.mllm.save_mllm")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != MLLM_FORMAT:
        raise MLLMError(f"{meta_path}: format {meta.get('format')!r}, expected {MLLM_FORMAT!r}")
    for name in ("encoder.safetensors", "projector.safetensors", "lm"):
        if not (path / name).exists():
            raise MLLMError(f"{path / name}: missing from the MLLM directory; re-export the MLLM (python -m train ... writes all three parts)")
    try:
        encoder = load_encoder(path / "encoder.safetensors", name=path.name)
    except CheckpointError as err:
        raise MLLMError(f"{path / 'encoder.safetensors'}: {err}") from None
    lm, tokenizer = load_lm(path / "lm")
    dims = meta["projector"]
    projector = Projector(dims["encoder_dim"], dims["lm_dim"], dims["hidden"])
    state = load_file(str(path / "projector.safetensors"))
    try:
        projector.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise MLLMError(f"{path / 'projector.safetensors'}: does not match mllm.json's projector sizes ({err})") from None
    if encoder.embed_dim != dims["encoder_dim"]:
        raise MLLMError(f"{path}: the encoder's width {encoder.embed_dim} differs from the projector's input {dims['encoder_dim']}")
    layout = meta.get("prompt_layout", "image-question")  # directories written before the field existed: LLaVA's layout
    if layout not in PROMPT_LAYOUTS:
        raise MLLMError(f"{meta_path}: prompt_layout {layout!r} is not one of {', '.join(PROMPT_LAYOUTS)}; fix mllm.json")
    mllm = MLLM(encoder, projector, lm, tokenizer, visual_layer=int(meta["visual_layer"]), max_length=int(meta.get("max_length", 2048)), prompt_layout=layout)
    return mllm.to(device=device, dtype=dtype).eval() if dtype is not None else mllm.to(device).eval()


def projector_encoder(mllm: MLLM, name: str = "") -> Encoder:
    """The MLLM's vision side as an :class:`Encoder` whose features are the projector's outputs (the
    study's "encoder + projector" features): patch tokens = projected visual tokens (B, N, D_lm),
    pooled = their mean; one addressable layer. Its hash covers the encoder's and the projector's weights."""
    from encoders import weights_hash

    state = {**{f"encoder.{k}": v for k, v in mllm.encoder.model.state_dict().items()}, **{f"projector.{k}": v for k, v in mllm.projector.state_dict().items()}}

    def adapter(module: nn.Module, images: torch.Tensor, layers: Sequence[int]):
        from encoders import EncoderOutput, LayerTokens

        tokens = mllm.visual_tokens(images)
        prefix = tokens.new_zeros(tokens.shape[0], 0, tokens.shape[-1])
        return EncoderOutput(tokens.mean(dim=1), tokens, mllm.grid, prefix, {index: LayerTokens(prefix, tokens) for index in layers})

    source = mllm.encoder
    return Encoder(
        nn.ModuleDict({"encoder": source.model, "projector": mllm.projector}), name=name or f"{source.name}+projector", family="mllm-projector",
        arch=f"{source.family}:{source.arch}+projector", preprocess=source.preprocess, adapter=adapter, num_layers=1, num_prefix_tokens=0,
        embed_dim=mllm.projector.fc2.out_features, weights_hash=weights_hash(state), checkpoint=source.checkpoint,
        checkpoint_format="mllm", remap=source.remap, options={**source.options, "visual_layer": mllm.visual_layer},
    )
