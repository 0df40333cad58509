"""Per-dimension standardisation statistics of cached features: the linear probes (``probes.linear``,
``probes.logreg``) fit on ``(x - mean) / std`` with the mean and std of the rows being fitted."""
from __future__ import annotations

import torch
from torch import Tensor

# Rows per chunk while accumulating (bounds memory, not results).
ROW_CHUNK = 8192


def feature_moments(x: Tensor, rows: Tensor | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and std (float64 accumulation, returned as float32 on ``device``) of
    ``x[rows]`` (all rows when ``rows`` is None); a std below 1e-6 of the largest is set to 1 (a
    constant dimension is left unscaled instead of divided by ~0)."""
    rows = torch.arange(x.shape[0]) if rows is None else rows
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total)
    for start in range(0, rows.numel(), ROW_CHUNK):
        chunk = x[rows[start : start + ROW_CHUNK]].to(device=device, dtype=torch.float64)
        total += chunk.sum(0)
        total_sq += (chunk * chunk).sum(0)
    n = rows.numel()
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-30), std, torch.ones_like(std))
    return mean.float(), std.float()
