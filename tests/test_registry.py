"""Acceptance tests of the registry, the factories, their error messages and the gating-plugin registry."""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
import timm
import torch
from timm.models import register_model
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo import _plugins
from gaternet_zoo._plugins import GateSite, GatingPlugin, offsets_in_order, register_gating_plugin
from gaternet_zoo.layers.gates import GateSlot

# One intra-op thread: faster for these tiny tensors, and no OpenMP spin-waiting on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures('one_torch_thread')


# ------------------------------------------------------------------------------------------------ listings


def test_list_models_wildcards_and_aliases():
    all_models = gz.list_models()
    resnets = gz.list_models('gaternet_resnet*')
    assert resnets == [n for n in all_models if n.startswith('gaternet_resnet')]
    assert {'gaternet_resnet20', 'gaternet_resnet56', 'gaternet_resnet50'} <= set(resnets)
    assert 'gaternet_wrn28_10' not in resnets and 'gaternet' not in resnets
    assert gz.list_models('gated_*') == gz.list_models('gaternet_*')
    assert gz.list_models('gated_resnet2*') == ['gaternet_resnet20']
    assert gz.list_models(['gated_wrn*', 'gaternet_resnet5*']) == ['gaternet_resnet50', 'gaternet_resnet56',
                                                                   'gaternet_wrn28_10']
    assert gz.list_models('gaternet_resnet*', exclude_filters='*1*') == ['gaternet_resnet20', 'gaternet_resnet34',
                                                                         'gaternet_resnet50', 'gaternet_resnet56',
                                                                         'gaternet_resnetv2_50']


def test_listings_hold_canonical_names_once():
    for listing in (gz.list_models(), gz.list_models(include_backbones=True),
                    gz.list_models(include_tags=True, include_backbones=True)):
        assert listing and not [n for n in listing if n.startswith('gated_')]
        assert len(listing) == len(set(listing))
    assert 'cifar_resnet20' not in gz.list_models()
    assert 'cifar_resnet20' in gz.list_models(include_backbones=True)
    assert 'cifar_resnet20' in gz.list_backbones() and 'gaternet_resnet20' not in gz.list_backbones()


def test_is_model_and_pretrained_cfg_accept_aliases():
    assert gz.is_model('gaternet_resnet20') and gz.is_model('gated_resnet20') and gz.is_model('cifar_resnet20')
    assert not gz.is_model('gated_resnet21') and not gz.is_model('resnet50')
    assert gz.get_pretrained_cfg('gated_resnet20').architecture == 'gaternet_resnet20'


def test_list_plugins():
    plugins = gz.list_plugins()
    assert {'native', 'timm_resnet'} <= set(plugins)
    assert plugins == sorted(plugins)
    assert isinstance(gz.get_plugin('native'), gz.GatingPlugin)


def test_list_pretrained_entries_have_weights():
    pretrained = gz.list_pretrained()
    assert pretrained == gz.list_models(pretrained=True, include_backbones=True)
    for name in pretrained:  # may be empty while no weights are published
        arch, _, tag = name.partition('.')
        assert tag, f'{name} has no weight tag'
        cfg = gz.get_pretrained_cfg(name)
        assert cfg.hf_hub_id or cfg.file, f'{name} names no weights'
        assert gz.is_model(arch)


# ---------------------------------------------------------------------------------------------- factories


def test_alias_builds_the_canonical_model():
    model = gz.create_model('gated_wrn28_10')
    with torch.device('meta'):  # the canonical one only for its gate count: no memory, no init
        canonical = gz.create_model('gaternet_wrn28_10')
    assert isinstance(model, gz.GaterNet)
    assert model.pretrained_cfg['architecture'] == 'gaternet_wrn28_10'
    assert model.gate_size == canonical.gate_size == 4480
    assert model.backbone_name == 'cifar_wrn28_10'


def test_timm_create_model_after_import():
    model = timm.create_model('gaternet_resnet20')
    assert isinstance(model, gz.GaterNet) and model.gate_size == 336
    backbone = timm.create_model('cifar_resnet20', num_classes=100)
    assert isinstance(backbone, gz.CifarResNet) and backbone.num_classes == 100


def test_create_model_kwargs():
    model = gz.create_model('gaternet_resnet20', num_classes=100, bottleneck=16, in_chans=None)
    assert model.num_classes == 100 and model.gater.fc1.out_features == 16 and model.in_chans == 3
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


# ------------------------------------------------------------------------------------------------- errors


def test_unknown_model_suggests_close_names():
    with pytest.raises(gz.UnknownModelError, match='gaternet_resnet20') as info:
        gz.create_model('gaternet_resnet2')
    assert isinstance(info.value, KeyError)
    assert 'Unknown model' in str(info.value) and 'list_models' in str(info.value)


