"""Gate statistics over a data set: open fractions, and which gates are always on, always off or input-dependent.

The paper's analysis (Sec. 5) classifies each gate by how it fires over the test set: never (always off), for
every image (always on), or for some images only (input-dependent). :class:`GateStatistics` accumulates what is
needed for that in one pass, batch by batch, with memory independent of the data set size.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ['GateStatistics', 'effective_gates', 'has_gates', 'own_filter_gates', 'site_gate_columns']


def has_gates(model: nn.Module) -> bool:
    """Whether ``model`` (or the model inside a DDP/compile wrapper) is a GaterNet-like model with gates.

    The one test of "is this model gated?" in the package (evaluation, training, the CLI and model cards use it).
    """
    base = getattr(model, 'module', model)
    base = getattr(base, '_orig_mod', base)
    return hasattr(base, 'forward_with_gates') and hasattr(base, 'gate_sites')


def _has_filter_gates(site: Any) -> bool:
    return getattr(site, 'filter_gates', True)


def site_gate_columns(site: Any) -> list[int]:
    """The columns of the gate vector that belong to ``site``: its filter gates, or its branch gate alone for a site
    without filter gates (``GaterNet(filter_gates=False)``). A branch gate beside filter gates is not among them."""
    if _has_filter_gates(site):
        return list(range(site.offset, site.offset + site.num_channels))
    return [site.branch_offset]


def own_filter_gates(gates: torch.Tensor, gate_sites: Sequence[Any]) -> torch.Tensor:
    """Each filter's own gate (B x filters, the sites' ``num_channels`` in order), branch gates not applied.

    Args:
        gates: B x gate_size gates, laid out as a GaterNet's.
        gate_sites: The model's ``gate_sites``.

    Returns:
        ``gates[:, :filters]`` where the sites have filter gates; ones (constant, no gradient) in the columns of a
        site without them (``filter_gates=False``), whose filters are on unless its branch gate is closed.
    """
    filters = sum(s.num_channels for s in gate_sites)
    if all(map(_has_filter_gates, gate_sites)):
        return gates[:, :filters]
    ones = gates.new_ones(gates.shape[0], 1)
    return torch.cat([gates[:, s.offset:s.offset + s.num_channels] if _has_filter_gates(s)
                      else ones.expand(-1, s.num_channels) for s in gate_sites], 1)


def effective_gates(gates: torch.Tensor, gate_sites: Sequence[Any]) -> torch.Tensor:
    """The gates that act on the filters (B x filters): each filter gate times its site's branch gate.

    Args:
        gates: B x gate_size gates, laid out as a GaterNet's (filter gates first, then the branch gates).
        gate_sites: The model's ``gate_sites``; a site's ``branch_offset`` (``None``: no branch gate) says where
            its branch gate is, and ``filter_gates=False`` that it has no filter gates (they count as ones).

    Returns:
        ``gates[:, :filter gates]`` with each site's slice multiplied by its branch gate; without branch gates,
        that slice itself; for a site without filter gates, its branch gate in every column of its filters.
        Differentiable in every gate.
    """
    out = own_filter_gates(gates, gate_sites)
    branch_sites = [s for s in gate_sites if getattr(s, 'branch_offset', None) is not None]
    if not branch_sites:
        return out
    ones = gates.new_ones(gates.shape[0], 1)
    factors = [gates[:, s.branch_offset:s.branch_offset + 1] if getattr(s, 'branch_offset', None) is not None
               else ones for s in gate_sites]
    return out * torch.cat([f.expand(-1, s.num_channels) for f, s in zip(factors, gate_sites)], 1)


@dataclass
class GateStatistics:
    """Running gate statistics.

    Args:
        gate_sites: The model's ``gate_sites`` (name, num_channels, offset, and ``branch_offset`` where a site has
            a branch gate) for per-block figures and the gate vector's layout.
        num_classes: When set, also accumulate the class x gate mean-activity matrix (needs labels).
    """

    gate_sites: tuple[Any, ...]
    num_classes: int | None = None
    count: int = 0
    fired: torch.Tensor | None = None
    class_sum: torch.Tensor | None = None
    class_count: torch.Tensor | None = None
    site_closed: torch.Tensor | None = None
    #: Per filter gate, samples for which it acted (open, and its site's branch gate open); only with branch gates.
    effective_fired: torch.Tensor | None = None
    _open_sum: float = field(default=0.0, repr=False)

    @property
    def num_filter_gates(self) -> int:
        """Filter gates: the first entries of the gate vector (none for a model built with ``filter_gates=False``)."""
        return sum(s.num_channels for s in self.gate_sites if _has_filter_gates(s))

    @property
    def num_filters(self) -> int:
        """Gated filters, with or without gates of their own: the width of :attr:`effective_firing_rate`."""
        return sum(s.num_channels for s in self.gate_sites)

    @property
    def branch_sites(self) -> tuple[Any, ...]:
        """The sites with a branch gate (``GateSite.branch_offset``); none unless the model has branch gates."""
        return tuple(s for s in self.gate_sites if getattr(s, 'branch_offset', None) is not None)

    @property
    def gate_size(self) -> int:
        """Width of the gate vector: the filter gates, then one branch gate per site in :attr:`branch_sites`."""
        return self.num_filter_gates + len(self.branch_sites)

    @torch.no_grad()
    def update(self, gates: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Add a batch of gates (B x gate_size; eval gates are binary) and optionally its labels."""
        if gates.ndim != 2 or gates.shape[1] != self.gate_size:
            raise ValueError(f'gates must be (B, {self.gate_size}), got {tuple(gates.shape)}.')
        gates = gates.detach().float().cpu()
        on = gates > 0.5
        if self.fired is None:
            self.fired = torch.zeros(self.gate_size, dtype=torch.long)
        self.fired += on.sum(0)
        # The filters that acted: own gate open (a site without filter gates: always) and branch gate open.
        acting = effective_gates(on.float(), self.gate_sites) > 0.5
        if self.branch_sites:
            if self.effective_fired is None:
                self.effective_fired = torch.zeros(self.num_filters, dtype=torch.long)
            self.effective_fired += acting.sum(0)
        if self.site_closed is None:
            self.site_closed = torch.zeros(len(self.gate_sites), dtype=torch.long)
        self.site_closed += torch.stack([~acting[:, s.offset:s.offset + s.num_channels].any(1)
                                         for s in self.gate_sites], 1).sum(0)
        self.count += gates.shape[0]
        self._open_sum += gates.sum().item()
        if self.num_classes is not None:
            if labels is None:
                raise ValueError('labels are needed for per-class statistics (num_classes was set).')
            labels = labels.detach().cpu().long()
            if self.class_sum is None:
                self.class_sum = torch.zeros(self.num_classes, self.gate_size)
                self.class_count = torch.zeros(self.num_classes)
            self.class_sum.index_add_(0, labels, gates)
            self.class_count += torch.bincount(labels, minlength=self.num_classes).float()

    def _require(self) -> torch.Tensor:
        if self.fired is None or self.count == 0:
            raise ValueError('No gates accumulated yet: call update() first.')
        return self.fired

    @property
    def firing_rate(self) -> torch.Tensor:
        """Per gate: fraction of samples for which it is open."""
        return self._require().float() / self.count

    @property
    def effective_firing_rate(self) -> torch.Tensor:
        """Per filter (``num_filters``): fraction of samples for which it acted, i.e. its gate was open (a filter
        without a gate of its own: always) and so was its site's branch gate. The filter part of
        :attr:`firing_rate` for a model without branch gates."""
        fired = self._require()
        if self.effective_fired is None:
            return fired[:self.num_filter_gates].float() / self.count
        return self.effective_fired.float() / self.count

    @property
    def mean_open_fraction(self) -> float:
        """Mean fraction of open gates per sample."""
        self._require()
        return self._open_sum / (self.count * self.gate_size)

    def per_site_open_fraction(self) -> dict[str, float]:
        """Mean open fraction of each gate site's (block's) own gates (:func:`site_gate_columns`): its filter gates,
        or, for a site without filter gates (``filter_gates=False``), its branch gate."""
        rate = self.firing_rate
        return {s.name: rate[site_gate_columns(s)].mean().item() for s in self.gate_sites}

    def per_site_closed_fraction(self) -> dict[str, float]:
        """Per gate site (block): fraction of samples whose gates there were all closed, or whose branch gate was
        (skip execution does not run that block's branch for them)."""
        self._require()
        return {s.name: self.site_closed[i].item() / self.count for i, s in enumerate(self.gate_sites)}

    def per_site_branch_open_fraction(self) -> dict[str, float]:
        """Per site with a branch gate: fraction of samples for which it was open (empty without branch gates)."""
        rate = self.firing_rate
        return {s.name: rate[s.branch_offset].item() for s in self.branch_sites}

    def per_site_effective_open_fraction(self) -> dict[str, float]:
        """Per gate site: mean fraction of its filters that acted (gate open, and its branch gate open); equal to
        :meth:`per_site_open_fraction` without branch gates."""
        rate = self.effective_firing_rate
        return {s.name: rate[s.offset:s.offset + s.num_channels].mean().item() for s in self.gate_sites}

    def counts(self) -> dict[str, int]:
        """Numbers of always-on, always-off and input-dependent gates."""
        fired = self._require()
        always_on = int((fired == self.count).sum())
        always_off = int((fired == 0).sum())
        return dict(always_on=always_on, always_off=always_off,
                    input_dependent=self.gate_size - always_on - always_off)

    def class_gate_matrix(self) -> torch.Tensor:
        """num_classes x gate_size mean gate activity per class (NaN for classes never seen)."""
        if self.class_sum is None:
            raise ValueError('Per-class statistics were not accumulated (pass num_classes and labels).')
        return self.class_sum / self.class_count.unsqueeze(1)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: samples, mean open fraction, counts, per-site open and all-closed fractions.

        With branch gates also ``branch_gates`` and ``filter_gates`` (their numbers; no filter gates for a model
        built with ``filter_gates=False``), ``per_site_branch_open_fraction`` and
        ``per_site_effective_open_fraction``; the counts and the mean cover every gate, branch gates included.
        """
        out = dict(samples=self.count, gate_size=self.gate_size, mean_open_fraction=self.mean_open_fraction,
                   **self.counts(), per_site_open_fraction=self.per_site_open_fraction(),
                   per_site_closed_fraction=self.per_site_closed_fraction())
        if self.branch_sites:
            out.update(branch_gates=len(self.branch_sites), filter_gates=self.num_filter_gates,
                       per_site_branch_open_fraction=self.per_site_branch_open_fraction(),
                       per_site_effective_open_fraction=self.per_site_effective_open_fraction())
        return out
