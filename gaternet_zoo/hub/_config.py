"""``config.json``: read it, describe a model with it, and verify it against its fingerprint.

Every value of a config that changes the model (architecture, ``model_args``, ``num_classes``, the input settings)
is fingerprinted (:func:`config_fingerprint`) and the fingerprint is stored in the metadata of
``model.safetensors``, which the sha256 covers; a folder whose weights predate that (the first published weights)
is covered by the fingerprint its registry entry pins (``config_sha256``). A config edited after saving is refused
before any model is built, instead of silently loading with a fresh head or other gates.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .._pretrained import EXTRA_CFG_KEYS, get_extra_cfg, registered_weights_of, split_pretrained_cfg
from ..version import __version__
from ._constants import CARD_NAME, CONFIG_FINGERPRINT_KEY, CONFIG_NAME, CONFIG_VALUES_KEY, WEIGHTS_NAME
from ._errors import ChecksumError, HubLoadError
from ._files import sha256_file

__all__ = [
    'read_config', 'model_config', 'split_config', 'config_fingerprint', 'fingerprint_values', 'verify_config',
    'canonical_json',
]

_logger = logging.getLogger(__name__)

# Input and provenance fields of timm's PretrainedCfg that belong in a published config.json.
_PUBLISHED_CFG_KEYS = (
    'tag', 'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
    'test_crop_pct', 'crop_mode', 'mean', 'std', 'num_classes', 'label_names', 'pool_size', 'first_conv',
    'classifier', 'license', 'description', 'origin_url', 'paper_name', 'paper_ids', 'notes',
)

# The pretrained_cfg fields that change what the model computes or how its outputs are read (the input settings,
# the classes); provenance fields (tag, dataset, metrics, card text) are left out, so a re-saved copy of published
# weights has the fingerprint its registry entry pins.
_FINGERPRINTED_CFG_KEYS = (
    'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
    'test_crop_pct', 'crop_mode', 'mean', 'std', 'num_classes', 'label_names', 'pool_size', 'first_conv',
    'classifier',
)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a timm-schema ``config.json``.

    Raises:
        HubLoadError: If the file is missing or not a config of this schema.
    """
    path = Path(path)
    if not path.is_file():
        raise HubLoadError(
            f'No {CONFIG_NAME} in {path.parent}: a model folder holds {WEIGHTS_NAME}, {CONFIG_NAME} and {CARD_NAME} '
            f'as written by model.save_pretrained(folder).')
    try:
        config = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise HubLoadError(f'{path} is not valid JSON: {e}') from e
    missing = [k for k in ('architecture', 'pretrained_cfg') if k not in config]
    if missing:
        raise HubLoadError(f'{path} lacks {missing}: it is not a timm/gaternet_zoo model config.')
    return config


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (timm pretrained_cfg, zoo extras) of a loaded ``config.json``."""
    timm_cfg, extras = split_pretrained_cfg(dict(config.get('pretrained_cfg') or {}))
    return timm_cfg or {}, extras


def model_config(model: nn.Module, extra: dict[str, Any] | None = None, *,
                 model_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The timm-schema ``config.json`` content describing ``model`` (without the weights' sha256).

    Args:
        model: A built model with timm's ``pretrained_cfg``, ``num_classes`` and ``num_features``.
        extra: ``pretrained_cfg`` fields to add or replace (``tag``, ``dataset``, ``metrics``, ...).
        model_args: The arguments that rebuild ``model``: ``ModelHubMixin``'s record of its ``__init__`` arguments
            (``_hub_mixin_config``), which is also what is read when not given.
    """
    cfg = dict(getattr(model, 'pretrained_cfg', {}) or {})
    published = {k: cfg[k] for k in _PUBLISHED_CFG_KEYS if cfg.get(k) is not None and (k != 'tag' or cfg[k])}
    published.update({k: cfg[k] for k in EXTRA_CFG_KEYS
                      if cfg.get(k) is not None and k not in ('sha256', 'revision', 'config_sha256')})
    published.update(extra or {})
    published['num_classes'] = model.num_classes
    if model_args is None:
        model_args = getattr(model, '_hub_mixin_config', None)
    model_args = dict(model_args or {})
    model_args['num_classes'] = model.num_classes  # reset_classifier may have changed it since construction
    for key in ('backbone_args', 'gater_args'):
        # Sub-model weights are inside model.safetensors: rebuilding must not download timm's weights again.
        if isinstance(model_args.get(key), dict):
            model_args[key] = {k: v for k, v in model_args[key].items() if k != 'pretrained'}
    return {
        'architecture': cfg.get('architecture') or type(model).__name__.lower(),
        'num_classes': model.num_classes,
        'num_features': model.num_features,
        'model_args': model_args,
        'pretrained_cfg': published,
        'library_name': 'gaternet_zoo',
        'library_version': __version__,
    }


