"""The demo lineage's ``original`` encoder: trained once by ``train.vit_pretrain``, shipped in the package.

The original is not what the study varies: it is the fixed starting point, the same in every run of the
recipe. So it is trained once, long enough to be a good encoder (``python -m train demo --original-only``),
and committed as ``train/assets/demo-original.safetensors`` with a JSON sidecar that holds its recipe
hash. ``make demo`` copies it into the lineage while that hash equals this code's recipe, and otherwise
retrains it and says why in one line (``tests/train/test_original.py`` fails first, naming the command).

The recipe hash covers the settings (``ORIGINAL``), the source of the code that decides the weights
(pretraining, the architecture, the shapes world) and the torch / timm versions.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from .vit_pretrain import VitPretrainConfig

# 60 epochs over 4000 images: 10 epochs gave the demo's shapes linear probe 30.5 / 35.0 top-1 (cls / mean pooling);
# trained once and shipped, the original can afford the long schedule.
ORIGINAL = VitPretrainConfig(epochs=60)
ASSETS = Path(__file__).parent / "assets"
SHIPPED = ASSETS / "demo-original.safetensors"
SIDECAR = ASSETS / "demo-original.json"
REGENERATE = "python -m train demo --original-only"
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
# The files whose source decides the original's weights (paths from the repository root).
RECIPE_SOURCES = ("train/vit_pretrain.py", "encoders/families/conv_stem_vit.py", "imagesets/shapes.py")


def original_recipe() -> dict[str, Any]:
    """Everything that decides the original's weights, as plain data (the hash is over it)."""
    import timm
    import torch

    sources = {name: hashlib.sha256((REPOSITORY_ROOT / name).read_bytes()).hexdigest()[:16] for name in RECIPE_SOURCES}
    return {"settings": ORIGINAL.to_dict(), "sources": sources, "packages": {"torch": torch.__version__.split("+")[0], "timm": timm.__version__}}


def original_recipe_hash() -> str:
    return hashlib.sha256(json.dumps(original_recipe(), sort_keys=True).encode()).hexdigest()[:16]


def shipped_recipe_hash() -> str | None:
    """The recipe hash the shipped original was trained under (None when there is no shipped one)."""
    if not (SHIPPED.is_file() and SIDECAR.is_file()):
        return None
    return json.loads(SIDECAR.read_text()).get("recipe_hash")


def original_is_shipped() -> bool:
    """Whether the shipped original was trained under this code's recipe (the demo copies it, trains nothing)."""
    return shipped_recipe_hash() == original_recipe_hash()


def train_original(out_dir: str | os.PathLike = ASSETS, log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Train the original by ``ORIGINAL`` into ``out_dir`` (``demo-original.safetensors`` + ``.json``); returns the weights."""
    from .vit_pretrain import pretrain_vit

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    weights, accuracy = pretrain_vit(out_dir / SHIPPED.name, ORIGINAL, log=log, progress=progress)
    sidecar = {"recipe_hash": original_recipe_hash(), "recipe": original_recipe(), "val_accuracy": accuracy, "seconds": round(time.perf_counter() - began, 1),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "made_by": REGENERATE}
    (out_dir / SIDECAR.name).write_text(json.dumps(sidecar, indent=2) + "\n")
    return weights


def place_original(target: Path, log: Callable[[str], None] = print, progress: bool = True) -> tuple[dict[str, float], str]:
    """Put the original at ``target``: the shipped one while its recipe hash is this code's, else trained anew.
    Returns its validation accuracies (%) and where it came from ("shipped" or "trained")."""
    wanted, shipped = original_recipe_hash(), shipped_recipe_hash()
    if original_is_shipped():
        shutil.copyfile(SHIPPED, target)
        made = json.loads(SIDECAR.read_text())
        log(f"original encoder: the shipped one ({SHIPPED.name}, recipe {wanted}, trained in {made['seconds']:.0f} s on {made['machine']})")
        return made["val_accuracy"], "shipped"
    why = "there is no shipped original" if shipped is None else f"the shipped original's recipe {shipped} is not this code's {wanted}"
    log(f"original encoder: training it ({why}; `{REGENERATE}` regenerates the shipped file)")
    from .vit_pretrain import pretrain_vit

    return pretrain_vit(target, ORIGINAL, log=log, progress=progress)[1], "trained"
