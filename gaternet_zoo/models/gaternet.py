"""GaterNet: a backbone CNN whose filters are switched on and off per input by a separate gater network.

Chen, Li, Bengio, Si, "You Look Twice: GaterNet for Dynamic Filter Selection in CNNs", CVPR 2019
(arXiv:1811.11205). The mechanism follows the released evaluation code (google-research/google-research
``gaternet/``, Apache-2.0): the gater is a ResNet-20 feature extractor, ``FC -> bottleneck (8) -> ReLU -> FC`` to one
logit per gated filter, binarised with Improved SemHash; the backbone multiplies the output of the last conv of
every residual branch (after its norm, before the residual add) by its gates.

Both networks are ordinary timm models: the backbone keeps its timm ``state_dict`` keys (a gating plugin places
parameter-free gate slots into it) and the gater's encoder is any timm model built with ``num_classes=0``.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections import Counter
from typing import Any

import torch
import torch.fx
from timm.layers import register_notrace_function
from timm.models import get_pretrained_cfg, register_model
from timm.models._features import FeatureGetterNet
from torch import nn

from .. import _validation
from .._builder import build_with_cfg
from .._constants import CIFAR10_MEAN, CIFAR10_STD
from .._hub_mixin import ZooHubMixin
from .._plugins import (
    GATE_PLACEMENTS,
    GateSite,
    GatingPlugin,
    UnsupportedPlacementError,
    find_plugin,
    get_plugin,
    list_plugins,
    offsets_in_order,
    plugins_supporting,
)
from .._pretrained import generate_default_cfgs
from ..hub import timm_pretrained_args
from ..layers.gater import Gater
from ..layers.gates import DEFAULT_THRESHOLD, GateContext, GateSlot, ImprovedSemHash
from ..layers.pruning import PruningError
from ..layers.skip import SkippingBlockForward, SkippingConvForward, SkippingInputForward, SkipPlan, can_slice
from ..utils.gate_stats import effective_gates, own_filter_gates

__all__ = ['GaterNet']

#: Arguments added after weights were published, at the value that builds the model as before. They are recorded
#: in config.json only when they differ from it, so a published model saved again keeps its config, and with it
#: the fingerprint its registry entry pins.
_NEUTRAL_LATER_ARGS = {'branch_gates': False, 'gate_placement': 'last', 'filter_gates': True}



class BackboneClassifierMixin:
    """timm's classifier contract for a model whose timm backbone is its ``backbone`` (GaterNet, StaticBackbone)."""

    backbone: nn.Module

    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> str | nn.Module | None:
        if not name_only:
            return self.backbone.get_classifier()
        if 'name_only' in inspect.signature(self.backbone.get_classifier).parameters:
            return 'backbone.' + self.backbone.get_classifier(name_only=True)
        # Most timm models (ResNetV2, RegNet, ConvNeXt, EfficientNet, ...) have no `name_only`: the classifier's
        # name is where the backbone holds the module it returns.
        classifier = self.backbone.get_classifier()
        name = next((n for n, m in self.backbone.named_modules() if m is classifier and n), None)
        return f'backbone.{name}' if name is not None else None

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the backbone's classifier (a GaterNet's gater is unaffected)."""
        if global_pool is None:
            self.backbone.reset_classifier(num_classes)
        else:
            self.backbone.reset_classifier(num_classes, global_pool)


class GaterNet(nn.Module, ZooHubMixin, BackboneClassifierMixin):
    """A backbone gated filter by filter by a global gater network.

    Every constructor argument is JSON-serialisable, so a model is rebuilt from its ``config.json`` alone. The
    gates of a forward call reach the backbone for that call only (:class:`~gaternet_zoo.layers.GateContext`), so a
    model can serve concurrent calls from several threads; the gater runs in float32 even under autocast.

    Args:
        backbone: timm model name of the backbone (any model a gating plugin supports).
        gater: timm model name of the gater's feature extractor: any timm classifier (built with
            ``num_classes=0``; its pre-logits features feed the bottleneck). Its pretrained weights are chosen apart
            from the backbone's, with ``gater_args={"pretrained": True}``.
        num_classes: Classes of the backbone's classifier.
        in_chans: Input channels (the same image goes to both networks).
        bottleneck: Width of the gater's bottleneck.
        bottleneck_norm: ``BatchNorm1d`` before the bottleneck ReLU (paper text) instead of none (released code).
        gate_noise_std: Standard deviation of the training noise on the gate logits.
        gate_discrete_prob: Per-sample probability of discrete gates in training.
        gate_threshold: Step threshold of the binarisation.
        plugin: Name of the gating plugin; found from the backbone when ``None``.
        backbone_args: Extra keyword arguments for ``timm.create_model(backbone, ...)``; they win over those the
            gating plugin asks for (``GatingPlugin.backbone_args``, e.g. ``zero_init_last=False`` for timm ResNets).
        gater_args: Extra keyword arguments for ``timm.create_model(gater, ...)``.
        drop_rate: Dropout before the backbone's classifier.
        global_pool: The backbone's global pooling (timm's ``global_pool``; ``''`` for none); the backbone's
            default when ``None``.
        gater_input_size: Side (or ``[height, width]``) of the image the gater's feature extractor sees: the input
            is average-pooled to it first, a cheaper gater (16 for a 32 px CIFAR image: a quarter of the gater's
            MACs). ``None``: the full image, as in the paper.
        pruned_filters: For a pruned export (:func:`~gaternet_zoo.prune_gaternet`): per gate site, the indices of
            the filters its gated conv keeps; the others are removed from the conv and its norm, and their output is
            0 as if their gates were closed. ``None``: nothing pruned.
        branch_gates: Also emit one gate per residual branch (``False``: the paper's filter gates only). Every gate
            site whose block adds its branch to a shortcut the gating plugin knows (``GatingPlugin.has_shortcut``)
            gets one; the other sites (an inverted residual without skip, a DenseNet layer) get none. A branch gate
            multiplies all of its site's filter gates: closed, the block gives its shortcut, and skip execution
            does not run the branch. It comes from the same gater head and is binarised the same way.
        gate_placement: Where the filter gates sit. ``'last'`` (the default, the paper's): on the last conv of each
            residual branch, after its norm, before the residual add. ``'inner'``: on the branch's inner conv (a
            basic block's first conv, a bottleneck's 3x3 conv), after its norm and activation, so that a closed gate
            removes a filter of that conv and an input channel of the next one (``GateSite.next_conv``); skip
            execution and the MAC account save both. Plugins that support it: ``native`` and ``timm_resnet``
            (:func:`~gaternet_zoo.plugins_supporting`). Not combined with ``branch_gates`` (so not with
            ``filter_gates=False`` either), nor with pruning or the static export (all refused).
        filter_gates: Emit the paper's per-filter gates (the default). ``False``, only with ``branch_gates=True``:
            the gater emits the branch gates alone, one per residual branch, and every filter of an open branch is
            on: block skipping decided by a global gater (as ConvNet-AIG and SkipNet skip blocks). The sites whose
            block has no shortcut the plugin knows would get no gate at all, so they are not gate sites: their
            blocks run as the plain backbone's.

    Gate layout: the gate vector (``gate_size`` wide) holds the filter gates first, site after site in forward order
    (site ``s``'s at ``s.offset`` to ``s.offset + s.num_channels``; ``num_filter_gates`` in all), then, with
    ``branch_gates``, one branch gate per residual site in the same order (site ``s``'s at ``s.branch_offset``).
    With ``filter_gates=False`` it holds the branch gates only (``num_filter_gates == 0``, ``gate_size ==
    num_branch_gates``); ``s.offset`` still numbers the site's filters among all ``num_filters`` gated filters, the
    columns of :meth:`effective_gates`. :meth:`gate_site_table`, :meth:`split_gates` and :meth:`split_branch_gates`
    read it.

    Raises:
        ValueError: If a gate slot the plugin installed does not run exactly once in a forward pass of the
            backbone, a gate site's ``conv`` does not name a conv that runs with that site's width,
            ``branch_gates`` is asked of a backbone without a residual block whose shortcut the plugin knows, or
            ``filter_gates=False`` without ``branch_gates=True``.
        UnsupportedPlacementError: ``gate_placement="inner"`` with a plugin (or a block) that has no inner sites,
            or with ``branch_gates`` or ``filter_gates=False``.
    """

    def __init__(
            self,
            backbone: str = 'cifar_resnet20',
            gater: str = 'cifar_resnet20',
            num_classes: int = 10,
            in_chans: int = 3,
            bottleneck: int = 8,
            bottleneck_norm: bool = False,
            gate_noise_std: float = 1.0,
            gate_discrete_prob: float = 0.5,
            gate_threshold: float = DEFAULT_THRESHOLD,
            plugin: str | None = None,
            backbone_args: dict[str, Any] | None = None,
            gater_args: dict[str, Any] | None = None,
            drop_rate: float = 0.0,
            global_pool: str | None = None,
            pruned_filters: dict[str, list[int]] | None = None,
            gater_input_size: int | list[int] | None = None,
            branch_gates: bool = False,
            gate_placement: str = 'last',
            filter_gates: bool = True,
    ) -> None:
        super().__init__()
        import timm  # imported here so that gaternet_zoo's own models are registered first

        _validation.check_gaternet_args(backbone, gater, num_classes, in_chans, bottleneck, gate_noise_std,
                                        gate_threshold, drop_rate)
        if not isinstance(branch_gates, bool):
            raise TypeError(f'branch_gates of GaterNet must be True or False, got {branch_gates!r}.')
        if gate_placement not in GATE_PLACEMENTS:
            raise ValueError(f'gate_placement of GaterNet must be one of {", ".join(map(repr, GATE_PLACEMENTS))}, '
                             f'got {gate_placement!r}.')
        if not isinstance(filter_gates, bool):
            raise TypeError(f'filter_gates of GaterNet must be True or False, got {filter_gates!r}.')
        if gate_placement == 'inner' and not filter_gates:
            raise UnsupportedPlacementError(
                'filter_gates=False cannot be combined with gate_placement="inner": without filter gates the model '
                'gates whole branches only, at their end, so there is nothing to place on an inner conv. Build it '
                'with gate_placement="last" (the default).')
        if not filter_gates and not branch_gates:
            raise ValueError(
                'filter_gates=False needs branch_gates=True: without filter gates the branch gates are the only '
                'gates, so a model with neither would gate nothing. Build it with branch_gates=True, '
                'filter_gates=False (one gate per residual branch), or keep filter_gates=True.')
        if gate_placement == 'inner' and branch_gates:
            raise UnsupportedPlacementError(
                'branch_gates=True cannot be combined with gate_placement="inner" yet: a branch gate closes the '
                'branch at its end (the block becomes its shortcut), but inner gates sit inside the branch, whose '
                'output with them all closed is its last norm\'s shift, not 0. Build one or the other.')
        #: ``'last'`` or ``'inner'``: where the filter gates sit (see the class docstring).
        self.gate_placement = gate_placement
        self.in_chans = in_chans
        self.backbone_name = backbone
        self.gater_name = gater
        # With pretrained=True in either, an unreachable Hub fails at once, or loads the cached copy.
        backbone_args = timm_pretrained_args(backbone, dict(backbone_args or {}), option='backbone_args')
        gater_args = timm_pretrained_args(gater, dict(gater_args or {}), option='gater_args')
        self.backbone, gating_plugin = _build_backbone(backbone, num_classes, in_chans, plugin, backbone_args,
                                                       drop_rate, global_pool)
        self.plugin_name = gating_plugin.name

        # Gate slots are parameter-free and share one context: the backbone's state_dict keys stay timm's.
        self._gate_context = GateContext()
        if gate_placement == 'inner':
            if not gating_plugin.supports_placement('inner'):
                raise UnsupportedPlacementError(
                    f'gate_placement="inner" is not supported by gating plugin {gating_plugin.name!r} (backbone '
                    f'{backbone!r}); plugins that support it: {", ".join(plugins_supporting("inner"))}. Use '
                    'gate_placement="last" (the default) for this backbone.')
            sites = gating_plugin.inner_gate_sites(self.backbone)
            install = gating_plugin.install_inner
        else:
            sites = gating_plugin.gate_sites(self.backbone)
            install = gating_plugin.install
        # The gater's width under each gate option, for the error a checkpoint of another one gets.
        self._gate_widths = _gate_widths(self.backbone, sites, gating_plugin, gate_placement)
        self.branch_gates = branch_gates
        self.filter_gates = filter_gates
        if branch_gates:
            sites = _with_branch_gates(self.backbone, sites, gating_plugin, backbone)
        if not filter_gates:
            sites = _branch_gates_only(sites)
        #: Filter gates: the first ``num_filter_gates`` entries of the gate vector (0 with ``filter_gates=False``).
        self.num_filter_gates = sum(s.num_channels for s in sites if s.filter_gates)
        for site in sites:
            install(self.backbone, site, GateSlot(
                self._gate_context, site.offset, site.num_channels, site.name, branch_offset=site.branch_offset,
                filter_gates=site.filter_gates))
        self.gate_sites: tuple[GateSite, ...] = tuple(sites)
        self.gate_size = _gate_size(self.gate_sites)
        _check_gate_sites(self.backbone, self.gate_sites, self._gate_context, gating_plugin.name, backbone, in_chans)
        self.pruned_filters: dict[str, list[int]] = {}
        if pruned_filters:
            self.prune_filters(pruned_filters)

        encoder = timm.create_model(gater, num_classes=0, in_chans=in_chans, **(gater_args or {}))
        binarizer = ImprovedSemHash(gate_noise_std, gate_discrete_prob, gate_threshold)
        self.gater = Gater(encoder, self.gate_size, bottleneck, bottleneck_norm, binarizer, gater_input_size)

        self.num_features = self.backbone.num_features
        self.head_hidden_size = getattr(self.backbone, 'head_hidden_size', self.num_features)
        # timm's feature metadata, named from this model: the gated backbone's stages are the feature levels.
        self.feature_info = [dict(info, module=f'backbone.{info["module"]}')
                             for info in getattr(self.backbone, 'feature_info', [])]
        recorded = getattr(self, '_hub_mixin_config', None)
        if isinstance(recorded, dict):
            self._hub_mixin_config = {k: v for k, v in recorded.items()
                                      if not (k in _NEUTRAL_LATER_ARGS and v == _NEUTRAL_LATER_ARGS[k])}

    def __prepare_scriptable__(self) -> GaterNet:
        # torch.jit.script calls this first: refuse with the way out rather than fail deep inside TorchScript.
        raise RuntimeError(
            'GaterNet cannot be compiled with torch.jit.script: its gates reach the backbone through a per-call '
            'gate context that TorchScript cannot represent. For deployment export it with torch.export '
            '(torch.export.export(model.eval(), (x,))) or to ONNX (torch.onnx.export(model.eval(), (x,), '
            'dynamo=True)); both keep the gates in the graph. See docs/export.md.')

    # ----------------------------------------------------------------------------------------- timm contract
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the gater's encoder.

        The backbone is not checkpointed: its gates reach the slots through the model's gate context, which holds
        them only during the forward call, so a recomputation in the backward pass would run ungated.
        """
        self.gater.encoder.set_grad_checkpointing(enable)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
            gates: torch.Tensor | None = None,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The gated backbone's ``forward_intermediates`` (timm's feature API), with the gater's gates or ``gates``.

        Args:
            x: Input images.
            indices: Feature levels to return (``model.feature_info``): the last n for an int, all for ``None``.
            norm: Apply the backbone's final norm to the intermediates where it has one.
            stop_early: Stop after the last level asked for.
            output_fmt: ``'NCHW'``.
            intermediates_only: Return the intermediates only.
            gates: Gates replacing the gater's (B x gate_size, or 1 x gate_size for the whole batch).

        Returns:
            The intermediates, or ``(final features, intermediates)``.
        """
        if not hasattr(self.backbone, 'forward_intermediates'):
            raise NotImplementedError(
                f'The backbone {self.backbone_name!r} has no forward_intermediates(), so this GaterNet has no '
                'feature levels; use forward_features() for its final features.')
        self._check_input(x)
        gates = self._resolve_gates(x, gates)
        depth = self._gate_context.push(gates)
        try:
            return self.backbone.forward_intermediates(
                x, indices=indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt,
                intermediates_only=intermediates_only)
        finally:
            self._gate_context.pop(depth)

    def prune_intermediate_layers(
            self,
            indices: int | list[int] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Drop the backbone's layers after the feature levels ``indices`` (timm's feature API).

        The gater still emits every gate; those of pruned blocks are simply not used.
        """
        kept = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)
        self.num_features = self.backbone.num_features
        self.head_hidden_size = getattr(self.backbone, 'head_hidden_size', self.num_features)
        return kept

    # ------------------------------------------------------------------------------------------ gate API
    def _check_input(self, x: torch.Tensor) -> None:
        if isinstance(x, torch.fx.Proxy):
            return  # torch.fx traces without values: nothing to check until the traced model runs
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'GaterNet expects a torch.Tensor of shape (B, {self.in_chans}, H, W), got {type(x)}.')
        if x.ndim != 4:
            hint = ' Add a batch dimension with x.unsqueeze(0).' if x.ndim == 3 else ''
            raise ValueError(
                f'GaterNet expects a 4-D input of shape (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}.{hint}')
        if x.shape[1] != self.in_chans:
            hint = ''
            if x.shape[-1] == self.in_chans:
                hint = ' The input looks channels-last (B, H, W, C): use x.permute(0, 3, 1, 2).'
            raise ValueError(
                f'GaterNet expects {self.in_chans} input channels, got shape {tuple(x.shape)} '
                f'({x.shape[1]} channels).{hint} For other channel counts build the model with in_chans=...')
        _validation.check_input_values(
            x, self, min_side=_validation.min_input_side(self.backbone, self.gater.encoder), owner='GaterNet')

    def _check_gates(self, gates: torch.Tensor, batch_size: int) -> None:
        _validation.check_gates(gates, self.gate_size, batch_size)
        if gates.ndim != 2 or gates.shape[1] != self.gate_size or gates.shape[0] not in (1, batch_size):
            raise ValueError(
                f'gates must have shape ({batch_size}, {self.gate_size}) (or (1, {self.gate_size}) to share one '
                f'gate vector across the batch), got {tuple(gates.shape)}. This model has {self.gate_size} gates '
                f'over {len(self.gate_sites)} sites{self._branch_text()}; see model.gate_site_table().')

    def _branch_text(self) -> str:
        n = self.num_branch_gates
        if not self.filter_gates:
            return f' ({n} branch gates, no filter gates: filter_gates=False)'
        return f' ({self.num_filter_gates} filter gates, then {n} branch gates)' if n else ''

    def forward_gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Gater pre-activations ``g'``, shape B x gate_size."""
        self._check_input(x)
        return self.gater.forward_logits(x)

    def forward_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Gates for ``x``, shape B x gate_size (binary in eval mode)."""
        self._check_input(x)
        return self.gater(x)

    def _resolve_gates(self, x: torch.Tensor, gates: torch.Tensor | None) -> torch.Tensor:
        """The gater's gates for ``x``, or the ``gates`` given (checked, and expanded over the batch)."""
        if gates is None:
            return self.gater(x)
        if isinstance(gates, torch.fx.Proxy) or isinstance(x, torch.fx.Proxy):
            return gates  # traced: the shapes are not known
        self._check_gates(gates, x.shape[0])
        if gates.shape[0] == 1 and x.shape[0] > 1:
            gates = gates.expand(x.shape[0], -1)
        return gates

    def forward_features(self, x: torch.Tensor, gates: torch.Tensor | None = None) -> torch.Tensor:
        """Unpooled backbone features, with the gater's gates or the ``gates`` given."""
        self._check_input(x)
        return self._gated_features(x, self._resolve_gates(x, gates))

    @property
    def execution(self) -> str:
        """``'mask'`` (closed gates multiply computed filters by 0) or ``'skip'`` (see :meth:`set_execution`)."""
        return getattr(self, '_execution', 'mask')

    def set_execution(self, mode: str, width_multiple: int = 1) -> GaterNet:
        """Choose how closed gates act: ``'mask'`` (the default, the paper's) or ``'skip'`` (inference only).

        In skip mode each gated conv computes only the filters open for some sample of the batch, and a residual
        block whose gates are all closed (or whose branch gate is closed) for the whole batch does not run its
        branch (where its plugin knows the block's shortcut); the logits equal mask mode's. With inner gates the
        next conv also reads only the open channels, and a block whose inner gates are all closed gives its
        shortcut plus its branch's constant (where the plugin computes it). Sites where that would not be exact (an
        SE module between the gated conv and the gate, a conv that cannot be sliced) stay dense. See
        ``gaternet_zoo.layers.skip``.

        Args:
            mode: ``'mask'`` or ``'skip'``.
            width_multiple: In skip mode, compute a multiple of this many filters per gated conv (closed ones
                added, still gated to 0): CPU conv kernels are vectorised over 8 or 16 channels.

        Returns:
            The model itself.
        """
        if mode not in ('mask', 'skip'):
            raise ValueError(f"execution must be 'mask' or 'skip', got {mode!r}")
        if int(width_multiple) < 1:
            raise ValueError(f'width_multiple must be a positive number of filters, got {width_multiple}')
        for module in self.backbone.modules():  # back to the class's own forward first
            if isinstance(module.__dict__.get('forward'),
                          (SkippingConvForward, SkippingBlockForward, SkippingInputForward)):
                del module.__dict__['forward']
            module.__dict__.pop('_skip_folded', None)  # folded weights are made again from the current ones
        self._execution = mode
        if mode == 'skip':
            plugin = get_plugin(self.plugin_name)
            slots = {m.name: m for m in self.backbone.modules() if isinstance(m, GateSlot)}
            fast_path = plugin.open_filters_forward if plugin.overrides('open_filters_forward') else None
            inner_fast_path = plugin.open_inner_forward if plugin.overrides('open_inner_forward') else None
            # One plan for all sites: it reads each forward call's gates once, for every site together.
            plan = SkipPlan([slots[site.name] for site in self.gate_sites])
            multiple = int(width_multiple)
            for site in self.gate_sites:
                conv, slot = self.backbone.get_submodule(site.conv), slots[site.name]
                if plugin.channelwise_after_conv(self.backbone, site) and can_slice(conv):
                    conv.forward = SkippingConvForward(conv, slot, multiple, plan)
                block = self.backbone.get_submodule(site.name)
                if site.next_conv:  # inner: the next conv reads the open channels only
                    after = self.backbone.get_submodule(site.next_conv)
                    if type(after) is nn.Conv2d and can_slice(after):
                        after.forward = SkippingInputForward(after, slot, multiple, plan)
                    if plugin.overrides('inner_closed_output') or inner_fast_path is not None:
                        block.forward = SkippingBlockForward(block, slot, plugin.inner_closed_output,
                                                             inner_fast_path, multiple, plan)
                elif plugin.has_shortcut(block):
                    block.forward = SkippingBlockForward(block, slot, plugin.shortcut_only, fast_path, multiple, plan)
        return self

    def _gated_features(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        if self.training and self.execution == 'skip':
            raise RuntimeError("skip execution is for inference: call model.eval(), or model.set_execution('mask') "
                               'to train.')
        # The gates are current for this call only (this thread, this model; nested calls stack).
        depth = self._gate_context.push(gates)
        try:
            return self.backbone.forward_features(x)
        finally:
            self._gate_context.pop(depth)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def forward(
            self,
            x: torch.Tensor,
            gates: torch.Tensor | None = None,
            return_gates: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits, and with ``return_gates=True`` also the gates that produced them.

        Args:
            x: Input images, B x in_chans x H x W.
            gates: B x gate_size (or 1 x gate_size) gates replacing the gater's output, for ablations and analysis.
            return_gates: Return ``(logits, gates)`` (what training needs for the gate loss).
        """
        if isinstance(gates, torch.fx.Proxy) or isinstance(return_gates, torch.fx.Proxy):
            x, gates, return_gates = _traced_arguments(x, gates, return_gates)
        self._check_input(x)
        gates = self._resolve_gates(x, gates)
        logits = self.forward_head(self._gated_features(x, gates))
        return (logits, gates) if return_gates else logits

    def forward_with_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the gates that produced them: ``forward(x, return_gates=True)``."""
        return self.forward(x, return_gates=True)

    @torch.no_grad()
    def prune_filters(self, kept: dict[str, list[int]]) -> None:
        """Remove, in place, every filter of the named gate sites but the ``kept`` ones (see ``pruned_filters``).

        Raises:
            PruningError: If the gating plugin cannot prune a site exactly, or the gates are inner ones
                (``gate_placement="inner"``); ValueError for bad indices.
        """
        if kept and self.gate_placement == 'inner':
            raise PruningError(
                'pruning a GaterNet with gate_placement="inner" is not supported yet: removing an inner filter must '
                'also remove its input channel from the next conv, which the pruned export does not do. Use skip '
                'execution (set_execution("skip")), which computes neither for a closed gate, or prune a model '
                'with gate_placement="last".')
        slots = {m.name: m for m in self.backbone.modules() if isinstance(m, GateSlot)}
        done = _apply_pruning(self.backbone, get_plugin(self.plugin_name), self.gate_sites, slots, kept)
        self.pruned_filters = {**self.pruned_filters, **done}
        # ModelHubMixin keeps the __init__ arguments that rebuild a model (saved as config.json's model_args):
        # `pruned_filters` is the one that rebuilds this structure, so it is recorded there too. Built with it,
        # the model records the same value again.
        config = dict(self._hub_mixin_config or {})
        config['pruned_filters'] = {**(config.get('pruned_filters') or {}), **kept}
        self._hub_mixin_config = config

    @property
    def num_branch_gates(self) -> int:
        """Number of branch gates: the last entries of the gate vector (0 unless built with ``branch_gates``)."""
        return self.gate_size - self.num_filter_gates

    @property
    def num_filters(self) -> int:
        """Number of gated filters, the width of :meth:`effective_gates`: ``num_filter_gates`` with filter gates,
        the filters of the gated sites without them (``filter_gates=False``, where only branch gates act on them)."""
        return sum(s.num_channels for s in self.gate_sites)

    def gate_site_table(self) -> list[dict[str, Any]]:
        """One row per gate site: block name, gated conv, channels, offset into the gate vector, the index of its
        branch gate (``branch_gate``; ``None`` for a site without one, and for every site without
        ``branch_gates``) and, with ``gate_placement="inner"``, the conv whose input channels the gates also
        remove (``next_conv``; ``None`` for the default placement)."""
        return [dict(name=s.name, conv=s.conv, channels=s.num_channels, offset=s.offset, branch_gate=s.branch_offset,
                     next_conv=s.next_conv or None) for s in self.gate_sites]

    def split_gates(self, gates: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a B x gate_size gate tensor into one B x channels tensor of filter gates per gate site.

        The branch gates are not in it (:meth:`split_branch_gates`); :meth:`effective_gates` gives what acts. A
        model built with ``filter_gates=False`` has no filter gates: its filters' gates are constant ones.
        """
        self._check_gates(gates, gates.shape[0])
        filters = own_filter_gates(gates, self.gate_sites)
        return {s.name: filters[:, s.offset:s.offset + s.num_channels] for s in self.gate_sites}

    def split_branch_gates(self, gates: torch.Tensor) -> dict[str, torch.Tensor]:
        """The branch gate (a B-long tensor) of every site that has one, from a B x gate_size gate tensor."""
        self._check_gates(gates, gates.shape[0])
        return {s.name: gates[:, s.branch_offset] for s in self.gate_sites if s.branch_offset is not None}

    def effective_gates(self, gates: torch.Tensor) -> torch.Tensor:
        """The gates that act on the filters (B x num_filters): each filter gate times its site's branch gate.

        Without branch gates, the gates themselves; without filter gates (``filter_gates=False``), each site's
        branch gate repeated over its filters. A filter whose effective gate is 0 contributes nothing, and a site
        whose effective gates are all 0 for a sample has its branch skipped (skip execution).
        """
        self._check_gates(gates, gates.shape[0])
        return effective_gates(gates, self.gate_sites)

    def state_dict_mismatch_hint(self, state_dict: dict[str, torch.Tensor], prefix: str = '') -> str | None:
        """Why ``state_dict`` cannot load, when its gater emits another number of gates than this model's.

        A checkpoint of a model built with other gate options (``branch_gates``, ``filter_gates``) or another
        backbone has a gater head of another width; loading stays strict, and this says what to build instead.
        ``None`` when the widths agree.
        """
        weight = state_dict.get(prefix + 'gater.fc2.weight')
        if weight is None or weight.shape[0] == self.gate_size:
            return None
        width = weight.shape[0]
        options = [name for name, n in getattr(self, '_gate_widths', {}).items() if n == width]
        if options and not self.filter_gates and 'filter_gates' not in options[0]:
            options[0] += ', filter_gates=True'  # this model's filter_gates=False must go too
        if options:
            why = (f'{width} gates is the width of this backbone\'s gater with {options[0]}: build the model with '
                   f'{options[0]} to load it')
        else:
            why = ('it was saved from a model with another backbone or other gate options (branch_gates, '
                   'filter_gates, gate_placement)')
        return f'the gater of this checkpoint emits {width} gates but this GaterNet has {self.gate_size}' \
               f'{self._branch_text()}: {why}'

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # Loading stays strict (the gater's fc2 refuses the other shape); this adds why, and what to build instead.
        hint = self.state_dict_mismatch_hint(state_dict, prefix)
        if hint:
            error_msgs.append(f'{hint[0].upper()}{hint[1:]}. A folder written by save_pretrained records the options '
                              'in its config.json: load it with from_pretrained or create_model("local-dir:...").')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _gate_size(sites: tuple[GateSite, ...] | list[GateSite]) -> int:
    """Width of the gate vector: every site's filter gates (where it has them) and its branch gate (where it has
    one)."""
    return sum(s.num_channels for s in sites if s.filter_gates) + sum(s.branch_offset is not None for s in sites)


def _gate_widths(backbone: nn.Module, sites: list[GateSite], plugin: GatingPlugin, placement: str) -> dict[str, int]:
    """The gate vector's width for each combination of gate options a model of these sites can be built with.

    Keyed by the options as a user writes them, e.g. ``'branch_gates=True, filter_gates=False'``.
    """
    filters = sum(s.num_channels for s in sites)
    widths = {'branch_gates=False': filters}
    residual = sum(plugin.has_shortcut(backbone.get_submodule(s.name)) for s in sites) if placement == 'last' else 0
    if residual:
        widths.update({'branch_gates=True': filters + residual,
                       'branch_gates=True, filter_gates=False': residual})
    return widths


def _branch_gates_only(sites: list[GateSite]) -> list[GateSite]:
    """The sites of a model built with ``filter_gates=False``: those with a branch gate, which is then their only
    gate (at 0, 1, ... in forward order); their offsets number their filters among these sites' filters."""
    kept = [s for s in sites if s.branch_offset is not None]
    return offsets_in_order(dataclasses.replace(s, branch_offset=i, filter_gates=False) for i, s in enumerate(kept))


def _with_branch_gates(backbone: nn.Module, sites: list[GateSite], plugin: GatingPlugin,
                       backbone_name: str) -> list[GateSite]:
    """``sites`` with a branch gate for each one whose block has a shortcut the plugin knows, after the filter gates.

    Raises:
        ValueError: If no site has one.
    """
    offset = sum(s.num_channels for s in sites)
    out = []
    for site in sites:
        if plugin.has_shortcut(backbone.get_submodule(site.name)):
            site = dataclasses.replace(site, branch_offset=offset)
            offset += 1
        out.append(site)
    if offset == sum(s.num_channels for s in sites):
        raise ValueError(
            f'branch_gates=True needs residual blocks, but gating plugin {plugin.name!r} knows the shortcut of none '
            f'of the {len(sites)} gated blocks of {backbone_name!r} (GatingPlugin.has_shortcut). Build it with '
            'branch_gates=False, or give the plugin a shortcut_only() for its residual blocks.')
    return out


def _plugin_for_name(model_name: str) -> GatingPlugin | None:
    """The first registered plugin whose name patterns match a timm model name (``None`` if none does)."""
    return next((p for p in map(get_plugin, list_plugins()) if p.matches_name(model_name)), None)


def _build_backbone(backbone: str, num_classes: int, in_chans: int, plugin: str | None,
                    backbone_args: dict[str, Any] | None, drop_rate: float,
                    global_pool: str | None) -> tuple[nn.Module, GatingPlugin]:
    """The timm backbone of a GaterNet (or of its static export) and its gating plugin, before any gate is installed.

    The plugin is known by name before the backbone exists, so that its backbone arguments apply on every route
    (``create_model``, ``gate()``, ``timm.create_model``); ``find_plugin`` then confirms it on the built backbone.
    """
    import timm  # imported here so that gaternet_zoo's own models are registered first

    user_args = dict(backbone_args or {})  # (through timm_pretrained_args first where it may hold pretrained=True)
    if drop_rate:
        user_args['drop_rate'] = drop_rate
    if global_pool is not None:
        user_args['global_pool'] = global_pool

    def build(plugin_for_args: GatingPlugin | None) -> tuple[nn.Module, dict[str, Any]]:
        # The plugin's arguments first (what its gates need at initialisation), the caller's over them.
        kwargs = {**(plugin_for_args.backbone_args(backbone) if plugin_for_args else {}), **user_args}
        return timm.create_model(backbone, num_classes=num_classes, in_chans=in_chans, **kwargs), kwargs

    named_plugin = get_plugin(plugin) if plugin else _plugin_for_name(backbone)
    model, backbone_kwargs = build(named_plugin)
    gating_plugin = get_plugin(plugin) if plugin else find_plugin(model, backbone)
    if not gating_plugin.supports(model):
        raise ValueError(f'Gating plugin {gating_plugin.name!r} does not support backbone {backbone!r}.')
    if gating_plugin is not named_plugin and any(
            k not in backbone_kwargs for k in gating_plugin.backbone_args(backbone)):
        model, backbone_kwargs = build(gating_plugin)
    return model, gating_plugin


def _check_gate_sites(backbone: nn.Module, sites: tuple[GateSite, ...], context: GateContext, plugin: str,
                      backbone_name: str, in_chans: int) -> None:
    """Refuse gate sites whose slot does not run exactly once per forward pass, or whose ``conv`` is not a real one.

    A slot that never runs (installed in a module the block does not call) would leave gates that act on nothing
    but still count in ``gate_size``, the gate loss, the statistics and the MAC figures. One forward pass of the
    backbone in eval mode tells: on the meta device (shapes only, no compute) with the backbone's tensors swapped
    for meta ones, or for real on one image of zeros when the backbone cannot run on the meta device.
    """
    where = f'gating plugin {plugin!r} on backbone {backbone_name!r}'
    for site in sites:
        conv = _get_submodule(backbone, site.conv) if site.conv else None
        # A conv is anything with a weight and a filter count: nn.Conv*, timm's CondConv2d, or an nn.Linear used as
        # a 1x1 conv (ConvNeXt V1's pointwise layers).
        width = conv.out_features if isinstance(conv, nn.Linear) else getattr(conv, 'out_channels', None)
        if not isinstance(width, int) or not isinstance(getattr(conv, 'weight', None), nn.Parameter):
            raise ValueError(
                f'Gate site {site.name!r} of {where} names the gated conv {site.conv!r}, which is not a conv of the '
                'backbone: GateSite.conv must be the qualified name of the conv whose filters the site gates (the '
                'MAC figures count that conv).')
        if width != site.num_channels:
            raise ValueError(
                f'Gate site {site.name!r} of {where} gates {site.num_channels} channels, but its conv {site.conv!r} '
                f'has {width} filters.')
        if site.next_conv:
            after = _get_submodule(backbone, site.next_conv)
            if not isinstance(after, nn.Conv2d) or after.in_channels != site.num_channels:
                raise ValueError(
                    f'Inner gate site {site.name!r} of {where} names {site.next_conv!r} as the conv that takes its '
                    f'{site.num_channels} gated channels, but that is not an nn.Conv2d with {site.num_channels} '
                    'input channels.')
    slots = [m for m in backbone.modules() if isinstance(m, GateSlot)]
    counts: Counter[str | tuple[str, str]] = Counter()
    handles = [slot.register_forward_pre_hook(lambda m, args: counts.update([m.name])) for slot in slots]
    convs = {site.conv: _get_submodule(backbone, site.conv) for site in sites}
    convs.update({site.next_conv: _get_submodule(backbone, site.next_conv) for site in sites if site.next_conv})
    handles += [conv.register_forward_pre_hook(lambda m, args, n=n: counts.update([('conv', n)]))
                for n, conv in convs.items()]
    gate_size = _gate_size(sites)
    size = tuple((getattr(backbone, 'pretrained_cfg', None) or {}).get('input_size', (in_chans, 224, 224)))[-2:]
    tensors = {**dict(backbone.named_parameters()), **dict(backbone.named_buffers())}
    was_training = backbone.training
    backbone.eval()  # eval-mode norms are much cheaper on the meta device, and no running statistic moves
    try:
        try:
            meta = {k: torch.empty_like(v, device='meta') for k, v in tensors.items()}
            with torch.no_grad():
                depth = context.push(torch.ones(1, gate_size, device='meta'))
                try:
                    torch.func.functional_call(backbone, meta, (torch.zeros(1, in_chans, *size, device='meta'),))
                finally:
                    context.pop(depth)
        except Exception:  # not runnable on the meta device: one real forward pass on zeros
            counts.clear()
            device = next(iter(tensors.values())).device if tensors else torch.device('cpu')
            with torch.no_grad():
                depth = context.push(torch.ones(1, gate_size, device=device))
                try:
                    backbone(torch.zeros(1, in_chans, *size, device=device))
                finally:
                    context.pop(depth)
    finally:
        backbone.train(was_training)
        for h in handles:
            h.remove()
    runs = {site.name: counts[site.name] for site in sites}
    dead = [name for name, n in runs.items() if n == 0]
    if dead:
        raise ValueError(
            f'{len(dead)} gate slot(s) installed by {where} never run in a forward pass, so their gates would act on '
            f'nothing yet count in gate_size, the gate loss and the statistics: {", ".join(map(repr, dead))}. The '
            'plugin must install each slot in a module its block calls on the residual branch.')
    repeated = {name: n for name, n in runs.items() if n > 1}
    if repeated:
        raise ValueError(
            f'Gate slot(s) installed by {where} run more than once per forward pass: {repeated}. A site\'s gates '
            'must multiply one feature map once.')
    silent = [name for site in sites for name in (site.conv, site.next_conv)
              if name and counts[('conv', name)] == 0]
    if silent:
        raise ValueError(f'The gated conv(s) of {where} never run in a forward pass: {", ".join(map(repr, silent))}.')


def _get_submodule(module: nn.Module, name: str) -> nn.Module | None:
    try:
        return module.get_submodule(name)
    except AttributeError:
        return None


@register_notrace_function
@torch.fx.wrap
def _refuse_traced_arguments(x: torch.Tensor, gates: Any, return_gates: Any) -> torch.Tensor:
    """In a model traced by ``torch.fx``: refuse at run time the arguments the trace took as their defaults."""
    if gates is not None or return_gates:
        raise ValueError(
            'This torch.fx graph of a GaterNet was traced with gates=None and return_gates=False and computes its '
            'own gates; trace with concrete_args={"gates": ..., "return_gates": ...} to pass them.')
    return x


def _traced_arguments(x: Any, gates: Any, return_gates: Any) -> tuple[Any, Any, Any]:
    """Read the optional arguments of a ``torch.fx`` trace of ``forward``.

    ``torch.fx`` turns every argument into a placeholder, defaults included. One still at its default is read as the
    default, with a guard in the graph that refuses another value when the traced model runs; gates computed in
    the traced graph (any other Proxy) are used.
    """
    def is_default(value: Any, default: Any) -> bool:
        return (isinstance(value, torch.fx.Proxy) and value.node.op == 'placeholder'
                and value.node.args == (default,))

    gates_default, flag_default = is_default(gates, None), is_default(return_gates, False)
    if isinstance(return_gates, torch.fx.Proxy) and not flag_default:
        raise ValueError('return_gates must be a Python bool when a GaterNet is traced; pass it in concrete_args.')
    if gates_default or flag_default:
        x = _refuse_traced_arguments(x, gates if gates_default else None, return_gates if flag_default else False)
    return x, None if gates_default else gates, False if flag_default else return_gates


def _feature_cfg_for(pretrained_cfg: dict[str, Any]) -> dict[str, Any]:
    # As timm does for its features_only models: drop the classifier fields.
    return {k: v for k, v in pretrained_cfg.items() if k not in ('num_classes', 'classifier', 'global_pool')}


def _create_gaternet(variant: str, pretrained: bool = False, **kwargs: Any) -> GaterNet | FeatureGetterNet:
    if kwargs.pop('features_only', False):
        # timm's other feature wrappers re-run the backbone's modules themselves, without the gates; the getter
        # calls model.forward_intermediates, which computes the gates and applies them.
        feature_cls = kwargs.pop('feature_cls', 'getter')
        if feature_cls not in ('getter', FeatureGetterNet):
            raise ValueError(
                f'{variant} supports features_only with feature_cls="getter" only (got {feature_cls!r}): the other '
                'timm feature wrappers would run the backbone without its gates.')
        out_indices = kwargs.pop('out_indices', None)
        model = build_with_cfg(GaterNet, variant, pretrained, **kwargs)
        features = FeatureGetterNet(model, out_indices=out_indices)
        features.pretrained_cfg = features.default_cfg = _feature_cfg_for(model.pretrained_cfg)
        return features
    return build_with_cfg(GaterNet, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (8, 8), 'crop_pct': 1.0,
        'interpolation': 'bilinear', 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD,
        'first_conv': ['backbone.conv', 'gater.encoder.conv'], 'classifier': 'backbone.fc',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:1811.11205',
        'paper_name': 'You Look Twice: GaterNet for Dynamic Filter Selection in CNNs', **kwargs,
    }


def _in1k_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(**{
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_pct': 0.875,
        'interpolation': 'bilinear', 'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': ['backbone.conv1', 'gater.encoder.conv1'], **kwargs,
    })


default_cfgs = generate_default_cfgs({
    'gaternet': _cfg(),
    # Trained here with recipes/configs/cifar10_gaternet_resnet20.yaml for 30 epochs, same schedule, augmentation
    # and seed as cifar_resnet20.cifar10 (weights/gaternet_resnet20.cifar10/; docs/results.md compares them).
    'gaternet_resnet20.cifar10': _cfg(
        hf_hub_id='gaternet-zoo/gaternet_resnet20.cifar10', revision='v0.1.0',
        sha256='253467237bed9a7239d1fab27498e23ea2ee229852e32bb09c625c3200bb2428', dataset='uoft-cs/cifar10',
        config_sha256='51ec678ea86ddbbc4fc1d7552fc2afa1350edaee2754ddd27c7b89c106e5a7cb'),
    # The same recipe with a MAC budget (--gate-budget macs --gate-budget-target 0.5): 51 % of the backbone's MACs
    # used, fewer correct (weights/gaternet_resnet20.cifar10_macs50/; docs/compute.md). Not the default tag.
    'gaternet_resnet20.cifar10_macs50': _cfg(
        hf_hub_id='gaternet-zoo/gaternet_resnet20.cifar10_macs50', revision='v0.1.0',
        sha256='a10a2b7443ef5409fbf0e35976f2a081f76998251ea8a4d6464874b59ae35ca3', dataset='uoft-cs/cifar10',
        config_sha256='51ec678ea86ddbbc4fc1d7552fc2afa1350edaee2754ddd27c7b89c106e5a7cb'),
    # Trained here with recipes/configs/cifar10_gaternet_resnet56.yaml for 30 epochs in bf16, same schedule,
    # augmentation and seed as cifar_resnet56.cifar10 (weights/gaternet_resnet56.cifar10/; docs/results.md).
    'gaternet_resnet56.cifar10': _cfg(
        hf_hub_id='gaternet-zoo/gaternet_resnet56.cifar10', revision='v0.1.0',
        sha256='248828fbda9cc77279e99befc247d8a48572d441de74c790534b72f12ae983b6', dataset='uoft-cs/cifar10',
        config_sha256='de294f9c40219900d22592aedbb21e34f96354f979e83a7e54612d83f8a64183'),
    'gaternet_resnet110': _cfg(),
    'gaternet_resnet164': _cfg(),
    'gaternet_wrn28_10': _cfg(),
    'gaternet_resnet18': _in1k_cfg(),
    'gaternet_resnet34': _in1k_cfg(),
    'gaternet_resnet50': _in1k_cfg(),
    'gaternet_resnet101': _in1k_cfg(),
})


def _cifar(variant: str, default_backbone: str, pretrained: bool, **kwargs: Any) -> GaterNet:
    model_args = dict(backbone=default_backbone, gater='cifar_resnet20', bottleneck=8)
    return _create_gaternet(variant, pretrained, **dict(model_args, **kwargs))


def _imagenet(variant: str, default_backbone: str, pretrained: bool, **kwargs: Any) -> GaterNet:
    # The timm_resnet plugin gives the backbone zero_init_last=False (see plugins/timm_resnet.py), on every route.
    model_args = dict(backbone=default_backbone, gater='resnet18', bottleneck=8)
    return _create_gaternet(variant, pretrained, **dict(model_args, **kwargs))


def _names(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    return [] if not value else [value] if isinstance(value, str) else list(value)


@register_model
def gaternet(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """A GaterNet over any supported backbone: ``create_model("gaternet", backbone="resnet50", gater="resnet18")``.

    The input settings (size, mean, std) of ``pretrained_cfg`` are taken from the backbone's own timm config.
    """
    backbone = kwargs.get('backbone', 'cifar_resnet20')
    if 'pretrained_cfg' not in kwargs or kwargs['pretrained_cfg'] is None:
        backbone_cfg = get_pretrained_cfg(backbone)
        if backbone_cfg is not None:
            keys = ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'num_classes',
                    'test_input_size', 'crop_mode')
            overlay = {k: getattr(backbone_cfg, k) for k in keys if getattr(backbone_cfg, k, None) is not None}
            # Module names of the backbone's and the gater's first convs and of the classifier, from this model.
            gater_cfg = get_pretrained_cfg(kwargs.get('gater', 'cifar_resnet20'))
            sources = (('backbone', backbone_cfg), ('gater.encoder', gater_cfg))
            first_convs = [f'{prefix}.{name}' for prefix, cfg in sources if cfg is not None
                           for name in _names(cfg.first_conv)]
            if first_convs:
                overlay['first_conv'] = first_convs
            if isinstance(backbone_cfg.classifier, str):
                overlay['classifier'] = f'backbone.{backbone_cfg.classifier}'
            kwargs['pretrained_cfg_overlay'] = {**overlay, **(kwargs.get('pretrained_cfg_overlay') or {})}
    return _create_gaternet('gaternet', pretrained, **kwargs)


@register_model
def gaternet_resnet20(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """ResNet-20 gated by a ResNet-20 gater (CIFAR, 32x32): 336 gates."""
    return _cifar('gaternet_resnet20', 'cifar_resnet20', pretrained, **kwargs)


@register_model
def gaternet_resnet56(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """ResNet-56 gated by a ResNet-20 gater (CIFAR, 32x32): 1008 gates."""
    return _cifar('gaternet_resnet56', 'cifar_resnet56', pretrained, **kwargs)


@register_model
def gaternet_resnet110(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """ResNet-110 gated by a ResNet-20 gater (CIFAR, 32x32): 2016 gates."""
    return _cifar('gaternet_resnet110', 'cifar_resnet110', pretrained, **kwargs)


@register_model
def gaternet_resnet164(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """Pre-activation ResNet-164 gated by a ResNet-20 gater (CIFAR, 32x32): 8064 gates on the expanding convs."""
    return _cifar('gaternet_resnet164', 'cifar_resnet164', pretrained, **kwargs)


@register_model
def gaternet_wrn28_10(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """Wide ResNet-28-10 gated by a ResNet-20 gater (CIFAR, 32x32): 4480 gates."""
    return _cifar('gaternet_wrn28_10', 'cifar_wrn28_10', pretrained, **kwargs)


@register_model
def gaternet_resnet18(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ResNet-18 gated by a ResNet-18 gater (ImageNet, 224x224): 1920 gates."""
    return _imagenet('gaternet_resnet18', 'resnet18', pretrained, **kwargs)


@register_model
def gaternet_resnet34(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ResNet-34 gated by a ResNet-18 gater (ImageNet, 224x224): 3776 gates."""
    return _imagenet('gaternet_resnet34', 'resnet34', pretrained, **kwargs)


@register_model
def gaternet_resnet50(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ResNet-50 gated by a ResNet-18 gater (ImageNet, 224x224): 15104 gates on the expanding convs."""
    return _imagenet('gaternet_resnet50', 'resnet50', pretrained, **kwargs)


@register_model
def gaternet_resnet101(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ResNet-101 gated by a ResNet-18 gater (ImageNet, 224x224): 32512 gates on the expanding convs."""
    return _imagenet('gaternet_resnet101', 'resnet101', pretrained, **kwargs)


def _apply_pruning(backbone: nn.Module, plugin: GatingPlugin, sites: tuple[GateSite, ...],
                   slots: dict[str, GateSlot], pruned_filters: dict[str, list[int]] | None) -> dict[str, list[int]]:
    """Remove the filters ``pruned_filters`` does not keep from each named site (a pruned export's structure)."""
    if not pruned_filters:
        return {}
    by_name = {s.name: s for s in sites}
    unknown = sorted(set(pruned_filters) - set(by_name))
    if unknown:
        raise ValueError(f'pruned_filters names {len(unknown)} site(s) this model does not have: {unknown[:5]}; '
                         'its gate sites are listed by model.gate_site_table().')
    out = {}
    for name, kept in pruned_filters.items():
        site = by_name[name]
        kept = [int(i) for i in kept]
        if slots[name].kept is not None:
            raise ValueError(f'gate site {name!r} is already pruned')
        if not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= site.num_channels:
            raise ValueError(f'pruned_filters[{name!r}] must be sorted, distinct filter indices in '
                             f'[0, {site.num_channels}), at least one; got {kept[:8]}{"..." if len(kept) > 8 else ""}')
        if len(kept) == site.num_channels:
            continue
        index = torch.tensor(kept, dtype=torch.long)
        plugin.prune_site(backbone, site, index)
        device = next(iter(backbone.parameters())).device
        slots[name].set_kept_channels(index.to(device))
        out[name] = kept
    return out
