"""Plugin for timm's ``ResNet`` family (``timm/models/resnet.py``): ``BasicBlock`` and ``Bottleneck``.

That covers resnet18/26/34/50/101/152 and their ``d``/``t``/``s`` stems, ResNeXt, wide_resnet, SE-/ECA-ResNets,
resnetrs, resnetblur and the other timm models built by the same class. The gate of a block multiplies the output
of its last conv after that conv's norm and after the block's attention module (SE, ECA), right before the
residual add. timm's blocks run ``self.drop_path`` exactly there, so the slot takes that attribute's place (and
runs any original drop-path module after the gate): the model's ``state_dict`` keys do not change, and timm's
pretrained backbone weights load into a gated backbone unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from .._plugins import GateSite, GatingPlugin, offsets_in_order, register_gating_plugin
from ..layers.gates import GateSlot
from ..layers.pruning import PruningError, slice_batchnorm, slice_conv_out, zero_batchnorm_channels


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

    def prune_site(self, model: nn.Module, site: GateSite, kept: torch.Tensor) -> None:
        """Slice the gated conv (``conv2``/``conv3``) and its norm; refused where SE/attention mixes channels."""
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
        block = model.get_submodule(site.name)
        if getattr(block, 'se', None) is not None:
            raise PruningError(f'block {site.name!r} has an attention module ({type(block.se).__name__}) between its '
                               'gated conv and its gate: its output for a zeroed filter would not be 0')
        zero_batchnorm_channels(block.bn3 if isinstance(block, Bottleneck) else block.bn2, index)

    def channelwise_after_conv(self, model: nn.Module, site: GateSite) -> bool:
        # conv -> norm -> gate, unless an SE/attention module mixes the channels in between.
        return getattr(model.get_submodule(site.name), 'se', None) is None

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        shortcut = block.downsample(x) if block.downsample is not None else x.clone()  # clone: act is in place
        return (block.act3 if isinstance(block, Bottleneck) else block.act2)(shortcut)

    def matches_name(self, model_name: str) -> bool:
        # By file rather than by pattern: 'resnet*' also matches resnetv2_*, resnet50_clip (byobnet), resnet51q, ...
        if not hasattr(self, '_supported'):
            self._supported = frozenset(self.supported_models())
        return model_name in self._supported
