"""Griffe extension for the API pages (``mkdocs.yml``): render the docstrings' Sphinx roles as links.

The zoo's docstrings cross-reference with Sphinx roles (``:class:`~gaternet_zoo.GaterNet```, ``:func:`load_weights```),
which read well in ``help()`` and editors; mkdocstrings would print them verbatim. This extension turns each role
into an *optional* mkdocs-autorefs link: it points to the object's entry when an API page documents it, and is
plain code otherwise (no warning, so ``mkdocs build --strict`` stays meaningful for real broken links).
A relative name (``GateSlot``, ``supports``) is looked up from the documented object outwards, as Sphinx does; a
leading ``~`` shows the last component only.
"""
from __future__ import annotations

import html
import re
from typing import Any

import griffe

#: A Sphinx Python-domain role: :class:`x`, :func:`~a.b.f`, ...
ROLE = re.compile(r':(?:py:)?(?:class|func|meth|data|mod|attr|obj|exc|const):`(~?)([\w.]+)`')


def resolve(name: str, obj: Any) -> str:
    """Full path of ``name`` as seen from ``obj`` (its members, then those of its parents); ``name`` if unknown."""
    head = name.split('.')[0]
    scope = obj
    while scope is not None:
        try:
            members = scope.members
        except (AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            members = {}
        if head in members:
            return f'{scope.path}.{name}'
        scope = scope.parent
    return name


def render_roles(text: str, obj: Any = None) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs link around inline code."""
    def link(match: re.Match) -> str:
        tilde, name = match.groups()
        identifier = resolve(name, obj) if obj is not None else name
        title = name.rsplit('.', 1)[-1] if tilde else name
        return f'<autoref identifier="{html.escape(identifier)}" optional><code>{html.escape(title)}</code></autoref>'
    return ROLE.sub(link, text)


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring once the object tree is complete (relative names need it)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ':' in obj.docstring.value:
            obj.docstring.value = render_roles(obj.docstring.value, obj)
