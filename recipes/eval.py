#!/usr/bin/env python
"""Evaluate a zoo model on a data set: top-1/top-5, params, MACs and gate statistics.

The same command as ``gaternet-zoo eval``, as a script for Accelerate::

    python recipes/eval.py gaternet_resnet20 --data builtin:cifar10-subset --max-samples 256
    accelerate launch recipes/eval.py local-dir:runs/demo/final --data path/to/cifar10 --json eval.json
"""
from __future__ import annotations

import sys

from gaternet_zoo.recipes_cli import eval_main

if __name__ == '__main__':
    sys.exit(eval_main(prog='recipes/eval.py'))
