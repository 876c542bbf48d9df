"""``recipes/train.py`` loaded as a module, for the tools and tests that need its parser or its functions.

The recipe is a script (``accelerate launch recipes/train.py``), not part of the package, so it is loaded from its
file. One loader, cached, under one module name: every caller sees the same module object.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TRAIN = Path(__file__).resolve().parent.parent / 'recipes' / 'train.py'


@functools.cache
def train_recipe() -> ModuleType:
    """``recipes/train.py`` as the module ``recipes_train`` (loaded once)."""
    module_spec = importlib.util.spec_from_file_location('recipes_train', TRAIN)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up while the class body runs.
    module_spec.loader.exec_module(module)
    return module
