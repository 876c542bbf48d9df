"""Pretrained-weight metadata that timm's ``PretrainedCfg`` has no field for.

timm's ``PretrainedCfg`` is a closed dataclass: unknown keys make it raise. The zoo needs a few more per weight
tag — the sha256 of ``model.safetensors``, the pinned Hub revision, the dataset, measured metrics and gate
statistics — so model files declare them next to timm's fields with :func:`generate_default_cfgs`, which stores
the extra fields here and hands timm the rest. A ``config.json`` carries the same extra fields inside its
``pretrained_cfg``; :func:`split_pretrained_cfg` separates them again on load.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import warnings
from typing import Any

from timm.models import PretrainedCfg
from timm.models import generate_default_cfgs as _timm_generate_default_cfgs

__all__ = [
    'EXTRA_CFG_KEYS', 'DEFAULT_HUB_ORG', 'HUB_ORG_ENV', 'generate_default_cfgs', 'split_pretrained_cfg',
    'get_extra_cfg', 'resolve_hub_id', 'register_weights', 'registered_weights_of',
]

#: Fields a weight tag may carry beyond timm's ``PretrainedCfg``.
EXTRA_CFG_KEYS = ('sha256', 'revision', 'dataset', 'metrics', 'gate_stats', 'recipe', 'hardware', 'config_sha256',
                  'pruning', 'static_export')

#: Organisation the zoo publishes under, and the environment variable a fork sets to publish under its own.
DEFAULT_HUB_ORG = 'gaternet-zoo'
HUB_ORG_ENV = 'GATERNET_ZOO_HUB_ORG'

_TIMM_FIELDS = {f.name for f in dataclasses.fields(PretrainedCfg)}
_EXTRA_CFGS: dict[str, dict[str, Any]] = {}


def split_pretrained_cfg(cfg: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Split a pretrained-cfg dict into (timm fields, zoo extra fields).

    Raises:
        ValueError: Naming the keys that are neither timm fields nor zoo extras.
    """
    if cfg is None:
        return None, {}
    unknown = sorted(set(cfg) - _TIMM_FIELDS - set(EXTRA_CFG_KEYS))
    if unknown:
        raise ValueError(
            f'Unknown pretrained_cfg keys {unknown}. Allowed: timm PretrainedCfg fields and {list(EXTRA_CFG_KEYS)}.')
    timm_part = {k: v for k, v in cfg.items() if k in _TIMM_FIELDS}
    extras = {k: v for k, v in cfg.items() if k in EXTRA_CFG_KEYS}
    return timm_part, extras


