"""A long-lived run with no graph of its own: every task is fed to it while it runs, and its values stay in Redis.

:func:`run_stream` is the manager's side of :class:`~dask_redisparam.executor.RedisExecutor`: ``options.feed`` adds
the tasks (:meth:`~dask_redisparam.manager.state.RunState.add_task`) and lets go of values
(:meth:`~dask_redisparam.manager.state.RunState.drop`), ``options.on_done`` hears of each finished or failed task,
and nothing is downloaded here: the consumers read the values they want with :func:`fetch_value`. The run ends when
the feed returns False with nothing pending; its keys are deleted then. The run's lease
(:class:`~dask_redisparam.manager.lease.RunLease`) keeps its values while this process lives: with ``redo_ttl=0`` they
expire :data:`~dask_redisparam.manager.lease.RUN_TTL` seconds after it died.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ..backend import Backend
from .graph import prepare_graph
from .lease import RUN_TTL, RunLease
from .loop import close_run, count_and_reap, fetch_stored, run_loop
from .options import RunOptions
from .state import RunState

__all__ = ["fetch_value", "run_stream"]


def run_stream(
    backend: Backend,
    options: RunOptions,
    *,
    live_workers: Callable[[], int] | None = None,
    run_id: str | None = None,
) -> None:
    """Run what ``options.feed`` adds until it returns False and nothing is pending; then delete the run's keys.

    Parameters
    ----------
    backend : Backend
        The connection to the server.
    options : RunOptions
        With ``feed`` and ``on_done`` (see :class:`~dask_redisparam.manager.options.RunOptions`); ``stop_on_error``
        should be False (a failed task is only its future's business).
    live_workers : callable, optional
        Returns the number of live workers; default asks Redis and reaps dead ones.
    run_id : str, optional
        Default: a fresh random one.

    Raises
    ------
    RunLost, ServerUnavailable, MessagesRejected
        The run cannot go on (see :mod:`dask_redisparam.errors`); its keys are deleted.
    """
    count_workers = live_workers or (lambda: count_and_reap(backend, options.jobname, options.signer))
    run = RunState(prepare_graph({}, []), options, [], run_id=run_id)
    lease = RunLease(backend.address, run.job, run.run_id, keep=options.redo_ttl)
    try:
        run.start({})
        backend.open_run(run.job, run.run_id, RUN_TTL, {}, keep=lease.keep)
        lease.start()
        run_loop(backend, run, count_workers, lease)
    finally:
        lease.stop()
        close_run(backend, run)


def fetch_value(backend: Backend, options: RunOptions, run_id: str, key: Hashable, field: str) -> Any:
    """Download the value of ``key``, stored in ``field`` of the data hash of run ``run_id`` (any thread: it uses
    only ``backend``'s connection pool)."""
    out: dict[Hashable, Any] = {}
    fetch_stored(backend, options.jobname, run_id, {key: field}, options.signer, out, options.describe_server)
    return out[key]
