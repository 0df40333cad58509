"""Tiny, randomly initialised LLaVA-style MLLMs in the layouts users bring, built offline in seconds.

They exist so that every MLLM importer is checked against transformers' own models with no download
(the tests, and ``python -m train tiny-llava`` for trying the commands of the README):

* :func:`build_llava_hf` writes a transformers ``LlavaForConditionalGeneration`` directory (SigLIP or CLIP
  tower, Qwen2 or Llama LM) with its processor (image processor, tokenizer with ``<image>``, chat template),
  as ``save_pretrained`` writes it (transformers 4.x key names), optionally sharded and in bf16/fp16;
* :func:`write_llava_next_layout` rewrites such a model's tensors in the LLaVA-NeXT/OneVision repository's
  layout (``model.vision_tower.vision_tower.vision_model.*``, ``model.mm_projector.{0,2}``, LM at
  ``model.*`` / ``lm_head``, ``config.json`` = the LM's config plus ``mm_*`` keys), by the inverse of
  transformers' own conversion map (``convert_llava_onevision_weights_to_hf.py``);
* :func:`build_llava_onevision_hf` writes a ``LlavaOnevisionForConditionalGeneration`` directory.

The word-level tokenizer is :func:`train.tiny_lm.build_tokenizer`; the LM's embedding table has spare rows
beyond the tokenizer (as Qwen2.5's has), so a layout without an image token can take one without resizing.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_TOKEN = "<image>"
BOS = "<s>"
SPARE_ROWS = 8
# llava-hf's Qwen template (llava-interleave-qwen): images first, then the text of each user turn.
QWEN_PROCESSOR_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# llava-1.5's (Vicuna-style) template, as llava-hf ships it for Llama LMs.
VICUNA_PROCESSOR_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
DEFAULT_CORPUS = (
    "what colour is the circle ? red . what shape is at the top left ? square . is there a triangle ? yes no",
    "blue green yellow purple orange white black circle square triangle star the a of in on",
)


@dataclass(frozen=True)
class TinyLlavaConfig:
    """Sizes and choices of a tiny LLaVA. ``tower`` ``siglip`` or ``clip``; ``lm`` ``qwen2`` or ``llama``;
    ``strategy`` transformers' ``vision_feature_select_strategy``; ``layer`` its ``vision_feature_layer``
    (an int or a list); ``image_size``/``patch_size`` in pixels; ``dtype`` of the saved weights."""

    tower: str = "siglip"
    lm: str = "qwen2"
    strategy: str = "full"
    layer: int | tuple[int, ...] = -1
    image_size: int = 32
    patch_size: int = 8
    tower_layers: int = 2
    width: int = 32
    lm_width: int = 32
    act: str = "gelu"
    dtype: str = "float32"
    max_shard_size: str | None = None
    seed: int = 0
    corpus: tuple[str, ...] = field(default=DEFAULT_CORPUS)


def _tokenizer(config: TinyLlavaConfig, image_token: bool):
    """The word-level tokenizer; ``<image>`` (when asked) is added last, so every other id is the same
    with or without it (the LLaVA-NeXT layout's tokenizer has none)."""
    from .tiny_lm import IM_START, build_tokenizer

    tokenizer = build_tokenizer(config.corpus)
    if config.lm == "llama":  # Llama tokenizers start every text with BOS (the processor adds it)
        from tokenizers import processors

        tokenizer.add_special_tokens({"bos_token": BOS})
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.bos_token_id)])
    if image_token:
        tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IMAGE_TOKEN]})
    tokenizer.chat_template = QWEN_PROCESSOR_TEMPLATE if config.lm == "qwen2" else VICUNA_PROCESSOR_TEMPLATE
    return tokenizer


def _vision_config(config: TinyLlavaConfig):
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    common = dict(hidden_size=config.width, intermediate_size=2 * config.width, num_hidden_layers=config.tower_layers,
                  num_attention_heads=2, image_size=config.image_size, patch_size=config.patch_size)
    if config.tower == "siglip":
        return SiglipVisionConfig(**common, vision_use_head=False)
    if config.tower == "clip":
        return CLIPVisionConfig(**common, projection_dim=config.width)
    raise ValueError(f"tower {config.tower!r}: siglip or clip")


