"""Training options of GaterNets beyond the paper; each one's neutral value is the paper's behaviour.

* :func:`set_gate_init_bias`: the gater's last FC bias starts at a value (positive: gates start open) instead of 0.
* :class:`GateWarmup`: linear ramps, per optimizer step, of Improved SemHash's discrete-gate probability and of
  its training noise, from a start value to the model's own value (tensor2tensor's semhash ramps its discrete
  probability the same way).
* :func:`gater_param_groups`: timm's weight-decay groups, with the gater's parameters in groups of their own
  (``lr_scale``, which timm's schedulers apply, and their own weight decay).
* :class:`GateObjective`: the gate term of the loss: the paper's L1 (``gate_l1``) plus an optional sparsity budget
  (``gate_budget``: a target open rate per gated block, or a share of the backbone's MACs), and the share of the
  backbone's MACs the gates use, logged every epoch; its weight may ramp in from 0 (``warmup_steps``), so that a
  warm-started GaterNet's gates are not pushed shut before the gater has learnt which filters matter.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses import MacBudgetLoss, gate_l1_loss, gate_target_rate_loss
from ..utils.gate_stats import has_gates
from ._run_dir import RecipeError

__all__ = ['GATE_BUDGETS', 'GateObjective', 'GateWarmup', 'gate_settings', 'gater_param_groups', 'param_group_lr',
           'set_gate_init_bias']


def _binarizer(model: nn.Module, option: str) -> nn.Module:
    if not has_gates(model):
        raise RecipeError(f'{option} applies to GaterNets only; {type(model).__name__} has no gates. Unset it.')
    return model.gater.binarizer


@torch.no_grad()
def set_gate_init_bias(model: nn.Module, bias: float) -> None:
    """Set the bias of the gater's last FC (one logit per gate) to ``bias``.

    With a bias of ``b`` every gate logit starts near ``b``: ``b = 3`` opens almost every gate at the start (the
    binarised gate is ``1.2 * sigmoid(logit) - 0.1 > 0.5``), where the released code starts from 0.
    """
    _binarizer(model, 'gate_init_bias')
    model.gater.fc2.bias.fill_(float(bias))


def _ramp(start: float | None, end: float, steps: int, step: int) -> float:
    if start is None or steps <= 0 or step >= steps:
        return end
    return start + (end - start) * step / steps


@dataclass(frozen=True)
class GateWarmup:
    """Per-step values of the binarizer's discrete-gate probability and noise std during a warm-up.

    Attributes:
        discrete_prob: The model's own discrete-gate probability (reached at the end of the warm-up).
        discrete_prob_start: Value at step 0, ``None`` for no warm-up.
        discrete_prob_steps: Optimizer steps of the ramp.
        noise_std: The model's own noise std.
        noise_std_start: Value at step 0, ``None`` for no warm-up.
        noise_steps: Optimizer steps of the ramp.
    """

    discrete_prob: float
    discrete_prob_start: float | None = None
    discrete_prob_steps: int = 0
    noise_std: float = 1.0
    noise_std_start: float | None = None
    noise_steps: int = 0

    @classmethod
    def for_model(cls, model: nn.Module, *, discrete_prob_start: float | None = None, discrete_prob_steps: int = 0,
                  noise_std_start: float | None = None, noise_steps: int = 0) -> GateWarmup | None:
        """The warm-up of ``model``'s binarizer, or ``None`` when neither ramp is asked for (the paper)."""
        ramps = (discrete_prob_start is not None and discrete_prob_steps > 0,
                 noise_std_start is not None and noise_steps > 0)
        if not any(ramps):
            return None
        binarizer = _binarizer(model, 'gate_discrete_prob_start' if ramps[0] else 'gate_noise_std_start')
        return cls(float(binarizer.discrete_prob), discrete_prob_start, discrete_prob_steps,
                   float(binarizer.noise_std), noise_std_start, noise_steps)

    def values(self, step: int) -> dict[str, float]:
        """``{"gate_discrete_prob": p, "gate_noise_std": s}`` at optimizer step ``step``."""
        return {'gate_discrete_prob': _ramp(self.discrete_prob_start, self.discrete_prob, self.discrete_prob_steps,
                                            step),
                'gate_noise_std': _ramp(self.noise_std_start, self.noise_std, self.noise_steps, step)}

    def apply(self, model: nn.Module, step: int) -> dict[str, float]:
        """Set ``model``'s binarizer to the values of ``step`` and return them."""
        values = self.values(step)
        binarizer = model.gater.binarizer
        binarizer.discrete_prob = values['gate_discrete_prob']
        binarizer.noise_std = values['gate_noise_std']
        return values


