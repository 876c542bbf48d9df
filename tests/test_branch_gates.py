"""Branch gates (issue 26, items 1 and 4): one gate per residual branch beside the filter gates.

``GaterNet(branch_gates=True)`` emits, after the filter gates, one gate per site whose block adds its branch to a
shortcut the plugin knows; a closed branch gate makes the block its shortcut, skip mode does not run the branch,
and the MAC account counts the whole branch as saved. Every model here is tiny (a few thousand to a few million
parameters at 16-32 px, with a 4-8-16 wide ResNet-8 gater), so each test runs well under a second on an idle core.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders import SHORTCUT_FAMILIES, TINY_GATER_ARGS, assert_skip_equals_mask, build_tiny_gaternet, images
from safetensors.torch import load_file
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo import GateStatistics, MacBudgetLoss
from gaternet_zoo._plugins import get_plugin
from gaternet_zoo.hub import StateDictMismatchError
from gaternet_zoo.utils import gaternet_macs

pytestmark = pytest.mark.usefixtures('one_torch_thread')

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_GATER_ARGS
FAMILIES = SHORTCUT_FAMILIES


def _build(backbone: str, backbone_args: dict, branch_gates: bool = True) -> nn.Module:
    return build_tiny_gaternet(backbone, backbone_args, branch_gates=branch_gates)


@pytest.fixture(scope='module', params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[nn.Module, int]:
    backbone, args, size = FAMILIES[request.param]
    return _build(backbone, args), size




def _branch_sites(model: nn.Module) -> list:
    return [s for s in model.gate_sites if s.branch_offset is not None]


def _first_branch_conv(block: nn.Module) -> nn.Module:
    """The first conv of the block's branch (not of its shortcut): it runs exactly when the branch runs."""
    for name, m in block.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not name.startswith(('shortcut', 'downsample')):
            return m
    raise AssertionError(f'no branch conv in {type(block).__name__}')


# ------------------------------------------------------------------------------------------- default off


def test_default_off_leaves_the_model_as_before() -> None:
    """branch_gates=False is the default: 336 gates, timm's keys, the published weights load strictly and agree."""
    default = gz.create_model('gaternet_resnet20').eval()
    off = gz.create_model('gaternet_resnet20', branch_gates=False).eval()
    on = gz.create_model('gaternet_resnet20', branch_gates=True).eval()
    assert default.branch_gates is False and default.gate_size == default.num_filter_gates == 336
    assert default.num_branch_gates == 0 and all(s.branch_offset is None for s in default.gate_sites)
    assert all(row['branch_gate'] is None for row in default.gate_site_table())
    published = load_file(REPO / 'weights' / 'gaternet_resnet20.cifar10' / 'model.safetensors')
    assert list(default.state_dict()) == list(off.state_dict()) == list(on.state_dict())
    assert set(published) == set(default.state_dict())
    default.load_state_dict(published, strict=True)
    off.load_state_dict(published, strict=True)
    x = images(2, 32)
    with torch.no_grad():
        assert torch.equal(default(x), off(x))
    # With branch gates only the gater's last layer is wider: one row per residual block (9 in ResNet-20).
    assert on.gate_size == 336 + 9 and on.gater.fc2.weight.shape == (345, 8)
    assert {k: v.shape for k, v in on.state_dict().items() if not k.startswith('gater.fc2')} == \
        {k: v.shape for k, v in off.state_dict().items() if not k.startswith('gater.fc2')}


def test_a_checkpoint_without_branch_gates_does_not_load_into_a_model_with_them() -> None:
    on = _build(*FAMILIES['native_basic'][:2])
    off = _build(*FAMILIES['native_basic'][:2], branch_gates=False)
    with pytest.raises(RuntimeError, match='build the model with branch_gates=False'):
        on.load_state_dict(off.state_dict())
    with pytest.raises(RuntimeError, match='build the model with branch_gates=True'):
        off.load_state_dict(on.state_dict())


# ------------------------------------------------------------------------------------------- layout


def test_gate_layout_is_filter_gates_then_one_branch_gate_per_residual_site(family) -> None:
    model, _ = family
    plugin = get_plugin(model.plugin_name)
    assert model.num_filter_gates == sum(s.num_channels for s in model.gate_sites)
    residual = [s for s in model.gate_sites if plugin.has_shortcut(model.backbone.get_submodule(s.name))]
    assert _branch_sites(model) == residual and residual
    assert [s.branch_offset for s in residual] == list(range(model.num_filter_gates, model.gate_size))
    n = model.gate_size
    gates = torch.arange(n, dtype=torch.float64).unsqueeze(0) / n  # each gate's value says where it is
    assert {k: round(float(v) * n) for k, v in model.split_branch_gates(gates).items()} == \
        {s.name: s.branch_offset for s in residual}
    assert {k: v.shape[1] for k, v in model.split_gates(gates).items()} == \
        {s.name: s.num_channels for s in model.gate_sites}
    assert model.effective_gates(torch.ones(2, model.gate_size)).shape == (2, model.num_filter_gates)


