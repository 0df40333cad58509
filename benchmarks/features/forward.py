"""The model forward of feature extraction: a batch of images -> the named feature arrays of the requested blocks.

Names (per image): ``cls`` / ``L{L}.cls`` (the model's pooled output for the last block; the CLS token,
or the patch mean when there is none, for intermediate blocks ``L``), ``mean`` / ``L{L}.mean`` (mean of
patch tokens) and, on request, ``tokens.L{L}`` (h*w, D): the patch tokens of block ``L``, row-major over
the encoder's own grid (h, w); the last block's are its final (normed) patch tokens.

The forward runs in ``ExtractionConfig.precision`` (autocast, a bf16 copy, or a dynamically quantised
int8 copy; the caller's encoder is never modified), optionally through ``torch.compile``, and refuses
non-finite features.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from collections.abc import Callable, Sequence

import torch

from encoders import Encoder

from .config import PRECISIONS, ExtractionConfig, FeatureError

Features = dict[str, torch.Tensor]


def feature_names(layers: Sequence[int]) -> list[str]:
    return ["cls", "mean"] + [f"L{layer}.{pool}" for layer in layers for pool in ("cls", "mean")]


def token_names(patch_layers: Sequence[int]) -> list[str]:
    return [f"tokens.L{layer}" for layer in patch_layers]


def precision_context(precision: str, device: str):
    """The autocast context of ``precision`` on ``device`` (``bf16``), else a no-op; ValueError for an unknown one."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def feature_dict(encoder: Encoder, images: torch.Tensor, layers: Sequence[int], patch_layers: Sequence[int] = ()) -> Features:
    """``{feature name: (B, D) or (B, h*w, D) tensor}`` of ``images`` (normalised, on the encoder's device)
    for blocks ``layers`` (pooled) and ``patch_layers`` (tokens); no precision handling, no copy."""
    last = encoder.num_layers - 1
    out = encoder.features(images, layers=sorted(set(layers) | {layer for layer in patch_layers if layer != last}))
    features = {"cls": out.pooled, "mean": out.patch_tokens.mean(dim=1)}
    for layer, tokens in out.layers.items():
        features[f"L{layer}.cls"] = tokens.pooled()
        features[f"L{layer}.mean"] = tokens.patches.mean(dim=1)
    for layer, name in zip(patch_layers, token_names(patch_layers)):
        features[name] = out.patch_tokens if layer == last else out.layers[layer].patches
    return features


# Prepared feature calls per encoder, so that the train and eval splits of one run share one
# reduced-precision copy and one compilation. Values never reference their key (the encoder is passed
# in at call time), so an encoder that is dropped is freed.
_PREPARED: weakref.WeakKeyDictionary[Encoder, dict[tuple, tuple]] = weakref.WeakKeyDictionary()


def _reduced_copy(encoder: Encoder, config: ExtractionConfig) -> tuple[Encoder | None, torch.dtype]:
    """The model copy ``config.precision`` runs (None: the encoder itself) and the dtype of its inputs."""
    if config.precision == "bf16-weights":
        return copy.deepcopy(encoder).to(torch.bfloat16), torch.bfloat16
    if config.precision != "int8-dynamic":
        return None, torch.float32
    if torch.device(config.device).type != "cpu":
        raise ValueError(f"precision int8-dynamic runs on CPU only (device {config.device!r}); use bf16-weights on GPUs")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    copied = copy.deepcopy(encoder)
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the pinned torch still ships it.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        copied.model = quantize_dynamic(copied.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    return copied, torch.float32


def _feature_fn(encoder: Encoder, layers: Sequence[int], config: ExtractionConfig, patch_layers: Sequence[int] = ()) -> Callable[[torch.Tensor], Features]:
    """``images -> {feature name: (B, D) or (B, h*w, D) tensor}`` for ``config.precision`` and ``config.compile``."""
    cache_key = (config.precision, config.compile, tuple(layers), tuple(patch_layers), config.device)
    prepared = _PREPARED.setdefault(encoder, {})
    if cache_key not in prepared:
        copied, input_dtype = _reduced_copy(encoder, config)
        device = config.device

        def run(model: Encoder, images: torch.Tensor) -> Features:
            return feature_dict(model, images.to(device, dtype=input_dtype, non_blocking=True), layers, patch_layers)

        prepared[cache_key] = (copied, torch.compile(run, dynamic=False) if config.compile else run)
    copied, fn = prepared[cache_key]
    model = copied if copied is not None else encoder
    return lambda images: fn(model, images)


def feature_forward(encoder: Encoder, layers: Sequence[int], config: ExtractionConfig, patch_layers: Sequence[int] = ()) -> Callable[[torch.Tensor], Features]:
    """A function ``images (B, 3, R, R) -> {name: float32 CPU tensor}`` for the features of ``layers``
    and the tokens of ``patch_layers``, in ``config.precision`` (FeatureError for NaN/Inf, naming the
    encoder, the block and the fix)."""
    fn = _feature_fn(encoder, layers, config, patch_layers)

    def forward(images: torch.Tensor) -> Features:
        count = images.shape[0]
        if config.compile and count < config.batch_size:
            # A compiled call is specialised to one batch shape: pad the last batch instead of recompiling.
            images = torch.cat([images, images.new_zeros(config.batch_size - count, *images.shape[1:])])
        with torch.inference_mode(), precision_context(config.precision, config.device):
            features = fn(images)
        # A copy, never a view: a pooled CLS row is a slice of the batch's whole token tensor, and a view
        # kept until the shard is flushed would keep every token of every batch alive.
        features = {name: value[:count].to("cpu", torch.float32, copy=True) for name, value in features.items()}
        for name, value in features.items():
            where = f"encoder {encoder.name} ({encoder.weights_hash[:12]}), layer {name.split('.')[0] if '.' in name else 'last block'}, feature {name!r}"
            if not torch.isfinite(value).all():
                raise FeatureError(f"features of {where} contain NaN/Inf in {int((~torch.isfinite(value)).flatten(1).any(dim=1).sum())} of {len(value)} rows; check the checkpoint (python -m encoders inspect) or use --precision fp32")
        return features

    return forward


def token_grid(encoder: Encoder) -> tuple[int, int]:
    """The encoder's own patch grid (h, w) at its input resolution (one forward of a blank image)."""
    resolution = encoder.preprocess.resolution
    parameter = next(encoder.parameters(), None)
    blank = torch.zeros(1, 3, resolution, resolution, device=parameter.device if parameter is not None else "cpu")
    with torch.inference_mode():
        out = encoder.features(blank)
    h, w = out.grid
    if h * w != out.patch_tokens.shape[1]:
        raise FeatureError(f"encoder {encoder.name} reports grid {h}x{w} but returns {out.patch_tokens.shape[1]} patch tokens")
    return int(h), int(w)
