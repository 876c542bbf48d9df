"""Removing gated filters for real: slicing a conv's output filters and the norm that follows it.

A gate that is closed for every input makes its filter dead weight: the filter is computed, normalised and then
multiplied by 0. Pruning takes such filters out of the gated conv (and out of the norm right after it), so they are
never computed; the gate slot puts the remaining channels back at their indices, with zeros for the removed ones,
before the residual addition. See :func:`gaternet_zoo.prune_gaternet`.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ['PruningError', 'slice_conv_out', 'slice_batchnorm']


class PruningError(ValueError):
    """Raised when filters cannot be pruned exactly (the plugin does not support it, or the block mixes channels)."""


def _index(keep: torch.Tensor, device: torch.device) -> torch.Tensor:
    return keep.to(device=device, dtype=torch.long)


@torch.no_grad()
def slice_conv_out(conv: nn.Conv2d, keep: torch.Tensor) -> nn.Conv2d:
    """A copy of ``conv`` that computes only the output filters ``keep`` (sorted indices)."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise PruningError(f'only dense nn.Conv2d layers can lose output filters, got {conv!r}')
    idx = _index(keep, conv.weight.device)
    out = nn.Conv2d(conv.in_channels, len(idx), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    out.weight.copy_(conv.weight.index_select(0, idx))
    if conv.bias is not None:
        out.bias.copy_(conv.bias.index_select(0, idx))
    return out


@torch.no_grad()
def slice_batchnorm(norm: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    """A copy of ``norm`` (affine parameters and running statistics) over the channels ``keep`` only."""
    if not isinstance(norm, nn.BatchNorm2d):
        raise PruningError(f'only nn.BatchNorm2d norms can be sliced, got {type(norm).__name__}')
    device = (norm.weight if norm.weight is not None else norm.running_mean).device
    idx = _index(keep, device)
    out = nn.BatchNorm2d(len(idx), norm.eps, norm.momentum, norm.affine, norm.track_running_stats, device=device)
    if norm.affine:
        out.weight.copy_(norm.weight.index_select(0, idx))
        out.bias.copy_(norm.bias.index_select(0, idx))
    if norm.track_running_stats:
        out.running_mean.copy_(norm.running_mean.index_select(0, idx))
        out.running_var.copy_(norm.running_var.index_select(0, idx))
        out.num_batches_tracked.copy_(norm.num_batches_tracked)
    return out.train(norm.training)
