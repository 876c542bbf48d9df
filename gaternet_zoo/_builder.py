"""Building models: the one place where the zoo's models are assembled, whatever the source of their weights.

Registered architectures are built by :func:`build_with_cfg` (timm's ``build_model_with_cfg`` plus the zoo's
verified weight loading), which every model file's entrypoint calls. A model saved in the Hub format
(``hf-hub:org/repo``, ``local-dir:/path``, ``ZooHubMixin.from_pretrained``) is built by :func:`build_from_config`
from the files the hub layer (:mod:`gaternet_zoo.hub`) fetches and verifies: it goes through the registry's
entrypoint too, so ``create_model``, ``timm.create_model``, ``torch.hub.load`` and ``from_pretrained`` all end in
:func:`build_with_cfg`.

Entry points never let timm load weights (timm's loader checks no checksum and knows no revision pins); they
build with ``pretrained=False`` and then load through :mod:`gaternet_zoo.hub`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
from torch import nn

from ._pretrained import get_extra_cfg, split_pretrained_cfg
from .hub import (
    CONFIG_NAME,
    HubLoadError,
    SourceFiles,
    check_sha256,
    load_pretrained,
    load_weights,
    model_config,
    read_config,
    sha256_file,
    source_files,
    split_config,
    verify_config,
)

__all__ = ['build_with_cfg', 'load_pretrained_if_requested', 'HUB_LOAD_KWARGS', 'build_from_config',
           'build_from_files', 'load_from_source']

#: Keyword arguments entry points accept for the download itself; they never reach the model class.
HUB_LOAD_KWARGS = ('cache_dir', 'local_files_only', 'force_download', 'token')


def build_with_cfg(model_cls: type[nn.Module], variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``model_cls`` for ``variant`` with timm's builder and load verified weights if ``pretrained``.

    ``pretrained_cfg`` may be a tag, a timm ``PretrainedCfg`` or a dict holding zoo extra fields (sha256, metrics,
    ...) as read from a ``config.json``; those fields end up in ``model.pretrained_cfg`` next to timm's.
    """
    from timm.models import build_model_with_cfg

    load_kwargs = {k: kwargs.pop(k) for k in HUB_LOAD_KWARGS if k in kwargs}
    pretrained_cfg = kwargs.pop('pretrained_cfg', None)
    extras: dict[str, Any] = {}
    if isinstance(pretrained_cfg, dict):
        pretrained_cfg, extras = split_pretrained_cfg(pretrained_cfg)
    model = build_model_with_cfg(model_cls, variant, pretrained=False, pretrained_cfg=pretrained_cfg, **kwargs)
    cfg = model.pretrained_cfg
    # Registered extras first (sha256 and revision of a registry tag), then those that came with the config.
    cfg.update({**get_extra_cfg(cfg.get('architecture'), cfg.get('tag')), **extras})
    return load_pretrained_if_requested(model, pretrained, **load_kwargs)


def load_pretrained_if_requested(model: nn.Module, pretrained: bool, **load_kwargs: Any) -> nn.Module:
    """Load the weights named by ``model.pretrained_cfg`` when ``pretrained`` is true; return the model."""
    if pretrained:
        load_pretrained(model, **load_kwargs)
    return model


def _fresh_config(name_tag: str) -> dict[str, Any]:
    # What verify_config compares an edited config of published weights with, to name the edited value.
    return model_config(timm.create_model(name_tag, pretrained=False))


def build_from_config(config: dict[str, Any], weights: str | os.PathLike, *, source: str, where: str,
                      overrides: dict[str, Any] | None = None) -> nn.Module:
    """Build the model a verified ``config.json`` describes and strictly load ``weights`` into it.

    The config is checked against its fingerprint first (:func:`~gaternet_zoo.hub.verify_config`), so an edited
    value is refused before any layer is allocated; model arguments the architecture does not take are named; a
    classifier that does not fit the weights is a fresh head only when ``overrides`` asks for another
    ``num_classes``.

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
        check_sha256(weights, recorded, actual, where)
    verify_config(config, weights, where, sha256=actual, reference=_fresh_config)
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


def build_from_files(files: SourceFiles, config: dict[str, Any] | None = None, *,
                     overrides: dict[str, Any] | None = None) -> nn.Module:
    """Build the model saved in ``files``: its config is read (unless given) and checked before the weights come.

    Args:
        files: A repository's or folder's files (:func:`~gaternet_zoo.hub.source_files`).
        config: Its ``config.json`` when the caller read it already (``ZooHubMixin.from_pretrained`` does).
        overrides: Model arguments that replace the saved ones (``num_classes=...`` for fine-tuning).

    Raises:
        HubLoadError: A file cannot be obtained, or the config names an architecture that is not registered.
    """
    if config is None:
        config = read_config(files.config_path())
    _check_architecture(config, files.name)  # before downloading weights no registered model could take
    return build_from_config(config, files.weights_path(), source=files.source, where=files.where,
                             overrides=overrides)


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
    files = source_files(source, identifier, revision=revision, cache_dir=cache_dir,
                         local_files_only=local_files_only, force_download=force_download, token=token)
    return build_from_files(files, overrides=overrides)


def _check_architecture(config: dict[str, Any], where: str) -> None:
    arch = config['architecture']
    if not timm.is_model(arch):
        raise HubLoadError(
            f'{where} holds a {arch!r} model, which is not registered. If it comes from another package, import '
            f'that package first; otherwise update gaternet_zoo.')
