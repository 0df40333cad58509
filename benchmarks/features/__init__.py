"""The feature store: features are computed once per (weights hash, dataset fingerprint, split, transform,
layers, precision) and never again.

One module per job:

- ``pipeline``: the images of a split -> normalised batches on the device (workers or device decoding);
- ``forward``: a batch -> the named feature arrays of the requested blocks, in the requested precision;
- ``store``: the on-disk entry: its key, shards written atomically, the merge, damage checks, memory maps;
- ``extract``: :func:`extract_features`, which runs the three and resumes a killed run;
- ``config``: :class:`ExtractionConfig` and :class:`FeatureError`, which all of them read.
"""
from __future__ import annotations

from .config import (
    DECODES,
    DEFAULT_SHARD_SIZE,
    PRECISIONS,
    ExtractionConfig,
    FeatureError,
)
from .extract import TOKEN_SHARD_BYTES, extract_features, unreadable_items
from .forward import feature_names, token_grid, token_names
from .pipeline import decode_resize_crop
from .store import (
    FP16_MAX_ROW_ERROR,
    STORE_VERSION,
    FeatureSet,
    entry_damage,
    storage_dtype,
    store_key,
)

__all__ = [
    "DECODES", "DEFAULT_SHARD_SIZE", "FP16_MAX_ROW_ERROR", "PRECISIONS", "STORE_VERSION", "TOKEN_SHARD_BYTES",
    "ExtractionConfig", "FeatureError", "FeatureSet", "decode_resize_crop", "entry_damage", "extract_features",
    "feature_names", "storage_dtype", "store_key", "token_grid", "token_names", "unreadable_items",
]
