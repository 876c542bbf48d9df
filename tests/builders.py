"""Small GaterNets for the tests of gate options (branch gates, inner gate sites): shared so that both build alike."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

import gaternet_zoo as gz

#: A thin ResNet-8 gater: these tests check the backbone's gating, not the gater.
TINY_GATER_ARGS = dict(widths=[4, 8, 16], stem_width=4)


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
