"""Small GaterNets for the tests of gate options (branch gates, inner gate sites): shared so that both build alike;
and the check those tests share, that skip execution gives mask execution's logits."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn

import gaternet_zoo as gz

#: A thin ResNet-8 gater: these tests check the backbone's gating, not the gater.
TINY_GATER_ARGS = dict(widths=[4, 8, 16], stem_width=4)

#: One tiny backbone per plugin family that knows its blocks' shortcuts: (backbone, backbone_args, input side).
SHORTCUT_FAMILIES: dict[str, tuple[str, dict[str, Any], int]] = {
    'native_basic': ('cifar_resnet8', TINY_GATER_ARGS, 16),
    'native_preact_bottleneck': ('cifar_resnet164', dict(layers=[1, 1, 1], widths=[4, 8, 16], stem_width=8), 16),
    'timm_resnet': ('test_resnet', {}, 32),  # BasicBlock and Bottleneck
    'timm_resnetv2_basic': ('resnetv2_18', dict(layers=[1, 1, 1, 1], channels=(8, 16, 32, 64), stem_chs=8), 32),
    'timm_resnetv2_bottleneck': ('resnetv2_50', dict(layers=[1, 1, 1, 1], channels=(16, 32, 64, 128), stem_chs=8),
                                 32),
    'timm_regnet': ('regnetx_002', {}, 32),
    'timm_convnext': ('test_convnext', {}, 32),
    'timm_efficientnet': ('mobilenetv3_small_050', {}, 32),  # inverted residuals with and without their skip
}


def build_tiny_gaternet(backbone: str, backbone_args: dict[str, Any], **model_args: Any) -> nn.Module:
    """An eval-mode GaterNet over ``backbone`` with the tiny gater and its norms moved away from identity.

    Random norm scales, shifts and running means make a wrong channel, a skipped norm or a dropped shift change the
    output, so exactness tests can fail.
    """
    torch.manual_seed(0)
    model = gz.create_model('gaternet', backbone=backbone, gater='cifar_resnet8', gater_args=TINY_GATER_ARGS,
                            num_classes=10, backbone_args=dict(backbone_args), **model_args)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
                m.running_mean.normal_(0.0, 0.1, generator=g)
    return model.eval()


def images(batch: int, size: int) -> torch.Tensor:
    """A fixed batch of random images."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))


def assert_skip_equals_mask(model: nn.Module, x: torch.Tensor, gates: dict[str, torch.Tensor], *,
                            rtol: float = 1e-5, atol: float = 1e-5,
                            bitwise: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """Assert that ``model`` in skip mode gives its mask-mode logits on ``x`` for each named gate pattern of
    ``gates``, and for its own gates (the gater's).

    The mask-mode logits come first; then the model runs in skip mode, where at least one block must run skip
    execution's block forward (else the check would compare mask mode with itself). A pattern named in ``bitwise``
    must give the same logits bit for bit, the others within ``rtol``/``atol`` (skip execution's fast path folds
    norms into convs, which changes the float rounding). The model is back in mask mode afterwards, even when a
    check fails.

    Returns:
        The mask-mode logits of each pattern, by name.
    """
    from gaternet_zoo.layers.skip import SkippingBlockForward

    with torch.no_grad():
        masked = {name: model(x, gates=g) for name, g in gates.items()}
        own = model(x)
        try:
            model.set_execution('skip')
            assert any(isinstance(m.__dict__.get('forward'), SkippingBlockForward) for m in model.backbone.modules())
            for name, g in gates.items():
                out = model(x, gates=g)
                if name in bitwise:
                    assert torch.equal(out, masked[name]), name
                else:
                    torch.testing.assert_close(out, masked[name], rtol=rtol, atol=atol, msg=name)
            torch.testing.assert_close(model(x), own, rtol=rtol, atol=atol, msg='the gater\'s own gates')
        finally:
            model.set_execution('mask')
    return masked
