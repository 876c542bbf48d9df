"""Pruned export: filters whose gates never open are removed for real, and the outputs do not change."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiers import slow_except

import gaternet_zoo as gz
from gaternet_zoo import GateStatistics, PruningError, prune_gaternet
from gaternet_zoo.utils import count_params, gaternet_macs

pytestmark = pytest.mark.usefixtures('one_torch_thread')

WEIGHTS = Path(__file__).resolve().parents[1] / 'weights' / 'gaternet_resnet20.cifar10'


def _stats(model: torch.nn.Module, x: torch.Tensor) -> GateStatistics:
    stats = GateStatistics(model.gate_sites)
    with torch.no_grad():
        stats.update(model.eval().forward_gates(x))
    return stats


def _close_some_gates(model: torch.nn.Module, every: int = 3) -> None:
    """Make every ``every``-th gate closed for any input (a strongly negative logit bias)."""
    with torch.no_grad():
        model.gater.fc2.bias[::every] = -50.0
        model.gater.fc2.bias[1::every] = 50.0


def _randomise_norms(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)


@pytest.mark.parametrize('name,size', slow_except([('gaternet_resnet20', 32), ('gaternet_wrn28_10', 32),
                                                   ('gaternet_resnet164', 32), ('gaternet_resnet18', 64)],
                                                  fast={'gaternet_resnet20', 'gaternet_wrn28_10'},
                                                  key=lambda case: case[0], unpack=True))
def test_pruned_logits_equal_the_gated_model(name: str, size: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs = dict(backbone_args=dict(layers=[1, 1, 1], widths=[16, 32, 64])) if name == 'gaternet_wrn28_10' else {}
    if name == 'gaternet_resnet164':
        kwargs = dict(backbone_args=dict(layers=[1, 1, 1]))
    model = gz.create_model(name, **kwargs).eval()
    _close_some_gates(model)
    _randomise_norms(model)
    x = torch.randn(6, 3, size, size)
    stats = _stats(model, x)
    pruned = prune_gaternet(model, stats, calibration='random test images')
    assert pruned.pruned_filters and model.pruned_filters == {}  # the original is left as it was
    assert count_params(pruned.backbone) < count_params(model.backbone)
    with torch.no_grad():
        expected, out = model(x), pruned(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    macs, pruned_macs = gaternet_macs(model, (3, size, size)), gaternet_macs(pruned, (3, size, size))
    assert pruned_macs['backbone'] < macs['backbone']
    # The MACs used given the gates are the same figure: the pruned filters were never open.
    gates = model.forward_gates(x)
    used, pruned_used = gaternet_macs(model, (3, size, size), gates), gaternet_macs(pruned, (3, size, size), gates)
    assert pruned_used['backbone_used'] == pytest.approx(used['backbone_used'], rel=1e-3)
    # The Hub format round trip rebuilds the pruned shapes before a strict load.
    pruned.save_pretrained(tmp_path / 'pruned')
    loaded = gz.create_model(f'local-dir:{tmp_path / "pruned"}').eval()
    assert loaded.pruned_filters == pruned.pruned_filters
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=1e-5, atol=1e-5)
    assert loaded.pretrained_cfg['pruning']['filters_removed'] > 0
    card = (tmp_path / 'pruned' / 'README.md').read_text()
    assert 'random test images' in card


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_published_weights_pruned_give_the_same_predictions_on_their_calibration_data() -> None:
    from gaternet_zoo.data import load_image_dataset

    model = gz.create_model(f'local-dir:{WEIGHTS}').eval()
    source = load_image_dataset('builtin:cifar10-subset')
    images = np.stack([np.asarray(im.convert('RGB')) for im in source.eval[source.image_column][:400]])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    mean, std = model.pretrained_cfg['mean'], model.pretrained_cfg['std']
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    stats = _stats(model, x)
    pruned = prune_gaternet(model, stats, calibration='built-in subset, 400 test images')
    removed = pruned.pretrained_cfg['pruning']['filters_removed']
    assert removed >= 85  # at least the 85 gates that are closed over the whole CIFAR-10 test set
    with torch.no_grad():
        expected, out = model(x), pruned(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(out.argmax(1), expected.argmax(1))


def test_attention_blocks_and_other_plugins_refuse_to_prune() -> None:
    torch.manual_seed(0)
    se = gz.gate('seresnet18', gater='resnet18', num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    _close_some_gates(se)
    with pytest.raises(PruningError, match='attention module'):
        prune_gaternet(se, _stats(se, x))
    convnext = gz.gate('convnext_atto', gater='resnet18', num_classes=10).eval()
    _close_some_gates(convnext)
    with pytest.raises(PruningError, match='does not support pruning'):
        prune_gaternet(convnext, _stats(convnext, x))
    with pytest.raises(PruningError, match='no gates'):
        prune_gaternet(gz.create_model('cifar_resnet20'), _stats(se, x))


def test_bad_pruned_filters_are_refused() -> None:
    with pytest.raises(ValueError, match='does not have'):
        gz.create_model('gaternet_resnet20', pruned_filters={'nosuch': [0]})
    with pytest.raises(ValueError, match='sorted, distinct'):
        gz.create_model('gaternet_resnet20', pruned_filters={'stage1.block1': [3, 1]})
    with pytest.raises(ValueError, match='sorted, distinct'):
        gz.create_model('gaternet_resnet20', pruned_filters={'stage1.block1': [16]})


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_prune_command_writes_a_loadable_folder_and_never_overwrites(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / 'pruned'
    cmd = [sys.executable, '-m', 'gaternet_zoo.cli', 'prune', f'local-dir:{WEIGHTS}', '--max-samples', '64',
           '--out', str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'gated filters in' in proc.stdout
    pruned = gz.create_model(f'local-dir:{out}')
    assert pruned.pruned_filters and 'split \'train\', 64 images' in pruned.pretrained_cfg['pruning']['calibration']
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and '--overwrite' in again.stderr
    plain = subprocess.run([*cmd[:4], 'cifar_resnet20', *cmd[5:7], '--out', str(tmp_path / 'plain')],
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and 'has no gates' in plain.stderr


@pytest.mark.parametrize('round_to', [4, 8, 64])
def test_rounded_widths_keep_multiples_and_the_logits(round_to: int) -> None:
    torch.manual_seed(0)
    model = gz.create_model('gaternet_resnet20').eval()
    _close_some_gates(model)
    _randomise_norms(model)
    x = torch.randn(4, 3, 32, 32)
    stats = _stats(model, x)
    exact, rounded = prune_gaternet(model, stats), prune_gaternet(model, stats, round_to=round_to)
    for site in model.gate_sites:
        kept = rounded.pruned_filters.get(site.name, list(range(site.num_channels)))
        assert len(kept) % round_to == 0 or len(kept) == site.num_channels
        assert set(exact.pruned_filters.get(site.name, range(site.num_channels))) <= set(kept)
        assert kept == sorted(kept)
    assert rounded.pretrained_cfg['pruning']['round_to'] == round_to
    removed = rounded.pretrained_cfg['pruning']['filters_removed']
    assert removed <= exact.pretrained_cfg['pruning']['filters_removed']
    with torch.no_grad():
        torch.testing.assert_close(rounded(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='round_to'):
        prune_gaternet(model, stats, round_to=0)
