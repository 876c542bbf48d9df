"""Hugging Face Hub format: ``model.safetensors`` + timm-schema ``config.json`` + model card, and their loading.

Built on huggingface_hub's own machinery: :class:`ZooHubMixin` is a ``ModelHubMixin`` (``save_pretrained``,
``push_to_hub``, card metadata), downloads go through ``hf_hub_download`` (its cache, ``HF_HUB_OFFLINE``,
``local_files_only``, revisions), weights are written with ``safetensors.torch.save_model`` and read with
``safetensors.torch.load_model``.

Loading is strict and verified, and never leaves a half-loaded model behind: the sha256 of ``model.safetensors``
is checked against the config (or the registry pin) and the key sets are compared *before* any tensor is copied.

``config.json`` is covered too. Every value of it that changes the model (architecture, ``model_args``,
``num_classes``, the input settings) is fingerprinted (:func:`config_fingerprint`) and the fingerprint is stored in
the metadata of ``model.safetensors``, which the sha256 covers; a folder whose weights predate that (the first
published weights) is covered by the fingerprint its registry entry pins (``config_sha256``). A config edited after
saving is refused before any model is built, instead of silently loading with a fresh head or other gates.

A registry tag's weights are looked for in order: the Hub at the pinned revision, the local Hub cache, then the
copy shipped with the package (``gaternet_zoo/weights/`` in a wheel, ``weights/`` in a source checkout or a
``torch.hub`` checkout). A quick probe keeps an unreachable Hub from costing more than a few seconds, every copy is
held to the registry's sha256, and the log says which one was loaded.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import ModelHubMixin, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import nn

from ._io import display_path, give_umask_mode
from ._pretrained import EXTRA_CFG_KEYS, get_extra_cfg, registered_weights_of, resolve_hub_id, split_pretrained_cfg
from .version import __version__

__all__ = [
    'ZooHubMixin', 'WEIGHTS_NAME', 'CONFIG_NAME', 'HubLoadError', 'ChecksumError', 'StateDictMismatchError',
    'sha256_file', 'download', 'read_config', 'load_pretrained', 'load_weights', 'model_config',
    'save_pretrained', 'clean_state_dict_keys', 'config_fingerprint', 'verify_config', 'CONFIG_FINGERPRINT_KEY',
    'CONFIG_VALUES_KEY', 'NonFiniteWeightsError', 'build_from_config', 'canonical_safetensors_header',
    'save_pretrained', 'clean_state_dict_keys', 'shipped_weights_dirs', 'find_shipped_weights', 'hub_unreachable',
    'SHIP_LIMIT_BYTES', 'load_from_source', 'MODEL_SOURCES', 'timm_pretrained_args',
]

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'

#: Published weights up to this size travel inside the wheel (``setup.py`` applies it); larger ones stay on the Hub
#: and in a source checkout's ``weights/`` folder.
SHIP_LIMIT_BYTES = 16_777_216  # 16 MiB

#: Seconds the reachability probe waits for the Hub before loading goes on with the cache and the shipped copy.
HUB_PROBE_TIMEOUT = 3.0
# An endpoint found unreachable is not probed again for this long (seconds), so a loop of loads pays once.
_PROBE_MEMORY = 60.0
_unreachable_since: dict[str, tuple[float, str]] = {}
_PACKAGE_DIR = Path(__file__).resolve().parent

# Input and provenance fields of timm's PretrainedCfg that belong in a published config.json.
_PUBLISHED_CFG_KEYS = (
    'tag', 'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
    'test_crop_pct', 'crop_mode', 'mean', 'std', 'num_classes', 'label_names', 'pool_size', 'first_conv',
    'classifier', 'license', 'description', 'origin_url', 'paper_name', 'paper_ids', 'notes',
)


#: ``model.safetensors`` metadata key holding the :func:`config_fingerprint` of the config saved with the weights.
CONFIG_FINGERPRINT_KEY = 'gaternet_zoo.config_sha256'
#: ``model.safetensors`` metadata key holding the fingerprinted values themselves (canonical JSON), so that a
#: config edited after saving is refused naming the key that changed.
CONFIG_VALUES_KEY = 'gaternet_zoo.config'

# The pretrained_cfg fields that change what the model computes or how its outputs are read (the input settings,
# the classes); provenance fields (tag, dataset, metrics, card text) are left out, so a re-saved copy of published
# weights has the fingerprint its registry entry pins.
_FINGERPRINTED_CFG_KEYS = (
    'input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
    'test_crop_pct', 'crop_mode', 'mean', 'std', 'num_classes', 'label_names', 'pool_size', 'first_conv',
    'classifier',
)


class HubLoadError(OSError):
    """A repository, revision or file could not be obtained; the message says why and what to do."""


class ChecksumError(ValueError):
    """``model.safetensors`` does not have the sha256 its config or registry entry records."""


class StateDictMismatchError(RuntimeError):
    """A checkpoint's keys or shapes do not match the model; nothing was loaded."""


