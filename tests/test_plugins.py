"""Contract suite of the gating plugins: every registered plugin x each of its representative models.

For each case the plain timm model is built, given random norm scales (as after training: timm zero-initialises
or shrinks some of them, which would make gates no-ops and several checks unable to fail), saved with
safetensors and loaded strictly into the gated backbone of a GaterNet. The checks are the ones every plugin must
pass, whatever its family: ``state_dict`` keys equal timm's, timm's weights load unchanged, all-ones gates give the
plain logits exactly, all-zero gates change them, every slot runs once per forward in offset order (and is called
while ``torch.fx`` traces the backbone), the gradient reaches the gater, ``gate_size`` is the sum of the sites'
channels and every site names a real conv for the MAC count. Inputs are tiny (batch 2, 64x64).

The third-party example plugin (``examples/gaternet_zoo_rexnet``, gating timm's ReXNet) is pip-installed into a
temporary folder on ``sys.path`` when this module is collected, so that its entry point is found and the contract
cases include it.
"""
from __future__ import annotations

import atexit
import contextlib
import copy
import importlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from tiers import first_per_group, slow_except
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo import _plugins
from gaternet_zoo._plugins import BlockGatingPlugin, GatePoint, find_plugin, plugin_for_name
from gaternet_zoo.layers.gates import GateSlot
from gaternet_zoo.utils.macs import count_macs, gaternet_macs

pytestmark = pytest.mark.usefixtures('one_torch_thread')

BATCH, SIDE, NUM_CLASSES = 2, 64, 5
GATER = 'cifar_resnet20'  # the smallest gater; other gaters are checked in test_any_timm_model_as_gater
EXAMPLE = Path(__file__).resolve().parents[1] / 'examples' / 'gaternet_zoo_rexnet'

#: Block types no registered timm model name reaches: (plugin, model, backbone_args).
EXTRA_CASES = [('timm_resnetv2', 'resnetv2_50', {'preact': False})]  # post-activation ResNetV2 Bottleneck


def _example_plugin_installed() -> bool:
    return any(ep.name == 'rexnet' and ep.value.startswith('gaternet_zoo_rexnet')
               for ep in importlib.metadata.entry_points(group=_plugins.ENTRY_POINT_GROUP))


def _install_example() -> None:
    """pip-install the example plugin package into a temporary folder on ``sys.path``.

    No dependencies, no index, no build isolation: offline, a few seconds, and the test environment itself is left
    as it was. A copy of the package is built, so that the build leaves nothing in the source tree.
    """
    if not _example_plugin_installed():
        work = Path(tempfile.mkdtemp(prefix='gaternet_zoo_example_plugin_'))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        source, target = work / 'src', work / 'site'
        shutil.copytree(EXAMPLE, source)
        done = subprocess.run(
            [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '--no-index',
             '--disable-pip-version-check', '--target', str(target), str(source)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(
                f'Could not pip-install the example plugin {EXAMPLE} (exit code {done.returncode}):\n{done.stderr}\n'
                'It is built offline without build isolation, with the setuptools of this environment: install the '
                'dev extra (pip install -e ".[dev]", which requires setuptools>=70.1).')
        sys.path.append(str(target))
        importlib.invalidate_caches()
    # Entry points are read once per process: read them again now that the package is there.
    _plugins._entry_points_loaded = False
    _plugins._load_entry_points()


_install_example()  # before collection reads list_plugins(), so that the example plugin gets contract cases too

CASES = [(p, m, {}) for p in gz.list_plugins() for m in gz.get_plugin(p).representative_models] + EXTRA_CASES


def _case_id(case: tuple[str, str, dict]) -> str:
    plugin, model, kwargs = case
    return f'{plugin}-{model}' + ''.join(f'-{k}={v}' for k, v in kwargs.items())


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random norm scales/shifts and layer scales, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5, generator=g)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1, generator=g)
        for name, p in model.named_parameters():
            if name.endswith('.gamma'):  # ConvNeXt's and MobileNetV4's layer scales
                p.uniform_(0.5, 1.5, generator=g)
    return model


def _slots(module: nn.Module) -> list[GateSlot]:
    return [m for m in module.modules() if isinstance(m, GateSlot)]


# Fast tier: the first representative model of each plugin; the others (and the extra cases) run in `make test`.
FAST_CASES = {_case_id(c) for c in first_per_group(CASES, group=lambda c: c[0]) if c not in EXTRA_CASES}


