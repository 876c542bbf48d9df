"""The private modules are layered one way, as in timm: no import cycles, counting imports inside functions too.

The graph is read from the source with ``ast`` (nothing is imported): an edge for every ``import`` of a
gaternet_zoo module, wherever it stands, so that an import moved into a function to dodge a cycle still counts.
Importing a submodule also runs its package's ``__init__``; that implicit edge is left out, as everywhere in Python
packages (otherwise every package with re-exports would be one cycle).
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


def test_gaternet_zoo_has_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 20 and 'gaternet_zoo._hub' in graph['gaternet_zoo._factory']  # the graph is real
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_private_modules_are_layered_as_in_timm() -> None:
    graph = import_graph()
    upper = {m for m in graph if m.startswith(('gaternet_zoo.models', 'gaternet_zoo._factory'))} | {
        'gaternet_zoo._registry', 'gaternet_zoo._builder'}
    assert not graph['gaternet_zoo._hub'] & upper, '_hub must know nothing of models, the registry or the factory'
    assert not {m for m in graph['gaternet_zoo._registry'] if m.startswith('gaternet_zoo.models')}, \
        'the registry must not import the model files'


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
