"""The gate context is scoped to one forward call: threads, replicas, copies and nested calls never share gates.

Every test compares against the results of plain serial calls, with models whose gates change the output (checked
in ``model_and_inputs``), so that a call that ran with another call's gates, or ungated, cannot pass.
"""

from __future__ import annotations

import copy
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

import gaternet_zoo as gz
from gaternet_zoo.layers.gates import GateContext, GateSlot

pytestmark = pytest.mark.usefixtures('one_torch_thread')

NUM_CALLS = 240  # concurrent calls in the thread test
BATCH = 2


def _slots(module: nn.Module) -> list[GateSlot]:
    return [m for m in module.modules() if isinstance(m, GateSlot)]


@pytest.fixture(scope='module')
def model() -> nn.Module:
    torch.manual_seed(0)
    # One block per stage: the fastest GaterNet that still has gates at every kind of site.
    return gz.create_model('gaternet_resnet20', backbone_args=dict(layers=(1, 1, 1))).eval()


def _inputs(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, 3, 32, 32, generator=g) for _ in range(n)]


def _random_gates(model: nn.Module, n: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(BATCH, model.gate_size, generator=g) > 0.5).float() for _ in range(n)]


def test_gates_change_the_output(model) -> None:
    """The premise of every other test here: other gates give other logits."""
    x = _inputs(1)[0]
    with torch.no_grad():
        gated = model(x)
        opened = model(x, gates=torch.ones(1, model.gate_size))
        closed = model(x, gates=torch.zeros(1, model.gate_size))
    assert not torch.equal(gated, opened) and not torch.equal(gated, closed)


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_concurrent_calls_from_threads_equal_serial_calls(model) -> None:
    """Hundreds of calls from 16 threads, half with the gater's gates and half with given random gates."""
    inputs, gates = _inputs(NUM_CALLS), _random_gates(model, NUM_CALLS)

    def call(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            if i % 2:
                return model(inputs[i], gates=gates[i], return_gates=True)
            return model(inputs[i], return_gates=True)

    serial = [call(i) for i in range(NUM_CALLS)]
    start = threading.Barrier(16)

    def call_after_barrier(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i < 16:
            start.wait()  # the first 16 calls start together
        return call(i)

    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(call_after_barrier, range(NUM_CALLS)))
    wrong = [i for i, ((lc, gc), (ls, gs)) in enumerate(zip(concurrent, serial))
             if not (torch.equal(lc, ls) and torch.equal(gc, gs))]
    assert not wrong, f'{len(wrong)} of {NUM_CALLS} concurrent calls differ from the serial ones: {wrong[:10]}'
    assert model._gate_context.gates is None


def _replicate(network: nn.Module, copies: int) -> list[nn.Module]:
    """The module copies ``nn.DataParallel`` makes (``torch.nn.parallel.replicate`` without the device broadcast).

    Each module is copied with ``_replicate_for_data_parallel`` (a shallow copy of its ``__dict__``, so the copies
    share the gate context object) and the copies are linked to each other's children.
    """
    modules = list(network.modules())
    index = {m: i for i, m in enumerate(modules)}
    replicas = [[m._replicate_for_data_parallel() for m in modules] for _ in range(copies)]
    for i, module in enumerate(modules):
        for replica in replicas:
            replica[i]._parameters = dict(module._parameters)  # same tensors: one device here
        for key, child in module._modules.items():
            for replica in replicas:
                setattr(replica[i], key, None if child is None else replica[index[child]])
    return [replica[0] for replica in replicas]


def test_data_parallel_replicas_running_in_threads_do_not_share_gates(model) -> None:
    replicas = _replicate(model, 4)
    assert all(r._gate_context is model._gate_context for r in replicas)  # shared object, as in DataParallel
    inputs = _inputs(4 * 20, seed=3)
    with torch.no_grad():
        serial = [model(x) for x in inputs]

    def run(k: int) -> list[torch.Tensor]:  # replica k takes every 4th input, as parallel_apply runs a replica
        with torch.no_grad():
            return [replicas[k](x) for x in inputs[k::4]]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(4)))
    for k in range(4):
        assert all(torch.equal(out, ref) for out, ref in zip(results[k], serial[k::4]))


