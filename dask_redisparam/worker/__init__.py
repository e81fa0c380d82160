"""The worker's side: the process that claims task messages, runs them and sends the results back.

:mod:`~dask_redisparam.worker.loop` (the worker), :mod:`~dask_redisparam.worker.execute` (running a batch of
tasks), :mod:`~dask_redisparam.worker.cache` (values kept between tasks), :mod:`~dask_redisparam.worker.memory`
(the allocator), :mod:`~dask_redisparam.worker.supervisor` (keeping ``--nworkers`` processes alive),
:mod:`~dask_redisparam.worker.restarts` (exit codes and crash-loop backoff),
:mod:`~dask_redisparam.worker.server` (the embedded ``redis-server`` of local runs and tests),
:mod:`~dask_redisparam.worker.durable`, :mod:`~dask_redisparam.worker.state_dir` and
:mod:`~dask_redisparam.worker.keeper` (the durable local mode: that server and its workers detached),
``__main__`` (``python -m dask_redisparam.worker``). It never imports :mod:`dask_redisparam.manager`.
"""