class NonFiniteWeightsError(ValueError):
    """A checkpoint holds NaN or infinite values (a diverged training run); nothing was loaded."""


def _check_finite_weights(state_dict: dict[str, torch.Tensor], path: Path, label: str) -> None:
    # A model with NaN weights still runs and reports an accuracy (chance level, all gates closed): refuse it.
    bad = [k for k, v in state_dict.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeightsError(
            f'The weights in {path} ({label}) hold NaN or infinite values in {len(bad)} tensor(s): {_short(bad)}. '
            f'They come from a training run that diverged (learning rate too high, or bad data); train again from '
            f'its last good checkpoint with a lower learning rate. Nothing was loaded.')


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


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(',', ':'), ensure_ascii=True)


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical_json(payload).encode('utf-8')).hexdigest()


def config_fingerprint(config: dict[str, Any]) -> str:
    """sha256 of the values of a ``config.json`` that change the model, in a canonical JSON form.

    Covered: ``architecture``, ``num_classes``, ``num_features``, ``model_args`` (gate threshold, pruned filters,
    backbone, gater, ...) and the input/class fields of ``pretrained_cfg`` (input size, interpolation, crop, mean,
    std, label names, classifier ...).
    """
    return _digest(_fingerprint_payload(config))


def _flat_values(payload: dict[str, Any]) -> dict[str, str]:
    """``{'model_args.gate_threshold': '0.49999', 'pretrained_cfg.mean': '[...]', ...}`` (values as canonical JSON)."""
    flat = {k: _canonical_json(payload.get(k)) for k in ('architecture', 'num_classes', 'num_features')}
    for group in ('model_args', 'pretrained_cfg'):
        flat.update({f'{group}.{k}': _canonical_json(v) for k, v in (payload.get(group) or {}).items()})
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


