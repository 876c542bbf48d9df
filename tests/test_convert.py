"""Acceptance tests of the converter for the released GaterNet checkpoints (``ResNet-{20,56}-Gated.pth``).

The reference here is an independent, functional re-implementation of the released evaluation code's forward
pass (eval mode only), written over a state dict with the release's key names: ``conv2d``/``batch_norm``/``relu``/
``linear`` in the release's order, and the gate as ``sigmoid`` -> ``clamp(1.2 g - 0.1, 0, 1)`` -> ``> 0.49999``.
Checkpoints are random but in the release's exact format (``module.`` prefixes, no ``num_batches_tracked``,
randomised BatchNorm statistics so that no BatchNorm is the identity).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import gaternet_zoo as gz
from gaternet_zoo._convert import OfficialCheckpointError
from gaternet_zoo.cli import main as cli_main

WIDTHS = (16, 32, 64)
GATER_DEPTH = 20
BOTTLENECK = 8
NUM_CLASSES = 10


# One intra-op thread: faster for these tiny tensors, and no OpenMP spin-waiting on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures('one_torch_thread')


class NotATensor:
    """A custom class: pickling it makes a file that ``torch.load(weights_only=True)`` must refuse."""

    def __init__(self) -> None:
        self.payload = 'not a tensor'


# ------------------------------------------------------------------------------- random official checkpoint


def _blocks(depth: int):
    """(stage, block, in_channels, out_channels, stride) of a CIFAR ResNet, in forward order."""
    n = (depth - 2) // 6
    in_chs = WIDTHS[0]
    for s, width in enumerate(WIDTHS, start=1):
        for b in range(1, n + 1):
            yield s, b, in_chs, width, 2 if (s > 1 and b == 1) else 1
            in_chs = width


def _bn(g: torch.Generator, chs: int) -> dict[str, torch.Tensor]:
    return {
        'weight': torch.empty(chs).uniform_(0.5, 1.5, generator=g),
        'bias': torch.randn(chs, generator=g) * 0.1,
        'running_mean': torch.randn(chs, generator=g) * 0.2,
        'running_var': torch.empty(chs).uniform_(0.5, 2.0, generator=g),
    }


def _conv(g: torch.Generator, out_chs: int, in_chs: int, k: int) -> torch.Tensor:
    return torch.randn(out_chs, in_chs, k, k, generator=g) * math.sqrt(2.0 / (in_chs * k * k))


def _body(g: torch.Generator, depth: int, prefix: str) -> dict[str, torch.Tensor]:
    sd = {f'{prefix}conv.weight': _conv(g, WIDTHS[0], 3, 3)}
    sd.update({f'{prefix}bn.{k}': v for k, v in _bn(g, WIDTHS[0]).items()})
    for s, b, in_chs, out_chs, _ in _blocks(depth):
        p = f'{prefix}stage{s}.block{b}.'
        sd[p + 'conv1.weight'] = _conv(g, out_chs, in_chs, 3)
        sd.update({f'{p}bn1.{k}': v for k, v in _bn(g, out_chs).items()})
        sd[p + 'conv2.weight'] = _conv(g, out_chs, out_chs, 3)
        sd.update({f'{p}bn2.{k}': v for k, v in _bn(g, out_chs).items()})
        if in_chs != out_chs:
            sd[p + 'shortcut.conv.weight'] = _conv(g, out_chs, in_chs, 1)
            sd.update({f'{p}shortcut.bn.{k}': v for k, v in _bn(g, out_chs).items()})
    return sd


def _gate_count(depth: int) -> int:
    return sum(out_chs for *_, out_chs, _ in _blocks(depth))


def make_official_checkpoint(depth: int, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    backbone = _body(g, depth, 'module.')
    backbone['module.fc.weight'] = torch.randn(NUM_CLASSES, WIDTHS[-1], generator=g) * 0.1
    backbone['module.fc.bias'] = torch.randn(NUM_CLASSES, generator=g) * 0.1
    gater = _body(g, GATER_DEPTH, 'module.resnet.')
    gater['module.resnet.newfc.weight'] = torch.randn(BOTTLENECK, WIDTHS[-1], generator=g) * 0.3
    gater['module.resnet.newfc.bias'] = torch.randn(BOTTLENECK, generator=g) * 0.3
    gater['module.fnn.fc.0.weight'] = torch.randn(_gate_count(depth), BOTTLENECK, generator=g)
    gater['module.fnn.fc.0.bias'] = torch.randn(_gate_count(depth), generator=g) * 0.5
    return {'backbone_state_dict': backbone, 'gater_state_dict': gater}


# ------------------------------------------------------------------------- functional reference (eval mode)


def _ref_bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[p + 'running_mean'], sd[p + 'running_var'], sd[p + 'weight'], sd[p + 'bias'],
                        training=False, momentum=0.1, eps=1e-5)


def _ref_body(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, depth: int,
              gates: torch.Tensor | None = None) -> torch.Tensor:
    """Stem, three stages of post-activation basic blocks (optionally gated), global average pool."""
    y = F.relu(_ref_bn(F.conv2d(x, sd[prefix + 'conv.weight'], padding=1), sd, prefix + 'bn.'))
    offset = 0
    for s, b, _, out_chs, stride in _blocks(depth):
        p = f'{prefix}stage{s}.block{b}.'
        z = F.relu(_ref_bn(F.conv2d(y, sd[p + 'conv1.weight'], stride=stride, padding=1), sd, p + 'bn1.'))
        z = _ref_bn(F.conv2d(z, sd[p + 'conv2.weight'], padding=1), sd, p + 'bn2.')
        if gates is not None:
            z = z * gates[:, offset:offset + out_chs].unsqueeze(2).unsqueeze(3)
            offset += out_chs
        if p + 'shortcut.conv.weight' in sd:
            shortcut = _ref_bn(F.conv2d(y, sd[p + 'shortcut.conv.weight'], stride=stride), sd, p + 'shortcut.bn.')
        else:
            shortcut = y
        y = F.relu(z + shortcut)
    return F.adaptive_avg_pool2d(y, output_size=1).view(x.shape[0], -1)


def reference_gates(x: torch.Tensor, gater_sd: dict[str, torch.Tensor]) -> torch.Tensor:
    features = _ref_body(x, gater_sd, 'module.resnet.', GATER_DEPTH)
    hidden = F.relu(F.linear(features, gater_sd['module.resnet.newfc.weight'], gater_sd['module.resnet.newfc.bias']))
    pre = F.linear(hidden, gater_sd['module.fnn.fc.0.weight'], gater_sd['module.fnn.fc.0.bias'])
    g = torch.sigmoid(pre)
    g = torch.clamp(1.2 * g - 0.1, min=0, max=1)
    return (g > 0.49999).float()


def reference_logits(x: torch.Tensor, backbone_sd: dict[str, torch.Tensor], gates: torch.Tensor,
                     depth: int) -> torch.Tensor:
    features = _ref_body(x, backbone_sd, 'module.', depth, gates)
    return F.linear(features, backbone_sd['module.fc.weight'], backbone_sd['module.fc.bias'])


# ------------------------------------------------------------------------------------------------- tests


def _images(n: int = 4, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module', params=[20, 56])
def official(request, tmp_path_factory):
    depth = request.param
    checkpoint = make_official_checkpoint(depth, seed=depth)
    path = tmp_path_factory.mktemp(f'official{depth}') / f'ResNet-{depth}-Gated.pth'
    torch.save(checkpoint, path)
    x = _images()
    with torch.no_grad():
        gates = reference_gates(x, checkpoint['gater_state_dict'])
        logits = reference_logits(x, checkpoint['backbone_state_dict'], gates, depth)
    # A meaningful reference: gates both open and closed, and they change the logits.
    assert 0.05 < gates.mean() < 0.95
    ungated = reference_logits(x, checkpoint['backbone_state_dict'], torch.ones_like(gates), depth)
    assert not torch.allclose(ungated, logits, atol=1e-3)
    return dict(depth=depth, checkpoint=checkpoint, path=path, x=x, gates=gates, logits=logits)


def test_random_checkpoint_has_the_release_format(official):
    for part in official['checkpoint'].values():
        assert all(k.startswith('module.') for k in part)
        assert not any(k.endswith('num_batches_tracked') for k in part)
    assert _gate_count(20) == 336 and _gate_count(56) == 1008


def test_converted_model_matches_official_forward(official):
    model = gz.load_official_checkpoint(official['path'])
    assert isinstance(model, gz.GaterNet)
    assert model.pretrained_cfg['architecture'] == f'gaternet_resnet{official["depth"]}'
    assert model.gate_size == _gate_count(official['depth'])
    assert model.training  # returned in training mode, as documented
    model.eval()
    with torch.no_grad():
        logits, gates = model.forward_with_gates(official['x'])
    assert torch.equal(gates, official['gates'])
    torch.testing.assert_close(logits, official['logits'], atol=1e-5, rtol=0)


def test_converter_accepts_a_loaded_dict(official):
    model = gz.load_official_checkpoint(official['checkpoint']).eval()
    with torch.no_grad():
        assert torch.equal(model.forward_gates(official['x']), official['gates'])


def test_cli_convert_then_local_dir(official, tmp_path, capsys):
    out_dir = tmp_path / 'converted'
    assert cli_main(['convert-official', str(official['path']), str(out_dir)]) == 0
    assert f'gaternet_resnet{official["depth"]}: {_gate_count(official["depth"])} gates' in capsys.readouterr().out
    assert (out_dir / 'model.safetensors').is_file() and (out_dir / 'config.json').is_file()
    model = gz.create_model(f'local-dir:{out_dir}').eval()
    assert isinstance(model, gz.GaterNet)
    with torch.no_grad():
        logits, gates = model.forward_with_gates(official['x'])
    assert torch.equal(gates, official['gates'])
    torch.testing.assert_close(logits, official['logits'], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------- bad inputs


def test_missing_top_level_keys(tmp_path):
    path = tmp_path / 'plain.pth'
    torch.save({'state_dict': {'conv.weight': torch.zeros(1)}}, path)
    with pytest.raises(OfficialCheckpointError) as info:
        gz.load_official_checkpoint(path)
    message = str(info.value)
    assert 'backbone_state_dict' in message and 'gater_state_dict' in message and 'state_dict' in message
    with pytest.raises(OfficialCheckpointError, match='backbone_state_dict'):
        gz.load_official_checkpoint({'backbone_state_dict': {}})


def test_missing_and_renamed_keys_are_listed(tmp_path):
    checkpoint = make_official_checkpoint(20, seed=1)
    del checkpoint['backbone_state_dict']['module.stage2.block1.bn2.running_var']
    gater = checkpoint['gater_state_dict']
    gater['module.resnet.stage1.block2.convX.weight'] = gater.pop('module.resnet.stage1.block2.conv1.weight')
    path = tmp_path / 'broken.pth'
    torch.save(checkpoint, path)
    with pytest.raises(OfficialCheckpointError) as info:
        gz.load_official_checkpoint(path)
    message = str(info.value)
    assert 'backbone.stage2.block1.bn2.running_var' in message
    assert 'gater.encoder.stage1.block2.conv1.weight' in message  # missing after the rename
    assert 'gater.encoder.stage1.block2.convX.weight' in message  # unexpected after the rename


def test_gater_of_another_depth_is_refused():
    checkpoint = make_official_checkpoint(56, seed=2)
    checkpoint['gater_state_dict'] = make_official_checkpoint(20, seed=3)['gater_state_dict']
    with pytest.raises(OfficialCheckpointError, match='emits 336 gates .* 1008 gate sites'):
        gz.load_official_checkpoint(checkpoint)


def test_non_tensor_pickle_is_refused(tmp_path):
    path = tmp_path / 'custom.pth'
    torch.save({'backbone_state_dict': NotATensor(), 'gater_state_dict': {}}, path)
    with pytest.raises(OfficialCheckpointError) as info:
        gz.load_official_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and 'weights_only=True' in message and 'not a file of tensors only' in message
    assert 'NotATensor' in message  # the refused global is named
    assert 'weights_only=False' not in message and 'will likely succeed' not in message  # torch's advice is not ours


def test_cli_convert_error_exit_code(tmp_path, capsys):
    path = tmp_path / 'plain.pth'
    torch.save({'weights': torch.zeros(1)}, path)
    assert cli_main(['convert-official', str(path), str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert 'convert-official: error:' in err and 'backbone_state_dict' in err
    assert not (tmp_path / 'out').exists()
