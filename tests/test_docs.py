"""The documentation site: ``mkdocs build --strict`` passes, API pages give each object a heading and a signature,
and the docstrings' Sphinx roles come out as links, not as raw ``:class:`...```.

Building needs the ``docs`` extra (``pip install -e '.[docs]'``, as ``make docs`` does); without it these tests skip.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import REPO_ROOT


@pytest.fixture(scope='module')
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip('mkdocs')
    pytest.importorskip('mkdocstrings_handlers.python')
    out = tmp_path_factory.mktemp('site')
    env = {**os.environ, 'NO_MKDOCS_2_WARNING': '1', 'PYTHONPATH': str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-d', str(out)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_api_pages_have_a_heading_and_signature_per_object(site: Path) -> None:
    models = (site / 'api' / 'models' / 'index.html').read_text()
    for name in ('create_model', 'gate', 'list_models', 'GaterNet', 'CifarResNet'):
        assert re.search(rf'<h2 id="gaternet_zoo\.{name}"', models), name
    assert models.count('doc-signature') >= 5
    # The signature names the parameters (with their annotations), not only the parameter table.
    signature = models[models.index('id="gaternet_zoo.create_model"'):][:6000]
    assert 'model_name' in signature and 'pretrained' in signature and 'num_classes' in signature


def test_sphinx_roles_are_rendered_as_links(site: Path) -> None:
    pages = {p: p.read_text() for p in (site / 'api').rglob('index.html')}
    for page, text in pages.items():
        assert not re.search(r':(class|func|meth|data|mod|attr|exc):`', text), page
        assert '<autoref' not in text, page  # every role became a link or plain code
    gates = (site / 'api' / 'gates' / 'index.html').read_text()
    # GatingPlugin's docstring refers to :meth:`supports` (a relative name) and :class:`~gaternet_zoo.GaterNet`.
    assert re.search(r'href="#gaternet_zoo\.GatingPlugin\.supports"[^>]*>\s*<code>supports</code>', gates)
    assert re.search(r'href="\.\./models/#gaternet_zoo\.GaterNet"[^>]*>\s*<code>GaterNet</code>', gates)


def test_docs_explain_themselves_in_the_projects_terms() -> None:
    for page in [*(REPO_ROOT / 'docs').glob('*.md'), REPO_ROOT / 'README.md', REPO_ROOT / 'recipes' / 'README.md']:
        text = page.read_text()
        assert not re.search(r'\bsessions?\b', text, flags=re.I), f'{page}: explain in the project\'s terms'
        assert '/work/' not in text, f'{page} names a machine path'
