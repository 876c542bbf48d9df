"""Plugin for backbones written with gate slots: blocks that declare ``gate_channels`` and hold a ``gate`` module.

The CIFAR ResNets of this package (``cifar_resnet*``, ``cifar_wrn*``) are written that way, and so can any
third-party block: give it a ``gate = nn.Identity()`` attribute applied to the residual branch's last output and a
``gate_channels`` integer, and this plugin gates it.
"""
from __future__ import annotations

import torch
from torch import nn

from .._plugins import GateSite, GatingPlugin, offsets_in_order, register_gating_plugin
from ..layers.gates import GateSlot
from ..layers.pruning import (
    PruningError,
    slice_batchnorm,
    slice_conv_out,
    zero_batchnorm_channels,
    zero_conv_filters,
)


def _slot_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m) for name, m in model.named_modules()
        if isinstance(getattr(m, 'gate_channels', None), int) and isinstance(getattr(m, 'gate', None), nn.Module)
    ]


def _last_conv(block: nn.Module) -> str:
    # The gated conv is the last conv of the residual branch: the last registered conv outside the shortcut.
    convs = [n for n, m in block.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith('shortcut')]
    return convs[-1] if convs else ''


@register_gating_plugin
class NativeSlotPlugin(GatingPlugin):
    """Gates every block that exposes a ``gate`` slot and ``gate_channels``."""

    name = 'native'
    description = 'blocks with a `gate` slot and `gate_channels` (cifar_resnet20/32/44/56/110/164, cifar_wrn28_10)'
    model_patterns = ('cifar_resnet*', 'cifar_wrn*')
    representative_models = ('cifar_resnet20',)

    def supports(self, model: nn.Module) -> bool:
        return len(_slot_blocks(model)) > 0

    def gate_sites(self, model: nn.Module) -> list[GateSite]:
        return offsets_in_order(
            GateSite(name, block.gate_channels, conv=f'{name}.{_last_conv(block)}')
            for name, block in _slot_blocks(model))

    def install(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        block = model.get_submodule(site.name)
        if not isinstance(block.gate, nn.Identity):
            raise RuntimeError(f'Block {site.name!r} already holds a gate ({type(block.gate).__name__}).')
        block.gate = slot

    def prune_site(self, model: nn.Module, site: GateSite, kept: torch.Tensor) -> None:
        """Slice the gated conv's filters and, where the block declares one (``gate_norm``), its norm's channels."""
        block = model.get_submodule(site.name)
        if not hasattr(block, 'gate_norm'):
            raise PruningError(f'block {site.name!r} ({type(block).__name__}) does not declare `gate_norm` (the norm '
                               'between its gated conv and its gate, or None), so its filters cannot be pruned')
        conv_attr = site.conv[len(site.name) + 1:]
        setattr(block, conv_attr, slice_conv_out(block.get_submodule(conv_attr), kept))
        if block.gate_norm is not None:
            setattr(block, block.gate_norm, slice_batchnorm(block.get_submodule(block.gate_norm), kept))

    def zero_filters(self, model: nn.Module, site: GateSite, index: torch.Tensor) -> None:
        """Zero the scale and shift of the block's ``gate_norm`` channels, or the gated conv's filters without one."""
        block = model.get_submodule(site.name)
        if not hasattr(block, 'gate_norm'):
            raise PruningError(f'block {site.name!r} ({type(block).__name__}) does not declare `gate_norm` (the norm '
                               'between its gated conv and its gate, or None), so its filters cannot be zeroed')
        if block.gate_norm is not None:
            zero_batchnorm_channels(block.get_submodule(block.gate_norm), index)
        else:
            zero_conv_filters(block.get_submodule(site.conv[len(site.name) + 1:]), index)

    def channelwise_after_conv(self, model: nn.Module, site: GateSite) -> bool:
        # The gated conv is followed by its norm (gate_norm) or directly by the gate.
        return hasattr(model.get_submodule(site.name), 'gate_norm')

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        fn = getattr(block, 'shortcut_output', None)
        return fn(x) if fn is not None else None

    def has_shortcut(self, block: nn.Module) -> bool:
        # A block that says what its shortcut gives (`shortcut_output`): every block of the zoo's CIFAR ResNets.
        return callable(getattr(block, 'shortcut_output', None))

    def open_filters_forward(self, block: nn.Module, x: torch.Tensor, index: torch.Tensor, channels: torch.Tensor,
                             gate: torch.Tensor) -> torch.Tensor | None:
        fn = getattr(block, 'forward_open_filters', None)
        return fn(x, index, channels, gate) if fn is not None else None
