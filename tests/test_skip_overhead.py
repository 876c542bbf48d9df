"""Skip execution's own cost (issue 26, "savings on the clock"): what a forward call adds to the backbone's work.

Skip execution derives what the gates say once per forward call, for every site together (``SkipPlan``); a site
whose gates are all open then runs its block's own forward with no tensor op added (its gate slot does not multiply
by gates that are all exactly 1), a site all closed gives its shortcut, and only a partly open site looks for its
open filters. These tests count aten ops per forward call (they count, they do not time), check that what the plan
derives equals what each site derives on its own, that skip mode still gives mask mode's logits, and that wherever
the gates' gradient is wanted the slots still multiply.
"""
from __future__ import annotations

import collections
import copy
from collections.abc import Callable

import pytest
import torch
from builders import assert_skip_equals_mask, build_tiny_gaternet, images
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import gaternet_zoo as gz
from gaternet_zoo.layers import GateSlot
from gaternet_zoo.layers.skip import SkippingBlockForward, SkippingConvForward, SkipPlan, open_filters

pytestmark = pytest.mark.usefixtures('one_torch_thread')

#: Ops a gated call adds to the plain backbone's, whatever the depth, when every gate is 1 (measured: 19 without
#: branch gates, 21 with them; 11 are the input and gate checks every GaterNet call makes, mask mode's too, the rest
#: the plan's). A little slack, so that a check added to the model does not fail this test; a per-block op would
#: add 9 (ResNet-20) or 27 (ResNet-56) and does.
CONSTANT_OPS = 24


