"""timm's model contract for every registered GaterNet, as timm's own ``tests/test_models.py`` checks it.

Mirrors timm's ``test_model_default_cfgs``, ``_forward_features`` (``features_only``), ``_forward_intermediates``,
``_forward_fx`` / ``_backward_fx`` and ``_forward_torchscript``, plus deployment: ``torch.export`` and ONNX with the
gates inside the graph. Forward and backward passes of the full models are in ``test_models.py``.

To stay fast on two CPU cores the shape checks run on the meta device (full models at their full input size, no
compute), and the checks that need numbers run on "tiny" versions of each registered model: the same backbone and
gater families, blocks and gate sites, with one block per stage.
"""

from __future__ import annotations

import math

import pytest
import torch
from tiers import slow_except
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo.models.cifar_resnet import CifarResNet

pytestmark = pytest.mark.usefixtures('one_torch_thread')

MODEL_NAMES = gz.list_models()
# The ImageNet-size models (and the generic one, ImageNet-size by default) build full-size backbones for the cfg and
# feature tests: seconds to a minute each, so they run in `make test` but not in `make test-fast` (issue 25).
# The deeper and wider CIFAR models repeat ResNet-20's code path: they also run in `make test` only.
MODEL_PARAMS = slow_except(MODEL_NAMES, fast={'gaternet_resnet20'})
BATCH = 2
SIDE = 32  # input side of the tiny models (the ImageNet families accept it too)


def _tiny_args(name: str) -> dict:
    """Model arguments making ``name`` one block per stage, for its backbone and its gater."""
    with torch.device('meta'):
        model = gz.create_model(name)
    args = {}
    for key, net in (('backbone_args', model.backbone), ('gater_args', model.gater.encoder)):
        if isinstance(net, CifarResNet):  # narrow too: a wide ResNet has the blocks of a plain pre-activation one
            args[key] = dict(layers=[1] * len(net.stages()), widths=[16 * 2 ** i for i in range(len(net.stages()))])
        elif type(net).__name__ in ('ResNet', 'ResNetV2'):
            args[key] = dict(layers=[1] * (len(net.feature_info) - 1))
    return args


@pytest.fixture(scope='module', params=MODEL_PARAMS)
def tiny(request) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    model = gz.create_model(request.param, **_tiny_args(request.param)).eval()
    _randomise_norms(model)
    return request.param, model


def _randomise_norms(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)


def _x(seed: int = 0, batch: int = BATCH, side: int = SIDE) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- default cfgs


@pytest.mark.parametrize('name', MODEL_PARAMS)
def test_default_cfgs(name: str) -> None:
    """timm's test_model_default_cfgs, at each model's full default input size, on the meta device."""
    with torch.device('meta'):
        model = gz.create_model(name).eval()
        x = torch.zeros(1, *model.default_cfg['input_size'])
        state_dict = model.state_dict()
        cfg = model.default_cfg
        pool_size = cfg['pool_size']
        assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0

        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert features.shape[1] == model.num_features and tuple(features.shape[-2:]) == tuple(pool_size)
        assert pre_logits.shape[1] == model.head_hidden_size

        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.shape == pre_logits.shape == (1, model.head_hidden_size)

        model.reset_classifier(0, '')
        out = model(x)
        assert out.ndim == 4 and tuple(out.shape[-2:]) == tuple(pool_size)

        model = gz.create_model(name, num_classes=0, global_pool='').eval()
        out = model(x)
        assert out.ndim == 4 and tuple(out.shape[-2:]) == tuple(pool_size)

    classifiers = cfg['classifier'] if isinstance(cfg['classifier'], (list, tuple)) else [cfg['classifier']]
    for c in classifiers:
        assert c + '.weight' in state_dict, f'{c} not in model params'
    first_convs = [cfg['first_conv']] if isinstance(cfg['first_conv'], str) else cfg['first_conv']
    for c in first_convs:
        assert c + '.weight' in state_dict, f'{c} not in model params'


def test_generic_gaternet_cfg_names_its_timm_backbone() -> None:
    with torch.device('meta'):
        model = gz.create_model('gaternet', backbone='resnet18', gater='resnet18')
    keys = model.state_dict()
    assert model.default_cfg['first_conv'] == ['backbone.conv1', 'gater.encoder.conv1']
    assert model.default_cfg['classifier'] == 'backbone.fc'
    assert all(f'{c}.weight' in keys for c in [*model.default_cfg['first_conv'], model.default_cfg['classifier']])


