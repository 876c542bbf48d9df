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

from ._builder import load_from_source
from ._registry import resolve_model_name
from .hub import MODEL_SOURCES, WEIGHTS_NAME, load_weights

__all__ = ['create_model', 'gate', 'parse_model_name', 'load_from_source']


def parse_model_name(model_name: str) -> tuple[str | None, str]:
    """Split ``"hf-hub:org/repo@rev"`` / ``"local-dir:/path"`` into (source, identifier).

    Raises:
        ValueError: For an unknown prefix, or a bare name that looks like a path or repository id.
    """
    if model_name.startswith('hf_hub:'):  # timm's deprecated spelling
        model_name = 'hf-hub:' + model_name[len('hf_hub:'):]
    source, sep, ident = model_name.partition(':')
    if sep and source in MODEL_SOURCES:
        if not ident:
            raise ValueError(f'{model_name!r} names no {"repository" if source == "hf-hub" else "folder"}.')
        return source, ident
    if any(c in model_name for c in '/\\:'):
        raise ValueError(
            f'{model_name!r} is not a registered model name. For a Hub repository use "hf-hub:{model_name}", for a '
            f'local folder saved with save_pretrained use "local-dir:{model_name}".')
    return None, model_name


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
