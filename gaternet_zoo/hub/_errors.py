"""The errors of loading and saving in the Hub format; each message says what went wrong and what to do."""
from __future__ import annotations

__all__ = ['HubLoadError', 'ChecksumError', 'StateDictMismatchError', 'NonFiniteWeightsError', 'short_list']


class HubLoadError(OSError):
    """A repository, revision or file could not be obtained; the message says why and what to do."""


class ChecksumError(ValueError):
    """``model.safetensors`` does not have the sha256 its config or registry entry records."""


class StateDictMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model; nothing was loaded."""


class NonFiniteWeightsError(ValueError):
    """A checkpoint holds NaN or infinite values (a diverged training run); nothing was loaded."""


def short_list(keys: list[str], limit: int = 8) -> str:
    """``keys`` joined for a message, the first ``limit`` of them and how many more."""
    shown = ', '.join(keys[:limit])
    return shown + (f', ... (+{len(keys) - limit} more)' if len(keys) > limit else '')

