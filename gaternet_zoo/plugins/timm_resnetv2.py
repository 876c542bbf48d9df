"""Plugin for timm's ``ResNetV2`` family (``timm/models/resnetv2.py``): pre-activation and BiT ResNets.

Covers ``resnetv2_*`` (18/34/50/101/152 and their ``d``/``t`` stems, the GroupNorm/EvoNorm/FRN variants) and the
BiT models (``resnetv2_50x1_bit``, ...). In the pre-activation blocks (``PreActBasic``, ``PreActBottleneck``) the
last conv of the residual branch has no norm after it (the norm of the next block comes first), so the gate
multiplies that conv's output directly, as the zoo's pre-activation ``cifar_resnet164`` does. In the
post-activation ``Bottleneck`` the gate follows ``norm3``. Every block adds a shortcut, so the gate sits in the
block's ``drop_path`` slot, which timm runs right there, before the residual add.

The plugin cannot prune; a static export (:func:`~gaternet_zoo.export_static`) keeps every filter and zeroes one whose
gate is fixed closed: in the last conv of a pre-activation block, in ``norm3`` of the post-activation one (a batch or
group norm; an EvoNorm or filter response norm there is refused, in a branch that runs).
"""
from __future__ import annotations

import torch
from timm.models.resnetv2 import Bottleneck, PreActBasic, PreActBottleneck, ResNetV2
from torch import nn

from .._plugins import BlockGatingPlugin, GatePoint, fresh_shortcut, register_gating_plugin


@register_gating_plugin
class TimmResNetV2Plugin(BlockGatingPlugin):
    """Gates the last conv of every residual branch of a timm ``ResNetV2``."""

    name = 'timm_resnetv2'
    description = 'timm ResNetV2: pre-activation resnetv2_* and BiT (PreActBasic/PreActBottleneck/Bottleneck)'
    timm_modules = ('resnetv2',)
    model_types = (ResNetV2,)
    representative_models = ('resnetv2_18', 'resnetv2_50')  # PreActBasic, PreActBottleneck
    # A static export zeroes a pre-activation block's last conv filter itself (no norm before the gate; timm's
    # StdConv2d standardises a zero filter to 0), and the post-activation block's norm3 channel (a group norm's
    # other channels keep their statistics that way, which a zeroed conv filter would change).
    gate_points = (
        GatePoint(PreActBasic, conv='conv2', zero_at='conv2'),
        GatePoint(PreActBottleneck, conv='conv3', zero_at='conv3'),
        GatePoint(Bottleneck, conv='conv3', zero_at='norm3'),
    )

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        if isinstance(block, (PreActBasic, PreActBottleneck)):
            # A projection shortcut sees the pre-activated input; an identity one the input itself.
            return block.downsample(block.norm1(x)) if block.downsample is not None else x.clone()
        if isinstance(block, Bottleneck):
            return block.act3(fresh_shortcut(block.downsample(x) if block.downsample is not None else x, x))
        return None
