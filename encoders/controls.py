"""Controls: encoders whose answer to "does it localise worse?" is known before anything is measured.

``token_shuffle`` (the positive control): the original encoder with its patch tokens' spatial order
shuffled by a fixed permutation right after the position embedding. Attention does not care about token
order once the position embeddings are added, so every token computes exactly what it computed before,
pooled features included; only *where* each token sits on the patch grid is scrambled. Classification is
unchanged, and every score that maps tokens back to image positions (segmentation, Grad-CAM, gradient
maps) must come out worse. A suite that does not flag it cannot see localisation.

A control is part of the checkpoint: the spec's options carry ``control = {"kind": ..., "seed": ...}``
and the permutation is a buffer of the model (``patch_drop.order``), so the control's weights hash, and
with it every cache entry and result row, differs from the original's.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .base import Encoder, weights_hash

CONTROL_KEY = "control"
KINDS = ("token_shuffle",)


class TokenShuffle(nn.Module):
    """Reorders the patch tokens (after ``num_prefix`` prefix tokens) of (B, P + N, D) by ``order``."""

    def __init__(self, num_patches: int, num_prefix: int, seed: int = 0) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        order = torch.randperm(num_patches, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("order", order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, patches = x[:, : self.num_prefix], x[:, self.num_prefix :]
        return torch.cat([prefix, patches[:, self.order]], dim=1)


def install_control(model: nn.Module, control: Mapping[str, Any]) -> None:
    """Put the control ``{"kind": "token_shuffle", "seed": s}`` into a timm VisionTransformer (its
    ``patch_drop`` slot, which runs right after the position embedding in every forward path)."""
    kind = control.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown control {kind!r}; known: {', '.join(KINDS)}")
    if not isinstance(getattr(model, "patch_drop", None), nn.Identity) or not hasattr(model, "patch_embed"):
        raise ValueError("the token_shuffle control needs a timm VisionTransformer (an identity patch_drop after its position embedding)")
    num_patches = int(model.patch_embed.num_patches)
    num_prefix = int(getattr(model, "num_prefix_tokens", 0))
    model.patch_drop = TokenShuffle(num_patches, num_prefix, int(control.get("seed", 0)))


def shuffle_tokens(encoder: Encoder, seed: int = 0) -> None:
    """Turn a loaded timm ``encoder`` into its token_shuffle control in place: the permutation installed,
    the spec's options and the weights hash updated (the permutation is a buffer, so a new identity).
    ``encoders.loader.make_token_shuffled`` writes such a control as a checkpoint file."""
    if encoder.family != "timm":
        raise ValueError(f"{encoder.name}: the token_shuffle control is built for timm ViTs; this encoder is {encoder.family}:{encoder.arch}")
    control = {"kind": "token_shuffle", "seed": seed}
    install_control(encoder.model, control)
    encoder.options = {**encoder.options, CONTROL_KEY: control}
    encoder.weights_hash = weights_hash(encoder.model.state_dict())
