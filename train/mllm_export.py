"""Project MLLMs as transformers ``LlavaForConditionalGeneration`` directories (``python -m train export-mllm``).

:func:`as_transformers_llava` assembles the Llava model around the MLLM's own modules (the tower, the
projector's two linears, the LM's decoder and head are reassigned, never copied), so its forward is
transformers' code over the same tensors. :func:`export_llava_hf` writes it with ``save_pretrained``,
together with a ``LlavaProcessor`` (the MLLM's image processor, its tokenizer with ``<image>``, a chat
template that renders the MLLM's own prompt), reloads the result with transformers and checks that the
answer log-probabilities and the prompt's token ids equal the MLLM's: a failed check writes nothing.

What transformers' Llava cannot hold is refused with the reason: towers other than a transformers
``SiglipVisionModel`` / ``CLIPVisionModel``, a one-layer (``linear``) projector, pixels made by the project's
own transform (no transformers image processor reproduces it exactly), an LM with no embedding row for
``<image>``.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .image_input import processor_backend
from .mllm import MLLM, MLLMError, replace_folder
from .prompts import IMAGE_TOKEN

FORMATS = ("llava-hf",)
TOWERS = ("SiglipVisionModel", "CLIPVisionModel")
EXPORT_RECORD = "export.json"


@dataclass
class ProbeResult:
    """One probe image and prompt through two models: the largest absolute logit difference over the answer
    positions, whether the prompt's token ids and pixels are the same, and the tolerance it is held to."""

    max_logit_difference: float
    prompt_ids_equal: bool
    pixel_difference: float
    tolerance: float
    reference: str

    @property
    def passed(self) -> bool:
        return self.prompt_ids_equal and self.pixel_difference <= self.tolerance and self.max_logit_difference <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"max_logit_difference": self.max_logit_difference, "prompt_ids_equal": self.prompt_ids_equal, "pixel_difference": self.pixel_difference,
                "tolerance": self.tolerance, "reference": self.reference, "passed": self.passed}


def exportable_problem(mllm: MLLM) -> str:
    """Why ``mllm`` cannot become a transformers Llava ('' when it can)."""
    encoder = mllm.encoder
    if encoder.family != "hf" or encoder.arch not in TOWERS:
        return (f"its vision tower is {encoder.family}:{encoder.arch}; LlavaForConditionalGeneration holds transformers {' or '.join(TOWERS)} towers "
                "(MLLMs imported from transformers or LLaVA-NeXT checkpoints have one)")
    if mllm.projector.depth != 2:
        return "its projector is one linear layer; transformers' LlavaMultiModalProjector has two (linear_1, act, linear_2)"
    if mllm.image_input.processor is None:
        return "its pixels come from the project's own transform, which no transformers image processor reproduces exactly"
    return ""


def _layers(mllm: MLLM) -> list[int]:
    """transformers' ``vision_feature_layer`` entries (negative hidden_states indices) of the MLLM's blocks."""
    layers = mllm.visual_layer if isinstance(mllm.visual_layer, list) else [mllm.visual_layer]
    depth = mllm.encoder.num_layers
    return [mllm.encoder.resolve_layers([layer])[0] - depth for layer in layers]  # block i is hidden_states[i + 1]


def image_token_id(mllm: MLLM) -> int:
    """The in-vocabulary id of ``<image>`` for the exported model: the MLLM's own, or a spare embedding row
    (Qwen's table has some) given to a new ``<image>`` token; MLLMError when there is none."""
    if mllm.image_token_id >= 0:
        return mllm.image_token_id
    tokenizer, rows = mllm.tokenizer, mllm.lm.get_input_embeddings().num_embeddings
    found = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if found not in (None, tokenizer.unk_token_id):
        return int(found)
    if len(tokenizer) >= rows:
        raise MLLMError(f"the LM's embedding table has no spare row for {IMAGE_TOKEN} ({rows} rows, {len(tokenizer)} tokens): growing it would change every answer's "
                        "probabilities, so the export would not be this model")
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))


