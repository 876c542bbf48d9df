"""Plugin for backbones written with gate slots: blocks that declare ``gate_channels`` and hold a ``gate`` module.

The CIFAR ResNets of this package (``cifar_resnet*``, ``cifar_wrn*``) are written that way, and so can any
third-party block: give it a ``gate = nn.Identity()`` attribute applied to the residual branch's last output and a
``gate_channels`` integer, and this plugin gates it. For inner gates (``GaterNet(gate_placement="inner")``) a block
also has an ``inner_gate = nn.Identity()`` applied to its inner conv's activated output right before the next conv,
and ``inner_gate_convs = (inner conv, next conv)`` naming both; only channelwise operations (norm, activation,
dropout) may lie between them. A residual block says what its shortcut gives (``shortcut_output(x)``: skip execution
and branch gates) and, for a static export, how it adds the kept filters of its pruned gated conv into the shortcut
(``forward_kept(x, kept)``); without them, its branch always runs and a static export scatters the kept channels
into a zero map first.
"""
from __future__ import annotations

import torch
from torch import nn

from .._plugins import (
    GateSite,
    GatingPlugin,
    UnsupportedPlacementError,
    offsets_in_order,
    register_gating_plugin,
)
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


def _refuse_inner(site: GateSite, what: str) -> None:
    if site.next_conv:
        raise PruningError(f'gate site {site.name!r} is an inner site (gate_placement="inner"): its filters cannot be '
                           f'{what} yet; prune or export a model with gate_placement="last"')


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

    def inner_gate_sites(self, model: nn.Module) -> list[GateSite]:
        """One inner site per block: ``inner_gate_convs[0]``'s filters, which are ``inner_gate_convs[1]``'s inputs.

        Raises:
            UnsupportedPlacementError: A gated block declares no ``inner_gate`` slot and ``inner_gate_convs``.
        """
        sites = []
        for name, block in _slot_blocks(model):
            convs = getattr(block, 'inner_gate_convs', None)
            if not isinstance(getattr(block, 'inner_gate', None), nn.Module) or not (
                    isinstance(convs, tuple) and len(convs) == 2):
                raise UnsupportedPlacementError(
                    f'block {name!r} ({type(block).__name__}) has no inner gate site: gate_placement="inner" needs '
                    'an `inner_gate = nn.Identity()` applied to the inner conv\'s activated output and '
                    '`inner_gate_convs = (inner conv, next conv)` (as the zoo\'s CIFAR ResNet blocks have)')
            inner, after = convs
            sites.append(GateSite(name, block.get_submodule(inner).out_channels, conv=f'{name}.{inner}',
                                  next_conv=f'{name}.{after}'))
        return offsets_in_order(sites)

    def install_inner(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        block = model.get_submodule(site.name)
        if not isinstance(block.inner_gate, nn.Identity):
            raise RuntimeError(f'Block {site.name!r} already holds an inner gate ({type(block.inner_gate).__name__}).')
        block.inner_gate = slot

    def inner_closed_output(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        fn = getattr(block, 'inner_closed_output', None)
        return fn(x) if fn is not None else None

    def open_inner_forward(self, block: nn.Module, x: torch.Tensor, index: torch.Tensor, channels: torch.Tensor,
                           gate: torch.Tensor) -> torch.Tensor | None:
        fn = getattr(block, 'forward_open_inner', None)
        return fn(x, index, channels, gate) if fn is not None else None

    def prune_site(self, model: nn.Module, site: GateSite, kept: torch.Tensor) -> None:
        """Slice the gated conv's filters and, where the block declares one (``gate_norm``), its norm's channels."""
        _refuse_inner(site, 'pruned')
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
        _refuse_inner(site, 'zeroed')
        block = model.get_submodule(site.name)
        if not hasattr(block, 'gate_norm'):
            raise PruningError(f'block {site.name!r} ({type(block).__name__}) does not declare `gate_norm` (the norm '
                               'between its gated conv and its gate, or None), so its filters cannot be zeroed')
        if block.gate_norm is not None:
            zero_batchnorm_channels(block.get_submodule(block.gate_norm), index)
        else:
            zero_conv_filters(block.get_submodule(site.conv[len(site.name) + 1:]), index)

    def channelwise_after_conv(self, model: nn.Module, site: GateSite) -> bool:
        if site.next_conv:  # an inner site: inner_gate_convs declares channelwise operations only in between
            return True
        # The gated conv is followed by its norm (gate_norm) or directly by the gate.
        return hasattr(model.get_submodule(site.name), 'gate_norm')

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        fn = getattr(block, 'shortcut_output', None)
        return fn(x) if fn is not None else None

    def has_shortcut(self, block: nn.Module) -> bool:
        # A block that says what its shortcut gives (`shortcut_output`): every block of the zoo's CIFAR ResNets.
        return callable(getattr(block, 'shortcut_output', None))

    def kept_filters_forward(self, block: nn.Module, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor | None:
        fn = getattr(block, 'forward_kept', None)
        return fn(x, kept) if fn is not None else None

    def has_kept_filters_forward(self, block: nn.Module) -> bool:
        # A block that says what its shortcut gives and how it adds kept filters into it (`forward_kept`).
        return self.has_shortcut(block) and callable(getattr(block, 'forward_kept', None))

    def open_filters_forward(self, block: nn.Module, x: torch.Tensor, index: torch.Tensor, channels: torch.Tensor,
                             gate: torch.Tensor) -> torch.Tensor | None:
        fn = getattr(block, 'forward_open_filters', None)
        return fn(x, index, channels, gate) if fn is not None else None
