"""Multiply-accumulate counts, measured with PyTorch's own ``FlopCounterMode`` (MACs = FLOPs / 2).

GaterNet multiplies feature maps by gates, so in mask mode a closed gate saves nothing at run time (as in the
released code). :func:`gaternet_macs` also reports the backbone MACs "used" given the gates: what skip execution
(``GaterNet.set_execution("skip")``, batch 1) computes. That is the dense count minus, for every closed gate, the
MACs of the one output filter of the gated conv that the gate discards, and minus, for every sample and residual
block whose gates are all closed, the rest of that block's branch (which skip execution does not run, where the
block's plugin knows its shortcut). With branch gates (``GaterNet(branch_gates=True)``) the gates that count are
the effective ones (each filter gate times its branch gate): a closed branch gate closes all of its site's filters,
and so counts the whole branch, every conv of it, as saved. A model built with ``filter_gates=False`` has branch
gates only: each of its gated filters acts exactly when its branch gate is open.

With inner gates (``GaterNet(gate_placement="inner")``) a closed gate saves one output filter of the inner conv
(its MACs / its filters) *and* one input channel of the next conv (its MACs / its input channels), each where skip
execution slices that conv (a dense ``nn.Conv2d``); a sample whose inner gates in a block are all closed also saves
the rest of the branch that skip execution then does not run (a bottleneck's first 1x1 conv), where the plugin
computes such a block's output without its convs (``GatingPlugin.inner_closed_output``: the shortcut plus the last
norm's shift, not the shortcut alone). It is an analytic figure, not a measured speed-up.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['count_macs', 'count_params', 'gaternet_macs']


def count_params(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, *inputs: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
    """MACs of one forward call, in total and per submodule (qualified names relative to ``module``).

    Returns:
        ``(total, per_module)``.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        module(*inputs, **kwargs)
    per_module = {}
    root = type(module).__name__
    for name, ops in counter.get_flop_counts().items():
        rel = name[len(root) + 1:] if name.startswith(root + '.') else name
        per_module[rel] = int(sum(ops.values())) // 2
    return int(counter.get_total_flops()) // 2, per_module


def _gateable_macs(model: nn.Module, per_module: dict[str, int]) -> dict[str, int]:
    """Per site: the MACs its closed filter gates save between them (each gate an equal share).

    The gated conv's MACs for a site on the last conv of a branch. For an inner site, the inner conv's MACs where
    skip execution computes only its open filters plus the next conv's where it reads only the open channels
    (both: a dense, ungrouped ``nn.Conv2d`` with only channelwise operations before the gate).
    """
    from .._plugins import get_plugin
    from ..layers.skip import can_slice

    plugin = get_plugin(model.plugin_name)
    out = {}
    for site in model.gate_sites:
        if not site.next_conv:
            out[site.name] = per_module[site.conv]
            continue
        inner = model.backbone.get_submodule(site.conv)
        after = model.backbone.get_submodule(site.next_conv)
        sliced = per_module[site.conv] if plugin.channelwise_after_conv(model.backbone, site) and can_slice(inner) \
            else 0
        out[site.name] = sliced + (per_module[site.next_conv] if type(after) is nn.Conv2d and can_slice(after) else 0)
    return out


def _skippable_branch_macs(model: nn.Module, per_module: dict[str, int], gateable: dict[str, int],
                           block_inputs: dict[str, torch.Tensor]) -> dict[str, int]:
    """Per site: MACs of its block's branch besides what its gates save one by one (``gateable``), which skip
    execution saves when all of the site's gates close.

    0 for sites whose plugin cannot give such a block's output without its branch (skip execution runs those
    branches): ``shortcut_only`` for sites on the last conv, ``inner_closed_output`` for inner sites.
    """
    from .._plugins import get_plugin

    plugin = get_plugin(model.plugin_name)
    out = {}
    for site in model.gate_sites:
        hook = 'inner_closed_output' if site.next_conv else 'shortcut_only'
        if not plugin.overrides(hook):
            out[site.name] = 0
            continue
        block = model.backbone.get_submodule(site.name)
        counter = FlopCounterMode(display=False)
        with counter:
            output = getattr(plugin, hook)(block, block_inputs[site.name])
        if output is None:
            out[site.name] = 0
            continue
        rest = per_module[site.name] - int(counter.get_total_flops()) // 2 - gateable[site.name]
        out[site.name] = max(rest, 0)
    return out


