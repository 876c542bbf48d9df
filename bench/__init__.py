"""The project's benchmarks: each ``bench_<topic>.py`` prints ratios measured side by side in one run.

Run from the repository root as modules: ``python -m bench.run_all`` (all of them, ``make bench``) or
``python -m bench.bench_train``. Not part of the installed library.
"""