class _OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched while it is active, by name (``nonzero``, ``mul``, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _count(fn: Callable[[], torch.Tensor]) -> collections.Counter[str]:
    """The aten ops of one call of ``fn`` without autograd, after a first call (folded weights, column indices)."""
    with torch.no_grad():
        fn()
        with _OpCounter() as counter:
            fn()
    return counter.ops


def _depth_case(depth: int, **model_args) -> tuple[collections.Counter[str], collections.Counter[str],
                                                    collections.Counter[str]]:
    """Ops of the plain ResNet, and of the GaterNet over it in mask and skip mode, with every gate 1, batch 1."""
    plain = gz.create_model(f'cifar_resnet{depth}').eval()
    model = build_tiny_gaternet(f'cifar_resnet{depth}', {}, **model_args)
    x, ones = images(1, 32), torch.ones(1, model.gate_size)
    mask = _count(lambda: model(x, gates=ones))
    model.set_execution('skip')
    return _count(lambda: plain(x)), mask, _count(lambda: model(x, gates=ones))


@pytest.mark.parametrize('model_args', [{}, dict(branch_gates=True), dict(branch_gates=True, filter_gates=False),
                                        dict(gate_placement='inner')],
                         ids=['filter_gates', 'branch_gates', 'branch_gates_only', 'inner_gates'])
def test_all_open_skip_mode_adds_a_constant_number_of_ops_whatever_the_depth(model_args: dict) -> None:
    plain20, mask20, skip20 = _depth_case(20, **model_args)
    plain56, mask56, skip56 = _depth_case(56, **model_args)
    extra20, extra56 = skip20 - plain20, skip56 - plain56
    assert not plain20 - skip20 and not plain56 - skip56  # every op of the plain backbone still runs
    assert extra20 == extra56, 'skip mode adds ops per block'  # the same ops, one by one: none grows with depth
    assert sum(extra20.values()) <= CONSTANT_OPS, extra20
    assert 'nonzero' not in skip56  # no site looks for its open filters when they are all open
    # Mask mode multiplies every site by its gates: 18 more blocks, at least 18 more ops (the counter sees them).
    assert sum((mask56 - plain56).values()) - sum((mask20 - plain20).values()) >= 18


def _close(gates: torch.Tensor, site, samples: slice | int = slice(None)) -> None:
    """Close ``site`` for ``samples``: its branch gate where it has one, else all of its filter gates."""
    if site.branch_offset is not None:
        gates[samples, site.branch_offset] = 0
    else:
        gates[samples, site.offset:site.offset + site.num_channels] = 0


def _open(gates: torch.Tensor, site) -> None:
    """Open every gate of ``site`` (its filter gates, where it has them, and its branch gate) for the batch."""
    if site.filter_gates:
        gates[:, site.offset:site.offset + site.num_channels] = 1
    if site.branch_offset is not None:
        gates[:, site.branch_offset] = 1


@pytest.mark.parametrize('depth', [20, 56])
@pytest.mark.parametrize('branch_gates', [False, True])
def test_open_and_closed_sites_find_no_indices_and_partly_open_ones_share_one_search(branch_gates: bool,
                                                                                       depth: int) -> None:
    model = build_tiny_gaternet(f'cifar_resnet{depth}', {}, branch_gates=branch_gates).set_execution('skip')
    plain = gz.create_model(f'cifar_resnet{depth}').eval()
    x = images(1, 32)
    every_other = torch.ones(1, model.gate_size)
    for site in model.gate_sites[::2]:
        _close(every_other, site)
    ops = _count(lambda: model(x, gates=every_other))
    plain_ops = _count(lambda: plain(x))
    assert 'nonzero' not in ops
    assert sum(ops.values()) < sum(plain_ops.values())  # half the branches not run, and nothing added per block
    random = (torch.rand(1, model.gate_size, generator=torch.Generator().manual_seed(7)) < 0.5).float()
    for site in model.gate_sites[::3]:
        _close(random, site)
    effective = model.effective_gates(random)
    partly = [s for s in model.gate_sites
              if 0 < int(effective[0, s.offset:s.offset + s.num_channels].sum()) < s.num_channels]
    assert len(partly) > 1
    # One nonzero for the call, however many blocks (and their convs) need their open filters.
    assert _count(lambda: model(x, gates=random))['nonzero'] == 1
    # Padded to a multiple of 8 filters, a site that still computes some but not all of them and whose open count
    # is not a multiple looks for closed filters to add, in its own part of the mask.
    model.set_execution('skip', width_multiple=8)
    opened = [int(effective[0, s.offset:s.offset + s.num_channels].sum()) for s in partly]
    padded = [n for n, s in zip(opened, partly) if n % 8 and n + (-n % 8) < s.num_channels]
    assert padded
    assert _count(lambda: model(x, gates=random))['nonzero'] == 1 + len(padded)


def _pruned(model: nn.Module) -> nn.Module:
    """``model`` with a few filters of every other site removed (kept: all but every fifth)."""
    model.prune_filters({s.name: [i for i in range(s.num_channels) if i % 5] for s in model.gate_sites[::2]})
    return model


def _variant(name: str) -> nn.Module:
    if name == 'filter_gates':
        return build_tiny_gaternet('cifar_resnet20', {})
    if name == 'branch_gates':
        return build_tiny_gaternet('cifar_resnet20', {}, branch_gates=True)
    if name == 'pruned':
        return _pruned(build_tiny_gaternet('cifar_resnet20', {}))
    if name == 'pruned_branch_gates':
        return _pruned(build_tiny_gaternet('cifar_resnet20', {}, branch_gates=True))
    if name == 'branch_gates_only':
        return build_tiny_gaternet('cifar_resnet20', {}, branch_gates=True, filter_gates=False)
    return build_tiny_gaternet('cifar_resnet164', dict(layers=[1, 1, 1], widths=[4, 8, 16], stem_width=8),
                               branch_gates=True)  # preact bottlenecks: no fast path, the gated conv is sliced


def _patterns(model: nn.Module, batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    sites = model.gate_sites
    mixed = (torch.rand(batch, model.gate_size, generator=g) < 0.6).float()
    for site in sites[::3]:
        _close(mixed, site)
    for site in sites[1::3]:  # all open for the whole batch
        _open(mixed, site)
    per_sample = torch.ones(batch, model.gate_size)
    for b in range(batch):  # each sample closes other sites, and opens half the filters of another one
        for site in sites[b % 3::3]:
            _close(per_sample, site, b)
        half = sites[(b + 1) % len(sites)]
        if half.filter_gates:
            per_sample[b, half.offset:half.offset + half.num_channels:2] = 0
    return {
        'all_open': torch.ones(batch, model.gate_size),
        'all_closed': torch.zeros(batch, model.gate_size),
        'open_but_not_one': torch.full((batch, model.gate_size), 0.5),  # open, so the slots must multiply
        'mixed': mixed,
        'per_sample': per_sample,
    }


#: Patterns that take the same path in both modes (dense blocks, or shortcuts): the logits are the same bits.
BITWISE = ('all_open', 'all_closed', 'open_but_not_one')


@pytest.mark.parametrize('batch', [1, 4])
@pytest.mark.parametrize('variant', ['filter_gates', 'branch_gates', 'pruned', 'pruned_branch_gates',
                                     'branch_gates_only', 'preact_bottleneck'])
def test_skip_logits_equal_mask_logits(variant: str, batch: int) -> None:
    model = _variant(variant)
    x = images(batch, 32)
    # The fast path folds the norms into the convs: equal up to float rounding, except for the BITWISE patterns.
    assert_skip_equals_mask(model, x, _patterns(model, batch), rtol=1e-5, atol=1e-5, bitwise=BITWISE)


@pytest.mark.parametrize('multiple', [1, 8])
@pytest.mark.parametrize('variant', ['filter_gates', 'branch_gates', 'pruned_branch_gates', 'branch_gates_only'])
def test_the_plan_derives_what_each_site_derives_on_its_own(variant: str, multiple: int) -> None:
    """For every site: the same filters to compute as ``open_filters``, the same gates as ``GateSlot.site_gates``.

    ``SkipPlan`` reads the gate vector's layout for all sites at once; this keeps it in step with the slots'.
    """
    model = _variant(variant)
    slots = {m.name: m for m in model.backbone.modules() if isinstance(m, GateSlot)}
    plan = SkipPlan([slots[s.name] for s in model.gate_sites])
    gates = (torch.rand(3, model.gate_size, generator=torch.Generator().manual_seed(5)) < 0.4).float()
    for site in model.gate_sites[::4]:
        _close(gates, site)
    _open(gates, model.gate_sites[1])
    context = model._gate_context
    with torch.no_grad(), context.bind(gates):
        call = plan.call_gates(context)
        assert call is not None and plan.call_gates(context) is call  # derived once per call
        for i, site in enumerate(model.gate_sites):
            slot = slots[site.name]
            expected = open_filters(slot, multiple)
            assert call.computed(i, multiple) == expected.numel(), site.name
            gate = slot.site_gates(gates)
            if slot.kept is not None:
                gate = gate.index_select(1, slot.kept)
            if expected.numel():
                assert torch.equal(call.index(i, multiple), expected), site.name
                assert torch.equal(call.gates_of(i, multiple), gate.index_select(1, expected)), site.name
            assert (site.offset in call.unit_sites) == bool((gate == 1).all()), site.name
    assert model.gate_sites[1].offset in call.unit_sites
    assert plan.call_gates(context) is None  # outside a forward call


def _gater_open_with_gradient(model: nn.Module) -> None:
    """Every gate of the gater open (1) in evaluation, where its straight-through gradient is not clamped to 0."""
    with torch.no_grad():
        model.gater.fc2.weight.zero_()
        model.gater.fc2.bias.fill_(1.0)  # clamp(1.2 * sigmoid(1) - 0.1) = 0.78: inside (0, 1), above the threshold


@pytest.mark.parametrize('model_args', [{}, dict(branch_gates=True), dict(branch_gates=True, filter_gates=False)],
                         ids=['filter_gates', 'branch_gates', 'branch_gates_only'])
def test_gradient_reaches_the_gater_through_all_open_gates_in_skip_mode(model_args: dict) -> None:
    """Autograd records the gates: the slots multiply by them (all 1), so the gater gets mask mode's gradient."""
    model = build_tiny_gaternet('cifar_resnet20', {}, **model_args)
    _gater_open_with_gradient(model)
    x = images(2, 32)
    grads = {}
    for mode in ('mask', 'skip'):
        model.set_execution(mode).zero_grad()
        logits, gates = model(x, return_gates=True)
        assert torch.equal(gates, torch.ones_like(gates)) and gates.requires_grad
        logits.square().sum().backward()
        grads[mode] = model.gater.fc2.bias.grad.clone()
    assert grads['skip'].abs().gt(0).float().mean() > 0.9  # nearly every gate gets a gradient (not none)
    torch.testing.assert_close(grads['skip'], grads['mask'], rtol=1e-5, atol=1e-7)


def test_mask_mode_and_training_multiply_by_gates_of_one() -> None:
    model = build_tiny_gaternet('cifar_resnet20', {}, branch_gates=True)
    x = images(2, 32)
    backbone = gz.create_model('cifar_resnet20').eval()
    plain = _count(lambda: backbone(x))
    ones = torch.ones(2, model.gate_size)
    mask_ops = _count(lambda: model(x, gates=ones))
    assert mask_ops['mul'] - plain['mul'] >= len(model.gate_sites)  # one multiply per site at least
    model.train()
    gates = torch.ones(2, model.gate_size, requires_grad=True)
    logits = model(x, gates=gates)
    logits.square().sum().backward()
    for site in model.gate_sites:  # the gradient reaches every site's gates
        assert gates.grad[:, site.offset:site.offset + site.num_channels].abs().sum() > 0, site.name
        assert gates.grad[:, site.branch_offset].abs().sum() > 0, site.name


@pytest.mark.parametrize('pattern', ['open_or_closed', 'partly_open'])
def test_what_is_first_made_in_inference_mode_serves_calls_with_autograd(pattern: str) -> None:
    """Made under torch.inference_mode, what skip execution caches is still saved for the backward pass of a later
    call with autograd (the gates' gradient): the plan's column indices (sites all open or all closed: the blocks'
    own forwards or their shortcuts) and a partly open block's conv and norm folded once (its fast path)."""
    model = _variant('pruned_branch_gates').set_execution('skip')  # both column indices (filters and branches)
    x = images(1, 32)
    gates = torch.ones(1, model.gate_size)
    if pattern == 'open_or_closed':
        for site in model.gate_sites[::2]:
            _close(gates, site)
        watched = slice(None)
    else:
        site = model.gate_sites[1]
        gates[:, site.offset:site.offset + site.num_channels // 2] = 0
        watched = slice(site.offset, site.offset + site.num_channels)
    with torch.inference_mode():
        expected = model(x, gates=gates)
    gates.requires_grad_(True)
    out = model(x, gates=gates)
    out.sum().backward()
    assert torch.equal(out.detach(), expected)
    assert gates.grad[:, watched].abs().sum() > 0


def test_deepcopy_gives_the_copy_its_own_plan_over_its_own_slots() -> None:
    model = build_tiny_gaternet('cifar_resnet20', {}, branch_gates=True).set_execution('skip')
    clone = copy.deepcopy(model)
    forwards = [m.__dict__['forward'] for m in clone.backbone.modules()
                if isinstance(m.__dict__.get('forward'), (SkippingConvForward, SkippingBlockForward))]
    plans = {id(f.plan) for f in forwards}
    assert len(plans) == 1  # one plan, shared by the copy's forwards
    plan = forwards[0].plan
    slots = [m for m in clone.backbone.modules() if isinstance(m, GateSlot)]
    assert all(any(s is p for s in slots) for p in plan.slots)
    assert plan is not model.backbone.get_submodule(model.gate_sites[0].name).forward.plan
    x = images(2, 32)
    gates = (torch.rand(2, model.gate_size, generator=torch.Generator().manual_seed(4)) < 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(clone(x, gates=gates), model(x, gates=gates), rtol=0, atol=0)


@pytest.mark.slow  # torch.compile takes seconds per model
def test_compiled_skip_mode_falls_back_to_each_site_and_stays_exact() -> None:
    """Under torch.compile there is no per-call memo: each site derives its own open filters, as eager code does
    without a plan, and graph breaks around the data-dependent decisions; the logits stay mask mode's."""
    model = build_tiny_gaternet('cifar_resnet20', {}, branch_gates=True)
    x = images(2, 32)
    patterns = _patterns(model, 2)
    with torch.no_grad():
        masked = {k: model(x, gates=g) for k, g in patterns.items()}
        model.set_execution('skip')
        torch._dynamo.reset()
        compiled = torch.compile(model, backend='eager')
        for k, g in patterns.items():
            torch.testing.assert_close(compiled(x, gates=g), masked[k], rtol=1e-5, atol=1e-5, msg=k)