def _fingerprint_payload(config: dict[str, Any]) -> dict[str, Any]:
    cfg = config.get('pretrained_cfg') or {}
    # None means "the default" wherever it appears, so an argument added later with a None default (absent from
    # older configs) does not change the fingerprint of the same model.
    model_args = {k: v for k, v in (config.get('model_args') or {}).items() if v is not None}
    return {
        'architecture': config.get('architecture'), 'num_classes': config.get('num_classes'),
        'num_features': config.get('num_features'), 'model_args': model_args,
        'pretrained_cfg': {k: cfg[k] for k in _FINGERPRINTED_CFG_KEYS if cfg.get(k) is not None},
    }


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces: the same text for the same values, every time."""
    return json.dumps(value, sort_keys=True, separators=(',', ':'), ensure_ascii=True)


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload).encode('utf-8')).hexdigest()


def config_fingerprint(config: dict[str, Any]) -> str:
    """sha256 of the values of a ``config.json`` that change the model, in a canonical JSON form.

    Covered: ``architecture``, ``num_classes``, ``num_features``, ``model_args`` (gate threshold, pruned filters,
    backbone, gater, ...) and the input/class fields of ``pretrained_cfg`` (input size, interpolation, crop, mean,
    std, label names, classifier ...).
    """
    return _digest(_fingerprint_payload(config))


def fingerprint_values(config: dict[str, Any]) -> str:
    """The fingerprinted values of ``config`` as canonical JSON (stored next to the fingerprint when saving)."""
    return canonical_json(_fingerprint_payload(config))


def _flat_values(payload: dict[str, Any]) -> dict[str, str]:
    """``{'model_args.gate_threshold': '0.49999', 'pretrained_cfg.mean': '[...]', ...}`` (values as canonical JSON)."""
    flat = {k: canonical_json(payload.get(k)) for k in ('architecture', 'num_classes', 'num_features')}
    for group in ('model_args', 'pretrained_cfg'):
        flat.update({f'{group}.{k}': canonical_json(v) for k, v in (payload.get(group) or {}).items()})
    return flat


def _payload_of(flat: dict[str, str]) -> dict[str, Any]:
    payload: dict[str, Any] = {'model_args': {}, 'pretrained_cfg': {}}
    for key, text in flat.items():
        group, _, name = key.partition('.')
        if name:
            payload[group][name] = json.loads(text)
        else:
            payload[key] = json.loads(text)
    return payload


def _edited_values(config: dict[str, Any], expected: str, recorded_values: str | None, name_tag: str | None,
                   reference: Callable[[str], dict[str, Any]] | None) -> list[tuple[str, str, str | None]]:
    """``(key, value now, value saved)`` of the fingerprinted values that were edited, as far as they can be known.

    Exact in both cases where it answers: the values saved in the weights' metadata (checked against the recorded
    fingerprint), or, for published weights, the fewest values of ``reference(name_tag)`` (the config of a fresh
    model of their tag) that give the pinned fingerprint back. Only called for a mismatch, so its cost (a model
    built without weights, by the caller's ``reference``) does not matter.
    """
    now = _flat_values(_fingerprint_payload(config))
    if recorded_values:
        try:
            saved = _flat_values(json.loads(recorded_values))
        except (ValueError, AttributeError):
            saved = None
        if saved is not None and _digest(_payload_of(saved)) == expected:
            return [(k, now.get(k, 'unset'), saved.get(k)) for k in sorted(set(now) | set(saved))
                    if now.get(k) != saved.get(k)]
    if not name_tag or reference is None:
        return []
    try:
        fresh = _flat_values(_fingerprint_payload(reference(name_tag)))
    except Exception:  # The message falls back to naming the groups of values; never fail while explaining.
        return []
    differing = sorted(k for k in set(now) | set(fresh) if now.get(k) != fresh.get(k))
    for size in range(1, min(3, len(differing)) + 1):
        for keys in itertools.combinations(differing, size):
            candidate = {k: v for k, v in now.items() if k not in keys}
            candidate.update({k: fresh[k] for k in keys if k in fresh})
            if _digest(_payload_of(candidate)) == expected:
                return [(k, now.get(k, 'unset'), fresh.get(k)) for k in keys]
    return []


def _recorded_fingerprint(weights: Path) -> tuple[str | None, str | None]:
    """(fingerprint, fingerprinted values) recorded in the metadata of ``weights``; ``None`` where absent."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework='pt', device='cpu') as f:
            metadata = f.metadata() or {}
    except Exception:  # An unreadable file is reported, with its fix, by load_weights.
        return None, None
    return metadata.get(CONFIG_FINGERPRINT_KEY), metadata.get(CONFIG_VALUES_KEY)


def verify_config(config: dict[str, Any], weights: str | os.PathLike, where: str, *,
                  sha256: str | None = None, reference: Callable[[str], dict[str, Any]] | None = None) -> bool:
    """Check ``config`` against the fingerprint recorded for it (the registry pin, else the weights' metadata).

    Published weights are recognised by their sha256, not by the ``tag`` their config names: a config whose tag was
    removed or changed is held to the pins of the weights the folder actually holds, and must name their tag.

    Args:
        config: The parsed ``config.json``.
        weights: Its ``model.safetensors``.
        where: The folder or repository, for messages.
        sha256: The sha256 of ``weights`` when the caller has it already (it is computed otherwise).
        reference: ``architecture.tag`` -> the ``config.json`` of a fresh model of that tag. Given by the models
            layer (this one builds no model), it lets the message name an edited value of published weights whose
            saved values are not recorded; without it the message names the groups of values that may have changed.

    Returns:
        Whether a fingerprint was found and matched; ``False`` for a folder that carries none (saved by an older
        gaternet_zoo and not published), whose values are then only checked against the weights' shapes.

    Raises:
        ChecksumError: ``config.json`` changed after the folder was saved; the message names the edited keys.
    """
    weights = Path(weights)
    expected, values = _recorded_fingerprint(weights)
    anchor = f'the metadata of {WEIGHTS_NAME}'
    arch, tag = config.get('architecture'), (config.get('pretrained_cfg') or {}).get('tag')
    if sha256 is None and weights.is_file():
        sha256 = sha256_file(weights)
    published = registered_weights_of(sha256)
    wrong_tag = None
    if published is not None:
        published_arch, _, published_tag = published.partition('.')
        pinned = get_extra_cfg(published_arch, published_tag).get('config_sha256')
        # The zoo's published weights come with their own config (the registry pins its fingerprint): another
        # config, or the same one with its tag removed, would lend them another card. Weights registered at
        # runtime without a config pin may sit in any folder.
        if pinned:
            expected, anchor = pinned, f'the registry entry of {published}'
            if (arch, tag) != (published_arch, published_tag):
                wrong_tag = (f'pretrained_cfg.tag: {WEIGHTS_NAME} holds the published weights of {published} '
                             f'(sha256 {sha256}), but {CONFIG_NAME} ' + (
                                 f'names {arch}.{tag}' if tag else f'names no tag (architecture {arch})'))
    if expected is None and wrong_tag is None:
        _logger.warning('%s: config.json carries no fingerprint (saved by an older gaternet_zoo); its values are '
                        'checked against the weights only. Save the model again to protect it.', where)
        return False
    actual = config_fingerprint(config)
    edited = None
    if expected is not None and actual != expected.lower():
        found = _edited_values(config, expected.lower(), values, published, reference)
        edited = '; '.join(f'{k} is {now} but was saved as {"unset" if was is None else was}'
                           for k, now, was in found) if found else (
            'a value of architecture, model_args, num_classes or the input settings (the saved values are not '
            'recorded, so the key cannot be named)')
    if wrong_tag is not None:
        raise ChecksumError(
            f'{CONFIG_NAME} of {where} does not describe its weights: {wrong_tag}' + (
                f'; and {edited}' if edited else '') + f'. Its metrics and card would describe other weights. '
            f'Restore the folder\'s {CONFIG_NAME} (download {published} again, or save '
            f'create_model("{published}", pretrained=True) with save_pretrained).')
    if edited is not None:
        raise ChecksumError(
            f'{CONFIG_NAME} of {where} was changed after the model was saved: {edited}. The fingerprint of its model '
            f'values is {actual}, but {anchor} records {expected}. An edited config would silently build a '
            f'different model (other preprocessing, a fresh classifier, other gates). Restore the file (download '
            f'it again with force_download=True) or save the model again with save_pretrained; to fine-tune with '
            f'other classes pass num_classes=... to create_model instead of editing the config.')
    return True
