import math

import pytest
import torch

from train.losses import dpo_loss, sft_loss


def test_dpo_loss_matches_a_hand_computed_example():
    pc, pr, rc, rr = torch.tensor([-2.0]), torch.tensor([-5.0]), torch.tensor([-3.0]), torch.tensor([-4.0])
    loss, metrics = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # margin = 0.1 * ((-2 + 3) - (-5 + 4)) = 0.2 ; loss = -log sigmoid(0.2) = log(1 + e^-0.2)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.1)
    assert metrics["rewards/margins"].item() == pytest.approx(0.2)
    assert metrics["rewards/accuracies"].item() == 1.0


def test_dpo_loss_is_log2_when_policy_equals_reference():
    logp = torch.randn(5)
    other = torch.randn(5)
    loss, metrics = dpo_loss(logp, other, logp, other)
    assert torch.allclose(loss, torch.full((5,), math.log(2.0)))
    assert metrics["rewards/accuracies"].sum() == 0


def test_sft_loss_is_the_token_mean_and_takes_a_global_normaliser():
    logp, n = torch.tensor([-4.0, -2.0]), torch.tensor([2, 1])
    assert sft_loss(logp, n).item() == pytest.approx(2.0)
    assert sft_loss(logp, n, normaliser=6.0).item() == pytest.approx(1.0)
