"""Gate losses called by training code: the paper's L1 term and two sparsity objectives beyond it.

* :func:`gate_l1_loss`: the paper's ``lambda * ||G(x)||_1 / c``; it pushes every gate towards closed, with no
  notion of how much closing is enough.
* :func:`gate_target_rate_loss`: a target open rate per gate site, ConvNet-AIG style (Veit & Belongie, ECCV 2018):
  ``(mean open fraction of the site over the batch - target)^2``, averaged over the sites, so that every block
  keeps about ``target`` of its filters open and none is starved or left dense.
* :class:`MacBudgetLoss`: a budget on the backbone's compute, DGNet style (Li et al., ICCV 2021):
  ``(backbone MACs used given the gates / dense backbone MACs - target)^2`` over the batch mean. A closed gate
  saves the one output filter of the gated conv it closes, and a block whose gates are all closed saves the rest
  of its branch too (skip execution does not run it); a closed branch gate saves its whole branch, every conv of
  it; with inner gates (``gate_placement="inner"``) a closed gate saves a filter of the inner conv and an input
  channel of the next conv: the same analytic count as :func:`gaternet_zoo.utils.gaternet_macs` reports, so the
  budget trained for is the figure a model card shows.

Each loss is a scalar that carries the straight-through gradient of the binarised gates back to the gater.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .utils.gate_stats import effective_gates, own_filter_gates
from .utils.macs import gaternet_macs

__all__ = ['gate_l1_loss', 'gate_target_rate_loss', 'MacBudgetLoss']


def _check_gates(gates: torch.Tensor) -> None:
    if gates.ndim != 2:
        raise ValueError(f'gates must be B x gate_size, got shape {tuple(gates.shape)}.')


def _check_target(target: float) -> None:
    if not 0.0 <= float(target) <= 1.0:
        raise ValueError(f'target must be a fraction in [0, 1], got {target}.')


def gate_l1_loss(gates: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """The paper's sparsity term ``lambda * ||G(x)||_1 / c``, averaged over the batch.

    Args:
        gates: B x c gates (what ``GaterNet.forward_with_gates`` returns).
        weight: ``lambda``; 0 disables the term (the default in the recipes, since the paper's value is unknown).

    Returns:
        A scalar tensor that carries the straight-through gradient back to the gater.
    """
    _check_gates(gates)
    return weight * gates.abs().sum(dim=1).div(gates.shape[1]).mean()


def gate_target_rate_loss(
        gates: torch.Tensor,
        target: float,
        gate_sites: Sequence[Any] | None = None,
        weight: float = 1.0,
) -> torch.Tensor:
    """Squared distance of each gate site's open rate (over the batch) to ``target``, averaged over the sites.

    Args:
        gates: B x c gates.
        target: Wanted fraction of open gates in every site, in [0, 1].
        gate_sites: The model's ``gate_sites`` (``offset``, ``num_channels``); ``None`` treats all gates as one site.
            Where a site has a branch gate (``branch_offset``), its rate is that of its filters' gates times the
            branch gate (:func:`~gaternet_zoo.utils.gate_stats.effective_gates`): the filters that act.
        weight: Factor of the loss.

    Returns:
        A scalar tensor.
    """
    _check_gates(gates)
    _check_target(target)
    gates = gates.float()
    if not gate_sites:
        return weight * (gates.mean() - target).pow(2)
    gates = effective_gates(gates, gate_sites)
    rates = torch.stack([gates[:, s.offset:s.offset + s.num_channels].mean() for s in gate_sites])
    return weight * (rates - target).pow(2).mean()


class MacBudgetLoss(nn.Module):
    """Keeps the backbone MACs used given the gates near a fraction ``target`` of the dense backbone's MACs.

    The MAC counts are measured once, at construction, with :func:`gaternet_zoo.utils.gaternet_macs`: gate ``j``
    of site ``s`` costs ``macs(s's gated conv) / channels(s)`` (with ``gate_placement="inner"``: ``macs(inner conv)
    / its filters + macs(next conv) / its input channels``, its ``gateable_macs`` share), and a site whose gates
    are all closed also saves
    the rest of its block's branch (``skippable_branch_macs``), which enters the loss as that cost times
    ``prod_j (1 - gate_j)`` over the site's gates: exact for binary gates, and differentiable through the
    straight-through gates. The module has no parameters and no ``state_dict`` entries.

    With branch gates (``GaterNet(branch_gates=True)``), a site's saving with branch gate ``b`` is
    ``(1 - b) * whole_branch + b * (its saving by the filter gates, as above)``, where ``whole_branch`` is every
    conv of the branch (the gated conv and the rest): exact for binary gates, what skip execution does not run,
    and differentiable in ``b`` with the full branch's weight. A model built with ``filter_gates=False`` has no
    filter gates (they count as open): a site then saves ``(1 - b) * whole_branch``.

    With ``include_gater=True`` the used share counts the whole model, ``(gater + backbone MACs used) / dense
    backbone MACs``: the gater is paid in full on every input, so a target of 0.75 asks for a GaterNet that costs
    three quarters of its plain backbone, the real cost skip execution runs.

    Args:
        model: The :class:`~gaternet_zoo.GaterNet` whose gates are budgeted.
        target: Wanted share of the dense backbone MACs, in [0, 1] (e.g. 0.5).
        weight: Factor of the loss.
        input_size: ``(C, H, W)`` the MACs are counted at; defaults to the model's ``pretrained_cfg``.
        include_gater: Count the gater's MACs in the used share (see above).

    Raises:
        ValueError: ``include_gater`` and a target the gater alone already spends (no gate setting reaches it).
    """

    def __init__(self, model: nn.Module, target: float, weight: float = 1.0,
                 input_size: tuple[int, ...] | None = None, include_gater: bool = False) -> None:
        super().__init__()
        _check_target(target)
        macs = gaternet_macs(model, input_size)
        #: The gater's MACs as a share of the dense backbone's, added to every used share (0 without include_gater).
        self.gater_share = float(macs['gater']) / float(macs['backbone']) if include_gater else 0.0
        if include_gater and target <= self.gater_share:
            raise ValueError(
                f'a MAC budget of {target} of the backbone, gater included, cannot be met: the gater alone costs '
                f'{self.gater_share:.3f} of the backbone. Choose a larger target, or a cheaper gater '
                '(gater="cifar_resnet8", gater_input_size=16).')
        self.gate_size = int(model.gate_size)
        self._sites = tuple(model.gate_sites)
        #: Gated filters (the width of the effective gates), whether or not they have gates of their own.
        self.num_filters = sum(s.num_channels for s in self._sites)
        cost = torch.zeros(self.num_filters, dtype=torch.float64)
        for site in model.gate_sites:
            cost[site.offset:site.offset + site.num_channels] = macs['gateable_macs'][site.name] / site.num_channels
        self.target = float(target)
        self.weight = float(weight)
        self.dense_macs = int(macs['backbone'])
        branch = [macs['skippable_branch_macs'][s.name] for s in model.gate_sites]
        self.gateable_macs = float(cost.sum()) + float(sum(branch))
        # Not registered buffers: the budget is recomputed from the model, never loaded from a checkpoint.
        self._cost = (cost / self.dense_macs).float()
        # Per site: (offset, width, share of the dense MACs its skipped branch saves besides the gated conv (0 where
        # it cannot be skipped), index of its branch gate or None, share of its whole branch).
        self._branches = [
            (s.offset, s.num_channels, b / self.dense_macs, getattr(s, 'branch_offset', None),
             (macs['gateable_macs'][s.name] + b) / self.dense_macs) for s, b in zip(model.gate_sites, branch)]

    def used_fraction(self, gates: torch.Tensor) -> torch.Tensor:
        """Per-sample share of the dense backbone MACs used given ``gates`` (B x gate_size) -> (B,), plus the gater's
        share with ``include_gater``."""
        _check_gates(gates)
        if gates.shape[1] != self.gate_size:
            raise ValueError(f'gates must be B x {self.gate_size} (the model\'s gate vector), got shape '
                             f'{tuple(gates.shape)}.')
        gates = gates.float()
        closed = 1.0 - own_filter_gates(gates, self._sites)  # all 0 for filters without gates of their own
        cost = self._cost.to(gates.device)
        saved = closed @ cost
        for offset, width, rest, branch_gate, whole in self._branches:
            site_closed = closed[:, offset:offset + width]
            by_filters = site_closed.prod(1) * rest if rest else 0.0
            if branch_gate is None:
                saved = saved + by_filters
                continue
            # (1 - b) * whole + b * (filter saving); the linear filter saving is already in `saved`.
            b = gates[:, branch_gate]
            linear = site_closed @ cost[offset:offset + width]
            saved = saved + (1.0 - b) * (whole - linear) + b * by_filters
        return 1.0 + self.gater_share - saved

    def used_fraction_from_rates(self, open_rate: torch.Tensor, branch_closed: Sequence[float]) -> float:
        """Mean share of the dense backbone MACs used, from statistics over a data set.

        Args:
            open_rate: Per filter, the fraction of samples for which it acted: its gate was open (a filter without
                one: always), and so was its site's branch gate (``GateStatistics.effective_firing_rate``;
                ``firing_rate`` without branch gates). A gate_size-long vector is cut to its filter gates.
            branch_closed: Per gate site, in the model's site order, the fraction of samples whose branch did
                not run: its gates all closed, or its branch gate closed (``per_site_closed_fraction``).
        """
        if open_rate.numel() < self.num_filters:
            raise ValueError(f'open_rate needs one rate per gated filter ({self.num_filters}), got '
                             f'{open_rate.numel()}: pass GateStatistics.effective_firing_rate.')
        saved = ((1.0 - open_rate.float().cpu()[:self.num_filters]) @ self._cost).item()
        if len(branch_closed) != len(self._branches):
            raise ValueError(f'branch_closed needs one fraction per gate site ({len(self._branches)}), '
                             f'got {len(branch_closed)}.')
        return 1.0 + self.gater_share - saved - sum(
            rest * float(c) for (_, _, rest, _, _), c in zip(self._branches, branch_closed))

    def forward(self, gates: torch.Tensor) -> torch.Tensor:
        """``weight * (mean used fraction - target)^2``."""
        return self.weight * (self.used_fraction(gates).mean() - self.target).pow(2)

    def extra_repr(self) -> str:
        return (f'target={self.target}, weight={self.weight}, dense_macs={self.dense_macs}, '
                f'gateable={self.gateable_macs / self.dense_macs:.3f}, gater_share={self.gater_share:.3f}')
