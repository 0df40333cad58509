"""transformers ``LlavaForConditionalGeneration`` directories (``llava-hf/*`` and what ``save_pretrained`` writes).

Read as transformers' ``LlavaModel.get_image_features`` computes an image's tokens: the tower's
``hidden_states[vision_feature_layer]`` (a list: each such entry, concatenated along channels), the first
token dropped under ``vision_feature_select_strategy`` ``default`` (CLIP's CLS) and kept under ``full``,
then ``multi_modal_projector`` (``linear_1``, ``projector_hidden_act``, ``linear_2``). Weights in either
naming found on the Hub: transformers 5 (``model.vision_tower.``, ``model.multi_modal_projector.``,
``model.language_model.``, ``lm_head.``) and 4.x (``vision_tower.[vision_model.]``, ``multi_modal_projector.``,
``language_model.model.``, ``language_model.lm_head.``). The prompt is the processor's chat template; the
pixels are the processor's image processor's.

``LlavaOnevisionForConditionalGeneration`` and ``LlavaNextForConditionalGeneration`` directories are
recognised and refused: see :class:`LlavaTiledHF`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from encoders import RemapReport

from ..mllm_parts import MLLM, MLLMError, Projector, load_tokenizer
from .base import MLLMLayout, VisionSide, read_config, register_layout
from .towers import build_tower, route_tower_key, tower_encoder, vision_config
from .weights import load_parts, weight_files

TOWER_PREFIXES = ("model.vision_tower.", "vision_tower.")
PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")
PROJECTOR_NAMES = {"linear_1.": "fc1.", "linear_2.": "fc2."}
LM_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head."))
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


@dataclass
class LlavaPlan:
    """What a Llava config says, checked before any weight is read."""

    vision: Any
    text: Any
    layers: list[int]
    keep_prefix: bool
    act: str
    bias: bool
    image_token_id: int
    seq_length: int | None


def visual_layers(path: Path, layer: Any, depth: int) -> list[int]:
    """transformers' ``vision_feature_layer`` (hidden_states indices: 0 = the embeddings, k = after block
    k) as this project's block indices (negative, from the last block); MLLMError for the rest."""
    values = layer if isinstance(layer, list) else [layer]
    if not values or not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        raise MLLMError(f"{path / 'config.json'}: vision_feature_layer {layer!r} is neither an int nor a list of ints")
    blocks = []
    for value in values:
        index = value if value < 0 else value - depth - 1  # hidden_states[k] is block k - 1's output
        if not -depth <= index <= -1:
            raise MLLMError(f"{path / 'config.json'}: vision_feature_layer {value} names hidden_states[{value}], "
                            f"{'the patch embeddings before any block' if index == -depth - 1 else 'no layer'} of a {depth}-layer tower; this project reads block outputs (1..{depth} or -1..-{depth})")
        blocks.append(index)
    return blocks


def plan_llava(path: Path, config: dict[str, Any]) -> LlavaPlan:
    """The checks of a Llava ``config.json`` that need no weights: the tower, the feature layer(s), the
    strategy, the projector's activation (MLLMError naming the key and the fix)."""
    from transformers import LlavaConfig
    from transformers.activations import ACT2FN

    where = path / "config.json"
    visual_layers(path, config.get("vision_feature_layer", -2), 10**6)  # its type, before transformers' own validation
    try:
        parsed = LlavaConfig.from_dict({key: value for key, value in config.items() if key != "model_type"})
        vision = vision_config(parsed.vision_config.to_dict())
    except Exception as err:  # noqa: BLE001 - transformers' strict config classes raise their own validation errors
        raise MLLMError(f"{where}: {' '.join(str(err).split())[:300]}") from None
    layers = visual_layers(path, parsed.vision_feature_layer, vision.num_hidden_layers)
    strategy = parsed.vision_feature_select_strategy
    if strategy not in ("default", "full"):
        raise MLLMError(f"{where}: vision_feature_select_strategy {strategy!r}: transformers knows default (drops CLS) and full")
    has_cls = vision.model_type == "clip_vision_model"
    if strategy == "default" and not has_cls:
        raise MLLMError(f"{where}: vision_feature_select_strategy default drops the first token, which a SigLIP tower (no CLS) has as a patch: "
                        "transformers would drop a patch; not supported here (set it to full, as llava-hf's SigLIP models do)")
    act = parsed.projector_hidden_act
    if act not in ACT2FN:
        raise MLLMError(f"{where}: projector_hidden_act {act!r} is not an activation transformers knows; the projector cannot be built")
    return LlavaPlan(vision, parsed.text_config, layers, strategy == "full" and has_cls, act, bool(getattr(parsed, "multimodal_projector_bias", True)),
                     int(parsed.image_token_id), config.get("image_seq_length"))


