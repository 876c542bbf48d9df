"""torch.hub entry points of gaternet_zoo.

    model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet50", trust_repo=True)
    model = torch.hub.load("gaternet-zoo/gaternet_zoo:v0.1.0", "gated_wrn28_10")   # pinned to a tag
    model = torch.hub.load("/path/to/checkout", "gaternet_resnet20", source="local")

Every entry point takes ``pretrained`` (load the default weight tag, sha256-verified: from the Hugging Face Hub at
its pinned revision, else the Hub cache, else the copy in this checkout's ``weights/``, so a local checkout needs
no network) and any model argument (``num_classes=100``, ``bottleneck=16``, ...). ``gated_<x>`` is an alias of
``gaternet_<x>``. Generated from the registry by ``tools/gen_hubconf.py``; a test checks that it is current.
"""
dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors", "yaml"]

from gaternet_zoo import create_model as _create_model
from gaternet_zoo import gate as _gate


def cifar_resnet8(pretrained: bool = False, **kwargs):
    """ResNet-8 for CIFAR (78k params): 1 basic block per stage; a cheap gater (``gater="cifar_resnet8"``).

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "cifar_resnet8",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("cifar_resnet8", pretrained=pretrained, **kwargs)


def cifar_resnet20(pretrained: bool = False, **kwargs):
    """ResNet-20 for CIFAR (0.27M params): 3 basic blocks per stage.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "cifar_resnet20",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("cifar_resnet20", pretrained=pretrained, **kwargs)


def cifar_resnet32(pretrained: bool = False, **kwargs):
    """ResNet-32 for CIFAR: 5 basic blocks per stage.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "cifar_resnet32",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("cifar_resnet32", pretrained=pretrained, **kwargs)


def cifar_resnet44(pretrained: bool = False, **kwargs):
    """ResNet-44 for CIFAR: 7 basic blocks per stage.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "cifar_resnet44",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("cifar_resnet44", pretrained=pretrained, **kwargs)


def cifar_resnet56(pretrained: bool = False, **kwargs):
    """ResNet-56 for CIFAR (0.85M params): 9 basic blocks per stage.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "cifar_resnet56",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("cifar_resnet56", pretrained=pretrained, **kwargs)


def cifar_resnet110(pretrained: bool = False, **kwargs):
    """ResNet-110 for CIFAR (1.7M params): 18 basic blocks per stage.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "cifar_resnet110",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("cifar_resnet110", pretrained=pretrained, **kwargs)


def cifar_resnet164(pretrained: bool = False, **kwargs):
    """Pre-activation ResNet-164 for CIFAR (1.7M params): 18 bottleneck blocks per stage.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "cifar_resnet164",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("cifar_resnet164", pretrained=pretrained, **kwargs)


def cifar_wrn28_10(pretrained: bool = False, **kwargs):
    """Wide ResNet-28-10 for CIFAR (36.5M params); ``block_drop_rate=0.3`` gives the paper's dropout variant.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "cifar_wrn28_10",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("cifar_wrn28_10", pretrained=pretrained, **kwargs)


def gaternet(pretrained: bool = False, **kwargs):
    """A GaterNet over any supported backbone: ``create_model("gaternet", backbone="resnet50", gater="resnet18")``.

    The input settings (size, mean, std) of ``pretrained_cfg`` are taken from the backbone's own timm config.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet", pretrained=pretrained, **kwargs)


def gaternet_convnext_tiny(pretrained: bool = False, **kwargs):
    """timm ConvNeXt-Tiny gated by a ResNet-18 gater (ImageNet, 224x224): 6624 gates on the MLP outputs.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_convnext_tiny",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_convnext_tiny", pretrained=pretrained, **kwargs)


def gated_convnext_tiny(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_convnext_tiny``.

    timm ConvNeXt-Tiny gated by a ResNet-18 gater (ImageNet, 224x224): 6624 gates on the MLP outputs.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_convnext_tiny",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_convnext_tiny", pretrained=pretrained, **kwargs)


def gaternet_densenet121(pretrained: bool = False, **kwargs):
    """timm DenseNet-121 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 1856 gates on the new features.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_densenet121",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_densenet121", pretrained=pretrained, **kwargs)


def gated_densenet121(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_densenet121``.

    timm DenseNet-121 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 1856 gates on the new features.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_densenet121",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_densenet121", pretrained=pretrained, **kwargs)


def gaternet_efficientnet_b0(pretrained: bool = False, **kwargs):
    """timm EfficientNet-B0 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 1808 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_efficientnet_b0",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_efficientnet_b0", pretrained=pretrained, **kwargs)


def gated_efficientnet_b0(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_efficientnet_b0``.

    timm EfficientNet-B0 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 1808 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_efficientnet_b0",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_efficientnet_b0", pretrained=pretrained, **kwargs)


def gaternet_mobilenetv3_large_100(pretrained: bool = False, **kwargs):
    """timm MobileNetV3-Large 1.0 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 2168 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_mobilenetv3_large_100",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_mobilenetv3_large_100", pretrained=pretrained, **kwargs)


def gated_mobilenetv3_large_100(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_mobilenetv3_large_100``.

    timm MobileNetV3-Large 1.0 gated by a MobileNetV3-Small gater (ImageNet, 224x224): 2168 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_mobilenetv3_large_100",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_mobilenetv3_large_100", pretrained=pretrained, **kwargs)


def gaternet_regnety_016(pretrained: bool = False, **kwargs):
    """timm RegNetY-1.6GF gated by a MobileNetV3-Small gater (ImageNet, 224x224): 8304 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_regnety_016",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_regnety_016", pretrained=pretrained, **kwargs)