def gater_param_groups(model: nn.Module, weight_decay: float, *, gater_lr_scale: float = 1.0,
                       gater_weight_decay: float | None = None,
                       no_weight_decay_list: Collection[str] = ()) -> list[dict[str, Any]]:
    """timm's ``param_groups_weight_decay`` (no decay on norms and biases), with the gater in groups of its own.

    Args:
        model: Any zoo model; a plain backbone gets timm's two groups unchanged.
        weight_decay: Weight decay of the weights (not of norms or biases).
        gater_lr_scale: Learning-rate factor of the gater's groups (timm's schedulers apply ``lr_scale``).
        gater_weight_decay: Weight decay of the gater's weights; ``None``: ``weight_decay``.
        no_weight_decay_list: Parameter names without decay besides the 1-D ones (``model.no_weight_decay()``).

    Returns:
        Optimizer param groups, weights before norms and biases; with a gater option set, the gater's are groups
        of their own marked ``"name": "gater"``.
    """
    from timm.optim import param_groups_weight_decay

    # Weights first, then norms and biases: the group order of the recipe's checkpoints since its first version.
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_weight_decay_list)[::-1]
    if gater_lr_scale == 1.0 and gater_weight_decay is None:
        return groups  # The paper: one learning rate and weight decay for all.
    if not has_gates(model):
        raise RecipeError(f'gater_lr_scale and gater_weight_decay apply to GaterNets only; '
                          f'{type(model).__name__} has no gater. Unset them.')
    gater = {id(p) for p in model.gater.parameters()}
    out = []
    for group in groups:
        rest = [p for p in group['params'] if id(p) not in gater]
        own = [p for p in group['params'] if id(p) in gater]
        if rest:
            out.append({**group, 'params': rest})
        if own:
            decay = group['weight_decay'] if gater_weight_decay is None or not group['weight_decay'] \
                else gater_weight_decay
            out.append({'params': own, 'weight_decay': decay, 'lr_scale': gater_lr_scale, 'name': 'gater'})
    return out


def param_group_lr(optimizer: torch.optim.Optimizer, name: str | None = None) -> float | None:
    """Learning rate of the first param group named ``name`` (``"gater"``), or of the first unnamed group."""
    return next((g['lr'] for g in optimizer.param_groups if g.get('name') == name), None)


