"""Pruned export: a GaterNet without the filters its gates never open.

Over a calibration set, a gate that is closed for every image marks a filter whose output the backbone always
multiplies by 0. :func:`prune_gaternet` removes such filters from the gated conv and from its norm, so they are
no longer computed; the gate slot scatters the kept channels back to their indices (zeros elsewhere) before the
residual addition. In evaluation the pruned model's logits equal the gated model's for every input on which those
gates stay closed, which holds on the calibration set by construction; on other inputs a pruned gate that would
have opened stays closed, which is what the pruned model's card states.

The pruned model is an ordinary :class:`~gaternet_zoo.GaterNet` whose ``pruned_filters`` argument records the kept
filters per site, so ``save_pretrained`` writes it in the Hub format and ``create_model("local-dir:...")`` rebuilds
its shapes before loading its weights strictly.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .layers.pruning import PruningError
from .utils.gate_stats import GateStatistics, has_gates

__all__ = ['PruningError', 'always_off_filters', 'check_round_to', 'prune_gaternet']


def always_off_filters(model: nn.Module, stats: GateStatistics) -> dict[str, list[int]]:
    """Per gate site, the filters whose gate never opened over the data ``stats`` accumulated.

    With branch gates, a filter whose gate opened only for samples whose branch gate was closed never acted either
    (:attr:`GateStatistics.effective_firing_rate`), and is removed too. Without filter gates
    (``filter_gates=False``) that leaves the filters of the branches whose gate never opened: every one of them.
    """
    fired = stats.firing_rate
    if fired.numel() != model.gate_size:
        raise ValueError(f'the gate statistics cover {fired.numel()} gates, the model has {model.gate_size}')
    fired = stats.effective_firing_rate
    return {s.name: [i for i in range(s.num_channels) if fired[s.offset + i] == 0] for s in model.gate_sites}


def refuse_inner_gates(model: nn.Module, what: str) -> None:
    """Raise :class:`PruningError` for a GaterNet whose gates sit on inner convs (``gate_placement="inner"``).

    Its closed filters are also input channels of the next conv, which the pruned and the static export would have
    to remove as well; neither does yet, so both refuse such a model rather than export a wrong one.
    """
    if getattr(model, 'gate_placement', 'last') == 'inner':
        raise PruningError(
            f'a GaterNet with gate_placement="inner" cannot be {what} yet: its closed filters are input channels of '
            'the next conv too, which the export does not remove. Use skip execution (set_execution("skip")), which '
            'computes neither, or a model with gate_placement="last".')


@torch.no_grad()
def check_round_to(round_to: int) -> int:
    """Check ``round_to`` (``--round-to``) before any calibration runs; returns it.

    Raises:
        ValueError: Not a positive number of filters.
    """
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f'round_to (--round-to) must be a positive number of filters (1 keeps exactly the filters '
                         f'that opened; 8 or 16 match CPU conv kernels), got {round_to!r}.')
    return round_to


def prune_gaternet(model: nn.Module, stats: GateStatistics, calibration: str = '', round_to: int = 1) -> nn.Module:
    """A copy of ``model`` without the filters whose gates were always closed over ``stats``' data.

    Args:
        model: A trained :class:`~gaternet_zoo.GaterNet` (left unchanged).
        stats: Its evaluation gate statistics over the calibration data (``GateStatistics.update`` on eval gates).
        calibration: Says which data that was (recorded in the pruned model's ``pretrained_cfg`` and card).
        round_to: Keep a multiple of this many filters per site (e.g. 8 or 16, the width CPU conv kernels are
            vectorised over), adding back always-closed filters in index order. Their gates still act, so the
            logits do not change; only the compute does.

    Returns:
        The pruned model, in eval mode, with ``pretrained_cfg['pruning']`` describing what was removed.

    Raises:
        PruningError: If the model's gating plugin cannot prune exactly (e.g. SE blocks), or the model's gates are
            inner ones (``gate_placement="inner"``), naming why.
    """
    if not has_gates(model):
        raise PruningError(f'{type(model).__name__} has no gates to prune by; pruning needs a GaterNet')
    if getattr(model, 'pruned_filters', None):
        raise PruningError('this model is already pruned; prune the original GaterNet again with other data instead')
    refuse_inner_gates(model, 'pruned')
    check_round_to(round_to)
    off = always_off_filters(model, stats)
    kept: dict[str, list[int]] = {}
    for site in model.gate_sites:
        closed = set(off[site.name])
        keep = [i for i in range(site.num_channels) if i not in closed]
        extra = -len(keep) % int(round_to)
        if extra:
            keep = sorted(keep + sorted(closed)[:extra])
        if len(keep) < site.num_channels:
            # A site whose every gate stayed closed keeps its first filter (gated, so its output is still 0): a
            # conv needs at least one filter, and the block's shortcut carries the signal.
            kept[site.name] = keep or [0]
    pruned = copy.deepcopy(model).eval()
    pruned.prune_filters(kept)  # records `pruned_filters` among the arguments save_pretrained writes
    removed = sum(s.num_channels - len(kept.get(s.name, range(s.num_channels))) for s in model.gate_sites)
    pruned.pretrained_cfg = dict(getattr(model, 'pretrained_cfg', None) or {}, pruning={
        'calibration': calibration, 'calibration_samples': stats.count, 'filters_removed': removed,
        'filters_gated': sum(s.num_channels for s in model.gate_sites), 'sites_pruned': len(kept),
        'round_to': int(round_to), 'rule': 'filters whose gate was closed for every calibration image'})
    return pruned
