"""Measurement helpers: MACs, parameter counts, gate statistics."""
from .gate_stats import GateStatistics, effective_gates, own_filter_gates
from .macs import count_macs, count_params, gaternet_macs

__all__ = ['GateStatistics', 'count_macs', 'gaternet_macs', 'count_params', 'effective_gates', 'own_filter_gates']
