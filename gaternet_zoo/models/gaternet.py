"""GaterNet: a backbone CNN whose filters are switched on and off per input by a separate gater network.

Chen, Li, Bengio, Si, "You Look Twice: GaterNet for Dynamic Filter Selection in CNNs", CVPR 2019
(arXiv:1811.11205). The mechanism follows the released evaluation code (google-research/google-research
``gaternet/``, Apache-2.0): the gater is a ResNet-20 feature extractor, ``FC -> bottleneck (8) -> ReLU -> FC`` to one
logit per gated filter, binarised with Improved SemHash; the backbone multiplies the output of the last conv of
every residual branch (after its norm, before the residual add) by its gates.

Both networks are ordinary timm models: the backbone keeps its timm ``state_dict`` keys (a gating plugin places
parameter-free gate slots into it) and the gater's encoder is any timm model built with ``num_classes=0``.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models import get_pretrained_cfg, register_model
from torch import nn

from .._builder import build_with_cfg
from .._hub import ZooHubMixin
from .._plugins import GateSite, find_plugin, get_plugin
from .._pretrained import generate_default_cfgs
from ..layers.gater import Gater
from ..layers.gates import DEFAULT_THRESHOLD, GateContext, GateSlot, ImprovedSemHash
from .cifar_resnet import CIFAR10_MEAN, CIFAR10_STD

__all__ = ['GaterNet']


class GaterNet(nn.Module, ZooHubMixin):
    """A backbone gated filter by filter by a global gater network.

    Every constructor argument is JSON-serialisable, so a model is rebuilt from its ``config.json`` alone.

    Args:
        backbone: timm model name of the backbone (any model a gating plugin supports).
        gater: timm model name of the gater's feature extractor.
        num_classes: Classes of the backbone's classifier.
        in_chans: Input channels (the same image goes to both networks).
        bottleneck: Width of the gater's bottleneck.
        bottleneck_norm: ``BatchNorm1d`` before the bottleneck ReLU (paper text) instead of none (released code).
        gate_noise_std: Standard deviation of the training noise on the gate logits.
        gate_discrete_prob: Per-sample probability of discrete gates in training.
        gate_threshold: Step threshold of the binarisation.
        plugin: Name of the gating plugin; found from the backbone when ``None``.
        backbone_args: Extra keyword arguments for ``timm.create_model(backbone, ...)``.
        gater_args: Extra keyword arguments for ``timm.create_model(gater, ...)``.
        drop_rate: Dropout before the backbone's classifier.
    """

    def __init__(
            self,
            backbone: str = 'cifar_resnet20',
            gater: str = 'cifar_resnet20',
            num_classes: int = 10,
            in_chans: int = 3,
            bottleneck: int = 8,
            bottleneck_norm: bool = False,
            gate_noise_std: float = 1.0,
            gate_discrete_prob: float = 0.5,
            gate_threshold: float = DEFAULT_THRESHOLD,
            plugin: str | None = None,
            backbone_args: dict[str, Any] | None = None,
            gater_args: dict[str, Any] | None = None,
            drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        import timm  # imported here so that gaternet_zoo's own models are registered first

        self.in_chans = in_chans
        self.backbone_name = backbone
        self.gater_name = gater
        backbone_kwargs = dict(backbone_args or {})
        if drop_rate:
            backbone_kwargs['drop_rate'] = drop_rate
        self.backbone = timm.create_model(backbone, num_classes=num_classes, in_chans=in_chans, **backbone_kwargs)
        gating_plugin = get_plugin(plugin) if plugin else find_plugin(self.backbone, backbone)
        if not gating_plugin.supports(self.backbone):
            raise ValueError(f'Gating plugin {gating_plugin.name!r} does not support backbone {backbone!r}.')
        self.plugin_name = gating_plugin.name

        # Gate slots are parameter-free and share one context: the backbone's state_dict keys stay timm's.
        self._gate_context = GateContext()
        sites = gating_plugin.gate_sites(self.backbone)
        for site in sites:
            gating_plugin.install(
                self.backbone, site, GateSlot(self._gate_context, site.offset, site.num_channels, site.name))
        self.gate_sites: tuple[GateSite, ...] = tuple(sites)
        self.gate_size = sum(s.num_channels for s in sites)

        encoder = timm.create_model(gater, num_classes=0, in_chans=in_chans, **(gater_args or {}))
        binarizer = ImprovedSemHash(gate_noise_std, gate_discrete_prob, gate_threshold)
        self.gater = Gater(encoder, self.gate_size, bottleneck, bottleneck_norm, binarizer)

        self.num_features = self.backbone.num_features
        self.head_hidden_size = getattr(self.backbone, 'head_hidden_size', self.num_features)

    # ----------------------------------------------------------------------------------------- timm contract
    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> str | nn.Module:
        if name_only:
            return 'backbone.' + self.backbone.get_classifier(name_only=True)
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the backbone's classifier (the gater is unaffected)."""
        if global_pool is None:
            self.backbone.reset_classifier(num_classes)
        else:
            self.backbone.reset_classifier(num_classes, global_pool)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the gater's encoder.

        The backbone is not checkpointed: its gates reach the slots through the model's gate context, which holds
        them only during the forward call, so a recomputation in the backward pass would run ungated.
        """
        self.gater.encoder.set_grad_checkpointing(enable)

    # ------------------------------------------------------------------------------------------ gate API
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'GaterNet expects a torch.Tensor of shape (B, {self.in_chans}, H, W), got {type(x)}.')
        if x.ndim != 4:
            hint = ' Add a batch dimension with x.unsqueeze(0).' if x.ndim == 3 else ''
            raise ValueError(
                f'GaterNet expects a 4-D input of shape (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}.{hint}')
        if x.shape[1] != self.in_chans:
            hint = ''
            if x.shape[-1] == self.in_chans:
                hint = ' The input looks channels-last (B, H, W, C): use x.permute(0, 3, 1, 2).'
            raise ValueError(
                f'GaterNet expects {self.in_chans} input channels, got shape {tuple(x.shape)} '
                f'({x.shape[1]} channels).{hint} For other channel counts build the model with in_chans=...')

    def _check_gates(self, gates: torch.Tensor, batch_size: int) -> None:
        if gates.ndim != 2 or gates.shape[1] != self.gate_size or gates.shape[0] not in (1, batch_size):
            raise ValueError(
                f'gates must have shape ({batch_size}, {self.gate_size}) (or (1, {self.gate_size}) to share one '
                f'gate vector across the batch), got {tuple(gates.shape)}. This model has {self.gate_size} gates '
                f'over {len(self.gate_sites)} sites; see model.gate_sites.')

    def forward_gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Gater pre-activations ``g'``, shape B x gate_size."""
        self._check_input(x)
        return self.gater.forward_logits(x)

    def forward_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Gates for ``x``, shape B x gate_size (binary in eval mode)."""
        self._check_input(x)
        return self.gater(x)

    def forward_features(self, x: torch.Tensor, gates: torch.Tensor | None = None) -> torch.Tensor:
        """Unpooled backbone features, with the gater's gates or the ``gates`` given."""
        self._check_input(x)
        if gates is None:
            gates = self.gater(x)
        else:
            self._check_gates(gates, x.shape[0])
            if gates.shape[0] == 1 and x.shape[0] > 1:
                gates = gates.expand(x.shape[0], -1)
        self._gate_context.gates = gates
        try:
            return self.backbone.forward_features(x)
        finally:
            self._gate_context.gates = None

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def forward_with_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the gates that produced them (what training needs for the gate loss)."""
        self._check_input(x)
        gates = self.gater(x)
        return self.forward_head(self.forward_features(x, gates)), gates

    def forward(self, x: torch.Tensor, gates: torch.Tensor | None = None,
                return_gates: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; ``gates`` (B x gate_size) replaces the gater's output, for ablations and analysis.

        With ``return_gates=True``, ``(logits, gates)``: what training needs for the gate loss, through ``forward``
        so that DDP and ``torch.compile`` wrappers see the call.
        """
        if return_gates:
            if gates is not None:
                raise ValueError('return_gates=True returns the gater\'s own gates; do not pass gates= with it.')
            return self.forward_with_gates(x)
        return self.forward_head(self.forward_features(x, gates))

    def gate_site_table(self) -> list[dict[str, Any]]:
        """One row per gate site: block name, gated conv, channels and offset into the gate vector."""
        return [dict(name=s.name, conv=s.conv, channels=s.num_channels, offset=s.offset) for s in self.gate_sites]

    def split_gates(self, gates: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a B x gate_size gate tensor into one B x channels tensor per gate site."""
        self._check_gates(gates, gates.shape[0])
        return {s.name: gates[:, s.offset:s.offset + s.num_channels] for s in self.gate_sites}


def _create_gaternet(variant: str, pretrained: bool = False, **kwargs: Any) -> GaterNet:
    if kwargs.pop('features_only', False):
        raise ValueError(
            f'{variant} does not support features_only: its features depend on the gater. Use '
            'model.forward_features(x) for unpooled backbone features, or model.forward_gates(x) for the gates.')
    return build_with_cfg(GaterNet, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (8, 8), 'crop_pct': 1.0,
        'interpolation': 'bilinear', 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD,
        'first_conv': ['backbone.conv', 'gater.encoder.conv'], 'classifier': 'backbone.fc',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:1811.11205',
        'paper_name': 'You Look Twice: GaterNet for Dynamic Filter Selection in CNNs', **kwargs,
    }


def _in1k_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(**{
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_pct': 0.875,
        'interpolation': 'bilinear', 'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': ['backbone.conv1', 'gater.encoder.conv1'], **kwargs,
    })


default_cfgs = generate_default_cfgs({
    'gaternet': _cfg(),
    # Trained here with recipes/configs/cifar10_gaternet_resnet20.yaml for 30 epochs, same schedule, augmentation
    # and seed as cifar_resnet20.cifar10 (weights/gaternet_resnet20.cifar10/; docs/results.md compares them).
    'gaternet_resnet20.cifar10': _cfg(
        hf_hub_id='gaternet-zoo/gaternet_resnet20.cifar10', revision='v0.1.0',
        sha256='253467237bed9a7239d1fab27498e23ea2ee229852e32bb09c625c3200bb2428', dataset='uoft-cs/cifar10'),
    'gaternet_resnet56': _cfg(),
    'gaternet_resnet110': _cfg(),
    'gaternet_resnet164': _cfg(),
    'gaternet_wrn28_10': _cfg(),
    'gaternet_resnet18': _in1k_cfg(),
    'gaternet_resnet34': _in1k_cfg(),
    'gaternet_resnet50': _in1k_cfg(),
    'gaternet_resnet101': _in1k_cfg(),
})


def _cifar(variant: str, default_backbone: str, pretrained: bool, **kwargs: Any) -> GaterNet:
    model_args = dict(backbone=default_backbone, gater='cifar_resnet20', bottleneck=8)
    return _create_gaternet(variant, pretrained, **dict(model_args, **kwargs))


def _imagenet(variant: str, default_backbone: str, pretrained: bool, **kwargs: Any) -> GaterNet:
    # timm zero-initialises the last norm of each block; a gated branch would then output 0 whatever its gates,
    # and the gater would get no gradient on the first step. Start from unit scales, as the official code does.
    model_args = dict(backbone=default_backbone, gater='resnet18', bottleneck=8,
                      backbone_args=dict(zero_init_last=False))
    return _create_gaternet(variant, pretrained, **dict(model_args, **kwargs))


@register_model
def gaternet(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """A GaterNet over any supported backbone: ``create_model("gaternet", backbone="resnet50", gater="resnet18")``.

    The input settings (size, mean, std) of ``pretrained_cfg`` are taken from the backbone's own timm config.
    """
    backbone = kwargs.get('backbone', 'cifar_resnet20')
    if 'pretrained_cfg' not in kwargs or kwargs['pretrained_cfg'] is None:
        backbone_cfg = get_pretrained_cfg(backbone)
        if backbone_cfg is not None:
            keys = ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'num_classes',
                    'test_input_size', 'crop_mode')
            overlay = {k: getattr(backbone_cfg, k) for k in keys if getattr(backbone_cfg, k, None) is not None}
            kwargs['pretrained_cfg_overlay'] = {**overlay, **(kwargs.get('pretrained_cfg_overlay') or {})}
    return _create_gaternet('gaternet', pretrained, **kwargs)


@register_model
def gaternet_resnet20(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """ResNet-20 gated by a ResNet-20 gater (CIFAR, 32x32): 336 gates."""
    return _cifar('gaternet_resnet20', 'cifar_resnet20', pretrained, **kwargs)


@register_model
def gaternet_resnet56(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """ResNet-56 gated by a ResNet-20 gater (CIFAR, 32x32): 1008 gates."""
    return _cifar('gaternet_resnet56', 'cifar_resnet56', pretrained, **kwargs)


@register_model
def gaternet_resnet110(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """ResNet-110 gated by a ResNet-20 gater (CIFAR, 32x32): 2016 gates."""
    return _cifar('gaternet_resnet110', 'cifar_resnet110', pretrained, **kwargs)


@register_model
def gaternet_resnet164(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """Pre-activation ResNet-164 gated by a ResNet-20 gater (CIFAR, 32x32): 8064 gates on the expanding convs."""
    return _cifar('gaternet_resnet164', 'cifar_resnet164', pretrained, **kwargs)


@register_model
def gaternet_wrn28_10(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """Wide ResNet-28-10 gated by a ResNet-20 gater (CIFAR, 32x32): 4480 gates."""
    return _cifar('gaternet_wrn28_10', 'cifar_wrn28_10', pretrained, **kwargs)


@register_model
def gaternet_resnet18(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ResNet-18 gated by a ResNet-18 gater (ImageNet, 224x224): 1920 gates."""
    return _imagenet('gaternet_resnet18', 'resnet18', pretrained, **kwargs)


@register_model
def gaternet_resnet34(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ResNet-34 gated by a ResNet-18 gater (ImageNet, 224x224): 3776 gates."""
    return _imagenet('gaternet_resnet34', 'resnet34', pretrained, **kwargs)


@register_model
def gaternet_resnet50(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ResNet-50 gated by a ResNet-18 gater (ImageNet, 224x224): 15104 gates on the expanding convs."""
    return _imagenet('gaternet_resnet50', 'resnet50', pretrained, **kwargs)


@register_model
def gaternet_resnet101(pretrained: bool = False, **kwargs: Any) -> GaterNet:
    """timm ResNet-101 gated by a ResNet-18 gater (ImageNet, 224x224): 32512 gates on the expanding convs."""
    return _imagenet('gaternet_resnet101', 'resnet101', pretrained, **kwargs)
