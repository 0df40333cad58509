"""Suite ``align``: vision-language alignment and how much training reshaped the encoder
(docs/protocol.md sections 5 and 6).

- ``vision_language``: the encoder's pooled image embeddings (``cls`` features of the eval split)
  against a causal LM's embeddings of the paired captions (mean over the caption's tokens of the LM's
  last hidden states): mutual kNN alignment (k = 10, per-item scores, bootstrap CI over items with the
  neighbour sets held fixed) and linear CKA (grouped-jackknife CI). The LM is ``--align-lm`` (any local
  transformers causal-LM directory), else ``<mllm>/lm`` of the lineage's original (so every encoder of a
  lineage is compared with the same LM), else of the encoder itself; skipped with the reason when there
  is none, or when the dataset has no ``captions`` capability.
- ``lineage``: for every encoder with a base in the run, linear CKA between the base's and its
  features (mean of patch tokens) at every block, on the same images (rows carry ``extra["layer"]``;
  the report draws CKA vs block, one curve per checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.features import extract_features
from benchmarks.results import ResultRow
from common.options import option
from evidence.baselines import mean_check
from evidence.stats import bootstrap_ci
from imagesets import CAPTIONS, dataset_capabilities
from probes.alignment import linear_cka, linear_cka_ci, mutual_knn

from .base import LoadedEncoder, RunContext
from .regions import spread_indices
from .spec import DataNeeds, register_suite

EVAL_SPLIT = "val"
K = 10


def _lm_problem(path: str) -> str:
    if path and not Path(path).is_dir():
        return f"{'is a file, not a folder' if Path(path).exists() else 'no such folder'}; pass a local causal-LM folder (save_pretrained output)"
    if path and not (Path(path) / "config.json").is_file():
        return "not a transformers model directory (no config.json); pass a local causal-LM folder (save_pretrained output)"
    return ""


@dataclass(frozen=True)
class AlignOptions:
    """Options of the ``align`` suite (flags ``--align-...``)."""

    items: int = option(1000, "image-caption pairs of the eval split, spread evenly (0 = all)", minimum=0)
    lm: str = option("", "a local transformers causal-LM directory for caption embeddings (default: <mllm>/lm of the lineage's original)", check=_lm_problem, metavar="DIR")


def caption_lm(loaded: LoadedEncoder, encoders: list[LoadedEncoder], override: str) -> tuple[str, str]:
    """(LM directory, '') or ('', reason there is none)."""
    if override:
        return override, ""
    from train.mllm_layouts import is_mllm_dir

    by_name = {other.name: other for other in encoders}
    for candidate in (by_name.get(loaded.spec.base), loaded):
        if candidate is not None and candidate.spec.mllm and is_mllm_dir(candidate.spec.mllm):
            mllm = Path(candidate.spec.mllm)
            return str(mllm / "lm" if (mllm / "lm" / "config.json").is_file() else mllm), ""
    return "", "no language model: pass --align-lm DIR (a local transformers causal LM) or give the encoder an mllm directory in the manifest"


def caption_embeddings(lm_dir: str, captions: list[str], *, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """(n, H) float64: per caption, the mean over its tokens of the LM's last hidden state. ``lm_dir``: a
    causal-LM directory, or an MLLM directory of any layout (its LM)."""
    from train.mllm import load_language_model  # reads word-level tokenizers as declared, where AutoTokenizer would not

    model, tokenizer = load_language_model(lm_dir)
    model = model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    with torch.no_grad():
        for start in range(0, len(captions), batch_size):
            batch = tokenizer(captions[start : start + batch_size], return_tensors="pt", padding=True).to(device)
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1].double()
            mask = batch["attention_mask"].unsqueeze(-1).double()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)).cpu().numpy())
    return np.concatenate(out)


def _vision_language_rows(context: RunContext, encoders: list[LoadedEncoder], split, indices: list[int]) -> list[ResultRow]:
    common = {"suite": "align", "task": "vision_language", "dataset": context.data, "dataset_fingerprint": split.fingerprint}
    if CAPTIONS not in dataset_capabilities(context.data):
        reason = f"{context.data} has no captions to pair with images; pick a dataset with captions with --data align=SPEC"
        return [context.skipped(loaded, reason, **common) for loaded in encoders]
    captions = [split.caption(i) for i in indices]
    embedded: dict[str, np.ndarray] = {}
    rows: list[ResultRow] = []
    for loaded in encoders:
        lm_dir, reason = caption_lm(loaded, encoders, context.options.lm)
        if not lm_dir:
            rows.append(context.skipped(loaded, reason, **common))
            continue
        if lm_dir not in embedded:
            embedded[lm_dir] = caption_embeddings(lm_dir, captions, device=context.extraction.device)
        text = embedded[lm_dir]
        features = extract_features(loaded.encoder, split, context.cache_dir, layers=context.layers, config=context.extraction, log=context.log)
        valid = features.valid[indices]
        image = np.asarray(features.arrays["cls"][indices], dtype=np.float64)[valid]
        extra = {"lm": lm_dir, "image_feature": "cls", "text_feature": "mean of last hidden states", "split": EVAL_SPLIT}
        scores = mutual_knn(image, text[valid], k=K)
        per_item = context.save_per_item(scores, loaded.name, "align", "mutual_knn")
        low, high = bootstrap_ci(scores, seed=context.seed)
        chance = K / (int(valid.sum()) - 1)  # two unrelated neighbour sets share k / (n - 1) of their members on average
        check = mean_check(scores, chance, seed=context.seed)
        rows.append(context.row(loaded, **common, metric=f"mutual_knn_k{K}", value=float(scores.mean()), ci_low=low, ci_high=high, n=int(valid.sum()), per_item=per_item,
                                extra={**extra, "chance": chance, **check.extra()}))
        low, high = linear_cka_ci(image, text[valid], seed=context.seed)
        rows.append(context.row(loaded, **common, metric="cka_linear", value=linear_cka(image, text[valid]), ci_low=low, ci_high=high, n=int(valid.sum()), extra=extra))
    return rows


def _lineage_rows(context: RunContext, encoders: list[LoadedEncoder], split, indices: list[int]) -> list[ResultRow]:
    by_name = {loaded.name: loaded for loaded in encoders}
    pairs = [(by_name[loaded.spec.base], loaded) for loaded in encoders if loaded.spec.base in by_name]
    common = {"suite": "align", "task": "lineage", "dataset": context.data, "dataset_fingerprint": split.fingerprint}
    if not pairs:
        return []
    features = {}
    for loaded in {id(l): l for pair in pairs for l in pair}.values():
        features[loaded.name] = extract_features(loaded.encoder, split, context.cache_dir, layers="all", config=context.extraction, log=context.log)
    rows = []
    for base, loaded in pairs:
        if base.encoder.num_layers != loaded.encoder.num_layers:
            reason = f"{loaded.name} has {loaded.encoder.num_layers} blocks and its base {base.name} {base.encoder.num_layers}: no block-to-block CKA"
            rows.append(context.skipped(loaded, reason, **common))
            continue
        a, b = features[base.name], features[loaded.name]
        valid = a.valid[indices] & b.valid[indices]
        for block in range(loaded.encoder.num_layers):
            name = f"L{block}.mean"
            x = np.asarray(a.arrays[name][indices], dtype=np.float64)[valid]
            y = np.asarray(b.arrays[name][indices], dtype=np.float64)[valid]
            low, high = linear_cka_ci(x, y, seed=context.seed)
            rows.append(context.row(loaded, **common, metric="cka_to_base", value=linear_cka(x, y), ci_low=low, ci_high=high, n=int(valid.sum()),
                                    extra={"layer": block, "pooling": "mean", "compared_with": base.name, "split": EVAL_SPLIT}))
    return rows


@register_suite(
    "align", options=AlignOptions, needs=DataNeeds(splits=(EVAL_SPLIT,)),
    headline=(("vision_language", "mutual_knn_k10"), ("lineage", "cka_to_base")), variant_fields=("layer", "pooling"),
    flag_prefix="align", order=50, summary="vision-language alignment (captions) and CKA to the base checkpoint",
)
def alignment_suite(context: RunContext, encoders: list[LoadedEncoder]) -> list[ResultRow]:
    split = context.open_split(EVAL_SPLIT)
    indices = spread_indices(len(split), context.options.items)
    if len(indices) <= K:
        reason = f"mutual kNN (k = {K}) and CKA need more than {K} images of {context.data} ({EVAL_SPLIT}); it has {len(indices)}"
        return [context.skipped(loaded, reason, dataset_fingerprint=split.fingerprint) for loaded in encoders]
    return _vision_language_rows(context, encoders, split, indices) + _lineage_rows(context, encoders, split, indices)