@pytest.fixture(scope='module', params=slow_except(CASES, fast=FAST_CASES, key=_case_id), ids=_case_id)
def case(request, tmp_path_factory):
    plugin_name, model_name, backbone_args = request.param
    plugin = gz.get_plugin(plugin_name)
    kwargs = {**plugin.backbone_args(model_name), **backbone_args}
    torch.manual_seed(0)
    plain = _randomise(timm.create_model(model_name, num_classes=NUM_CLASSES, **kwargs)).eval()
    weights = tmp_path_factory.mktemp('weights') / 'model.safetensors'
    save_model(plain, str(weights))
    torch.manual_seed(1)
    model = gz.gate(model_name, gater=GATER, num_classes=NUM_CLASSES, backbone_args=backbone_args).eval()
    model_keys_before_load = list(model.backbone.state_dict())
    load_model(model.backbone, str(weights), strict=True)
    x = torch.randn(BATCH, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    return dict(plugin=plugin, name=model_name, plain=plain, model=model, x=x, keys=model_keys_before_load,
                backbone_args=backbone_args)


def test_plugin_is_found_by_name_and_by_model(case):
    plugin, model = case['plugin'], case['model']
    assert plugin.matches_name(case['name'])
    assert plugin_for_name(case['name']) is plugin
    assert plugin.supports(case['plain'])
    assert find_plugin(case['plain'], case['name']) is plugin
    assert model.plugin_name == plugin.name
    assert case['name'] in plugin.supported_models()


def test_state_dict_keys_are_timms(case):
    plain_sd, model_sd = case['plain'].state_dict(), case['model'].backbone.state_dict()
    assert case['keys'] == list(plain_sd) == list(model_sd)
    assert all(model_sd[k].shape == plain_sd[k].shape for k in plain_sd)
    # ... and the weights loaded from the safetensors file are timm's, unchanged.
    assert all(torch.equal(model_sd[k], plain_sd[k]) for k in plain_sd)


def test_all_ones_gates_give_the_plain_logits(case):
    model, x = case['model'], case['x']
    with torch.no_grad():
        expected = case['plain'](x)
        assert torch.equal(model(x, gates=torch.ones(BATCH, model.gate_size)), expected)
        assert torch.equal(model(x, gates=torch.ones(1, model.gate_size)), expected)
        assert torch.equal(model.backbone(x), expected)  # no gates in the context: the plain backbone


def test_all_zero_gates_change_the_logits(case):
    model, x = case['model'], case['x']
    with torch.no_grad():
        ones = model(x, gates=torch.ones(BATCH, model.gate_size))
        zeros = model(x, gates=torch.zeros(BATCH, model.gate_size))
        # Closing one site's gates alone changes the logits too: each site is on the path to the output.
        last = model.gate_sites[-1]
        one_closed = torch.ones(BATCH, model.gate_size)
        one_closed[:, last.offset:last.offset + last.num_channels] = 0
        partly = model(x, gates=one_closed)
    assert (ones - zeros).abs().max() > 1e-4
    assert (ones - partly).abs().max() > 1e-6


def test_every_slot_runs_once_per_forward_in_offset_order(case):
    model, x = case['model'], case['x']
    slots = _slots(model.backbone)
    assert len(slots) == len(model.gate_sites)
    calls = []
    handles = [s.register_forward_hook(lambda m, i, o: calls.append((m.offset, m.name, o.shape[1]))) for s in slots]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    assert calls == [(s.offset, s.name, s.num_channels) for s in model.gate_sites]


def test_gate_size_is_the_sum_of_the_sites(case):
    model = case['model']
    sites = model.gate_sites
    assert sites and model.gate_size == sum(s.num_channels for s in sites) == model.gater.fc2.out_features
    assert [s.offset for s in sites] == [sum(t.num_channels for t in sites[:i]) for i in range(len(sites))]
    assert len({s.name for s in sites}) == len(sites)
    assert all(not list(s.parameters()) and not list(s.buffers()) for s in _slots(model.backbone))


def test_every_site_names_a_real_conv(case):
    model, x = case['model'], case['x']
    _, per_module = count_macs(model.backbone, x[:1])
    macs = gaternet_macs(model, (3, SIDE, SIDE))
    for site in model.gate_sites:
        assert site.conv.startswith(site.name + '.'), site
        conv = model.backbone.get_submodule(site.conv)
        assert isinstance(conv.weight, nn.Parameter), site
        assert getattr(conv, 'out_channels', getattr(conv, 'out_features', None)) == site.num_channels, site
        assert per_module.get(site.conv, 0) > 0, f'no MACs counted under {site.conv!r}'
        assert macs['gated_conv_macs'][site.name] == per_module[site.conv]


def test_gradient_reaches_the_gater(case):
    model, x = case['model'], case['x']
    model.train()
    try:
        logits, gates = model.forward_with_gates(x)
        F.cross_entropy(logits, torch.arange(BATCH) % NUM_CLASSES).backward()
        fc2 = model.gater.fc2.weight.grad
        encoder_grads = [p.grad for p in model.gater.encoder.parameters() if p.grad is not None]
        assert fc2 is not None and fc2.abs().sum() > 0
        assert encoder_grads and any(g.abs().sum() > 0 for g in encoder_grads)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


@contextlib.contextmanager
def _current_gates(model: nn.Module, gates: torch.Tensor):
    """Make ``gates`` the model's current gates outside a GaterNet forward call (to trace the backbone alone)."""
    context = model._gate_context
    if hasattr(context, 'push'):  # a per-call context (push/pop)
        depth = context.push(gates)
        try:
            yield
        finally:
            context.pop(depth)
    else:
        context.gates = gates
        try:
            yield
        finally:
            context.gates = None


class _TimmTracer(torch.fx.Tracer):
    """torch.fx with timm's leaf modules (norm-act layers, conv variants), as timm's feature extraction traces."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, tuple(timm.layers.get_notrace_modules())) or super().is_leaf_module(
            m, module_qualified_name)


def _traceable(tracer: torch.fx.Tracer, module: nn.Module) -> str:
    """'' if ``tracer`` traces ``module``, else why not."""
    try:
        tracer.trace(module)
    except Exception as e:
        return f'{type(e).__name__}: {e}'.splitlines()[0]
    return ''


@pytest.mark.parametrize('tracer_cls', [torch.fx.Tracer, _TimmTracer], ids=['torch_fx', 'timm_leaves'])
def test_torch_fx_tracing_sees_every_slot(case, tracer_cls):
    """Every slot is called while torch.fx traces the backbone: none hides in a hook of a leaf module (a norm, a
    conv), which tracing skips, so a traced graph (timm's feature extraction, quantisation) keeps its gates."""
    model, plain = case['model'], case['plain']
    why = _traceable(tracer_cls(), plain)
    if why:
        pytest.skip(f'{case["name"]} itself is not traceable by torch.fx ({why})')
    calls = []
    handles = [s.register_forward_pre_hook(lambda m, a: calls.append(m.name)) for s in _slots(model.backbone)]
    try:
        tracer_cls().trace(model.backbone)
    finally:
        for h in handles:
            h.remove()
    assert calls == [s.name for s in model.gate_sites]


def test_traced_backbone_applies_the_gates(case):
    """With the current gates set while tracing, the traced backbone gives the gated backbone's logits."""
    model, plain, x = case['model'], case['plain'], case['x']
    gates = (torch.rand(1, model.gate_size, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    gates = gates.expand(BATCH, -1)
    if _traceable(_TimmTracer(), plain):
        pytest.skip(f'{case["name"]} itself is not traceable by torch.fx')
    with _current_gates(model, gates):
        why = _traceable(torch.fx.Tracer(), _slots(model.backbone)[0])
        if why:
            pytest.skip(f'GateSlot is not traceable by torch.fx with gates set on this branch ({why})')
        with torch.no_grad():
            expected = model.backbone(x)
        traced = torch.fx.GraphModule(model.backbone, _TimmTracer().trace(model.backbone))
    with torch.no_grad():
        assert torch.equal(traced(x), expected)
        assert not torch.equal(expected, plain(x))


# ----------------------------------------------------------------------------------------- the plugin base


BLOCK_PLUGINS = [p for p in gz.list_plugins() if isinstance(gz.get_plugin(p), BlockGatingPlugin)]


def test_deepcopy_gets_its_own_slots():
    """The hooks of a deep copy (an EMA model) must call the copy's slots, which read the copy's gates."""
    model = gz.gate('test_efficientnet', gater=GATER, num_classes=NUM_CLASSES).eval()
    _randomise(model.backbone)
    twin = copy.deepcopy(model)
    x = torch.randn(BATCH, 3, SIDE, SIDE)
    calls = []
    for s in _slots(model.backbone):
        s.register_forward_hook(lambda m, i, o: calls.append(m.name))
    with torch.no_grad():
        ones, zeros = model(x, gates=torch.ones(1, model.gate_size)), model(x, gates=torch.zeros(1, model.gate_size))
        calls.clear()
        assert torch.equal(twin(x, gates=torch.zeros(1, twin.gate_size)), zeros)
        assert torch.equal(twin(x, gates=torch.ones(1, twin.gate_size)), ones)
    assert calls == []  # the original's slots did not run for the copy


def test_blocks_without_residual_are_gated():
    """timm skips ``drop_path`` in blocks without a skip; their gates must run all the same."""
    model = gz.gate('mobilenetv3_small_050', gater=GATER, num_classes=NUM_CLASSES).eval()
    no_skip = [s for s in model.gate_sites if not model.backbone.get_submodule(s.name).has_skip]
    assert len(no_skip) >= 3
    site = no_skip[1]
    gates = torch.ones(1, model.gate_size)
    gates[:, site.offset:site.offset + site.num_channels] = 0
    seen = {}
    handle = model.backbone.get_submodule(site.name).register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        model(torch.randn(1, 3, SIDE, SIDE), gates=gates)
    handle.remove()
    assert torch.count_nonzero(seen['out']) == 0  # the block's whole output is its gated branch


def test_zero_init_last_is_turned_off_for_the_families_that_have_it():
    assert plugin_for_name('regnety_002').backbone_args('regnety_002') == {'zero_init_last': False}
    assert plugin_for_name('regnetz_005').backbone_args('regnetz_005') == {}  # set by timm's entry point
    assert plugin_for_name('resnet50').backbone_args('resnet50') == {'zero_init_last': False}
    model = gz.gate('regnetx_002', gater=GATER)
    last_norms = [m.conv3.bn.weight for m in model.backbone.modules() if hasattr(m, 'zero_init_last')]
    assert last_norms and all(w.abs().sum() > 0 for w in last_norms)
    # The user's backbone_args win over the plugin's.
    model = gz.gate('regnetx_002', gater=GATER, backbone_args={'zero_init_last': True})
    assert all(m.conv3.bn.weight.abs().sum() == 0 for m in model.backbone.modules() if hasattr(m, 'zero_init_last'))


def test_install_twice_raises():
    plugin = gz.get_plugin('timm_densenet')
    model = gz.gate('densenet121', gater=GATER)
    site = model.gate_sites[0]
    with pytest.raises(RuntimeError, match='already holds a gate'):
        plugin.install(model.backbone, site, _slots(model.backbone)[0])


def test_slot_attribute_clash_names_the_fix(monkeypatch):
    class Block(nn.Sequential):
        pass

    class Clash(BlockGatingPlugin):
        name = 'gzt_clash'
        gate_points = (GatePoint(Block, conv='0', residual=False),)

    block = Block(nn.Conv2d(3, 4, 1))
    block.gate = nn.ReLU()
    model = nn.Sequential(block)
    plugin = Clash()
    assert plugin.supports(model)
    site = plugin.gate_sites(model)[0]
    assert site.num_channels == 4 and site.conv == '0.0'
    with pytest.raises(RuntimeError, match='set `slot_attr`'):
        plugin.install(model, site, nn.Identity())


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
@pytest.mark.parametrize('plugin_name', [p for p in BLOCK_PLUGINS if p != 'timm_efficientnet'])
def test_block_plugin_supports_every_model_it_lists(plugin_name):
    """Every timm model a plugin lists builds (on the meta device: no memory) and is supported, with its sites."""
    plugin = gz.get_plugin(plugin_name)
    names = plugin.supported_models()
    assert names
    for name in names:
        with torch.device('meta'):
            backbone = timm.create_model(name, **plugin.backbone_args(name))
        assert find_plugin(backbone, name) is plugin, name
        assert plugin.gate_sites(backbone), name


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_efficientnet_plugin_supports_a_sample_of_its_models():
    """Every 4th of the ~150 EfficientNet/MobileNet models (all of them take ~30 s; all passed when written)."""
    plugin = gz.get_plugin('timm_efficientnet')
    for name in plugin.supported_models()[::4]:
        with torch.device('meta'):
            backbone = timm.create_model(name)
        assert find_plugin(backbone, name) is plugin, name


def test_new_families_are_not_claimed_by_the_resnet_plugin():
    assert plugin_for_name('resnetv2_50').name == 'timm_resnetv2'
    assert plugin_for_name('resnet50').name == 'timm_resnet'
    assert plugin_for_name('resnet50_clip') is None  # byobnet: no plugin
    with pytest.raises(gz.UnsupportedBackboneError, match='timm_convnext'):
        gz.gate('test_vit')


# --------------------------------------------------------------------------------------------- the gater


@pytest.mark.parametrize('gater', ['mobilenetv3_small_050', 'test_convnext', 'test_efficientnet'])
def test_any_timm_model_as_gater(gater):
    model = gz.gate('test_resnet', gater=gater, num_classes=NUM_CLASSES).eval()
    assert model.gater_name == gater
    with torch.no_grad():
        logits, gates = model.forward_with_gates(torch.randn(BATCH, 3, SIDE, SIDE))
    assert logits.shape == (BATCH, NUM_CLASSES) and gates.shape == (BATCH, model.gate_size)


def test_gater_pretrained_flag_is_apart_from_the_backbones(monkeypatch):
    seen = []
    real = timm.create_model

    def spy(name, *args, **kwargs):
        seen.append((name, bool(kwargs.get('pretrained'))))
        kwargs['pretrained'] = False  # no network here: record the request only
        return real(name, *args, **kwargs)

    monkeypatch.setattr(timm, 'create_model', spy)
    # Nor the pre-download check that an unreachable Hub fails at once (tests/test_first_hour.py tests it).
    monkeypatch.setattr(sys.modules['gaternet_zoo.models.gaternet'], 'timm_pretrained_args',
                        lambda name, args, option: args)
    gz.gate('test_resnet', gater='test_efficientnet', pretrained_gater=True)
    assert ('test_resnet', False) in seen and ('test_efficientnet', True) in seen
    seen.clear()
    gz.gate('test_resnet', gater='test_efficientnet', pretrained_backbone=True, pretrained_gater=False)
    assert ('test_resnet', True) in seen and ('test_efficientnet', False) in seen
    seen.clear()
    gz.gate('test_resnet', gater='test_efficientnet', pretrained_backbone=True)  # default: follows the backbone
    assert ('test_resnet', True) in seen and ('test_efficientnet', True) in seen
    with pytest.raises(ValueError, match='Unknown gater'):
        gz.gate('test_resnet', gater='no_such_gater')


# ------------------------------------------------------------------------------------- third-party plugin


def test_example_plugin_is_installed_and_registered():
    assert _example_plugin_installed()
    assert 'rexnet' in gz.list_plugins()
    plugin = gz.get_plugin('rexnet')
    assert isinstance(plugin, BlockGatingPlugin)
    assert type(plugin).__module__ == 'gaternet_zoo_rexnet'
    assert ('rexnet', 'rexnet_100', {}) in CASES  # so the whole contract suite runs on it
    assert 'rexnetr_200' in plugin.supported_models()
    model = gz.gate('rexnet_100', gater=GATER, num_classes=NUM_CLASSES)
    assert model.plugin_name == 'rexnet'
    # Blocks with and without the (partial) shortcut are gated alike.
    blocks = [model.backbone.get_submodule(s.name) for s in model.gate_sites]
    assert {b.use_shortcut for b in blocks} == {True, False}


def test_example_plugin_exports_static_with_closed_filters():
    """The example declares where a closed filter is zeroed (GatePoint.zero_at), so a ReXNet GaterNet whose gates are
    constant exports static exactly: nothing pruned, no branch dropped (it knows no shortcut), the logits the same."""
    model = gz.gate('rexnet_100', gater=GATER, num_classes=NUM_CLASSES).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for norm in (m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)):
            # Random norms: with fresh ones a filter zeroed at the wrong place would output 0 all the same.
            for tensor in (norm.weight, norm.bias, norm.running_mean):
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            norm.running_var.uniform_(0.5, 2.0, generator=generator)
        model.gater.fc2.bias.fill_(50.0)
        model.gater.fc2.bias[::3] = -50.0  # every third gate always closed, the others always open
    x = torch.randn(BATCH, 3, SIDE, SIDE, generator=generator)
    stats = gz.GateStatistics(model.gate_sites)
    with torch.no_grad():
        stats.update(model.forward_gates(x))
        static = gz.export_static(model, stats)
        info = static.pretrained_cfg['static_export']
        assert (info['plugin'], info['filters_removed'], info['branches_dropped']) == ('rexnet', 0, 0)
        assert info['filters_zeroed'] == len(range(0, model.gate_size, 3)) and info['exact']
        expected = model(x)
        torch.testing.assert_close(static(x), expected, rtol=1e-4, atol=1e-4)
        model.gater.fc2.bias.fill_(50.0)
        assert not torch.allclose(model(x), expected, rtol=1e-3, atol=1e-3)  # the closed filters mattered


# ------------------------------------------------------------------------------------------- zoo names

#: zoo name -> (backbone, plugin, default gater, gates)
ZOO = {
    'gaternet_resnetv2_50': ('resnetv2_50', 'timm_resnetv2', 'resnet18', 15104),
    'gaternet_convnext_tiny': ('convnext_tiny', 'timm_convnext', 'resnet18', 6624),
    'gaternet_efficientnet_b0': ('efficientnet_b0', 'timm_efficientnet', 'mobilenetv3_small_100', 1808),
    'gaternet_mobilenetv3_large_100': ('mobilenetv3_large_100', 'timm_efficientnet', 'mobilenetv3_small_100', 2168),
    'gaternet_regnety_016': ('regnety_016', 'timm_regnet', 'mobilenetv3_small_100', 8304),
    'gaternet_densenet121': ('densenet121', 'timm_densenet', 'mobilenetv3_small_100', 1856),
}


@pytest.mark.parametrize('name', list(ZOO))
def test_zoo_names_of_the_new_families(name):
    backbone, plugin, gater, gates = ZOO[name]
    assert name in gz.list_models() and gz.is_model(name.replace('gaternet_', 'gated_'))
    model = gz.create_model(name.replace('gaternet_', 'gated_'), num_classes=NUM_CLASSES).eval()
    assert (model.backbone_name, model.plugin_name, model.gater_name, model.gate_size) == (backbone, plugin, gater,
                                                                                          gates)
    assert f'{gates} gates' in timm.models.model_entrypoint(name).__doc__
    cfg, timm_cfg = model.pretrained_cfg, timm.models.get_pretrained_cfg(backbone)
    assert tuple(cfg['input_size']) == timm_cfg.input_size and tuple(cfg['mean']) == timm_cfg.mean
    for conv in cfg['first_conv']:
        assert isinstance(model.get_submodule(conv), nn.Conv2d)
    assert model.get_submodule(cfg['classifier']) is model.get_classifier()
    x = torch.randn(BATCH, 3, SIDE, SIDE)
    model.train()
    F.cross_entropy(model(x), torch.arange(BATCH)).backward()
    assert model.gater.fc2.weight.grad.abs().sum() > 0


def test_models_page_table_lists_every_zoo_model():
    """docs/models.md holds the table tools/gen_model_table.py prints (regenerate it after adding a model)."""
    page = (Path(__file__).resolve().parents[1] / 'docs' / 'models.md').read_text()
    rows = {cells[1].strip('` '): cells for cells in (line.split('|') for line in page.splitlines())
            if len(cells) > 2 and cells[1].strip().startswith('`gaternet_')}
    assert set(rows) == set(gz.list_models()) - {'gaternet'}
    for name, (backbone, plugin, gater, gates) in ZOO.items():
        cells = [c.strip(' `') for c in rows[name]]
        assert cells[2:5] == [backbone, plugin, gater] and cells[8] == str(gates)


def test_hubconf_has_the_new_zoo_names():
    hubconf = (Path(__file__).resolve().parents[1] / 'hubconf.py').read_text()
    for name in ZOO:
        assert f'\ndef {name}(' in hubconf and f'\ndef {name.replace("gaternet_", "gated_")}(' in hubconf


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_plugins_lists_each_plugin_with_its_model_count(capsys):
    from gaternet_zoo.cli import main

    assert main(['plugins', '--json']) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r['plugin'] for r in rows] == gz.list_plugins()
    counts = {r['plugin']: r['models'] for r in rows}
    assert counts == {p: len(gz.get_plugin(p).supported_models()) for p in gz.list_plugins()}
    assert counts['timm_efficientnet'] > 100 and counts['timm_densenet'] == 6
    assert main(['plugins']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['plugin', 'models', 'covers']
    assert any(line.split()[:2] == ['timm_regnet', str(counts['timm_regnet'])] for line in lines)
    assert lines[-1].split() == ['total', str(sum(counts.values()))]
    assert main(['plugins', 'timm_densenet']) == 0
    assert capsys.readouterr().out.split() == gz.get_plugin('timm_densenet').supported_models()
    assert main(['plugins', 'timm_densnet']) == 2
    assert "Did you mean 'timm_densenet'" in capsys.readouterr().err