def test_unknown_model_that_is_a_timm_model_points_to_gate():
    with pytest.raises(gz.UnknownModelError, match=r"gaternet_zoo\.gate\('resnet50'\)"):
        gz.create_model('resnet50')


def test_unknown_tag():
    with pytest.raises(gz.UnknownModelError, match="Unknown weight tag 'no_such_tag' for 'gaternet_resnet20'"):
        gz.create_model('gaternet_resnet20.no_such_tag')


def test_name_with_slash_suggests_sources():
    with pytest.raises(ValueError) as info:
        gz.create_model('someorg/gaternet_resnet20')
    message = str(info.value)
    assert '"hf-hub:someorg/gaternet_resnet20"' in message
    assert '"local-dir:someorg/gaternet_resnet20"' in message


def test_unknown_plugin():
    with pytest.raises(KeyError, match="Did you mean 'timm_resnet'") as info:
        gz.get_plugin('timm_resnt')
    assert 'native' in str(info.value)  # lists the registered plugins
    with pytest.raises(KeyError, match="Unknown gating plugin 'no_such_plugin'"):
        gz.create_model('gaternet_resnet20', plugin='no_such_plugin')


def test_unsupported_backbone_lists_families():
    with pytest.raises(gz.UnsupportedBackboneError) as info:
        gz.gate('vit_tiny_patch16_224')
    message = str(info.value)
    assert 'vit_tiny_patch16_224' in message
    assert 'Supported families' in message and 'timm_resnet:' in message and 'native:' in message
    assert isinstance(info.value, ValueError)


def test_unknown_backbone():
    with pytest.raises(gz.UnsupportedBackboneError, match="Unknown backbone 'resnet_not_a_model'.*timm_resnet"):
        gz.gate('resnet_not_a_model')


@pytest.fixture(scope='module')
def resnet20():
    return gz.create_model('gaternet_resnet20').eval()


def test_wrong_input_channels(resnet20):
    with pytest.raises(ValueError, match='expects 3 input channels') as info:
        resnet20(torch.randn(2, 1, 32, 32))
    assert 'in_chans' in str(info.value) and 'permute' not in str(info.value)
    with pytest.raises(ValueError, match=r'channels-last .*x\.permute\(0, 3, 1, 2\)'):
        resnet20(torch.randn(2, 32, 32, 3))
    with pytest.raises(ValueError, match='expects 3 input channels'):
        resnet20.forward_gates(torch.randn(2, 4, 32, 32))


def test_three_dimensional_input(resnet20):
    with pytest.raises(ValueError, match=r'4-D input.*got shape \(3, 32, 32\).*unsqueeze\(0\)'):
        resnet20(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match='torch.Tensor'):
        resnet20.forward_gates([[0.0]])


def test_gates_of_wrong_width(resnet20):
    x = torch.randn(2, 3, 32, 32)
    for bad in (torch.ones(2, 335), torch.ones(3, 336), torch.ones(336)):
        with pytest.raises(ValueError, match=r'gates must have shape \(2, 336\)'):
            resnet20(x, gates=bad)
    with torch.no_grad():
        assert resnet20(x, gates=torch.ones(1, 336)).shape == (2, 10)


def test_pretrained_without_weights():
    with pytest.raises(ValueError, match='gaternet_resnet110 has no pretrained weights') as info:
        gz.create_model('gaternet_resnet110', pretrained=True)
    assert 'pretrained=False' in str(info.value) and 'local-dir:' in str(info.value)


def test_features_only_needs_the_gated_getter():
    # Only timm's getter wrapper calls forward_intermediates, which applies the gates (test_timm_contract.py).
    with pytest.raises(ValueError, match='feature_cls="getter"'):
        gz.create_model('gaternet_resnet20', features_only=True, feature_cls='list')


# ------------------------------------------------------------------------------------- third-party plugins


class _ToyBlock(nn.Module):
    """A residual block with another layout than timm's or the zoo's: the whole branch is one Sequential."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(chs, chs, 3, padding=1, bias=False), nn.BatchNorm2d(chs), nn.ReLU(),
            nn.Conv2d(chs, chs, 3, padding=1, bias=False), nn.BatchNorm2d(chs))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.branch(x))


class _ToyNet(nn.Module):
    """A minimal timm-contract classifier made of :class:`_ToyBlock`."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, width
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.body = nn.Sequential(*[_ToyBlock(width) for _ in range(depth)])
        self.head = nn.Linear(width, num_classes)

    def get_classifier(self, name_only: bool = False):
        return 'head' if name_only else self.head

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def gzt_toynet(pretrained: bool = False, **kwargs) -> _ToyNet:
    """Toy backbone registered into timm by this test module."""
    for key in ('pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir'):  # timm's loading options
        kwargs.pop(key, None)
    return _ToyNet(**kwargs)


