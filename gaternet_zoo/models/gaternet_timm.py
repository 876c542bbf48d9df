"""GaterNets over timm's other CNN families: ResNetV2, ConvNeXt, EfficientNet/MobileNet, RegNet, DenseNet.

Each name pairs one timm backbone with a default gater; the gate sites come from the family's gating plugin
(``gaternet_zoo/plugins/``), which also adds the backbone arguments its gates need. Input settings (size, crop,
interpolation, mean, std) are those of the backbone's default timm weights, so timm's pretrained backbones
(``gate(..., pretrained_backbone=True)``) see the inputs they were trained on.

Default gaters: a ResNet-18, as the zoo's ImageNet ResNets use, for the backbones of ResNet-50 cost
(``resnetv2_50`` 4.1 GMACs, ``convnext_tiny`` 4.5 GMACs); a MobileNetV3-Small 1.0 (0.06 GMACs, 2.5 M parameters)
for the efficient backbones (``efficientnet_b0`` 0.39, ``mobilenetv3_large_100`` 0.22, ``regnety_016`` 1.6,
``densenet121`` 2.8 GMACs), where a ResNet-18 (1.8 GMACs) would cost up to eight times the backbone itself. Any
timm model can replace the default: ``create_model("gaternet_efficientnet_b0", gater="resnet18")``.
"""
from __future__ import annotations

from typing import Any

from timm.models import get_pretrained_cfg, register_model

from .._pretrained import generate_default_cfgs
from .gaternet import GaterNet, _cfg, _create_gaternet

__all__: list[str] = []  # models are reached through the registry

_LIGHT_GATER = 'mobilenetv3_small_100'
_RESNET_GATER = 'resnet18'

#: zoo variant -> (backbone, default gater)
_VARIANTS = {
    'gaternet_resnetv2_50': ('resnetv2_50', _RESNET_GATER),
    'gaternet_convnext_tiny': ('convnext_tiny', _RESNET_GATER),
    'gaternet_efficientnet_b0': ('efficientnet_b0', _LIGHT_GATER),
    'gaternet_mobilenetv3_large_100': ('mobilenetv3_large_100', _LIGHT_GATER),
    'gaternet_regnety_016': ('regnety_016', _LIGHT_GATER),
    'gaternet_densenet121': ('densenet121', _LIGHT_GATER),
}


def _timm_cfg(backbone: str, gater: str) -> dict[str, Any]:
    """ImageNet cfg of a GaterNet: the backbone's timm input settings, its first conv and classifier."""
    b, g = get_pretrained_cfg(backbone), get_pretrained_cfg(gater)
    keys = ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'test_input_size', 'crop_mode')
    inputs = {k: getattr(b, k) for k in keys if getattr(b, k, None) is not None}
    return _cfg(num_classes=1000, **inputs, first_conv=[f'backbone.{b.first_conv}', f'gater.encoder.{g.first_conv}'],
                classifier=f'backbone.{b.classifier}')


default_cfgs = generate_default_cfgs({name: _timm_cfg(*pair) for name, pair in _VARIANTS.items()})


def _timm(variant: str, pretrained: bool, **kwargs: Any) -> GaterNet:
    backbone, gater = _VARIANTS[variant]
    return _create_gaternet(variant, pretrained, **dict(dict(backbone=backbone, gater=gater, bottleneck=8), **kwargs))


@register_model
def gaternet_resnetv2_50(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm pre-activation ResNetV2-50 gated by a ResNet-18 gater (ImageNet, 224x224): 15104 gates."""
    return _timm('gaternet_resnetv2_50', pretrained, **kwargs)


@register_model
def gaternet_convnext_tiny(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ConvNeXt-Tiny gated by a ResNet-18 gater (ImageNet, 224x224): 6624 gates on the MLP outputs."""
    return _timm('gaternet_convnext_tiny', pretrained, **kwargs)


@register_model
def gaternet_efficientnet_b0(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm EfficientNet-B0 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 1808 gates."""
    return _timm('gaternet_efficientnet_b0', pretrained, **kwargs)


@register_model
def gaternet_mobilenetv3_large_100(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm MobileNetV3-Large 1.0 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 2168 gates."""
    return _timm('gaternet_mobilenetv3_large_100', pretrained, **kwargs)


@register_model
def gaternet_regnety_016(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm RegNetY-1.6GF gated by a MobileNetV3-Small gater (ImageNet, 224x224): 8304 gates."""
    return _timm('gaternet_regnety_016', pretrained, **kwargs)


@register_model
def gaternet_densenet121(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm DenseNet-121 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 1856 gates on the new features."""
    return _timm('gaternet_densenet121', pretrained, **kwargs)