def _text_config(config: TinyLlavaConfig, tokenizer):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=len(tokenizer) + SPARE_ROWS, hidden_size=config.lm_width, intermediate_size=2 * config.lm_width, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=False)
    if config.lm == "qwen2":
        return Qwen2Config(**common)
    if config.lm == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"lm {config.lm!r}: qwen2 or llama")


def _image_processor(config: TinyLlavaConfig):
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    if config.tower == "siglip":
        return SiglipImageProcessor(size={"height": config.image_size, "width": config.image_size})
    return CLIPImageProcessor(size={"shortest_edge": config.image_size}, crop_size={"height": config.image_size, "width": config.image_size})


def _seq_length(config: TinyLlavaConfig) -> int:
    tokens = (config.image_size // config.patch_size) ** 2
    return tokens + (1 if config.tower == "clip" and config.strategy == "full" else 0)


def build_llava_hf(out: str | os.PathLike, config: TinyLlavaConfig = TinyLlavaConfig()) -> Path:
    """Write a tiny random ``LlavaForConditionalGeneration`` with its ``LlavaProcessor`` to ``out``."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    out = Path(out)
    tokenizer = _tokenizer(config, image_token=True)
    llava_config = LlavaConfig(
        vision_config=_vision_config(config), text_config=_text_config(config, tokenizer), image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=list(config.layer) if isinstance(config.layer, tuple) else config.layer, vision_feature_select_strategy=config.strategy,
        image_seq_length=_seq_length(config), projector_hidden_act=config.act,
    )
    torch.manual_seed(config.seed)
    model = LlavaForConditionalGeneration(llava_config)
    _perturb_norms(model)
    model = model.to(getattr(torch, config.dtype))
    model.save_pretrained(out, **({"max_shard_size": config.max_shard_size} if config.max_shard_size else {}))
    processor = LlavaProcessor(image_processor=_image_processor(config), tokenizer=tokenizer, patch_size=config.patch_size,
                               vision_feature_select_strategy=config.strategy, chat_template=tokenizer.chat_template,
                               num_additional_image_tokens=1 if config.tower == "clip" else 0)
    processor.save_pretrained(out)
    return out


def build_llava_onevision_hf(out: str | os.PathLike, config: TinyLlavaConfig = TinyLlavaConfig()) -> Path:
    """Write a tiny random ``LlavaOnevisionForConditionalGeneration`` (SigLIP + Qwen2) with its smallest
    tiling: one grid pinpoint, the tower's own image size."""
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    out = Path(out)
    tokenizer = _tokenizer(config, image_token=True)
    side = config.image_size
    onevision = LlavaOnevisionConfig(
        vision_config=_vision_config(config).to_dict(), text_config=_text_config(config, tokenizer).to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=config.layer, vision_feature_select_strategy="full",
        image_grid_pinpoints=[[side, side]], vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(config.seed)
    LlavaOnevisionForConditionalGeneration(onevision).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _perturb_norms(model) -> None:
    """Random layer-norm weights and biases: at their initial 1 / 0 a wrong norm placement (pre vs post
    layernorm, a skipped final norm) would go unnoticed by an exactness check."""
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))


# LLaVA-NeXT repository layout ---------------------------------------------------------------------------

def next_key(key: str) -> str | None:
    """A transformers Llava key (the in-memory, transformers 5 names) in the LLaVA-NeXT repository's layout:
    the inverse of ``convert_llava_onevision_weights_to_hf.py``'s map."""
    rules = (
        ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
        ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
        ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
        ("model.language_model.", "model."),
        ("lm_head.", "lm_head."),
    )
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old):]
    return None


TOWER_FOLDER = "siglip_tower"


