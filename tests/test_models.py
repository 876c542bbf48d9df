"""Acceptance tests of the GaterNet models: every registered GaterNet, the ``gate()`` builder and the timm plugin.

Inputs are tiny (batch 2; CIFAR models at their 32x32, ImageNet models shrunk from 224x224 to 64x64) so that the
whole file stays fast on two CPU cores. Each model is built once per module (``case`` fixture); tests that change
it (train mode, memory format, classifier) restore it or work on a deep copy.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F
from tiers import slow_except
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo._plugins import find_plugin
from gaternet_zoo.layers.gates import DEFAULT_THRESHOLD, GateContext, GateSlot, step_ste

BATCH = 2
MAX_SIDE = 64  # ImageNet models (224x224) run at 64x64 here

# The GaterNets over ResNets (the paper's family); the other timm families' zoo names are checked by the plugin
# contract suite, tests/test_plugins.py (their blocks may have no residual, which the placement tests here assume).
MODEL_NAMES = timm.list_models(module='gaternet')

#: Gate counts of the registered models (the generic ``gaternet`` defaults to a CIFAR ResNet-20 backbone).
EXPECTED_GATE_SIZE = {
    'gaternet': 336,
    'gaternet_resnet20': 336,
    'gaternet_resnet56': 1008,
    'gaternet_resnet110': 2016,
    'gaternet_resnet164': 8064,
    'gaternet_wrn28_10': 4480,
    'gaternet_resnet18': 1920,
    'gaternet_resnet34': 3776,
    'gaternet_resnet50': 15104,
    'gaternet_resnet101': 32512,
}


# One intra-op thread: faster for these tiny tensors, and no OpenMP spin-waiting on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _input_size(model: nn.Module) -> tuple[int, int, int]:
    c, h, w = model.pretrained_cfg['input_size']
    return c, min(h, MAX_SIDE), min(w, MAX_SIDE)


def _images(model: nn.Module, batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, *_input_size(model), generator=torch.Generator().manual_seed(seed))


def _is_binary(t: torch.Tensor) -> torch.Tensor:
    return (t == 0) | (t == 1)


def _reference_gates(logits: torch.Tensor) -> torch.Tensor:
    """Improved SemHash evaluation gates, written out: sigmoid, 1.2 g - 0.1, clamp, step at 0.49999."""
    return (torch.clamp(1.2 * torch.sigmoid(logits) - 0.1, 0.0, 1.0) > DEFAULT_THRESHOLD).float()


@contextlib.contextmanager
def _train_mode(model: nn.Module):
    """Train mode for the block, then eval mode again with the BatchNorm statistics as before and no grads."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    try:
        yield model
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm scales and shifts, as after training.

    timm ResNets zero-initialise the last norm of every residual branch (``zero_init_last``), which makes every
    gated branch output exactly zero at initialisation: gates would then change nothing and the gater would get
    no gradient, and most tests here could not fail.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
    return model


def _slots(module: nn.Module) -> list[GateSlot]:
    return [m for m in module.modules() if isinstance(m, GateSlot)]


# Fast tier: a CIFAR basic block, a timm basic block and a timm bottleneck; the deeper and wider ones are slow.
@pytest.fixture(scope='module', params=slow_except(
    MODEL_NAMES, fast={'gaternet_resnet20', 'gaternet_resnet18', 'gaternet_resnet50'}))
def case(request):
    """One model (eval mode), its input and its reference eval gates and logits."""
    torch.manual_seed(0)
    model = _randomise_norms(gz.create_model(request.param)).eval()
    x = _images(model)
    with torch.no_grad():
        gates = model.forward_gates(x)
        logits = model(x)
    return SimpleNamespace(name=request.param, model=model, x=x, gates=gates, logits=logits)


# ------------------------------------------------------------------------------------------------ gate sites


def test_expected_gate_sizes_are_registered():
    assert set(EXPECTED_GATE_SIZE) <= set(MODEL_NAMES)


