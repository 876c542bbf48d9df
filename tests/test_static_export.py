"""Static export: a GaterNet whose kept gates are all constant becomes its plain backbone, with the same logits."""
from __future__ import annotations

import collections
import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from builders import SHORTCUT_FAMILIES

import gaternet_zoo as gz
from gaternet_zoo import GateStatistics, InputDependentGatesError, StaticBackbone, export_static, prune_gaternet
from gaternet_zoo.layers import GateSlot
from gaternet_zoo.layers.pruning import KeptChannels, ScatterChannels
from gaternet_zoo.utils import count_params

pytestmark = pytest.mark.usefixtures('one_torch_thread')

WEIGHTS = Path(__file__).resolve().parents[1] / 'weights'


def _stats(model: torch.nn.Module, x: torch.Tensor) -> GateStatistics:
    stats = GateStatistics(model.gate_sites)
    with torch.no_grad():
        stats.update(model.eval().forward_gates(x))
    return stats


def _constant_gates(model: torch.nn.Module, closed_every: int = 3) -> None:
    """Make every gate constant: every ``closed_every``-th always closed, the others always open."""
    with torch.no_grad():
        model.gater.fc2.bias.fill_(50.0)
        if closed_every:
            model.gater.fc2.bias[::closed_every] = -50.0


def _follow_the_image(model: torch.nn.Module, x: torch.Tensor, gates: list[int], open_fraction: float = 0.5) -> None:
    """Make ``gates`` open for about ``open_fraction`` of the images of ``x`` (a logit bias at that quantile)."""
    with torch.no_grad():
        model.gater.fc2.bias[gates] = 0.0
        logits = model.forward_gate_logits(x)[:, gates]
        model.gater.fc2.bias[gates] = -logits.quantile(1 - open_fraction, dim=0) + 1e-4


def _randomise_norms(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)


def _widths(static: StaticBackbone, model: torch.nn.Module) -> dict[str, int]:
    return {s.name: static.backbone.get_submodule(s.conv).out_channels for s in model.gate_sites}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == 'test_resnet':  # timm_resnet: BasicBlock and Bottleneck, a small gater
        return gz.gate('test_resnet', gater='cifar_resnet8', num_classes=10).eval()
    return gz.create_model(name).eval()


@pytest.mark.parametrize('name,size', [('gaternet_resnet20', 32), ('test_resnet', 64)])
def test_static_export_computes_what_the_gaternet_computes(name: str, size: int, tmp_path: Path) -> None:
    model = _model(name)
    _constant_gates(model)
    _randomise_norms(model)
    x = torch.randn(4, 3, size, size)
    stats = _stats(model, x)
    assert stats.counts()['input_dependent'] == 0
    static = export_static(model, stats, calibration='random images', source=name)
    assert isinstance(static, StaticBackbone) and not static.training
    assert not hasattr(static, 'gater') and not any(isinstance(m, GateSlot) for m in static.modules())
    # Every block of both plugins knows its shortcut: the kept channels are added into it, nothing is scattered.
    assert any(isinstance(m, KeptChannels) for m in static.modules())
    assert not any(isinstance(m, ScatterChannels) for m in static.modules())
    assert count_params(static) < count_params(model.backbone)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(static(x), expected, rtol=1e-5, atol=1e-5)
    info = static.pretrained_cfg['static_export']
    assert info['exact'] and info['gates_input_dependent'] == 0 and info['filters_removed'] > 0
    assert info['source'] == name and info['calibration'] == 'random images'
    # The Hub format round trip rebuilds the pruned structure before a strict load.
    static.save_pretrained(tmp_path / 'static')
    config = json.loads((tmp_path / 'static' / 'config.json').read_text())
    assert config['architecture'] == 'static_backbone'
    assert config['model_args']['pruned_filters'] == static.pruned_filters
    for loaded in (gz.create_model(f'local-dir:{tmp_path / "static"}'), StaticBackbone.from_pretrained(
            tmp_path / 'static')):
        assert isinstance(loaded, StaticBackbone) and loaded.pruned_filters == static.pruned_filters
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x), expected, rtol=1e-5, atol=1e-5)
        assert loaded.pretrained_cfg['static_export'] == info
    assert 'without its gater' in (tmp_path / 'static' / 'README.md').read_text()


