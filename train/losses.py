"""The two objectives of Stage 2 (docs/protocol.md "Training"), on summed answer log-probabilities."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sft_loss(logp: torch.Tensor, n_tokens: torch.Tensor, normaliser: float | torch.Tensor | None = None) -> torch.Tensor:
    """Token-mean negative log-likelihood of the answers: ``-sum(logp) / sum(n_tokens)`` (nats per token).

    ``normaliser`` replaces ``sum(n_tokens)`` when the mean must run over more than this batch (gradient
    accumulation, data-parallel ranks), so that every answer token of a global batch weighs the same.
    """
    total = n_tokens.sum() if normaliser is None else normaliser
    return -logp.sum() / total


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-item DPO loss ``-log sigmoid(beta * ((pc - rc) - (pr - rr)))`` (nats) and TRL's metrics.

    Inputs are summed answer log-probs (B,). With policy == reference every item's loss is ``log 2``.
    Metrics (per item, detached): ``rewards/chosen`` = beta (pc - rc), ``rewards/rejected`` = beta (pr - rr),
    ``rewards/margins`` their difference, ``rewards/accuracies`` 1 where the chosen reward is larger.
    """
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margins = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margins)
    metrics = {
        "rewards/chosen": chosen_reward.detach(),
        "rewards/rejected": rejected_reward.detach(),
        "rewards/margins": margins.detach(),
        "rewards/accuracies": (margins.detach() > 0).float(),
    }
    return loss, metrics
