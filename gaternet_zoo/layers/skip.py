"""Skip execution: computing only the filters whose gates are open, and not running branches whose gates are all shut.

In mask mode (the paper's and every released dynamic-gating code base's) a closed gate multiplies a computed filter
by 0. In skip mode, at inference:

* the gated conv of each site computes only the filters open for at least one sample of the batch (all of a
  sample's own for batch 1), and puts zeros where the others were. Everything between that conv and the gate acts
  channel by channel (norm, activation, layer scale) in the supported blocks, and the gate multiplies those
  channels by 0 anyway, so the logits equal mask mode's;
* a residual block whose gates are closed for the whole batch does not run its branch at all: its output is what
  the shortcut gives (the plugin says how, see ``GatingPlugin.shortcut_only``).

With inner gates (``GaterNet(gate_placement="inner")``) the site's conv is the branch's inner conv and the gated
channels are the next conv's input channels: the inner conv computes only the open filters, as above, and the next
conv (:class:`SkippingInputForward`) reads only the open input channels, its weight sliced to them; the closed
ones are 0 there, so they would add nothing. A block whose inner gates are all closed for the whole batch is *not*
its shortcut: its last conv sees zeros and its norm adds its shift, which the plugin computes without the convs
(``GatingPlugin.inner_closed_output``) or, where it cannot, both gated convs compute nothing.

A site's gates here are the gates that act on its filters: its filter gates times its branch gate where the model
has branch gates (``GaterNet(branch_gates=True)``; the branch gate alone with ``filter_gates=False``), so a branch
gate closed for the whole batch skips the branch, and one closed for some samples only removes those samples from
the open filters. Both read the gates of the forward call in progress from the site's gate slot. Convs this cannot
slice (grouped convs, timm's ``CondConv2d``) run densely, which is still exact.

What a forward call's gates say is derived once, for every site together (:class:`SkipPlan`): the effective gates
of all sites in one tensor, which filters some sample opens and whether every gate is exactly 1, per-site counts by
one cumulative sum over the site boundaries, and one host sync (``tolist``) that brings the counts to Python. It is
kept in the call's memo (:meth:`~gaternet_zoo.layers.GateContext.memo`). A block then adds no tensor op of its own
unless some of its filters are open and others closed:

* a site whose gates are all closed for the whole batch gives its shortcut, with no tensor op to decide it;
* a site whose gates are all open runs the block's own dense forward, and where its gates are all exactly 1 for
  every sample its gate slot does not multiply by them (``x * 1.0`` is ``x``, bit for bit) unless autograd records
  the gates (their gradient needs the multiply). Mask mode, and training, always multiply;
* only a partly open site needs its open filters and their gates: the first one to ask finds those of every site
  at once (one ``nonzero`` over the call's mask, split by the per-site counts), the others read theirs.

Under ``torch.compile``, ``torch.export``, ``torch.fx`` or ``torch.jit.trace`` there is no per-call memo, or the
gates are not concrete tensors: each site then derives its own open filters from the gates (:func:`open_filters`),
tensor op by tensor op, and every gate slot multiplies.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .gates import UNIT_GATE_SITES, GateContext, GateSlot

__all__ = ['SkipPlan', 'SkippingBlockForward', 'SkippingConvForward', 'SkippingInputForward', 'can_slice',
           'folded_conv_bn', 'open_filters']


def can_slice(conv: nn.Module) -> bool:
    """Whether skip execution can compute a subset of ``conv``'s output filters, or read a subset of its inputs."""
    if type(conv) is nn.Linear:
        return True
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == 'zeros'
            and not isinstance(conv.padding, str))


def open_filters(slot: GateSlot, multiple: int = 1) -> torch.Tensor | None:
    """Indices (into the site's conv outputs) of the filters open for some sample; ``None`` outside a gated call.

    Derived from this site's gates alone: skip execution uses it where its :class:`SkipPlan` cannot derive the
    call's gates for all sites at once (traced and compiled calls).

    With ``multiple > 1`` closed filters are added, in index order, until the count is a multiple of it (or all
    filters): CPU conv kernels are vectorised over 8 or 16 output channels, and an odd filter count can cost more
    than the filters it leaves out. A closed filter's gate still multiplies it by 0, so the output is the same.
    A site with no open filter stays empty (its branch is skipped, not computed).
    """
    gates = slot.context.gates
    if gates is None:
        return None
    memo = slot.context.memo()  # the block and its gated conv both ask: derive it once per forward call
    if memo is not None and slot.offset in memo:
        return memo[slot.offset]
    gate = slot.site_gates(gates)  # times the site's branch gate, where it has one
    if slot.kept is not None:  # a pruned site: its conv has only the kept filters
        gate = gate.index_select(1, slot.kept)
    is_open = (gate > 0).any(0)
    index = is_open.nonzero().flatten()
    extra = -index.numel() % multiple
    if extra and index.numel():
        padding = (~is_open).nonzero().flatten()[:extra]
        index = torch.cat([index, padding]).sort().values
    if memo is not None:
        memo[slot.offset] = index
    return index


