"""Gate losses called by training code: the paper's L1 term and two sparsity objectives beyond it.

* :func:`gate_l1_loss`: the paper's ``lambda * ||G(x)||_1 / c``; it pushes every gate towards closed, with no
  notion of how much closing is enough.
* :func:`gate_target_rate_loss`: a target open rate per gate site, ConvNet-AIG style (Veit & Belongie, ECCV 2018):
  ``(mean open fraction of the site over the batch - target)^2``, averaged over the sites, so that every block
  keeps about ``target`` of its filters open and none is starved or left dense.
* :class:`MacBudgetLoss`: a budget on the backbone's compute, DGNet style (Li et al., ICCV 2021):
  ``(backbone MACs used given the gates / dense backbone MACs - target)^2`` over the batch mean. The MACs a gate
  saves are those of the one output filter of the gated conv it closes, the same analytic count as
  :func:`gaternet_zoo.utils.gaternet_macs` reports, so the budget trained for is the figure a model card shows.

Each loss is a scalar that carries the straight-through gradient of the binarised gates back to the gater.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

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
        weight: Factor of the loss.

    Returns:
        A scalar tensor.
    """
    _check_gates(gates)
    _check_target(target)
    gates = gates.float()
    if not gate_sites:
        return weight * (gates.mean() - target).pow(2)
    rates = torch.stack([gates[:, s.offset:s.offset + s.num_channels].mean() for s in gate_sites])
    return weight * (rates - target).pow(2).mean()


class MacBudgetLoss(nn.Module):
    """Keeps the backbone MACs used given the gates near a fraction ``target`` of the dense backbone's MACs.

    The MAC counts are measured once, at construction, with :func:`gaternet_zoo.utils.gaternet_macs`, and kept as
    a per-gate cost vector: gate ``j`` of site ``s`` costs ``macs(s's gated conv) / channels(s)``. The module has
    no parameters and no ``state_dict`` entries.

    Args:
        model: The :class:`~gaternet_zoo.GaterNet` whose gates are budgeted.
        target: Wanted share of the dense backbone MACs, in [0, 1] (e.g. 0.5).
        weight: Factor of the loss.
        input_size: ``(C, H, W)`` the MACs are counted at; defaults to the model's ``pretrained_cfg``.
    """

    def __init__(self, model: nn.Module, target: float, weight: float = 1.0,
                 input_size: tuple[int, ...] | None = None) -> None:
        super().__init__()
        _check_target(target)
        macs = gaternet_macs(model, input_size)
        cost = torch.zeros(model.gate_size, dtype=torch.float64)
        for site in model.gate_sites:
            cost[site.offset:site.offset + site.num_channels] = macs['gated_conv_macs'][site.name] / site.num_channels
        self.target = float(target)
        self.weight = float(weight)
        self.dense_macs = int(macs['backbone'])
        self.gateable_macs = float(cost.sum())
        # Not a registered buffer: the budget is recomputed from the model, never loaded from a checkpoint.
        self._cost = (cost / self.dense_macs).float()

    def used_fraction(self, gates: torch.Tensor) -> torch.Tensor:
        """Per-sample share of the dense backbone MACs used given ``gates`` (B x gate_size) -> (B,)."""
        _check_gates(gates)
        cost = self._cost.to(gates.device)
        closed = 1.0 - gates.float()
        return 1.0 - closed @ cost

    def forward(self, gates: torch.Tensor) -> torch.Tensor:
        """``weight * (mean used fraction - target)^2``."""
        return self.weight * (self.used_fraction(gates).mean() - self.target).pow(2)

    def extra_repr(self) -> str:
        return (f'target={self.target}, weight={self.weight}, dense_macs={self.dense_macs}, '
                f'gateable={self.gateable_macs / self.dense_macs:.3f}')
