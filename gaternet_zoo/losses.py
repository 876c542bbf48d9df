"""Gate losses called by training code."""
from __future__ import annotations

import torch

__all__ = ['gate_l1_loss']


def gate_l1_loss(gates: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """The paper's sparsity term ``lambda * ||G(x)||_1 / c``, averaged over the batch.

    Args:
        gates: B x c gates (what ``GaterNet.forward_with_gates`` returns).
        weight: ``lambda``; 0 disables the term (the default in the recipes, since the paper's value is unknown).

    Returns:
        A scalar tensor that carries the straight-through gradient back to the gater.
    """
    if gates.ndim != 2:
        raise ValueError(f'gates must be B x gate_size, got shape {tuple(gates.shape)}.')
    return weight * gates.abs().sum(dim=1).div(gates.shape[1]).mean()
