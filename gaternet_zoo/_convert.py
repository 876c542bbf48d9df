"""Converter for the released GaterNet checkpoints (``ResNet-20-Gated.pth``, ``ResNet-56-Gated.pth``, CIFAR-10).

The released files are pickled dicts ``{"backbone_state_dict": ..., "gater_state_dict": ...}`` saved from
``nn.DataParallel`` (every key starts with ``module.``), possibly without ``num_batches_tracked`` (PyTorch 0.4).
They are read only through ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. The
backbone keys map one to one onto :class:`~gaternet_zoo.CifarResNet`; the gater's ``resnet.*`` body onto
``gater.encoder.*``, ``resnet.newfc`` onto ``gater.fc1`` and ``fnn.fc.0`` onto ``gater.fc2``.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import TYPE_CHECKING, Any

import torch

from .hub import StateDictMismatchError, clean_state_dict_keys

if TYPE_CHECKING:
    from .models.gaternet import GaterNet

__all__ = ['load_official_checkpoint', 'official_to_zoo_state_dict', 'OfficialCheckpointError']

_TOP_LEVEL = ('backbone_state_dict', 'gater_state_dict')


class OfficialCheckpointError(ValueError):
    """The input is not a released GaterNet checkpoint; the message says which keys are wrong."""


def _load(path_or_state_dict: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    if isinstance(path_or_state_dict, dict):
        return path_or_state_dict
    try:
        return torch.load(path_or_state_dict, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False, i.e. running the file's code: not repeated here.
        found = sorted(set(re.findall(r'GLOBAL ([\w.]+)', str(e))))
        holds = f' (it names {", ".join(found)})' if found else ''
        raise OfficialCheckpointError(
            f'Refused {path_or_state_dict}: it is a pickle of Python objects{holds}, not a file of tensors only. '
            f'Unpickling such a file runs code it names, so the zoo never does (it reads checkpoints with '
            f'torch.load(weights_only=True) only). The released GaterNet checkpoints (ResNet-20-Gated.pth, '
            f'ResNet-56-Gated.pth) hold only tensors; this is another file, e.g. a whole model or training state '
            f'pickled by a training script. If it is yours and you trust it, load it in that project and save '
            f'{{"backbone_state_dict": ..., "gater_state_dict": ...}} with tensors only, then convert that.') from e
    except Exception as e:  # not a torch file at all, truncated, ...
        raise OfficialCheckpointError(
            f'Could not read {path_or_state_dict} as a checkpoint ({type(e).__name__}: {e}): it is not a complete '
            f'torch.save file. The released GaterNet checkpoints are ResNet-20-Gated.pth and ResNet-56-Gated.pth; '
            f'download the file again.') from e


def _depth(backbone: dict[str, torch.Tensor]) -> int:
    blocks = {int(m.group(1)) for k in backbone if (m := re.match(r'stage1\.block(\d+)\.', k))}
    if not blocks:
        raise OfficialCheckpointError('backbone_state_dict has no stage1.block<i> keys: not a GaterNet backbone.')
    return 6 * max(blocks) + 2


def _check_tensors(part: str, tensors: dict[str, Any]) -> None:
    """Every value a tensor; float weights (BatchNorm's step counter excepted), all finite."""
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise OfficialCheckpointError(
                f'Not an official GaterNet checkpoint: {part}[{key!r}] is a {type(value).__name__}, not a tensor.')
        if key.endswith('num_batches_tracked'):
            continue
        if not torch.is_floating_point(value):
            raise OfficialCheckpointError(
                f'{part}[{key!r}] has dtype {value.dtype}; the released checkpoints hold float weights. The file was '
                f'changed or is not a released GaterNet checkpoint.')
        if not bool(torch.isfinite(value).all()):
            count = int((~torch.isfinite(value)).sum())
            raise OfficialCheckpointError(
                f'{part}[{key!r}] holds {count} NaN or infinite value(s): the checkpoint is corrupt (or comes from a '
                f'diverged run). Download the released file again.')


def official_to_zoo_state_dict(checkpoint: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map a released checkpoint's keys to :class:`~gaternet_zoo.GaterNet` keys.

    Returns:
        ``(state_dict, info)`` with ``info = dict(depth=, num_classes=, bottleneck=, gate_size=)``.

    Raises:
        OfficialCheckpointError: If the top-level keys or the key patterns are not those of the release.
    """
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in _TOP_LEVEL):
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise OfficialCheckpointError(
            f'Not an official GaterNet checkpoint: expected top-level keys {list(_TOP_LEVEL)}, found {found}.')
    for part in _TOP_LEVEL:
        if not isinstance(checkpoint[part], dict):
            kind = type(checkpoint[part]).__name__
            raise OfficialCheckpointError(f'Not an official GaterNet checkpoint: {part} is a {kind}, not a state dict.')
    backbone = clean_state_dict_keys(dict(checkpoint['backbone_state_dict']))
    gater = clean_state_dict_keys(dict(checkpoint['gater_state_dict']))
    for part, tensors in (('backbone_state_dict', backbone), ('gater_state_dict', gater)):
        _check_tensors(part, tensors)
    for needed, part, where in (('fc.weight', backbone, 'backbone_state_dict'),
                                ('newfc.weight', {k.removeprefix('resnet.'): v for k, v in gater.items()},
                                 'gater_state_dict (resnet.newfc)'),
                                ('fnn.fc.0.weight', gater, 'gater_state_dict')):
        if needed not in part:
            raise OfficialCheckpointError(f'Not an official GaterNet checkpoint: {where} has no {needed!r} key.')

    state_dict = {f'backbone.{k}': v for k, v in backbone.items()}
    for key, value in gater.items():
        if key.startswith('resnet.newfc.'):
            new = 'gater.fc1.' + key[len('resnet.newfc.'):]
        elif key.startswith('resnet.'):
            new = 'gater.encoder.' + key[len('resnet.'):]
        elif key.startswith('fnn.fc.0.'):
            new = 'gater.fc2.' + key[len('fnn.fc.0.'):]
        else:
            new = 'gater.' + key  # reported as unexpected by the strict check
        state_dict[new] = value
    info = dict(depth=_depth(backbone), num_classes=backbone['fc.weight'].shape[0],
                bottleneck=gater['resnet.newfc.weight'].shape[0], gate_size=gater['fnn.fc.0.weight'].shape[0])
    return state_dict, info


def load_official_checkpoint(path_or_state_dict: str | os.PathLike | dict[str, Any]) -> GaterNet:
    """Build a :class:`~gaternet_zoo.GaterNet` from a released GaterNet checkpoint.

    The depth (20, 56, or any ``6n + 2``), classes, bottleneck and gate count are read from the tensors. In eval
    mode the result gives the same gates (bit for bit) and logits as the official code.

    Args:
        path_or_state_dict: Path of the ``.pth`` file, or the already-loaded dict.

    Returns:
        The model, in training mode (call ``.eval()`` to evaluate).

    Raises:
        OfficialCheckpointError: Not a released checkpoint; lists the missing and unexpected keys.
    """
    from ._factory import create_model
    from ._registry import is_model

    state_dict, info = official_to_zoo_state_dict(_load(path_or_state_dict))
    depth = info['depth']
    name = f'gaternet_resnet{depth}'
    kwargs = dict(num_classes=info['num_classes'], bottleneck=info['bottleneck'])
    if is_model(name):
        model = create_model(name, **kwargs)
    else:
        # Any 6n + 2: a CIFAR ResNet with n basic blocks per stage (only some depths have a registered name).
        n = (depth - 2) // 6
        model = create_model('gaternet', backbone='cifar_resnet20', gater='cifar_resnet20',
                             backbone_args=dict(layers=[n, n, n]), **kwargs)
    if model.gate_size != info['gate_size']:
        raise OfficialCheckpointError(
            f'The gater emits {info["gate_size"]} gates but a depth-{depth} backbone has {model.gate_size} gate '
            f'sites: the backbone and gater of this checkpoint do not belong together.')

    expected = model.state_dict()
    for key, value in expected.items():  # PyTorch 0.4 did not save BatchNorm's num_batches_tracked
        if key.endswith('num_batches_tracked') and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise OfficialCheckpointError(
            f'Not an official GaterNet-ResNet-{depth} checkpoint: {len(missing)} missing keys {missing[:10]}, '
            f'{len(unexpected)} unexpected keys {unexpected[:10]} (names after mapping to gaternet_zoo keys).')
    shapes = [f'{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
              if state_dict[k].shape != v.shape]
    if shapes:
        raise StateDictMismatchError(f'Shape mismatches converting the official checkpoint: {shapes[:10]}')
    model.load_state_dict(state_dict, strict=True)
    model.pretrained_cfg.update(origin_url='https://github.com/google-research/google-research/tree/master/gaternet',
                                license='apache-2.0', dataset='cifar10')
    return model