def generate_default_cfgs(cfgs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """timm's ``generate_default_cfgs`` for cfg dicts that may also hold :data:`EXTRA_CFG_KEYS`."""
    timm_cfgs = {}
    for name, cfg in cfgs.items():
        timm_part, extras = split_pretrained_cfg(cfg)
        timm_cfgs[name] = timm_part
        if extras:
            _EXTRA_CFGS[name.rstrip('*')] = extras
    return _timm_generate_default_cfgs(timm_cfgs)


def get_extra_cfg(architecture: str | None, tag: str | None) -> dict[str, Any]:
    """Extra fields registered for ``architecture.tag`` (empty when none)."""
    if not architecture:
        return {}
    key = f'{architecture}.{tag}' if tag else architecture
    return dict(_EXTRA_CFGS.get(key, {}))


def registered_weights_of(sha256: str | None) -> str | None:
    """The ``architecture.tag`` whose registered weights have this sha256, or ``None`` (a linear scan of a few tags).

    Published weights are recognised by their bytes, whatever their ``config.json`` says about them: a folder whose
    ``tag`` was removed or changed is still held to the registry's pins of the weights it actually holds.
    """
    if not sha256:
        return None
    sha256 = sha256.lower()
    for name_tag, extras in _EXTRA_CFGS.items():
        if str(extras.get('sha256') or '').lower() == sha256 and '.' in name_tag:
            return name_tag
    return None


def resolve_hub_id(hf_hub_id: str, revision: str | None = None) -> tuple[str, str | None]:
    """Apply the organisation override and split an optional ``@revision``.

    ``gaternet-zoo/<name>`` becomes ``$GATERNET_ZOO_HUB_ORG/<name>`` when that variable is set, so a fork publishes
    and loads under its own organisation without editing the registry.

    Returns:
        ``(repo_id, revision)``; an explicit ``revision`` argument wins over one in the id.
    """
    repo_id, _, id_revision = hf_hub_id.partition('@')
    org, _, name = repo_id.partition('/')
    override = os.environ.get(HUB_ORG_ENV)
    if override and org == DEFAULT_HUB_ORG:
        repo_id = f'{override}/{name}'
    return repo_id, revision or id_revision or None


def register_weights(
        name_tag: str,
        *,
        sha256: str,
        hf_hub_id: str | None = None,
        file: str | os.PathLike | None = None,
        revision: str | None = None,
        default: bool | None = None,
        **cfg: Any,
) -> str:
    """Register (or replace) the weight tag ``architecture.tag`` of a zoo architecture at runtime.

    The result is the same as declaring the tag in the ``default_cfgs`` of the architecture's model file: the tag's
    ``PretrainedCfg`` goes into the module's ``default_cfgs`` and the entrypoint is registered again with timm's own
    ``register_model``, so ``create_model("arch.tag", pretrained=True)``, ``timm.create_model``, ``torch.hub.load``
    and ``list_models(pretrained=True)`` all see it; ``sha256`` and ``revision`` are kept as the tag's extra fields.
    The new cfg starts from the architecture's untagged cfg (input size, mean, std, ...). A weightless untagged
    placeholder is dropped once the architecture has weights, as if the model file named only tagged entries.

    Args:
        name_tag: ``architecture.tag``, e.g. ``gaternet_resnet20.cifar10``.
        sha256: Hex sha256 of the weights' ``model.safetensors``; loading refuses any other file.
        hf_hub_id: Hub repository ``org/name[@revision]``; the ``gaternet-zoo`` organisation is replaced by
            ``$GATERNET_ZOO_HUB_ORG`` at load time.
        file: A local ``model.safetensors`` (or a folder holding one), instead of ``hf_hub_id``.
        revision: Branch, tag or (preferably) full commit sha to pin on the Hub.
        default: Make the tag the one that the bare architecture name loads. By default the first tag with weights
            becomes the default, as in timm's ``generate_default_cfgs``.
        **cfg: Further timm ``PretrainedCfg`` fields (``license``, ``input_size``, ...) or zoo extra fields
            (``dataset``, ``metrics``, ...).

    Returns:
        The registered ``architecture.tag``.

    Raises:
        ValueError: For a name without tag, an architecture that is not the zoo's, not exactly one of ``hf_hub_id``
            and ``file``, a malformed sha256 or unknown cfg keys.
    """
    from timm.models import is_model, model_entrypoint, register_model, split_model_name_tag

    arch, tag = split_model_name_tag(name_tag)
    if not tag:
        raise ValueError(f'{name_tag!r} names no tag: register weights as "architecture.tag", e.g. "{arch}.cifar10".')
    entrypoint = model_entrypoint(arch) if is_model(arch) else None
    module = sys.modules.get(entrypoint.__module__) if entrypoint is not None else None
    default_cfgs = getattr(module, 'default_cfgs', None) or {}
    if entrypoint is None or not entrypoint.__module__.startswith(f'{__package__}.') or arch not in default_cfgs:
        raise ValueError(f'{arch!r} is not a gaternet_zoo architecture; see gaternet_zoo.list_models().')
    if (hf_hub_id is None) == (file is None):
        raise ValueError(f'{name_tag}: give exactly one weight source, hf_hub_id="org/name" or file="path".')
    if not isinstance(sha256, str) or not re.fullmatch(r'[0-9a-fA-F]{64}', sha256):
        raise ValueError(f'{name_tag}: sha256 must be 64 hex digits (as sha256sum prints), got {sha256!r}.')
    sha256 = sha256.lower()
    timm_part, extras = split_pretrained_cfg(cfg)

    arch_cfgs = default_cfgs[arch]  # timm DefaultCfg: tags (first is the default) and their PretrainedCfgs
    base = arch_cfgs.cfgs.get(tag) or arch_cfgs.cfgs.get('') or arch_cfgs.default
    arch_cfgs.cfgs[tag] = dataclasses.replace(
        base, url=None, state_dict=None, hf_hub_filename=None, hf_hub_id=hf_hub_id,
        file=os.fspath(file) if file is not None else None, **(timm_part or {}))
    was_default = bool(arch_cfgs.tags) and arch_cfgs.tags[0] == tag
    if tag in arch_cfgs.tags:
        arch_cfgs.tags.remove(tag)
    if default if default is not None else (was_default or not arch_cfgs.is_pretrained):
        arch_cfgs.tags.appendleft(tag)
    else:
        arch_cfgs.tags.append(tag)
    placeholder = arch_cfgs.cfgs.get('')
    if placeholder is not None and not placeholder.has_weights:
        del arch_cfgs.cfgs['']
        arch_cfgs.tags.remove('')
    arch_cfgs.is_pretrained = True
    _EXTRA_CFGS[f'{arch}.{tag}'] = {**extras, 'sha256': sha256, **({'revision': revision} if revision else {})}
    with warnings.catch_warnings():  # Registering the same entrypoint again is the point here.
        warnings.filterwarnings('ignore', message=rf'Overwriting {re.escape(arch)} in registry', category=UserWarning)
        register_model(entrypoint)
    return f'{arch}.{tag}'