def test_gate_size(case):
    model = case.model
    sites = model.gate_sites
    assert model.gate_size == sum(s.num_channels for s in sites)
    assert model.gater.gate_size == model.gater.fc2.out_features == model.gate_size
    if case.name in EXPECTED_GATE_SIZE:
        assert model.gate_size == EXPECTED_GATE_SIZE[case.name]
    slots = _slots(model.backbone)
    assert [(s.name, s.offset, s.num_channels) for s in slots] == [(s.name, s.offset, s.num_channels) for s in sites]
    # The slots add nothing to the state_dict: the gater's parameters are the only ones beyond the backbone's.
    assert all(not list(s.parameters()) and not list(s.buffers()) for s in slots)


def test_gate_site_table_forward_order_and_placement(case):
    """Offsets are contiguous in forward order, and a site's gate multiplies its block's residual branch only."""
    model, x = case.model, case.x
    table = model.gate_site_table()
    assert [row['name'] for row in table] == [s.name for s in model.gate_sites]
    assert table[0]['offset'] == 0
    for prev, row in zip(table, table[1:]):
        assert row['offset'] == prev['offset'] + prev['channels']
    assert table[-1]['offset'] + table[-1]['channels'] == model.gate_size
    assert len({row['name'] for row in table}) == len(table)
    for row in table:
        conv = model.backbone.get_submodule(row['conv'])
        assert isinstance(conv, nn.Conv2d) and conv.out_channels == row['channels']
        assert row['conv'].startswith(row['name'] + '.')

    # Close the gates of the second site (a block of the first stage without a projection shortcut): that block
    # must then pass its (non-negative) input through unchanged, so its branch is gated and its shortcut is not.
    site = model.gate_sites[1]
    gates = torch.ones(BATCH, model.gate_size)
    gates[:, site.offset:site.offset + site.num_channels] = 0
    order, seen = [], {}
    handles = [slot.register_forward_hook(lambda m, i, o: order.append(m.name)) for slot in _slots(model.backbone)]
    block = model.backbone.get_submodule(site.name)
    handles.append(block.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].clone(), out=o.clone())))
    try:
        with torch.no_grad():
            model(x, gates=gates)
    finally:
        for h in handles:
            h.remove()
    assert order == [row['name'] for row in table]
    assert seen['inp'].shape == seen['out'].shape
    assert torch.equal(seen['out'], seen['inp'])


# --------------------------------------------------------------------------------------- forward / backward


def test_forward_backward(case):
    model, x = case.model, case.x
    with _train_mode(model):
        out = model(x)
        assert out.shape == (BATCH, model.num_classes)
        assert torch.isfinite(out).all()
        F.cross_entropy(out, torch.arange(BATCH) % model.num_classes).backward()
        params = dict(model.named_parameters())
        no_grad = [k for k, p in params.items() if p.grad is None]
        assert not no_grad, f'parameters without gradient: {no_grad[:5]}'
        assert all(torch.isfinite(p.grad).all() for p in params.values())
        assert model.get_classifier().weight.grad.abs().sum() > 0
        assert model.gater.fc2.weight.grad.abs().sum() > 0


def test_straight_through_gradient_reaches_gater(case, monkeypatch):
    """With binary gates only (discrete_prob=1) the gater still gets a gradient: the step is straight-through."""
    model, x = case.model, case.x
    monkeypatch.setattr(model.gater.binarizer, 'discrete_prob', 1.0)
    with _train_mode(model):
        logits, gates = model.forward_with_gates(x)
        assert _is_binary(gates).all()
        logits.square().sum().backward()
        first_conv = next(m for m in model.gater.encoder.modules() if isinstance(m, nn.Conv2d))
        assert model.gater.fc2.weight.grad.abs().sum() > 0
        assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_step_ste():
    x = torch.tensor([0.0, 0.3, DEFAULT_THRESHOLD, 0.5, 0.7, 1.0], requires_grad=True)
    y = step_ste(x)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    upstream = torch.arange(1.0, 7.0)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)


# ---------------------------------------------------------------------------------------------------- gates


def test_eval_gates_binary_and_deterministic(case):
    model = case.model
    assert case.gates.shape == (BATCH, model.gate_size)
    assert case.gates.dtype == torch.float32
    assert _is_binary(case.gates).all()
    assert 0 < case.gates.mean() < 1  # a real mixture of open and closed gates, not a degenerate test input
    with torch.no_grad():
        again = model.forward_gates(case.x)
        logits = model.forward_gate_logits(case.x)
    assert torch.equal(again, case.gates)
    assert torch.equal(_reference_gates(logits), case.gates)


