"""Removing gated filters for real: slicing a conv's output filters and the norm that follows it.

A gate that is closed for every input makes its filter dead weight: the filter is computed, normalised and then
multiplied by 0. Pruning takes such filters out of the gated conv (and out of the norm right after it), so they are
never computed; the gate slot puts the remaining channels back at their indices, with zeros for the removed ones,
before the residual addition. See :func:`gaternet_zoo.prune_gaternet`.

A static export (:func:`gaternet_zoo.export_static`) has no gates left. Where the gating plugin knows the block's
shortcut (``GatingPlugin.has_kept_filters_forward``), the block adds its kept channels into the shortcut at their
indices (:func:`add_into_shortcut`) and a :class:`KeptChannels` takes the pruned gate slot's place; elsewhere a
:class:`ScatterChannels` takes it and puts the kept channels back at their indices, with zeros for the others, before
the block's own residual addition. :func:`zero_conv_filters`, :func:`zero_batchnorm_channels` and
:func:`zero_norm_channels` make a kept filter whose gate was always closed output exactly 0.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ['KeptChannels', 'PruningError', 'ScatterChannels', 'add_into_shortcut', 'slice_batchnorm', 'slice_conv_out',
           'sends_zero_to_zero', 'zero_batchnorm_channels', 'zero_conv_filters', 'zero_norm_channels']


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


@torch.no_grad()
def zero_conv_filters(conv: nn.Conv2d | nn.Linear, index: torch.Tensor) -> None:
    """Make the output filters ``index`` of ``conv`` compute 0 for any finite input (weights and bias zeroed).

    An ``nn.Linear`` used as a 1x1 conv (ConvNeXt's channels-last MLP) counts its output features as filters. Conv
    subclasses that standardise their weights per filter (timm's ``StdConv2d``) also give 0: a zero filter
    standardises to 0.
    """
    if not isinstance(conv, (nn.Conv2d, nn.Linear)):
        raise PruningError(f'only nn.Conv2d filters (or nn.Linear outputs) can be zeroed, got {type(conv).__name__}')
    idx = _index(index, conv.weight.device)
    conv.weight.index_fill_(0, idx, 0.0)
    if conv.bias is not None:
        conv.bias.index_fill_(0, idx, 0.0)


@torch.no_grad()
def zero_batchnorm_channels(norm: nn.BatchNorm2d, index: torch.Tensor) -> None:
    """Make the channels ``index`` of ``norm`` output 0 in evaluation (scale and shift zeroed), whatever its input."""
    if not isinstance(norm, nn.BatchNorm2d) or not norm.affine:
        raise PruningError(f'only affine nn.BatchNorm2d channels can be zeroed, got {norm!r}')
    idx = _index(index, norm.weight.device)
    norm.weight.index_fill_(0, idx, 0.0)
    norm.bias.index_fill_(0, idx, 0.0)


#: timm's norm classes whose output is ``act(drop(affine(normalised input)))`` channel by channel (the norm + activation
#: layers; ``GroupNorm``/``GroupNorm1`` without either): zeroing a channel's scale and shift gives ``act(0)`` there.
_TIMM_NORMS = ('BatchNormAct2d', 'SyncBatchNormAct', 'GroupNormAct', 'GroupNorm1Act', 'GroupNorm', 'GroupNorm1')


@torch.no_grad()
def zero_norm_channels(norm: nn.Module, index: torch.Tensor) -> None:
    """Make the channels ``index`` of ``norm`` output exactly 0 whatever its input: their scale and shift zeroed.

    Covers PyTorch's batch norms (in evaluation: their running statistics do not involve the affine parameters) and
    group norms (in any mode: the other channels' statistics do not involve them either, whereas zeroing the conv
    filter before a group norm would change them), and timm's layers built on them (``BatchNormAct2d``,
    ``GroupNormAct``, ...) whose activation sends 0 to 0 (ReLU, SiLU, GELU, hard-swish; not a sigmoid), checked on
    a zero map before any weight changes. Any other class is refused rather than assumed to work the same way.

    Raises:
        PruningError: Another norm (EvoNorm, filter response norm, a subclass whose forward is not known), one
            without affine parameters, or an activation that does not send 0 to 0.
    """
    cls = type(norm)
    known = isinstance(norm, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and (
        cls.__module__.startswith('torch.nn.') or (cls.__module__.startswith('timm.') and cls.__name__ in _TIMM_NORMS))
    if not known:
        raise PruningError(f'only batch and group norms (PyTorch\'s, and timm\'s {", ".join(_TIMM_NORMS)}) can have '
                           f'channels zeroed, got {cls.__module__}.{cls.__name__}')
    if not norm.affine:
        raise PruningError(f'{type(norm).__name__} has no affine scale and shift to zero')
    idx = _index(index, norm.weight.device)
    for name in ('drop', 'act'):  # what timm's norm + activation layers apply after the affine, in this order
        module = getattr(norm, name, None)
        if module is not None and not sends_zero_to_zero(module, norm.weight.numel(), norm.weight):
            raise PruningError(f'the {name} of {type(norm).__name__} ({type(module).__name__}) does not send 0 to 0, '
                               'so a channel with zero scale and shift would not output 0')
    norm.weight.index_fill_(0, idx, 0.0)
    norm.bias.index_fill_(0, idx, 0.0)


@torch.no_grad()
def sends_zero_to_zero(module: nn.Module, channels: int, reference: torch.Tensor) -> bool:
    """Whether ``module`` maps an all-zero map of ``channels`` channels (on ``reference``'s device and dtype) to zeros.

    For what may lie between a gated conv (or its norm) and its gate, an activation, an anti-aliasing blur or a
    pooling layer, that is what matters: each acts on a channel's values alone, and a zero channel stays zero
    exactly when the module maps 0 to 0. Run in evaluation mode, restored afterwards.
    """
    training = module.training
    try:
        out = module.eval()(torch.zeros(1, channels, 4, 4, device=reference.device, dtype=reference.dtype))
    finally:
        module.train(training)
    return bool((out == 0).all())


class _KeptIndices(nn.Module):
    """What a pruned gate slot's replacement holds: the kept channels' indices (not saved in the ``state_dict``: the
    model's config rebuilds them), the full width and the parameter-free module the slot ran afterwards."""

    def __init__(self, kept: torch.Tensor | list[int], num_channels: int, after: nn.Module | None = None) -> None:
        super().__init__()
        self.register_buffer('kept', torch.as_tensor(kept, dtype=torch.long), persistent=False)
        self.num_channels = int(num_channels)
        self.after = after


class ScatterChannels(_KeptIndices):
    """Puts a pruned conv's ``kept`` channels back at their indices among ``num_channels``, zeros elsewhere.

    What a pruned gate slot does once no gate is left (a static export) in a block whose shortcut the gating plugin
    does not know: the residual addition that follows needs the block's full width. Where the plugin knows it, the
    block adds the kept channels into the shortcut itself (:class:`KeptChannels`), which fills no zero map.
    ``kept`` is not saved in the ``state_dict`` (the model's config rebuilds it).

    Args:
        kept: Sorted indices of the kept channels.
        num_channels: The full width.
        after: An optional parameter-free module run afterwards (the drop-path module the gate slot held).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = x.new_zeros(x.shape[0], self.num_channels, x.shape[2], x.shape[3])
        x = full.index_copy_(1, self.kept, x)
        return x if self.after is None else self.after(x)

    def extra_repr(self) -> str:
        return f'kept={len(self.kept)}, num_channels={self.num_channels}'


class KeptChannels(_KeptIndices):
    """A pruned gate slot's place in a static export whose block adds the ``kept`` channels into its shortcut itself.

    The block's forward (``GatingPlugin.kept_filters_forward``) runs this where it ran the gate slot, on the kept
    channels only, and then adds them into the shortcut at the indices ``kept`` holds
    (:func:`add_into_shortcut`): unlike :class:`ScatterChannels` it fills no zero map of the full width, and the
    addition adds no zeros. It runs the parameter-free module the gate slot held (timm's drop-path module, which acts
    per sample, so on the kept channels as on all of them), if any. ``kept`` is not saved in the ``state_dict``.

    Args:
        kept: Sorted indices of the kept channels among the block's ``num_channels``.
        num_channels: The full width.
        after: An optional parameter-free module run on the kept channels (the drop-path module the gate slot held).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.after is None else self.after(x)

    def extra_repr(self) -> str:
        return f'kept={len(self.kept)}, num_channels={self.num_channels}, added into the shortcut'


def add_into_shortcut(shortcut: torch.Tensor, kept: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """``shortcut`` with the ``branch`` channels added at the channel indices ``kept``: a pruned block's residual add.

    Equal to ``shortcut + z`` where ``z`` is ``branch`` put back at ``kept`` among zeros (:class:`ScatterChannels`),
    without making ``z``: channels outside ``kept`` are the shortcut's own, untouched by any addition. A new tensor
    (``index_add``, not in place), so an in-place activation after it cannot change a shortcut that is the block's
    input. In the dtype ``shortcut + z`` would have.
    """
    # index_add needs one dtype; under autocast both are the same, and then no conversion runs.
    if not isinstance(branch, torch.fx.Proxy) and branch.dtype != shortcut.dtype:
        dtype = torch.promote_types(branch.dtype, shortcut.dtype)
        shortcut, branch = shortcut.to(dtype), branch.to(dtype)
    return shortcut.index_add(1, kept, branch)
