"""Branch gates only (issue 26, item 6 preparation): ``GaterNet(branch_gates=True, filter_gates=False)``.

The gater emits one gate per residual branch and nothing else; every filter of an open branch is on. These tests
check the layout, that such a model computes exactly what a model with branch gates computes when all its filter
gates are open (mask and skip mode), the MAC account and budgets, statistics, exports, saving and loading, and the
recipe's route. The models are tiny (a ResNet-8 gater 4-8-16 wide; backbones of a few thousand to a few million
parameters at 16-32 px), as in ``tests/test_branch_gates.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import TINY_GATER_ARGS, assert_skip_equals_mask, build_tiny_gaternet, images
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo import GateStatistics, MacBudgetLoss, UnsupportedPlacementError, export_static, prune_gaternet
from gaternet_zoo.hub import StateDictMismatchError
from gaternet_zoo.layers import GateSlot
from gaternet_zoo.utils import gaternet_macs

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY = TINY_GATER_ARGS
#: (backbone, backbone_args, input side): the native CIFAR ResNet, timm's ResNet, and an EfficientNet-style family
#: whose blocks that change width or stride have no shortcut (so no branch gate, so no gate at all here).
FAMILIES = {
    'native': ('cifar_resnet8', TINY, 16),
    'timm_resnet': ('test_resnet', {}, 32),
    'timm_efficientnet': ('mobilenetv3_small_050', {}, 32),
}


def _pair(family: str) -> tuple[nn.Module, nn.Module, int]:
    """A model with branch gates only and one with filter and branch gates, with the same backbone and gater
    weights (all but the gater's last layer, whose width differs), and the input side."""
    backbone, args, size = FAMILIES[family]
    only = build_tiny_gaternet(backbone, args, branch_gates=True, filter_gates=False)
    both = build_tiny_gaternet(backbone, args, branch_gates=True)
    shared = {k: v for k, v in both.state_dict().items() if not k.startswith('gater.fc2.')}
    only.load_state_dict({**only.state_dict(), **shared}, strict=True)
    return only, both, size


@pytest.fixture(scope='module', params=list(FAMILIES))
def pair(request: pytest.FixtureRequest) -> tuple[nn.Module, nn.Module, int]:
    return _pair(request.param)


def _with_open_filters(both: nn.Module, branch: torch.Tensor) -> torch.Tensor:
    """``both``'s gate vector with every filter gate open and ``branch`` as its branch gates."""
    return torch.cat([torch.ones(branch.shape[0], both.num_filter_gates), branch], 1)


def _random_branch_gates(model: nn.Module, batch: int, seed: int = 1) -> torch.Tensor:
    return (torch.rand(batch, model.gate_size, generator=torch.Generator().manual_seed(seed)) < 0.5).float()


# ------------------------------------------------------------------------------------------- layout, options


def test_gate_vector_holds_the_branch_gates_only(pair) -> None:
    only, both, _ = pair
    branch_sites = [s for s in both.gate_sites if s.branch_offset is not None]
    # The sites are the residual ones, in the same order, with the same filters; a block without a shortcut has no
    # gate at all, so it is not a gate site and has no gate slot.
    assert [(s.name, s.conv, s.num_channels) for s in only.gate_sites] == \
        [(s.name, s.conv, s.num_channels) for s in branch_sites]
    assert only.gate_size == only.num_branch_gates == len(branch_sites) == both.num_branch_gates
    assert only.num_filter_gates == 0 and only.filter_gates is False and both.filter_gates is True
    assert only.num_filters == sum(s.num_channels for s in branch_sites)
    assert only.gater.fc2.weight.shape == (only.gate_size, both.gater.fc2.weight.shape[1])
    assert [s.branch_offset for s in only.gate_sites] == list(range(only.gate_size))
    assert [s.offset for s in only.gate_sites] == [sum(t.num_channels for t in only.gate_sites[:i])
                                                   for i in range(len(only.gate_sites))]
    assert all(not s.filter_gates for s in only.gate_sites)
    slots = [m for m in only.backbone.modules() if isinstance(m, GateSlot)]
    assert sorted(m.name for m in slots) == sorted(s.name for s in only.gate_sites)
    gates = _random_branch_gates(only, 3)
    split = only.split_gates(gates)
    assert all(torch.equal(split[s.name], torch.ones(3, s.num_channels)) for s in only.gate_sites)
    branch = only.split_branch_gates(gates)
    assert all(torch.equal(branch[s.name], gates[:, s.branch_offset]) for s in only.gate_sites)
    effective = only.effective_gates(gates)
    assert effective.shape == (3, only.num_filters)
    columns = [c for t in branch_sites for c in range(t.offset, t.offset + t.num_channels)]
    assert torch.equal(effective, both.effective_gates(_with_open_filters(both, gates))[:, columns])


def test_efficientnet_blocks_without_a_shortcut_are_not_gate_sites() -> None:
    only, both, _ = _pair('timm_efficientnet')
    without = [s.name for s in both.gate_sites if s.branch_offset is None]
    assert without and not set(without) & {s.name for s in only.gate_sites}


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match='filter_gates=False needs branch_gates=True'):
        gz.create_model('gaternet_resnet20', filter_gates=False)
    with pytest.raises(TypeError, match='filter_gates'):
        gz.create_model('gaternet_resnet20', branch_gates=True, filter_gates='no')
    with pytest.raises(UnsupportedPlacementError, match='filter_gates=False cannot be combined with gate_placement'):
        gz.create_model('gaternet_resnet20', branch_gates=True, filter_gates=False, gate_placement='inner')
    with pytest.raises(ValueError, match='branch_gates=True needs residual blocks'):
        gz.create_model('gaternet', backbone='test_efficientnet', gater='cifar_resnet8', gater_args=TINY,
                        branch_gates=True, filter_gates=False)


