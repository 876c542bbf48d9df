"""Multiply-accumulate counts, measured with PyTorch's own ``FlopCounterMode`` (MACs = FLOPs / 2).

GaterNet multiplies feature maps by gates, so a closed gate saves nothing at run time (as in the released code).
:func:`gaternet_macs` also reports the backbone MACs "used" given the gates: the dense count minus, for every
closed gate, the MACs of the one output filter of the gated conv that the gate discards. That is the compute a
sparse implementation could skip at the gated convs; it is an analytic figure, not a measured speed-up.
"""
from __future__ import annotations

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


@torch.no_grad()
def gaternet_macs(model: nn.Module, input_size: tuple[int, ...] | None = None,
                  gates: torch.Tensor | None = None) -> dict[str, Any]:
    """MACs per image of a GaterNet's backbone and gater, and of the backbone given ``gates``.

    Args:
        model: A :class:`~gaternet_zoo.GaterNet`.
        input_size: ``(C, H, W)``; defaults to ``model.pretrained_cfg['input_size']``.
        gates: Optional N x gate_size gates (e.g. over an eval set) for the "used" backbone MACs.

    Returns:
        ``dict(backbone=, gater=, total=, backbone_used=, gated_conv_macs={site: macs})``; ``backbone_used`` is
        ``None`` without gates.
    """
    input_size = tuple(input_size or model.pretrained_cfg.get('input_size', (3, 32, 32)))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_size, device=next(model.parameters()).device)
        backbone, per_module = count_macs(model.backbone, x)
        gater, _ = count_macs(model.gater, x)
    finally:
        model.train(was_training)
    missing = [s.conv for s in model.gate_sites if s.conv not in per_module]
    if missing:
        # A count of 0 would silently shrink the "used" MACs: a site's conv must be a conv that runs.
        raise ValueError(f'Gated conv(s) {missing} of the gate sites did not run in the MAC count of the backbone; '
                         'GateSite.conv must name the conv whose filters the site gates.')
    site_macs = {s.name: per_module[s.conv] for s in model.gate_sites}
    used = None
    if gates is not None:
        open_fraction = gates.float().mean(0)
        saved = 0.0
        for site in model.gate_sites:
            rate = open_fraction[site.offset:site.offset + site.num_channels]
            kept = (getattr(model, 'pruned_filters', None) or {}).get(site.name)
            if kept is not None:  # a pruned site: its conv computes only the kept filters, whose gates still act
                rate = rate[torch.tensor(kept, dtype=torch.long, device=rate.device)]
            closed = 1.0 - rate.mean().item()
            saved += closed * site_macs[site.name]
        used = int(round(backbone - saved))
    return dict(backbone=backbone, gater=gater, total=backbone + gater, backbone_used=used,
                gated_conv_macs=site_macs)
