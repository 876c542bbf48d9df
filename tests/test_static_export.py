"""Static export: a GaterNet whose kept gates are all constant becomes its plain backbone, with the same logits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gaternet_zoo as gz
from gaternet_zoo import GateStatistics, InputDependentGatesError, StaticBackbone, export_static, prune_gaternet
from gaternet_zoo.layers import GateSlot
from gaternet_zoo.layers.pruning import ScatterChannels
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
    assert any(isinstance(m, ScatterChannels) for m in static.modules())
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