# ------------------------------------------------------------------------------------------------ features


@pytest.mark.parametrize('name', MODEL_PARAMS)
def test_features_only(name: str) -> None:
    """timm's test_model_forward_features: feature_info levels match the outputs (meta device, full model)."""
    with torch.device('meta'):
        model = gz.create_model(name, features_only=True).eval()
        channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
        assert len(channels) >= 3
        side = min(model.default_cfg['input_size'][-1], 96)
        outputs = model(torch.zeros(1, 3, side, side))
    assert len(outputs) == len(channels)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[:2] == (1, c)
        assert o.shape[-1] <= math.ceil(side / r) + 1 and o.shape[-2] <= math.ceil(side / r) + 1
    with pytest.raises(ValueError, match='feature_cls="getter"'):
        gz.create_model(name, features_only=True, feature_cls='hook')


def test_features_only_gates_act(tiny) -> None:
    """The features_only wrapper computes the gates: its features are the gated ones, not the plain backbone's."""
    name, model = tiny
    features_model = gz.create_model(name, features_only=True, **_tiny_args(name)).eval()
    missing, _ = features_model.model.load_state_dict(model.state_dict(), strict=False)  # (its head is pruned)
    assert not missing
    x = _x(1)
    with torch.no_grad():
        features = features_model(x)
        gated = model.forward_intermediates(x, intermediates_only=True)
        opened = model.forward_intermediates(x, intermediates_only=True, gates=torch.ones(1, model.gate_size))
    assert len(features) == len(gated)
    assert all(torch.equal(f, g) for f, g in zip(features, gated))
    assert not torch.equal(features[-1], opened[-1])


