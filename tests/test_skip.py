"""Skip execution: only open filters computed, all-closed branches not run, logits equal to mask mode's."""
from __future__ import annotations

import copy

import pytest
import torch

import gaternet_zoo as gz
from gaternet_zoo._plugins import get_plugin, list_plugins
from gaternet_zoo.layers.skip import SkippingBlockForward, SkippingConvForward

pytestmark = pytest.mark.usefixtures('one_torch_thread')

CASES = [('gaternet_resnet20', {}, 32), ('gaternet_resnet164', dict(backbone_args=dict(layers=[1, 1, 1])), 32),
         ('gaternet_wrn28_10', dict(backbone_args=dict(layers=[1, 1, 1], widths=[16, 32, 64])), 32)]
for _plugin in list_plugins():
    for _model in getattr(get_plugin(_plugin), 'representative_models', ())[:2]:
        if _plugin != 'native':
            CASES.append((_model, {}, 64))


def _build(name: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = gz.create_model(name, **kwargs) if name.startswith('gaternet_') else gz.gate(
        name, gater='resnet18', num_classes=10, backbone_args=dict(pretrained=False))
    model.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
    return model


def _gates(model: torch.nn.Module, batch: int) -> torch.Tensor:
    """Random binary gates, a third of them open, and every gate of the first site closed for the whole batch."""
    gates = (torch.rand(batch, model.gate_size, generator=torch.Generator().manual_seed(2)) < 0.33).float()
    first = model.gate_sites[0]
    gates[:, first.offset:first.offset + first.num_channels] = 0
    return gates


# The timm backbones are full size (64 px inputs): `make test` runs them, `make test-fast` the CIFAR ones (issue 25).
@pytest.mark.parametrize('name,kwargs,size', [
    pytest.param(*case, id=case[0], marks=() if case[2] == 32 else pytest.mark.slow) for case in CASES])
@pytest.mark.parametrize('batch', [1, 3])
def test_skip_logits_equal_mask_logits(name: str, kwargs: dict, size: int, batch: int) -> None:
    model = _build(name, kwargs)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))
    gates = _gates(model, batch)
    with torch.no_grad():
        mask = model(x, gates=gates)
        mask_own = model(x)
        model.set_execution('skip')
        skip = model(x, gates=gates)
        skip_own = model(x)
    torch.testing.assert_close(skip, mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(skip_own, mask_own, rtol=1e-5, atol=1e-5)
    patched = [m for m in model.backbone.modules()
               if isinstance(m.__dict__.get('forward'), (SkippingConvForward, SkippingBlockForward))]
    assert patched, 'skip mode sliced no conv of this model'
    model.set_execution('mask')
    assert not any('forward' in m.__dict__ for m in model.backbone.modules())


def test_skip_really_skips_work() -> None:
    """All gates of a block closed: its branch's convs do not run; closed filters: fewer filters computed."""
    model = _build('gaternet_resnet20', {}).set_execution('skip')
    calls: list[str] = []
    for name, m in model.backbone.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, a, out, n=name: calls.append((n, out.shape[1])))
    gates = torch.ones(1, model.gate_size)
    first = model.gate_sites[0]
    gates[:, first.offset:first.offset + first.num_channels] = 0
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32), gates=gates)
    names = [n for n, _ in calls]
    assert f'{first.name}.conv1' not in names and f'{first.name}.conv2' not in names
    assert f'{model.gate_sites[1].name}.conv2' in names


def test_skip_is_inference_only_and_survives_deepcopy() -> None:
    model = _build('gaternet_resnet20', {}).set_execution('skip')
    clone = copy.deepcopy(model)
    conv = clone.backbone.get_submodule(clone.gate_sites[1].conv)
    assert conv.forward.conv is conv  # the copy's conv, not the original's
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))
    model.train()
    with pytest.raises(RuntimeError, match='inference'):
        model(x)
    with pytest.raises(ValueError, match="'mask' or 'skip'"):
        model.set_execution('sparse')


def _record_fast_path_widths(monkeypatch) -> list[int]:
    """The number of filters each call of the basic blocks' fast path computes, appended as the model runs."""
    from gaternet_zoo.models.cifar_resnet import BasicBlock

    widths: list[int] = []
    original = BasicBlock.forward_open_filters
    monkeypatch.setattr(BasicBlock, 'forward_open_filters',
                        lambda self, *args: widths.append(args[1].numel()) or original(self, *args))
    return widths


