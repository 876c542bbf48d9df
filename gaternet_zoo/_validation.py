"""Checks of what callers hand to the public API: model arguments, input images and gate vectors.

Each check raises one clear error that names the problem and the fix, instead of letting a bad value run on into a
raw conv error, an allocator failure or, worse, a silently wrong result (a NaN image gets all-closed gates; a gate
of 5 scales a filter five-fold).

The value checks (dtype, finiteness, range) need the concrete tensor. They are skipped while the model is traced or
compiled (``torch.fx``, ``torch.jit.trace``, ``torch.compile``/``torch.export``), and for tensor subclasses such as
the fake tensors those use, so that none of them becomes a graph break or a data-dependent branch; they then run
in eager mode only, which is where a user hands the model data.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

__all__ = [
    'ArgumentTypeError', 'checks_apply', 'check_count', 'check_finite', 'check_gaternet_args', 'check_model_name',
    'check_image_batch', 'check_input_values', 'check_input_size', 'check_gates', 'min_input_side', 'MAX_NUM_CLASSES',
    'MAX_WIDTH', 'MAX_CHANNELS',
]

class ArgumentTypeError(TypeError):
    """A value of the wrong type reached the public API (a string for a count, uint8 images, a list of gates).

    A ``TypeError`` of gaternet_zoo's own, so that callers and the command line can tell it from a bug.
    """


#: Largest accepted ``num_classes``: a larger classifier is almost surely a typo (and would not fit in memory).
MAX_NUM_CLASSES = 1 << 24
#: Largest accepted layer width or bottleneck.
MAX_WIDTH = 1 << 16
#: Largest accepted number of input channels.
MAX_CHANNELS = 1 << 12


def _is_fx_tracing() -> bool:
    from torch.fx import _symbolic_trace

    # torch >= 2.6 names the symbolic-tracing flag apart (is_fx_tracing warns that it also covers torch.export).
    probe = getattr(_symbolic_trace, 'is_fx_symbolic_tracing', None) or getattr(_symbolic_trace, 'is_fx_tracing', None)
    return bool(probe()) if probe is not None else False


def checks_apply(x: Any) -> bool:
    """Whether value checks should run on ``x``: a plain eager tensor, outside any tracing or compilation."""
    if type(x) is not torch.Tensor and type(x) is not nn.Parameter:
        return False  # fx Proxies, FakeTensors, functional tensors ...: a traced or compiled program.
    if x.device.type == 'meta':
        return False  # shapes only, no values to check
    if torch.jit.is_scripting() or torch.jit.is_tracing() or _is_fx_tracing():
        return False
    compiler = getattr(torch, 'compiler', None)
    return not (compiler is not None and compiler.is_compiling())


def check_count(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None, owner: str = '') -> int:
    """Check that a size argument (``num_classes``, ``in_chans``, a width) is an integer in range; return it.

    Raises:
        TypeError: For a string, a float or a bool (``num_classes="10"``).
        ValueError: Below ``minimum`` (``num_classes=-1``, ``in_chans=0``) or above ``maximum`` (a huge number that
            would fail in the allocator).
    """
    where = f' of {owner}' if owner else ''
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = ''
        if isinstance(value, str) and value.strip().lstrip('-').isdigit():
            hint = f' Pass the number itself: {name}={int(value)}.'
        elif isinstance(value, float) and value.is_integer():
            hint = f' Pass an integer: {name}={int(value)}.'
        raise ArgumentTypeError(f'{name}{where} must be an integer, got {value!r} ({type(value).__name__}).{hint}')
    value = int(value)
    if value < minimum:
        meaning = ' (0 builds the model without a classifier, returning pooled features)' if (
            name == 'num_classes' and minimum == 0) else ''
        raise ValueError(f'{name}{where} must be at least {minimum}{meaning}, got {value}.')
    if maximum is not None and value > maximum:
        raise ValueError(
            f'{name}{where} is {value:,}, more than the {maximum:,} this model accepts: the layers it sizes would not '
            f'fit in memory. Check the value (a typo or an edited config.json?).')
    return value


def check_finite(name: str, value: Any, *, owner: str = '') -> float:
    """Check that a float hyper-parameter (a threshold, a noise level, a dropout rate) is a finite number.

    Raises:
        TypeError: Not a number.
        ValueError: NaN or infinite.
    """
    where = f' of {owner}' if owner else ''
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f'{name}{where} must be a number, got {value!r} ({type(value).__name__}).')
    if not math.isfinite(value):
        raise ValueError(f'{name}{where} must be a finite number, got {value}.')
    return float(value)


def check_model_name(name: Any, role: str) -> str:
    """Check that ``name`` is a registered timm model name (a backbone or a gater); return it.

    Raises:
        ValueError: For an unknown name, with close matches from timm's registry.
    """
    import difflib

    import timm

    if not isinstance(name, str) or not name:
        raise ArgumentTypeError(f'{role} must be a timm model name (a string such as "cifar_resnet20"), got {name!r}.')
    if timm.is_model(name) or ':' in name:  # 'hf-hub:org/repo' and 'local-dir:' names are timm's to resolve
        return name
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f' Did you mean {", ".join(repr(c) for c in close)}?' if close else ''
    example = '"cifar_resnet20" (CIFAR) or "resnet18"' if role == 'gater' else '"cifar_resnet56" or "resnet50"'
    raise ValueError(
        f'Unknown {role} {name!r}: not a timm model name.{hint} Use a registered model, e.g. {example}; '
        f'timm.list_models() lists them.')


def check_gaternet_args(backbone: Any, gater: Any, num_classes: Any, in_chans: Any, bottleneck: Any,
                        gate_noise_std: Any, gate_threshold: Any, drop_rate: Any) -> None:
    """The checks of a GaterNet's arguments, before any layer is built (a bad value fails here, with its name)."""
    check_model_name(backbone, 'backbone')
    check_model_name(gater, 'gater')
    check_count('num_classes', num_classes, minimum=0, maximum=MAX_NUM_CLASSES, owner='GaterNet')
    check_count('in_chans', in_chans, maximum=MAX_CHANNELS, owner='GaterNet')
    check_count('bottleneck', bottleneck, maximum=MAX_WIDTH, owner='GaterNet')
    for name, value in (('gate_noise_std', gate_noise_std), ('gate_threshold', gate_threshold),
                        ('drop_rate', drop_rate)):
        check_finite(name, value, owner='GaterNet')
    if not 0.0 <= gate_threshold < 1.0:
        effect = 'closes every gate' if gate_threshold >= 1.0 else 'opens every gate'
        raise ValueError(
            f'gate_threshold of GaterNet must be in [0, 1), got {gate_threshold}: a gate is open where its probability '
            f'(in [0, 1]) is above the threshold, so {gate_threshold} {effect} whatever the input. The released '
            f"GaterNet's value is 0.49999 (the default).")
    if gate_noise_std < 0:
        raise ValueError(f'gate_noise_std of GaterNet is a standard deviation and must be >= 0, got {gate_noise_std}.')


