"""Plugin for timm's RegNet family (``timm/models/regnet.py``): ``regnetx_*``, ``regnety_*``, ``regnetv_*`` and
the ``regnetz_005/040`` models of that file.

The gate multiplies the output of the branch's last conv: ``conv3`` (a conv + norm, so after its norm) in the
``Bottleneck`` block, the bare ``conv3`` in the pre-activation ``PreBottleneck`` (``regnetv_*``). RegNetY's SE
module sits before ``conv3``, on the bottleneck width, so the gate comes after it as well. A block with a shortcut
is gated in its ``drop_path`` slot, right before the add; the ``regnetz_*`` blocks have no shortcut at all (timm
then never calls ``drop_path``) and are gated on their output, which is ``conv3``'s (their ``act3`` is the
identity, ``linear_out``).

timm zero-initialises the last norm of each block by default (``zero_init_last=True``): the plugin builds the
backbone with ``zero_init_last=False``, else every gated branch would output zeros whatever its gates. The
``regnetz`` entry points set that themselves (they have no residual to protect) and get nothing extra.
The ``regnetz_b16``-style models of ``byobnet.py`` are another family (ByobNet) and are not covered.

The plugin cannot prune; a static export (:func:`~gaternet_zoo.export_static`) keeps every filter and zeroes one whose
gate is fixed closed: in ``conv3``'s norm (whose ``act3`` must then send 0 to 0 in a block without shortcut), in the
bare ``conv3`` of a ``PreBottleneck``.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models.regnet import Bottleneck, PreBottleneck, RegNet
from torch import nn

from .._plugins import BlockGatingPlugin, GatePoint, fresh_shortcut, register_gating_plugin


def _has_shortcut(block: nn.Module) -> bool:
    return block.downsample is not None  # timm's regnet blocks add drop_path(x) + downsample(shortcut) only then


def _between_norm_and_gate(block: nn.Module) -> tuple[str, ...]:
    # conv3's own anti-aliasing (if any); in a block without shortcut the gate is on the output, after act3 too.
    return ('conv3.aa',) if _has_shortcut(block) else ('conv3.aa', 'act3')


@register_gating_plugin
class TimmRegNetPlugin(BlockGatingPlugin):
    """Gates the last conv (``conv3``) of every RegNet block."""

    name = 'timm_regnet'
    description = 'timm RegNet (regnetx_*, regnety_*, regnetv_*, regnetz_005/040): the output filters of conv3'
    timm_modules = ('regnet',)
    model_types = (RegNet,)
    representative_models = ('regnetx_002', 'regnety_002', 'regnetz_005', 'regnetv_040')
    gate_points = (
        GatePoint(Bottleneck, conv='conv3.conv', residual=_has_shortcut, zero_at='conv3.bn',
                  before_gate=_between_norm_and_gate),
        GatePoint(PreBottleneck, conv='conv3', residual=_has_shortcut, zero_at='conv3'),
    )

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        if not _has_shortcut(block):
            return None  # a regnetz block: its output is its branch's
        if isinstance(block, PreBottleneck):  # the shortcut is taken after the pre-activation norm
            return fresh_shortcut(block.downsample(block.norm1(x)), x)
        return block.act3(fresh_shortcut(block.downsample(x), x))

    def backbone_args(self, model_name: str) -> dict[str, Any]:
        # The regnetz entry points pass zero_init_last=False themselves; passing it again would be a TypeError.
        return {} if model_name.startswith('regnetz') else {'zero_init_last': False}