def gate_settings(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The gate options in force now, for a metrics row: ``gate_discrete_prob``, ``gate_noise_std``, ``gater_lr``.

    Empty for plain backbones.
    """
    if not has_gates(model):
        return {}
    binarizer = model.gater.binarizer
    return {'gate_discrete_prob': float(binarizer.discrete_prob), 'gate_noise_std': float(binarizer.noise_std),
            'gater_lr': param_group_lr(optimizer, 'gater') or param_group_lr(optimizer)}


#: Values of the ``gate_budget`` setting.
GATE_BUDGETS = ('none', 'rate', 'macs', 'model_macs')


class GateObjective:
    """The gate term of a GaterNet's training loss, and the MAC share its gates use.

    Args:
        model: The GaterNet being trained.
        l1: ``lambda`` of the paper's L1 term (0: off).
        budget: ``'none'``; ``'rate'``: :func:`~gaternet_zoo.losses.gate_target_rate_loss` per gated block
            (ConvNet-AIG style); ``'macs'``: :class:`~gaternet_zoo.losses.MacBudgetLoss` on the backbone's MACs
            (DGNet style); ``'model_macs'``: the same with the gater's MACs counted in full
            (``include_gater=True``), so the target is the whole model's cost as a share of the plain backbone's.
        target: The budget's target fraction (open gates, or used share of the dense backbone MACs).
        weight: Factor of the budget term.
        warmup_steps: Optimizer steps over which the whole gate term ramps linearly from 0 to full weight
            (:meth:`scale`); 0: full weight from step 0 (the paper).
    """

    def __init__(self, model: nn.Module, l1: float = 0.0, budget: str = 'none', target: float = 0.5,
                 weight: float = 5.0, warmup_steps: int = 0) -> None:
        if budget not in GATE_BUDGETS:
            raise RecipeError(f'gate_budget must be one of {", ".join(GATE_BUDGETS)}, got {budget!r}')
        if (l1 or budget != 'none') and not has_gates(model):
            raise RecipeError(f'gate_l1 and gate_budget apply to GaterNets only; {type(model).__name__} has no '
                              'gates. Unset them.')
        self.l1, self.budget, self.target, self.weight = float(l1), budget, float(target), float(weight)
        if warmup_steps < 0:
            raise RecipeError(f'the gate term\'s warm-up must be >= 0 steps, got {warmup_steps}')
        self.warmup_steps = int(warmup_steps)
        self.sites = tuple(model.gate_sites) if has_gates(model) else ()
        # The MAC account is measured once (one forward pass under a FLOP counter); the 'macs' budget reuses it.
        self.macs = MacBudgetLoss(model, target, weight) if has_gates(model) else None
        self.model_macs = None
        if budget == 'model_macs':
            try:
                self.model_macs = MacBudgetLoss(model, target, weight, include_gater=True)
            except ValueError as error:
                raise RecipeError(f'gate_budget_target: {error}') from None

    def epoch_fields(self, metrics: dict[str, Any], split: str = '') -> dict[str, float]:
        """``{split}macs_used_fraction`` of an evaluation's gates, for the metrics row (empty without gates)."""
        # With branch gates, what counts is the share of each block's filters that acted (branch gate open too).
        per_block = metrics.get('gate_effective_open_fraction_per_block') or metrics.get('gate_open_fraction_per_block')
        if self.macs is None or per_block is None:
            return {}
        return {f'{split}macs_used_fraction': self.macs_used_fraction(per_block,
                                                                       metrics.get('gate_closed_fraction_per_block'))}

    @property
    def active(self) -> bool:
        """Whether the loss has a gate term at all (with none, the loss is the cross-entropy alone)."""
        return self.l1 > 0 or self.budget != 'none'

    def scale(self, step: int) -> float:
        """Factor of the gate term at optimizer step ``step``: ``step / warmup_steps`` during the warm-up, then 1."""
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return 1.0
        return max(step, 0) / self.warmup_steps

    def __call__(self, gates: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """The gate term for a batch of training gates (B x gate_size) at optimizer step ``step``.

        ``step=None`` gives the full-weight term (no warm-up).
        """
        factor = 1.0 if step is None else self.scale(step)
        return self._term(gates) * factor if factor != 1.0 else self._term(gates)

    def _term(self, gates: torch.Tensor) -> torch.Tensor:
        gates = gates.float()
        term = gate_l1_loss(gates, self.l1) if self.l1 > 0 else gates.new_zeros(())
        if self.budget == 'rate':
            term = term + gate_target_rate_loss(gates, self.target, self.sites, self.weight)
        elif self.budget == 'macs':
            term = term + self.macs(gates)
        elif self.budget == 'model_macs':
            term = term + self.model_macs(gates)
        return term

    def macs_used_fraction(self, per_site_open_fraction: dict[str, float],
                           per_site_closed_fraction: dict[str, float] | None = None) -> float | None:
        """Share of the dense backbone MACs used given an evaluation's gates.

        Args:
            per_site_open_fraction: Each gated block's mean open fraction; with branch gates, of its filters that
                acted (their branch gate open too: ``GateStatistics.per_site_effective_open_fraction``).
            per_site_closed_fraction: Each gated block's fraction of samples with all its gates closed, or its
                branch gate closed (whose branch skip execution does not run); ``None``: counted as 0.
        """
        if self.macs is None:
            return None
        rate = torch.zeros(sum(s.num_channels for s in self.sites))
        for site in self.sites:
            rate[site.offset:site.offset + site.num_channels] = per_site_open_fraction[site.name]
        closed = [(per_site_closed_fraction or {}).get(s.name, 0.0) for s in self.sites]
        return self.macs.used_fraction_from_rates(rate, closed)
