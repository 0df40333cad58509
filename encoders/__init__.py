"""Checkpoints -> Encoders: a registry of families, safe readers, layout remapping, strict loading."""
from common.lazy_imports import defer_slow_imports

defer_slow_imports()  # before the families import timm, which imports wandb only to see that it is there

from .base import Encoder, EncoderOutput, LayerTokens, PreprocessConfig, weights_hash
from .checkpoint import CheckpointError, read_checkpoint, save_encoder_checkpoint
from .family import FAMILIES, EncoderFamily, register_family
from .layouts import RemapReport
from .loader import EncoderSpec, load_encoder, make_token_shuffled, parse_arch
from .manifest import ManifestError, load_manifest

__all__ = [
    "CheckpointError", "Encoder", "EncoderFamily", "EncoderOutput", "EncoderSpec", "FAMILIES", "LayerTokens",
    "ManifestError", "PreprocessConfig", "RemapReport", "load_encoder", "load_manifest", "make_token_shuffled", "parse_arch",
    "read_checkpoint", "register_family", "save_encoder_checkpoint", "weights_hash",
]