@pytest.mark.parametrize('round_to', [8, 16])
def test_rounded_static_export_keeps_multiples_and_the_logits(round_to: int) -> None:
    model = _model('gaternet_resnet20')
    _constant_gates(model, closed_every=3)
    _randomise_norms(model)
    x = torch.randn(4, 3, 32, 32)
    stats = _stats(model, x)
    exact, rounded = export_static(model, stats), export_static(model, stats, round_to=round_to)
    widths = _widths(rounded, model)
    for site in model.gate_sites:
        assert widths[site.name] % round_to == 0 or widths[site.name] == site.num_channels
        assert widths[site.name] >= _widths(exact, model)[site.name]
    info = rounded.pretrained_cfg['static_export']
    assert info['round_to'] == round_to and info['filters_zeroed'] > 0  # closed filters added back, at 0
    assert info['filters_removed'] + info['filters_zeroed'] == exact.pretrained_cfg['static_export']['filters_removed']
    with torch.no_grad():
        torch.testing.assert_close(rounded(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_pruned_gaternet_exports_with_its_own_pruning() -> None:
    model = _model('gaternet_resnet20')
    _constant_gates(model)
    _randomise_norms(model)
    x = torch.randn(4, 3, 32, 32)
    stats = _stats(model, x)
    pruned = prune_gaternet(model, stats, round_to=8)
    static = export_static(pruned, _stats(pruned, x))
    assert static.pruned_filters == pruned.pruned_filters
    assert static.pretrained_cfg['static_export']['round_to'] == 8
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='already pruned'):
        export_static(pruned, stats, round_to=4)


def test_input_dependent_gates_are_refused_with_where_and_what_to_do() -> None:
    model = _model('gaternet_resnet20')
    _constant_gates(model)
    x = torch.randn(8, 3, 32, 32)
    _follow_the_image(model, x, [1, 20, 200])
    stats = _stats(model, x)
    dependent = stats.counts()['input_dependent']
    assert dependent == 3
    with pytest.raises(InputDependentGatesError) as info:
        export_static(model, stats)
    message = str(info.value)
    assert f'{dependent} of the 336 filter gates are input-dependent' in message
    assert 'stage1.block1' in message and 'keeps the gater' in message and '--input-dependent open' in message
    with pytest.raises(ValueError, match='input_dependent'):
        export_static(model, stats, input_dependent='sometimes')


@pytest.mark.parametrize('policy', ['open', 'majority'])
def test_fixing_input_dependent_gates_is_explicit_and_recorded(policy: str) -> None:
    model = _model('gaternet_resnet20')
    _constant_gates(model)
    _randomise_norms(model)
    x = torch.randn(8, 3, 32, 32)
    _follow_the_image(model, x, [1, 20], open_fraction=0.75)
    _follow_the_image(model, x, [200, 300], open_fraction=0.25)
    stats = _stats(model, x)
    assert stats.counts()['input_dependent'] == 4
    rate = stats.firing_rate
    assert (rate[[1, 20]] > 0.5).all() and (rate[[200, 300]] < 0.5).all()
    fixed = (rate == 1) | ((rate > 0) & (rate < 1) & ((rate >= 0.5) if policy == 'majority' else True))
    static = export_static(model, stats, input_dependent=policy)
    info = static.pretrained_cfg['static_export']
    assert not info['exact'] and info['input_dependent'] == policy
    assert info['input_dependent_opened'] == (4 if policy == 'open' else 2)
    assert info['gates_input_dependent'] == stats.counts()['input_dependent']
    with torch.no_grad():  # the GaterNet with those gates fixed, for every image
        expected = model(x, gates=fixed.float()[None])
        torch.testing.assert_close(static(x), expected, rtol=1e-5, atol=1e-5)


def test_plugins_without_pruning_export_when_every_gate_is_open() -> None:
    # timm_efficientnet runs some gate slots through forward hooks (blocks without a residual); they go too.
    torch.manual_seed(0)
    model = gz.gate('test_efficientnet', gater='cifar_resnet8', num_classes=10).eval()
    _constant_gates(model, closed_every=0)
    x = torch.randn(2, 3, 64, 64)
    static = export_static(model, _stats(model, x))
    assert not any(isinstance(m, GateSlot) for m in static.modules())
    assert not any(type(h).__name__ == '_GateHook' for m in static.modules() for h in m._forward_hooks.values())
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-5)


def test_the_static_model_keeps_the_timm_model_api() -> None:
    import timm

    model = _model('gaternet_resnet20')
    _constant_gates(model)
    x = torch.randn(2, 3, 32, 32)
    static = export_static(model, _stats(model, x), round_to=8)
    with torch.no_grad():
        logits = static(x)
        features = static.forward_features(x)
        torch.testing.assert_close(static.forward_head(features), logits)
        assert static.forward_head(features, pre_logits=True).shape == (2, static.num_features)
        torch.testing.assert_close(torch.fx.symbolic_trace(static)(x), logits)
    assert static.get_classifier() is static.backbone.fc and static.get_classifier(name_only=True) == 'backbone.fc'
    # The registered architecture rebuilds the same shapes from the arguments alone (what config.json holds).
    rebuilt = timm.create_model('static_backbone', pruned_filters=static.pruned_filters, plugin='native')
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in static.state_dict().items()}
    static.reset_classifier(5)
    assert static(x).shape == (2, 5)


def test_refusals_before_any_export() -> None:
    plain = gz.create_model('cifar_resnet20')
    model = _model('gaternet_resnet20')
    stats = _stats(model, torch.randn(2, 3, 32, 32))
    with pytest.raises(gz.PruningError, match='no gates'):
        export_static(plain, stats)
    with pytest.raises(ValueError, match='round_to'):
        export_static(model, stats, round_to=0)


