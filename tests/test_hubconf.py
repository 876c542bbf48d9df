"""Acceptance tests of ``hubconf.py``: torch.hub entry points for every registry name and alias, kept current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import gaternet_zoo as gz

REPO_ROOT = Path(__file__).resolve().parents[1]


# One intra-op thread: faster for these tiny tensors, and no OpenMP spin-waiting on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _load_module(path: Path, name: str):
    # hubconf.py is a file, not a module of a package: torch.hub loads it from its path, and so does this test.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def hubconf():
    return _load_module(REPO_ROOT / 'hubconf.py', 'gaternet_zoo_hubconf_under_test')


@pytest.fixture
def local_github(monkeypatch):
    """``torch.hub.list``/``help`` only take GitHub repositories (they have no ``source='local'``): serve this
    checkout as the "downloaded" repository, so that the rest of their real code runs on the working tree."""
    monkeypatch.setattr(torch.hub, '_get_cache_or_reload', lambda *args, **kwargs: str(REPO_ROOT))
    return 'gaternet-zoo/gaternet_zoo'


def test_hub_list_has_every_model_and_alias(local_github):
    entries = torch.hub.list(local_github)
    names = gz.list_models(include_backbones=True)
    aliases = ['gated_' + n[len('gaternet_'):] for n in names if n.startswith('gaternet_')]
    assert set(gz.list_models()) <= set(names)
    assert 'gated_resnet20' in aliases and 'gated_wrn28_10' in aliases
    # Exactly the registry (plain backbones included), the aliases and the generic gate() builder.
    assert sorted(entries) == sorted([*names, *aliases, 'gate'])
    assert len(entries) == len(set(entries))


def test_hub_help_returns_the_docstring(local_github):
    doc = torch.hub.help(local_github, 'gaternet_resnet20')
    assert '336 gates' in doc and 'pretrained' in doc
    alias_doc = torch.hub.help(local_github, 'gated_resnet20')
    assert 'Alias of ``gaternet_resnet20``' in alias_doc


def test_hub_load_canonical_name():
    model = torch.hub.load(str(REPO_ROOT), 'gaternet_resnet50', source='local')
    assert isinstance(model, gz.GaterNet)
    assert model.gate_size == 15104 and model.pretrained_cfg['architecture'] == 'gaternet_resnet50'


def test_hub_load_alias_with_kwargs():
    model = torch.hub.load(str(REPO_ROOT), 'gated_resnet20', source='local', num_classes=100)
    assert isinstance(model, gz.GaterNet)
    assert model.pretrained_cfg['architecture'] == 'gaternet_resnet20'
    assert model.gate_size == 336 and model.num_classes == 100


def test_hub_load_gate():
    model = torch.hub.load(str(REPO_ROOT), 'gate', 'resnet18', source='local', num_classes=5)
    assert isinstance(model, gz.GaterNet)
    assert model.backbone_name == 'resnet18' and model.num_classes == 5 and model.gate_size == 1920


def test_dependencies_are_importable(hubconf):
    assert hubconf.dependencies and {'torch', 'timm'} <= set(hubconf.dependencies)
    for name in hubconf.dependencies:
        assert importlib.util.find_spec(name) is not None, f'hubconf dependency {name!r} is not importable'


def test_hubconf_is_current():
    from tools import gen_hubconf

    rendered = gen_hubconf.render()
    assert (REPO_ROOT / 'hubconf.py').read_text() == rendered, (
        'hubconf.py is out of date: run `python -m tools.gen_hubconf` and commit the result.')