def test_training_mixes_discrete_and_continuous_gates(case, monkeypatch):
    """Training gates: per sample, either the whole binary vector or the whole continuous one."""
    model = case.model
    binarizer = model.gater.binarizer
    with torch.no_grad():
        logits = model.forward_gate_logits(case.x).repeat(32, 1)  # 64 rows
    rows = logits.shape[0]
    torch.manual_seed(123)
    try:
        binarizer.train()
        with torch.no_grad():
            monkeypatch.setattr(binarizer, 'discrete_prob', 1.0)
            assert _is_binary(binarizer(logits)).all()

            monkeypatch.setattr(binarizer, 'discrete_prob', 0.0)
            first, second = binarizer(logits), binarizer(logits)
            assert ((first >= 0) & (first <= 1)).all()
            assert (~_is_binary(first)).any(dim=1).all()  # every row continuous
            assert not torch.equal(first, second)  # training noise

            # Without noise each row must equal its continuous or its binary version exactly.
            monkeypatch.setattr(binarizer, 'noise_std', 0.0)
            monkeypatch.setattr(binarizer, 'discrete_prob', 0.5)
            continuous = torch.clamp(1.2 * torch.sigmoid(logits) - 0.1, 0.0, 1.0)
            discrete = _reference_gates(logits)
            mixed = binarizer(logits)
            is_continuous = (mixed == continuous).all(dim=1)
            is_discrete = (mixed == discrete).all(dim=1)
            assert (is_continuous ^ is_discrete).all()
            # Binomial(64, 0.5) has sd 4: 10..54 is more than 5 sd away from the mean on both sides.
            assert 10 <= int(is_discrete.sum()) <= rows - 10

            # With the default noise: all-binary rows at about the same rate, the other rows continuous.
            monkeypatch.setattr(binarizer, 'noise_std', 1.0)
            mixed = binarizer(logits)
            all_binary = _is_binary(mixed).all(dim=1)
            assert 10 <= int(all_binary.sum()) <= rows - 10
    finally:
        binarizer.eval()

    # The whole gater path uses the same binarisation in training mode.
    with _train_mode(model), torch.no_grad():
        monkeypatch.setattr(binarizer, 'discrete_prob', 1.0)
        assert _is_binary(model.forward_gates(case.x)).all()
        monkeypatch.setattr(binarizer, 'discrete_prob', 0.0)
        assert (~_is_binary(model.forward_gates(case.x))).any(dim=1).all()


def test_gates_ones_is_the_plain_backbone(case):
    model, x = case.model, case.x
    with torch.device('meta'):  # no weight initialisation: every tensor comes from the gated backbone
        plain = timm.create_model(model.backbone_name, num_classes=model.num_classes)
    plain.load_state_dict(model.backbone.state_dict(), strict=True, assign=True)
    plain.eval()
    with torch.no_grad():
        expected = plain(x)
        ones = model(x, gates=torch.ones(1, model.gate_size))  # one gate vector shared by the batch
        zeros = model(x, gates=torch.zeros(BATCH, model.gate_size))
        direct = model.backbone(x)  # no gates in the context: the slots are identities
    assert torch.equal(ones, expected)
    assert torch.equal(direct, expected)
    assert not torch.allclose(zeros, expected)


def test_forward_api(case):
    model, x = case.model, case.x
    with torch.no_grad():
        logits, gates = model.forward_with_gates(x)
    assert torch.equal(gates, case.gates)
    assert torch.equal(logits, case.logits)
    assert case.logits.shape == (BATCH, model.num_classes)

    parts = model.split_gates(case.gates)
    assert list(parts) == [s.name for s in model.gate_sites]
    for site in model.gate_sites:
        assert parts[site.name].shape == (BATCH, site.num_channels)
    assert torch.equal(torch.cat(list(parts.values()), dim=1), case.gates)
    with pytest.raises(ValueError, match=str(model.gate_size)):
        model.split_gates(case.gates[:, :-1])


# ------------------------------------------------------------------------------------------- timm contract


