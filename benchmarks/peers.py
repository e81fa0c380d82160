"""The schedulers under test: ours and its peers, each started once (warm) and called as a dask ``get``.

Every scheduler gets the same raw graph dict and keys. ``start`` may take seconds (process pools, clusters) and is
not part of any timed run; ``settle`` runs between timed runs (also untimed) to make each run start from the same
state; ``stop`` releases everything ``start`` made, even after a failed ``start``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, cast

from dask.typing import Key

from .workloads import Graph

__all__ = ["NAMES", "OURS", "SCHEDULERS", "Scheduler"]

WORKERS = 2
"""Workers (threads or processes) of every parallel scheduler: the issue's "2 local workers"."""


class Scheduler(ABC):
    """A dask ``get`` with a life cycle."""

    name: str = ""
    description: str = ""
    workers: int = WORKERS

    def missing(self) -> str | None:
        """Why this scheduler cannot run here (an optional peer that is not installed), or None."""
        return None

    def start(self) -> None:  # noqa: B027 - optional hook, nothing to do for in-process schedulers
        """Make pools, processes, servers."""

    @abstractmethod
    def get(self, dsk: Graph, keys: list[Key]) -> Any:
        """Compute ``keys`` of ``dsk``."""

    def settle(self) -> None:  # noqa: B027 - optional hook
        """Wait, untimed, until leftovers of the previous run are gone."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` made."""


class Sync(Scheduler):
    name = "sync"
    description = "dask.local.get_sync (one thread, in process)"
    workers = 1

    def get(self, dsk: Graph, keys: list[Key]) -> Any:
        from dask.local import get_sync

        return get_sync(dsk, keys)


class Threads(Scheduler):
    name = "threads"
    description = f"dask.threaded.get, num_workers={WORKERS}"

    def get(self, dsk: Graph, keys: list[Key]) -> Any:
        from dask.threaded import get

        return get(dsk, keys, num_workers=self.workers)


class Processes(Scheduler):
    name = "processes"
    description = f"dask.multiprocessing.get with a warm ProcessPoolExecutor({WORKERS}) as pool="

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.options: dict[str, Any] = {}
        """Keyword arguments of every call, e.g. ``optimize_graph=False`` (no fusing of linear chains)."""

    def start(self) -> None:
        from dask.multiprocessing import get_context

        # dask's own choice of start method ("spawn" unless configured): safe next to threads in this process
        self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context())  # type: ignore[no-untyped-call]

    def get(self, dsk: Graph, keys: list[Key]) -> Any:
        from dask.multiprocessing import get

        return get(dsk, keys, num_workers=self.workers, pool=self.pool, **self.options)

    def stop(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class Distributed(Scheduler):
    name = "distributed"
    description = f"distributed.LocalCluster(n_workers={WORKERS}, threads_per_worker=1, processes=True), Client.get"

    def __init__(self) -> None:
        self.cluster: Any = None
        self.client: Any = None

    def start(self) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=self.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster)  # type: ignore[no-untyped-call]

    def get(self, dsk: Graph, keys: list[Key]) -> Any:
        return self.client.get(dsk, keys)

    def settle(self) -> None:
        # Client.get releases its futures when it returns; wait until the scheduler has forgotten them, so that
        # the next run of the same keys computes everything again instead of finding results in memory.
        deadline = time.monotonic() + 30
        while self.client.run_on_scheduler(_scheduler_task_count) and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        client, self.client = self.client, None
        cluster, self.cluster = self.cluster, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


class Ray(Scheduler):
    """dask-on-Ray, an optional peer (``pip install 'dask-redisparam[bench]'`` or ``pip install ray``)."""

    name = "ray"
    description = f"ray.util.dask.ray_dask_get on a local ray.init(num_cpus={WORKERS}) (optional: the bench extra)"

    def missing(self) -> str | None:
        if importlib.util.find_spec("ray") is None:
            return "ray is not installed (optional peer: pip install 'dask-redisparam[bench]', or pip install ray)"
        return None

    def start(self) -> None:
        import ray

        ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)

    def get(self, dsk: Graph, keys: list[Key]) -> Any:
        from ray.util.dask import ray_dask_get

        return ray_dask_get(dsk, cast(Any, keys))

    def stop(self) -> None:
        if importlib.util.find_spec("ray") is not None:
            import ray

            if ray.is_initialized():
                ray.shutdown()


def _scheduler_task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


class Ours(Scheduler):
    name = "redisparam"
    description = f"dask_redisparam.RedisParam(workers={WORKERS}) started once, param(dsk, keys)"

    def __init__(self) -> None:
        self.param: Any = None
        self.options: dict[str, Any] = {}
        """Keyword arguments of every call, e.g. ``fuse_chains=False``."""

    def start(self) -> None:
        from dask_redisparam import RedisParam

        self.param = RedisParam(workers=self.workers)
        self.param.start()

    def get(self, dsk: Graph, keys: list[Key]) -> Any:
        return self.param(dsk, keys, **self.options)

    def stop(self) -> None:
        param, self.param = self.param, None
        if param is not None:
            param.stop()


SCHEDULERS: dict[str, Callable[[], Scheduler]] = {
    cls.name: cls for cls in (Sync, Threads, Processes, Distributed, Ray, Ours)
}
"""Scheduler factories by name, in the order they run and appear in the table."""

NAMES: list[str] = list(SCHEDULERS)
OURS = Ours.name
