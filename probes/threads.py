"""How many CPU threads small attribution work should use.

Per-batch work of demo-sized models (a 64 px 4-block ViT, a tiny Qwen2) is many small matmuls; on CPU,
OpenMP threads then mostly wait on each other, and on shared cores each wait costs milliseconds.
Measured on the 2-core development machine under load from other jobs (load average 10-13): Grad-CAM of
100 images at 2 blocks ran at 13-15 images/s on 2 threads and 57-80 on 1; SFT+DPO gradient maps of 16
items at 1.5-3.4 items/s on 2 threads and 24-25 on 1. Models above ``SMALL_MODEL_PARAMETERS`` keep
every thread (their matmuls are large enough to share).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

SMALL_MODEL_PARAMETERS = 20_000_000


@contextlib.contextmanager
def threads_for(*models: nn.Module, device: str | torch.device = "cpu") -> Iterator[None]:
    """One CPU thread while the ``models`` together have fewer than ``SMALL_MODEL_PARAMETERS``
    parameters (and the work runs on the CPU); no change otherwise."""
    small = torch.device(device).type == "cpu" and sum(p.numel() for m in models for p in m.parameters()) < SMALL_MODEL_PARAMETERS
    previous = torch.get_num_threads()
    if not small or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