def test_default_filter_gates_is_not_recorded_so_published_configs_do_not_change() -> None:
    """filter_gates=True is recorded only when it differs from the default, so published configs do not change."""
    for kwargs in ({}, {'branch_gates': True}, {'filter_gates': True}):
        assert 'filter_gates' not in gz.create_model('gaternet_resnet20', **kwargs)._hub_mixin_config
    only = gz.create_model('gaternet_resnet20', branch_gates=True, filter_gates=False)
    assert only._hub_mixin_config['filter_gates'] is False and only._hub_mixin_config['branch_gates'] is True
    assert only.gate_size == 9 and only.num_filters == 336


# ------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize('batch', [1, 3])
def test_logits_equal_a_branch_gated_model_with_every_filter_open_in_mask_and_skip_mode(pair, batch: int) -> None:
    only, both, size = pair
    x = images(batch, size)
    random = _random_branch_gates(only, batch)
    random[:, ::2] = 0  # every other branch closed for the whole batch: skip mode does not run it
    cases = {'random': random, 'closed': torch.zeros(batch, only.gate_size),
             'open': torch.ones(batch, only.gate_size)}
    masked = assert_skip_equals_mask(only, x, cases, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        for k, g in cases.items():
            torch.testing.assert_close(masked[k], both(x, gates=_with_open_filters(both, g)), rtol=1e-6, atol=1e-6,
                                       msg=k)
        _, own = only(x, return_gates=True)
    assert own.shape == (batch, only.gate_size) and set(own.unique().tolist()) <= {0.0, 1.0}


def test_skip_mode_does_not_run_a_closed_branch(pair) -> None:
    only, _, size = pair
    site = only.gate_sites[-1]
    calls = []
    handle = only.backbone.get_submodule(site.conv).register_forward_pre_hook(lambda *args: calls.append(1))
    gates = torch.ones(2, only.gate_size)
    gates[:, site.branch_offset] = 0
    try:
        only.set_execution('skip')
        with torch.no_grad():
            only(images(2, size), gates=gates)
            assert calls == []
            gates[1, site.branch_offset] = 1
            only(images(2, size), gates=gates)
            assert calls == [1]
    finally:
        only.set_execution('mask')
        handle.remove()


# ------------------------------------------------------------------------------------------- MACs, budgets


def test_mac_account_counts_a_closed_branch_as_its_whole_branch(pair) -> None:
    only, both, size = pair
    input_size = (3, size, size)
    macs = gaternet_macs(only, input_size)
    assert macs['backbone'] == gaternet_macs(both, input_size)['backbone']
    budget = MacBudgetLoss(only, target=0.5, input_size=input_size)
    for site in only.gate_sites:
        gates = torch.ones(1, only.gate_size)
        gates[0, site.branch_offset] = 0
        whole = macs['gateable_macs'][site.name] + macs['skippable_branch_macs'][site.name]
        used = gaternet_macs(only, input_size, gates)['backbone_used']
        assert used == macs['backbone'] - whole, site.name
        assert budget.used_fraction(gates).item() == pytest.approx(used / macs['backbone'], abs=1e-6)
    gates = _random_branch_gates(only, 5)
    per_sample = [gaternet_macs(only, input_size, g[None])['backbone_used'] for g in gates]
    assert per_sample == [gaternet_macs(both, input_size, _with_open_filters(both, g[None]))['backbone_used']
                          for g in gates]
    torch.testing.assert_close(budget.used_fraction(gates), torch.tensor(per_sample) / macs['backbone'],
                               rtol=0, atol=1e-6)
    assert gaternet_macs(only, input_size, torch.ones(1, only.gate_size))['backbone_used'] == macs['backbone']


def test_budget_gradient_weighs_each_branch_gate_by_its_whole_branch() -> None:
    only, _, size = _pair('native')
    macs = gaternet_macs(only, (3, size, size))
    budget = MacBudgetLoss(only, target=0.5, input_size=(3, size, size))
    gates = torch.ones(1, only.gate_size, requires_grad=True)
    budget.used_fraction(gates).sum().backward()
    expected = [(macs['gateable_macs'][s.name] + macs['skippable_branch_macs'][s.name]) / macs['backbone']
                for s in only.gate_sites]
    torch.testing.assert_close(gates.grad[0], torch.tensor(expected), rtol=1e-5, atol=0)


def test_budget_with_the_gater_included() -> None:
    """include_gater adds the gater's share, in full, to every sample's used share."""
    only = gz.create_model('gaternet_resnet20', branch_gates=True, filter_gates=False, gater='cifar_resnet8',
                           gater_input_size=16)
    macs = gaternet_macs(only)
    plain = MacBudgetLoss(only, target=0.5)
    whole = MacBudgetLoss(only, target=0.5, include_gater=True)
    share = macs['gater'] / macs['backbone']
    assert whole.gater_share == pytest.approx(share) and 0 < share < 0.5
    gates = _random_branch_gates(only, 4)
    torch.testing.assert_close(whole.used_fraction(gates), plain.used_fraction(gates) + share, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match='cannot be met'):
        MacBudgetLoss(only, target=share / 2, include_gater=True)


def test_statistics_and_the_logged_mac_share() -> None:
    """Per-site figures are the branch gates'; the evaluation route to the MAC share gives the per-sample one."""
    from gaternet_zoo.analysis import site_table
    from gaternet_zoo.training import GateObjective

    only, _, size = _pair('native')
    gates = _random_branch_gates(only, 8, seed=7)
    gates[:, 0] = 1  # one branch always open, one always closed
    gates[:, 1] = 0
    stats = GateStatistics(only.gate_sites)
    stats.update(gates)
    summary = stats.summary()
    rate = gates.mean(0)
    assert summary['gate_size'] == only.gate_size and summary['branch_gates'] == only.gate_size
    assert summary['filter_gates'] == stats.num_filter_gates == 0 and stats.num_filters == only.num_filters
    assert summary['always_on'] == 1 and summary['always_off'] == 1
    assert summary['always_on'] + summary['always_off'] + summary['input_dependent'] == only.gate_size
    assert summary['mean_open_fraction'] == pytest.approx(gates.mean().item())
    for key in ('per_site_open_fraction', 'per_site_branch_open_fraction', 'per_site_effective_open_fraction'):
        assert summary[key] == pytest.approx({s.name: rate[s.branch_offset].item() for s in only.gate_sites}), key
    assert summary['per_site_closed_fraction'] == pytest.approx(
        {s.name: 1 - rate[s.branch_offset].item() for s in only.gate_sites})
    rows = site_table(stats)
    assert [(r['always_on'], r['always_off'], r['input_dependent']) for r in rows[:2]] == [(1, 0, 0), (0, 1, 0)]
    objective = GateObjective(only, budget='macs', target=0.5)
    metrics = {'gate_open_fraction_per_block': summary['per_site_open_fraction'],
               'gate_closed_fraction_per_block': summary['per_site_closed_fraction'],
               'gate_effective_open_fraction_per_block': summary['per_site_effective_open_fraction']}
    assert objective.epoch_fields(metrics)['macs_used_fraction'] == pytest.approx(
        objective.macs.used_fraction(gates).mean().item(), abs=1e-6)
    from_rates = gaternet_macs(only, (3, size, size), stats.effective_firing_rate.unsqueeze(0),
                               branch_closed=stats.per_site_closed_fraction())['backbone_used']
    per_sample = gaternet_macs(only, (3, size, size), gates)['backbone_used']
    assert from_rates == pytest.approx(per_sample, abs=1)
    with pytest.raises(ValueError, match='one rate per gated filter'):
        objective.macs.used_fraction_from_rates(stats.firing_rate, [0.0] * len(only.gate_sites))


@pytest.mark.parametrize('budget', ['rate', 'macs', 'model_macs', 'l1'])
def test_training_step_with_each_gate_objective_reaches_the_gater(budget: str) -> None:
    """As the recipe builds it (``model_args`` in a config file), then one optimizer step with the gate term."""
    from gaternet_zoo.training import GateObjective, TrainConfig

    config = TrainConfig.from_dict({'model': 'gaternet_resnet20', 'model_args': {
        'branch_gates': True, 'filter_gates': False, 'gater': 'cifar_resnet8', 'gater_input_size': 16}})
    torch.manual_seed(0)
    net = gz.create_model(config.model, num_classes=config.num_classes, **config.model_args)  # as recipes/train.py
    assert net.filter_gates is False and net.gate_size == 9
    objective = GateObjective(net, l1=1.0 if budget == 'l1' else 0.0, budget='none' if budget == 'l1' else budget,
                              target=0.5, weight=1.0)
    net.train()
    logits, gates = net(images(4, 32), return_gates=True)
    assert gates.shape == (4, 9)
    term = objective(gates)
    if budget == 'l1':  # the paper's L1 over the gate vector: here the branch gates' mean
        assert term.item() == pytest.approx(gates.mean().item(), rel=1e-6)
    elif budget == 'rate':  # each site's effective rate is its branch gate's
        assert term.item() == pytest.approx((gates.mean(0) - 0.5).pow(2).mean().item(), rel=1e-5)
    else:
        macs = objective.macs if budget == 'macs' else objective.model_macs
        assert term.item() == pytest.approx((macs.used_fraction(gates).mean().item() - 0.5) ** 2, rel=1e-5)
    grad, = torch.autograd.grad(term, net.gater.fc2.weight, retain_graph=True)
    assert (grad.abs().sum(1) > 0).all()  # the gate term alone reaches every branch gate's logit
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.gater.fc2.weight.detach().clone()
    (nn.functional.cross_entropy(logits, torch.arange(4)) + term).backward()
    optimizer.step()
    assert not torch.equal(net.gater.fc2.weight, before)


# ------------------------------------------------------------------------------------------- reports


def test_evaluation_report_and_model_card(tmp_path: Path) -> None:
    from gaternet_zoo._model_card import render_model_card
    from gaternet_zoo.analysis import plot_class_gate_heatmap
    from gaternet_zoo.evaluation import evaluate_model, format_report

    only, _, _ = _pair('native')
    report, result, _, _ = evaluate_model(only, 'builtin:cifar10-subset', max_samples=16, batch_size=16,
                                          collect_class_stats=True)
    assert report['gate_size'] == report['branch_gates'] == 3 and report['filter_gates'] == 0
    assert report['always_on'] + report['always_off'] + report['input_dependent'] == 3
    assert 0 < report['macs_backbone_used'] <= report['macs_backbone']
    assert 'none (filter_gates=False)' in format_report(report)
    matrix = result.gate_stats.class_gate_matrix()
    assert matrix.shape == (10, 3)
    assert plot_class_gate_heatmap(matrix, [str(i) for i in range(10)], only.gate_sites, tmp_path / 'h.png').exists()
    card = str(render_model_card(only))
    assert 'branch gates only' in card and 'one input-dependent binary gate per residual branch' in card


# ------------------------------------------------------------------------------------------- save, load, export


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    only, _, size = _pair('timm_resnet')
    x = images(2, size)
    with torch.no_grad():
        expected = only(x)
    only.save_pretrained(tmp_path / 'saved')
    config = json.loads((tmp_path / 'saved' / 'config.json').read_text())
    assert config['model_args']['filter_gates'] is False and config['model_args']['branch_gates'] is True
    for loaded in (gz.GaterNet.from_pretrained(tmp_path / 'saved'),
                   gz.create_model(f'local-dir:{tmp_path / "saved"}')):
        loaded.eval()
        assert loaded.filter_gates is False and loaded.gate_site_table() == only.gate_site_table()
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)
    with pytest.raises(StateDictMismatchError, match='build the model with branch_gates=True, filter_gates=False'):
        gz.create_model(f'local-dir:{tmp_path / "saved"}', filter_gates=True)


