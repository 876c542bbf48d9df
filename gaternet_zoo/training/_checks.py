"""Checks that keep a training run from producing a silently wrong result, and the choice of precision."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ._run_dir import RecipeError

__all__ = ['DIVERGENCE_CAUSES', 'TrainingDivergedError', 'all_finite', 'check_finite_settings', 'cpu_supports_bf16',
           'divergence_message', 'grad_norm', 'resolve_mixed_precision']

DIVERGENCE_CAUSES = (
    'Likely causes: a learning rate too high for this model and batch size (lower --lr, lengthen --warmup-epochs or '
    'set --clip-grad), or bad data (non-finite pixel values or labels in this batch).')


class TrainingDivergedError(RecipeError):
    """The loss or the gradients became non-finite; the message names the step, the epoch and the likely cause."""


def check_finite_settings(config: Mapping[str, Any], keys: Iterable[str] | None = None) -> None:
    """Refuse NaN or infinite numbers among ``config[key]`` (``None`` is allowed: an unset option).

    ``argparse`` and YAML both accept ``nan`` and ``inf`` as floats; a NaN learning rate would otherwise train to
    NaN weights and exit 0.

    Args:
        config: Settings.
        keys: The numeric settings to check (``None``: all of ``config``).

    Raises:
        RecipeError: Naming the key and its value.
    """
    for key in config if keys is None else keys:
        value = config.get(key)
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            raise RecipeError(f'{key} must be a number, got {value!r}')
        if not math.isfinite(value):
            raise RecipeError(f'{key} must be a finite number, got {value}; set it to a real value')


def all_finite(module: nn.Module) -> bool:
    """Whether every parameter and floating-point buffer of ``module`` is finite."""
    tensors = [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def grad_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """Total 2-norm of the gradients (non-finite when any gradient is); reads the gradients, changes nothing."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, 'get_total_norm'):
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


def divergence_message(what: str, *, step: int, epoch: int, num_epochs: int, batch: int, lr: float,
                       inputs_finite: bool | None, last_checkpoint: str | None) -> str:
    """The error of a diverged run: what went non-finite, where, the likely cause and what was kept."""
    if inputs_finite is False:
        cause = 'This batch\'s input images hold NaN or infinite values: check the data.'
    elif inputs_finite:
        cause = (f'The input batch is finite, so the learning rate (now {lr:.4g}) is the likely cause: lower --lr, '
                 'lengthen --warmup-epochs or set --clip-grad.')
    else:
        cause = DIVERGENCE_CAUSES
    kept = (f'The last good checkpoint is kept: {last_checkpoint}.' if last_checkpoint
            else 'No checkpoint had been saved yet.')
    return (f'training diverged: {what} at optimizer step {step} (epoch {epoch}/{num_epochs}, batch {batch}). '
            f'{cause} {kept} No final/ model was written.')


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX on x86, BF16 extensions on Arm)."""
    capabilities = getattr(torch.cpu, 'get_capabilities', None)
    if capabilities is not None:
        caps = capabilities()
        return any(bool(caps.get(k)) for k in ('avx512_bf16', 'amx_bf16', 'sve_bf16', 'bf16'))
    probes = [getattr(torch.cpu, name, None) for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
    return any(probe is not None and probe() for probe in probes)


def resolve_mixed_precision(requested: str | None, *, cpu: bool) -> tuple[str | None, str | None]:
    """Turn ``mixed_precision`` (``auto``, ``no``, ``bf16``, ``fp16`` or ``None``) into Accelerate's setting.

    ``auto`` is bf16 autocast where the device computes bf16 natively (a CPU with AVX512-BF16/AMX, a GPU with
    bf16), else float32. ``None`` leaves the choice to ``accelerate launch`` (its config or flag, else ``no``).

    Returns:
        The value for ``Accelerator(mixed_precision=...)`` and, for ``auto``, a log line saying what was chosen.
    """
    if requested != 'auto':
        return requested, None
    if cpu:
        if cpu_supports_bf16():
            return 'bf16', 'mixed_precision auto: bf16 autocast (this CPU computes bf16 natively)'
        return 'no', ('mixed_precision auto: float32, because this CPU has no native bf16 (no AVX512-BF16 or AMX); '
                      'bf16 autocast would be slower than float32 here')
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return 'bf16', 'mixed_precision auto: bf16 autocast (the GPU supports bf16)'
    return 'no', 'mixed_precision auto: float32, because this GPU has no bf16 support'
