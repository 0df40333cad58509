"""Checkpoints of the LLaVA-NeXT / LLaVA-OneVision repository (the layout the study's MLLMs were trained in).

``config.json`` is the LM's config (``model_type`` ``llava_qwen``, ...) plus ``mm_*`` keys; the weights hold
``model.vision_tower.vision_tower.vision_model.*``, ``model.mm_projector.{0,2}.*`` (``mlp2x_gelu``) or
``model.mm_projector.*`` (``linear``), ``model.image_newline``, and the LM at ``model.*`` / ``lm_head``.
The tower's own config is not in the directory (``mm_vision_tower`` is its hub name): it comes from
``vision_config`` (a local directory with the tower's config.json: ``import-mllm --vision-config``), from
``mm_vision_tower`` itself when that is a local directory, or from :data:`towers.KNOWN_TOWERS`.

Reproduced as the repository runs one image (``llava/model/multimodal_encoder``, ``llava_arch.py``,
``mm_utils.process_images``):

* SigLIP towers (``siglip`` in the name): the repository deletes the last encoder layer and replaces the
  head by identity when it loads the tower, then takes ``hidden_states[-1]`` with every token, whatever
  ``mm_vision_select_layer`` says. The saved weights hold that cut tower, so the visual tokens are the output
  of the cut tower's last block (``visual_layer -1``), which is the **penultimate** block of the named
  tower, before its post-layernorm. Pixels: the repository's ``SigLipImageProcessor`` (bicubic resize to the
  tower's size, rescale, normalise with mean = std = 0.5), which transformers' ``SiglipImageProcessorPil`` is.
* CLIP towers (``clip`` in the name): ``hidden_states[mm_vision_select_layer]``, CLS dropped under
  ``mm_vision_select_feature`` ``patch``, kept under ``cls_patch``; the tower's CLIP image processor.
* ``image_aspect_ratio`` ``pad`` pads the image to a square of the processor's mean colour first;
  ``anyres*``, ``highres`` and ``crop_split`` (tiling) are refused by name, any other value is the plain path.
* ``mm_patch_merge_type`` ``flat`` (and ``spatial``, the same for one untiled image) give the grid's tokens;
  ``*unpad*`` appends ``image_newline`` and is refused by name. ``model.image_newline`` is dropped (recorded).
* Prompt: the ``qwen_1_5`` conversation (ChatML, default system message), image placeholder before the
  question, ``tokenizer_image_token``; an answer ends with ``<|im_end|>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from encoders import RemapReport

from ..mllm_parts import MLLM, MLLMError, Projector, load_tokenizer
from .base import MLLMLayout, VisionSide, read_config, register_layout
from .llava_hf import build_lm, no_tower_weights, tied_lm_head
from .towers import (
    KNOWN_TOWERS,
    build_tower,
    route_tower_key,
    tower_encoder,
    vision_config,
)
from .weights import Drop, load_parts, weight_files

IMAGE_TOKEN_INDEX = -200  # the repository's placeholder id: never looked up in the embedding table
TOWER_PREFIX = "model.vision_tower.vision_tower."
LM_TYPES = {"llava_qwen": "qwen2", "llava_llama": "llama", "llava_mistral": "mistral", "llava_mixtral": "mixtral", "llava_gemma": "gemma"}
CONVERSATION_OF = {"qwen2": ("qwen_1_5", "<|im_end|>")}
TILING = ("anyres", "highres", "crop_split")
PROJECTORS = {"mlp2x_gelu": 2, "linear": 1}


@dataclass
class NextPlan:
    """What a LLaVA-NeXT config says, checked before any weight is read."""

    vision: Any
    vision_source: str
    text: Any
    siglip: bool
    layer: int
    keep_prefix: bool
    depth: int
    pad: bool
    conversation: str
    answer_end: str
    notes: dict[str, Any]


def _fail(path: Path, message: str):
    return MLLMError(f"{path / 'config.json'}: {message}")


def tower_config(path: Path, config: dict[str, Any], vision_config_dir: str | Path | None) -> tuple[dict[str, Any], str]:
    """The named tower's config dict and where it came from (module docstring's order)."""
    import json

    name = str(config.get("mm_vision_tower") or "")
    candidates = [Path(vision_config_dir)] if vision_config_dir else []
    local = Path(name) if Path(name).is_absolute() else path / name
    candidates += [local] if name and local.is_dir() else []
    for folder in candidates:
        file = folder / "config.json"
        if not file.is_file():
            raise _fail(path, f"--vision-config {folder}: no config.json there; pass the tower's folder (a local copy of {name!r})")
        return json.loads(file.read_text()), str(folder)
    if name in KNOWN_TOWERS:
        return dict(KNOWN_TOWERS[name]), f"built-in table ({name})"
    raise _fail(path, f"mm_vision_tower {name!r} is neither a local folder nor a tower this project knows ({', '.join(sorted(KNOWN_TOWERS))}); "
                      "import it with python -m train import-mllm SRC OUT --vision-config DIR, DIR holding the tower's config.json")


def plan_next(path: Path, config: dict[str, Any], vision_config_dir: str | Path | None = None) -> NextPlan:
    """Every check of a LLaVA-NeXT config that needs no weights (MLLMError naming the key and the fix)."""
    from transformers import AutoConfig

    name = str(config.get("mm_vision_tower") or "")
    # The repository's builder: CLIP for openai / laion / ShareGPT4V names or local folders, else SigLIP by name.
    clip = "clip" in name and (Path(name).exists() or (path / name).is_dir() or name.startswith(("openai", "laion")) or "ShareGPT4V" in name)
    siglip = not clip and "siglip" in name
    if not (siglip or clip):
        raise _fail(path, f"mm_vision_tower {name!r}: the repository picks its tower class by name, and only its SigLIP and CLIP towers are read here")
    for key, value in (("mm_resampler_type", config.get("mm_resampler_type")), ("mm_use_im_start_end", config.get("mm_use_im_start_end"))):
        if value:
            raise _fail(path, f"{key} {value!r} is not read (this importer reproduces the plain tower -> projector path)")
    projector = config.get("mm_projector_type", "linear")
    if projector not in PROJECTORS:
        raise _fail(path, f"mm_projector_type {projector!r} is not read; this importer reads {' and '.join(PROJECTORS)}")
    aspect = str(config.get("image_aspect_ratio") or "")
    if any(word in aspect for word in TILING):
        raise _fail(path, f"image_aspect_ratio {aspect!r} tiles the image (base + crops, image_grid_pinpoints); this importer reads one image per "
                          "question without tiling (pad, square); that needs multi-view inputs this project's MLLMs do not have")
    merge = str(config.get("mm_patch_merge_type") or "flat")
    if merge != "flat" and (not merge.startswith("spatial") or "unpad" in merge):
        raise _fail(path, f"mm_patch_merge_type {merge!r} appends model.image_newline after the image's tokens (grid + 1) or merges tiles; "
                          "this importer reads flat (and spatial without unpad, the same for one untiled image)")
    model_type = config.get("model_type", "")
    if model_type not in LM_TYPES:
        raise _fail(path, f"model_type {model_type!r}: this importer knows the LMs {', '.join(LM_TYPES)}")
    base = LM_TYPES[model_type]
    if base not in CONVERSATION_OF:
        raise _fail(path, f"model_type {model_type!r}: the conversation template of a {base} LM is not reproduced here (qwen_1_5, for Qwen LMs, is)")
    known = set(AutoConfig.for_model(base).to_dict())
    text = AutoConfig.for_model(base, **{key: value for key, value in config.items() if key in known and key not in ("model_type", "architectures", "transformers_version")})
    data, source = tower_config(path, config, vision_config_dir)
    notes: dict[str, Any] = {"vision_config": source}
    try:
        vision = vision_config(data)
    except (ValueError, TypeError) as err:
        raise _fail(path, f"the tower config from {source}: {err}") from None
    if siglip:
        # The repository's surgery: the last encoder layer deleted, the head replaced by identity.
        vision.num_hidden_layers -= 1
        vision.vision_use_head = False
        layer, keep_prefix = -1, False
        if config.get("mm_vision_select_layer", -2) != -2:
            notes["mm_vision_select_layer"] = f"{config.get('mm_vision_select_layer')} is ignored by the repository's SigLIP tower (it takes its last kept layer)"
    else:
        select = int(config.get("mm_vision_select_layer", -2))
        layer = select if select < 0 else select - 1 - vision.num_hidden_layers
        if not -vision.num_hidden_layers <= layer <= -1:
            raise _fail(path, f"mm_vision_select_layer {select} is not a block of the {vision.num_hidden_layers}-layer tower")
        feature = config.get("mm_vision_select_feature", "patch")
        if feature not in ("patch", "cls_patch"):
            raise _fail(path, f"mm_vision_select_feature {feature!r}: the repository knows patch and cls_patch")
        keep_prefix = feature == "cls_patch"
    if int(config.get("mm_hidden_size", vision.hidden_size)) != vision.hidden_size:
        raise _fail(path, f"mm_hidden_size {config.get('mm_hidden_size')} disagrees with the tower's hidden_size {vision.hidden_size} (from {source}): the tower config is not this MLLM's")
    conversation, end = CONVERSATION_OF[base]
    return NextPlan(vision, source, text, siglip, layer, keep_prefix, PROJECTORS[projector], aspect == "pad", conversation, end, notes)


def next_route(tower_keys: set[str], depth: int):
    """Where a LLaVA-NeXT tensor goes: (part, key), a Drop, or None."""

    def route(key: str):
        if key.startswith(TOWER_PREFIX):
            name = route_tower_key(key[len(TOWER_PREFIX):], tower_keys)
            if name is not None:
                return "tower", name
            rest = key[len(TOWER_PREFIX):]
            if ".head." in f".{rest}" or rest.startswith(("head.", "vision_model.head.")):
                return Drop("tower head (replaced by identity when the repository loads the tower)")
            if ".encoder.layers." in f".{rest}":
                return Drop("tower layers the repository deletes when it loads the tower")
            return None
        if key.startswith("model.mm_projector."):
            rest = key[len("model.mm_projector."):]
            if depth == 1:
                return "projector", "fc1." + rest
            index, _, tail = rest.partition(".")
            return ("projector", {"0": "fc1.", "2": "fc2."}[index] + tail) if index in ("0", "2") else None
        if key == "model.image_newline":
            return Drop("image_newline (unused by a flat merge of one untiled image)")
        if key.startswith(("model.", "lm_head.")):
            return "lm", key
        return None

    return route


def next_image_processor(plan: NextPlan, vision_config_dir: str | Path | None):
    """The repository's image processor for this tower (module docstring)."""
    from transformers.image_utils import PILImageResampling

    size = plan.vision.image_size
    if plan.siglip:
        from transformers.models.siglip.image_processing_pil_siglip import (
            SiglipImageProcessorPil,
        )

        return SiglipImageProcessorPil(size={"height": size, "width": size}, resample=PILImageResampling.BICUBIC, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = Path(vision_config_dir) if vision_config_dir else None
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        return CLIPImageProcessorPil.from_pretrained(folder, local_files_only=True)
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=PILImageResampling.BICUBIC)