def test_forward_intermediates(tiny) -> None:
    """timm's test_model_forward_intermediates, plus grad checkpointing, with the gater's gates acting."""
    _, model = tiny
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    assert len(info.channels()) >= 3
    x = _x(2)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, output_fmt='NCHW')
        features = model.forward_features(x)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        closed = model.forward_intermediates(x, gates=torch.zeros(1, model.gate_size))[0]
    assert len(intermediates) == len(info.channels())
    for c, r, o in zip(info.channels(), info.reduction(), intermediates):
        assert o.shape[:2] == (BATCH, c) and o.shape[-1] <= math.ceil(SIDE / r) + 1
    assert torch.equal(final, features)
    assert all(torch.equal(a, b) for a, b in zip(last_two, intermediates[-2:]))
    assert not torch.equal(closed, final)
    model.set_grad_checkpointing(True)
    try:
        with torch.no_grad():
            again, _ = model.forward_intermediates(x)
    finally:
        model.set_grad_checkpointing(False)
    torch.testing.assert_close(again, final, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ torch.fx


def _fx_model(model: nn.Module, train: bool = False) -> nn.Module:
    """timm's _create_fx_model: torchvision's feature extractor on the last node, with timm's tracer settings."""
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    train_return, eval_return = [train_nodes[-1]], [eval_nodes[-1]]
    if train:
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        nodes = list(reversed(graph.nodes))
        names = [n.name for n in nodes]
        train_return = [train_nodes[-names.index(n.name)] for n in nodes[0]._input_nodes]
    return create_feature_extractor(model, train_return_nodes=train_return, eval_return_nodes=eval_return,
                                    tracer_kwargs=tracer_kwargs)


def test_fx_forward(tiny) -> None:
    """timm's test_model_forward_fx: the traced model's output equals the model's, gates included."""
    _, model = tiny
    x, y = _x(3), _x(4)
    with torch.inference_mode():
        expected = [model(x), model(y)]
        fx_model = _fx_model(model)
        got = [torch.cat(tuple(fx_model(v).values())) for v in (x, y)]
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    # Gates are computed inside the traced graph: a model whose gate path was baked in would ignore new gates.
    assert any(isinstance(m, type(model.gater.binarizer)) for m in fx_model.modules())
    with pytest.raises(ValueError, match='concrete_args'):
        fx_model(x, gates=torch.ones(1, model.gate_size))
    # Plain torch.fx (no timm tracer settings) traces it too.
    traced = torch.fx.symbolic_trace(model)
    with torch.inference_mode():
        assert torch.equal(traced(x), expected[0])


def test_fx_backward(tiny) -> None:
    """timm's test_model_backward_fx: a traced training-mode model gives every parameter a gradient."""
    name = tiny[0]
    torch.manual_seed(0)
    model = gz.create_model(name, num_classes=42, **_tiny_args(name)).train()
    num_params = sum(p.numel() for p in model.parameters())
    fx_model = _fx_model(model, train=True)
    outputs = torch.cat(tuple(fx_model(_x(5)).values()))
    outputs.mean().backward()
    missing = [n for n, p in fx_model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    assert sum(p.grad.numel() for p in fx_model.parameters()) == num_params
    assert outputs.shape[-1] == 42 and not torch.isnan(outputs).any()


# --------------------------------------------------------------------------------------------- deployment


def test_forward_returns_gates_on_request(tiny) -> None:
    _, model = tiny
    x = _x(10)
    with torch.no_grad():
        logits, gates = model(x, return_gates=True)
        assert torch.equal(logits, model(x)) and torch.equal(gates, model.forward_gates(x))
        alias_logits, alias_gates = model.forward_with_gates(x)
        assert torch.equal(alias_logits, logits) and torch.equal(alias_gates, gates)
        given_logits, given_gates = model(x, gates=torch.zeros(1, model.gate_size), return_gates=True)
    assert torch.equal(given_gates, torch.zeros(BATCH, model.gate_size)) and not torch.equal(given_logits, logits)


@pytest.mark.filterwarnings('ignore:`torch.jit.* is deprecated:FutureWarning')  # TorchScript, on its way out
@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')  # the input checks, static for a given shape
def test_torchscript_is_refused_with_a_pointer_to_torch_export(tiny) -> None:
    """torch.jit.script is refused with the way out; torch.jit.trace (runs the Python code) works."""
    _, model = tiny
    with pytest.raises(RuntimeError, match=r'torch\.export'):
        torch.jit.script(model)
    x, y = _x(11), _x(12)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        torch.testing.assert_close(traced(y), model(y), rtol=1e-5, atol=1e-5)


def test_torch_export_keeps_the_gates_in_the_graph(tiny) -> None:
    """An exported eval-mode model (dynamic batch) computes the gates of each new input, as the model does."""
    _, model = tiny
    x, y = _x(6), _x(7, batch=5)
    batch = torch.export.Dim('batch', min=1, max=1024)
    program = torch.export.export(model, (x,), kwargs={'return_gates': True},
                                  dynamic_shapes={'x': {0: batch}, 'return_gates': None})
    exported = program.module()
    with torch.no_grad():
        for v in (x, y):  # batch 2 and 5
            logits, gates = exported(v, return_gates=True)
            expected_logits, expected_gates = model(v, return_gates=True)
            assert torch.equal(gates, expected_gates)
            torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    assert not torch.equal(model(x, return_gates=True)[1], model(y, return_gates=True)[1])  # the gates differ


def _structure(name: str) -> tuple:
    """The block types of a model's backbone and gater: models sharing it export to the same ONNX operators."""
    with torch.device('meta'):
        model = gz.create_model(name)
    return tuple(sorted({type(m).__qualname__ for m in model.modules()}))


ONNX_MODELS = list({_structure(n): n for n in reversed(MODEL_NAMES)}.values())


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
@pytest.mark.parametrize('name', ONNX_MODELS)
def test_onnx_export_matches_pytorch(name: str) -> None:
    """ONNX export (torch.onnx, dynamo exporter, dynamic batch) of an eval-mode model, run by onnxruntime: 1e-4.

    One model per distinct set of block types (models differing only in depth give the same operators).
    """
    ort = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    torch.manual_seed(0)
    model = gz.create_model(name, **_tiny_args(name)).eval()
    _randomise_norms(model)
    x, y = _x(8), _x(9, batch=5)
    batch = torch.export.Dim('batch', min=1, max=1024)
    program = torch.onnx.export(model, (x,), dynamic_shapes={'x': {0: batch}}, dynamo=True, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=['CPUExecutionProvider'])
    input_name = session.get_inputs()[0].name
    for v in (x, y):
        with torch.no_grad():
            expected = model(v)
        got = torch.from_numpy(session.run(None, {input_name: v.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
