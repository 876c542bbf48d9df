"""Values several layers share, defined once. Imports nothing (not even torch): the fast ``--help`` path reads it."""
from __future__ import annotations

__all__ = ['CIFAR10_MEAN', 'CIFAR10_STD', 'DEFAULT_DATA_SOURCE']

#: Per-channel mean and std of the CIFAR-10 training images (the zoo's CIFAR models' normalisation).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

#: The data source used when none is given: a class-balanced CIFAR-10 subset shipped in the package (no download).
DEFAULT_DATA_SOURCE = 'builtin:cifar10-subset'
