"""The static export of a GaterNet: its backbone with the gates fixed, and no gater left.

When every gate of a (pruned) GaterNet is constant over the data that matters, always open or always closed, the
gater computes the same gates for every image and the gates multiply by 1 or 0. :class:`StaticBackbone` is that
backbone alone: the always-closed filters pruned from their convs (as :func:`~gaternet_zoo.prune_gaternet` does) and
the gate slots replaced by what they wrapped (an identity, or timm's drop-path module). At a pruned site the kept
channels must meet the full-width shortcut:

* where the gating plugin knows the block's shortcut (``GatingPlugin.has_kept_filters_forward``), the block adds
  them into the shortcut at their indices (``GatingPlugin.kept_filters_forward``, ``shortcut.index_add``) and its
  gate slot's place holds a :class:`~gaternet_zoo.layers.pruning.KeptChannels`: no zero map, no zeros added;
* elsewhere a :class:`~gaternet_zoo.layers.pruning.ScatterChannels` takes the slot's place and puts the kept channels
  back at their indices among zeros before the block's own residual addition.

A residual branch none of whose filters acts (``dropped_branches``) does not run at all: its block computes what
its shortcut gives (``GatingPlugin.shortcut_only``). :func:`~gaternet_zoo.export_static` makes one from a GaterNet and
its gate statistics.

Its constructor arguments rebuild it from its ``config.json`` alone (``pruned_filters`` gives the pruned shapes,
``dropped_branches`` the branches that do not run), so ``save_pretrained`` and ``create_model("local-dir:...")`` /
``hf-hub:`` load it strictly, like any zoo model. The backbone keeps its timm ``state_dict`` keys under
``backbone.``, the keys of the GaterNet it came from: a dropped branch keeps its (pruned) weights, unused.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import torch
from timm.models import register_model
from torch import nn

from .._builder import build_with_cfg
from .._constants import CIFAR10_MEAN, CIFAR10_STD
from .._hub_mixin import ZooHubMixin
from .._plugins import GateSite, GatingPlugin, _GateHook
from .._pretrained import generate_default_cfgs
from ..hub import timm_pretrained_args
from ..layers.gates import GateContext, GateSlot
from ..layers.pruning import KeptChannels, ScatterChannels
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
        dropped_branches: Gate sites whose residual branch adds nothing (every filter it keeps is zeroed): their
            blocks compute their shortcut only, and no module of the branch runs (its weights stay, so the
            ``state_dict`` keys do not change). Each must be a block whose shortcut the plugin knows
            (``GatingPlugin.has_shortcut``). ``None``: every branch runs.

    Raises:
        ValueError: ``dropped_branches`` names a site the backbone does not have, or a block whose shortcut the
            plugin does not know.
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
            dropped_branches: list[str] | None = None,
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
        self.dropped_branches: list[str] = _check_dropped(self.backbone, gating_plugin, sites, dropped_branches)
        # Pruned sites whose block adds its kept channels into the shortcut itself: no ScatterChannels there.
        folded = [s.name for s in sites if slots[s.name].kept is not None
                  and gating_plugin.has_kept_filters_forward(self.backbone.get_submodule(s.name))]
        replaced = remove_gate_slots(self.backbone, folded=set(folded) | set(self.dropped_branches))
        for name in self.dropped_branches:
            block = self.backbone.get_submodule(name)
            block.forward = ShortcutOnlyForward(block, gating_plugin.shortcut_only)
        for name in [n for n in folded if n not in self.dropped_branches]:
            block = self.backbone.get_submodule(name)
            block.forward = KeptFiltersForward(block, gating_plugin.kept_filters_forward, replaced[name])
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


def remove_gate_slots(backbone: nn.Module, folded: Collection[str] = ()) -> dict[str, nn.Module | None]:
    """Replace every gate slot of ``backbone`` by what a static model needs in its place.

    A slot becomes the module it wrapped (its ``after``: timm's drop-path module) or an identity; at a pruned site, a
    :class:`~gaternet_zoo.layers.pruning.KeptChannels` where the site is named in ``folded`` (its block adds the kept
    channels into its shortcut itself, or does not run its branch), else a
    :class:`~gaternet_zoo.layers.pruning.ScatterChannels`. A slot a plugin ran through a forward hook (blocks without
    a residual) is removed with its hook. Whatever the gates did must already be in the weights.

    Returns:
        Per slot (by its site's name), what took its place; ``None`` for a hooked slot, removed.

    Raises:
        ValueError: A hooked slot is pruned (no plugin prunes such blocks).
    """
    replaced: dict[str, nn.Module | None] = {}
    for module in list(backbone.modules()):
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, _GateHook):
                if hook.slot.kept is not None:
                    raise ValueError(f'gate site {hook.slot.name!r} is pruned but runs through a forward hook')
                del module._forward_hooks[key]
                for name, child in list(module._modules.items()):
                    if child is hook.slot:
                        del module._modules[name]
                replaced[hook.slot.name] = None
        for name, child in list(module._modules.items()):
            if isinstance(child, GateSlot):
                if child.kept is not None and child.name in folded:
                    module._modules[name] = KeptChannels(child.kept, child.num_channels, child.after)
                elif child.kept is not None:
                    module._modules[name] = ScatterChannels(child.kept, child.num_channels, child.after)
                else:
                    module._modules[name] = child.after if child.after is not None else nn.Identity()
                replaced[child.name] = module._modules[name]
    return replaced


class KeptFiltersForward:
    """Set as a pruned residual block's ``forward`` in a static export: its kept filters go into the shortcut.

    Runs the plugin's ``kept_filters_forward`` with the kept indices the block's
    :class:`~gaternet_zoo.layers.pruning.KeptChannels` holds (a buffer, so it follows the model's device). A callable
    object rather than a closure, so that ``copy.deepcopy`` and pickling carry it over to the copied block.
    """

    def __init__(self, block: nn.Module, kept_filters_forward: Callable[..., torch.Tensor | None],
                 kept: KeptChannels) -> None:
        self.block, self.kept_filters_forward, self.kept = block, kept_filters_forward, kept

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _checked(self.kept_filters_forward(self.block, x, self.kept.kept), self.block, 'kept_filters_forward')


class ShortcutOnlyForward:
    """Set as the ``forward`` of a block whose residual branch adds nothing, in a static export: the shortcut alone.

    The plugin's ``shortcut_only`` (what skip execution runs for a branch whose gates are all closed), so none of
    the branch's modules runs. A callable object, as :class:`KeptFiltersForward`.
    """

    def __init__(self, block: nn.Module,
                 shortcut_only: Callable[[nn.Module, torch.Tensor], torch.Tensor | None]) -> None:
        self.block, self.shortcut_only = block, shortcut_only

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _checked(self.shortcut_only(self.block, x), self.block, 'shortcut_only')


def _checked(out: torch.Tensor | None, block: nn.Module, hook: str) -> torch.Tensor:
    # The plugin said it knows the block (has_kept_filters_forward / has_shortcut) when the model was built.
    if out is None:
        raise RuntimeError(f'the gating plugin\'s {hook} returned None for a {type(block).__name__} it said it knew '
                           'when this static model was built')
    return out


def _check_dropped(backbone: nn.Module, plugin: GatingPlugin, sites: tuple[GateSite, ...],
                   dropped: list[str] | None) -> list[str]:
    """``dropped`` (``StaticBackbone(dropped_branches=...)``) checked against the backbone's sites, in site order."""
    names = set(dropped or ())
    unknown = sorted(names - {s.name for s in sites})
    if unknown:
        raise ValueError(f'dropped_branches names {len(unknown)} site(s) this backbone does not have: {unknown[:5]}')
    out = [s.name for s in sites if s.name in names]
    unknown_shortcut = [n for n in out if not plugin.has_shortcut(backbone.get_submodule(n))]
    if unknown_shortcut:
        raise ValueError(f'dropped_branches names {len(unknown_shortcut)} block(s) whose shortcut gating plugin '
                         f'{plugin.name!r} does not know (GatingPlugin.has_shortcut), so they cannot run without '
                         f'their branch: {unknown_shortcut[:5]}')
    return out


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