def test_a_gater_head_of_another_width_names_the_options_to_build() -> None:
    only, both, _ = _pair('native')
    plain = build_tiny_gaternet(*FAMILIES['native'][:2])
    with pytest.raises(RuntimeError, match='build the model with branch_gates=True, filter_gates=False to load'):
        both.load_state_dict(only.state_dict())
    with pytest.raises(RuntimeError, match='build the model with branch_gates=True, filter_gates=False to load'):
        plain.load_state_dict(only.state_dict())
    with pytest.raises(RuntimeError, match='build the model with branch_gates=True, filter_gates=True to load'):
        only.load_state_dict(both.state_dict())
    with pytest.raises(RuntimeError, match='build the model with branch_gates=False, filter_gates=True to load'):
        only.load_state_dict(plain.state_dict())


def test_always_closed_branches_prune_and_export_as_their_shortcut() -> None:
    """A branch gate closed for every calibration image: the pruned export keeps one zeroed filter there, the
    static export drops the branch; both give the GaterNet's logits, and an input-dependent branch is refused."""
    only, _, size = _pair('timm_resnet')
    with torch.no_grad():
        only.gater.fc2.bias.fill_(50.0)
        only.gater.fc2.bias[[1, 3]] = -50.0
    closed = [only.gate_sites[1], only.gate_sites[3]]
    x = images(4, size)
    stats = GateStatistics(only.gate_sites)
    with torch.no_grad():
        stats.update(only.forward_gates(x))
        expected = only(x)
    pruned = prune_gaternet(only, stats)
    assert pruned.pruned_filters == {s.name: [0] for s in closed}
    assert pruned.pretrained_cfg['pruning']['filters_gated'] == only.num_filters
    static = export_static(only, stats)
    info = static.pretrained_cfg['static_export']
    assert info['exact'] and info['branches_dropped'] == 2 and info['filter_gates'] == 0
    assert sorted(static.dropped_branches) == sorted(s.name for s in closed)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(static(x), expected, rtol=1e-5, atol=1e-5)
    varying = GateStatistics(only.gate_sites)
    gates = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # the third branch opens for one image
    varying.update(gates)
    with pytest.raises(gz.InputDependentGatesError, match=f'{only.gate_sites[2].num_channels} of the '):
        export_static(only, varying)