def _edited_values(config: dict[str, Any], expected: str, recorded_values: str | None,
                   name_tag: str | None) -> list[tuple[str, str, str | None]]:
    """``(key, value now, value saved)`` of the fingerprinted values that were edited, as far as they can be known.

    Exact in both cases where it answers: the values saved in the weights' metadata (checked against the recorded
    fingerprint), or, for published weights, the fewest values of a fresh model of their tag that give the pinned
    fingerprint back. Only called for a mismatch, so its cost (a model built without weights) does not matter.
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
    if not name_tag:
        return []
    try:
        reference = _flat_values(_fingerprint_payload(model_config(timm.create_model(name_tag, pretrained=False))))
    except Exception:  # The message falls back to naming the groups of values; never fail while explaining.
        return []
    differing = sorted(k for k in set(now) | set(reference) if now.get(k) != reference.get(k))
    for size in range(1, min(3, len(differing)) + 1):
        for keys in itertools.combinations(differing, size):
            candidate = {k: v for k, v in now.items() if k not in keys}
            candidate.update({k: reference[k] for k in keys if k in reference})
            if _digest(_payload_of(candidate)) == expected:
                return [(k, now.get(k, 'unset'), reference.get(k)) for k in keys]
    return []


def build_from_config(config: dict[str, Any], weights: str | os.PathLike, *, source: str, where: str,
                      overrides: dict[str, Any] | None = None) -> nn.Module:
    """Build the model a verified ``config.json`` describes and strictly load ``weights`` into it.

    The config is checked against its fingerprint first (:func:`verify_config`), so an edited value is refused
    before any layer is allocated; model arguments the architecture does not take are named; a classifier that does
    not fit the weights is a fresh head only when ``overrides`` asks for another ``num_classes``.

    Args:
        config: The parsed ``config.json``.
        weights: Its ``model.safetensors``.
        source: ``"hf-hub"`` or ``"local-dir"`` (recorded in the model's ``pretrained_cfg``).
        where: The folder or repository, for messages.
        overrides: Model arguments that replace the saved ones (``None`` values are ignored).
    """
    weights = Path(weights)
    recorded = (config.get('pretrained_cfg') or {}).get('sha256')
    actual = sha256_file(weights) if weights.is_file() else None  # once: both checks below need it
    if recorded and actual is not None:
        _check_sha256(weights, recorded, actual, where)
    verify_config(config, weights, where, sha256=actual)
    timm_cfg, extras = split_config(config)
    pretrained_cfg = {**timm_cfg, **extras, 'file': str(weights), 'source': source}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    kwargs = {**dict(config.get('model_args') or {}), **overrides}
    kwargs.pop('pretrained_cfg', None)
    try:
        model = timm.create_model(config['architecture'], pretrained=False, pretrained_cfg=pretrained_cfg, **kwargs)
    except TypeError as e:
        if 'argument' not in str(e):
            raise
        raise HubLoadError(
            f'The {CONFIG_NAME} of {where} does not fit its architecture {config["architecture"]!r}: {e}. Its '
            f'model_args name an argument this architecture does not take (the config names another architecture, '
            f'or comes from another gaternet_zoo version); save the model again, or fix the config.') from e
    load_weights(model, weights, label=where, new_classifier_ok='num_classes' in overrides)
    return model


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
                  sha256: str | None = None) -> bool:
    """Check ``config`` against the fingerprint recorded for it (the registry pin, else the weights' metadata).

    Published weights are recognised by their sha256, not by the ``tag`` their config names: a config whose tag was
    removed or changed is held to the pins of the weights the folder actually holds, and must name their tag.

    Args:
        config: The parsed ``config.json``.
        weights: Its ``model.safetensors``.
        where: The folder or repository, for messages.
        sha256: The sha256 of ``weights`` when the caller has it already (it is computed otherwise).

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
        found = _edited_values(config, expected.lower(), values, published)
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


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def download(
        repo_id: str,
        filename: str,
        revision: str | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        token: str | bool | None = None,
) -> Path:
    """``hf_hub_download`` with errors that say what went wrong and how to go on.

    Raises:
        HubLoadError: Repository, revision or file not found, or the Hub unreachable with nothing cached.
    """
    where = f'{repo_id}@{revision}' if revision else repo_id
    try:
        return Path(hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            force_download=force_download, token=token, library_name='gaternet_zoo', library_version=__version__))
    except RevisionNotFoundError as e:
        raise HubLoadError(
            f'Revision {revision!r} not found in Hub repository {repo_id!r}. Check the branch, tag or commit sha '
            f'(list them with huggingface_hub.list_repo_refs({repo_id!r})).') from e
    except RepositoryNotFoundError as e:
        # Some Hub-compatible servers report a missing revision or file as a missing repository.
        raise HubLoadError(
            f'Could not find {filename!r} in Hub repository {where!r} ({constants.ENDPOINT}): the repository, the '
            f'revision or the file does not exist, or it is private and no token was given. Check the name; for a '
            f'private repository log in with `hf auth login` or pass token=...') from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        if constants.HF_HUB_OFFLINE or local_files_only:
            raise HubLoadError(
                f'{filename!r} of {where!r} is not in the local cache ({cache_dir or constants.HF_HUB_CACHE}) and '
                f'offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True). Download it once while online, '
                f'or load a saved folder with create_model("local-dir:/path/to/folder").') from e
        raise HubLoadError(
            f'Could not reach the Hugging Face Hub at {constants.ENDPOINT} to download {filename!r} of {where!r}, '
            f'and it is not in the cache. To work offline with weights downloaded before, set HF_HUB_OFFLINE=1 '
            f'(or pass local_files_only=True); to use a mirror set HF_ENDPOINT; or load a saved folder with '
            f'create_model("local-dir:/path/to/folder").') from e
    except EntryNotFoundError as e:
        raise HubLoadError(f'File {filename!r} not found in Hub repository {where!r}.') from e
    except HFValidationError as e:
        raise HubLoadError(
            f'{repo_id!r} is neither an existing folder nor a valid Hub repository id ("org/name"): {e}') from e
    except HfHubHTTPError as e:
        raise HubLoadError(f'The Hub at {constants.ENDPOINT} refused {filename!r} of {where!r}: {e}') from e


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


def _classifier_keys(model: nn.Module) -> tuple[str, ...]:
    name = model.get_classifier(name_only=True) if hasattr(model, 'get_classifier') else None
    if not isinstance(name, str):
        return ()
    return tuple(f'{name}.{p}' for p, _ in model.get_submodule(name).named_parameters())


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
        _check_sha256(path, sha256, sha256_file(path), label)
    try:
        state_dict = load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError) as e:
        raise HubLoadError(
            f'{path} is not a readable safetensors file ({e}). Download it again with force_download=True or '
            f'save the model again.') from e
    _check_finite_weights(state_dict, path, label)

    cleaned = clean_state_dict_keys(state_dict)
    expected = model.state_dict()
    # load_state_dict casts silently: integer weights (rounded values) would load into float parameters as if
    # they were the trained ones, and float values into integer buffers.
    cast = sorted(f'{k} ({cleaned[k].dtype} into {expected[k].dtype})' for k in cleaned.keys() & expected.keys()
                  if cleaned[k].is_floating_point() != expected[k].is_floating_point())
    if cast:
        raise StateDictMismatchError(
            f'The weights in {path} do not fit {label}: {len(cast)} tensor(s) have the wrong kind of dtype: '
            f'{_short(cast)}. Integer values are not trained float weights (a cast when saving, or another '
            f'format\'s file); save the model again from its float weights. Nothing was loaded.')
    dropped = []
    for key in _classifier_keys(model):
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
        raise StateDictMismatchError(
            f'The weights in {path} do not fit {label}: ' + '; '.join(parts) + '. The checkpoint was saved from '
            'a different architecture or configuration; nothing was loaded.')

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
    return [f'{len(keys)} {kind}: {_short(keys)}' for kind, keys in (
        ('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', mis_shaped)) if keys]


