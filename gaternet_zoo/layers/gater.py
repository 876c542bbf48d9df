"""The gater: a feature extractor followed by a bottleneck MLP that emits one gate per backbone filter.

``G(x) = binarise(fc2(relu(fc1(E(x)))))`` where ``E`` is any timm model built with ``num_classes=0`` (pooled
features), ``fc1`` maps to a small bottleneck (8 in the paper) and ``fc2`` to one logit per gated filter. The
released GaterNet code has no normalisation in the bottleneck (the paper's text mentions a BatchNorm);
``bottleneck_norm=True`` adds a ``BatchNorm1d`` before the ReLU for those who want the paper's variant.
"""
from __future__ import annotations

import torch
from torch import nn

from .gates import ImprovedSemHash

__all__ = ['Gater']


class Gater(nn.Module):
    """Global gater network.

    Args:
        encoder: Feature extractor returning pooled features of width ``encoder.head_hidden_size`` (timm's pre-logits
            width; ``encoder.num_features`` for models without it).
        gate_size: Number of gates to emit (gated filters of the backbone).
        bottleneck: Width of the bottleneck layer.
        bottleneck_norm: Add ``BatchNorm1d`` before the bottleneck ReLU (the paper's text; not the released code).
        binarizer: Module turning logits into gates; Improved SemHash by default.
    """

    def __init__(
            self,
            encoder: nn.Module,
            gate_size: int,
            bottleneck: int = 8,
            bottleneck_norm: bool = False,
            binarizer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f'bottleneck must be a positive width, got {bottleneck}.')
        self.encoder = encoder
        # timm's width of the pooled (pre-logits) features: larger than num_features where the model has a head
        # conv/MLP after pooling (MobileNetV3, ...).
        self.fc1 = nn.Linear(getattr(encoder, 'head_hidden_size', None) or encoder.num_features, bottleneck)
        self.norm = nn.BatchNorm1d(bottleneck) if bottleneck_norm else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(bottleneck, gate_size)
        self.binarizer = binarizer if binarizer is not None else ImprovedSemHash()
        # As the official code: zero biases, so that at initialisation a gate's logit depends on the image only.
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    @property
    def gate_size(self) -> int:
        return self.fc2.out_features

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Gate logits (pre-activation ``g'``), shape B x gate_size."""
        features = self.encoder(x)
        return self.fc2(self.act(self.norm(self.fc1(features))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gates, shape B x gate_size: binary in eval, Improved SemHash mixture in training."""
        return self.binarizer(self.forward_logits(x))
