"""Skip execution: computing only the filters whose gates are open, and not running branches whose gates are all shut.

In mask mode (the paper's and every released dynamic-gating code base's) a closed gate multiplies a computed filter
by 0. In skip mode, at inference:

* the gated conv of each site computes only the filters open for at least one sample of the batch (all of a
  sample's own for batch 1), and puts zeros where the others were. Everything between that conv and the gate acts
  channel by channel (norm, activation, layer scale) in the supported blocks, and the gate multiplies those
  channels by 0 anyway, so the logits equal mask mode's;
* a residual block whose gates are closed for the whole batch does not run its branch at all: its output is what
  the shortcut gives (the plugin says how, see ``GatingPlugin.shortcut_only``).

Both read the gates of the forward call in progress from the site's gate slot. Convs this cannot slice (grouped
convs, timm's ``CondConv2d``) run densely, which is still exact.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .gates import GateSlot

__all__ = ['SkippingBlockForward', 'SkippingConvForward', 'can_slice', 'open_filters']


def can_slice(conv: nn.Module) -> bool:
    """Whether :func:`skipping_conv_forward` can compute a subset of ``conv``'s output filters."""
    if type(conv) is nn.Linear:
        return True
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == 'zeros'
            and not isinstance(conv.padding, str))


def open_filters(slot: GateSlot) -> torch.Tensor | None:
    """Indices (into the site's conv outputs) of the filters open for some sample; ``None`` outside a gated call."""
    gates = slot.context.gates
    if gates is None:
        return None
    memo = slot.context.memo()  # the block and its gated conv both ask: derive it once per forward call
    if memo is not None and slot.offset in memo:
        return memo[slot.offset]
    gate = gates[:, slot.offset:slot.offset + slot.num_channels]
    if slot.kept is not None:  # a pruned site: its conv has only the kept filters
        gate = gate.index_select(1, slot.kept)
    index = (gate > 0).any(0).nonzero().flatten()
    if memo is not None:
        memo[slot.offset] = index
    return index


class SkippingConvForward:
    """Set as a gated conv's ``forward``: computes only its open filters (see the module docstring).

    A callable object rather than a closure, so that ``copy.deepcopy`` and pickling of the model carry it over to
    the copied conv and slot.
    """

    def __init__(self, conv: nn.Module, slot: GateSlot) -> None:
        self.conv, self.slot = conv, slot

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        width = conv.out_features if isinstance(conv, nn.Linear) else conv.out_channels
        index = open_filters(self.slot)
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


class SkippingBlockForward:
    """Set as a residual block's ``forward``: skips the branch when every one of the block's gates is closed."""

    def __init__(self, block: nn.Module, slot: GateSlot,
                 shortcut_only: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        self.block, self.slot, self.shortcut_only = block, slot, shortcut_only

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        index = open_filters(self.slot)
        if index is not None and index.numel() == 0:
            out = self.shortcut_only(self.block, x)
            if out is not None:
                return out
        return type(self.block).forward(self.block, x)