@pytest.mark.slow  # seconds: a published model over 500 subset images
def test_the_published_budget_model_exports_exactly_on_its_calibration_images() -> None:
    import numpy as np

    from gaternet_zoo.data import load_image_dataset

    model = gz.create_model(f'local-dir:{WEIGHTS / "gaternet_resnet20.cifar10_macs50"}').eval()
    source = load_image_dataset('builtin:cifar10-subset')
    images = np.stack([np.asarray(im.convert('RGB')) for im in source.train[source.image_column][:500]])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    mean, std = model.pretrained_cfg['mean'], model.pretrained_cfg['std']
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    stats = _stats(model, x)
    assert stats.counts()['input_dependent'] == 0  # the budget made every gate constant
    static = export_static(model, stats, calibration='500 subset training images')
    with torch.no_grad():
        expected, out = model(x), static(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(out.argmax(1), expected.argmax(1))


@pytest.mark.slow  # seconds: two calibrations of a published model through the command line
def test_cli_prune_static_refuses_input_dependent_gates_and_exports_constant_ones(tmp_path: Path, capsys) -> None:
    from gaternet_zoo.cli import main

    assert main(['prune', f'local-dir:{WEIGHTS / "gaternet_resnet20.cifar10"}', '--max-samples', '64', '--cpu',
                 '--out', str(tmp_path / 'dense'), '--static']) == 2
    err = capsys.readouterr().err
    assert 'input-dependent over the calibration data' in err and '--input-dependent open' in err
    assert not (tmp_path / 'dense' / 'config.json').exists()
    assert main(['prune', 'gaternet_resnet20', '--out', str(tmp_path / 'x'), '--input-dependent', 'open']) == 2
    assert '--static' in capsys.readouterr().err
    out = tmp_path / 'open'
    assert main(['prune', f'local-dir:{WEIGHTS / "gaternet_resnet20.cifar10"}', '--max-samples', '64', '--cpu',
                 '--out', str(out), '--static', '--input-dependent', 'open', '--round-to', '8']) == 0
    assert 'static export:' in capsys.readouterr().out
    static = gz.create_model(f'local-dir:{out}')
    info = static.pretrained_cfg['static_export']
    assert isinstance(static, StaticBackbone) and info['input_dependent'] == 'open' and info['round_to'] == 8
    assert "split 'train', 64 images" in info['calibration']
    # A model pruned already keeps its own pruning (its round_to) unless another one is asked for.
    budget = f'local-dir:{WEIGHTS / "gaternet_resnet20.cifar10_macs50"}'
    assert main(['prune', budget, '--max-samples', '64', '--cpu', '--round-to', '8', '--out', str(tmp_path / 'p')]) == 0
    assert main(['prune', f'local-dir:{tmp_path / "p"}', '--max-samples', '64', '--cpu', '--static',
                 '--out', str(tmp_path / 'ps')]) == 0
    assert gz.create_model(f'local-dir:{tmp_path / "ps"}').pretrained_cfg['static_export']['round_to'] == 8
    assert main(['prune', f'local-dir:{tmp_path / "p"}', '--max-samples', '64', '--cpu', '--static',
                 '--round-to', '16', '--out', str(tmp_path / 'ps16')]) == 2
    assert 'already pruned (round_to=8)' in capsys.readouterr().err


def test_closed_branch_gates_export_as_the_shortcut() -> None:
    # With branch gates a filter acts only when its branch gate is open too: the export reads the effective gates,
    # so the filters of an always-closed branch are removed (the block is its shortcut) and the logits do not change.
    torch.manual_seed(0)
    model = gz.create_model('gaternet_resnet20', branch_gates=True).eval()
    _constant_gates(model)
    with torch.no_grad():
        branch = model.gater.fc2.bias[model.num_filter_gates:]
        branch.fill_(50.0)
        branch[[1, 4]] = -50.0  # stage1.block2 and stage2.block2 run as their shortcut
    _randomise_norms(model)
    x = torch.randn(4, 3, 32, 32)
    stats = _stats(model, x)
    static = export_static(model, stats, source='branch gates')
    info = static.pretrained_cfg['static_export']
    assert info['exact'] and info['gates_input_dependent'] == 0 and info['filter_gates'] == model.num_filter_gates
    closed = [s for s in model.gate_sites if s.branch_offset - model.num_filter_gates in (1, 4)]
    assert [s.name for s in closed] == ['stage1.block2', 'stage2.block2']
    for site in closed:  # no filter of a closed branch acts: at most the one kept to keep the conv valid, zeroed
        assert static.backbone.get_submodule(site.conv).out_channels <= 1
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# The scatter folded into the residual add, and branches that add nothing dropped.

#: Per model, two sites whose gates are all made closed: one with an identity shortcut, one with a projection.
_EMPTY_SITES = {'gaternet_resnet20': ['stage1.block2', 'stage2.block1'], 'test_resnet': ['layer1.0', 'layer3.0']}


def _close_sites(model: torch.nn.Module, names: list[str]) -> None:
    with torch.no_grad():
        for site in model.gate_sites:
            if site.name in names:
                model.gater.fc2.bias[site.offset:site.offset + site.num_channels] = -50.0


def _convs_run(model: torch.nn.Module, x: torch.Tensor) -> set[str]:
    """Names of the convs of ``model.backbone`` that run in one forward pass of ``model`` on ``x``."""
    ran: set[str] = set()
    _run_with_hooks(model, x, [m.register_forward_hook(lambda *_, name=name: ran.add(name))
                               for name, m in model.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)])
    return ran


def _run_with_hooks(model: torch.nn.Module, x: torch.Tensor, handles: list) -> None:
    """One forward pass of ``model`` on ``x`` without gradients; the hooks ``handles`` are removed after it."""
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()


