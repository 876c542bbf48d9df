"""State dicts: load ``model.safetensors`` strictly into a built model, after verifying it.

Loading is strict and never leaves a half-loaded model behind: the sha256 is checked, and the values (finite),
dtypes (no silent integer/float cast) and key sets are compared *before* any tensor is copied. The model is built
by the caller (the models layer); this module only fills it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path

import timm
import torch
from torch import nn

from .._io import display_path
from .._pretrained import resolve_hub_id
from ._constants import WEIGHTS_NAME
from ._errors import HubLoadError, NonFiniteWeightsError, StateDictMismatchError, short_list
from ._files import check_sha256, resolve_hub_weights, sha256_file

__all__ = [
    'clean_state_dict_keys', 'classifier_keys', 'check_finite_weights', 'load_weights', 'state_dict_mismatches',
    'load_pretrained',
]

_logger = logging.getLogger(__name__)


def clean_state_dict_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (``torch.compile``) prefixes."""
    cleaned = {}
    for key, value in state_dict.items():
        while True:
            for prefix in ('module.', '_orig_mod.'):
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    break
            else:
                break
        cleaned[key] = value
    return cleaned


def classifier_keys(model: nn.Module) -> tuple[str, ...]:
    """The state-dict keys of ``model``'s classifier (timm's ``get_classifier``); empty when it has none."""
    name = model.get_classifier(name_only=True) if hasattr(model, 'get_classifier') else None
    if not isinstance(name, str):
        return ()
    return tuple(f'{name}.{p}' for p, _ in model.get_submodule(name).named_parameters())


