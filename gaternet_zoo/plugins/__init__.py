"""Built-in gating plugins; importing this package registers them."""
from .native import NativeSlotPlugin
from .timm_convnext import TimmConvNeXtPlugin
from .timm_densenet import TimmDenseNetPlugin
from .timm_efficientnet import TimmEfficientNetPlugin
from .timm_regnet import TimmRegNetPlugin
from .timm_resnet import TimmResNetPlugin
from .timm_resnetv2 import TimmResNetV2Plugin

__all__ = [
    'NativeSlotPlugin', 'TimmConvNeXtPlugin', 'TimmDenseNetPlugin', 'TimmEfficientNetPlugin', 'TimmRegNetPlugin',
    'TimmResNetPlugin', 'TimmResNetV2Plugin',
]