def _effective_gates(model: nn.Module, gates: torch.Tensor) -> torch.Tensor:
    """N x num_filters gates that act on the filters, from N x gate_size gates or effective ones already."""
    filters = getattr(model, 'num_filters', getattr(model, 'num_filter_gates', model.gate_size))
    if gates.ndim == 2 and gates.shape[1] == model.gate_size:
        return model.effective_gates(gates) if filters != model.gate_size else gates
    if gates.ndim == 2 and gates.shape[1] == filters:
        return gates
    raise ValueError(f'gates must be N x {model.gate_size} (the gate vector) or N x {filters} (effective filter '
                     f'gates), got shape {tuple(gates.shape)}.')


@torch.no_grad()
def gaternet_macs(model: nn.Module, input_size: tuple[int, ...] | None = None,
                  gates: torch.Tensor | None = None,
                  branch_closed: Mapping[str, float] | None = None) -> dict[str, Any]:
    """MACs per image of a GaterNet's backbone and gater, and of the backbone given ``gates``.

    Both gate placements are counted as skip execution runs them (see the module docstring).

    Args:
        model: A :class:`~gaternet_zoo.GaterNet`.
        input_size: ``(C, H, W)``; defaults to ``model.pretrained_cfg['input_size']``.
        gates: Optional gates for the "used" backbone MACs: N x gate_size binary gates of N samples (a model's
            branch gates applied to their sites' filter gates), or N x ``num_filters`` rows of effective
            gates or open rates (e.g. ``GateStatistics.effective_firing_rate``: per filter, the fraction of samples
            for which it acted). A row of ``firing_rate`` (gate_size wide) is right only without branch gates.
        branch_closed: Per site, the fraction of samples whose branch did not run (its effective gates all
            closed). Taken from ``gates`` when not given, which is right for per-sample binary gates; pass it with
            rates (``GateStatistics.per_site_closed_fraction()``), whose rows cannot tell.

    Returns:
        ``dict(backbone=, gater=, total=, backbone_used=, gated_conv_macs={site: macs},
        skippable_branch_macs={site: macs}, next_conv_macs={site: macs}, gateable_macs={site: macs})``;
        ``backbone_used`` is ``None`` without gates. ``gated_conv_macs`` are the MACs of each site's gated conv,
        ``next_conv_macs`` those of an inner site's next conv (0 for a site on the last conv), ``gateable_macs``
        what all of a site's gates closed save one by one (each gate an equal share of it), and
        ``skippable_branch_macs`` what skip execution saves besides when they are all closed.
    """
    input_size = tuple(input_size or model.pretrained_cfg.get('input_size', (3, 32, 32)))
    was_training = model.training
    model.eval()
    block_inputs: dict[str, torch.Tensor] = {}
    hooks = [model.backbone.get_submodule(s.name).register_forward_pre_hook(
        lambda _m, args, name=s.name: block_inputs.__setitem__(name, args[0])) for s in model.gate_sites]
    try:
        x = torch.zeros(1, *input_size, device=next(model.parameters()).device)
        backbone, per_module = count_macs(model.backbone, x)
        gater, _ = count_macs(model.gater, x)
        missing = [c for s in model.gate_sites for c in (s.conv, s.next_conv) if c and c not in per_module]
        if missing:
            # A count of 0 would silently shrink the "used" MACs: a site's conv must be a conv that runs.
            raise ValueError(f'Gated conv(s) {missing} of the gate sites did not run in the MAC count of the '
                             'backbone; GateSite.conv must name the conv whose filters the site gates.')
        gateable = _gateable_macs(model, per_module)
        # Still in eval mode: the shortcuts' norms must not update their statistics.
        branch_macs = _skippable_branch_macs(model, per_module, gateable, block_inputs)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    site_macs = {s.name: per_module[s.conv] for s in model.gate_sites}
    next_macs = {s.name: per_module[s.next_conv] if s.next_conv else 0 for s in model.gate_sites}
    used = None
    if gates is not None:
        gates = _effective_gates(model, gates.float())
        saved = 0.0
        for site in model.gate_sites:
            site_gates = gates[:, site.offset:site.offset + site.num_channels]
            kept = (getattr(model, 'pruned_filters', None) or {}).get(site.name)
            if kept is not None:  # a pruned site: its conv computes only the kept filters, whose gates still act
                site_gates = site_gates[:, torch.tensor(kept, dtype=torch.long, device=gates.device)]
            closed = 1.0 - site_gates.mean().item()
            saved += closed * gateable[site.name]
            if branch_closed is not None:
                all_closed = float(branch_closed[site.name])
            else:
                all_closed = (site_gates == 0).all(1).float().mean().item()
            saved += all_closed * branch_macs[site.name]
        used = int(round(backbone - saved))
    return dict(backbone=backbone, gater=gater, total=backbone + gater, backbone_used=used,
                gated_conv_macs=site_macs, skippable_branch_macs=branch_macs, next_conv_macs=next_macs,
                gateable_macs=gateable)
