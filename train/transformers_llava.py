"""A project MLLM as transformers' ``LlavaForConditionalGeneration``, over its own modules.

:func:`as_transformers_llava` assembles the Llava model around the MLLM's tower, the projector's two
linears, the LM's decoder and head (reassigned, never copied), so its forward is transformers' code over the
same tensors: what ``export-mllm`` saves, and the reference of an import check for layouts transformers has
no class for. What transformers' Llava cannot hold is named by :func:`exportable_problem`.
"""
from __future__ import annotations

import torch

from .mllm_parts import MLLM, MLLMError
from .prompts import IMAGE_TOKEN

TOWERS = ("SiglipVisionModel", "CLIPVisionModel")


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


def feature_layers(mllm: MLLM) -> list[int]:
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
    layers = feature_layers(mllm)
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


