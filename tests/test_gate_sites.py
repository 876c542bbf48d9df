"""Gate sites that cannot be silently wrong, and one initialisation whatever the route, for every gating plugin.

* Every slot a plugin installs must run exactly once per forward pass, and every ``GateSite.conv`` must name a conv
  of the site's width that runs: GaterNet refuses the model at build time otherwise, naming the sites.
* The backbone arguments the gates need come from the plugin (``GatingPlugin.backbone_args``), so
  ``create_model("gaternet", backbone=...)``, ``gate()`` and ``timm.create_model`` build the same model.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from tiers import slow_except
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo import _plugins
from gaternet_zoo._plugins import GateSite, offsets_in_order
from gaternet_zoo.layers.gates import GateSlot
from gaternet_zoo.plugins.native import NativeSlotPlugin
from gaternet_zoo.utils.macs import gaternet_macs

pytestmark = pytest.mark.usefixtures('one_torch_thread')

#: A small backbone per plugin for the tests below; a plugin not listed is tested on its first supported model.
REPRESENTATIVE = {'native': 'cifar_resnet20', 'timm_resnet': 'resnet18'}
PLUGINS = gz.list_plugins()
# Fast tier: the native ResNet and timm's; every plugin runs in `make test`.
PLUGIN_PARAMS = slow_except(PLUGINS, fast={'native', 'timm_resnet'})


def _representative(plugin_name: str) -> str:
    plugin = gz.get_plugin(plugin_name)
    return REPRESENTATIVE.get(plugin_name) or plugin.supported_models()[0]


def _use_plugin(monkeypatch, plugin: _plugins.GatingPlugin) -> str:
    """Register ``plugin`` for this test only."""
    monkeypatch.setitem(_plugins._PLUGINS, plugin.name, plugin)
    return plugin.name


# --------------------------------------------------------------------------------------------- dead slots


class _DeadSlots(NativeSlotPlugin):
    """Installs the slots of ``dead`` sites where the block never calls them (an attribute, not its gate)."""

    name = 'test_dead_slots'

    def __init__(self, dead: set[str] | None = None) -> None:
        self.dead = dead

    def install(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        if self.dead is None or site.name in self.dead:
            model.get_submodule(site.name).unused_gate = slot
        else:
            super().install(model, site, slot)


class _TwiceSlots(NativeSlotPlugin):
    name = 'test_twice_slots'

    def install(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        model.get_submodule(site.name).gate = nn.Sequential(slot, slot)


class _BadConv(NativeSlotPlugin):
    name = 'test_bad_conv'

    def __init__(self, conv: str) -> None:
        self.conv = conv

    def gate_sites(self, model: nn.Module) -> list[GateSite]:
        sites = super().gate_sites(model)
        return offsets_in_order([GateSite(s.name, s.num_channels, conv=f'{s.name}.{self.conv}') for s in sites])


def test_slots_that_never_run_are_refused_by_name(monkeypatch) -> None:
    name = _use_plugin(monkeypatch, _DeadSlots())
    with pytest.raises(ValueError, match=r"9 gate slot\(s\) .*never run.*'stage1.block1'.*'stage3.block3'"):
        gz.GaterNet(backbone='cifar_resnet20', plugin=name)

    # One dead site among live ones: that site, and only it, is named.
    monkeypatch.setitem(_plugins._PLUGINS, name, _DeadSlots(dead={'stage2.block2'}))
    with pytest.raises(ValueError, match=r"1 gate slot\(s\)") as err:
        gz.GaterNet(backbone='cifar_resnet20', plugin=name)
    assert "'stage2.block2'" in str(err.value) and 'stage2.block1' not in str(err.value)


def test_slots_that_run_twice_are_refused(monkeypatch) -> None:
    name = _use_plugin(monkeypatch, _TwiceSlots())
    with pytest.raises(ValueError, match=r"more than once.*'stage1.block1': 2"):
        gz.GaterNet(backbone='cifar_resnet20', plugin=name)


@pytest.mark.parametrize('conv, match', [
    ('conv9', r"names the gated conv 'stage1.block1.conv9', which is not a conv"),
    ('bn2', r"'stage1.block1.bn2', which is not a conv"),
    ('conv1', r'gates 64 channels, but its conv .* has 16 filters'),  # bottleneck: conv1 is the narrow one
])
def test_gate_site_conv_must_be_a_real_conv_of_the_site_width(monkeypatch, conv: str, match: str) -> None:
    name = _use_plugin(monkeypatch, _BadConv(conv))
    backbone = 'cifar_resnet164' if conv == 'conv1' else 'cifar_resnet20'
    with torch.device('meta'), pytest.raises(ValueError, match=match):
        gz.GaterNet(backbone=backbone, plugin=name)


def test_macs_refuse_a_site_conv_that_does_not_run() -> None:
    """``gaternet_macs`` counted 0 MACs for a site whose conv name was wrong; it now says so."""
    model = gz.create_model('gaternet_resnet20', backbone_args=dict(layers=(1, 1, 1)))
    gates = torch.ones(4, model.gate_size)
    report = gaternet_macs(model, gates=gates)
    assert all(macs > 0 for macs in report['gated_conv_macs'].values())
    assert report['backbone_used'] == report['backbone']  # all gates open: nothing saved
    site = model.gate_sites[0]
    model.gate_sites = (GateSite(site.name, site.num_channels, site.offset, conv='stem.nope'),) + model.gate_sites[1:]
    with pytest.raises(ValueError, match="'stem.nope'"):
        gaternet_macs(model, gates=gates)


@pytest.mark.parametrize('plugin_name', PLUGIN_PARAMS)
def test_every_plugin_slot_runs_once_and_names_its_conv(plugin_name: str) -> None:
    """What the build check enforces, seen from outside, for each registered plugin on a backbone of its own."""
    with torch.device('meta'):
        model = gz.gate(_representative(plugin_name), gater='cifar_resnet20', plugin=plugin_name)
    assert model.plugin_name == plugin_name
    runs = {s.name: 0 for s in model.gate_sites}
    handles = [m.register_forward_pre_hook(lambda m, a: runs.update({m.name: runs[m.name] + 1}))
               for m in model.backbone.modules() if isinstance(m, GateSlot)]
    try:
        model.eval()(torch.zeros(1, 3, 32, 32, device='meta'))
    finally:
        for h in handles:
            h.remove()
    assert set(runs.values()) == {1}
    for site in model.gate_sites:
        conv = model.backbone.get_submodule(site.conv)
        assert isinstance(conv, nn.Conv2d) and conv.out_channels == site.num_channels


# ----------------------------------------------------------------------------------- one initialisation


def _routes(backbone: str) -> dict[str, Callable[[], nn.Module]]:
    args = dict(backbone=backbone, gater='cifar_resnet20', num_classes=10)
    return {
        'create_model': lambda: gz.create_model('gaternet', **args),
        'gate': lambda: gz.gate(backbone, gater='cifar_resnet20', num_classes=10),
        'timm.create_model': lambda: timm.create_model('gaternet', **args),
        'GaterNet': lambda: gz.GaterNet(**args),
    }


@pytest.mark.parametrize('plugin_name', PLUGIN_PARAMS)
def test_every_route_builds_the_same_initialisation(plugin_name: str) -> None:
    backbone = _representative(plugin_name)
    states = {}
    for route, build in _routes(backbone).items():
        torch.manual_seed(0)
        model = build()
        assert model.plugin_name == plugin_name, route
        states[route] = model.state_dict()
    reference = states.pop('GaterNet')
    for route, state in states.items():
        assert list(state) == list(reference), route
        assert all(torch.equal(state[k], reference[k]) for k in reference), f'{route} initialises differently'


@pytest.mark.parametrize('plugin_name', PLUGIN_PARAMS)
def test_gates_act_at_initialisation_on_every_route(plugin_name: str) -> None:
    """All-closed and all-open gates give different outputs on a freshly built model, whatever the route."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for route, build in _routes(_representative(plugin_name)).items():
        model = build().eval()
        with torch.no_grad():
            closed = model(x, gates=torch.zeros(1, model.gate_size))
            opened = model(x, gates=torch.ones(1, model.gate_size))
        assert not torch.equal(closed, opened), f'{route}: gates do nothing at initialisation'


