"""Saving in the Hub format: ``model.safetensors`` with a canonical header, and ``config.json`` with its sha256.

Weights are written with ``safetensors.torch.save_model``; the same model saved twice gives the same bytes, so a
published sha256 can be reproduced. The fingerprint of the config's model values goes into the weights' metadata
(see :mod:`gaternet_zoo.hub._config`), unless the registry already pins it for these very weights.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import give_umask_mode
from .._pretrained import get_extra_cfg
from ._config import config_fingerprint, fingerprint_values, model_config
from ._constants import CONFIG_FINGERPRINT_KEY, CONFIG_NAME, CONFIG_VALUES_KEY, WEIGHTS_NAME
from ._errors import NonFiniteWeightsError, short_list
from ._files import sha256_file

__all__ = ['save_pretrained', 'canonical_safetensors_header']


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, extra: dict[str, Any] | None = None, *,
                    model_args: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (with the weights' sha256) into ``save_directory``.

    The same model saved twice gives the same bytes (see :func:`canonical_safetensors_header`), so a published
    sha256 can be reproduced.

    Args:
        model: The model (a ``torch.compile`` wrapper is unwrapped).
        save_directory: The folder, created if needed.
        extra: ``pretrained_cfg`` fields to add or replace in the config.
        model_args: The arguments that rebuild ``model`` (``ModelHubMixin``'s ``_hub_mixin_config``, read from the
            model when not given).

    Raises:
        NonFiniteWeightsError: The model holds NaN or infinite values; nothing is written.
    """
    model = getattr(model, '_orig_mod', model)
    bad = [k for k, v in model.state_dict().items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeightsError(
            f'Refusing to save {type(model).__name__} to {save_directory}: {len(bad)} tensor(s) hold NaN or infinite '
            f'values ({short_list(bad)}). The model diverged in training (learning rate too high, or bad data); save '
            f'it from its last good checkpoint instead.')
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    weights = save_directory / WEIGHTS_NAME
    config = model_config(model, extra, model_args=model_args)
    model_cfg = getattr(model, 'pretrained_cfg', None) or {}
    described = model_cfg.get('sha256')
    plain = None
    if config['pretrained_cfg'].get('tag') and 'tag' not in (extra or {}) and described is not None:
        # Are these the tag's own weights? Saved as published (no fingerprint metadata), they are the same file,
        # with the same sha256, and the registry's config pin still covers the config.
        _save_weights(model, weights, {'format': 'pt'})
        plain = sha256_file(weights)
        _drop_tag_of_other_weights(config, model_cfg, plain, extra or {})
    fingerprint = config_fingerprint(config)
    pinned = get_extra_cfg(config['architecture'], config['pretrained_cfg'].get('tag')).get('config_sha256')
    if plain is None or plain != described.lower() or pinned != fingerprint:
        # New weights, or a config the registry does not pin: the fingerprint goes into the weights' metadata.
        _save_weights(model, weights, {'format': 'pt', CONFIG_FINGERPRINT_KEY: fingerprint,
                                       CONFIG_VALUES_KEY: fingerprint_values(config)})
    give_umask_mode(weights)
    sha = sha256_file(weights)
    config['pretrained_cfg']['sha256'] = sha
    (save_directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')
    return save_directory


def _save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_model``, then the header's metadata put in sorted key order, in place.

    safetensors writes the metadata mapping in hash-map order, which changes from one save to the next, so the
    sha256 of the same weights would too. Sorting only reorders the header's bytes (same length, same tensor
    offsets): the file reads exactly as before.
    """
    from safetensors.torch import save_model

    save_model(model, str(path), metadata=metadata)
    if len(metadata) > 1:
        canonical_safetensors_header(path)


def canonical_safetensors_header(path: str | os.PathLike) -> bool:
    """Rewrite the header of a ``.safetensors`` file with its ``__metadata__`` keys sorted; returns whether it did.

    Only the order of the metadata entries changes, and the header keeps its length (padded with spaces, as the
    format allows), so the tensors, their offsets and every reader's result are untouched.
    """
    with open(path, 'r+b') as f:
        size = int.from_bytes(f.read(8), 'little')
        raw = f.read(size)
        header = json.loads(raw)
        metadata = header.get('__metadata__')
        if not isinstance(metadata, dict) or list(metadata) == sorted(metadata):
            return False
        header['__metadata__'] = dict(sorted(metadata.items()))
        text = json.dumps(header, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
        if len(text) > size:  # Cannot happen for a reordering of the same entries; never grow the header.
            return False
        f.seek(8)
        f.write(text + b' ' * (size - len(text)))
    return True


def _drop_tag_of_other_weights(config: dict[str, Any], model_cfg: dict[str, Any], sha: str,
                               extra: dict[str, Any]) -> None:
    # Like timm, a model built without weights still carries its default tag's cfg (and, here, the sha256 the
    # registry pins for it). Weights trained or fine-tuned since are not that tag's: a saved folder claiming the
    # tag (or the tag's dataset) would mislabel them on the Hub. A cfg without sha256 names no weights yet, which
    # is how a publisher assigns a tag to new ones; an explicit ``extra={'tag': ...}`` always wins.
    cfg = config['pretrained_cfg']
    described = model_cfg.get('sha256')
    if not cfg.get('tag') or 'tag' in extra or described is None or described == sha:
        return
    registered = get_extra_cfg(config['architecture'], cfg['tag'])
    del cfg['tag']
    if 'dataset' not in extra and registered.get('dataset') is not None and cfg.get('dataset') == registered['dataset']:
        del cfg['dataset']

