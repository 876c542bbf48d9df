"""Gating plugins: where a backbone family's gate sites are, and how a gate is installed there.

A plugin knows one family of backbone blocks. GaterNet asks it for the gate sites of a built backbone (the last conv
of each residual branch, after its norm, before the residual add) and then has it install one
:class:`~gaternet_zoo.layers.GateSlot` per site. A plugin may also offer *inner* gate sites
(``GaterNet(gate_placement="inner")``): the output of a branch's inner conv, whose closed filter is also an input
channel the next conv no longer needs (:meth:`GatingPlugin.inner_gate_sites`). Plugins are registered by name with
:func:`register_gating_plugin` (a class decorator) or, for third-party packages, through the ``gaternet_zoo.plugins``
entry-point group, whose entries point at a :class:`GatingPlugin` subclass and are loaded the first time the registry
is queried.

Most families need no code beyond a declaration: a :class:`BlockGatingPlugin` subclass lists its block types and,
per type, a :class:`GatePoint` (which conv's filters are gated, and which module's output the gate multiplies);
the base finds the sites in forward order, lays out their offsets, installs the slots and names the gated convs
for MAC accounting.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

import torch
from torch import nn

from .layers.gates import GateSlot
from .layers.pruning import PruningError

__all__ = [
    'GateSite', 'GatingPlugin', 'BlockGatingPlugin', 'GatePoint', 'register_gating_plugin', 'get_plugin',
    'list_plugins', 'find_plugin', 'plugin_for_name', 'UnknownPluginError', 'UnsupportedBackboneError',
    'ENTRY_POINT_GROUP', 'fresh_shortcut', 'GATE_PLACEMENTS', 'UnsupportedPlacementError', 'plugins_supporting',
]

_logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = 'gaternet_zoo.plugins'

#: Where a GaterNet's filter gates sit (``GaterNet(gate_placement=...)``). ``'last'``, the paper's and the default:
#: on the last conv of each residual branch, after its norm, before the residual add. ``'inner'``: on the branch's
#: inner conv (a basic block's first conv, a bottleneck's 3x3 conv), after its norm and activation, so that a closed
#: gate removes a filter of that conv and an input channel of the next one.
GATE_PLACEMENTS = ('last', 'inner')


@dataclass(frozen=True)
class GateSite:
    """One gated location of a backbone.

    Attributes:
        name: Qualified name of the block that holds the site (``"stage1.block1"``, ``"layer3.0"``).
        num_channels: Number of gated filters.
        offset: Index of the site's first filter among the gated filters of all sites (forward order), the column
            of its first filter in ``effective_gates``; with filter gates (the default) also the index of its first
            filter gate in the flat gate vector.
        conv: Qualified name of the conv whose output filters are gated (for MAC accounting).
        branch_offset: Index of the site's branch gate in the flat gate vector, or ``None`` when the site has none
            (the default; a GaterNet built with ``branch_gates=True`` gives one to every site whose block adds its
            branch to a shortcut the plugin knows). A closed branch gate closes every filter gate of the site.
        next_conv: For an inner site (``gate_placement="inner"``): qualified name of the conv that takes the gated
            channels as its input channels, one for one, with only channelwise operations in between; a closed
            gate removes one of its input channels too. ``''`` (the default) for a site on the last conv of a
            branch, whose gated channels go to the residual add.
        filter_gates: Whether the site's filters have gates of their own in the gate vector (the default). ``False``
            in a GaterNet built with ``filter_gates=False``: the site has its branch gate only, and its filters act
            whenever that gate is open (their filter gates count as constant ones).
    """

    name: str
    num_channels: int
    offset: int = 0
    conv: str = ''
    branch_offset: int | None = None
    next_conv: str = ''
    filter_gates: bool = True

    @property
    def placement(self) -> str:
        """``'inner'`` for a site with a ``next_conv``, else ``'last'`` (the default placement)."""
        return 'inner' if self.next_conv else 'last'


class UnknownPluginError(KeyError):
    """Raised by :func:`get_plugin` for a name no plugin is registered under (the message names close ones)."""

    def __str__(self) -> str:  # KeyError would print the message quoted, as a key
        return str(self.args[0]) if self.args else ''


class UnsupportedBackboneError(ValueError):
    """Raised when no gating plugin knows a backbone."""


class UnsupportedPlacementError(ValueError):
    """Raised when a gating plugin (or one of its blocks) cannot place gates where ``gate_placement`` asks."""


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
    #: A few small timm model names that between them hold every block type the plugin gates: the contract suite
    #: (``tests/test_plugins.py``) builds each and checks the plugin against the plain timm model.
    representative_models: tuple[str, ...] = ()
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

    def inner_gate_sites(self, model: nn.Module) -> list[GateSite]:
        """The inner gate sites of ``model`` in forward order (``GaterNet(gate_placement="inner")``), optional.

        One per gated block: ``conv`` is the branch's inner conv (a basic block's first conv, a bottleneck's 3x3
        conv), whose output filters are gated after its norm and activation, and ``next_conv`` the conv that takes
        them as input channels. Only channelwise operations may lie between the two (norm, activation, dropout,
        anti-aliasing blur), so that a closed gate is exactly a filter of ``conv`` and an input channel of
        ``next_conv`` that contribute nothing. A plugin that implements it implements :meth:`install_inner` too.

        Raises:
            UnsupportedPlacementError: This plugin has no inner sites (the default), or not in this model.
        """
        raise UnsupportedPlacementError(
            f'gating plugin {self.name!r} has no inner gate sites; gate_placement="inner" is supported by: '
            f'{", ".join(plugins_supporting("inner")) or "no registered plugin"}. Use gate_placement="last".')

    def install_inner(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        """Place ``slot`` at the inner ``site`` (on ``site.conv``'s activated output, before ``site.next_conv``).

        As :meth:`install`: no ``state_dict`` key added or renamed.
        """
        raise UnsupportedPlacementError(f'gating plugin {self.name!r} cannot install inner gates')

    def supports_placement(self, placement: str) -> bool:
        """Whether this plugin can place gates as ``placement`` says ('last' or 'inner')."""
        if placement == 'last':
            return True
        return placement == 'inner' and self.overrides('inner_gate_sites')

    def inner_closed_output(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The output of ``block`` for input ``x`` when all of its inner gates are closed (skip execution), optional.

        The branch then gives its last conv applied to zeros, through its norm: a per-channel constant (the norm's
        shift), not 0 in general, so the block is *not* its shortcut. A plugin that can compute it without the
        branch's convs returns it; ``None`` (the default): skip execution runs the block, whose inner conv and next
        conv then compute nothing (no open filter, no open input channel), and the branch's other convs (a
        bottleneck's first 1x1 conv) run.
        """
        return None

    def open_inner_forward(self, block: nn.Module, x: torch.Tensor, index: torch.Tensor, channels: torch.Tensor,
                           gate: torch.Tensor) -> torch.Tensor | None:
        """The output of ``block`` computing only the inner conv's filters ``index``, optional fast path.

        As :meth:`open_filters_forward`, for an inner site: only those filters of the inner conv are computed and
        only those input channels of the next conv are read. ``None`` (the default): skip execution slices both
        convs on their own.
        """
        return None

    def prune_site(self, model: nn.Module, site: GateSite, kept: torch.Tensor) -> None:
        """Remove every output filter of ``site``'s gated conv but ``kept`` (and the same channels of its norm).

        Exact only where nothing between the gated conv and the gate mixes channels (no SE/attention), since the
        gate slot then puts zeros where the removed filters were. Plugins that can do it override this.

        Raises:
            PruningError: This plugin cannot prune (the default), or not this block.
        """
        raise PruningError(f'gating plugin {self.name!r} does not support pruning; the pruned export covers the '
                           'native (CIFAR ResNets) and timm_resnet plugins')

    def zero_filters(self, model: nn.Module, site: GateSite, index: torch.Tensor) -> None:
        """Make the output filters ``index`` of ``site``'s gated conv reach the gate as exactly 0, for any input.

        The static export (:func:`~gaternet_zoo.export_static`) needs it for the filters whose gate was always closed
        but that stay computed (``round_to`` keeps them, or the plugin cannot prune): without a gate, their output
        must be 0 by the weights. ``index`` counts the conv's current filters (after any pruning). The plugins that
        can prune override this, zeroing the scale and shift of the norm after the conv (or the conv's filters when
        the gate follows it); a :class:`BlockGatingPlugin` does it where its gate points declare ``zero_at``.

        Raises:
            PruningError: This plugin cannot (the default).
        """
        raise PruningError(f'gating plugin {self.name!r} cannot zero filters; the static export with closed filters '
                           'covers the native (CIFAR ResNets) and timm_resnet plugins and the block plugins whose gate '
                           'points declare zero_at (timm_resnetv2, timm_regnet, timm_convnext, timm_efficientnet, '
                           'timm_densenet)')

    def channelwise_after_conv(self, model: nn.Module, site: GateSite) -> bool:
        """Whether only per-channel operations lie between ``site``'s gated conv and its gate.

        Then skip execution may compute only the open filters of that conv (zeros for the others). False, the
        safe default, keeps the conv dense; plugins that know their blocks override it.
        """
        return False

    def shortcut_only(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """The output of the residual ``block`` for input ``x`` when its branch contributes 0 (all gates closed).

        ``None`` (the default): the plugin does not know, and skip execution runs the branch.
        """
        return None

    def has_shortcut(self, block: nn.Module) -> bool:
        """Whether the gated ``block`` adds its branch to a shortcut that :meth:`shortcut_only` computes.

        Such a block can skip its branch (skip execution) and take a branch gate (``GaterNet(branch_gates=True)``).
        The default: every block of a plugin that implements :meth:`shortcut_only`; a family in which some blocks
        have no residual (an inverted residual without skip) overrides it.
        """
        return self.overrides('shortcut_only')

    def kept_filters_forward(self, block: nn.Module, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor | None:
        """The output of the residual ``block`` whose gated conv computes only the site's filters ``kept``, optional.

        What a pruned site of a static export (:func:`~gaternet_zoo.export_static`) runs: no gate is left, and the
        kept filters' outputs (in the order of ``kept``, sorted indices into the site's full width) are added into
        the shortcut at their channels (:func:`~gaternet_zoo.layers.pruning.add_into_shortcut`), before whatever
        follows the block's residual addition (its activation). No full-width zero map is filled and no zero is
        added. The gate slot's place in ``block`` then holds a
        :class:`~gaternet_zoo.layers.pruning.KeptChannels` (the drop-path module, or nothing), which the branch runs
        where it ran the slot. ``None`` (the default): the plugin does not know, and :meth:`has_kept_filters_forward`
        must say so.
        """
        return None

    def has_kept_filters_forward(self, block: nn.Module) -> bool:
        """Whether :meth:`kept_filters_forward` computes the output of the gated ``block`` (a static export then adds
        a pruned site's kept channels into the shortcut rather than scattering them into zeros first).

        The default: the plugin implements :meth:`kept_filters_forward` and knows the block's shortcut
        (:meth:`has_shortcut`). A plugin that implements it for some of its blocks only overrides this too.
        """
        return self.overrides('kept_filters_forward') and self.has_shortcut(block)

    def overrides(self, hook: str) -> bool:
        """Whether this plugin implements the optional hook ``hook`` (e.g. ``'shortcut_only'``) itself."""
        return getattr(type(self), hook) is not getattr(GatingPlugin, hook)

    def open_filters_forward(self, block: nn.Module, x: torch.Tensor, index: torch.Tensor, channels: torch.Tensor,
                             gate: torch.Tensor) -> torch.Tensor | None:
        """The output of ``block`` computing only the gated conv's filters ``index`` (skip execution's fast path).

        ``channels`` are those filters' places among the site's gated channels and ``gate`` (B x len(index)) their
        gates; every other gate of the site is closed. ``None`` (the default): the plugin has no such path, and
        skip execution slices the gated conv alone.
        """
        return None

    def supported_models(self) -> list[str]:
        """timm model names this plugin is known to handle (for listings and error messages)."""
        import timm
        return timm.list_models(list(self.model_patterns)) if self.model_patterns else []


def fresh_shortcut(shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``shortcut`` as a tensor of its own: a copy when it is the block's input ``x`` itself (an identity shortcut).

    A :meth:`GatingPlugin.shortcut_only` returns it, so that an in-place op after the block (a ReLU) cannot change
    the tensor its caller still holds as the block's input.
    """
    return shortcut.clone() if shortcut is x else shortcut


def offsets_in_order(sites: Iterable[GateSite]) -> list[GateSite]:
    """Give each site its offset: sites are laid out one after another in forward order (other fields kept)."""
    out, offset = [], 0
    for site in sites:
        out.append(dataclasses.replace(site, offset=offset))
        offset += site.num_channels
    return out


#: A block-relative module name, or a function of the block returning one (for layouts that vary per block).
ModulePath = str | Callable[[nn.Module], str]
#: Block-relative names (of modules or parameters), or a function of the block returning them.
ModulePaths = tuple[str, ...] | Callable[[nn.Module], tuple[str, ...]]
#: Whether a block adds its branch to a shortcut: a constant, the name of the block's boolean flag, or a function.
ResidualFlag = bool | str | Callable[[nn.Module], bool]


@dataclass(frozen=True)
class GatePoint:
    """Where blocks of one type are gated: the declaration a :class:`BlockGatingPlugin` makes per block type.

    Attributes:
        block: Block class(es) this point applies to (``isinstance``, so subclasses are included).
        conv: Block-relative name of the conv (or ``nn.Linear`` used as a 1x1 conv) whose output filters are gated:
            the last conv of the block's main branch. Its output width is the number of gates, and it is the
            module whose MACs a closed gate could save.
        residual: Whether a block adds its branch to a shortcut as timm's blocks do, ``drop_path(branch) +
            shortcut``: ``True``/``False``, the name of the block's boolean flag (``"has_skip"``), or a function of
            the block. Such a block is gated in its ``drop_path`` slot, right before the add; a block without a
            residual (timm then never calls its ``drop_path``) is gated on its output, which is its branch's.
        zero_at: Block-relative name of what a static export (:func:`~gaternet_zoo.export_static`) zeroes to make
            a gated filter output 0 for any input, in place of a gate fixed closed: the norm right after ``conv``
            (its scale and shift), or ``conv`` itself (its filter's weights and bias) where the gate follows the
            conv with no norm in between (pre-activation blocks, ConvNeXt's ``mlp.fc2``). ``None`` (the default):
            not declared, and the static export refuses a model with a filter of such a block fixed closed
            (except in a branch it drops) rather than guess.
        before_gate: Block-relative names of what lies between ``zero_at`` and the gate, each of which must keep
            a zero channel at zero: activations and anti-aliasing pools (checked on a zero map) and layer scales
            (a ``gamma`` parameter, or a module holding one, zeroed at those channels too). Names the block does
            not hold, or holds as ``None``, are skipped.
    """

    block: type | tuple[type, ...]
    conv: ModulePath
    residual: ResidualFlag = True
    zero_at: ModulePath | None = None
    before_gate: ModulePaths = ()


def _resolve(path: ModulePath, block: nn.Module) -> str:
    return path(block) if callable(path) else path


def _held(block: nn.Module, path: str) -> Any:
    """What ``block`` holds at the dotted attribute ``path`` (a module, a parameter), or ``None`` if nothing."""
    held: Any = block
    for part in path.split('.'):
        held = getattr(held, part, None)
        if held is None:
            return None
    return held


def _has_residual(flag: ResidualFlag, block: nn.Module) -> bool:
    if isinstance(flag, str):
        return bool(getattr(block, flag))
    return bool(flag(block)) if callable(flag) else flag


def _num_outputs(conv: nn.Module) -> int:
    for attr in ('out_channels', 'out_features'):
        if isinstance(getattr(conv, attr, None), int):
            return getattr(conv, attr)
    raise TypeError(f'{type(conv).__name__} has neither out_channels nor out_features: not a conv to gate.')


class _GateHook:
    """Forward hook that passes a block's output through its gate slot (blocks without a residual).

    A plain object (not a closure) so that ``copy.deepcopy`` of the model (EMA copies, for instance) gives the copy's
    hook the copy's slot: deepcopy maps the hook's ``slot`` through the same memo as the module tree.
    """

    def __init__(self, slot: nn.Module) -> None:
        self.slot = slot

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return self.slot(output)


class BlockGatingPlugin(GatingPlugin):
    """Declarative base of a plugin for one timm family: list the block types and where each is gated.

    A subclass sets :attr:`name`, :attr:`description`, :attr:`timm_modules` (the timm model files whose models it
    covers), :attr:`model_types` (the backbone classes) and :attr:`gate_points`; the base does the rest:

    * **sites**: every block that matches a gate point, in module-registration order (the forward order of timm's
      sequential stages), one :class:`GateSite` each, with ``num_channels`` = the gated conv's output width and
      offsets laid out one after another;
    * **installation**, without adding, removing or renaming a ``state_dict`` key (the slot has no parameters),
      at the last point of the main branch, after its norm, SE and layer scale, before any residual add:

      - a block that adds its branch to a shortcut (``residual``) runs ``drop_path(branch) + shortcut``: the slot
        takes the ``drop_path`` attribute's place and runs the original drop-path module after the gate;
      - a block without a residual (stride 2, a change of width, DenseNet's layers, ...) never calls its
        ``drop_path``; its output is its branch's, so the slot becomes a submodule of the block (attribute
        :attr:`slot_attr`) applied to the block's output by a forward hook.

      Both are traced by ``torch.fx`` (timm's feature extraction, quantisation), ``torch.compile`` and
      ``torch.export``. A hook on the norm inside the block would not be: norms and convs are leaf modules of
      ``torch.fx`` tracers, whose hooks do not run while tracing, so the traced graph would silently lose the gates.
      A wrapper module around the norm would add a key level (``bn3.weight`` -> ``bn3.inner.weight``);
    * **MAC accounting**: each site names its gated conv.

    Blocks of no listed type are not gated (and, when :attr:`model_types` is set, models of other classes are not
    supported even if they reuse the blocks).
    """

    #: Backbone classes this plugin supports (``isinstance``); empty: any model holding at least one gated block.
    model_types: tuple[type, ...] = ()
    #: timm model files (``timm/models/<module>.py``) whose models the plugin covers; their models are listed by
    #: :meth:`supported_models` and matched by :meth:`matches_name`.
    timm_modules: tuple[str, ...] = ()
    #: One gate point per block type, tried in order (put subclasses before their base classes).
    gate_points: tuple[GatePoint, ...] = ()
    #: Attribute of a block without a residual that holds its slot (parameter-free: no ``state_dict`` key).
    slot_attr: str = 'gate'

    def has_shortcut(self, block: nn.Module) -> bool:
        """Whether ``block`` adds its branch to a shortcut (its gate point's ``residual``) and this plugin
        implements :meth:`shortcut_only` for it."""
        point = self.gate_point(block)
        return point is not None and _has_residual(point.residual, block) and self.overrides('shortcut_only')

    def channelwise_after_conv(self, model: nn.Module, site: GateSite) -> bool:
        """True: a declared gated conv is the last conv of its branch, followed only by per-channel operations (norm,
        activation, layer scale) up to the gate, in every family built on this base (SE/attention, where a family
        has it, comes before that conv). A family for which this does not hold overrides it."""
        return True

    def zero_filters(self, model: nn.Module, site: GateSite, index: torch.Tensor) -> None:
        """Zero the filters ``index`` where the block's gate point says (``GatePoint.zero_at``).

        That is the scale and shift of the norm after the gated conv, or the conv's own filters where the gate
        follows it directly; a layer scale among ``GatePoint.before_gate`` is zeroed at ``index`` too, and every
        other module there is checked to keep a zero channel at zero, before any weight changes.

        Raises:
            PruningError: The gate point declares no ``zero_at``, or what it names cannot give 0 exactly (a norm
                of another kind, an activation that does not send 0 to 0); the message names the module (the
                caller knows the site).
        """
        from .layers.pruning import sends_zero_to_zero, zero_conv_filters, zero_norm_channels

        block = model.get_submodule(site.name)
        point = self.gate_point(block)
        if point is None:
            raise RuntimeError(f'{site.name!r} ({type(block).__name__}) is not a block plugin {self.name!r} gates.')
        if point.zero_at is None:
            raise PruningError(f'gating plugin {self.name!r} does not say how to zero a filter of a '
                               f'{type(block).__name__} (its GatePoint declares no zero_at)')
        target = block.get_submodule(_resolve(point.zero_at, block))
        names = point.before_gate(block) if callable(point.before_gate) else point.before_gate
        reference = next(iter(block.parameters()))  # the device and dtype of the zero maps the checks run
        scales = []
        for name in names:
            held = _held(block, name)
            if held is None:
                continue
            gamma = held if isinstance(held, nn.Parameter) else getattr(held, 'gamma', None)
            if isinstance(gamma, nn.Parameter) and tuple(gamma.shape) == (site.num_channels,):
                scales.append(gamma)  # a layer scale: multiplies each channel, so 0 stays 0; zeroed below too
            elif not isinstance(held, nn.Module) or isinstance(gamma, nn.Parameter) or not sends_zero_to_zero(
                    held, site.num_channels, reference):
                raise PruningError(f'{type(block).__name__}.{name} ({type(held).__name__}), between the zeroed '
                                   f'{_resolve(point.zero_at, block)} and the gate, is not known to keep a zero '
                                   'channel at zero')
        try:
            if isinstance(target, (nn.Conv2d, nn.Linear)):
                zero_conv_filters(target, index)
            else:
                zero_norm_channels(target, index)
        except PruningError as e:
            raise PruningError(f'{type(block).__name__}.{_resolve(point.zero_at, block)}: {e}') from None
        with torch.no_grad():
            for gamma in scales:
                gamma.index_fill_(0, index.to(gamma.device, torch.long), 0.0)

    def supported_models(self) -> list[str]:
        import timm
        if not self.timm_modules:
            return super().supported_models()
        names = timm.list_models(module=list(self.timm_modules))
        if self.model_patterns:
            names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in self.model_patterns)]
        return names

    def matches_name(self, model_name: str) -> bool:
        if not self.timm_modules:
            return super().matches_name(model_name)
        if not hasattr(self, '_supported'):
            self._supported = frozenset(self.supported_models())
        return model_name in self._supported

    def gate_point(self, block: nn.Module) -> GatePoint | None:
        """The gate point of ``block``, or ``None`` if its type is not gated."""
        return next((p for p in self.gate_points if isinstance(block, p.block)), None)

    def gated_blocks(self, model: nn.Module) -> list[tuple[str, nn.Module, GatePoint]]:
        """``(name, block, gate point)`` of every gated block, in forward order."""
        out = []
        for name, module in model.named_modules():
            point = self.gate_point(module)
            if point is not None:
                out.append((name, module, point))
        return out

    def supports(self, model: nn.Module) -> bool:
        if self.model_types and not isinstance(model, self.model_types):
            return False
        return len(self.gated_blocks(model)) > 0

    def gate_sites(self, model: nn.Module) -> list[GateSite]:
        sites = []
        for name, block, point in self.gated_blocks(model):
            conv = _resolve(point.conv, block)
            sites.append(GateSite(name, _num_outputs(block.get_submodule(conv)), conv=f'{name}.{conv}'))
        return offsets_in_order(sites)

    def install(self, model: nn.Module, site: GateSite, slot: GateSlot) -> None:
        block = model.get_submodule(site.name)
        point = self.gate_point(block)
        if point is None:
            raise RuntimeError(f'{site.name!r} ({type(block).__name__}) is not a block plugin {self.name!r} gates.')
        if any(isinstance(getattr(block, a, None), GateSlot) for a in ('drop_path', self.slot_attr)):
            raise RuntimeError(f'Block {site.name!r} already holds a gate.')
        if _has_residual(point.residual, block):
            # Right before `drop_path(branch) + shortcut`; the original drop-path module (or None) runs after it.
            slot.after = getattr(block, 'drop_path', None)
            block.drop_path = slot
            return
        held = getattr(block, self.slot_attr, None)
        if held is not None:
            raise RuntimeError(
                f'Block {site.name!r} already has an attribute {self.slot_attr!r} ({type(held).__name__}); set '
                f'`slot_attr` of plugin {type(self).__name__} to a free attribute name.')
        # A submodule, so that .to(), deepcopy and module listings see it; it has no parameters or buffers.
        block.add_module(self.slot_attr, slot)
        block.register_forward_hook(_GateHook(slot))


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
        raise UnknownPluginError(
            f'Unknown gating plugin {name!r}.{hint} Registered plugins: {", ".join(sorted(_PLUGINS))}.')
    return _PLUGINS[name]


def plugin_for_name(model_name: str, plugin: str | None = None) -> GatingPlugin | None:
    """The plugin named ``plugin``, else the first registered plugin whose name patterns match ``model_name``.

    Used before the backbone is built (for :meth:`GatingPlugin.backbone_args`); :func:`find_plugin` checks the
    built model afterwards.
    """
    if plugin:
        return get_plugin(plugin)
    _load_entry_points()
    return next((p for p in _PLUGINS.values() if p.matches_name(model_name)), None)


def plugins_supporting(placement: str) -> list[str]:
    """Names of the registered plugins that can place gates as ``placement`` says (``'last'`` or ``'inner'``)."""
    _load_entry_points()
    return sorted(name for name, p in _PLUGINS.items() if p.supports_placement(placement))


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
