"""Plugin for timm's EfficientNet block family (``timm/models/efficientnet.py`` and ``mobilenetv3.py``).

Covers the models built from ``_efficientnet_blocks``: EfficientNet B0-B8/L2/V2/EdgeTPU/Lite (``efficientnet_*``,
``tf_efficientnet*``), MobileNet V2/V3/V4 (``mobilenetv2_*``, ``mobilenetv3_*``, ``mobilenetv4_*``), MixNet,
MNASNet, FBNet, TinyNet, LCNet, SPNASNet and the other models of those two files. Per block type, the gate
multiplies the output filters of the main branch's last conv after its norm, before the residual add:

* ``DepthwiseSeparableConv``: ``conv_pw`` after ``bn2`` (SE is before ``conv_pw``);
* ``InvertedResidual`` (and ``CondConvResidual``): ``conv_pwl`` after ``bn3`` (SE is before ``conv_pwl``);
* ``EdgeResidual`` (EfficientNetV2's fused MBConv): ``conv_pwl`` after ``bn2``;
* ``UniversalInvertedResidual`` (MobileNetV4): the last conv, ``pw_proj`` or ``dw_end`` when the block has one,
  after its norm and after the layer scale;
* ``ConvBnAct`` (single conv blocks, e.g. MobileNetV3's last stage): ``conv`` after ``bn1`` (norm + activation; a
  0/1 gate commutes with ReLU-like activations) and the anti-aliasing pool.

A block with its residual (``has_skip``) is gated in its ``drop_path`` slot, which timm runs right before the add;
many blocks have none (stride 2 or a change of width): timm then never calls their ``drop_path``, and they are
gated on their output, which is their branch's. Not gated: the stem and head convs (not
blocks), and MobileNetV4's ``MobileAttention`` blocks (hybrid models), whose main branch ends in an attention
output projection rather than a conv with a norm; the conv blocks of hybrid models are gated.

The plugin cannot prune; a static export (:func:`~gaternet_zoo.export_static`) keeps every filter and zeroes one whose
gate is fixed closed in the norm after the gated conv (its activation, where it has one, must send 0 to 0; a UIR's
layer scale is zeroed there too).
"""
from __future__ import annotations

import torch
from timm.models._efficientnet_blocks import (
    ConvBnAct,
    DepthwiseSeparableConv,
    EdgeResidual,
    InvertedResidual,
    UniversalInvertedResidual,
)
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from torch import nn

from .._plugins import BlockGatingPlugin, GatePoint, register_gating_plugin


def _uir_last_conv(block: nn.Module) -> str:
    return 'pw_proj.conv' if isinstance(block.dw_end, nn.Identity) else 'dw_end.conv'


def _uir_last_norm(block: nn.Module) -> str:
    return _uir_last_conv(block).replace('.conv', '.bn')


def _uir_before_gate(block: nn.Module) -> tuple[str, ...]:
    return (_uir_last_conv(block).replace('.conv', '.aa'), 'layer_scale')


@register_gating_plugin
class TimmEfficientNetPlugin(BlockGatingPlugin):
    """Gates the last conv of every EfficientNet-family block (DS, IR, ER, UIR, ConvBnAct)."""

    name = 'timm_efficientnet'
    description = ('timm EfficientNet/MobileNet block family (efficientnet_*, tf_efficientnet*, mobilenetv2/3/4_*, '
                   'mixnet_*, mnasnet_*, fbnet*, tinynet_*, lcnet_*, ...)')
    timm_modules = ('efficientnet', 'mobilenetv3')
    model_types = (EfficientNet, MobileNetV3)
    # ConvBnAct+EdgeResidual+InvertedResidual; DepthwiseSeparableConv+SE; UniversalInvertedResidual
    representative_models = ('test_efficientnet', 'mobilenetv3_small_050', 'mobilenetv4_conv_small')
    # A static export zeroes a filter at the norm after the gated conv (its activation, where it has one, must
    # send 0 to 0), through the anti-aliasing pool or the layer scale that may follow.
    gate_points = (
        GatePoint(DepthwiseSeparableConv, conv='conv_pw', residual='has_skip', zero_at='bn2'),
        GatePoint(InvertedResidual, conv='conv_pwl', residual='has_skip', zero_at='bn3'),  # and CondConvResidual
        GatePoint(EdgeResidual, conv='conv_pwl', residual='has_skip', zero_at='bn2'),
        GatePoint(UniversalInvertedResidual, conv=_uir_last_conv, residual='has_skip', zero_at=_uir_last_norm,
                  before_gate=_uir_before_gate),
        GatePoint(ConvBnAct, conv='conv', residual='has_skip', zero_at='bn1', before_gate=('aa',)),
    )

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        # Every block type here runs `drop_path(branch) + x` when it has its skip, and nothing else after the add.
        return x.clone() if getattr(block, 'has_skip', False) else None
