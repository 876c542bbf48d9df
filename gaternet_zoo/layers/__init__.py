"""Building blocks of GaterNets: gate binarisation, gate slots and the gater network."""
from .gater import Gater
from .gates import DEFAULT_THRESHOLD, GateContext, GateSlot, ImprovedSemHash, step_ste

__all__ = ['DEFAULT_THRESHOLD', 'Gater', 'GateContext', 'GateSlot', 'ImprovedSemHash', 'step_ste']