def as_transformers_llava(mllm: MLLM, image_token: int):
    """A ``LlavaForConditionalGeneration`` whose modules are the MLLM's own (no tensor copied)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    problem = exportable_problem(mllm)
    if problem:
        raise MLLMError(f"cannot be a transformers Llava: {problem}")
    layers = _layers(mllm)
    strategy = "full" if mllm.keep_prefix or not mllm.encoder.num_prefix_tokens else "default"
    config = LlavaConfig(
        vision_config=mllm.encoder.model.config.to_dict(), text_config=mllm.lm.config.to_dict(), image_token_id=image_token,
        vision_feature_layer=layers if len(layers) > 1 else layers[0], vision_feature_select_strategy=strategy, image_seq_length=mllm.num_visual_tokens,
        projector_hidden_act=mllm.projector.act_name, multimodal_projector_bias=mllm.projector.bias,
        tie_word_embeddings=bool(getattr(mllm.lm.config, "tie_word_embeddings", False)),
    )
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    llava.model.vision_tower = mllm.encoder.model
    llava.model.multi_modal_projector.linear_1 = mllm.projector.fc1
    llava.model.multi_modal_projector.linear_2 = mllm.projector.fc2
    llava.model.language_model = mllm.lm.get_decoder()
    llava.lm_head = mllm.lm.get_output_embeddings()
    llava.config.dtype = mllm.dtype
    llava.generation_config = mllm.lm.generation_config
    return llava.eval()


def processor_chat_template(mllm: MLLM) -> str:
    """A chat template over structured content (``[{"type": "image"}, {"type": "text", ...}]``) that renders
    exactly the MLLM's own prompt text, for the processor."""
    prompt = mllm.prompt
    if prompt.kind == "processor-chat":
        return prompt.template
    if prompt.kind == "conversation":
        from .prompts import CONVERSATIONS

        conversation = CONVERSATIONS[prompt.conversation]
        return ("{{ '" + _escape(f"{conversation.system}{conversation.separator}\n") + "' }}{% for message in messages %}"
                "{{ '" + _escape(conversation.user) + "\\n' if message['role'] == 'user' else '" + _escape(conversation.assistant) + "\\n' }}"
                + _FLAT_CONTENT + "{{ content + '" + _escape(f"{conversation.separator}\n") + "' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '" + _escape(conversation.assistant) + "\\n' }}{% endif %}")
    # The project's own prompts: the tokenizer's template over string content ``<image>\n{question}``.
    template = mllm.tokenizer.chat_template or ""
    order = "content_images + content_text" if prompt.layout == "image-question" else "content_text + '\\n' + content_images.rstrip('\\n')"
    flat = _FLAT_CONTENT.replace("{% set content = content_images + content_text %}", "{% set content = " + order + " %}")
    return template.replace("{% for message in messages %}", "{% for message in messages %}" + flat, 1).replace("message['content']", "content")


_FLAT_CONTENT = (
    "{% if message['content'] is string %}{% set content = message['content'] %}{% else %}"
    "{% set content_images = message['content'] | selectattr('type', 'equalto', 'image') | map(attribute='type') | map('replace', 'image', '<image>\\n') | join('') %}"
    "{% set content_text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% set content = content_images + content_text %}{% endif %}"
)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def export_llava_hf(mllm: MLLM, out: str | os.PathLike, *, tolerance: float = 1e-4, probe=None) -> Path:
    """Write ``mllm`` to ``out`` as a transformers Llava directory (module docstring); returns ``out``.
    The reloaded model must reproduce the MLLM on ``probe`` (``train.mllm_import.ProbeItem``) within
    ``tolerance`` (logits, fp32); otherwise MLLMError and nothing is written."""
    from transformers import LlavaProcessor

    from .mllm_import import default_probe, our_side, probe_models

    out = Path(out)
    probe = probe or default_probe()
    ours = our_side(mllm, probe)
    image_token = image_token_id(mllm)
    llava = as_transformers_llava(mllm, image_token)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    llava.save_pretrained(tmp)
    tokenizer = mllm.tokenizer
    template = processor_chat_template(mllm)
    if not tokenizer.chat_template:  # lmms-eval's llava_hf renders string content with the tokenizer's template
        tokenizer.chat_template = template
    processor = LlavaProcessor(image_processor=_export_image_processor(mllm), tokenizer=tokenizer, patch_size=mllm.encoder.model.config.patch_size,
                               vision_feature_select_strategy=llava.config.vision_feature_select_strategy, chat_template=template,
                               image_token=IMAGE_TOKEN, num_additional_image_tokens=mllm.encoder.num_prefix_tokens)
    processor.save_pretrained(tmp)
    try:
        result = probe_models(ours, tmp, probe, tolerance=tolerance, dtype=mllm.dtype, backend=processor_backend(processor.image_processor),
                              image_ids=(mllm.image_token_id, image_token), name=str(out))
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not result.passed:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MLLMError(f"{out}: the exported Llava does not reproduce the MLLM ({json.dumps(result.to_dict())}); nothing was written")
    (tmp / EXPORT_RECORD).write_text(json.dumps({"format": "llava-hf", "source": mllm.source, "check": result.to_dict()}, indent=2))
    replace_folder(tmp, out)
    return out


def _export_image_processor(mllm: MLLM):
    """The MLLM's image processor; LLaVA's pad-to-square becomes transformers' ``LlavaImageProcessor`` with ``do_pad``."""
    processor = mllm.image_input.processor
    if not mllm.image_input.pad_to_square:
        return processor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    settings = processor.to_dict()
    return LlavaImageProcessorPil(do_pad=True, size=settings["size"], do_center_crop=bool(settings.get("do_center_crop")), crop_size=settings.get("crop_size"),
                                  resample=settings.get("resample"), image_mean=settings["image_mean"], image_std=settings["image_std"])
