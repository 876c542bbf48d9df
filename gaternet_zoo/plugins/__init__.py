"""Built-in gating plugins; importing this package registers them."""
from .native import NativeSlotPlugin
from .timm_resnet import TimmResNetPlugin

__all__ = ['NativeSlotPlugin', 'TimmResNetPlugin']