def _with_empty_branches(name: str = 'gaternet_resnet20', batch: int = 4,
                         size: int = 32) -> tuple[torch.nn.Module, torch.Tensor, GateStatistics]:
    """``name`` with constant gates, its ``_EMPTY_SITES`` all closed and random norms; an input and its statistics."""
    model = _model(name)
    _constant_gates(model)
    _close_sites(model, _EMPTY_SITES[name])
    _randomise_norms(model)
    x = torch.randn(batch, 3, size, size)
    return model, x, _stats(model, x)


def _branch_convs(static: StaticBackbone, name: str) -> set[str]:
    """The convs of a block's residual branch: the block's convs outside its shortcut (native) or downsample (timm)."""
    block = static.backbone.get_submodule(name)
    return {f'{name}.{n}' for n, m in block.named_modules() if isinstance(m, torch.nn.Conv2d)
            and not n.startswith(('shortcut', 'downsample'))}


@pytest.mark.parametrize('name,size', [('gaternet_resnet20', 32), ('test_resnet', 64)])
def test_folded_export_adds_kept_channels_into_the_shortcut_and_drops_empty_branches(
        name: str, size: int, tmp_path: Path) -> None:
    from gaternet_zoo.models.static_backbone import KeptFiltersForward, ShortcutOnlyForward

    model, x, stats = _with_empty_branches(name, 4, size)
    empty = _EMPTY_SITES[name]
    static = export_static(model, stats, source=name)
    info = static.pretrained_cfg['static_export']
    assert info['exact'] and info['branches_dropped'] == 2 and static.dropped_branches == empty
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(static(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(static(x[:1]), model(x[:1]), rtol=1e-5, atol=1e-5)  # batch 1, the case timed
    # No zero map anywhere: every pruned block that runs its branch adds its kept channels into the shortcut.
    assert not any(isinstance(m, ScatterChannels) for m in static.modules())
    folded = [s.name for s in model.gate_sites if s.name in static.pruned_filters and s.name not in empty]
    assert folded  # _constant_gates closes every third gate: every site is pruned
    for site in folded:
        block = static.backbone.get_submodule(site)
        assert isinstance(block.forward, KeptFiltersForward) and block.forward.block is block
        assert block.forward.kept.kept.tolist() == static.pruned_filters[site]
        assert [m for m in block.children() if isinstance(m, KeptChannels)] == [block.forward.kept]
    # A dropped branch runs none of its convs (a projection shortcut's conv still runs); every other conv runs.
    all_convs = {n for n, m in static.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)}
    dropped_convs = set().union(*(_branch_convs(static, site) for site in empty))
    assert len(dropped_convs) >= 4
    assert _convs_run(static, x) == all_convs - dropped_convs
    assert any(c.startswith(f'{empty[1]}.') for c in all_convs - dropped_convs)  # the projection shortcut's conv
    for site in empty:
        assert isinstance(static.backbone.get_submodule(site).forward, ShortcutOnlyForward)
    # The state_dict keys stay the GaterNet's backbone keys (a dropped branch keeps its unused weights) ...
    assert set(static.state_dict()) == {f'backbone.{k}' for k in model.backbone.state_dict()}
    # ... and the Hub round trip rebuilds the folded and dropped structure from config.json before a strict load.
    static.save_pretrained(tmp_path / 'static')
    config = json.loads((tmp_path / 'static' / 'config.json').read_text())
    assert config['model_args']['dropped_branches'] == empty
    loaded = gz.create_model(f'local-dir:{tmp_path / "static"}').eval()
    assert loaded.dropped_branches == empty and _convs_run(loaded, x) == all_convs - dropped_convs
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)