def _check_sha256(path: Path, expected: str, actual: str, label: str) -> None:
    expected = expected.lower()  # hex digests are case-insensitive; ours are written in lower case
    if actual != expected:
        raise ChecksumError(
            f'sha256 mismatch for the weights of {label} ({path}): expected {expected}, got {actual}. The file is '
            f'corrupt or was changed after publishing; download it again with force_download=True, and if it '
            f'persists do not use it.')


def _short(keys: list[str], limit: int = 8) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... (+{len(keys) - limit} more)' if len(keys) > limit else '')


def shipped_weights_dirs() -> list[Path]:
    """Folders that may hold shipped ``<architecture>.<tag>/`` weight folders, in the order they are searched.

    ``gaternet_zoo/weights/`` is where a wheel carries them (package data). A source checkout, an editable install
    and a ``torch.hub`` checkout keep them in the repository's top-level ``weights/`` folder, next to
    ``hubconf.py``.
    """
    dirs = [_PACKAGE_DIR / 'weights']
    root = _PACKAGE_DIR.parent
    if (root / 'hubconf.py').is_file() and (root / 'pyproject.toml').is_file():
        dirs.append(root / 'weights')
    return [d for d in dirs if d.is_dir()]


def find_shipped_weights(name_tag: str) -> Path | None:
    """The shipped ``model.safetensors`` of ``architecture.tag``, or ``None`` (not verified here)."""
    for folder in shipped_weights_dirs():
        path = folder / name_tag / WEIGHTS_NAME
        if path.is_file():
            return path
    return None