def chat_template(path: Path, tokenizer) -> str:
    """The processor's chat template (chat_template.jinja / .json, processor_config.json), else the tokenizer's."""
    for name in CHAT_TEMPLATE_FILES:
        file = path / name
        if file.is_file():
            text = file.read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    processor = path / "processor_config.json"
    if processor.is_file():
        template = json.loads(processor.read_text()).get("chat_template")
        if template:
            return template
    return tokenizer.chat_template or ""


def image_processor(path: Path):
    """The image processor of a model directory (AutoImageProcessor, local files only); MLLMError without one."""
    from transformers import AutoImageProcessor

    if not any((path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise MLLMError(f"{path}: no image processor (preprocessor_config.json or processor_config.json); copy the processor files (processor.save_pretrained)")
    try:
        return AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise MLLMError(f"{path}: the image processor cannot be read ({err})") from None


def check_image_side(path: Path, plan: LlavaPlan, image_input) -> None:
    """The processor's output size must be the tower's, and ``image_seq_length`` the tokens it gives."""
    size, tower = image_input.geometry.resolution, plan.vision.image_size
    if size != tower:
        raise MLLMError(f"{path}: the image processor makes {size} px images but the tower's image_size is {tower} px (its position embeddings); "
                        "fix the processor's size / crop_size (preprocessor_config.json) to the tower's")
    tokens = (tower // plan.vision.patch_size) ** 2 + (1 if plan.keep_prefix else 0)
    if plan.seq_length is not None and int(plan.seq_length) != tokens:
        raise MLLMError(f"{path / 'config.json'}: image_seq_length {plan.seq_length} disagrees with the tower's grid: "
                        f"({tower} // {plan.vision.patch_size})^2{' + CLS' if plan.keep_prefix else ''} = {tokens} tokens; set image_seq_length to {tokens}")


def check_image_token(path: Path, tokenizer, image_token_id: int, token: str) -> None:
    """The tokenizer must hold the image token at the config's ``image_token_id``."""
    found = tokenizer.convert_tokens_to_ids(token)
    if found in (None, tokenizer.unk_token_id) or found != image_token_id:
        raise MLLMError(f"{path}: the tokenizer has no {token} token at image_token_id {image_token_id} (it maps {token!r} to {found}); "
                        f"copy the tokenizer that was saved with this MLLM (its {token} is a special token)")


def llava_route(tower_keys: set[str]):
    """Where a Llava tensor goes: (part, key in the part) or None; both Hub namings (module docstring)."""

    def route(key: str):
        for prefix in TOWER_PREFIXES:
            if key.startswith(prefix):
                name = route_tower_key(key[len(prefix):], tower_keys)
                return ("tower", name) if name else None
        for prefix in PROJECTOR_PREFIXES:
            if key.startswith(prefix):
                rest = key[len(prefix):]
                for old, new in PROJECTOR_NAMES.items():
                    if rest.startswith(old):
                        return "projector", new + rest[len(old):]
                return None
        for prefix, target in LM_PREFIXES:
            if key.startswith(prefix):
                return "lm", target + key[len(prefix):]
        return None

    return route


def tied_lm_head(lm) -> set[str]:
    """``{'lm_head.weight'}`` when the LM ties it to its input embeddings (then a checkpoint may omit it)."""
    head, embed = lm.get_output_embeddings(), lm.get_input_embeddings()
    return {"lm_head.weight"} if head is not None and head.weight is embed.weight else set()


def build_lm(text_config, dtype: torch.dtype | None):
    """An uninitialised causal LM of ``text_config`` (any architecture transformers builds)."""
    from transformers import AutoModelForCausalLM

    from .weights import build_empty

    try:
        return build_empty(lambda: AutoModelForCausalLM.from_config(text_config), dtype)
    except ValueError as err:
        raise MLLMError(f"the LM of model_type {text_config.model_type!r} cannot be built as a causal LM by transformers ({err})") from None


def no_tower_weights(path: Path, prefixes: tuple[str, ...]) -> str:
    return f"{path}: holds no vision tower weights (no tensor under {' or '.join(prefixes)}); this is an LM checkpoint, or the tower was saved elsewhere"


@register_layout
class LlavaHF(MLLMLayout):
    name = "llava-hf"
    summary = "transformers LlavaForConditionalGeneration directory (config.json model_type llava)"

    def detect(self, path: Path, config: dict[str, Any] | None) -> bool:
        return bool(config) and config.get("model_type") == "llava"

    def read(self, path: Path, dtype: torch.dtype | None = None, **options: Any):
        from ..image_input import ImageInput
        from ..prompts import IMAGE_TOKEN, PromptFormat

        config = read_config(path) or {}
        plan = plan_llava(path, config)
        tokenizer = load_tokenizer(path)
        token = json.loads((path / "processor_config.json").read_text()).get("image_token", IMAGE_TOKEN) if (path / "processor_config.json").is_file() else IMAGE_TOKEN
        check_image_token(path, tokenizer, plan.image_token_id, token)
        image_input = ImageInput.from_processor(image_processor(path))
        check_image_side(path, plan, image_input)
        template = chat_template(path, tokenizer)
        if not template:
            raise MLLMError(f"{path}: no chat template (chat_template.jinja, chat_template.json, processor_config.json or the tokenizer's); copy the processor's files")
        files = weight_files(path)
        tower, lm = build_tower(plan.vision, dtype), build_lm(plan.text, dtype)
        projector = Projector(plan.vision.hidden_size * len(plan.layers), plan.text.hidden_size, plan.text.hidden_size, act=plan.act, bias=plan.bias).to(dtype or torch.float32)
        report = load_parts(files, {"tower": tower, "projector": projector, "lm": lm}, llava_route(set(tower.state_dict())), optional={"lm": tied_lm_head(lm)}, source=str(path))
        if not report.copied.get("tower"):
            raise MLLMError(no_tower_weights(path, TOWER_PREFIXES))
        remap = RemapReport(layouts=["mllm", self.name], dropped={"projector": report.copied.get("projector", 0), "llm": report.copied.get("lm", 0)})
        encoder = tower_encoder(tower, name=path.name, checkpoint=path, layout=self.name, processor=image_input.processor.to_dict(), report=remap)
        return MLLM(encoder, projector, lm, tokenizer, visual_layer=plan.layers if len(plan.layers) > 1 else plan.layers[0], max_length=_max_length(plan.text),
                    prompt=PromptFormat("processor-chat", template=template), keep_prefix=plan.keep_prefix, image_input=image_input,
                    image_token_id=plan.image_token_id, source={"format": self.name, "path": str(path.resolve())})

    def read_encoder(self, path: Path, **options: Any):
        return read_tower_only(path, plan_llava(path, read_config(path) or {}).vision, self.name)

    def read_vision(self, path: Path, **options: Any) -> VisionSide:
        from ..image_input import ImageInput

        plan = plan_llava(path, read_config(path) or {})
        image_input = ImageInput.from_processor(image_processor(path))
        check_image_side(path, plan, image_input)
        encoder = read_tower_only(path, plan.vision, self.name)
        return VisionSide(encoder, plan.layers if len(plan.layers) > 1 else plan.layers[0], plan.keep_prefix, image_input)


def read_tower_only(path: Path, vision, layout: str):
    """The vision tower of a transformers Llava-family directory as an Encoder; the LM's tensors are not read."""
    from encoders.families.hf_family import read_processor_config

    tower = build_tower(vision)
    report = load_parts(weight_files(path), {"tower": tower}, llava_route(set(tower.state_dict())), only={"tower"}, source=str(path))
    if not report.copied.get("tower"):
        raise MLLMError(no_tower_weights(path, TOWER_PREFIXES))
    remap = RemapReport(layouts=["mllm", layout], dropped={"projector": report.dropped.get("projector", 0), "llm": report.dropped.get("lm", 0)})
    return tower_encoder(tower, name=path.name, checkpoint=path, layout=layout, processor=read_processor_config(path), report=remap)


def _max_length(text_config) -> int:
    return int(getattr(text_config, "max_position_embeddings", 2048) or 2048)


@register_layout
class LlavaTiledHF(MLLMLayout):
    """transformers ``LlavaOnevision`` / ``LlavaNext`` directories, refused: both always tile.

    Their processor turns one image into the base image plus at least one tile picked from
    ``image_grid_pinpoints`` (``image_size_to_num_patches`` adds the base to every best-fit grid, so even a
    single pinpoint equal to the tower's size gives base + 1 tile); the model unpads the tiles by the
    original size, appends ``image_newline`` after every tile row and (OneVision) pools them down under
    ``vision_aspect_ratio`` ``anyres_max_N``. There is no single-resolution path to reproduce."""

    name = "llava-tiled-hf"
    summary = "transformers LlavaOnevision / LlavaNext directory (refused: always base image + tiles + image_newline)"

    def detect(self, path: Path, config: dict[str, Any] | None) -> bool:
        return bool(config) and config.get("model_type") in ("llava_onevision", "llava_next")

    def read(self, path: Path, dtype: torch.dtype | None = None, **options: Any):
        config = read_config(path) or {}
        pinpoints = config.get("image_grid_pinpoints")
        raise MLLMError(
            f"{path}: {config.get('model_type')} is not read: transformers always feeds it the base image plus tiles from image_grid_pinpoints "
            f"({len(pinpoints or [])} pinpoints here; even one pinpoint at the tower's size adds a tile), unpads them and appends image_newline per row "
            f"(vision_aspect_ratio {config.get('vision_aspect_ratio', 'anyres')!r}); evaluating it needs multi-view inputs (base + tiles), unpadding by the "
            "original size and the newline token, which this project's MLLMs (one image, one token grid) do not have")

    def read_encoder(self, path: Path, **options: Any):
        """The tower alone reads fine (the encoder suites need no tiling)."""
        try:
            vision = vision_config((read_config(path) or {}).get("vision_config") or {})
        except ValueError as err:
            raise MLLMError(f"{path / 'config.json'}: {err}") from None
        return read_tower_only(path, vision, self.name)