def test_deepcopy_and_ema_get_their_own_context(model) -> None:
    from timm.utils import ModelEmaV3

    clone = copy.deepcopy(model)
    ema = ModelEmaV3(model, decay=0.9).module
    for other in (clone, ema):
        assert isinstance(other._gate_context, GateContext) and other._gate_context is not model._gate_context
        assert all(slot.context is other._gate_context for slot in _slots(other.backbone))
    assert all(slot.context is model._gate_context for slot in _slots(model.backbone))

    # The copy runs inside the original's forward pass (a hook on a block): each call keeps its own gates.
    x, y = _inputs(2, seed=5)
    with torch.no_grad():
        expected_outer, expected_inner = model(x), clone(y, gates=torch.zeros(1, clone.gate_size))
    inner = []
    block = model.backbone.get_submodule(model.gate_sites[0].name)
    handle = block.register_forward_hook(lambda m, i, o: inner.append(clone(y, gates=torch.zeros(1, clone.gate_size))))
    try:
        with torch.no_grad():
            outer = model(x)
    finally:
        handle.remove()
    assert torch.equal(outer, expected_outer) and torch.equal(inner[0], expected_inner)


def test_pickled_model_gets_a_fresh_context(model) -> None:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded._gate_context is not model._gate_context
    assert all(slot.context is loaded._gate_context for slot in _slots(loaded.backbone))
    x = _inputs(1, seed=6)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_nested_call_restores_the_outer_gates(model) -> None:
    """A forward hook that calls the same model (other input, other gates) in the middle of a forward pass."""
    x, y = _inputs(2, seed=7)
    with torch.no_grad():
        expected_outer, expected_inner = model(x), model(y, gates=torch.zeros(1, model.gate_size))
    inner = []

    def call_again(module, args, output):
        if not inner:  # only from the outer call (the inner call passes this block too)
            inner.append(None)
            inner[0] = model(y, gates=torch.zeros(1, model.gate_size))

    # The first site's block: the rest of the outer pass must run with the outer gates again.
    handle = model.backbone.get_submodule(model.gate_sites[0].name).register_forward_hook(call_again)
    try:
        with torch.no_grad():
            outer = model(x)
    finally:
        handle.remove()
    assert torch.equal(outer, expected_outer)
    assert torch.equal(inner[0], expected_inner)
    assert model._gate_context.gates is None


def test_exception_leaves_no_gates_behind(model) -> None:
    x = _inputs(1, seed=8)[0]
    with torch.no_grad():
        expected, plain = model(x), model.backbone(x)

    def fail(module, args):
        raise RuntimeError('boom')

    handle = _slots(model.backbone)[-1].register_forward_pre_hook(fail)
    try:
        with torch.no_grad(), pytest.raises(RuntimeError, match='boom'):
            model(x, gates=torch.zeros(1, model.gate_size))
    finally:
        handle.remove()
    assert model._gate_context.gates is None
    with torch.no_grad():
        assert torch.equal(model.backbone(x), plain)  # the slots are identities again outside a call
        assert torch.equal(model(x), expected)


def test_context_bind_is_per_thread() -> None:
    context = GateContext()
    gates = torch.ones(1, 3)
    seen = []
    with context.bind(gates):
        worker = threading.Thread(target=lambda: seen.append(context.gates))
        worker.start()
        worker.join()
        assert context.gates is gates
        with context.bind(gates * 0):
            assert torch.equal(context.gates, gates * 0)
        assert context.gates is gates
    assert seen == [None] and context.gates is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torch_compile_with_a_graph_break_inside_the_backbone_still_gates(model, monkeypatch) -> None:
    """Eager code between compiled graphs (a graph break) reads the gates the compiled part pushed.

    (``fullgraph=True`` with inductor is tested in test_models.py::test_torch_compile_resnet20.)
    """
    import torch._dynamo

    x = _inputs(1, seed=9)[0]
    closed = torch.zeros(1, model.gate_size)
    with torch.no_grad():
        expected, expected_closed = model(x), model(x, gates=closed)
    # A block dynamo does not compile: it runs eagerly, between the compiled graphs, with its gate slot inside.
    block = model.backbone.get_submodule(model.gate_sites[2].name)
    monkeypatch.setattr(block, 'forward', torch._dynamo.disable(block.forward))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='eager')
    try:
        with torch.no_grad():
            assert torch.equal(compiled(x), expected)
            assert torch.equal(compiled(x, gates=closed), expected_closed)
    finally:
        torch._dynamo.reset()
    assert model._gate_context.gates is None


def test_memo_lives_as_long_as_its_call():
    context = GateContext()
    assert context.memo() is None
    outer = context.push(torch.ones(1, 4))
    context.memo()['site'] = 'outer'
    inner = context.push(torch.zeros(1, 4))
    assert context.memo() == {}  # a nested call derives its own
    context.memo()['site'] = 'inner'
    context.pop(inner)
    assert context.memo() == {'site': 'outer'}
    context.pop(outer)
    assert context.memo() is None
    again = context.push(torch.ones(1, 4))
    assert context.memo() == {}  # nothing carried over from an earlier call
    context.pop(again)
