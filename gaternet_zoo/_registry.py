"""The zoo's view of timm's model registry: listing, aliases and name suggestions.

Models are registered with timm's own ``@register_model`` (so ``timm.create_model`` finds them after
``import gaternet_zoo``); this module lists the ones that belong to the zoo, resolves the ``gated_<x>`` aliases
of ``gaternet_<x>`` and turns unknown names into errors that suggest the closest registered names.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

import timm
from timm.models import get_pretrained_cfg as _timm_get_pretrained_cfg
from timm.models import split_model_name_tag

__all__ = [
    'list_models', 'list_pretrained', 'list_backbones', 'is_model', 'resolve_model_name', 'get_pretrained_cfg',
    'UnknownModelError', 'ALIAS_PREFIX', 'CANONICAL_PREFIX', 'ZOO_MODULES', 'GATERNET_MODULES',
]

#: timm registry modules that hold the zoo's models (timm keys its registry by the last module name of a model
#: file); ``gaternet_zoo.models`` registers them on import, as timm's ``models`` package does for its own.
ZOO_MODULES = ('cifar_resnet', 'gaternet', 'gaternet_timm')
GATERNET_MODULES = ('gaternet', 'gaternet_timm')

#: ``gated_<x>`` is an alias of ``gaternet_<x>``; listings show the canonical name only.
ALIAS_PREFIX = 'gated_'
CANONICAL_PREFIX = 'gaternet_'


class UnknownModelError(KeyError):
    """Raised for a model name the zoo does not know; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ''


def _canonical(name: str) -> str:
    return CANONICAL_PREFIX + name[len(ALIAS_PREFIX):] if name.startswith(ALIAS_PREFIX) else name


def list_models(
        filter: str | Iterable[str] = '',
        pretrained: bool = False,
        exclude_filters: str | Iterable[str] = '',
        include_tags: bool | None = None,
        include_backbones: bool = False,
) -> list[str]:
    """Names of the zoo's GaterNets, timm style (``fnmatch`` wildcards, natural sort).

    Args:
        filter: Wildcard filter(s); ``gated_*`` filters are read as ``gaternet_*``.
        pretrained: Only names whose weights are published (implies ``include_tags`` unless set).
        exclude_filters: Wildcard filter(s) to drop.
        include_tags: List ``name.tag`` entries; defaults to ``pretrained``.
        include_backbones: Also list the plain CIFAR backbones the zoo adds to timm (``cifar_resnet20``, ...).

    Returns:
        Sorted model names.
    """
    filters = [filter] if isinstance(filter, str) else list(filter)
    filters = [_canonical(f) for f in filters if f]
    modules = ZOO_MODULES if include_backbones else GATERNET_MODULES
    return timm.list_models(
        filters, module=list(modules), pretrained=pretrained, exclude_filters=exclude_filters,
        include_tags=include_tags)


def list_pretrained(filter: str | Iterable[str] = '', include_backbones: bool = True) -> list[str]:
    """``name.tag`` entries with published weights."""
    return list_models(filter, pretrained=True, include_backbones=include_backbones)


def list_backbones(filter: str | Iterable[str] = '') -> list[str]:
    """The plain backbones the zoo registers into timm (``cifar_resnet20`` ... ``cifar_wrn28_10``)."""
    return timm.list_models(filter or '', module=[m for m in ZOO_MODULES if m not in GATERNET_MODULES])


def _known_names() -> list[str]:
    names = list_models(include_backbones=True)
    tagged = list_models(include_backbones=True, include_tags=True)
    aliases = [ALIAS_PREFIX + n[len(CANONICAL_PREFIX):] for n in names if n.startswith(CANONICAL_PREFIX)]
    return sorted(set(names) | set(tagged) | set(aliases))


def is_model(name: str) -> bool:
    """Whether ``name`` (optionally ``name.tag``, or a ``gated_`` alias) is a zoo model."""
    arch, _ = split_model_name_tag(_canonical(name))
    return arch in list_models(include_backbones=True)


def resolve_model_name(name: str) -> str:
    """Canonical ``name[.tag]`` of a zoo model.

    Raises:
        UnknownModelError: With the closest names, for a name or tag the zoo does not know.
    """
    canonical = _canonical(name)
    arch, tag = split_model_name_tag(canonical)
    if arch not in list_models(include_backbones=True):
        close = difflib.get_close_matches(name, _known_names(), n=5, cutoff=0.5)
        hint = f' Did you mean: {", ".join(close)}?' if close else ''
        other = ''
        if timm.is_model(arch):
            other = (f' {arch!r} is a timm model: gate it with gaternet_zoo.gate({arch!r}) or build it plainly '
                     f'with timm.create_model({arch!r}).')
        raise UnknownModelError(
            f'Unknown model {name!r}.{hint}{other} List all zoo models with `gaternet-zoo list` '
            '(gaternet_zoo.list_models() in Python).')
    if tag and canonical not in timm.list_models(arch, include_tags=True):
        tags = [n.split('.', 1)[1] for n in timm.list_models(arch, include_tags=True) if '.' in n]
        raise UnknownModelError(
            f'Unknown weight tag {tag!r} for {arch!r}. Known tags: {", ".join(tags) if tags else "none yet"}.')
    return canonical


def get_pretrained_cfg(name: str):
    """timm ``PretrainedCfg`` of a zoo ``name[.tag]`` (aliases accepted)."""
    return _timm_get_pretrained_cfg(resolve_model_name(name))