@pytest.fixture
def isolated_plugins(monkeypatch):
    """A private copy of the plugin registry, restored after the test."""
    monkeypatch.setattr(_plugins, '_PLUGINS', dict(_plugins._PLUGINS))
    monkeypatch.setattr(_plugins, '_entry_points_loaded', True)
    return _plugins._PLUGINS


@pytest.fixture
def toy_plugin(isolated_plugins):
    @register_gating_plugin
    class ToyPlugin(GatingPlugin):
        name = 'gzt_toy'
        description = 'toy blocks of the tests'
        model_patterns = ('gzt_toy*',)

        def supports(self, model: nn.Module) -> bool:
            return isinstance(model, _ToyNet)

        def gate_sites(self, model: nn.Module) -> list[GateSite]:
            return offsets_in_order(
                GateSite(f'body.{i}', block.branch[-1].num_features, conv=f'body.{i}.branch.3')
                for i, block in enumerate(model.body))

        def install(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
            model.get_submodule(site.name).branch.append(slot)  # parameter-free: state_dict keys unchanged

    return ToyPlugin


def test_toy_backbone_unsupported_without_its_plugin(isolated_plugins):
    with pytest.raises(gz.UnsupportedBackboneError, match='gzt_toynet'):
        gz.gate('gzt_toynet', gater='cifar_resnet20', num_classes=4)


def test_third_party_plugin_is_used_by_gate(toy_plugin):
    assert 'gzt_toy' in gz.list_plugins()
    assert isinstance(gz.get_plugin('gzt_toy'), toy_plugin)
    torch.manual_seed(0)
    model = gz.gate('gzt_toynet', gater='cifar_resnet20', num_classes=4).eval()
    assert model.plugin_name == 'gzt_toy'
    assert model.gate_size == 16 and [s.name for s in model.gate_sites] == ['body.0', 'body.1']
    plain = timm.create_model('gzt_toynet', num_classes=4)
    assert list(model.backbone.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(model.backbone.state_dict(), strict=True)
    plain.eval()

    x = torch.randn(2, 3, 32, 32)
    gates = torch.ones(2, 16)
    gates[:, 8:] = 0
    seen = {}
    with torch.no_grad():
        assert torch.equal(model(x, gates=torch.ones(2, 16)), plain(x))
        handle = model.backbone.body[1].register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
        model(x, gates=gates)
        handle.remove()
        logits, used = model.forward_with_gates(x)
    assert torch.equal(seen['out'], seen['inp'])  # second block's branch switched off
    assert logits.shape == (2, 4) and used.shape == (2, 16)
    assert gz.gate('gzt_toynet', gater='cifar_resnet20', plugin='gzt_toy').plugin_name == 'gzt_toy'


def test_duplicate_plugin_name_raises(toy_plugin):
    with pytest.raises(ValueError, match="'gzt_toy' is already registered"):
        @register_gating_plugin
        class Again(GatingPlugin):
            name = 'gzt_toy'

    with pytest.raises(ValueError, match="'native' is already registered"):
        @register_gating_plugin
        class Native(GatingPlugin):
            name = 'native'

    assert isinstance(gz.get_plugin('gzt_toy'), toy_plugin)
    with pytest.raises(TypeError):
        register_gating_plugin(object)


def test_entry_point_plugin_is_loaded(tmp_path, monkeypatch, caplog, isolated_plugins):
    site = tmp_path / 'site'
    dist_info = site / 'gzt_ep_demo-1.0.dist-info'
    dist_info.mkdir(parents=True)
    (dist_info / 'METADATA').write_text('Metadata-Version: 2.1\nName: gzt-ep-demo\nVersion: 1.0\n')
    (dist_info / 'entry_points.txt').write_text(textwrap.dedent('''\
        [gaternet_zoo.plugins]
        demo = gzt_ep_demo_plugin:DemoPlugin
        broken = gzt_ep_no_such_module:Nope
        '''))
    (site / 'gzt_ep_demo_plugin.py').write_text(textwrap.dedent('''\
        from gaternet_zoo import GatingPlugin


        class DemoPlugin(GatingPlugin):
            name = 'gzt_entry_point_demo'
            description = 'plugin found through an entry point'

            def supports(self, model):
                return False
        '''))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(_plugins, '_entry_points_loaded', False)
    assert 'gzt_entry_point_demo' not in isolated_plugins
    try:
        with caplog.at_level(logging.WARNING, logger='gaternet_zoo._plugins'):
            names = gz.list_plugins()
        assert 'gzt_entry_point_demo' in names and {'native', 'timm_resnet'} <= set(names)
        plugin = gz.get_plugin('gzt_entry_point_demo')
        assert type(plugin).__module__ == 'gzt_ep_demo_plugin'
        assert _plugins._entry_points_loaded
        # A broken entry point is reported, not raised.
        assert any('broken' in r.getMessage() for r in caplog.records)
    finally:
        sys.modules.pop('gzt_ep_demo_plugin', None)