def test_timm_resnet_plugin_asks_for_unit_scales() -> None:
    plugin = gz.get_plugin('timm_resnet')
    assert plugin.backbone_args('resnet50') == {'zero_init_last': False}
    assert plugin.backbone_args('cifar_resnet20') == {}
    assert gz.get_plugin('native').backbone_args('cifar_resnet20') == {}
    model = gz.gate('resnet18', gater='cifar_resnet20')
    last_norms = [block.bn2.weight for block in model.backbone.modules() if hasattr(block, 'bn2')]
    assert last_norms and all(torch.equal(w, torch.ones_like(w)) for w in last_norms)


def test_registered_imagenet_model_matches_gate() -> None:
    with torch.device('meta'):
        registered = gz.create_model('gaternet_resnet18')
    torch.manual_seed(0)
    a = gz.create_model('gaternet_resnet18').state_dict()
    torch.manual_seed(0)
    b = gz.gate('resnet18').state_dict()
    assert list(registered.state_dict()) == list(a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_caller_backbone_args_win_and_none_is_accepted() -> None:
    model = gz.gate('resnet18', gater='cifar_resnet20', backbone_args=None)
    assert isinstance(model, gz.GaterNet)
    # Asking for timm's zero init explicitly gets it (the plugin's arguments are defaults, not overrides).
    zero = gz.gate('resnet18', gater='cifar_resnet20', backbone_args={'zero_init_last': True})
    last_norms = [block.bn2.weight for block in zero.backbone.modules() if hasattr(block, 'bn2')]
    assert all(torch.count_nonzero(w) == 0 for w in last_norms)


def test_build_check_falls_back_to_a_real_forward_pass(monkeypatch) -> None:
    """A backbone that cannot run on the meta device is checked with one real forward pass instead."""
    def no_meta(*args, **kwargs):
        raise NotImplementedError('this backbone has no meta kernels')

    monkeypatch.setattr(torch.func, 'functional_call', no_meta)
    model = gz.GaterNet(backbone='cifar_resnet20', backbone_args=dict(layers=(1, 1, 1)))
    assert model.backbone.training  # the check's eval mode does not stick
    monkeypatch.setitem(_plugins._PLUGINS, _DeadSlots.name, _DeadSlots(dead={'stage2.block1'}))
    with pytest.raises(ValueError, match=r"1 gate slot\(s\) .*'stage2.block1'"):
        gz.GaterNet(backbone='cifar_resnet20', backbone_args=dict(layers=(1, 1, 1)), plugin=_DeadSlots.name)