def write_llava_next_layout(llava_dir: str | os.PathLike, out: str | os.PathLike, *, vision_tower: str = TOWER_FOLDER, image_aspect_ratio: str = "pad",
                            patch_merge_type: str = "flat", with_newline: bool = True, extra_config: dict[str, Any] | None = None) -> Path:
    """Rewrite the transformers Llava model in ``llava_dir`` (SigLIP tower, ``vision_feature_layer -1``,
    ``full``) in the LLaVA-NeXT repository's layout; returns ``out``. Its tower is the one the repository
    keeps after its surgery (the last encoder layer deleted, the head replaced by identity), so the full
    tower's config, one layer deeper, is written to ``out/siglip_tower/config.json``: the default
    ``vision_tower`` names that folder (a local tower, found by name); with a hub-like name instead, pass the
    folder as ``--vision-config``.
    ``with_newline`` adds the ``model.image_newline`` vector that OneVision checkpoints carry."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    out = Path(out)
    model = LlavaForConditionalGeneration.from_pretrained(llava_dir, dtype=torch.float32)
    config = model.config
    if config.vision_feature_layer != -1 or config.vision_feature_select_strategy != "full":
        raise ValueError("the LLaVA-NeXT layout's SigLIP tower takes the last kept layer with every token: build the Llava with layer -1 and strategy full")
    state = {next_key(key): value.contiguous() for key, value in model.state_dict().items()}
    if config.text_config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    if with_newline:
        generator = torch.Generator().manual_seed(1)
        state["model.image_newline"] = torch.randn(config.text_config.hidden_size, generator=generator)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    lm = config.text_config.to_dict()
    lm.update({
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava_qwen", "mm_vision_tower": vision_tower, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": image_aspect_ratio,
        "mm_patch_merge_type": patch_merge_type, "mm_hidden_size": config.vision_config.hidden_size, "image_token_index": -200,
        "tokenizer_model_max_length": 256, **(extra_config or {}),
    })
    (out / "config.json").write_text(json.dumps(lm, indent=2))
    tokenizer = AutoTokenizer.from_pretrained(llava_dir)
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != len(tokenizer) - 1:
        raise ValueError(f"{llava_dir}: build it with train.tiny_llava.build_llava_hf (its <image> token is the last id)")
    _without_image_token(llava_dir, out)
    vision = config.vision_config.to_dict()
    vision["num_hidden_layers"] += 1  # the named tower, before the repository deletes its last layer
    vision["vision_use_head"] = True
    tower_dir = out / TOWER_FOLDER
    tower_dir.mkdir(exist_ok=True)
    (tower_dir / "config.json").write_text(json.dumps(vision, indent=2))
    return out


def _without_image_token(llava_dir: Path, out: Path) -> None:
    """Copy the tokenizer files of ``llava_dir`` to ``out`` with the ``<image>`` token taken out."""
    from transformers import AutoTokenizer

    data = json.loads((Path(llava_dir) / "tokenizer.json").read_text())
    data["added_tokens"] = [token for token in data["added_tokens"] if token["content"] != IMAGE_TOKEN]
    data["model"]["vocab"].pop(IMAGE_TOKEN, None)
    config = json.loads((Path(llava_dir) / "tokenizer_config.json").read_text())
    for key in ("added_tokens_decoder",):
        config[key] = {k: v for k, v in config.get(key, {}).items() if v.get("content") != IMAGE_TOKEN}
    for key in ("additional_special_tokens", "extra_special_tokens"):
        if isinstance(config.get(key), list):
            config[key] = [token for token in config[key] if token != IMAGE_TOKEN]
    config.pop("chat_template", None)
    (out / "tokenizer.json").write_text(json.dumps(data))
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    AutoTokenizer.from_pretrained(out)  # must still read


def corpus_of(questions: Iterable[str]) -> tuple[str, ...]:
    """A corpus for the tokenizer that covers ``questions`` and answers (plus the default words)."""
    return (*DEFAULT_CORPUS, *questions)


def write_tiny_llava(out: str | os.PathLike, *, layout: str = "llava-hf", tower: str = "siglip", lm: str = "qwen2", image_size: int = 64,
                     corpus: str | os.PathLike | None = None) -> Path:
    """``python -m train tiny-llava``: a tiny random LLaVA in ``layout`` (``llava-hf``, or ``llava-next``
    with a SigLIP tower: the tower's config is then in ``OUT/siglip_tower``, which ``mm_vision_tower`` names),
    whose tokenizer knows the words of ``corpus`` (a caption / preference JSONL)."""
    words = DEFAULT_CORPUS
    if corpus:
        lines = [json.loads(line) for line in Path(corpus).read_text().splitlines() if line.strip()]
        words = corpus_of(" ".join(str(value) for value in record.values() if isinstance(value, str)) for record in lines)
    config = TinyLlavaConfig(tower=tower, lm=lm, image_size=image_size, patch_size=16, corpus=tuple(words))
    out = Path(out)
    if layout == "llava-hf":
        return build_llava_hf(out, config)
    if tower != "siglip":
        raise ValueError("--layout llava-next: the tiny LLaVA-NeXT checkpoint has a SigLIP tower (--tower siglip)")
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        return write_llava_next_layout(build_llava_hf(Path(scratch) / "llava", config), out)