def test_folded_export_traces_exports_and_copies() -> None:
    model, x, stats = _with_empty_branches(batch=2)
    static = export_static(model, stats)
    assert static.dropped_branches and static.pruned_filters
    with torch.no_grad():
        expected = model(x)
        traced = torch.fx.symbolic_trace(static)
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)
        # The traced graph adds into the shortcut and holds no conv of a dropped branch.
        targets = [str(n.target) for n in traced.graph.nodes]
        assert sum('index_add' in t for t in targets) == len(set(static.pruned_filters) - set(static.dropped_branches))
        assert not any(t.startswith(('backbone.stage1.block2.conv', 'backbone.stage2.block1.conv')) for t in targets)
        torch.testing.assert_close(torch.export.export(static, (x,)).module()(x), expected, rtol=1e-5, atol=1e-5)
        # A deep copy's blocks run their own modules: changing the original does not change the copy.
        copied = copy.deepcopy(static)
        name = next(n for n in static.pruned_filters if n not in static.dropped_branches)
        assert copied.backbone.get_submodule(name).forward.block is copied.backbone.get_submodule(name)
        static.backbone.get_submodule(name).conv2.weight.zero_()
        torch.testing.assert_close(copied(x), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(static(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('unknown', ['has_shortcut', 'has_kept_filters_forward'])
def test_blocks_without_a_known_shortcut_fall_back_to_scatter_channels(
        unknown: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A plugin that does not know a block's shortcut (or cannot add kept filters into it) keeps the scatter: the
    # block runs its own forward on the full-width map, and a branch with no acting filter still runs, at 0.
    from gaternet_zoo.plugins.native import NativeSlotPlugin

    monkeypatch.setattr(NativeSlotPlugin, unknown, lambda self, block: False)
    model, x, stats = _with_empty_branches()
    empty = _EMPTY_SITES['gaternet_resnet20']
    static = export_static(model, stats)
    runs_branch = list(static.pruned_filters) if unknown == 'has_shortcut' else [
        n for n in static.pruned_filters if n not in empty]
    assert static.dropped_branches == ([] if unknown == 'has_shortcut' else empty)
    assert static.pretrained_cfg['static_export']['branches_dropped'] == len(static.dropped_branches)
    # KeptChannels only where a dropped branch's slot was (it never runs there); every other pruned site scatters.
    kept_at = {n for n in static.pruned_filters if isinstance(static.backbone.get_submodule(n).gate, KeptChannels)}
    assert kept_at == set(static.dropped_branches)
    for site in runs_branch:
        block = static.backbone.get_submodule(site)
        assert isinstance(block.gate, ScatterChannels) and 'forward' not in block.__dict__  # the class's forward
        assert block.gate.kept.tolist() == static.pruned_filters[site]
    all_convs = {n for n, m in static.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)}
    skipped = set().union(*(_branch_convs(static, s) for s in static.dropped_branches))
    assert _convs_run(static, x) == all_convs - skipped
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(static(x), expected, rtol=1e-5, atol=1e-5)
    static.save_pretrained(tmp_path / 'static')
    loaded = gz.create_model(f'local-dir:{tmp_path / "static"}').eval()
    assert sum(isinstance(m, ScatterChannels) for m in loaded.modules()) == len(runs_branch)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)


def test_an_export_saved_before_the_fold_still_loads_and_computes_the_same(tmp_path: Path) -> None:
    # An export saved before `dropped_branches` existed has no such argument in its config.json: it loads strictly
    # (the keys are the same) and runs every branch, the dropped ones' zeroed filters adding 0.
    from gaternet_zoo._model_card import static_export_summary

    model, x, stats = _with_empty_branches()
    static = export_static(model, stats)
    # Saved as the code before the fold saved it: the same weights, a config without the new argument and count.
    before = copy.deepcopy(static)
    del before._hub_mixin_config['dropped_branches']
    del before.pretrained_cfg['static_export']['branches_dropped']
    before.save_pretrained(tmp_path / 'static')
    assert 'dropped_branches' not in json.loads((tmp_path / 'static' / 'config.json').read_text())['model_args']
    old = gz.create_model(f'local-dir:{tmp_path / "static"}').eval()
    assert old.dropped_branches == [] and old.pruned_filters == static.pruned_filters
    all_convs = {n for n, m in old.backbone.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert _convs_run(old, x) == all_convs
    with torch.no_grad():
        torch.testing.assert_close(old(x), model(x), rtol=1e-5, atol=1e-5)
    assert 'dropped' not in static_export_summary(old.pretrained_cfg['static_export'])
    assert '2 residual branches dropped' in static_export_summary(static.pretrained_cfg['static_export'])


def test_dropped_branches_are_checked_against_the_backbone() -> None:
    with pytest.raises(ValueError, match='does not have'):
        StaticBackbone(dropped_branches=['stage9.block1'])
    from gaternet_zoo.plugins.native import NativeSlotPlugin

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NativeSlotPlugin, 'has_shortcut', lambda self, block: False)
        with pytest.raises(ValueError, match='does not know'):
            StaticBackbone(dropped_branches=['stage1.block1'])
    static = StaticBackbone(dropped_branches=['stage2.block1', 'stage1.block3']).eval()
    assert static.dropped_branches == ['stage1.block3', 'stage2.block1']  # in forward order
    x = torch.randn(1, 3, 32, 32)
    assert not _convs_run(static, x) & (_branch_convs(static, 'stage1.block3') | _branch_convs(static, 'stage2.block1'))


def _native_blocks() -> list[torch.nn.Module]:
    from gaternet_zoo.models.cifar_resnet import BasicBlock, PreActBasicBlock, PreActBottleneck

    return [BasicBlock(8, 8), BasicBlock(8, 16, stride=2), PreActBasicBlock(8, 8), PreActBasicBlock(8, 16, stride=2),
            PreActBottleneck(32, 8), PreActBottleneck(8, 8, stride=2)]


def _timm_blocks() -> list[torch.nn.Module]:
    import timm

    backbone = timm.create_model('test_resnet', zero_init_last=False)
    return [m for m in backbone.modules() if type(m).__name__ in ('BasicBlock', 'Bottleneck')]


@pytest.mark.parametrize('plugin_name', ['native', 'timm_resnet'])
def test_kept_filters_forward_with_every_filter_kept_is_the_blocks_forward(plugin_name: str) -> None:
    # The plugin's own description of where the branch meets the shortcut, checked against the block's forward:
    # with every filter kept (in order) the index_add is the plain residual add.
    torch.manual_seed(0)
    plugin = gz.get_plugin(plugin_name)
    blocks = _native_blocks() if plugin_name == 'native' else _timm_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        _randomise_norms(block)
        conv = block.conv3 if hasattr(block, 'conv3') else block.conv2
        assert plugin.has_kept_filters_forward(block)
        x = torch.randn(2, block.conv1.in_channels, 16, 16)
        every = torch.arange(conv.out_channels)
        for training in (False, True):  # the fold also trains: its norms see the same batch as the block's
            block.train(training)
            with torch.no_grad():
                torch.testing.assert_close(plugin.kept_filters_forward(block, x.clone(), every), block(x.clone()))


def test_timm_blocks_with_attention_keep_the_scatter() -> None:
    from timm.models.resnet import BasicBlock

    plugin = gz.get_plugin('timm_resnet')
    block = BasicBlock(16, 16, attn_layer='se')
    assert plugin.has_shortcut(block) and not plugin.has_kept_filters_forward(block)
    assert plugin.kept_filters_forward(block, torch.randn(1, 16, 8, 8), torch.arange(16)) is None


# ------------------------------------------------------------------------------------------------------------------
# Plugins that cannot prune (the block plugins): nothing removed, closed filters zeroed, closed branches dropped.

#: The block plugins among the shortcut families (those that cannot prune).
NO_PRUNING = {k: v for k, v in SHORTCUT_FAMILIES.items() if not k.startswith('native') and k != 'timm_resnet'}


def _randomise_vectors(module: torch.nn.Module, seed: int = 5) -> None:
    """Random per-channel parameters and running statistics: norm scales and shifts, conv and linear biases, layer
    scales (ConvNeXt's start at 1e-6, which would hide a wrong filter), GRN's weights. A filter zeroed in the wrong
    place, a bias or shift left, then changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                if name.endswith(('bias', 'beta')):
                    p.normal_(0.0, 0.1, generator=g)
                else:
                    p.uniform_(0.5, 1.5, generator=g)
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def _block_model(family: str) -> tuple[torch.nn.Module, int]:
    """A tiny GaterNet with branch gates and constant gates: every third filter gate closed, every other branch gate
    closed (those branches are dropped), everything else open."""
    from builders import build_tiny_gaternet

    backbone, args, size = NO_PRUNING[family]
    model = build_tiny_gaternet(backbone, args, branch_gates=True)
    _randomise_vectors(model.backbone)
    with torch.no_grad():
        bias = model.gater.fc2.bias
        bias.fill_(50.0)
        bias[:model.num_filter_gates:3] = -50.0
        bias[[s.branch_offset for s in model.gate_sites if s.branch_offset is not None][::2]] = -50.0
    return model.eval(), size


@pytest.fixture(scope='module', params=list(NO_PRUNING))
def block_family(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, int]:
    return _block_model(request.param)


def _branch_modules(block: torch.nn.Module) -> list[torch.nn.Module]:
    """The convs (and linears) of a block's residual branch: every one outside its shortcut/downsample."""
    return [m for n, m in block.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
            and not n.startswith(('shortcut', 'downsample'))]


def _at_gate_places(static: StaticBackbone, sites: list, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What reaches each site's gate place in ``static``: the input of the block's drop-path module (where the gate
    slot was) for a block that runs it, the block's output for one without its residual."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for site in sites:
        block = static.backbone.get_submodule(site.name)
        handles.append(block.register_forward_hook(
            lambda m, a, out, name=site.name: seen.setdefault(name, out.detach().clone())))
        if isinstance(getattr(block, 'drop_path', None), torch.nn.Module):
            handles.append(block.drop_path.register_forward_pre_hook(
                lambda m, a, name=site.name: seen.__setitem__(name, a[0].detach().clone())))
    _run_with_hooks(static, x, handles)
    return seen


def test_block_plugins_export_without_pruning_exactly(block_family, tmp_path: Path) -> None:
    """Closed filters zeroed in place (none removed), closed branches dropped, the logits the GaterNet's."""
    model, size = block_family
    plugin = gz.get_plugin(model.plugin_name)
    assert not plugin.overrides('prune_site')
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(7))
    stats = _stats(model, x)
    assert stats.counts()['input_dependent'] == 0
    before = copy.deepcopy(model.state_dict())
    static = export_static(model, stats, calibration='random images', source='tiny')
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # zeroed in the copy only
    info = static.pretrained_cfg['static_export']
    effective = stats.effective_firing_rate
    closed_branches = [s.name for s in model.gate_sites if s.branch_offset is not None
                       and stats.firing_rate[s.branch_offset] == 0]
    assert closed_branches and static.dropped_branches == closed_branches
    assert info['exact'] and info['plugin'] == model.plugin_name and info['plugin_prunes'] is False
    assert info['filters_removed'] == 0 and info['sites_pruned'] == 0 and info['round_to'] == 1
    assert info['branches_dropped'] == len(closed_branches)
    assert info['filters_zeroed'] == int((effective == 0).sum()) > 0
    # Nothing pruned: the backbone's state_dict is the GaterNet's, key for key and shape for shape.
    assert static.pruned_filters == {}
    assert {k: v.shape for k, v in static.state_dict().items()} == {
        f'backbone.{k}': v.shape for k, v in model.backbone.state_dict().items()}
    assert not any(isinstance(m, (GateSlot, KeptChannels, ScatterChannels)) for m in static.modules())
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(static(x), expected, rtol=1e-5, atol=1e-5)
        # The closed gates matter: with every gate open the GaterNet computes something else.
        assert not torch.allclose(model(x, gates=torch.ones(1, model.gate_size)), expected, rtol=1e-4, atol=1e-4)
    # At every branch that still runs, a closed filter reaches the gate's place as exactly 0, an open one does not.
    running = [s for s in model.gate_sites if s.name not in closed_branches]
    seen = _at_gate_places(static, running, x)
    for site in running:
        acting = effective[site.offset:site.offset + site.num_channels] > 0
        assert (seen[site.name][:, ~acting] == 0).all(), site.name
        assert (seen[site.name][:, acting] != 0).any(dim=(0, 2, 3)).all(), site.name
    # A dropped branch runs none of its convs; every branch that runs does.
    calls = collections.Counter()
    handles = [m.register_forward_hook(lambda *_, name=s.name: calls.update([name]))
               for s in model.gate_sites for m in _branch_modules(static.backbone.get_submodule(s.name))]
    _run_with_hooks(static, x, handles)
    assert set(calls) == {s.name for s in running}
    # Both name their classifier, which most timm backbones (no `name_only`) do not say: the Hub loader reads it.
    for net in (model, static):
        assert net.get_submodule(net.get_classifier(name_only=True)) is net.get_classifier()
    # The Hub round trip rebuilds the same model (the dropped branches from config.json) before a strict load.
    static.save_pretrained(tmp_path / 'static')
    config = json.loads((tmp_path / 'static' / 'config.json').read_text())
    assert config['model_args']['dropped_branches'] == closed_branches
    assert config['model_args']['plugin'] == model.plugin_name
    loaded = gz.create_model(f'local-dir:{tmp_path / "static"}').eval()
    assert isinstance(loaded, StaticBackbone) and loaded.dropped_branches == closed_branches
    assert loaded.pretrained_cfg['static_export'] == info
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)
    card = (tmp_path / 'static' / 'README.md').read_text()
    assert 'without its gater' in card
    assert (f"no filter removed (gating plugin '{model.plugin_name}' cannot prune), {info['filters_zeroed']} kept "
            f"at 0; {len(closed_branches)} residual branches dropped") in card


def test_round_to_is_refused_where_the_plugin_cannot_prune() -> None:
    model, size = _block_model('timm_convnext')
    stats = _stats(model, torch.randn(2, 3, size, size))
    with pytest.raises(ValueError, match=r"round_to=8 does not apply.*'timm_convnext' cannot prune.*round_to=None"):
        export_static(model, stats, round_to=8)
    assert export_static(model, stats, round_to=1).pretrained_cfg['static_export']['round_to'] == 1


def test_filters_a_plugin_cannot_zero_are_refused_unless_their_branch_is_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A gate point without `zero_at` (a third-party plugin that does not say how): a filter fixed closed in a branch
    # that runs cannot be represented without its gate, and the export names it; one in a dropped branch can.
    from timm.models.convnext import ConvNeXtBlock

    from gaternet_zoo._plugins import GatePoint
    from gaternet_zoo.plugins.timm_convnext import TimmConvNeXtPlugin

    monkeypatch.setattr(TimmConvNeXtPlugin, 'gate_points', (GatePoint(ConvNeXtBlock, conv='mlp.fc2'),))
    model, size = _block_model('timm_convnext')
    x = torch.randn(2, 3, size, size)
    with pytest.raises(gz.PruningError) as info:
        export_static(model, _stats(model, x))
    message = str(info.value)
    first = next(s for s in model.gate_sites if model.gater.fc2.bias[s.branch_offset] > 0)  # a branch that runs
    closed = [j for j in range(first.num_channels) if (first.offset + j) % 3 == 0]
    assert f'{first.name} (filters {closed[0]}, {closed[1]}, {closed[2]}' in message and 'GatePoint.zero_at' in message
    assert "cannot be made to output 0 without their gates by gating plugin 'timm_convnext'" in message
    # With every filter gate open, the only closed filters are those of the closed branches, which are dropped.
    with torch.no_grad():
        model.gater.fc2.bias[:model.num_filter_gates] = 50.0
    static = export_static(model, _stats(model, x))
    assert static.dropped_branches and static.pretrained_cfg['static_export']['filters_zeroed'] == 0
    with torch.no_grad():
        torch.testing.assert_close(static(x), model(x), rtol=1e-5, atol=1e-5)


def _blocks() -> dict[str, tuple[str, Callable[[], torch.nn.Module]]]:
    """One instance of every block type the block plugins gate (several layouts of some): (plugin, factory)."""
    from timm.layers import GroupNormAct
    from timm.models import _efficientnet_blocks as eb
    from timm.models import convnext, densenet, regnet
    from timm.models import resnetv2 as rv2

    def gn4(channels: int, **kwargs) -> torch.nn.Module:
        return GroupNormAct(channels, num_groups=4, **kwargs)

    return {
        # timm's defaults for these: StdConv2d (weights standardised per filter) and GroupNormAct.
        'PreActBasic': ('timm_resnetv2', lambda: rv2.PreActBasic(8, 8, norm_layer=gn4)),
        'PreActBottleneck': ('timm_resnetv2', lambda: rv2.PreActBottleneck(64, 128, proj_layer=rv2.DownsampleConv)),
        'Bottleneck (post-activation, group norm)': (
            'timm_resnetv2', lambda: rv2.Bottleneck(64, 128, proj_layer=rv2.DownsampleConv)),
        'RegNet Bottleneck': ('timm_regnet', lambda: regnet.Bottleneck(8, 16, stride=2, group_size=4)),
        'RegNet Bottleneck without shortcut (act3 before the gate)': (
            'timm_regnet', lambda: regnet.Bottleneck(8, 16, downsample=None)),
        'RegNet PreBottleneck': ('timm_regnet', lambda: regnet.PreBottleneck(8, 8)),
        'ConvNeXt (linear MLP, layer scale)': ('timm_convnext', lambda: convnext.ConvNeXtBlock(16)),
        'ConvNeXt V2 (conv MLP, GRN)': (
            'timm_convnext', lambda: convnext.ConvNeXtBlock(16, conv_mlp=True, use_grn=True, ls_init_value=None)),
        'DepthwiseSeparableConv (activation after the norm)': (
            'timm_efficientnet', lambda: eb.DepthwiseSeparableConv(8, 8, pw_act=True)),
        'InvertedResidual': ('timm_efficientnet', lambda: eb.InvertedResidual(8, 8, exp_ratio=2.0)),
        'EdgeResidual': ('timm_efficientnet', lambda: eb.EdgeResidual(8, 8, exp_ratio=2.0)),
        'UniversalInvertedResidual (dw_end, layer scale)': ('timm_efficientnet', lambda: eb.UniversalInvertedResidual(
            8, 8, dw_kernel_size_start=3, dw_kernel_size_mid=3, dw_kernel_size_end=3, layer_scale_init_value=1.0)),
        'UniversalInvertedResidual (pw_proj)': (
            'timm_efficientnet', lambda: eb.UniversalInvertedResidual(8, 8, dw_kernel_size_mid=3)),
        'ConvBnAct (skip)': ('timm_efficientnet', lambda: eb.ConvBnAct(8, 8, kernel_size=3, skip=True)),
        'ConvBnAct (no skip, stride 2, blur)': ('timm_efficientnet', lambda: eb.ConvBnAct(
            8, 16, kernel_size=3, stride=2, aa_layer='blurpc')),
        'DenseLayer': ('timm_densenet', lambda: densenet.DenseLayer(8, growth_rate=4, bn_size=2)),
    }


@pytest.mark.parametrize('block_type', list(_blocks()))
def test_zero_filters_gives_what_closed_gates_give_in_every_block_type(block_type: str) -> None:
    # The block with some gates closed (a gate slot installed by the plugin, as in a GaterNet) against the same
    # block with those filters zeroed and every gate open: the output is the same, for a block that runs its branch.
    from gaternet_zoo.layers.gates import GateContext

    plugin_name, factory = _blocks()[block_type]
    plugin = gz.get_plugin(plugin_name)
    torch.manual_seed(0)
    holder = torch.nn.Sequential(factory()).eval()
    _randomise_vectors(holder)
    (site,) = plugin.gate_sites(holder)
    context = GateContext()
    plugin.install(holder, site, GateSlot(context, site.offset, site.num_channels, site.name))
    in_chs = next(m for m in holder.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    x = torch.randn(2, in_chs, 8, 8, generator=torch.Generator().manual_seed(8))
    closed = torch.arange(0, site.num_channels, 3)
    gates = torch.ones(1, site.num_channels)
    gates[0, closed] = 0
    with torch.no_grad():
        with context.bind(gates):
            expected = holder(x)
        with context.bind(torch.ones(1, site.num_channels)):
            assert not torch.allclose(holder(x), expected, rtol=1e-4, atol=1e-4)  # the closed gates matter
        plugin.zero_filters(holder, site, closed)
        with context.bind(torch.ones(1, site.num_channels)):
            torch.testing.assert_close(holder(x), expected, rtol=1e-5, atol=1e-6)
    # A layer scale between the zeroed filters and the gate is zeroed there too (ConvNeXt's gamma, UIR's).
    for name, p in holder.named_parameters():
        if name.endswith('gamma') and p.shape == (site.num_channels,):
            assert (p[closed] == 0).all() and (p[gates[0] > 0] != 0).all(), name


def test_zeroing_refuses_what_would_not_give_zero() -> None:
    from timm.layers import EvoNorm2dS0, FilterResponseNormTlu2d
    from timm.models import regnet

    from gaternet_zoo.layers.pruning import zero_norm_channels

    plugin = gz.get_plugin('timm_regnet')
    # A block without shortcut is gated after its act3: a sigmoid sends the zeroed channel to 0.5, not 0.
    holder = torch.nn.Sequential(regnet.Bottleneck(8, 16, downsample=None, act_layer=torch.nn.Sigmoid))
    (site,) = plugin.gate_sites(holder)
    before = copy.deepcopy(holder.state_dict())
    with pytest.raises(gz.PruningError, match=r'Bottleneck.act3 \(Sigmoid\).*not known to keep a zero channel'):
        plugin.zero_filters(holder, site, torch.tensor([0, 1]))
    assert all(torch.equal(v, before[k]) for k, v in holder.state_dict().items())  # refused before any change
    # A norm whose channel is not 0 with zero scale and shift (filter response norm's threshold), or whose forward
    # the export does not know, is refused by name; so is a norm-act layer whose activation does not send 0 to 0.
    for norm in (FilterResponseNormTlu2d(8), EvoNorm2dS0(8, group_size=4)):
        with pytest.raises(gz.PruningError, match=type(norm).__name__):
            zero_norm_channels(norm, torch.tensor([0]))
    from timm.layers import BatchNormAct2d

    with pytest.raises(gz.PruningError, match=r'act of BatchNormAct2d \(Sigmoid\) does not send 0 to 0'):
        zero_norm_channels(BatchNormAct2d(8, act_layer=torch.nn.Sigmoid), torch.tensor([0]))
