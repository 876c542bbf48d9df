"""Which parametrised cases run in ``make test-fast`` (issue 25: the tier a contributor runs after every change).

``make test`` runs every case. The fast tier keeps, per family of cases, the ones that exercise a distinct code
path (a basic block and a bottleneck, one model per gating plugin); the other cases of the family repeat those
paths on larger or deeper models and are marked ``slow``. ``make test-fast`` was measured with ``--durations`` to
pick them.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

import pytest


def slow_except(values: Iterable[Any], fast: Collection[Any], key: Callable[[Any], Any] = lambda v: v,
                unpack: bool = False) -> list[Any]:
    """``values`` for ``parametrize``/fixture ``params``, every one whose ``key`` is not in ``fast`` marked ``slow``.

    ``unpack=True`` for a ``parametrize`` over several argument names, whose values are tuples of arguments.

    Raises:
        ValueError: A name in ``fast`` is not among the values (a renamed case would otherwise leave the fast tier
            silently without it).
    """
    values = list(values)
    missing = set(fast) - {key(v) for v in values}
    if missing:
        raise ValueError(f'fast-tier cases {sorted(map(str, missing))} are not among the parametrised values; '
                         'update the fast set of this test.')
    return [v if key(v) in fast else pytest.param(*(v if unpack else (v,)), marks=pytest.mark.slow) for v in values]


def first_per_group(values: Iterable[Any], group: Callable[[Any], Any]) -> list[Any]:
    """The first value of each ``group`` (e.g. the first representative model of each gating plugin)."""
    seen: dict[Any, Any] = {}
    for v in values:
        seen.setdefault(group(v), v)
    return list(seen.values())
