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


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
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
    assert 0.0 < all_closed < 0.05  # all closed: only the stem, the projection shortcuts and the head run


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_closed_block_saves_its_whole_branch(model):
    # Closing every gate of one block saves its gated conv and, since skip execution does not run the branch,
    # the block's first conv too; one gate left open saves only the closed filters.
    macs = gaternet_macs(model)
    site = model.gate_sites[4]
    block = model.backbone.get_submodule(site.name)
    first_conv = sum(m.weight.numel() for n, m in block.named_modules()
                     if isinstance(m, torch.nn.Conv2d) and f'{site.name}.{n}' != site.conv and 'shortcut' not in n)
    assert macs['skippable_branch_macs'][site.name] > 0
    gates = torch.ones(1, model.gate_size)
    gates[0, site.offset:site.offset + site.num_channels] = 0
    used = gaternet_macs(model, gates=gates)['backbone_used']
    saved = macs['gated_conv_macs'][site.name] + macs['skippable_branch_macs'][site.name]
    assert used == macs['backbone'] - saved
    # The branch's other conv (3x3, same output map as the gated one): its weights times the output map size.
    out_hw = macs['gated_conv_macs'][site.name] // model.backbone.get_submodule(site.conv).weight.numel()
    assert macs['skippable_branch_macs'][site.name] >= first_conv * out_hw
    gates[0, site.offset] = 1
    partly = gaternet_macs(model, gates=gates)['backbone_used']
    assert partly == pytest.approx(macs['backbone'] - macs['gated_conv_macs'][site.name] * (1 - 1 / site.num_channels),
                                   abs=1)
    budget = MacBudgetLoss(model, target=0.5)
    assert budget.used_fraction(gates).item() == pytest.approx(partly / macs['backbone'], abs=1e-6)


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_used_fraction_from_rates_matches_binary_gates(model):
    from gaternet_zoo import GateStatistics
    torch.manual_seed(2)
    gates = (torch.rand(8, model.gate_size) > 0.5).float()
    gates[:3, model.gate_sites[1].offset:model.gate_sites[1].offset + model.gate_sites[1].num_channels] = 0
    stats = GateStatistics(model.gate_sites)
    stats.update(gates)
    closed = stats.per_site_closed_fraction()
    assert closed[model.gate_sites[1].name] == pytest.approx(3 / 8)
    budget = MacBudgetLoss(model, target=0.5)
    from_rates = budget.used_fraction_from_rates(stats.firing_rate, [closed[s.name] for s in model.gate_sites])
    assert from_rates == pytest.approx(budget.used_fraction(gates).mean().item(), abs=1e-6)
    report = gaternet_macs(model, gates=stats.firing_rate.unsqueeze(0), branch_closed=closed)
    assert report['backbone_used'] / report['backbone'] == pytest.approx(from_rates, abs=1e-6)


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
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


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_mac_count_leaves_a_training_model_untouched():
    # Counting runs the shortcuts on their own (for the skipped branches): in training mode their norms would
    # update their running statistics, so the count must run in eval mode and restore the mode after.
    torch.manual_seed(3)
    model = gaternet_zoo.create_model('gaternet_resnet20').train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # non-trivial running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gaternet_macs(model)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_model_mac_budget_counts_the_gater_in_full():
    # include_gater: the used share is (gater + backbone used) / dense backbone, so the target is the whole model's
    # cost against the plain backbone; a target the gater alone spends is refused, naming the cheaper gater.
    model = gaternet_zoo.create_model('gaternet_resnet20', gater='cifar_resnet8', gater_input_size=16)
    macs = gaternet_macs(model)
    share = macs['gater'] / macs['backbone']
    budget = MacBudgetLoss(model, target=0.75, include_gater=True)
    backbone_only = MacBudgetLoss(model, target=0.75)
    assert budget.gater_share == pytest.approx(share) and 0.0 < share < 0.2
    gates = (torch.rand(3, model.gate_size, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.testing.assert_close(budget.used_fraction(gates), backbone_only.used_fraction(gates) + share)
    assert budget.used_fraction(torch.ones(1, model.gate_size)).item() == pytest.approx(1.0 + share)
    with pytest.raises(ValueError, match=r'gater alone costs 0\.\d+ of the backbone.*cheaper gater'):
        MacBudgetLoss(model, target=share / 2, include_gater=True)


def test_model_macs_budget_is_a_recipe_choice():
    from gaternet_zoo.training import GateObjective, RecipeError

    model = gaternet_zoo.create_model('gaternet_resnet20', gater='cifar_resnet8', gater_input_size=16)
    objective = GateObjective(model, budget='model_macs', target=0.6, weight=2.0)
    gates = torch.ones(2, model.gate_size)
    expected = 2.0 * (1.0 + objective.model_macs.gater_share - 0.6) ** 2
    assert objective(gates).item() == pytest.approx(expected)
    with pytest.raises(RecipeError, match='gate_budget_target: .*gater alone costs'):
        GateObjective(gaternet_zoo.create_model('gaternet_resnet20'), budget='model_macs', target=0.5)
