"""Resumable training state: written atomically, read with ``weights_only=True`` (no code from files)."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Every random generator the loop may touch: Python's, torch's CPU and (if present) CUDA ones."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(item if not isinstance(item, list) else tuple(item) for item in state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``folder/state.pt`` through a temp file and a rename (a kill leaves the old one)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(folder: Path) -> dict[str, Any] | None:
    """The saved state, or ``None`` when there is none. Refuses anything but tensors and plain data."""
    path = folder / STATE_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files raise many types
        raise RuntimeError(f"{path}: unreadable training state ({type(err).__name__}: {err}); delete it to restart the stage from the beginning") from None