def gated_regnety_016(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_regnety_016``.

    timm RegNetY-1.6GF gated by a MobileNetV3-Small gater (ImageNet, 224x224): 8304 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_regnety_016",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_regnety_016", pretrained=pretrained, **kwargs)


def gaternet_resnet18(pretrained: bool = False, **kwargs):
    """timm ResNet-18 gated by a ResNet-18 gater (ImageNet, 224x224): 1920 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet18",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet18", pretrained=pretrained, **kwargs)


def gated_resnet18(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnet18``.

    timm ResNet-18 gated by a ResNet-18 gater (ImageNet, 224x224): 1920 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnet18",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet18", pretrained=pretrained, **kwargs)


def gaternet_resnet20(pretrained: bool = False, **kwargs):
    """ResNet-20 gated by a ResNet-20 gater (CIFAR, 32x32): 336 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet20",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet20", pretrained=pretrained, **kwargs)


def gated_resnet20(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnet20``.

    ResNet-20 gated by a ResNet-20 gater (CIFAR, 32x32): 336 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnet20",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet20", pretrained=pretrained, **kwargs)


def gaternet_resnet34(pretrained: bool = False, **kwargs):
    """timm ResNet-34 gated by a ResNet-18 gater (ImageNet, 224x224): 3776 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet34",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet34", pretrained=pretrained, **kwargs)


def gated_resnet34(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnet34``.

    timm ResNet-34 gated by a ResNet-18 gater (ImageNet, 224x224): 3776 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnet34",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet34", pretrained=pretrained, **kwargs)


def gaternet_resnet50(pretrained: bool = False, **kwargs):
    """timm ResNet-50 gated by a ResNet-18 gater (ImageNet, 224x224): 15104 gates on the expanding convs.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet50",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet50", pretrained=pretrained, **kwargs)


def gated_resnet50(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnet50``.

    timm ResNet-50 gated by a ResNet-18 gater (ImageNet, 224x224): 15104 gates on the expanding convs.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnet50",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet50", pretrained=pretrained, **kwargs)


def gaternet_resnet56(pretrained: bool = False, **kwargs):
    """ResNet-56 gated by a ResNet-20 gater (CIFAR, 32x32): 1008 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet56",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet56", pretrained=pretrained, **kwargs)


def gated_resnet56(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnet56``.

    ResNet-56 gated by a ResNet-20 gater (CIFAR, 32x32): 1008 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnet56",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet56", pretrained=pretrained, **kwargs)


def gaternet_resnet101(pretrained: bool = False, **kwargs):
    """timm ResNet-101 gated by a ResNet-18 gater (ImageNet, 224x224): 32512 gates on the expanding convs.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet101",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet101", pretrained=pretrained, **kwargs)


def gated_resnet101(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnet101``.

    timm ResNet-101 gated by a ResNet-18 gater (ImageNet, 224x224): 32512 gates on the expanding convs.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnet101",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet101", pretrained=pretrained, **kwargs)


def gaternet_resnet110(pretrained: bool = False, **kwargs):
    """ResNet-110 gated by a ResNet-20 gater (CIFAR, 32x32): 2016 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet110",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet110", pretrained=pretrained, **kwargs)


def gated_resnet110(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnet110``.

    ResNet-110 gated by a ResNet-20 gater (CIFAR, 32x32): 2016 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnet110",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet110", pretrained=pretrained, **kwargs)


def gaternet_resnet164(pretrained: bool = False, **kwargs):
    """Pre-activation ResNet-164 gated by a ResNet-20 gater (CIFAR, 32x32): 8064 gates on the expanding convs.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet164",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet164", pretrained=pretrained, **kwargs)


def gated_resnet164(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnet164``.

    Pre-activation ResNet-164 gated by a ResNet-20 gater (CIFAR, 32x32): 8064 gates on the expanding convs.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnet164",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnet164", pretrained=pretrained, **kwargs)


def gaternet_resnetv2_50(pretrained: bool = False, **kwargs):
    """timm pre-activation ResNetV2-50 gated by a ResNet-18 gater (ImageNet, 224x224): 15104 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnetv2_50",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnetv2_50", pretrained=pretrained, **kwargs)


def gated_resnetv2_50(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_resnetv2_50``.

    timm pre-activation ResNetV2-50 gated by a ResNet-18 gater (ImageNet, 224x224): 15104 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_resnetv2_50",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_resnetv2_50", pretrained=pretrained, **kwargs)


def gaternet_wrn28_10(pretrained: bool = False, **kwargs):
    """Wide ResNet-28-10 gated by a ResNet-20 gater (CIFAR, 32x32): 4480 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_wrn28_10",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_wrn28_10", pretrained=pretrained, **kwargs)


def gated_wrn28_10(pretrained: bool = False, **kwargs):
    """Alias of ``gaternet_wrn28_10``.

    Wide ResNet-28-10 gated by a ResNet-20 gater (CIFAR, 32x32): 4480 gates.

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gated_wrn28_10",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("gaternet_wrn28_10", pretrained=pretrained, **kwargs)


def gate(backbone: str, gater: str | None = None, **kwargs):
    """Gate any supported timm backbone: ``torch.hub.load(repo, "gate", "resnet50", gater="resnet18")``.

    Args:
        backbone: timm model name of the backbone.
        gater: timm model name of the gater's feature extractor.
        **kwargs: ``bottleneck``, ``num_classes``, ``pretrained_backbone`` and other GaterNet arguments.
    """
    return _gate(backbone, gater=gater, **kwargs)
