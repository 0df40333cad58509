"""What every part of feature extraction reads: its settings (:class:`ExtractionConfig`) and its error."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SHARD_SIZE = 1024
PRECISIONS = ("fp32", "bf16", "bf16-weights", "int8-dynamic")
DECODES = ("cpu", "gpu")


class FeatureError(RuntimeError):
    """Features that cannot be used (NaN/Inf, too many unreadable images); names encoder, layer and fix."""


@dataclass
class ExtractionConfig:
    """How to extract: batch size, DataLoader workers, ``precision``, device, the largest tolerated
    fraction of unreadable images, and the shard size (images per file).

    ``precision`` (part of the store key, since it changes the numbers): ``fp32``; ``bf16`` (autocast:
    fp32 weights, bf16 matmuls); ``bf16-weights`` (a bf16 copy of the model, bf16 activations
    throughout); ``int8-dynamic`` (CPU only: a copy whose Linear layers hold per-channel int8 weights
    and quantise their inputs per batch). The bf16 modes are fast only on hardware with native bf16
    (AVX-512 BF16 / AMX CPUs, GPUs); on AVX2-only CPUs bf16 is emulated and far slower than fp32, and
    ``int8-dynamic`` is the lever that helps. The caller's encoder is never modified.
    ``compile`` runs the feature call through ``torch.compile`` (same math in fused kernels, so it is
    not part of the key; compiling costs about a minute on CPU, worth it for large splits only).
    ``decode``: ``cpu`` (PIL decode, resize and crop in the DataLoader workers) or ``gpu`` (workers read
    the file bytes; torchvision decodes them on ``device`` in batches, nvJPEG on CUDA, then resizes
    with antialias and crops there). Only for datasets of image files (``imagenet``). Its pixels
    differ slightly from PIL's, so ``gpu`` is part of the store key.
    """

    batch_size: int = 64
    workers: int = 0
    precision: str = "fp32"
    device: str = "cpu"
    max_bad_fraction: float = 0.05
    shard_size: int = DEFAULT_SHARD_SIZE
    progress: bool = True
    compile: bool = False
    decode: str = "cpu"
