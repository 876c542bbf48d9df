"""The timer the benchmarks share: the median wall time of one call, cycling over a fixed set of inputs."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def median_call_seconds(call: Callable[[Any], object], batches: Sequence[Any], seconds: float,
                        min_calls: int = 10) -> float:
    """Median seconds per ``call(batch)``, cycling over ``batches`` for about ``seconds`` and ``min_calls`` at least.

    Cycling over several inputs makes batch-1 figures of input-dependent models average over their gates.
    """
    times: list[float] = []
    i, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_calls:
        batch = batches[i % len(batches)]
        t0 = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - t0)
        i += 1
    return statistics.median(times)