def min_input_side(*modules: nn.Module) -> int:
    """Smallest sensible input side: the largest total stride of ``modules`` (from timm's ``feature_info``).

    An image smaller than a network's total stride leaves its last stage nothing but padding to look at.
    """
    side = 1
    for module in modules:
        info = getattr(module, 'feature_info', None)
        reductions = []
        if isinstance(info, (list, tuple)):
            reductions = [f.get('reduction', 1) for f in info if isinstance(f, dict)]
        elif info is not None and hasattr(info, 'reduction'):
            reductions = list(info.reduction())
        if reductions:
            side = max(side, int(max(reductions)))
    return side


def _min_side(model: nn.Module, default: int) -> int:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    min_size = cfg.get('min_input_size')
    if min_size:
        return int(min(tuple(min_size)[1:]))
    return default


def check_input_size(model: nn.Module, input_size: tuple[int, ...], *, min_side: int, in_chans: int,
                     owner: str) -> None:
    """Check a ``(C, H, W)`` input size against the model's channels and minimum side.

    Raises:
        ValueError: Naming the model's channels and minimum side.
    """
    if len(input_size) != 3:
        raise ValueError(f'input size must be (C, H, W), got {tuple(input_size)}.')
    c, h, w = (int(v) for v in input_size)
    if c != in_chans:
        raise ValueError(
            f'{owner} takes {in_chans}-channel images, but the input size {tuple(input_size)} has {c} channel(s). '
            f'Use an input size of ({in_chans}, H, W), or build the model with in_chans={c}.')
    side = _min_side(model, min_side)
    if min(h, w) < side:
        recommended = tuple((getattr(model, 'pretrained_cfg', None) or {}).get('input_size', ()))
        hint = f'; its default input is {recommended[1]}x{recommended[2]}' if len(recommended) == 3 else ''
        raise ValueError(
            f'{owner} needs images of at least {side}x{side} pixels (its total stride{hint}), got {h}x{w}. Resize the '
            f'images, e.g. with timm.data.create_transform(**timm.data.resolve_data_config(model=model)).')


def check_image_batch(x: Any, model: nn.Module, *, in_chans: int, min_side: int, owner: str) -> None:
    """Check a ``(B, C, H, W)`` image batch: type, rank and channels always; values as :func:`check_input_values`.

    Raises:
        TypeError, ValueError: Naming the expected shape, dtype or range and how to get there.
    """
    if not isinstance(x, torch.Tensor):
        if type(x).__name__ == 'Proxy':  # torch.fx symbolic tracing
            return
        raise ArgumentTypeError(
            f'{owner} expects a torch.Tensor of shape (B, {in_chans}, H, W), got {type(x).__name__}.')
    if x.ndim != 4:
        hint = ' Add a batch dimension with x.unsqueeze(0).' if x.ndim == 3 else ''
        raise ValueError(
            f'{owner} expects a 4-D input of shape (B, {in_chans}, H, W), got shape {tuple(x.shape)}.{hint}')
    if x.shape[1] != in_chans:
        hint = ' The input looks channels-last (B, H, W, C): use x.permute(0, 3, 1, 2).' if (
            x.shape[-1] == in_chans) else ''
        raise ValueError(
            f'{owner} expects {in_chans} input channels, got shape {tuple(x.shape)} ({x.shape[1]} channels).{hint} '
            f'For other channel counts build the model with in_chans=...')
    check_input_values(x, model, min_side=min_side, owner=owner)