def test_timm_contract(case):
    model, x = case.model, case.x
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    assert features.ndim == 4 and features.shape[:2] == (BATCH, model.num_features)
    assert pre_logits.shape == (BATCH, model.num_features)
    assert torch.equal(logits, case.logits)

    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear)
    assert (classifier.in_features, classifier.out_features) == (model.num_features, model.num_classes)
    assert model.get_submodule(model.get_classifier(name_only=True)) is classifier

    for cfg in (model.pretrained_cfg, model.default_cfg):
        assert cfg['architecture'] == case.name
        assert cfg['num_classes'] == model.num_classes
        assert len(cfg['input_size']) == 3

    clone = copy.deepcopy(model)
    clone.reset_classifier(5)
    with torch.no_grad():
        assert clone(x).shape == (BATCH, 5)
    assert clone.num_classes == 5 and model.num_classes == case.logits.shape[1]


def test_channels_last(case):
    model, x = case.model, case.x
    with torch.no_grad():
        gate_logits = model.forward_gate_logits(x)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            gate_logits_cl = model.forward_gate_logits(x_cl)
            # Same gates for both layouts, so that a gate flipping on a rounding difference cannot decide the test.
            out_cl = model(x_cl, gates=case.gates)
    finally:
        model.to(memory_format=torch.contiguous_format)
    for got, expected in ((gate_logits_cl, gate_logits), (out_cl, case.logits)):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


def test_bf16_autocast(case):
    model, x = case.model, case.x
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        logits, gates = model.forward_with_gates(x)
    assert logits.dtype == torch.bfloat16  # autocast did engage
    assert logits.shape == (BATCH, model.num_classes)
    assert torch.isfinite(logits.float()).all()
    assert _is_binary(gates).all()


def test_deepcopy(case):
    model, x = case.model, case.x
    clone = copy.deepcopy(model)
    assert clone._gate_context is not model._gate_context
    assert all(slot.context is clone._gate_context for slot in _slots(clone.backbone))
    assert all(slot.context is model._gate_context for slot in _slots(model.backbone))

    during = {}

    def record(module, args):
        during.update(original=model._gate_context.gates, copy=clone._gate_context.gates)

    handle = _slots(clone.backbone)[0].register_forward_pre_hook(record)
    try:
        with torch.no_grad():
            out = clone(x, gates=torch.zeros(BATCH, clone.gate_size))
    finally:
        handle.remove()
    assert during['original'] is None and torch.equal(during['copy'], torch.zeros(BATCH, clone.gate_size))
    assert clone._gate_context.gates is None
    assert not torch.allclose(out, case.logits)
    with torch.no_grad():
        assert torch.equal(model(x), case.logits)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torch_compile_resnet20():
    torch.manual_seed(0)
    model = gz.create_model('gaternet_resnet20').eval()
    x = _images(model)
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: the gate context must not break the graph
    with torch.no_grad():
        expected = model(x)
        out = compiled(x)
        gates = compiled.forward_gates(x)
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=1e-3)
    assert _is_binary(gates).all()


# ----------------------------------------------------------------------------------------------- gate()


def _timm_last_convs(backbone: nn.Module) -> list[int]:
    return [(m.conv3 if isinstance(m, Bottleneck) else m.conv2).out_channels
            for m in backbone.modules() if isinstance(m, (BasicBlock, Bottleneck))]


