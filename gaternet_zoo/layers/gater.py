"""The gater: a feature extractor followed by a bottleneck MLP that emits one gate per backbone filter.

``G(x) = binarise(fc2(relu(fc1(E(x)))))`` where ``E`` is any timm model built with ``num_classes=0`` (pooled
features), ``fc1`` maps to a small bottleneck (8 in the paper) and ``fc2`` to one logit per gated filter. The
released GaterNet code has no normalisation in the bottleneck (the paper's text mentions a BatchNorm);
``bottleneck_norm=True`` adds a ``BatchNorm1d`` before the ReLU for those who want the paper's variant.

Precision. In evaluation the gater runs in float32 with autocast switched off: its output is a hard decision per
filter, and a gate logit computed in bf16/fp16 lands on the other side of 0 often enough to flip gates (61 of the
336,000 gates of the published ``gaternet_resnet20.cifar10`` on the built-in CIFAR-10 subset, when only the
binarisation was in float32). Under autocast, only the backbone runs in low precision and the gates are those of a
float32 evaluation. In training, the encoder follows the caller's autocast (it is half the compute of a CIFAR
GaterNet, and bf16 is what makes CPU training fast) while the bottleneck MLP and the binarisation stay float32:
Improved SemHash adds N(0, 1) noise to every training logit, three orders of magnitude above bf16's rounding error
of a logit, so low precision there does not change what the gates learn. ``Gater.float32_in_training = True``
keeps the whole gater in float32 in training too.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .gates import ImprovedSemHash, autocast_enabled

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
        input_size: ``(H, W)`` (or one side) the encoder sees: the image is average-pooled to it first, a cheap
            gater (a 16 px view of a 32 px image costs the encoder a quarter of its MACs). ``None``: the image as
            given, the paper's gater.

    Raises:
        ValueError: For a bottleneck or input size that is not positive.
    """

    def __init__(
            self,
            encoder: nn.Module,
            gate_size: int,
            bottleneck: int = 8,
            bottleneck_norm: bool = False,
            binarizer: nn.Module | None = None,
            input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f'bottleneck must be a positive width, got {bottleneck}.')
        self.input_size = _input_size(input_size)
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

    #: Keep the encoder in float32 under autocast in training as well (evaluation always is); see the module doc.
    float32_in_training: bool = False

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Gate logits (pre-activation ``g'``), shape B x gate_size, in float32."""
        if self.input_size is not None:
            # Area averaging, applied whatever the input's size (a same-size pool is exact), so tracing needs no shape.
            x = F.adaptive_avg_pool2d(x, self.input_size)
        if not autocast_enabled(x):
            return self._head(self.encoder(x))
        if self.training and not self.float32_in_training:
            features = self.encoder(x)  # the caller's low precision: see the module docstring for why it is safe
            with torch.autocast(x.device.type, enabled=False):
                return self._head(features.to(self.fc2.weight.dtype))
        with torch.autocast(x.device.type, enabled=False):
            return self._head(self.encoder(x.to(self.fc2.weight.dtype)))

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(features))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 gates, shape B x gate_size: binary in eval, Improved SemHash mixture in training."""
        return self.binarizer(self.forward_logits(x))


def _input_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``(H, W)`` from one side or two, refusing anything but positive integers."""
    if size is None:
        return None
    sides = tuple(size) if isinstance(size, Sequence) and not isinstance(size, str) else (size, size)
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sides):
        raise ValueError(
            f'gater input_size must be a positive side or (height, width) of positive sides, got {size!r}.')
    return sides
