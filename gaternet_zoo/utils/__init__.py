"""Measurement helpers: MACs, parameter counts, gate statistics."""
from .gate_stats import GateStatistics
from .macs import count_macs, gaternet_macs, count_params

__all__ = ['GateStatistics', 'count_macs', 'gaternet_macs', 'count_params']