def test_sites_without_a_skip_get_no_branch_gate() -> None:
    model = _build(*FAMILIES['timm_efficientnet'][:2])
    without = [s for s in model.gate_sites if not model.backbone.get_submodule(s.name).has_skip]
    assert without and all(s.branch_offset is None for s in without)
    assert model.num_branch_gates == len(model.gate_sites) - len(without)


def test_branch_gates_need_a_residual_block() -> None:
    with pytest.raises(ValueError, match='branch_gates=True needs residual blocks'):
        gz.create_model('gaternet', backbone='test_efficientnet', gater='cifar_resnet8', gater_args=TINY,
                        branch_gates=True)  # none of its blocks has its skip
    with pytest.raises(TypeError, match='branch_gates'):
        gz.create_model('gaternet_resnet20', branch_gates='yes')


# ------------------------------------------------------------------------------------------- exactness


def test_closed_branch_gate_gives_the_block_as_its_shortcut(family) -> None:
    """(a) The block's output is its shortcut's: as with all its filter gates closed, and as shortcut_only says."""
    model, size = family
    site = _branch_sites(model)[len(_branch_sites(model)) // 2]
    block = model.backbone.get_submodule(site.name)
    seen: dict[str, torch.Tensor] = {}
    handles = [block.register_forward_pre_hook(lambda m, args: seen.__setitem__('in', args[0].clone())),
               block.register_forward_hook(lambda m, args, out: seen.__setitem__('out', out.clone()))]
    x = images(2, size)
    branch_closed = torch.ones(2, model.gate_size)
    branch_closed[:, site.branch_offset] = 0
    filters_closed = torch.ones(2, model.gate_size)
    filters_closed[:, site.offset:site.offset + site.num_channels] = 0
    try:
        with torch.no_grad():
            by_branch = model(x, gates=branch_closed)
            out, block_in = seen['out'], seen['in']
            by_filters = model(x, gates=filters_closed)
            assert torch.equal(seen['out'], out)
            shortcut = get_plugin(model.plugin_name).shortcut_only(block, block_in)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(out, shortcut, rtol=1e-6, atol=1e-6)
    assert torch.equal(by_branch, by_filters)


@pytest.mark.parametrize('batch', [1, 3])
def test_skip_mode_logits_equal_mask_mode(family, batch: int) -> None:
    """(b) Random filter and branch gates (decisions mixed across the batch), all closed, all open."""
    model, size = family
    x = images(batch, size)
    random = (torch.rand(batch, model.gate_size, generator=torch.Generator().manual_seed(2)) < 0.6).float()
    sites = _branch_sites(model)
    for s in sites[::2]:  # every other branch closed for the whole batch
        random[:, s.branch_offset] = 0
    cases = {'random': random, 'closed': torch.zeros(batch, model.gate_size),
             'open': torch.ones(batch, model.gate_size)}
    assert_skip_equals_mask(model, x, cases, rtol=1e-5, atol=1e-5)


def test_skip_mode_does_not_run_a_closed_branch(family) -> None:
    """(c) A branch gate closed for the whole batch: the branch's convs do not run; open, they do."""
    model, size = family
    site = _branch_sites(model)[-1]
    block = model.backbone.get_submodule(site.name)
    calls = {'first': 0, 'gated': 0}
    def count(key: str):
        return lambda *args: calls.__setitem__(key, calls[key] + 1)

    handles = [_first_branch_conv(block).register_forward_hook(count('first')),
               model.backbone.get_submodule(site.conv).register_forward_pre_hook(count('gated'))]
    gates = torch.ones(2, model.gate_size)
    gates[:, site.branch_offset] = 0
    try:
        model.set_execution('skip')
        with torch.no_grad():
            model(images(2, size), gates=gates)
            assert calls == {'first': 0, 'gated': 0}
            gates[1, site.branch_offset] = 1  # one sample opens it: the branch runs, for both
            model(images(2, size), gates=gates)
            assert calls['first'] == 1
    finally:
        model.set_execution('mask')
        for h in handles:
            h.remove()


def test_gradient_reaches_the_branch_gate_logits(family) -> None:
    """(d) In training the branch gates are binarised like the others and get the straight-through gradient."""
    model, size = family
    model.train()
    try:
        model.zero_grad()
        torch.manual_seed(4)
        logits, gates = model(images(4, size), return_gates=True)
        assert gates.shape == (4, model.gate_size)
        nn.functional.cross_entropy(logits, torch.arange(4) % 10).backward()
    finally:
        model.eval()
    grad = model.gater.fc2.weight.grad
    rows = [s.branch_offset for s in _branch_sites(model)]
    assert (grad[rows].abs().sum(1) > 0).all()


# ------------------------------------------------------------------------------------------- save, load


def test_save_and_load_keep_branch_gates(tmp_path: Path) -> None:
    """(e) config.json records branch_gates: the folder rebuilds the same model; forcing it off fails clearly."""
    model = _build(*FAMILIES['native_basic'][:2])
    x = images(2, 16)
    with torch.no_grad():
        expected = model(x)
    model.save_pretrained(tmp_path / 'saved')
    for loaded in (gz.GaterNet.from_pretrained(tmp_path / 'saved'), gz.create_model(f'local-dir:{tmp_path / "saved"}')):
        loaded.eval()
        assert loaded.branch_gates is True and loaded.gate_site_table() == model.gate_site_table()
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)
    with pytest.raises(StateDictMismatchError, match='branch_gates=True'):
        gz.create_model(f'local-dir:{tmp_path / "saved"}', branch_gates=False)


