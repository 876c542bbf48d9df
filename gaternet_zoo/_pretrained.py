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
from typing import Any

from timm.models import PretrainedCfg
from timm.models import generate_default_cfgs as _timm_generate_default_cfgs

__all__ = [
    'EXTRA_CFG_KEYS', 'DEFAULT_HUB_ORG', 'HUB_ORG_ENV', 'generate_default_cfgs', 'split_pretrained_cfg',
    'get_extra_cfg', 'resolve_hub_id',
]

#: Fields a weight tag may carry beyond timm's ``PretrainedCfg``.
EXTRA_CFG_KEYS = ('sha256', 'revision', 'dataset', 'metrics', 'gate_stats', 'recipe', 'hardware')

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
