"""The static export of a GaterNet: its backbone with the gates fixed, and no gater left.

When every gate of a (pruned) GaterNet is constant over the data that matters, always open or always closed, the
gater computes the same gates for every image and the gates multiply by 1 or 0. :class:`StaticBackbone` is that
backbone alone: the always-closed filters pruned from their convs (as :func:`~gaternet_zoo.prune_gaternet` does),
the gate slots replaced by what they wrapped (an identity, or timm's drop-path module), and, at pruned sites, by a
:class:`~gaternet_zoo.layers.pruning.ScatterChannels` that puts the kept channels back at their indices before the
residual addition. :func:`~gaternet_zoo.export_static` makes one from a GaterNet and its gate statistics.

Its constructor arguments rebuild it from its ``config.json`` alone (``pruned_filters`` gives the pruned shapes), so
``save_pretrained`` and ``create_model("local-dir:...")`` / ``hf-hub:`` load it strictly, like any zoo model. The
backbone keeps its timm ``state_dict`` keys under ``backbone.``, the keys of the GaterNet it came from.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn

from .._builder import build_with_cfg
from .._constants import CIFAR10_MEAN, CIFAR10_STD
from .._hub_mixin import ZooHubMixin
from .._plugins import _GateHook
from .._pretrained import generate_default_cfgs
from ..hub import timm_pretrained_args
from ..layers.gates import GateContext, GateSlot
from ..layers.pruning import ScatterChannels
from .gaternet import BackboneClassifierMixin, _apply_pruning, _build_backbone

__all__ = ['StaticBackbone']


class StaticBackbone(nn.Module, ZooHubMixin, BackboneClassifierMixin):
    """A GaterNet's backbone with constant gates folded away: pruned convs, no gate slots, no gater.

    Built by :func:`~gaternet_zoo.export_static`; built directly, it is the plain backbone with the ``pruned_filters``
    structure (and fresh weights). Every argument is JSON-serialisable and saved in ``config.json``.

    Args:
        backbone: timm model name of the backbone.
        num_classes: Classes of the classifier.
        in_chans: Input channels.
        plugin: Name of the gating plugin whose gate sites ``pruned_filters`` names; found from the backbone when
            ``None``.
        backbone_args: Extra keyword arguments for ``timm.create_model(backbone, ...)`` (over the plugin's own).
        drop_rate: Dropout before the classifier.
        global_pool: The backbone's global pooling; its default when ``None``.
        pruned_filters: Per gate site, the indices of the filters its gated conv keeps; the others are removed from
            the conv and its norm, and the block sees 0 in their place. ``None``: nothing pruned.
    """

    def __init__(
            self,
            backbone: str = 'cifar_resnet20',
            num_classes: int = 10,
            in_chans: int = 3,
            plugin: str | None = None,
            backbone_args: dict[str, Any] | None = None,
            drop_rate: float = 0.0,
            global_pool: str | None = None,
            pruned_filters: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__()
        backbone_args = timm_pretrained_args(backbone, dict(backbone_args or {}), option='backbone_args')
        self.backbone, gating_plugin = _build_backbone(backbone, num_classes, in_chans, plugin, backbone_args,
                                                       drop_rate, global_pool)
        self.backbone_name = backbone
        self.plugin_name = gating_plugin.name
        self.in_chans = in_chans
        # The gate slots go in as in a GaterNet (the plugin knows where), so that pruning finds them, then leave.
        sites = tuple(gating_plugin.gate_sites(self.backbone))
        context = GateContext()
        slots = {}
        for site in sites:
            slots[site.name] = GateSlot(context, site.offset, site.num_channels, site.name)
            gating_plugin.install(self.backbone, site, slots[site.name])
        self.pruned_filters: dict[str, list[int]] = _apply_pruning(self.backbone, gating_plugin, sites, slots,
                                                                   pruned_filters)
        remove_gate_slots(self.backbone)
        self.num_features = self.backbone.num_features
        self.head_hidden_size = getattr(self.backbone, 'head_hidden_size', self.num_features)
        self.feature_info = [dict(info, module=f'backbone.{info["module"]}')
                             for info in getattr(self.backbone, 'feature_info', [])]

    # ----------------------------------------------------------------------------------------- timm contract
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the backbone (timm's ``set_grad_checkpointing``)."""
        self.backbone.set_grad_checkpointing(enable)

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """The backbone's ``forward_intermediates`` (timm's feature API)."""
        return self.backbone.forward_intermediates(x, *args, **kwargs)

    def prune_intermediate_layers(self, *args: Any, **kwargs: Any) -> list[int]:
        """Drop the backbone's layers after the given feature levels (timm's feature API)."""
        kept = self.backbone.prune_intermediate_layers(*args, **kwargs)
        self.num_features = self.backbone.num_features
        self.head_hidden_size = getattr(self.backbone, 'head_hidden_size', self.num_features)
        return kept

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled backbone features."""
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.backbone(x)


def remove_gate_slots(backbone: nn.Module) -> int:
    """Replace every gate slot of ``backbone`` by what a static model needs in its place; returns how many.

    A slot becomes the module it wrapped (its ``after``: timm's drop-path module) or an identity, or, at a pruned
    site, a :class:`~gaternet_zoo.layers.pruning.ScatterChannels`; a slot a plugin ran through a forward hook
    (blocks without a residual) is removed with its hook. Whatever the gates did must already be in the weights.

    Raises:
        ValueError: A hooked slot is pruned (no plugin prunes such blocks).
    """
    count = 0
    for module in list(backbone.modules()):
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, _GateHook):
                if hook.slot.kept is not None:
                    raise ValueError(f'gate site {hook.slot.name!r} is pruned but runs through a forward hook')
                del module._forward_hooks[key]
                for name, child in list(module._modules.items()):
                    if child is hook.slot:
                        del module._modules[name]
                count += 1
        for name, child in list(module._modules.items()):
            if isinstance(child, GateSlot):
                if child.kept is not None:
                    module._modules[name] = ScatterChannels(child.kept, child.num_channels, child.after)
                else:
                    module._modules[name] = child.after if child.after is not None else nn.Identity()
                count += 1
    return count


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (8, 8), 'crop_pct': 1.0,
        'interpolation': 'bilinear', 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD,
        'first_conv': 'backbone.conv', 'classifier': 'backbone.fc', 'license': 'apache-2.0', **kwargs,
    }


default_cfgs = generate_default_cfgs({'static_backbone': _cfg()})


@register_model
def static_backbone(pretrained: bool = False, **kwargs: Any) -> StaticBackbone:
    """A GaterNet's backbone with its constant gates folded away (see :func:`gaternet_zoo.export_static`)."""
    return build_with_cfg(StaticBackbone, 'static_backbone', pretrained, **kwargs)
