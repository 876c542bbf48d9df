"""The training recipes: ``accelerate launch recipes/train.py`` (a script), importable as ``recipes.train`` from the
repository root (the tests, ``tools.screen`` and ``bench.bench_train`` use its parser and functions)."""
