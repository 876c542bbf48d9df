"""Plugin for timm's ConvNeXt family (``timm/models/convnext.py``): ConvNeXt V1 and V2.

A ``ConvNeXtBlock``'s main branch is a depthwise conv, a norm and an MLP whose second layer (``mlp.fc2``, an
``nn.Linear`` on channels-last features, or a 1x1 conv with ``conv_mlp=True``) is the branch's last conv (V2's GRN
sits inside the MLP, before ``fc2``; there is no norm after ``fc2``). The gate multiplies the filters of ``fc2``
after the layer scale ``gamma``, in the block's ``drop_path`` slot, which every ConvNeXt block runs right before
its residual add.

ConvNeXt V1 initialises ``gamma`` at 1e-6 (``ls_init_value``): a freshly built backbone's branches contribute almost
nothing, so gates start with a tiny effect. That is timm's recipe for training from scratch and is kept; from
timm's pretrained weights ``gamma`` is learned. V2 has no layer scale.

The plugin cannot prune; a static export (:func:`~gaternet_zoo.export_static`) keeps every filter and zeroes one whose
gate is fixed closed at ``fc2`` (its weights and bias, and ``gamma`` there), as no norm comes before the gate.
"""
from __future__ import annotations

import torch
from timm.models.convnext import ConvNeXt, ConvNeXtBlock
from torch import nn

from .._plugins import BlockGatingPlugin, GatePoint, fresh_shortcut, register_gating_plugin


@register_gating_plugin
class TimmConvNeXtPlugin(BlockGatingPlugin):
    """Gates the output filters of every ConvNeXt block's MLP (``mlp.fc2``), after the layer scale."""

    name = 'timm_convnext'
    description = 'timm ConvNeXt V1/V2 (convnext_*, convnextv2_*): the output filters of each block\'s mlp.fc2'
    timm_modules = ('convnext',)
    model_types = (ConvNeXt,)
    representative_models = ('test_convnext', 'convnextv2_atto')  # Linear MLP (V1), conv MLP + GRN (V2)
    # No norm between fc2 and the gate: a static export zeroes fc2's filter (weights and bias) and its layer scale.
    gate_points = (GatePoint(ConvNeXtBlock, conv='mlp.fc2', zero_at='mlp.fc2', before_gate=('mlp.drop2', 'gamma')),)

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        # `drop_path(branch) + shortcut(x)`, the shortcut an identity or a downsampling conv.
        return fresh_shortcut(block.shortcut(x), x)