def test_every_family_names_its_classifier_and_loads_from_its_folder(family, tmp_path: Path) -> None:
    """The Hub loader reads the classifier's name (``get_classifier(name_only=True)``), which most timm backbones
    (all but timm's ResNet) do not take as an argument: the name is found where the backbone holds the module."""
    model, size = family
    assert model.get_submodule(model.get_classifier(name_only=True)) is model.get_classifier()
    x = images(2, size)
    with torch.no_grad():
        expected = model(x)
    model.save_pretrained(tmp_path / 'saved')
    loaded = gz.create_model(f'local-dir:{tmp_path / "saved"}').eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


# ------------------------------------------------------------------------------------------- MACs (item 4)


#: The tiny native model's MACs at 32 px, by hand (out channels x in channels x kernel area x output pixels).
STEM = 4 * 3 * 9 * 32 * 32
STAGE1 = 2 * (4 * 4 * 9 * 32 * 32)                                     # conv1, conv2: 4 -> 4 at 32x32
STAGE2_BRANCH = 8 * 4 * 9 * 16 * 16 + 8 * 8 * 9 * 16 * 16              # conv1 (stride 2), conv2 at 16x16
STAGE2_SHORTCUT = 8 * 4 * 16 * 16                                       # 1x1 projection, stride 2
STAGE3_BRANCH = 16 * 8 * 9 * 8 * 8 + 16 * 16 * 9 * 8 * 8
STAGE3_SHORTCUT = 16 * 8 * 8 * 8
HEAD = 16 * 10
DENSE = STEM + STAGE1 + STAGE2_BRANCH + STAGE2_SHORTCUT + STAGE3_BRANCH + STAGE3_SHORTCUT + HEAD


@pytest.fixture(scope='module')
def tiny() -> nn.Module:
    return _build(*FAMILIES['native_basic'][:2])


