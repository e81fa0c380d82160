"""Benchmarks of the dask_redisparam scheduler against dask's own schedulers and distributed.

Run from the repository root::

    python -m benchmarks            # default workloads, 3 repeats each
    python -m benchmarks --quick    # a smoke run in well under 2 minutes
    python -m benchmarks --help

Modules: :mod:`.tasks` (task functions, importable by worker processes), :mod:`.workloads` (the graphs),
:mod:`.peers` (the schedulers), :mod:`.runner` (timing), :mod:`.report` (table and JSON).
"""