@pytest.mark.parametrize('batch', [1, 3])
def test_blocks_with_some_filters_open_take_the_fast_path(batch: int, monkeypatch) -> None:
    """Native basic blocks compute only the open filters and add them into the shortcut: no zero-filled map."""
    model = _build('gaternet_resnet20', {})
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    gates = _gates(model, batch)
    with torch.no_grad():
        expected = model(x, gates=gates)
    calls = _record_fast_path_widths(monkeypatch)
    model.set_execution('skip')
    with torch.no_grad():
        out = model(x, gates=gates)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    partial = [s for s in model.gate_sites[1:]
               if 0 < int((gates[:, s.offset:s.offset + s.num_channels] > 0).any(0).sum()) < s.num_channels]
    assert len(calls) == len(partial) > 0
    opened = [int((gates[:, s.offset:s.offset + s.num_channels] > 0).any(0).sum()) for s in partial]
    assert calls == opened  # each block computed the filters some sample of the batch opens, no more


@pytest.mark.parametrize('batch', [1, 3])
def test_pruned_model_in_skip_mode_equals_mask_mode(batch: int) -> None:
    from gaternet_zoo import GateStatistics, prune_gaternet

    model = _build('gaternet_resnet20', {})
    with torch.no_grad():
        model.gater.fc2.bias[::3] = -50.0  # always closed: these filters are pruned
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    stats = GateStatistics(model.gate_sites)
    with torch.no_grad():
        stats.update(model.forward_gates(x))
    pruned = prune_gaternet(model, stats).set_execution('skip')
    assert pruned.pruned_filters
    with torch.no_grad():
        torch.testing.assert_close(pruned(x[:batch]), model(x[:batch]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('multiple', [8, 16])
def test_width_multiple_pads_with_closed_filters_and_keeps_the_logits(multiple: int, monkeypatch) -> None:
    model = _build('gaternet_resnet20', {})
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    gates = _gates(model, 3)
    with torch.no_grad():
        expected = model(x, gates=gates)
    widths = _record_fast_path_widths(monkeypatch)
    model.set_execution('skip', width_multiple=multiple)
    with torch.no_grad():
        torch.testing.assert_close(model(x, gates=gates), expected, rtol=1e-5, atol=1e-5)
    # Every computed width is a multiple, except where that would exceed the block (then the block runs densely).
    assert widths and all(w % multiple == 0 for w in widths)
    with pytest.raises(ValueError, match='width_multiple'):
        model.set_execution('skip', width_multiple=0)


def test_plugins_say_which_optional_hooks_they_implement() -> None:
    native, resnet, convnext = get_plugin('native'), get_plugin('timm_resnet'), get_plugin('timm_convnext')
    assert native.overrides('shortcut_only') and native.overrides('open_filters_forward')
    assert resnet.overrides('shortcut_only') and not resnet.overrides('open_filters_forward')
    # Every family with residual blocks knows their shortcut (issue 26: branch gates); DenseNet has none.
    for name in ('timm_convnext', 'timm_resnetv2', 'timm_regnet', 'timm_efficientnet'):
        assert get_plugin(name).overrides('shortcut_only') and not get_plugin(name).overrides('open_filters_forward')
    assert not get_plugin('timm_densenet').overrides('shortcut_only')
    assert not convnext.overrides('open_filters_forward')


def test_all_closed_blocks_of_every_residual_family_are_skipped() -> None:
    """Where a plugin knows the shortcut, a block whose gates are all closed does not run its branch."""
    torch.manual_seed(0)
    model = gz.gate('test_convnext', gater='cifar_resnet8', gater_args=dict(widths=[4, 8, 16], stem_width=4),
                    num_classes=10).eval()
    site = model.gate_sites[1]
    dw = model.backbone.get_submodule(site.name).conv_dw
    calls: list[int] = []
    dw.register_forward_hook(lambda *args: calls.append(1))
    gates = torch.ones(1, model.gate_size)
    gates[:, site.offset:site.offset + site.num_channels] = 0
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x, gates=gates)
        assert calls == [1]
        model.set_execution('skip')
        torch.testing.assert_close(model(x, gates=gates), expected, rtol=1e-5, atol=1e-5)
    assert calls == [1]
