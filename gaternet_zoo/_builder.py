"""Building registered models: timm's ``build_model_with_cfg`` plus the zoo's verified weight loading.

Entry points never let timm load weights (timm's loader checks no checksum and knows no revision pins); they
build with ``pretrained=False`` and then call :func:`load_pretrained_if_requested`, which resolves the weight
source of the model's ``pretrained_cfg`` and loads it through :mod:`gaternet_zoo._hub`.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ._hub import load_pretrained
from ._pretrained import get_extra_cfg, split_pretrained_cfg

__all__ = ['build_with_cfg', 'load_pretrained_if_requested', 'HUB_LOAD_KWARGS']

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