def hub_unreachable(endpoint: str | None = None, timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why the Hub at ``endpoint`` (default ``HF_ENDPOINT``) cannot serve downloads now, or ``None`` if it answers.

    One ``HEAD`` of the endpoint with a short timeout and no retry (proxy settings from the environment apply):
    huggingface_hub retries a refused or timed-out download for about 25 s before it gives up, which is too long
    to wait when a verified copy is at hand. Any HTTP answer below 500 counts as reachable. An unreachable endpoint
    is remembered for a minute.
    """
    endpoint = (endpoint or constants.ENDPOINT).rstrip('/')
    seen = _unreachable_since.get(endpoint)
    if seen is not None and time.monotonic() - seen[0] < _PROBE_MEMORY:
        return seen[1]
    reason = None
    start = time.monotonic()
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint + '/', method='HEAD'), timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            reason = f'it answered HTTP {e.code}'
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, 'reason', None) or e
        reason = f'{why} after {time.monotonic() - start:.1f} s'
    if reason is not None:
        _unreachable_since[endpoint] = (time.monotonic(), reason)
    return reason


#: The files timm's loader tries, in this order, in a timm weights repository on the Hub.
_TIMM_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')


def timm_pretrained_args(model_name: str, create_args: dict[str, Any], *,
                         option: str = 'backbone_args') -> dict[str, Any]:
    """``timm.create_model`` arguments that load ``model_name``'s timm weights without a slow failure offline.

    With ``pretrained=True`` and the Hub unreachable, timm's download retries each of its files for about 25 s
    before it gives up with a generic error (46 s in all for a ResNet-18). One quick probe (:func:`hub_unreachable`)
    decides first: if the Hub answers, or ``HF_HUB_OFFLINE=1`` and the weights are cached, nothing changes; if the
    Hub is unreachable but the weights are in the local Hub cache, timm is pointed at the cached file
    (``pretrained_cfg_overlay={'file': ...}``, timm's own override); otherwise an error says how to go on, at once.

    Args:
        model_name: timm model name (``resnet18``, ``resnet18.tv_in1k``).
        create_args: The keyword arguments meant for ``timm.create_model``.
        option: The argument that carried them, named in the error (``backbone_args`` or ``gater_args``).

    Returns:
        ``create_args``, or a copy that names the cached file.

    Raises:
        HubLoadError: The weights are neither reachable nor cached; the message names ``HF_HUB_OFFLINE=1`` and a
            local file as the ways out.
    """
    overlay = dict(create_args.get('pretrained_cfg_overlay') or {})
    if not create_args.get('pretrained') or overlay.get('file') or overlay.get('state_dict') or \
            create_args.get('pretrained_cfg') is not None:
        return create_args  # nothing to download, or the caller chose the source
    cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=True)
    if cfg is None or not cfg.hf_hub_id or cfg.file:
        return create_args
    repo_id, _, revision = cfg.hf_hub_id.partition('@')
    cache_dir = create_args.get('cache_dir')
    names = ((cfg.hf_hub_filename,) if cfg.hf_hub_filename else ()) + _TIMM_WEIGHT_FILES
    cached = next((found for name in names if isinstance(found := try_to_load_from_cache(
        repo_id, name, cache_dir=cache_dir, revision=revision or None), str)), None)
    if constants.HF_HUB_OFFLINE:
        if cached is not None:
            return create_args  # timm reads the cache without a request
        why = 'offline mode is on (HF_HUB_OFFLINE=1)'
    else:
        reason = hub_unreachable()
        if reason is None:
            return create_args
        if cached is not None:
            _logger.info('%s: the Hub at %s is unreachable (%s); using the weights in the local Hub cache (%s).',
                         model_name, constants.ENDPOINT, reason, display_path(cached))
            return {**create_args, 'pretrained_cfg_overlay': {**overlay, 'file': cached}}
        why = f'the Hub at {constants.ENDPOINT} is unreachable ({reason})'
    raise HubLoadError(
        f"No pretrained weights for {model_name!r} (timm's {cfg.hf_hub_id}): {why}, and they are not in the local "
        f"Hub cache ({display_path(cache_dir or constants.HF_HUB_CACHE)}). Either fetch them once where the Hub is "
        f"reachable (`hf download {repo_id}`, or copy that Hub cache here) and then set HF_HUB_OFFLINE=1 to load "
        f"them without a network; or pass a local file: {option}=dict(pretrained_cfg_overlay=dict("
        f"file='/path/to/model.safetensors')); or start from scratch (pretrained_backbone=False).")


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
    the package (see :func:`find_shipped_weights`); ``force_download=True`` accepts the Hub only.

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
        weights, where, passed_over = _resolve_hub_weights(
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


def _resolve_hub_weights(
        name_tag: str,
        repo_id: str,
        revision: str | None,
        *,
        architecture: str | None,
        cache_dir: str | os.PathLike | None,
        local_files_only: bool,
        force_download: bool,
        token: str | bool | None,
) -> tuple[Path, str, str | None]:
    """(``model.safetensors``, where it came from, why the Hub was passed over) of a registry tag.

    The Hub comes first, then the local Hub cache, then the shipped copy. The reason is set only when the shipped
    copy is used although offline mode is off; :func:`load_pretrained` says it in its one notice.
    """
    where = f'{repo_id}@{revision or "main"}'
    hub = dict(cache_dir=cache_dir, token=token)
    offline = local_files_only or constants.HF_HUB_OFFLINE
    if offline:
        hub_failure = 'offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)'
    else:
        hub_failure = hub_unreachable()
        if hub_failure is None:
            try:
                path = download(repo_id, WEIGHTS_NAME, revision, force_download=force_download, **hub)
                return path, f'the Hub ({constants.ENDPOINT}, {where})', None
            except HubLoadError as e:
                if force_download:
                    raise
                hub_failure = str(e)
        else:
            if force_download:
                raise HubLoadError(f'force_download=True, but the Hub at {constants.ENDPOINT} is unreachable: '
                                   f'{hub_failure}.')
            hub_failure = f'the Hub at {constants.ENDPOINT} is unreachable: {hub_failure}'
    try:
        path = download(repo_id, WEIGHTS_NAME, revision, local_files_only=True, **hub)
        return path, f'the local Hub cache ({where})', None
    except HubLoadError:
        pass
    shipped = find_shipped_weights(name_tag)
    if shipped is not None:
        source = f'the copy shipped with gaternet_zoo ({display_path(shipped)})'
        # In offline mode the user asked for local weights; otherwise the notice says why the Hub was passed over.
        return shipped, source, None if offline else hub_failure.rstrip('.')
    searched = ', '.join(str(d) for d in shipped_weights_dirs()) or 'no weights folder found'
    raise HubLoadError(
        f'No weights for {name_tag}: {hub_failure.rstrip(".")}; {where} is not in the local Hub cache '
        f'({cache_dir or constants.HF_HUB_CACHE}); and no copy is shipped with gaternet_zoo (searched: {searched}; '
        f'a wheel carries only weights up to {SHIP_LIMIT_BYTES >> 20} MiB, a source checkout\'s weights/ folder '
        f'every published tag). To get them: on a machine that reaches the Hub run `hf download {repo_id} '
        f'--revision {revision or "main"} --local-dir DIR` and load create_model("local-dir:DIR"), or copy its Hub '
        f'cache here; or use a git checkout of gaternet_zoo; or train them with `accelerate launch '
        f'recipes/train.py --model {architecture}` (recipes/configs/ holds the published recipes).')


def model_config(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The timm-schema ``config.json`` content describing ``model`` (without the weights' sha256)."""
    cfg = dict(getattr(model, 'pretrained_cfg', {}) or {})
    published = {k: cfg[k] for k in _PUBLISHED_CFG_KEYS if cfg.get(k) is not None and (k != 'tag' or cfg[k])}
    published.update({k: cfg[k] for k in EXTRA_CFG_KEYS
                      if cfg.get(k) is not None and k not in ('sha256', 'revision', 'config_sha256')})
    published.update(extra or {})
    published['num_classes'] = model.num_classes
    model_args = dict(getattr(model, '_hub_mixin_config', None) or {})
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


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (with the weights' sha256) into ``save_directory``.

    The same model saved twice gives the same bytes (see :func:`_save_weights`), so a published sha256 can be
    reproduced.
    """
    model = getattr(model, '_orig_mod', model)
    bad = [k for k, v in model.state_dict().items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeightsError(
            f'Refusing to save {type(model).__name__} to {save_directory}: {len(bad)} tensor(s) hold NaN or infinite '
            f'values ({_short(bad)}). The model diverged in training (learning rate too high, or bad data); save it '
            f'from its last good checkpoint instead.')
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    weights = save_directory / WEIGHTS_NAME
    config = model_config(model, extra)
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
                                       CONFIG_VALUES_KEY: _canonical_json(_fingerprint_payload(config))})
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


#: The prefixes of model names that load from a source rather than the registry (``hf-hub:``, ``local-dir:``).
MODEL_SOURCES = ('hf-hub', 'local-dir')


def load_from_source(
        source: str,
        identifier: str,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        token: str | bool | None = None,
        **overrides: Any,
) -> nn.Module:
    """Build and strictly load a model from a Hub repository or a folder holding ``config.json`` + weights.

    Args:
        source: ``"hf-hub"`` or ``"local-dir"``.
        identifier: ``org/repo[@revision]`` or a folder path.
        revision: Branch, tag or commit sha (Hub only; wins over one given in ``identifier``).
        cache_dir: Hub cache folder.
        local_files_only: Use the Hub cache only.
        force_download: Download again even if cached.
        token: Hub token.
        **overrides: Model arguments that replace the saved ones (``num_classes=...`` for fine-tuning).
    """
    if source == 'hf-hub':
        repo_id, _, id_revision = identifier.partition('@')
        revision = revision or id_revision or None
        hub = dict(cache_dir=cache_dir, local_files_only=local_files_only, force_download=force_download,
                   token=token)
        config_path = download(repo_id, CONFIG_NAME, revision, **hub)
        config = read_config(config_path)
        _check_architecture(config, f'hf-hub:{identifier}')
        weights = download(repo_id, WEIGHTS_NAME, revision, **hub)
        where = f'{repo_id}@{revision}' if revision else repo_id
    elif source == 'local-dir':
        folder = Path(identifier).expanduser()
        if not folder.is_dir():
            raise HubLoadError(f'local-dir:{identifier}: no such folder.')
        config = read_config(folder / CONFIG_NAME)
        _check_architecture(config, f'local-dir:{identifier}')
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise HubLoadError(f'No {WEIGHTS_NAME} in {folder}: save the model with model.save_pretrained(folder).')
        where = str(folder)
    else:
        raise ValueError(f'Unknown model source {source!r}; use one of {MODEL_SOURCES}.')

    return build_from_config(config, weights, source=source, where=where, overrides=overrides)


def _check_architecture(config: dict[str, Any], where: str) -> None:
    arch = config['architecture']
    if not timm.is_model(arch):
        raise HubLoadError(
            f'{where} holds a {arch!r} model, which is not registered. If it comes from another package, import '
            f'that package first; otherwise update gaternet_zoo.')


class ZooHubMixin(
    ModelHubMixin,
    library_name='gaternet_zoo',
    license='apache-2.0',
    pipeline_tag='image-classification',
    tags=['gaternet', 'dynamic-network', 'image-classification', 'timm'],
    repo_url='https://github.com/gaternet-zoo/gaternet_zoo',
    paper_url='https://arxiv.org/abs/1811.11205',
):
    """Hub integration of the zoo's models: ``save_pretrained``, ``from_pretrained`` and ``push_to_hub``.

    The saved ``config.json`` follows timm's schema (``architecture``, ``num_classes``, ``num_features``,
    ``model_args``, ``pretrained_cfg``), so the folder also loads with ``create_model("local-dir:...")`` and
    ``timm.create_model("hf-hub:...")``. ``from_pretrained`` is strict, verifies the sha256 and leaves the
    train/eval mode as built (train) for the caller to choose.
    """

    def _save_pretrained(self, save_directory: Path) -> None:
        save_pretrained(self, save_directory)
        # The card quotes the weights' sha256: record it, and drop a card left from earlier weights (the mixin
        # only writes README.md when there is none).
        config = json.loads((save_directory / CONFIG_NAME).read_text())
        self.pretrained_cfg['sha256'] = config['pretrained_cfg']['sha256']
        for key in ('tag', 'dataset'):  # dropped on save if they named other weights; the card follows config.json
            if key not in config['pretrained_cfg']:
                self.pretrained_cfg[key] = None
        (save_directory / CARD_NAME).unlink(missing_ok=True)

    def generate_model_card(self, *args: Any, **kwargs: Any):  # noqa: D102
        from ._model_card import render_model_card

        return render_model_card(self, **kwargs)

    @classmethod
    def from_pretrained(
            cls,
            pretrained_model_name_or_path: str | os.PathLike,
            *,
            force_download: bool = False,
            token: str | bool | None = None,
            cache_dir: str | os.PathLike | None = None,
            local_files_only: bool = False,
            revision: str | None = None,
            **model_kwargs: Any,
    ) -> nn.Module:
        """Load a model from a Hub repository id (``org/name``) or a local folder saved by ``save_pretrained``.

        Args:
            pretrained_model_name_or_path: Repository id or folder.
            force_download: Download again even if cached.
            token: Hub token for private repositories.
            cache_dir: Hub cache folder.
            local_files_only: Use the cache only (as ``HF_HUB_OFFLINE=1``).
            revision: Branch, tag or commit sha to pin.
            **model_kwargs: Overrides of the saved model arguments, e.g. ``num_classes=5`` for fine-tuning.
        """
        source = str(pretrained_model_name_or_path)
        looks_like_path = os.path.isabs(source) or source.startswith(('.', '~')) or os.sep + os.sep in source
        if looks_like_path and not os.path.isdir(os.path.expanduser(source)):
            raise HubLoadError(f'{source}: no such folder (and a path is not a Hub repository id).')
        kind = 'local-dir' if os.path.isdir(os.path.expanduser(source)) else 'hf-hub'
        model = load_from_source(
            kind, source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            force_download=force_download, token=token, **model_kwargs)
        if not isinstance(model, cls):
            raise TypeError(
                f'{source} holds a {type(model).__name__} ({model.pretrained_cfg.get("architecture")}), not a '
                f'{cls.__name__}; load it with gaternet_zoo.create_model instead.')
        return model

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | os.PathLike | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         **model_kwargs: Any) -> nn.Module:
        model_kwargs.pop('config', None)
        return cls.from_pretrained(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                   local_files_only=local_files_only, token=token, **model_kwargs)


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (timm pretrained_cfg, zoo extras) of a loaded ``config.json``."""
    timm_cfg, extras = split_pretrained_cfg(dict(config.get('pretrained_cfg') or {}))
    return timm_cfg or {}, extras
