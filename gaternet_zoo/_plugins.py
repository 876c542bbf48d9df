"""Gating plugins: where a backbone family's gate sites are, and how a gate is installed there.

A plugin knows one family of backbone blocks. GaterNet asks it for the gate sites of a built backbone (the last
conv of each residual branch, after its norm, before the residual add) and then has it install one
:class:`~gaternet_zoo.layers.GateSlot` per site. Plugins are registered by name with :func:`register_gating_plugin`
(a class decorator) or, for third-party packages, through the ``gaternet_zoo.plugins`` entry-point group, whose
entries point at a :class:`GatingPlugin` subclass and are loaded the first time the registry is queried.
"""
from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

from torch import nn

from .layers.gates import GateSlot

__all__ = [
    'GateSite', 'GatingPlugin', 'register_gating_plugin', 'get_plugin', 'list_plugins', 'find_plugin',
    'UnsupportedBackboneError', 'ENTRY_POINT_GROUP',
]

_logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = 'gaternet_zoo.plugins'


@dataclass(frozen=True)
class GateSite:
    """One gated location of a backbone.

    Attributes:
        name: Qualified name of the block that holds the site (``"stage1.block1"``, ``"layer3.0"``).
        num_channels: Number of gated filters.
        offset: Index of the site's first gate in the flat gate vector (forward order).
        conv: Qualified name of the conv whose output filters are gated (for MAC accounting).
    """

    name: str
    num_channels: int
    offset: int = 0
    conv: str = ''


class UnsupportedBackboneError(ValueError):
    """Raised when no gating plugin knows a backbone."""


class GatingPlugin:
    """Base class of gating plugins.

    Subclasses set :attr:`name`, :attr:`description` and :attr:`model_patterns`, and implement
    :meth:`supports`, :meth:`gate_sites` and :meth:`install`; :meth:`backbone_args` is optional.

    GaterNet checks what a plugin does when it builds a model: each installed slot must run exactly once in a forward
    pass of the backbone, and each site's ``conv`` must name a conv of the site's width that runs.
    """

    #: Registry name of the plugin.
    name: str = ''
    #: One line saying which backbones it covers.
    description: str = ''
    #: ``fnmatch`` patterns of timm model names the plugin is meant for (used to pick a plugin by name).
    model_patterns: tuple[str, ...] = ()

    def matches_name(self, model_name: str) -> bool:
        """Whether a timm model name belongs to this plugin's family."""
        return any(fnmatch.fnmatch(model_name, p) for p in self.model_patterns)

    def supports(self, model: nn.Module) -> bool:
        """Whether this plugin can gate the built ``model``."""
        raise NotImplementedError

    def backbone_args(self, model_name: str) -> dict[str, Any]:
        """Keyword arguments for ``timm.create_model(model_name, ...)`` that the gates need (none by default).

        GaterNet asks for them before it builds the backbone, whatever the route (``create_model("gaternet",
        backbone=...)``, ``gate()``, ``timm.create_model``), so a backbone gets one initialisation. Arguments the
        caller gives in ``backbone_args`` win over these.
        """
        return {}

    def gate_sites(self, model: nn.Module) -> list[GateSite]:
        """The gate sites of ``model`` in forward order, with offsets into the flat gate vector."""
        raise NotImplementedError

    def install(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        """Place ``slot`` at ``site`` inside ``model``, without adding or renaming any ``state_dict`` key."""
        raise NotImplementedError

    def supported_models(self) -> list[str]:
        """timm model names this plugin is known to handle (for listings and error messages)."""
        import timm
        return timm.list_models(list(self.model_patterns)) if self.model_patterns else []


def offsets_in_order(sites: Iterable[GateSite]) -> list[GateSite]:
    """Give each site its offset: sites are laid out one after another in forward order."""
    out, offset = [], 0
    for site in sites:
        out.append(GateSite(site.name, site.num_channels, offset, site.conv))
        offset += site.num_channels
    return out


_PLUGINS: dict[str, GatingPlugin] = {}
_entry_points_loaded = False

PluginT = TypeVar('PluginT', bound=type[GatingPlugin])


def register_gating_plugin(cls: PluginT) -> PluginT:
    """Class decorator registering a :class:`GatingPlugin` subclass under its ``name``.

    Raises:
        ValueError: If the name is empty or already taken (silently replacing a plugin would change which
            gates other models get).
    """
    if not isinstance(cls, type) or not issubclass(cls, GatingPlugin):
        raise TypeError(f'register_gating_plugin expects a GatingPlugin subclass, got {cls!r}.')
    if not cls.name:
        raise ValueError(f'{cls.__name__} must set a non-empty `name`.')
    if cls.name in _PLUGINS:
        raise ValueError(
            f'A gating plugin named {cls.name!r} is already registered ({type(_PLUGINS[cls.name]).__qualname__}); '
            'pick another name.')
    _PLUGINS[cls.name] = cls()
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin_cls = ep.load()
        except Exception as e:  # a broken third-party plugin must not break the zoo
            _logger.warning('Could not load gating plugin entry point %r (%s): %s', ep.name, ep.value, e)
            continue
        if isinstance(plugin_cls, type) and issubclass(plugin_cls, GatingPlugin) and plugin_cls.name not in _PLUGINS:
            register_gating_plugin(plugin_cls)


def list_plugins() -> list[str]:
    """Names of the registered gating plugins."""
    _load_entry_points()
    return sorted(_PLUGINS)


def get_plugin(name: str) -> GatingPlugin:
    """The plugin registered as ``name``.

    Raises:
        KeyError: With the closest registered names, if there is none of that name.
    """
    _load_entry_points()
    if name not in _PLUGINS:
        close = difflib.get_close_matches(name, list(_PLUGINS), n=3, cutoff=0.4)
        hint = f' Did you mean {", ".join(map(repr, close))}?' if close else ''
        raise KeyError(f'Unknown gating plugin {name!r}.{hint} Registered plugins: {", ".join(sorted(_PLUGINS))}.')
    return _PLUGINS[name]


def _families_text() -> str:
    return '; '.join(f'{p.name}: {p.description}' for p in _PLUGINS.values())


def find_plugin(model: nn.Module, model_name: str | None = None) -> GatingPlugin:
    """Pick the plugin for a built backbone: the first whose name patterns and ``supports`` check both agree.

    Args:
        model: The built backbone.
        model_name: Its timm name, used to prefer a plugin of the same family.

    Raises:
        UnsupportedBackboneError: Listing the supported families, if no plugin supports the model.
    """
    _load_entry_points()
    plugins = list(_PLUGINS.values())
    if model_name:
        plugins.sort(key=lambda p: not p.matches_name(model_name))
    for plugin in plugins:
        if plugin.supports(model):
            return plugin
    label = model_name or type(model).__name__
    raise UnsupportedBackboneError(
        f'No gating plugin supports the backbone {label!r} ({type(model).__qualname__}). Supported families: '
        f'{_families_text()}. Write a GatingPlugin for it (see gaternet_zoo.register_gating_plugin).')
