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
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .gates import GateSlot

__all__ = ['SkippingBlockForward', 'SkippingConvForward', 'SkippingInputForward', 'can_slice', 'folded_conv_bn',
           'open_filters']


def can_slice(conv: nn.Module) -> bool:
    """Whether skip execution can compute a subset of ``conv``'s output filters, or read a subset of its inputs."""
    if type(conv) is nn.Linear:
        return True
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == 'zeros'
            and not isinstance(conv.padding, str))


def open_filters(slot: GateSlot, multiple: int = 1) -> torch.Tensor | None:
    """Indices (into the site's conv outputs) of the filters open for some sample; ``None`` outside a gated call.

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
    with torch.no_grad():
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
    """

    def __init__(self, conv: nn.Module, slot: GateSlot, multiple: int = 1) -> None:
        self.conv, self.slot, self.multiple = conv, slot, multiple

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        width = conv.out_features if isinstance(conv, nn.Linear) else conv.out_channels
        index = open_filters(self.slot, self.multiple)
        if index is None or index.numel() == width:
            return type(conv).forward(conv, x)
        if index.numel() == 0:  # every filter closed: nothing to compute, only the output's shape
            if isinstance(conv, nn.Linear):
                return x.new_zeros(*x.shape[:-1], width)
            size = [(n + 2 * p - d * (k - 1) - 1) // st + 1 for n, p, d, k, st in zip(
                x.shape[2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride)]
            return x.new_zeros(x.shape[0], width, *size)
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
    the conv computes nothing: its output is its bias (0 without one) at every pixel.
    """

    def __init__(self, conv: nn.Conv2d, slot: GateSlot, multiple: int = 1) -> None:
        self.conv, self.slot, self.multiple = conv, slot, multiple

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        index = open_filters(self.slot, self.multiple)
        if index is None or index.numel() == conv.in_channels:
            return type(conv).forward(conv, x)
        if index.numel() == 0:
            size = [(n + 2 * p - d * (k - 1) - 1) // st + 1 for n, p, d, k, st in zip(
                x.shape[2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride)]
            y = x.new_zeros(x.shape[0], conv.out_channels, *size)
            return y if conv.bias is None else y + conv.bias.to(y.dtype)[None, :, None, None]
        return F.conv2d(x.index_select(1, index), conv.weight.index_select(1, index), conv.bias, conv.stride,
                        conv.padding, conv.dilation)


class SkippingBlockForward:
    """Set as a residual block's ``forward``: skips the branch's work when every one of the block's gates is closed.

    ``shortcut_only`` gives the block's output in that case: its shortcut for a site on the branch's last conv
    (``GatingPlugin.shortcut_only``), the shortcut plus the branch's constant for an inner site
    (``GatingPlugin.inner_closed_output``); where it returns ``None`` the block runs. Where the plugin has a fast path
    for the block (``GatingPlugin.open_filters_forward``, ``open_inner_forward``), a block with some of its filters
    closed computes only the open ones, rather than putting zeros in the others' places.
    """

    def __init__(self, block: nn.Module, slot: GateSlot,
                 shortcut_only: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 open_filters_forward: Callable[..., torch.Tensor | None] | None = None, multiple: int = 1) -> None:
        self.block, self.slot, self.shortcut_only = block, slot, shortcut_only
        self.open_filters_forward, self.multiple = open_filters_forward, multiple

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
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
