"""Benchmarks of the dask_redisparam scheduler against dask's own schedulers and distributed.

Run from the repository root::

    python -m benchmarks            # every workload and study, 3 repeats each (about 13 minutes here)
    python -m benchmarks --quick    # a smoke run in under 2 minutes
    python -m benchmarks --list     # schedulers, workloads, studies
    python -m benchmarks.hotpath    # where our scheduler spends its time (cProfile, py-spy)
    python -m benchmarks.latency    # manager and workers through a proxy delaying 0, 0.5, 2, 5 ms each way
    python -m benchmarks.workers    # 2, 24, 96 local workers: efficiency, Redis and manager CPU per task

Modules: :mod:`.tasks` (task functions, importable by worker processes), :mod:`.workloads` (the graphs),
:mod:`.peers` (the schedulers), :mod:`.runner` (timing), :mod:`.targets` (the issue's targets),
:mod:`.report` (table and JSON); studies in fresh processes: :mod:`.studies` (parent side), :mod:`.subproc`
(running children), :mod:`.transfer` and :mod:`.manager_rss` (children), :mod:`.rss` (peak memory);
:mod:`.hotpath` (profiles); :mod:`.latency` (Redis behind :mod:`.delay_proxy`, a proxy delaying each way) and
:mod:`.workers` (2 to 96 local workers; Redis CPU per task), both also studies of ``python -m benchmarks``
(``--workload latency,workers``); :mod:`.netutil` (what those two share).
"""
