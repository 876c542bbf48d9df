"""The private modules are layered one way, as in timm: no import cycles, counting imports inside functions too.

The graph is read from the source with ``ast`` (nothing is imported): an edge for every ``import`` of a
gaternet_zoo module, wherever it stands, so that an import moved into a function to dodge a cycle still counts.
Importing a submodule also runs its package's ``__init__``; that implicit edge is left out, as everywhere in Python
packages (otherwise every package with re-exports would be one cycle).

The hub layer (``gaternet_zoo/hub/``: files, state dicts, configs, saving) builds no model: no import chain may lead
from it into the models layer, directly or through any module that imports the models.
"""
from __future__ import annotations

import ast
from pathlib import Path

from hubserver import REPO_ROOT

PACKAGE = 'gaternet_zoo'


def _modules(root: Path = REPO_ROOT) -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in sorted((root / PACKAGE).rglob('*.py')):
        parts = list(path.relative_to(root).with_suffix('').parts)
        is_package = parts[-1] == '__init__'
        found['.'.join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split('.') if is_package else module.split('.')[:-1]
            base = base[:len(base) - node.level + 1]
            target = '.'.join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ''
        # `from package import submodule` imports the submodule; `from module import name` the module.
        names = [f'{target}.{alias.name}' if f'{target}.{alias.name}' in known else target for alias in node.names]
    resolved = []
    for name in names:
        while name not in known and '.' in name:
            name = name.rsplit('.', 1)[0]
        if name in known and name != module:
            resolved.append(name)
    return resolved


def import_graph(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """gaternet_zoo module -> the gaternet_zoo modules it imports (anywhere in its source)."""
    modules = _modules(root)
    graph = {}
    for module, (path, is_package) in modules.items():
        nodes = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
        graph[module] = {t for n in nodes for t in _targets(module, is_package, n, set(modules))}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


#: The models layer: the model files and the modules that build, register, describe or gate models.
MODELS_LAYER = (
    'gaternet_zoo.models', 'gaternet_zoo.plugins', 'gaternet_zoo._plugins', 'gaternet_zoo._builder',
    'gaternet_zoo._hub_mixin', 'gaternet_zoo._factory', 'gaternet_zoo._registry', 'gaternet_zoo._model_card',
)
HUB = 'gaternet_zoo.hub'


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + '.') for p in prefixes)


def _reach(graph: dict[str, set[str]], start: str) -> dict[str, str | None]:
    """Every module ``start`` imports, directly or not, mapped to the module that imports it on a shortest chain."""
    parent: dict[str, str | None] = {start: None}
    queue = [start]
    for node in queue:
        for nxt in sorted(graph.get(node, ())):
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return parent


def hub_chains_into_models(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Hub module -> an import chain from it into the models layer, through any module that imports the models."""
    chains = {}
    for module in sorted(m for m in graph if _in(m, (HUB,))):
        parent = _reach(graph, module)
        hit = next((m for m in parent if _in(m, MODELS_LAYER)), None)
        if hit is not None:
            chain = [hit]
            while parent[chain[-1]] is not None:
                chain.append(parent[chain[-1]])
            chains[module] = chain[::-1]
    return chains


def test_gaternet_zoo_has_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 20 and HUB in graph['gaternet_zoo._factory']  # the graph is real
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_private_modules_are_layered_as_in_timm() -> None:
    graph = import_graph()
    assert not {m for m in graph['gaternet_zoo._registry'] if m.startswith('gaternet_zoo.models')}, \
        'the registry must not import the model files'


def test_the_hub_layer_imports_nothing_of_the_models_layer() -> None:
    graph = import_graph()
    hub_modules = [m for m in graph if _in(m, (HUB,))]
    assert len(hub_modules) >= 6 and 'gaternet_zoo._pretrained' in _reach(graph, HUB)  # the hub layer is there
    chains = hub_chains_into_models(graph)
    assert not chains, 'the hub layer reaches the models layer: ' + '; '.join(
        ' -> '.join(chain) for chain in chains.values())


def test_the_hub_constants_import_nothing() -> None:
    # setup.py loads the module from its path at build time, where torch and the package's own imports are missing.
    tree = ast.parse((REPO_ROOT / 'gaternet_zoo' / 'hub' / '_constants.py').read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    setup_py = (REPO_ROOT / 'setup.py').read_text()
    assert "'_constants.py'" in setup_py and 're.search' not in setup_py  # loaded, not read with a regex


def test_the_hub_check_finds_a_chain_into_the_models_hidden_in_a_function(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    for folder in (package, package / 'hub', package / 'models'):
        folder.mkdir()
        (folder / '__init__.py').write_text('')
    (package / 'hub' / '_files.py').write_text('import os\n')
    (package / 'hub' / '_config.py').write_text('def f():\n    from .._helpers import g\n    return g\n')
    (package / '_helpers.py').write_text('from .models import M\n\ng = M\n')
    graph = import_graph(tmp_path)
    assert hub_chains_into_models(graph) == {
        'gaternet_zoo.hub._config': ['gaternet_zoo.hub._config', 'gaternet_zoo._helpers', 'gaternet_zoo.models']}
    (package / '_helpers.py').write_text('g = 1\n')
    assert hub_chains_into_models(import_graph(tmp_path)) == {}


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / '_low.py').write_text('def f():\n    from ._high import g\n    return g\n')
    (package / '_high.py').write_text('from . import _low\n\ndef g():\n    return _low\n')
    (package / 'other.py').write_text('import os\nfrom gaternet_zoo._low import f\n')
    graph = import_graph(tmp_path)
    assert graph['gaternet_zoo.other'] == {'gaternet_zoo._low'}
    assert find_cycle(graph) == ['gaternet_zoo._high', 'gaternet_zoo._low', 'gaternet_zoo._high']