@pytest.mark.parametrize('backbone, kwargs', slow_except([
    ('resnet18', dict(gater='resnet18', num_classes=7)),
    ('resnext50_32x4d', {}),
    ('seresnet50', {}),
    ('wide_resnet50_2', {}),
    ('resnet50d', {}),
], fast={'resnet18', 'seresnet50'}, key=lambda case: case[0], unpack=True))
def test_gate_timm_backbones(backbone, kwargs):
    torch.manual_seed(0)
    model = _randomise_norms(gz.gate(backbone, **kwargs)).eval()
    num_classes = kwargs.get('num_classes', 1000)
    assert isinstance(model, gz.GaterNet)
    assert model.plugin_name == 'timm_resnet'
    assert model.gater_name == 'resnet18'
    assert model.num_classes == num_classes
    assert model.gate_size == sum(_timm_last_convs(model.backbone))
    with torch.device('meta'):
        plain = timm.create_model(backbone, num_classes=num_classes)
    ours, theirs = model.backbone.state_dict(), plain.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)

    x = torch.randn(BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    site = model.gate_sites[1]  # layer1.1: no projection shortcut
    gates = torch.ones(BATCH, model.gate_size)
    gates[:, site.offset:site.offset + site.num_channels] = 0
    seen = {}
    handle = model.backbone.get_submodule(site.name).register_forward_hook(
        lambda m, i, o: seen.update(inp=i[0].clone(), out=o.clone()))
    try:
        with torch.no_grad():
            out = model(x, gates=gates)
    finally:
        handle.remove()
    with torch.no_grad():
        logits = model(x)
    assert out.shape == logits.shape == (BATCH, num_classes)
    assert torch.isfinite(logits).all()
    assert torch.equal(seen['out'], seen['inp'])


# ------------------------------------------------------------------------------ timm_resnet plugin coverage

_TIMM_RESNET = gz.get_plugin('timm_resnet')


# All of them (about 80) are checked by `make test`: on the meta device a build allocates nothing, ~0.1 s per
# model. The fast tier keeps one model per block variant and stem.
@pytest.mark.parametrize('name', slow_except(_TIMM_RESNET.supported_models(), fast={
    'resnet18', 'resnet50d', 'resnext50_32x4d', 'seresnet50', 'wide_resnet50_2', 'ecaresnet50d', 'resnetrs50'}))
def test_timm_resnet_plugin_supports(name):
    with torch.device('meta'):
        backbone = timm.create_model(name)
    keys = list(backbone.state_dict())
    assert _TIMM_RESNET.supports(backbone)
    assert find_plugin(backbone, name) is _TIMM_RESNET
    sites = _TIMM_RESNET.gate_sites(backbone)
    assert sites and [s.num_channels for s in sites] == _timm_last_convs(backbone)
    context, offset = GateContext(), 0
    for site in sites:
        assert site.offset == offset and site.num_channels > 0
        offset += site.num_channels
        _TIMM_RESNET.install(backbone, site, GateSlot(context, site.offset, site.num_channels, site.name))
    assert len(_slots(backbone)) == len(sites)
    assert list(backbone.state_dict()) == keys


@pytest.mark.parametrize("build", [lambda: gz.create_model("gaternet_resnet18"), lambda: gz.gate("resnet18")],
                         ids=["gaternet_resnet18", "gate_resnet18"])
def test_timm_backbone_gates_matter_at_initialisation(build) -> None:
    # timm zero-initialises each block's last norm by default; a GaterNet must not, or gates do nothing at init.
    model = build().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        closed = model(x, gates=torch.zeros(2, model.gate_size))
        opened = model(x, gates=torch.ones(2, model.gate_size))
    assert not torch.equal(closed, opened)


def test_cheap_gater_sees_the_pooled_image_and_costs_less() -> None:
    from gaternet_zoo.utils import gaternet_macs

    full = gz.create_model('gaternet_resnet20').eval()
    cheap = gz.create_model('gaternet_resnet20', gater_input_size=16).eval()
    cheap.load_state_dict(full.state_dict())  # same weights: only what the gater sees differs
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = full.gater.forward_logits(F.avg_pool2d(x, 2))
        torch.testing.assert_close(cheap.forward_gate_logits(x), expected, rtol=0, atol=1e-5)
        logits, gates = cheap(x, return_gates=True)
        torch.testing.assert_close(logits, full(x, gates=gates), rtol=0, atol=1e-5)  # the backbone sees all of x
    assert gaternet_macs(cheap, (3, 32, 32))['gater'] * 4 == pytest.approx(gaternet_macs(full, (3, 32, 32))['gater'],
                                                                        rel=1e-3)
    cheap.train()
    cheap(x).sum().backward()  # trains like the full gater
    assert cheap.gater.encoder.conv.weight.grad is not None


def test_cheap_gater_round_trips_and_refuses_bad_sizes(tmp_path: Path) -> None:
    model = gz.create_model('gaternet_resnet20', gater='cifar_resnet8', gater_input_size=[8, 16])
    assert model.gater.input_size == (8, 16)
    model.save_pretrained(tmp_path / 'cheap')
    again = gz.create_model(f'local-dir:{tmp_path / "cheap"}')
    assert again.gater.input_size == (8, 16) and again.gater_name == 'cifar_resnet8'
    for bad in (0, -4, [16], [16, 16, 16], 16.5, True):
        with pytest.raises(ValueError, match='gater input_size must be a positive side or \\(height, width\\)'):
            gz.create_model('gaternet_resnet20', gater_input_size=bad)