@dataclass
class _Layout:
    """Where the gates of every site of a :class:`SkipPlan` sit in the gate vector, as index tensors on one device."""

    device: torch.device
    kept: tuple[torch.Tensor | None, ...]  # the slots' ``kept`` tensors it was made from (held, so ids stay theirs)
    width: int  # filter gates of all sites together (a pruned site counts its kept filters only)
    filter_columns: torch.Tensor | None  # gate-vector column of each of them; None: they are columns 0 to width - 1
    branch_columns: torch.Tensor | None  # column of each one's branch gate; None: no site has a branch gate
    has_branch: torch.Tensor | None  # whether each one's site has a branch gate; None: every site has one, or none
    ends: torch.Tensor  # the last position of each site in the ``width`` gates
    positions: torch.Tensor  # each one's index among its site's filters
    starts: list[int]
    widths: list[int]


@dataclass
class _CallGates:
    """What one forward call's gates say for every site of a :class:`SkipPlan` (kept in the call's memo).

    ``gates`` are the effective gates of all sites side by side (B x width: filter gates times branch gates, a pruned
    site's kept filters only), ``opened`` whether some sample opens each of them, ``positions`` each one's index
    among its site's filters, ``counts`` how many of each site's filters are open (Python ints), ``unit_sites`` the
    offsets of the sites whose gates are all exactly 1 for every sample.
    """

    gates: torch.Tensor
    opened: torch.Tensor
    positions: torch.Tensor
    counts: list[int]
    starts: list[int]
    widths: list[int]
    unit_sites: frozenset[int]
    _open: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None
    _padded: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def computed(self, site: int, multiple: int) -> int:
        """How many filters of ``site`` skip execution computes: its open ones, padded up to ``multiple``.

        The same count as :func:`open_filters` gives, without a tensor op: closed filters are added until it is a
        multiple (or all of the site's), and a site with none open stays at 0.
        """
        count = self.counts[site]
        return min(count + (-count % multiple), self.widths[site]) if count else 0

    def index(self, site: int, multiple: int) -> torch.Tensor:
        """The filters of ``site`` to compute (as :func:`open_filters`), found on first use and kept for the call."""
        if self.counts[site] % multiple == 0:  # no padding: its open filters
            return self._open_filters()[0][site]
        index = self._padded.get((site, multiple))
        if index is None:  # closed filters added, in index order, up to the multiple: this site's own
            opened = self.opened.narrow(0, self.starts[site], self.widths[site])
            extra = -self.counts[site] % multiple
            padding = (~opened).nonzero().flatten()[:extra]
            index = torch.cat([self._open_filters()[0][site], padding]).sort().values
            self._padded[(site, multiple)] = index
        return index

    def gates_of(self, site: int, multiple: int) -> torch.Tensor:
        """The effective gates (B x len(index)) of the filters :meth:`index` gives for ``site``."""
        if self.counts[site] % multiple == 0:
            return self._open_filters()[1][site]
        return self.gates.narrow(1, self.starts[site], self.widths[site]).index_select(1, self.index(site, multiple))

    def _open_filters(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Per site, its open filters (indices among its own) and their gates: found for every site in one go.

        Made when the first partly open site asks (a site all open or all closed needs neither): one ``nonzero``
        over the whole call's mask, split by the per-site counts, rather than one per site.
        """
        if self._open is None:
            flat = self.opened.nonzero().flatten()
            self._open = (self.positions.index_select(0, flat).split(self.counts),
                          self.gates.index_select(1, flat).split(self.counts, 1))
        return self._open


class SkipPlan:
    """Derives what skip execution needs from a forward call's gates once, for every gate site at once.

    :meth:`~gaternet_zoo.GaterNet.set_execution` makes one per model, over its gate slots in gate-site order, and
    gives it to every skipping forward. The first of them to run in a call derives, in a handful of tensor ops and
    one host sync, which filters of every site are open and how many per site, and whether every gate of a site is
    exactly 1; the others read it. It leaves the sites whose gates are all 1 in the call's memo under
    :data:`~gaternet_zoo.layers.gates.UNIT_GATE_SITES`, where their gate slots find that their multiply would be
    the identity. A plain object holding the slots: ``copy.deepcopy`` and pickling of the model carry it over,
    shared by the copied forwards and pointing at the copied slots.

    Args:
        slots: The gate slots of the model, in gate-site order.
    """

    def __init__(self, slots: Sequence[GateSlot]) -> None:
        self.slots = tuple(slots)
        self._layout: _Layout | None = None

    def site_of(self, slot: GateSlot) -> int:
        """The position of ``slot`` among the plan's slots."""
        for i, s in enumerate(self.slots):
            if s is slot:
                return i
        raise ValueError(f'gate slot {slot.name!r} is not one of this skip plan\'s slots')

    def call_gates(self, context: GateContext) -> _CallGates | None:
        """What the gates of the forward call in progress say, derived on first use in the call.

        ``None`` where it cannot be derived once for the call: outside a gated call, while ``torch.compile`` or
        ``torch.export`` trace (no per-call memo), or when the gates are not a concrete tensor (``torch.fx``
        Proxies, fake or meta tensors, ``torch.jit.trace``). Each site then finds its own open filters
        (:func:`open_filters`).
        """
        memo = context.memo()
        if memo is None:
            return None
        call = memo.get(self)
        if call is None:
            call = self._derive(context.gates)
            memo[self] = call if call is not None else False  # False: not derivable in this call, do not retry
            if call is not None:
                memo[UNIT_GATE_SITES] = call.unit_sites
        return call or None

    def _derive(self, gates: torch.Tensor | None) -> _CallGates | None:
        # Only a plain tensor with values: a Proxy, a fake or functional tensor (export) or a traced value cannot
        # give Python ints, and tracing would bake this call's decisions into the graph.
        if type(gates) is not torch.Tensor or gates.device.type == 'meta' or torch.jit.is_tracing():
            return None
        layout = self._layout_on(gates.device)
        if layout.filter_columns is None:
            effective = gates.narrow(1, 0, layout.width)
        else:
            effective = gates.index_select(1, layout.filter_columns)
        if layout.branch_columns is not None:
            branch = gates.index_select(1, layout.branch_columns)
            if layout.has_branch is not None:  # sites without a branch gate: their filter gates as they are
                branch = torch.where(layout.has_branch, branch, 1.0)
            effective = effective * branch  # the same product as GateSlot.site_gates, so the same values
        opened = (effective > 0).any(0)
        unit = (effective == 1).all(0)
        # Per-site counts: a cumulative sum read at each site's last position; the one host sync of the call.
        open_sums, unit_sums = torch.stack([opened, unit]).cumsum(1).index_select(1, layout.ends).tolist()
        counts = [b - a for a, b in zip([0, *open_sums], open_sums)]
        units = [b - a for a, b in zip([0, *unit_sums], unit_sums)]
        unit_sites = frozenset(slot.offset for slot, n, w in zip(self.slots, units, layout.widths) if n == w)
        return _CallGates(effective, opened, layout.positions, counts, layout.starts, layout.widths, unit_sites)

    def _layout_on(self, device: torch.device) -> _Layout:
        """The sites' gate columns on ``device``, made again whenever a slot's pruning (``kept``) changed."""
        kept = tuple(slot.kept for slot in self.slots)
        layout = self._layout
        if layout is not None and layout.device == device and all(a is b for a, b in zip(layout.kept, kept)):
            return layout
        # Normal tensors even when first made under torch.inference_mode: a later call with autograd recording
        # saves the column indices for the backward pass, which an inference tensor refuses.
        with torch.inference_mode(False):
            layout = self._make_layout(device, kept)
        self._layout = layout
        return layout

    def _make_layout(self, device: torch.device, kept: tuple[torch.Tensor | None, ...]) -> _Layout:
        filters, branches, widths = [], [], []
        for slot in self.slots:
            # The columns GateSlot.site_gates reads: the site's filter gates (only the kept ones of a pruned
            # site, as its forward selects them) and its branch gate. A site without filter gates
            # (filter_gates=False) reads its branch gate for every filter, and multiplies by nothing else.
            width = slot.num_channels if slot.kept is None else len(slot.kept)
            if not slot.filter_gates:
                filters.append(torch.full((width,), slot.branch_offset, dtype=torch.long))
                branches.append(-1)
            else:
                columns = torch.arange(slot.offset, slot.offset + slot.num_channels)
                filters.append(columns if slot.kept is None else columns.index_select(0, slot.kept.cpu()))
                branches.append(-1 if slot.branch_offset is None else slot.branch_offset)
            widths.append(width)
        filter_columns = torch.cat(filters) if filters else torch.zeros(0, dtype=torch.long)
        width = len(filter_columns)
        contiguous = torch.equal(filter_columns, torch.arange(width))
        per_filter = torch.tensor(branches, dtype=torch.long).repeat_interleave(torch.tensor(widths, dtype=torch.long))
        has_branch = per_filter >= 0
        starts = [0]
        for w in widths[:-1]:
            starts.append(starts[-1] + w)
        return _Layout(
            device=device, kept=kept, width=width,
            filter_columns=None if contiguous else filter_columns.to(device),
            branch_columns=per_filter.clamp(min=0).to(device) if bool(has_branch.any()) else None,
            has_branch=None if bool(has_branch.all()) or not bool(has_branch.any()) else has_branch.to(device),
            ends=(torch.tensor(widths, dtype=torch.long).cumsum(0) - 1).to(device),
            positions=torch.cat([torch.arange(w) for w in widths] or [filter_columns]).to(device),
            starts=starts, widths=widths)


def _filters_to_compute(slot: GateSlot, plan: SkipPlan | None, site: int,
                        multiple: int) -> tuple[int, Callable[[], torch.Tensor]] | None:
    """How many filters of ``slot``'s site to compute in this call, and a function giving their indices.

    From the call's :class:`SkipPlan` where it has one (no tensor op unless the indices are asked for), else from
    :func:`open_filters` (traced paths). ``None`` outside a gated call.
    """
    call = plan.call_gates(slot.context) if plan is not None else None
    if call is not None:
        return call.computed(site, multiple), lambda: call.index(site, multiple)
    index = open_filters(slot, multiple)
    return None if index is None else (index.numel(), lambda: index)


def folded_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of one conv equal to ``bn(conv(x))`` in evaluation (the norm's running statistics folded).

    Skip execution's fast paths slice the folded weights, which saves the norm's own pass and four slices of its
    statistics per block. The result is cached on ``conv`` and recomputed whenever a tensor it was made from
    changed: in place through autograd's version counter (``load_state_dict``, an optimizer step, an in-place op
    under ``torch.no_grad()``), or replaced (``param.data = ...``, ``vector_to_parameters``, ``.to()``), which
    changes the storage it points to. The cache keeps the storages it was made from alive, so a new one cannot
    take an old one's address. An in-place write through ``param.data`` is the one change PyTorch counts nowhere;
    :meth:`~gaternet_zoo.GaterNet.set_execution` drops every cache, for code that edits weights that way.
    """
    sources = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    key = tuple((id(t), t.data_ptr(), t._version) if t is not None else None for t in sources)
    cached = conv.__dict__.get('_skip_folded')
    if cached is not None and cached[0] == key:
        return cached[1]
    # Normal tensors even when first made under torch.inference_mode: a later call with autograd recording (the
    # gates' gradient in evaluation) saves them for the backward pass, which an inference tensor refuses.
    with torch.inference_mode(False), torch.no_grad():
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = -bn.running_mean * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        weight = conv.weight * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
    # The third item holds the source storages (views of them; no copy) so their addresses stay theirs.
    conv.__dict__['_skip_folded'] = (key, (weight, bias), [t.data for t in sources if t is not None])
    return weight, bias


class SkippingConvForward:
    """Set as a gated conv's ``forward``: computes only its open filters (see the module docstring).

    A callable object rather than a closure, so that ``copy.deepcopy`` and pickling of the model carry it over to
    the copied conv and slot.

    Args:
        conv: The gated conv.
        slot: Its site's gate slot.
        multiple: Compute a multiple of this many filters (see :func:`open_filters`).
        plan: The model's :class:`SkipPlan`, which derives the open filters of every site once per call; without
            one each call finds this site's on its own.
    """

    def __init__(self, conv: nn.Module, slot: GateSlot, multiple: int = 1, plan: SkipPlan | None = None) -> None:
        self.conv, self.slot, self.multiple = conv, slot, multiple
        self.plan, self.site = plan, plan.site_of(slot) if plan is not None else -1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        width = conv.out_features if isinstance(conv, nn.Linear) else conv.out_channels
        filters = _filters_to_compute(self.slot, self.plan, self.site, self.multiple)
        if filters is None or filters[0] == width:
            return type(conv).forward(conv, x)
        if filters[0] == 0:  # every filter closed: nothing to compute, only the output's shape
            if isinstance(conv, nn.Linear):
                return x.new_zeros(*x.shape[:-1], width)
            size = [(n + 2 * p - d * (k - 1) - 1) // st + 1 for n, p, d, k, st in zip(
                x.shape[2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride)]
            return x.new_zeros(x.shape[0], width, *size)
        index = filters[1]()
        bias = conv.bias.index_select(0, index) if conv.bias is not None else None
        weight = conv.weight.index_select(0, index)
        if isinstance(conv, nn.Linear):  # channels last: (..., C)
            y = F.linear(x, weight, bias)
            return y.new_zeros(*y.shape[:-1], width).index_copy(y.ndim - 1, index, y)
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
        return y.new_zeros(y.shape[0], width, *y.shape[2:]).index_copy(1, index, y)


class SkippingInputForward:
    """Set as the ``forward`` of an inner site's next conv: reads only the input channels whose gates are open.

    The closed channels of its input are 0 (the inner site's gate multiplied them, or the inner conv did not compute
    them), so dropping them from the input and from the weight leaves the output unchanged. With no open channel
    the conv computes nothing: its output is its bias (0 without one) at every pixel. The arguments are
    :class:`SkippingConvForward`'s.
    """

    def __init__(self, conv: nn.Conv2d, slot: GateSlot, multiple: int = 1, plan: SkipPlan | None = None) -> None:
        self.conv, self.slot, self.multiple = conv, slot, multiple
        self.plan, self.site = plan, plan.site_of(slot) if plan is not None else -1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        filters = _filters_to_compute(self.slot, self.plan, self.site, self.multiple)
        if filters is None or filters[0] == conv.in_channels:
            return type(conv).forward(conv, x)
        if filters[0] == 0:
            size = [(n + 2 * p - d * (k - 1) - 1) // st + 1 for n, p, d, k, st in zip(
                x.shape[2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride)]
            y = x.new_zeros(x.shape[0], conv.out_channels, *size)
            return y if conv.bias is None else y + conv.bias.to(y.dtype)[None, :, None, None]
        index = filters[1]()
        return F.conv2d(x.index_select(1, index), conv.weight.index_select(1, index), conv.bias, conv.stride,
                        conv.padding, conv.dilation)


class SkippingBlockForward:
    """Set as a residual block's ``forward``: skips the branch's work when every one of the block's gates is closed.

    ``shortcut_only`` gives the block's output in that case: its shortcut for a site on the branch's last conv
    (``GatingPlugin.shortcut_only``), the shortcut plus the branch's constant for an inner site
    (``GatingPlugin.inner_closed_output``); where it returns ``None`` the block runs. Where the plugin has a fast path
    for the block (``GatingPlugin.open_filters_forward``, ``open_inner_forward``), a block with some of its filters
    closed computes only the open ones, rather than putting zeros in the others' places. A block whose filters are
    all computed runs its own ``forward``, with no tensor op added here (with a :class:`SkipPlan`).
    ``multiple`` and ``plan`` are :class:`SkippingConvForward`'s.
    """

    def __init__(self, block: nn.Module, slot: GateSlot,
                 shortcut_only: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 open_filters_forward: Callable[..., torch.Tensor | None] | None = None, multiple: int = 1,
                 plan: SkipPlan | None = None) -> None:
        self.block, self.slot, self.shortcut_only = block, slot, shortcut_only
        self.open_filters_forward, self.multiple = open_filters_forward, multiple
        self.plan, self.site = plan, plan.site_of(slot) if plan is not None else -1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        slot = self.slot
        call = self.plan.call_gates(slot.context) if self.plan is not None else None
        if call is None:
            return self._forward_unplanned(x)
        computed = call.computed(self.site, self.multiple)
        if computed == 0:
            out = self.shortcut_only(self.block, x)
            if out is not None:
                return out
        elif computed < call.widths[self.site] and self.open_filters_forward is not None:
            index = call.index(self.site, self.multiple)
            channels = index if slot.kept is None else slot.kept.index_select(0, index)
            out = self.open_filters_forward(self.block, x, index, channels, call.gates_of(self.site, self.multiple))
            if out is not None:
                return out
        return type(self.block).forward(self.block, x)

    def _forward_unplanned(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output from this site's gates alone (traced paths, or no plan): each step a tensor op."""
        slot = self.slot
        index = open_filters(slot, self.multiple)
        if index is not None and index.numel() == 0:
            out = self.shortcut_only(self.block, x)
            if out is not None:
                return out
        width = slot.num_channels if slot.kept is None else len(slot.kept)
        if index is not None and 0 < index.numel() < width and self.open_filters_forward is not None:
            channels = index if slot.kept is None else slot.kept.index_select(0, index)
            gate = slot.site_gates(slot.context.gates).index_select(1, channels)
            out = self.open_filters_forward(self.block, x, index, channels, gate)
            if out is not None:
                return out
        return type(self.block).forward(self.block, x)
