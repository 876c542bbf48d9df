"""Gating plugin for timm's ReXNet family (``timm/models/rexnet.py``): ``rexnet_*`` and ``rexnetr_*``.

An example of a third-party plugin, registered through the ``gaternet_zoo.plugins`` entry-point group of this
package's ``pyproject.toml``; docs/write-a-plugin.md walks through it.

A ReXNet ``LinearBottleneck`` is an expansion conv, a depthwise conv, an optional SE module and a linear 1x1
projection ``conv_pwl`` (a conv + norm, no activation). Its residual is partial: the shortcut is added to the first
``in_chs`` output channels only, and only when the block keeps its resolution. The gate multiplies the output of
``conv_pwl`` after its norm, before that add, whether or not the block has the shortcut.
"""
from timm.models.rexnet import LinearBottleneck, RexNet

from gaternet_zoo import BlockGatingPlugin, GatePoint

__all__ = ['ReXNetPlugin']


class ReXNetPlugin(BlockGatingPlugin):
    """Gates the output filters of every ReXNet block's linear projection (``conv_pwl``)."""

    name = 'rexnet'
    description = 'timm ReXNet (rexnet_*, rexnetr_*): the output filters of each LinearBottleneck\'s conv_pwl'
    timm_modules = ('rexnet',)
    model_types = (RexNet,)
    representative_models = ('rexnet_100',)
    # zero_at: a static export makes a filter whose gate is fixed closed output 0 by zeroing its scale and shift in
    # the norm after the projection (no activation follows it), where the gate multiplies.
    gate_points = (GatePoint(LinearBottleneck, conv='conv_pwl.conv', residual='use_shortcut',
                             zero_at='conv_pwl.bn'),)
