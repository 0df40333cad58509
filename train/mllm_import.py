"""``python -m train import-mllm``: any MLLM layout the gate reads, written as a project MLLM directory, with
an import check against transformers' own model.

The check sends one probe image and prompt (:func:`default_probe`) through the written MLLM (read back at
fp32) and through transformers: for a transformers Llava source, ``LlavaForConditionalGeneration`` and
``AutoProcessor`` loaded from the source itself (weights cast to the import's dtype first, as the import
casts them); for a LLaVA-NeXT source, for which transformers has no class, transformers' Llava built over the
imported tensors (:func:`train.mllm_export.as_transformers_llava`), with the pixels checked against the
repository's own ``SigLipImageProcessor`` steps. Recorded in mllm.json's ``import_check``: the largest
absolute logit difference over the answer positions, whether the prompt's token ids are equal, the largest
pixel difference, the tolerance (default 1e-4). A failed check is an error and nothing is written; models
are compared one after the other, so two copies of the weights are never in memory together.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import torch

from .mllm import MLLM_FILE, MLLMError, load_mllm, replace_folder, save_mllm
from .mllm_check import (
    DEFAULT_TOLERANCE,
    ProbeItem,
    ProbeResult,
    default_probe,
    our_side,
    probe_models,
    probe_over_own_tensors,
)
from .transformers_llava import exportable_problem

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def import_mllm(source: str | os.PathLike, out: str | os.PathLike, *, dtype: str = "fp32", vision_config: str | os.PathLike | None = None,
                tolerance: float = DEFAULT_TOLERANCE, probe: ProbeItem | None = None, log=print) -> Path:
    """Read ``source`` through the gate, write it to ``out`` as a project MLLM directory, check it (module
    docstring); returns ``out``. MLLMError (nothing written) when the check fails."""
    from .mllm_layouts import find_layout

    source, out = Path(source), Path(out)
    if dtype not in DTYPES:
        raise MLLMError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    layout = find_layout(source)
    options = {"vision_config": vision_config} if vision_config else {}
    mllm = layout.read(source, dtype=DTYPES[dtype], **options)
    tmp = out.with_name(out.name + ".import")
    shutil.rmtree(tmp, ignore_errors=True)
    save_mllm(mllm, tmp)
    del mllm
    gc.collect()
    probe = probe or default_probe()
    try:
        check = _check(layout.name, source, tmp, probe, tolerance, DTYPES[dtype])
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if check is not None and not check.passed:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MLLMError(f"{source}: the import does not reproduce transformers' model ({json.dumps(check.to_dict())}); nothing was written")
    meta = json.loads((tmp / MLLM_FILE).read_text())
    meta["import_check"] = check.to_dict() if check is not None else {"passed": None, "reason": f"transformers cannot build a {layout.name} model"}
    meta["source"] = {**meta.get("source", {}), "format": layout.name, "path": str(source.resolve()), "dtype": dtype}
    (tmp / MLLM_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    replace_folder(tmp, out)
    log(f"import check: max |logit difference| {meta['import_check'].get('max_logit_difference')} (tolerance {tolerance})")
    return out


def _check(layout: str, source: Path, written: Path, probe: ProbeItem, tolerance: float, dtype: torch.dtype) -> ProbeResult | None:
    """The import check of the written MLLM (read back at fp32) for a source of ``layout``."""
    mllm = load_mllm(written, dtype=torch.float32)
    if layout == "llava-hf":
        ours = our_side(mllm, probe)
        del mllm
        gc.collect()
        return probe_models(ours, source, probe, tolerance=tolerance, dtype=dtype)
    if layout == "llava-next" and not exportable_problem(mllm):
        return probe_over_own_tensors(mllm, probe, tolerance)
    return None