def check_finite_weights(state_dict: dict[str, torch.Tensor], path: Path, label: str) -> None:
    """Refuse weights holding NaN or infinite values.

    Raises:
        NonFiniteWeightsError: Naming the tensors and how to train again.
    """
    # A model with NaN weights still runs and reports an accuracy (chance level, all gates closed): refuse it.
    bad = [k for k, v in state_dict.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeightsError(
            f'The weights in {path} ({label}) hold NaN or infinite values in {len(bad)} tensor(s): '
            f'{short_list(bad)}. They come from a training run that diverged (learning rate too high, or bad data); '
            f'train again from its last good checkpoint with a lower learning rate. Nothing was loaded.')


def load_weights(model: nn.Module, path: str | os.PathLike, *, sha256: str | None = None, label: str = '',
                 new_classifier_ok: bool = True) -> None:
    """Load ``model.safetensors`` strictly into ``model``, after verifying it.

    A classifier whose shape differs from the model's (``num_classes`` changed for fine-tuning) is left at its
    fresh initialisation, with a log line, when ``new_classifier_ok``; otherwise it is an error like any other
    shape mismatch. Every other key must match exactly.

    Raises:
        ChecksumError: sha256 mismatch.
        HubLoadError: Missing or corrupt file.
        NonFiniteWeightsError: NaN or infinite values (weights of a diverged run); the model is untouched.
        StateDictMismatchError: Missing, unexpected or mis-shaped keys (all listed); the model is untouched.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, load_model

    path = Path(path)
    label = label or path.parent.name
    if not path.is_file():
        raise HubLoadError(f'Weights file {path} not found.')
    if sha256:
        check_sha256(path, sha256, sha256_file(path), label)
    try:
        state_dict = load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError) as e:
        raise HubLoadError(
            f'{path} is not a readable safetensors file ({e}). Download it again with force_download=True or '
            f'save the model again.') from e
    check_finite_weights(state_dict, path, label)

    cleaned = clean_state_dict_keys(state_dict)
    expected = model.state_dict()
    # load_state_dict casts silently: integer weights (rounded values) would load into float parameters as if
    # they were the trained ones, and float values into integer buffers.
    cast = sorted(f'{k} ({cleaned[k].dtype} into {expected[k].dtype})' for k in cleaned.keys() & expected.keys()
                  if cleaned[k].is_floating_point() != expected[k].is_floating_point())
    if cast:
        raise StateDictMismatchError(
            f'The weights in {path} do not fit {label}: {len(cast)} tensor(s) have the wrong kind of dtype: '
            f'{short_list(cast)}. Integer values are not trained float weights (a cast when saving, or another '
            f'format\'s file); save the model again from its float weights. Nothing was loaded.')
    dropped = []
    for key in classifier_keys(model):
        if key in cleaned and key in expected and cleaned[key].shape != expected[key].shape:
            dropped.append(key)
    if dropped and not new_classifier_ok:
        raise StateDictMismatchError(
            f'The weights in {path} have a classifier of shape {tuple(cleaned[dropped[0]].shape)} but {label} was '
            f'built with num_classes={getattr(model, "num_classes", "?")} (shape {tuple(expected[dropped[0]].shape)}):'
            f' its config does not describe these weights (was num_classes edited?). To fine-tune with another '
            f'number of classes pass num_classes=... to create_model, which starts a new classifier; nothing was '
            f'loaded.')
    parts = state_dict_mismatches(expected, cleaned, ignore=dropped)
    if parts:
        # A model may say why in its own terms (a GaterNet: a gater head of another width, e.g. branch gates).
        explain = getattr(model, 'state_dict_mismatch_hint', None)
        hint = explain(cleaned) if callable(explain) else None
        raise StateDictMismatchError(
            f'The weights in {path} do not fit {label}: ' + '; '.join(parts) + '. The checkpoint was saved from '
            'a different architecture or configuration' + (f' ({hint})' if hint else '') + '; nothing was loaded.')

    if dropped or len(cleaned) != len(state_dict) or any(a != b for a, b in zip(cleaned, state_dict)):
        if dropped:
            _logger.info('%s: classifier %s left newly initialised (checkpoint has %s, model has %s).', label,
                         dropped, tuple(cleaned[dropped[0]].shape), tuple(expected[dropped[0]].shape))
            for key in dropped:
                cleaned[key] = expected[key]
        model.load_state_dict(cleaned, strict=True)
    else:
        load_model(model, path, strict=True, device='cpu')


def state_dict_mismatches(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                          ignore: Collection[str] = ()) -> list[str]:
    """What keeps ``state`` from loading strictly where ``expected`` is: missing, unexpected and mis-shaped keys.

    Args:
        expected: The target's ``state_dict()``.
        state: The weights to load.
        ignore: Keys left out of the comparison (a classifier of another size that stays fresh).

    Returns:
        One phrase per kind of problem (``"2 missing keys: a, b"``); empty when ``state`` fits.
    """
    missing = sorted(set(expected) - set(state) - set(ignore))
    unexpected = sorted(set(state) - set(expected) - set(ignore))
    mis_shaped = sorted(
        f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}'
        for k in set(state) & set(expected) if k not in ignore and state[k].shape != expected[k].shape)
    return [f'{len(keys)} {kind}: {short_list(keys)}' for kind, keys in (
        ('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', mis_shaped)) if keys]


def load_pretrained(
        model: nn.Module,
        *,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        token: str | bool | None = None,
) -> Path:
    """Load the weights that ``model.pretrained_cfg`` names (a local folder/file, or a Hub repo at a revision).

    Hub weights come from the pinned revision on the Hub, else the local Hub cache, else the copy shipped with
    the package (see :func:`~gaternet_zoo.hub.find_shipped_weights`); ``force_download=True`` accepts the Hub only.

    Returns:
        The ``model.safetensors`` that was loaded.

    Raises:
        ValueError: If the configuration names no weights (the message lists the tags that have some).
        HubLoadError: If no source has the weights; the message says how to get or train them.
        ChecksumError: If the copy found does not have the registry's sha256.
    """
    cfg = model.pretrained_cfg
    architecture, tag = cfg.get('architecture'), cfg.get('tag')
    label = f'{architecture}.{tag}' if tag else str(architecture)
    passed_over = None
    if cfg.get('file'):
        path = Path(cfg['file'])
        weights = path / WEIGHTS_NAME if path.is_dir() else path
        where = display_path(weights)
    elif cfg.get('hf_hub_id'):
        repo_id, revision = resolve_hub_id(cfg['hf_hub_id'], cfg.get('revision'))
        weights, where, passed_over = resolve_hub_weights(
            label, repo_id, revision, architecture=architecture, cache_dir=cache_dir,
            local_files_only=local_files_only, force_download=force_download, token=token)
        label = f'{label} ({repo_id}@{revision or "main"})'
    else:
        with_weights = timm.list_pretrained(f'{architecture}.*') if architecture else []
        hint = f' Tags with weights: {", ".join(with_weights)}.' if with_weights else (
            ' No tag of this architecture has published weights yet.')
        raise ValueError(
            f'{label} has no pretrained weights.{hint} Use pretrained=False, train one with '
            f'`accelerate launch recipes/train.py --model {architecture}`, or load a saved folder with '
            f'create_model("local-dir:/path").')
    load_weights(model, weights, sha256=cfg.get('sha256'), label=label)
    # One line per load, after the check: where the weights came from and, when the Hub was passed over, why.
    checked = 'verified' if cfg.get('sha256') else 'not pinned'
    if passed_over:
        _logger.warning('%s: not loaded from the Hub (%s); loaded the weights from %s (sha256 %s).', label,
                        passed_over, where, checked)
    else:
        _logger.info('%s: loaded the weights from %s (sha256 %s).', label, where, checked)
    return weights
