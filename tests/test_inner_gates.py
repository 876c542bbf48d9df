"""Inner gate sites (issue 26, item 2): ``GaterNet(gate_placement="inner")``.

The gates sit on the branch's inner conv (a basic block's first conv, a bottleneck's 3x3 conv), after its norm and
activation: a closed gate removes a filter of that conv and an input channel of the next one. Skip mode computes
neither, its logits equal mask mode's, and the MAC account counts both. The default placement (``'last'``, the
paper's) is unchanged. Every model here is tiny (4-8-16 wide CIFAR nets, timm's ``test_resnet``, a 4-8-16 wide
ResNet-8 gater), so each test runs well under a second on an idle core.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from builders import TINY_GATER_ARGS, build_tiny_gaternet, images
from safetensors.torch import load_file
from timm.layers import BlurPool2d
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo import GateStatistics, MacBudgetLoss, PruningError, UnsupportedPlacementError
from gaternet_zoo._plugins import get_plugin
from gaternet_zoo.layers.skip import SkippingBlockForward, SkippingConvForward, SkippingInputForward
from gaternet_zoo.utils import gaternet_macs

pytestmark = pytest.mark.usefixtures('one_torch_thread')

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_GATER_ARGS
#: One small backbone per block family with inner sites: (backbone, backbone_args, input side).
FAMILIES = {
    'native_basic': ('cifar_resnet8', TINY, 16),
    'native_preact_basic': ('cifar_wrn28_10', dict(layers=[1, 1, 1], widths=[4, 8, 16], stem_width=4), 16),
    'native_preact_bottleneck': ('cifar_resnet164', dict(layers=[1, 1, 1], widths=[4, 8, 16], stem_width=8), 16),
    'timm_resnet': ('test_resnet', {}, 32),  # BasicBlock and Bottleneck
    # SE after the last conv (not between the gated conv and the next) and a blur in the inner slot's place.
    'timm_resnet_se_blur': ('test_resnet', dict(block_args=dict(attn_layer='se'), aa_layer=BlurPool2d), 32),
}
#: (inner conv, next conv) of each block type.
INNER = {'BasicBlock': ('conv1', 'conv2'), 'PreActBasicBlock': ('conv1', 'conv2'), 'Bottleneck': ('conv2', 'conv3'),
         'PreActBottleneck': ('conv2', 'conv3')}


def _build(backbone: str, backbone_args: dict, gate_placement: str = 'inner') -> nn.Module:
    return build_tiny_gaternet(backbone, backbone_args, gate_placement=gate_placement)


@pytest.fixture(scope='module', params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[nn.Module, int]:
    backbone, args, size = FAMILIES[request.param]
    return _build(backbone, args), size




# ------------------------------------------------------------------------------------------- default unchanged


def test_default_placement_leaves_the_model_as_before() -> None:
    """gate_placement='last' is the default: 336 gates on conv2, the published weights load and give the same logits."""
    default = gz.create_model('gaternet_resnet20').eval()
    last = gz.create_model('gaternet_resnet20', gate_placement='last').eval()
    inner = gz.create_model('gaternet_resnet20', gate_placement='inner').eval()
    assert default.gate_placement == 'last' and default.gate_size == 336
    assert all(s.conv.endswith('.conv2') and s.next_conv == '' and s.placement == 'last' for s in default.gate_sites)
    assert all(row['next_conv'] is None for row in default.gate_site_table())
    published = load_file(REPO / 'weights' / 'gaternet_resnet20.cifar10' / 'model.safetensors')
    assert list(default.state_dict()) == list(last.state_dict()) == list(inner.state_dict())
    assert set(published) == set(default.state_dict())
    default.load_state_dict(published, strict=True)
    last.load_state_dict(published, strict=True)
    x = images(2, 32)
    with torch.no_grad():
        assert torch.equal(default(x), last(x))
    assert (default._hub_mixin_config or {}).get('gate_placement', 'last') == 'last'
    # ResNet-20's inner widths (conv1's filters) add up to the same 336.
    assert inner.gate_size == 336 and all(s.conv.endswith('.conv1') for s in inner.gate_sites)


# ------------------------------------------------------------------------------------------- layout


def test_gate_size_is_the_sum_of_inner_widths(family) -> None:
    model, _ = family
    assert model.gate_placement == 'inner' and model.gate_sites
    for site in model.gate_sites:
        block = model.backbone.get_submodule(site.name)
        inner, after = INNER[type(block).__name__]
        assert (site.conv, site.next_conv) == (f'{site.name}.{inner}', f'{site.name}.{after}')
        assert site.placement == 'inner'
        assert site.num_channels == getattr(block, inner).out_channels == getattr(block, after).in_channels
    assert model.gate_size == model.num_filter_gates == sum(s.num_channels for s in model.gate_sites)
    assert model.gater.fc2.out_features == model.gate_size
    assert [row['next_conv'] for row in model.gate_site_table()] == [s.next_conv for s in model.gate_sites]


def test_inner_slots_add_no_state_dict_key() -> None:
    for backbone, args, _ in FAMILIES.values():
        last, inner = _build(backbone, args, 'last'), _build(backbone, args, 'inner')
        keys = {k: v.shape for k, v in last.state_dict().items() if not k.startswith('gater.fc2')}
        assert keys == {k: v.shape for k, v in inner.state_dict().items() if not k.startswith('gater.fc2')}


# ------------------------------------------------------------------------------------------- exactness


def test_closing_an_inner_gate_zeroes_that_input_channel_of_the_next_conv(family) -> None:
    """Reference: all gates open and the channel zeroed by a hook at the next conv's input (mask mode)."""
    model, size = family
    x = images(2, size)
    for site in (model.gate_sites[0], model.gate_sites[-1]):
        channel = site.num_channels // 2
        gates = torch.ones(2, model.gate_size)
        gates[:, site.offset + channel] = 0
        after = model.backbone.get_submodule(site.next_conv)
        seen: dict[str, torch.Tensor] = {}

        def zero(module: nn.Module, args: tuple, c: int = channel) -> tuple:
            y = args[0].clone()
            y[:, c] = 0
            return (y,)

        with torch.no_grad():
            handle = after.register_forward_pre_hook(lambda m, args, d=seen: d.__setitem__('in', args[0].clone()))
            gated = model(x, gates=gates)
            handle.remove()
            handle = after.register_forward_pre_hook(zero)
            reference = model(x, gates=torch.ones(2, model.gate_size))
            handle.remove()
        assert torch.count_nonzero(seen['in'][:, channel]) == 0 and torch.count_nonzero(seen['in']) > 0
        torch.testing.assert_close(gated, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('batch', [1, 3])
def test_skip_mode_logits_equal_mask_mode(family, batch: int) -> None:
    """Random gates (decisions mixed across the batch), one block's inner gates all closed, all closed, all open."""
    model, size = family
    x = images(batch, size)
    random = (torch.rand(batch, model.gate_size, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    one_block = random.clone()
    site = model.gate_sites[len(model.gate_sites) // 2]
    one_block[:, site.offset:site.offset + site.num_channels] = 0
    cases = {'random': random, 'one_block_closed': one_block, 'closed': torch.zeros(batch, model.gate_size),
             'open': torch.ones(batch, model.gate_size)}
    try:
        with torch.no_grad():
            masked = {k: model(x, gates=g) for k, g in cases.items()}
            own = model(x)
            model.set_execution('skip')
            patched = {type(m.__dict__['forward']) for m in model.backbone.modules() if 'forward' in m.__dict__}
            assert {SkippingConvForward, SkippingInputForward, SkippingBlockForward} <= patched
            for k, g in cases.items():
                torch.testing.assert_close(model(x, gates=g), masked[k], rtol=1e-5, atol=1e-5, msg=k)
            torch.testing.assert_close(model(x), own, rtol=1e-5, atol=1e-5)
            model.set_execution('skip', width_multiple=4)  # padded with closed channels: still exact
            torch.testing.assert_close(model(x, gates=random), masked['random'], rtol=1e-5, atol=1e-5)
    finally:
        model.set_execution('mask')
    assert not any('forward' in m.__dict__ for m in model.backbone.modules())


@pytest.fixture
def conv_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Weight shapes of every ``F.conv2d`` call (nn.Conv2d, skip execution's slices and the fast paths all use it)."""
    calls: list[tuple[int, ...]] = []
    real = F.conv2d

    def record(x: torch.Tensor, weight: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        calls.append(tuple(weight.shape))
        return real(x, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, 'conv2d', record)
    return calls


@pytest.mark.parametrize('batch', [1, 3])
def test_skip_mode_runs_the_next_conv_on_the_open_channels_only(family, conv_calls, batch: int) -> None:
    """Two channels open for the batch: the inner conv computes 2 filters and the next conv reads 2 input channels."""
    model, size = family
    site = model.gate_sites[len(model.gate_sites) // 2]
    inner, after = model.backbone.get_submodule(site.conv), model.backbone.get_submodule(site.next_conv)
    gates = torch.ones(batch, model.gate_size)
    gates[:, site.offset:site.offset + site.num_channels] = 0
    gates[0, site.offset] = 1
    gates[-1, site.offset + 2] = 1  # batch 1: both open for the one sample; batch 3: one each, the middle none
    try:
        model.set_execution('skip')
        with torch.no_grad():
            model(images(batch, size), gates=gates)
    finally:
        model.set_execution('mask')
    assert (2, inner.in_channels // inner.groups, *inner.kernel_size) in conv_calls
    assert (after.out_channels, 2, *after.kernel_size) in conv_calls


def test_skip_mode_runs_no_conv_of_a_block_whose_inner_gates_are_closed(family, conv_calls) -> None:
    """All inner gates of a block closed: the inner and next convs never run, nor (where the plugin computes the
    block's output from its shortcut and the last norm's shift) the branch's other convs; the block is *not* its
    shortcut where that shift is not 0."""
    model, size = family
    site = model.gate_sites[len(model.gate_sites) // 2]
    block = model.backbone.get_submodule(site.name)
    branch = [n for n, m in block.named_modules() if isinstance(m, nn.Conv2d)
              and not n.startswith(('shortcut', 'downsample', 'se'))]
    plugin = get_plugin(model.plugin_name)
    x = images(1, size)
    open_gates = torch.ones(1, model.gate_size)
    closed = open_gates.clone()
    closed[:, site.offset:site.offset + site.num_channels] = 0
    seen: dict[str, torch.Tensor] = {}
    handle = block.register_forward_pre_hook(lambda m, args: seen.__setitem__('in', args[0].clone()))
    try:
        model.set_execution('skip')
        with torch.no_grad():
            model(x, gates=open_gates)
            dense = len(conv_calls)
            conv_calls.clear()
            model(x, gates=closed)
            ran = len(conv_calls)
            inner_closed = plugin.inner_closed_output(block, seen['in'])
    finally:
        handle.remove()
        model.set_execution('mask')
    skipped = len(branch) if inner_closed is not None else 2
    assert dense - ran == skipped
    if inner_closed is not None and type(block).__name__ in ('BasicBlock', 'Bottleneck'):  # post-activation
        with torch.no_grad():
            assert not torch.allclose(inner_closed, plugin.shortcut_only(block, seen['in']))


def test_gradient_reaches_the_gater_through_inner_gates(family) -> None:
    model, size = family
    model.train()
    try:
        model.zero_grad()
        torch.manual_seed(4)
        logits, gates = model(images(4, size), return_gates=True)
        nn.functional.cross_entropy(logits, torch.arange(4) % 10).backward()
    finally:
        model.eval()
    grad = model.gater.fc2.weight.grad
    assert gates.shape == (4, model.gate_size) and (grad.abs().sum(1) > 0).float().mean() > 0.5


# ------------------------------------------------------------------------------------------- MACs


#: The tiny native ResNet-8 (4-8-16 wide) at 32 px, by hand (out channels x in channels x kernel area x pixels).
STEM = 4 * 3 * 9 * 32 * 32
CONV = {  # (inner conv1, next conv2) per block
    'stage1.block1': (4 * 4 * 9 * 32 * 32, 4 * 4 * 9 * 32 * 32),
    'stage2.block1': (8 * 4 * 9 * 16 * 16, 8 * 8 * 9 * 16 * 16),   # conv1 has stride 2
    'stage3.block1': (16 * 8 * 9 * 8 * 8, 16 * 16 * 9 * 8 * 8),
}
WIDTH = {'stage1.block1': 4, 'stage2.block1': 8, 'stage3.block1': 16}
SHORTCUTS = 8 * 4 * 16 * 16 + 16 * 8 * 8 * 8
HEAD = 16 * 10
DENSE = STEM + sum(a + b for a, b in CONV.values()) + SHORTCUTS + HEAD
#: What one closed inner gate saves: a filter of conv1 and an input channel of conv2.
PER_GATE = {name: a // WIDTH[name] + b // WIDTH[name] for name, (a, b) in CONV.items()}


@pytest.fixture(scope='module')
def tiny() -> nn.Module:
    return _build(*FAMILIES['native_basic'][:2])


def test_mac_account_by_hand_basic_block(tiny: nn.Module) -> None:
    assert PER_GATE == {'stage1.block1': 73_728, 'stage2.block1': 27_648, 'stage3.block1': 13_824}
    macs = gaternet_macs(tiny, (3, 32, 32))
    assert macs['backbone'] == DENSE == 864_416
    assert macs['gated_conv_macs'] == {k: a for k, (a, _) in CONV.items()}
    assert macs['next_conv_macs'] == {k: b for k, (_, b) in CONV.items()}
    assert macs['gateable_macs'] == {k: a + b for k, (a, b) in CONV.items()}
    assert macs['skippable_branch_macs'] == dict.fromkeys(CONV, 0)  # a basic block has no other branch conv
    budget = MacBudgetLoss(tiny, target=0.5, input_size=(3, 32, 32))
    sites = {s.name: s for s in tiny.gate_sites}
    one = torch.ones(1, tiny.gate_size)
    cases = {'open': (one, DENSE)}
    g = one.clone()
    g[0, sites['stage2.block1'].offset + 3] = 0
    cases['one_gate'] = (g, DENSE - PER_GATE['stage2.block1'])
    g = one.clone()
    s = sites['stage1.block1']
    g[0, s.offset:s.offset + s.num_channels] = 0
    cases['block_closed'] = (g, DENSE - sum(CONV['stage1.block1']))
    cases['all_closed'] = (torch.zeros(1, tiny.gate_size), STEM + SHORTCUTS + HEAD)
    for name, (gates, expected) in cases.items():
        assert gaternet_macs(tiny, (3, 32, 32), gates)['backbone_used'] == expected, name
        assert budget.used_fraction(gates).item() == pytest.approx(expected / DENSE, abs=1e-6), name
    # Random per-sample gates: the mean over the samples of what each sample's closed gates save.
    gates = (torch.rand(5, tiny.gate_size, generator=torch.Generator().manual_seed(7)) < 0.5).float()
    saved = sum(PER_GATE[s.name] * (1 - gates[:, s.offset:s.offset + s.num_channels]).sum(1)
                for s in tiny.gate_sites)
    expected = DENSE - saved.double().mean().item()
    assert gaternet_macs(tiny, (3, 32, 32), gates)['backbone_used'] == round(expected)
    assert budget.used_fraction(gates).mean().item() == pytest.approx(expected / DENSE, abs=1e-6)
    assert budget.used_fraction(gates).tolist() == pytest.approx((1 - saved.double() / DENSE).tolist(), abs=1e-6)


def test_mac_account_by_hand_bottleneck() -> None:
    """Pre-activation bottleneck: the 3x3's filter and conv3's input channel per gate; a closed block also saves
    its first 1x1 conv (the block is then its shortcut, which skip mode computes alone)."""
    model = _build(*FAMILIES['native_preact_bottleneck'][:2])
    macs = gaternet_macs(model, (3, 32, 32))
    site = model.gate_sites[0]  # stage1.block1: 8 -> 4 (1x1), 4 -> 4 (3x3), 4 -> 16 (1x1), projection 8 -> 16
    conv1, conv2, conv3 = 4 * 8 * 32 * 32, 4 * 4 * 9 * 32 * 32, 16 * 4 * 32 * 32
    assert (macs['gated_conv_macs'][site.name], macs['next_conv_macs'][site.name]) == (conv2, conv3)
    assert macs['skippable_branch_macs'][site.name] == conv1
    budget = MacBudgetLoss(model, target=0.5, input_size=(3, 32, 32))
    one_gate = torch.ones(1, model.gate_size)
    one_gate[0, site.offset + 1] = 0
    block = one_gate.clone()
    block[0, site.offset:site.offset + site.num_channels] = 0
    for gates, saved in ((one_gate, conv2 // 4 + conv3 // 4), (block, conv1 + conv2 + conv3)):
        assert gaternet_macs(model, (3, 32, 32), gates)['backbone_used'] == macs['backbone'] - saved
        assert budget.used_fraction(gates).item() == pytest.approx(1 - saved / macs['backbone'], abs=1e-6)


def test_budget_and_account_agree_on_random_gates_and_rates(family) -> None:
    """MacBudgetLoss.used_fraction (per sample, and from statistics) is gaternet_macs' backbone_used share."""
    model, size = family
    gates = (torch.rand(6, model.gate_size, generator=torch.Generator().manual_seed(8)) < 0.4).float()
    site = model.gate_sites[-1]
    gates[:2, site.offset:site.offset + site.num_channels] = 0  # a block closed for some samples
    macs = gaternet_macs(model, (3, size, size), gates)
    budget = MacBudgetLoss(model, target=0.5, input_size=(3, size, size))
    assert budget.used_fraction(gates).mean().item() == pytest.approx(macs['backbone_used'] / macs['backbone'],
                                                                     abs=1e-6)
    stats = GateStatistics(model.gate_sites)
    stats.update(gates)
    closed = stats.per_site_closed_fraction()
    assert budget.used_fraction_from_rates(stats.effective_firing_rate, [closed[s.name] for s in model.gate_sites]) \
        == pytest.approx(budget.used_fraction(gates).mean().item(), abs=1e-6)


def test_inner_placement_saves_more_per_gate_than_the_last(tiny: nn.Module) -> None:
    """The same share of closed gates saves more MACs with inner gates (two convs' shares) in the basic block."""
    last = _build(*FAMILIES['native_basic'][:2], gate_placement='last')
    gates = (torch.rand(4, tiny.gate_size, generator=torch.Generator().manual_seed(9)) < 0.5).float()
    inner_used = gaternet_macs(tiny, (3, 32, 32), gates)['backbone_used']
    last_used = gaternet_macs(last, (3, 32, 32), gates)['backbone_used']
    assert inner_used < last_used < DENSE


# ------------------------------------------------------------------------------------------- save, load, train


def test_save_and_load_keep_gate_placement(tmp_path: Path) -> None:
    model = _build(*FAMILIES['native_basic'][:2])
    x = images(2, 16)
    with torch.no_grad():
        expected = model(x)
    model.save_pretrained(tmp_path / 'saved')
    config = json.loads((tmp_path / 'saved' / 'config.json').read_text())
    assert config['model_args']['gate_placement'] == 'inner'
    assert 'gate_placement="inner"' in (tmp_path / 'saved' / 'README.md').read_text()  # the card says so
    for loaded in (gz.GaterNet.from_pretrained(tmp_path / 'saved'), gz.create_model(f'local-dir:{tmp_path / "saved"}')):
        loaded.eval()
        assert loaded.gate_placement == 'inner' and loaded.gate_site_table() == model.gate_site_table()
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)


def test_recipe_builds_inner_gates_from_model_args() -> None:
    """The recipe's route for create_model arguments (``model_args`` in a config file) reaches gate_placement."""
    from gaternet_zoo.training import TrainConfig

    config = TrainConfig.from_dict({'model': 'gaternet', 'model_args': {
        'backbone': 'cifar_resnet8', 'backbone_args': TINY, 'gater': 'cifar_resnet8', 'gater_args': TINY,
        'gate_placement': 'inner'}})
    net = gz.create_model(config.model, num_classes=config.num_classes, **config.model_args)  # as recipes/train.py
    assert net.gate_placement == 'inner' and net.gate_sites[0].conv == 'stage1.block1.conv1'


def test_warm_start_refuses_a_gaternet_of_the_other_placement(tmp_path: Path) -> None:
    from gaternet_zoo.training import RecipeError, warm_start

    _build(*FAMILIES['native_basic'][:2], gate_placement='last').save_pretrained(tmp_path / 'last')
    inner = _build(*FAMILIES['native_basic'][:2])
    with pytest.raises(RecipeError, match='gate_placement'):
        warm_start(inner, str(tmp_path / 'last'))


# ------------------------------------------------------------------------------------------- refusals


def test_plugins_without_inner_sites_refuse_clearly() -> None:
    assert gz.plugins_supporting('inner') == ['native', 'timm_resnet']
    assert set(gz.plugins_supporting('last')) == set(gz.list_plugins())
    with pytest.raises(UnsupportedPlacementError, match=r'plugins that support it: native, timm_resnet'):
        gz.create_model('gaternet', backbone='test_convnext', gater='cifar_resnet8', gater_args=TINY,
                        gate_placement='inner')
    with pytest.raises(ValueError, match="gate_placement of GaterNet must be one of 'last', 'inner'"):
        gz.create_model('gaternet_resnet20', gate_placement='middle')
    with pytest.raises(UnsupportedPlacementError, match='branch_gates=True cannot be combined'):
        gz.create_model('gaternet_resnet20', gate_placement='inner', branch_gates=True)


def test_pruning_and_static_export_refuse_inner_gates(tiny: nn.Module) -> None:
    stats = GateStatistics(tiny.gate_sites)
    gates = torch.ones(4, tiny.gate_size)
    gates[:, :2] = 0  # two filters never open: what pruning would remove
    stats.update(gates)
    with pytest.raises(PruningError, match='gate_placement="inner"'):
        gz.prune_gaternet(tiny, stats)
    with pytest.raises(PruningError, match='gate_placement="inner"'):
        gz.export_static(tiny, stats)
    with pytest.raises(PruningError, match='gate_placement="inner"'):
        tiny.prune_filters({'stage1.block1': [2, 3]})
    assert tiny.pruned_filters == {}
