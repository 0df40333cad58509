"""Project MLLMs as transformers ``LlavaForConditionalGeneration`` directories (``python -m train export-mllm``).

:func:`export_llava_hf` writes :func:`train.transformers_llava.as_transformers_llava` with ``save_pretrained``,
together with a ``LlavaProcessor`` (the MLLM's image processor, its tokenizer with ``<image>``, a chat
template that renders the MLLM's own prompt), reloads the result with transformers and checks
(:mod:`train.mllm_check`) that the answer log-probabilities and the prompt's token ids equal the MLLM's: a
failed check writes nothing. What transformers' Llava cannot hold is refused with the reason
(:func:`train.transformers_llava.exportable_problem`).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .image_input import processor_backend
from .mllm import MLLM, MLLMError, replace_folder
from .mllm_check import (
    DEFAULT_TOLERANCE,
    ProbeItem,
    default_probe,
    our_side,
    probe_models,
)
from .prompts import IMAGE_TOKEN
from .transformers_llava import as_transformers_llava, image_token_id

FORMATS = ("llava-hf",)
EXPORT_RECORD = "export.json"


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


def export_llava_hf(mllm: MLLM, out: str | os.PathLike, *, tolerance: float = DEFAULT_TOLERANCE, probe: ProbeItem | None = None) -> Path:
    """Write ``mllm`` to ``out`` as a transformers Llava directory (module docstring); returns ``out``.
    The reloaded model must reproduce the MLLM on ``probe`` (:class:`train.mllm_check.ProbeItem`) within
    ``tolerance`` (logits, fp32); otherwise MLLMError and nothing is written."""
    from transformers import LlavaProcessor

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
    from transformers.models.llava.image_processing_pil_llava import (
        LlavaImageProcessorPil,
    )

    settings = processor.to_dict()
    return LlavaImageProcessorPil(do_pad=True, size=settings["size"], do_center_crop=bool(settings.get("do_center_crop")), crop_size=settings.get("crop_size"),
                                  resample=settings.get("resample"), image_mean=settings["image_mean"], image_std=settings["image_std"])
