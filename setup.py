"""Build hook only; the package metadata lives in ``pyproject.toml``.

The published weights sit in the repository's top-level ``weights/<architecture>.<tag>/`` folders (where
``tools/publish_weights.py`` writes them and ``torch.hub`` finds them in a checkout). A wheel has no such folder, so
``build_py`` copies the ``model.safetensors`` and ``config.json`` of every folder up to ``SHIP_LIMIT_BYTES`` into
``gaternet_zoo/weights/`` of the build; ``gaternet_zoo.hub.find_shipped_weights`` looks there first. Editable
installs are left alone: they load from the checkout's ``weights/``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _hub_constants():
    """``gaternet_zoo/hub/_constants.py``, loaded from its path.

    Importing it as ``gaternet_zoo.hub._constants`` would run ``gaternet_zoo/__init__.py``, which needs torch; the
    module itself imports nothing.
    """
    spec = importlib.util.spec_from_file_location('_gaternet_zoo_hub_constants',
                                                  ROOT / 'gaternet_zoo' / 'hub' / '_constants.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHIP_LIMIT_BYTES = _hub_constants().SHIP_LIMIT_BYTES


class BuildPyWithWeights(build_py):
    """``build_py`` that also ships the small published weights as package data."""

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        for folder in sorted(p for p in (ROOT / 'weights').glob('*') if p.is_dir()):
            files = [folder / 'model.safetensors', folder / 'config.json']
            if all(f.is_file() for f in files) and files[0].stat().st_size <= SHIP_LIMIT_BYTES:
                target = Path(self.build_lib) / 'gaternet_zoo' / 'weights' / folder.name
                self.mkpath(str(target))
                for f in files:
                    self.copy_file(str(f), str(target / f.name))


setup(cmdclass={'build_py': BuildPyWithWeights})
