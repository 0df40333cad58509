"""Where the training signal reaches the image: per-visual-token gradient maps of the SFT and DPO losses
of one MLLM on the same preference items, and their scores (docs/protocol.md section 3).

For an item (image, question, chosen, rejected) the map at a site is the L1 norm over channels of
d(loss)/d(token) for each of the N visual tokens, reshaped to the encoder's grid (h, w). Sites:
``projector`` (the projector's outputs, what the LM sees: the study's map) and ``encoder`` (the
encoder's tokens at the MLLM's visual layer, what the encoder's own training receives). Losses
(the caller passes the training code's own, ``train.losses``, so the maps are of exactly what training
optimises): SFT = the item's token-mean NLL of the chosen answer; DPO =
``-log sigmoid(beta ((pc - rc) - (pr - rr)))`` with the reference's log-probs as constants (the
reference is the frozen Stage-1 MLLM, or the policy itself when none is given). Items do not interact
(each sees only its own image), so the maps of a batch come from one backward pass of the summed
per-item losses.

Scores of a map m >= 0 over N tokens (an all-zero map gets no score and is counted instead, never
normalised into noise): ``inside`` = sum(m * cover) / sum(m), where cover is the fraction of each
token's patch inside the object's region; ``entropy`` = -sum(p log p) / log N with p = m / sum(m)
(1 = spread evenly, 0 = one token); ``gini`` = the Gini coefficient of m (0 = even, -> 1 = one token).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SITES = ("projector", "encoder")
LOSSES = ("sft", "dpo")


@dataclass(frozen=True)
class Objectives:
    """The two Stage-2 losses, as the training code defines them (``train.losses``).

    ``sft(logp, n_tokens)``: token-mean NLL (nats) of summed answer log-probs (1,) over (1,) tokens;
    ``dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=...)``: (per-item loss (B,), metrics).
    """

    sft: Callable[..., Tensor]
    dpo: Callable[..., tuple[Tensor, dict]]


@dataclass
class GradientMaps:
    """``maps[(loss, site)]`` (B, h, w) float32 gradient magnitudes (L1 over channels, loss units per
    unit of activation) and each loss's per-item value (B,) in nats."""

    maps: dict[tuple[str, str], Tensor]
    losses: dict[str, Tensor]


def _token_grads(mllm, encoder_tokens: Tensor, loss_fn) -> tuple[dict[str, Tensor], Tensor]:
    """L1 gradient maps (B, N) at the projector output and the encoder output of ``loss_fn(visual)``,
    which returns per-item losses (B,)."""
    encoder_side = encoder_tokens.detach().requires_grad_(True)
    visual = mllm.projector(encoder_side)
    per_item = loss_fn(visual)
    grad_visual, grad_encoder = torch.autograd.grad(per_item.sum(), [visual, encoder_side])
    return {"projector": grad_visual.abs().sum(-1), "encoder": grad_encoder.abs().sum(-1)}, per_item.detach()