def check_input_values(x: torch.Tensor, model: nn.Module, *, min_side: int, owner: str) -> None:
    """Check dtype, size and finiteness of a ``(B, C, H, W)`` image batch (shape and channels checked already).

    Raises:
        TypeError: Integer/bool images (with the conversion to use), or a float dtype the parameters do not have
            outside autocast (with the cast to use).
        ValueError: Images smaller than the model's minimum side, or NaN/inf pixels (which would close every gate of
            the sample in eval and spread NaN through the batch statistics in training).
    """
    if not checks_apply(x):
        _assert_finite_in_graph(x, owner)
        return
    if not torch.is_floating_point(x):
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        norm = 'normalise with the model\'s mean/std' if cfg.get('mean') else 'normalise'
        raise ArgumentTypeError(
            f'{owner} expects float images, got dtype {x.dtype}. Convert them first, e.g. x = x.float() / 255 and '
            f'{norm} (timm.data.resolve_data_config(model=model) gives them), or feed the data through '
            f'gaternet_zoo.data.build_pipeline.')
    param = next(model.parameters(), None)
    if param is not None and x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ArgumentTypeError(
            f'{owner} has {param.dtype} parameters but the input is {x.dtype}. Cast the input with '
            f'x.to({param.dtype}), cast the model with model.to({x.dtype}), or run under torch.autocast.')
    side = _min_side(model, min_side)
    if min(x.shape[-2], x.shape[-1]) < side:
        check_input_size(model, tuple(x.shape[1:]), min_side=min_side, in_chans=x.shape[1], owner=owner)
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten().tolist()
        shown = ', '.join(str(i) for i in bad[:10]) + (f', ... ({len(bad)} in all)' if len(bad) > 10 else '')
        raise ValueError(
            f'{owner} got non-finite (NaN or inf) pixels in sample(s) {shown} of the batch: a NaN image would get '
            f'all-closed gates and a meaningless prediction, and in training it spreads to the whole batch. Find the '
            f'corrupt images (or the preprocessing that divides by zero) and fix or drop them.')


def _assert_finite_in_graph(x: Any, owner: str) -> None:
    # Inside torch.compile or torch.export a Python-level check would break the graph (or be traced away), so the
    # compiled program carries the check itself: an assert op, evaluated with the data, that raises RuntimeError.
    # torch.jit and fx symbolic tracing are left as they were (no data; their graphs are for export elsewhere).
    compiler = getattr(torch, 'compiler', None)
    if compiler is None or not compiler.is_compiling() or not isinstance(x, torch.Tensor):
        return
    if x.device.type == 'meta' or not torch.is_floating_point(x):
        return
    torch._assert_async(torch.isfinite(x).all(), (
        f'{owner} (compiled) got non-finite (NaN or inf) pixels in its input batch: a NaN image would get all-closed '
        f'gates and a meaningless prediction. Find the corrupt images (run the model uncompiled to have them named) '
        f'and fix or drop them.'))


def check_gates(gates: Any, gate_size: int, batch_size: int) -> None:
    """Check a user-supplied gate tensor: a float tensor of values in [0, 1] (shape is checked by the caller).

    Gates multiply filters: 0 closes one, 1 keeps it, a value in between scales it (the gater's own training-mode
    output); anything else (5, -1, NaN) would silently change the network.

    Raises:
        TypeError: Not a tensor (a list), or an integer/bool tensor.
        ValueError: Values outside [0, 1] or not finite.
    """
    if not isinstance(gates, torch.Tensor):
        raise ArgumentTypeError(
            f'gates must be a torch.Tensor of shape ({batch_size}, {gate_size}) with values in [0, 1], got '
            f'{type(gates).__name__}. Convert it with torch.tensor(gates, dtype=torch.float32).')
    if not checks_apply(gates):
        return
    if not torch.is_floating_point(gates):
        raise ArgumentTypeError(
            f'gates must be a float tensor with values in [0, 1] (1 keeps a filter, 0 closes it), got dtype '
            f'{gates.dtype}. Convert it with gates.float().')
    if gates.numel() == 0:
        return
    gates = gates.detach()
    finite = bool(torch.isfinite(gates).all())
    low, high = (float(gates.min()), float(gates.max())) if finite else (0.0, 1.0)
    if not finite or low < 0.0 or high > 1.0:
        found = 'non-finite values (NaN or inf)' if not finite else f'values in [{low:g}, {high:g}]'
        raise ValueError(
            f'gates must be in [0, 1] (1 keeps a filter, 0 closes it, values in between scale it), got {found}. '
            f'Clamp or binarise them, e.g. gates.clamp(0, 1) or (gates > 0.5).float().')
