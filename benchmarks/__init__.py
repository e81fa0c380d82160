"""Benchmarks of the dask_redisparam scheduler against dask's own schedulers and distributed.

Run from the repository root::

    python -m benchmarks            # every workload and study, 3 repeats each (about 13 minutes here)
    python -m benchmarks --quick    # a smoke run in under 2 minutes
    python -m benchmarks --list     # schedulers, workloads, studies
    python -m benchmarks.hotpath    # where our scheduler spends its time (cProfile, py-spy)

Modules: :mod:`.tasks` (task functions, importable by worker processes), :mod:`.workloads` (the graphs),
:mod:`.peers` (the schedulers), :mod:`.runner` (timing), :mod:`.targets` (the issue's targets),
:mod:`.report` (table and JSON); studies in fresh processes: :mod:`.studies` (parent side), :mod:`.subproc`
(running children), :mod:`.transfer` and :mod:`.manager_rss` (children), :mod:`.rss` (peak memory);
:mod:`.hotpath` (profiles).
"""