@register_layout
class LlavaNextRepo(MLLMLayout):
    name = "llava-next"
    summary = "LLaVA-NeXT / OneVision repository checkpoint (config.json with mm_vision_tower; the study's layout)"

    def detect(self, path: Path, config: dict[str, Any] | None) -> bool:
        return bool(config) and "mm_vision_tower" in config

    def read(self, path: Path, dtype: torch.dtype | None = None, vision_config: str | Path | None = None, **options: Any):
        from ..image_input import ImageInput
        from ..prompts import PromptFormat

        config = read_config(path) or {}
        plan = plan_next(path, config, vision_config)
        tokenizer = load_tokenizer(path)
        image_input = ImageInput.from_processor(next_image_processor(plan, vision_config), pad_to_square=plan.pad)
        files = weight_files(path)
        tower, lm = build_tower(plan.vision, dtype), build_lm(plan.text, dtype)
        lm_dim = plan.text.hidden_size
        projector = Projector(plan.vision.hidden_size, lm_dim, lm_dim, act="gelu", depth=plan.depth).to(dtype or torch.float32)
        report = load_parts(files, {"tower": tower, "projector": projector, "lm": lm}, next_route(set(tower.state_dict()), plan.depth),
                            optional={"lm": tied_lm_head(lm)}, source=str(path))
        if not report.copied.get("tower"):
            raise MLLMError(no_tower_weights(path, (TOWER_PREFIX,)))
        encoder = tower_encoder(tower, name=path.name, checkpoint=path, layout=self.name, processor=image_input.processor.to_dict(), report=self._remap(report))
        max_length = int(config.get("tokenizer_model_max_length") or getattr(plan.text, "max_position_embeddings", 2048))
        return MLLM(encoder, projector, lm, tokenizer, visual_layer=plan.layer, max_length=max_length, prompt=PromptFormat("conversation", conversation=plan.conversation),
                    keep_prefix=plan.keep_prefix, image_input=image_input, image_token_id=IMAGE_TOKEN_INDEX, answer_end=[plan.answer_end],
                    source={"format": self.name, "path": str(path.resolve()), **plan.notes, "dropped": report.dropped})

    def read_vision(self, path: Path, vision_config: str | Path | None = None, **options: Any) -> VisionSide:
        from ..image_input import ImageInput
        plan = plan_next(path, read_config(path) or {}, vision_config)
        tower = build_tower(plan.vision)
        report = load_parts(weight_files(path), {"tower": tower}, next_route(set(tower.state_dict()), plan.depth), only={"tower"}, source=str(path))
        if not report.copied.get("tower"):
            raise MLLMError(no_tower_weights(path, (TOWER_PREFIX,)))
        image_input = ImageInput.from_processor(next_image_processor(plan, vision_config), pad_to_square=plan.pad)
        encoder = tower_encoder(tower, name=path.name, checkpoint=path, layout=self.name, processor=image_input.processor.to_dict(), report=self._remap(report))
        return VisionSide(encoder, plan.layer, plan.keep_prefix, image_input)

    def _remap(self, report) -> RemapReport:
        dropped = {"projector": report.copied.get("projector", report.dropped.get("projector", 0)), "llm": report.copied.get("lm", report.dropped.get("lm", 0))}
        dropped.update({group: count for group, count in report.dropped.items() if group not in ("projector", "lm")})
        return RemapReport(layouts=["mllm", self.name], stripped_prefixes=[TOWER_PREFIX], dropped=dropped)