def test_mac_account_counts_a_closed_branch_as_its_whole_branch(tiny: nn.Module) -> None:
    """(f) A closed branch gate saves every conv of the branch, not only the gated conv's share; the gater counts."""
    macs = gaternet_macs(tiny, (3, 32, 32))
    assert macs['backbone'] == DENSE == 864_416
    assert macs['total'] == macs['backbone'] + macs['gater'] and macs['gater'] > 0
    site = tiny.gate_sites[1]  # stage2.block1
    one = torch.ones(1, tiny.gate_size)
    branch_closed = one.clone()
    branch_closed[0, site.branch_offset] = 0
    assert gaternet_macs(tiny, (3, 32, 32), branch_closed)['backbone_used'] == DENSE - STAGE2_BRANCH
    # No double count with its filters closed too; the same saving as all its filter gates closed.
    both = branch_closed.clone()
    both[0, site.offset:site.offset + 3] = 0
    filters_closed = one.clone()
    filters_closed[0, site.offset:site.offset + site.num_channels] = 0
    one_filter = one.clone()
    one_filter[0, site.offset] = 0
    budget = MacBudgetLoss(tiny, target=0.5, input_size=(3, 32, 32))
    expected = {'open': DENSE, 'branch': DENSE - STAGE2_BRANCH, 'both': DENSE - STAGE2_BRANCH,
                'filters': DENSE - STAGE2_BRANCH, 'one_filter': DENSE - 8 * 8 * 9 * 16 * 16 // 8}
    for name, gates in dict(open=one, branch=branch_closed, both=both, filters=filters_closed,
                            one_filter=one_filter).items():
        assert gaternet_macs(tiny, (3, 32, 32), gates)['backbone_used'] == expected[name], name
        assert budget.used_fraction(gates).item() == pytest.approx(expected[name] / DENSE, abs=1e-6), name


def test_budget_gradient_weighs_a_branch_gate_by_its_whole_branch(tiny: nn.Module) -> None:
    budget = MacBudgetLoss(tiny, target=0.5, input_size=(3, 32, 32))
    gates = torch.ones(1, tiny.gate_size, requires_grad=True)
    budget.used_fraction(gates).sum().backward()
    site = tiny.gate_sites[1]
    assert gates.grad[0, site.branch_offset].item() == pytest.approx(STAGE2_BRANCH / DENSE, rel=1e-5)


def test_mac_figures_from_statistics_match_per_sample_gates(tiny: nn.Module) -> None:
    """Evaluation's route (effective open rates and branch-closed fractions) gives the per-sample figure."""
    gates = (torch.rand(8, tiny.gate_size, generator=torch.Generator().manual_seed(5)) < 0.6).float()
    gates[:3, tiny.gate_sites[1].branch_offset] = 0
    stats = GateStatistics(tiny.gate_sites)
    stats.update(gates)
    assert stats.gate_size == tiny.gate_size
    assert set(stats.per_site_branch_open_fraction()) == {s.name for s in tiny.gate_sites}
    closed = stats.per_site_closed_fraction()
    assert closed[tiny.gate_sites[1].name] >= 3 / 8
    per_sample = gaternet_macs(tiny, (3, 32, 32), gates)['backbone_used']
    from_rates = gaternet_macs(tiny, (3, 32, 32), stats.effective_firing_rate.unsqueeze(0),
                               branch_closed=closed)['backbone_used']
    assert from_rates == pytest.approx(per_sample, abs=1)
    budget = MacBudgetLoss(tiny, target=0.5, input_size=(3, 32, 32))
    assert budget.used_fraction_from_rates(stats.effective_firing_rate, [closed[s.name] for s in tiny.gate_sites]) \
        == pytest.approx(budget.used_fraction(gates).mean().item(), abs=1e-6)
    summary = stats.summary()
    assert summary['branch_gates'] == 3 and summary['gate_size'] == tiny.gate_size


# ------------------------------------------------------------------------------------------- training


def test_recipe_builds_branch_gates_from_model_args(tmp_path: Path) -> None:
    """The recipe's route for create_model arguments (``model_args`` in a config file) reaches branch_gates."""
    from gaternet_zoo.training import TrainConfig

    config = TrainConfig.from_dict({'model': 'gaternet', 'model_args': {
        'backbone': 'cifar_resnet8', 'backbone_args': TINY, 'gater': 'cifar_resnet8', 'gater_args': TINY,
        'branch_gates': True}})
    net = gz.create_model(config.model, num_classes=config.num_classes, **config.model_args)  # as recipes/train.py
    assert net.branch_gates and net.num_branch_gates == 3


def test_training_objective_reads_the_effective_gates(tiny: nn.Module) -> None:
    """The rate budget and the logged MAC share count a closed branch gate as closing its site's filters."""
    from gaternet_zoo import gate_target_rate_loss
    from gaternet_zoo.training import GateObjective

    gates = (torch.rand(6, tiny.gate_size, generator=torch.Generator().manual_seed(6)) < 0.7).float()
    gates[:4, tiny.gate_sites[2].branch_offset] = 0
    acting = tiny.effective_gates(gates)
    rates = torch.stack([acting[:, s.offset:s.offset + s.num_channels].mean() for s in tiny.gate_sites])
    assert gate_target_rate_loss(gates, 0.5, tiny.gate_sites).item() == pytest.approx(
        (rates - 0.5).pow(2).mean().item())
    objective = GateObjective(tiny, budget='macs', target=0.5)
    stats = GateStatistics(tiny.gate_sites)
    stats.update(gates)
    summary = stats.summary()
    metrics = {'gate_open_fraction_per_block': summary['per_site_open_fraction'],
               'gate_closed_fraction_per_block': summary['per_site_closed_fraction'],
               'gate_effective_open_fraction_per_block': summary['per_site_effective_open_fraction']}
    logged = objective.epoch_fields(metrics)['macs_used_fraction']
    assert logged == pytest.approx(objective.macs.used_fraction(gates).mean().item(), abs=1e-6)
