"""``create_model`` and ``gate``: the zoo's entry points for building models.

Names follow timm's conventions: ``name``, ``name.tag`` (a weight tag), ``hf-hub:org/repo[@revision]`` and
``local-dir:/path``. A name without a prefix that contains ``/``, ``\\`` or ``:`` is refused, because falling
back to a registry model of the same base name would silently load different weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
from torch import nn

from ._hub import CONFIG_NAME, WEIGHTS_NAME, HubLoadError, build_from_config, download, load_weights, read_config
from ._registry import resolve_model_name

__all__ = ['create_model', 'gate', 'parse_model_name', 'load_from_source']

_SOURCES = ('hf-hub', 'local-dir')


def parse_model_name(model_name: str) -> tuple[str | None, str]:
    """Split ``"hf-hub:org/repo@rev"`` / ``"local-dir:/path"`` into (source, identifier).

    Raises:
        ValueError: For an unknown prefix, or a bare name that looks like a path or repository id.
    """
    if model_name.startswith('hf_hub:'):  # timm's deprecated spelling
        model_name = 'hf-hub:' + model_name[len('hf_hub:'):]
    source, sep, ident = model_name.partition(':')
    if sep and source in _SOURCES:
        if not ident:
            raise ValueError(f'{model_name!r} names no {"repository" if source == "hf-hub" else "folder"}.')
        return source, ident
    if any(c in model_name for c in '/\\:'):
        raise ValueError(
            f'{model_name!r} is not a registered model name. For a Hub repository use "hf-hub:{model_name}", for a '
            f'local folder saved with save_pretrained use "local-dir:{model_name}".')
    return None, model_name


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
        raise ValueError(f'Unknown model source {source!r}; use one of {_SOURCES}.')

    return build_from_config(config, weights, source=source, where=where, overrides=overrides)


def _check_architecture(config: dict[str, Any], where: str) -> None:
    arch = config['architecture']
    if not timm.is_model(arch):
        raise HubLoadError(
            f'{where} holds a {arch!r} model, which is not registered. If it comes from another package, import '
            f'that package first; otherwise update gaternet_zoo.')


def create_model(
        model_name: str,
        pretrained: bool = False,
        num_classes: int | None = None,
        *,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: dict[str, Any] | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
) -> nn.Module:
    """Create a zoo model by name, timm style.

    Args:
        model_name: ``gaternet_resnet20``, ``gated_wrn28_10`` (alias), ``name.tag``, ``cifar_resnet20`` (a plain
            backbone), ``hf-hub:org/repo[@revision]`` or ``local-dir:/path``.
        pretrained: Load the published weights of the name's tag (the default tag without one).
        num_classes: Classifier outputs; a different value than the weights' drops their classifier.
        pretrained_cfg: timm pretrained cfg (tag, dict or ``PretrainedCfg``) overriding the name's.
        pretrained_cfg_overlay: Fields to replace in the resolved pretrained cfg.
        checkpoint_path: A ``model.safetensors`` (or a folder holding one) to load strictly after building.
        cache_dir: Hugging Face Hub cache folder.
        revision: Hub revision for ``hf-hub:`` names.
        local_files_only: Use the Hub cache only (as ``HF_HUB_OFFLINE=1``).
        **kwargs: Model arguments (``bottleneck=16``, ``backbone_args={...}``, ``in_chans=1``, ...); ``None``
            values are dropped so that CLI defaults never override a model's own defaults.

    Returns:
        The model, in training mode.

    Examples:
        >>> model = create_model('gaternet_resnet20')
        >>> model = create_model('gated_wrn28_10', pretrained=True)
        >>> model = create_model('hf-hub:gaternet-zoo/gaternet_resnet20.cifar10@v1', num_classes=100)
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    source, identifier = parse_model_name(str(model_name))
    if source is not None:
        if pretrained_cfg is not None:
            raise ValueError('pretrained_cfg cannot be combined with an hf-hub: or local-dir: name.')
        model = load_from_source(source, identifier, revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only, **kwargs)
    else:
        if revision is not None:
            raise ValueError(
                'revision= applies to hf-hub: names; registry tags pin their own revision. Use '
                f'create_model("hf-hub:<org>/{model_name}@<revision>") to load another one.')
        canonical = resolve_model_name(identifier)
        model = timm.create_model(
            canonical, pretrained=pretrained, pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=pretrained_cfg_overlay, cache_dir=cache_dir,
            local_files_only=local_files_only or None, **kwargs)
    if checkpoint_path:
        path = Path(checkpoint_path)
        load_weights(model, path / WEIGHTS_NAME if path.is_dir() else path, label=str(path))
    return model


def gate(
        backbone: str,
        gater: str | None = None,
        bottleneck: int = 8,
        num_classes: int | None = None,
        pretrained_backbone: bool = False,
        pretrained_gater: bool | None = None,
        **kwargs: Any,
) -> nn.Module:
    """Gate any backbone a gating plugin supports: ``gate("resnet50", gater="resnet18", num_classes=100)``.

    Args:
        backbone: timm model name of the backbone.
        gater: timm model name of the gater's feature extractor (any timm classifier: ``"mobilenetv3_small_100"``,
            ``"efficientnet_b0"``, ...); ``cifar_resnet20`` for the zoo's CIFAR backbones, ``resnet18`` otherwise.
        bottleneck: Width of the gater's bottleneck.
        num_classes: Classes; defaults to the backbone's.
        pretrained_backbone: Start the backbone from timm's pretrained weights. The gate slots add no parameters,
            so timm's weights load unchanged.
        pretrained_gater: Start the gater's feature extractor from timm's pretrained weights of ``gater``; by default
            as ``pretrained_backbone`` for a timm gater (the zoo's CIFAR gaters start from scratch).
        **kwargs: Further :class:`~gaternet_zoo.GaterNet` arguments.

    Raises:
        UnsupportedBackboneError: Listing the supported families, if no plugin supports the backbone.
        ValueError: If ``gater`` is not a timm model name.
    """
    from ._plugins import UnsupportedBackboneError, _families_text

    if not timm.is_model(backbone):
        raise UnsupportedBackboneError(
            f'Unknown backbone {backbone!r}: not a timm model name. Supported families: {_families_text()}.')
    if gater is None:
        gater = 'cifar_resnet20' if backbone.startswith('cifar_') else 'resnet18'
    # The backbone arguments the gates need (zero_init_last=False for timm ResNets) come from the gating plugin
    # inside GaterNet, as on every other route.
    if pretrained_backbone:
        kwargs['backbone_args'] = {**(kwargs.get('backbone_args') or {}), 'pretrained': True}
    if pretrained_gater is None:
        pretrained_gater = pretrained_backbone and not gater.startswith('cifar_')
    if pretrained_gater:
        kwargs['gater_args'] = {**(kwargs.get('gater_args') or {}), 'pretrained': True}
    return create_model('gaternet', backbone=backbone, gater=gater, bottleneck=bottleneck, num_classes=num_classes,
                        **kwargs)
