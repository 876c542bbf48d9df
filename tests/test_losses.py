"""Gate losses: the L1 term, the per-site target rate and the MAC budget agree with hand-computed values."""
from __future__ import annotations

import pytest
import torch

import gaternet_zoo
from gaternet_zoo import GateSite, MacBudgetLoss, gate_l1_loss, gate_target_rate_loss
from gaternet_zoo.utils import gaternet_macs


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return gaternet_zoo.create_model('gaternet_resnet20').eval()


def test_l1_is_mean_open_fraction():
    gates = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    assert gate_l1_loss(gates, weight=2.0).item() == pytest.approx(2.0 * (0.75 + 0.25) / 2)


def test_target_rate_per_site():
    sites = (GateSite('a', 2, 0), GateSite('b', 2, 2))
    gates = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # site a: 0.75 open, site b: 0.0
    loss = gate_target_rate_loss(gates, 0.5, sites)
    assert loss.item() == pytest.approx(((0.75 - 0.5) ** 2 + (0.0 - 0.5) ** 2) / 2)
    # Without sites all gates count as one site: 0.375 open.
    assert gate_target_rate_loss(gates, 0.5).item() == pytest.approx((0.375 - 0.5) ** 2)


def test_target_rate_rejects_bad_target():
    with pytest.raises(ValueError, match='target'):
        gate_target_rate_loss(torch.ones(1, 4), 1.5)


def test_mac_budget_matches_gaternet_macs(model):
    torch.manual_seed(1)
    gates = (torch.rand(6, model.gate_size) > 0.4).float()
    budget = MacBudgetLoss(model, target=0.5)
    macs = gaternet_macs(model, gates=gates)
    # The loss's used fraction is the analytic figure the model card reports.
    assert budget.used_fraction(gates).mean().item() == pytest.approx(macs['backbone_used'] / macs['backbone'],
                                                                     abs=1e-6)
    assert budget.used_fraction(torch.ones(2, model.gate_size)).tolist() == pytest.approx([1.0, 1.0])
    all_closed = budget.used_fraction(torch.zeros(1, model.gate_size)).item()
    assert all_closed == pytest.approx(1.0 - budget.gateable_macs / budget.dense_macs)
    assert 0.0 < all_closed < 1.0  # the stem, shortcuts and the first conv of each block are never gated


def test_mac_budget_gradient_reaches_gater(model):
    budget = MacBudgetLoss(model, target=0.3, weight=5.0)
    model.train()
    try:
        _, gates = model.forward_with_gates(torch.randn(4, 3, 32, 32))
        loss = budget(gates)
        loss.backward()
    finally:
        model.eval()
    grad = model.gater.fc2.weight.grad
    assert loss.item() > 0
    assert grad is not None and grad.abs().sum() > 0
    assert not list(budget.state_dict())
