"""Plugin for timm's ``ResNet`` family (``timm/models/resnet.py``): ``BasicBlock`` and ``Bottleneck``.

That covers resnet18/26/34/50/101/152 and their ``d``/``t``/``s`` stems, ResNeXt, wide_resnet, SE-/ECA-ResNets,
resnetrs, resnetblur and the other timm models built by the same class. The gate of a block multiplies the output
of its last conv after that conv's norm and after the block's attention module (SE, ECA), right before the
residual add. timm's blocks run ``self.drop_path`` exactly there, so the slot takes that attribute's place (and
runs any original drop-path module after the gate): the model's ``state_dict`` keys do not change, and timm's
pretrained backbone weights load into a gated backbone unchanged.

Inner gates (``GaterNet(gate_placement="inner")``) sit on the inner conv's output, after its norm, drop-block and
activation: ``conv1`` of a ``BasicBlock`` (``conv2``'s input channels) and the 3x3 ``conv2`` of a ``Bottleneck``
(``conv3``'s input channels). timm runs ``self.aa`` (the anti-aliasing blur, an ``nn.Identity`` without it) exactly
there in both blocks, so the inner slot takes that attribute's place and runs the original module after the gate;
a blur or pooling acts channel by channel, so a closed channel stays 0. SE/attention comes after the last conv and
does not stand between the gated conv and the next one.

In a static export, a pruned block without SE/attention runs ``kept_filters_forward``: timm's forward up to the
``drop_path`` slot, then its kept filters added into the shortcut at their channels, then its last activation.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from .._plugins import GateSite, GatingPlugin, UnsupportedPlacementError, offsets_in_order, register_gating_plugin
from ..layers.gates import GateSlot
from ..layers.pruning import (
    PruningError,
    add_into_shortcut,
    slice_batchnorm,
    slice_conv_out,
    zero_batchnorm_channels,
)
from ..layers.skip import folded_conv_bn


def _refuse_inner(site: GateSite, what: str) -> None:
    if site.next_conv:
        raise PruningError(f'gate site {site.name!r} is an inner site (gate_placement="inner"): its filters cannot be '
                           f'{what} yet; prune or export a model with gate_placement="last"')


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]


@register_gating_plugin
class TimmResNetPlugin(GatingPlugin):
    """Gates the last conv of every residual branch of a timm ``ResNet``."""

    name = 'timm_resnet'
    description = ('timm ResNet with BasicBlock/Bottleneck (resnet18-152 and d/t variants, resnext, wide_resnet, '
                   'seresnet, ecaresnet, resnetrs, ...)')
    model_patterns = (
        'resnet*', 'resnext*', 'wide_resnet*', 'seresne*', 'ecaresne*', 'resnetrs*', 'resnetblur*',
        'gcresne*',
    )

    representative_models = ('test_resnet',)  # BasicBlock and Bottleneck

    def supported_models(self) -> list[str]:
        import timm
        return timm.list_models(module='resnet')

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, ResNet) and len(_blocks(model)) > 0

    def backbone_args(self, model_name: str) -> dict[str, Any]:
        """``zero_init_last=False`` for the ResNets of timm's ``resnet`` module.

        timm zero-initialises the last norm of every residual branch; a gated branch would then output 0 whatever
        its gates (all-closed and all-open gates give the same output) and the gater would get no gradient on the
        first step. Unit scales, as in the released GaterNet code, let the gates act from the start.
        """
        from timm.models import is_model_in_modules
        return {'zero_init_last': False} if is_model_in_modules(model_name, ['resnet']) else {}

    def gate_sites(self, model: nn.Module) -> list[GateSite]:
        sites = []
        for name, block in _blocks(model):
            if isinstance(block, Bottleneck):
                sites.append(GateSite(name, block.conv3.out_channels, conv=f'{name}.conv3'))
            else:
                sites.append(GateSite(name, block.conv2.out_channels, conv=f'{name}.conv2'))
        return offsets_in_order(sites)

    def install(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        block = model.get_submodule(site.name)
        if isinstance(block.drop_path, GateSlot):
            raise RuntimeError(f'Block {site.name!r} already holds a gate.')
        slot.after = block.drop_path
        block.drop_path = slot

    def inner_gate_sites(self, model: nn.Module) -> list[GateSite]:
        """A ``BasicBlock``'s ``conv1`` (inputs of ``conv2``), a ``Bottleneck``'s ``conv2`` (inputs of ``conv3``)."""
        sites = []
        for name, block in _blocks(model):
            inner, after = ('conv2', 'conv3') if isinstance(block, Bottleneck) else ('conv1', 'conv2')
            if not isinstance(getattr(block, 'aa', None), nn.Module):
                raise UnsupportedPlacementError(f'block {name!r} has no `aa` module between {inner} and {after}, '
                                                'where its inner gate would go')
            sites.append(GateSite(name, getattr(block, inner).out_channels, conv=f'{name}.{inner}',
                                  next_conv=f'{name}.{after}'))
        return offsets_in_order(sites)

    def install_inner(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        block = model.get_submodule(site.name)
        if isinstance(block.aa, GateSlot):
            raise RuntimeError(f'Block {site.name!r} already holds an inner gate.')
        # Right after the inner conv's activation; the original aa module (a blur, or Identity) runs after the gate.
        slot.after = block.aa
        block.aa = slot

    def inner_closed_output(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """``act(shortcut + last norm's shift)``: with every inner gate closed the last conv sees zeros, so the
        branch is its norm's shift. ``None`` where an SE/attention module acts on it, or the norm is not a
        ``BatchNorm2d`` (skip execution then runs the block with both gated convs empty)."""
        conv, norm, act = (block.conv3, block.bn3, block.act3) if isinstance(block, Bottleneck) else (
            block.conv2, block.bn2, block.act2)
        if block.se is not None or type(norm) is not nn.BatchNorm2d or not norm.track_running_stats:
            return None
        _, shift = folded_conv_bn(conv, norm)  # norm(conv(0)) in evaluation
        shortcut = block.downsample(x) if block.downsample is not None else x
        return act(shortcut + shift.to(x.dtype)[None, :, None, None])  # a new tensor: act in place is safe

    def prune_site(self, model: nn.Module, site: GateSite, kept: torch.Tensor) -> None:
        """Slice the gated conv (``conv2``/``conv3``) and its norm; refused where SE/attention mixes channels."""
        _refuse_inner(site, 'pruned')
        block = model.get_submodule(site.name)
        if getattr(block, 'se', None) is not None:
            raise PruningError(f'block {site.name!r} has an attention module ({type(block.se).__name__}) between its '
                               'gated conv and its gate: it mixes channels, so removing filters would change the '
                               'output of the kept ones')
        conv, norm = ('conv3', 'bn3') if isinstance(block, Bottleneck) else ('conv2', 'bn2')
        setattr(block, conv, slice_conv_out(getattr(block, conv), kept))
        setattr(block, norm, slice_batchnorm(getattr(block, norm), kept))

    def zero_filters(self, model: nn.Module, site: GateSite, index: torch.Tensor) -> None:
        """Zero the scale and shift of the gated conv's norm (``bn2``/``bn3``) at ``index``; refused with SE."""
        _refuse_inner(site, 'zeroed')
        block = model.get_submodule(site.name)
        if getattr(block, 'se', None) is not None:
            raise PruningError(f'block {site.name!r} has an attention module ({type(block.se).__name__}) between its '
                               'gated conv and its gate: its output for a zeroed filter would not be 0')
        zero_batchnorm_channels(block.bn3 if isinstance(block, Bottleneck) else block.bn2, index)

    def channelwise_after_conv(self, model: nn.Module, site: GateSite) -> bool:
        if site.next_conv:  # inner: conv -> norm -> drop-block -> act -> gate; SE comes after the last conv
            return True
        # conv -> norm -> gate, unless an SE/attention module mixes the channels in between.
        return getattr(model.get_submodule(site.name), 'se', None) is None

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        shortcut = block.downsample(x) if block.downsample is not None else x.clone()  # clone: act is in place
        return (block.act3 if isinstance(block, Bottleneck) else block.act2)(shortcut)

    def kept_filters_forward(self, block: nn.Module, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor | None:
        """timm's ``forward`` of the block up to its ``drop_path`` (where the gate slot ran), then the kept filters
        added into the shortcut and the block's last activation. ``None`` for a block with SE/attention (never
        pruned: it mixes the channels)."""
        if block.se is not None:
            return None
        if isinstance(block, Bottleneck):
            y = block.act1(block.bn1(block.conv1(x)))
            y = block.aa(block.act2(block.drop_block(block.bn2(block.conv2(y)))))
            y, act = block.bn3(block.conv3(y)), block.act3
        else:
            y = block.aa(block.act1(block.drop_block(block.bn1(block.conv1(x)))))
            y, act = block.bn2(block.conv2(y)), block.act2
        if block.drop_path is not None:  # a KeptChannels in a static export, running timm's drop-path module
            y = block.drop_path(y)
        shortcut = block.downsample(x) if block.downsample is not None else x
        return act(add_into_shortcut(shortcut, kept, y))  # a new tensor: act in place is safe

    def has_kept_filters_forward(self, block: nn.Module) -> bool:
        return self.has_shortcut(block) and getattr(block, 'se', None) is None

    def matches_name(self, model_name: str) -> bool:
        # By file rather than by pattern: 'resnet*' also matches resnetv2_*, resnet50_clip (byobnet), resnet51q, ...
        if not hasattr(self, '_supported'):
            self._supported = frozenset(self.supported_models())
        return model_name in self._supported