def gradient_maps(
    mllm,
    images: Tensor,
    questions: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    *,
    objectives: Objectives,
    reference=None,
    beta: float = 0.1,
    score_rejected: bool = True,
    item_ids: Sequence[str] | None = None,
) -> GradientMaps:
    """SFT and DPO gradient maps of ``mllm`` (``train.mllm.MLLM``) for a batch of preference items.

    ``objectives``: the SFT and DPO losses (``Objectives(train.losses.sft_loss, train.losses.dpo_loss)``).
    ``reference``: the DPO reference MLLM (frozen; None = the policy itself, whose log-probs then enter
    as constants). ``score_rejected=False`` drops the rejected answer from DPO's margin (both its policy
    and reference terms), leaving ``-log sigmoid(beta (pc - rc))``. Non-finite maps raise
    :class:`probes.gradcam.AttributionError` naming the encoder, the loss, the site and the item
    (``item_ids`` when given).
    """
    sft_loss, dpo_loss = objectives.sft, objectives.dpo
    h, w = mllm.grid
    chosen_batch = mllm.prepare(images, list(questions), list(chosen))
    rejected_batch = mllm.prepare(images, list(questions), list(rejected))
    with torch.no_grad():
        tokens = mllm.encoder_tokens(images)
        ref = reference or mllm
        ref_visual = ref.visual_tokens(images) if reference is not None else mllm.projector(tokens)
        ref_chosen = ref.answer_logprobs(ref.prepare(images, list(questions), list(chosen)) if reference is not None else chosen_batch, ref_visual)[0]
        ref_rejected = ref.answer_logprobs(ref.prepare(images, list(questions), list(rejected)) if reference is not None else rejected_batch, ref_visual)[0]

    def sft(visual: Tensor) -> Tensor:
        logp, n_tokens = mllm.answer_logprobs(chosen_batch, visual)
        return torch.stack([sft_loss(logp[i : i + 1], n_tokens[i : i + 1]) for i in range(len(logp))])

    def dpo(visual: Tensor) -> Tensor:
        policy_chosen, _ = mllm.answer_logprobs(chosen_batch, visual)
        if score_rejected:
            policy_rejected, _ = mllm.answer_logprobs(rejected_batch, visual)
            return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta)[0]
        zero = torch.zeros_like(policy_chosen)
        return dpo_loss(policy_chosen, zero, ref_chosen, zero, beta=beta)[0]

    maps, losses = {}, {}
    for name, fn in (("sft", sft), ("dpo", dpo)):
        grads, losses[name] = _token_grads(mllm, tokens, fn)
        for site, grad in grads.items():
            _check_finite(grad, mllm.encoder.name, name, site, item_ids)
            # Prefix tokens an MLLM keeps (CLS, transformers' ``full``) come first; the grid's h * w tokens last.
            maps[(name, site)] = grad[:, -h * w:].reshape(grad.shape[0], h, w).float().cpu()
    return GradientMaps(maps, {k: v.cpu() for k, v in losses.items()})


def _check_finite(grad: Tensor, encoder: str, loss: str, site: str, item_ids: Sequence[str] | None) -> None:
    """AttributionError naming the first item whose map (a row of ``grad``) is NaN/Inf."""
    from probes.gradcam import AttributionError

    bad = ~torch.isfinite(grad).all(dim=1)
    if bad.any():
        first = int(bad.nonzero()[0])
        which = item_ids[first] if item_ids is not None else f"batch position {first}"
        raise AttributionError(f"{encoder}: {loss} gradient map at the {site} output is NaN/Inf for item {which} "
                               f"({int(bad.sum())} of {len(bad)} in the batch); check the MLLM's weights (inf/NaN) or run at fp32")


# --------------------------------------------------------------------------------------------------
# Scores


@dataclass
class MapScores:
    """Per-item scores (n,) of one set of maps; NaN where the map is all zero (``zero`` is 1 there)."""

    inside: np.ndarray
    entropy: np.ndarray
    gini: np.ndarray
    zero: np.ndarray


def patch_cover(regions: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, h, w): the fraction of each token's patch inside ``regions`` (B, H, W) bool (H, W multiples
    of the grid are exact; otherwise adaptive average pooling)."""
    return F.adaptive_avg_pool2d(regions.float()[:, None], grid)[:, 0]


def map_scores(maps: Tensor, cover: Tensor) -> MapScores:
    """Scores of gradient maps (B, h, w) against the object's token cover (B, h, w) in [0, 1]."""
    flat = maps.double().flatten(1).clamp_min(0.0)
    cover = cover.double().flatten(1)
    total = flat.sum(dim=1)
    zero = total <= 0
    safe = total.clamp_min(1e-300)[:, None]
    p = flat / safe
    inside = (flat * cover).sum(dim=1) / safe[:, 0]
    n = flat.shape[1]
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1) / math.log(n) if n > 1 else torch.zeros_like(total)
    ordered = torch.sort(flat, dim=1).values
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    gini = ((2 * ranks - n - 1) * ordered).sum(dim=1) / (n * safe[:, 0])
    nan = torch.full_like(total, float("nan"))
    as_np = lambda t: torch.where(zero, nan, t).numpy()
    return MapScores(as_np(inside), as_np(entropy), as_np(gini), zero.double().numpy())
