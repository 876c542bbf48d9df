"""Plugin for timm's DenseNet family (``timm/models/densenet.py``): a family without residual connections.

A ``DenseLayer`` (norm, act, 1x1 conv, norm, act, 3x3 conv) adds ``growth_rate`` new feature maps that are
concatenated to its input; there is no residual add. The layer's main branch ends with ``conv2``, and as the block
is pre-activation there is no norm after it (the next layer's norm comes first), so the gate multiplies ``conv2``'s
output: the new feature maps that the layer returns (after its dropout, which commutes with the gate), one gate per
filter, before the concatenation. The transition layers (norm, 1x1 conv, pool) between dense blocks are not gated,
as the stem is not in the other families: they are not blocks of the main branch.
"""
from __future__ import annotations

from timm.models.densenet import DenseLayer, DenseNet

from .._plugins import BlockGatingPlugin, GatePoint, register_gating_plugin


@register_gating_plugin
class TimmDenseNetPlugin(BlockGatingPlugin):
    """Gates the new feature maps (``conv2``) of every DenseNet layer."""

    name = 'timm_densenet'
    description = 'timm DenseNet (densenet121/161/169/201/264d, densenetblur121d): the filters of each layer\'s conv2'
    timm_modules = ('densenet',)
    model_types = (DenseNet,)
    representative_models = ('densenet121',)
    gate_points = (GatePoint(DenseLayer, conv='conv2', residual=False, zero_at='conv2'),)  # no norm before the gate
