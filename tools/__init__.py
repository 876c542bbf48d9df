"""The project's experiment scripts: results tables, the option screening, plots, publishing, generators.

Not part of the installed library. Run each from the repository root as a module, ``python -m tools.<name> ...``
(for example ``python -m tools.lead_table --help``); tests import them as ``tools.<name>``. Every run folder is read
through :class:`gaternet_zoo.training.RunRecord`.
"""
