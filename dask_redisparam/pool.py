"""Managing a job's worker pool: is the server alive, who serves, stop them all.

:func:`alive` takes a :class:`~dask_redisparam.config.address.RedisAddress`, :func:`stop_all` and
:func:`job_status` a :class:`~dask_redisparam.backend.Backend`: :class:`~dask_redisparam.RedisParam` and the
command line use them. R's names for them are in :mod:`dask_redisparam.r_compat`.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from .backend import Backend
from .config.address import RedisAddress
from .errors import AuthenticationFailed, ServerError

__all__ = [
    "DatasetInfo",
    "JobStatus",
    "alive",
    "datasets",
    "job_status",
    "stop_all",
]

logger = logging.getLogger(__name__)


def alive(address: RedisAddress | None) -> bool:
    """Whether the server answers, within about a second; never raises.

    A refused password gives False and logs why (without the password).
    """
    if address is None:
        return False
    try:
        backend = Backend(address, retries=0, connect_timeout=1.0)
    except Exception as e:  # a malformed address: not alive
        logger.warning("rpalive: %s: %s", address.describe(), e)
        return False
    try:
        return backend.ping()
    except AuthenticationFailed as e:
        logger.warning("rpalive: %s", e)
        return False
    except ServerError as e:
        logger.debug("rpalive: %s", e)
        return False
    finally:
        backend.close()


def stop_all(backend: Backend, jobname: str, wait: float = 0.0) -> int:
    """Ask every live worker of ``jobname`` (only that job) to stop warm; returns how many were asked.

    With ``wait`` > 0, waits up to that many seconds for them to deregister.
    """
    ids = backend.live_workers(jobname)
    asked = backend.request_stop(jobname, ids)
    deadline = time.monotonic() + wait
    while wait > 0 and set(ids) & set(backend.live_workers(jobname)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return asked


@dataclasses.dataclass
class JobStatus:
    """A snapshot of a job: its workers (id -> registration fields: ``host``, ``pid``, ``started``, ``tasks``,
    ``current``, ``prefix``, ``rss``, ``beat``), queue depth and runs (id -> alive); the task rate and the seconds it
    was measured over (``rate_window``; 0: not measured); the length of its dead-letter list and the last rejection
    of a task message (``reason``, ``detail``, ``worker``, ``time``, ``run``, ``count``; empty if none in the last
    day); its published datasets (:class:`DatasetInfo`); when it was taken (``taken``, unix time); and the
    messages queued per resource class (``queued_resources``: class -> length of its queue, the classes of live
    runs only; ``queued`` counts the job's shared queue)."""

    jobname: str
    workers: dict[str, dict[str, str]]
    queued: int
    runs: dict[str, bool]
    tasks_per_second: float
    dead_letters: int = 0
    last_rejection: dict[str, str] = dataclasses.field(default_factory=dict)
    datasets: dict[str, DatasetInfo] = dataclasses.field(default_factory=dict)
    rate_window: float = 0.0
    taken: float = 0.0
    queued_resources: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A published dataset: its size in Redis (bytes of its values), age (seconds since it was published), the
    type of what was published, and the seconds it has left (None: until unpublished).

    Examples
    --------
    >>> DatasetInfo(nbytes=800, age=2.5, type="dask.array.core.Array", ttl=None).nbytes
    800
    """

    nbytes: int
    age: float
    type: str
    ttl: float | None


def datasets(backend: Backend, jobname: str) -> dict[str, DatasetInfo]:
    """The datasets published on ``jobname``, by name (two round trips and a ``SCAN``)."""
    now = time.time()
    out = {}
    for name, (fields, ttl_ms) in backend.dataset_records(jobname).items():
        created = float(fields.get("created", b"0"))
        out[name] = DatasetInfo(
            int(fields.get("nbytes", b"0")),
            max(0.0, now - created),
            fields.get("type", b"").decode(errors="replace"),
            ttl_ms / 1000 if ttl_ms >= 0 else None,
        )
    return out


def _tasks_done(first: dict[str, dict[str, str]], second: dict[str, dict[str, str]]) -> int:
    """Tasks finished between two readings of the workers' records (workers that left do not count)."""
    done = sum(int(f.get("tasks", 0)) - int(first.get(w, {}).get("tasks", 0)) for w, f in second.items())
    return max(done, 0)


def job_status(backend: Backend, jobname: str, interval: float = 1.0, previous: JobStatus | None = None) -> JobStatus:
    """Take a :class:`JobStatus`; the task rate is measured over ``interval`` seconds (0: not measured), or, given
    the ``previous`` snapshot, since that one (without waiting)."""
    start = time.time()
    first = backend.worker_records(jobname)
    rate, window = 0.0, 0.0
    if previous is not None:
        window = start - previous.taken
        rate = _tasks_done(previous.workers, first) / window if window > 0 else 0.0
    elif interval > 0:
        time.sleep(interval)
        second = backend.worker_records(jobname)
        window = time.time() - start
        rate, first = _tasks_done(first, second) / window, second
    dead, rejection = backend.rejections(jobname)
    queued, runs = backend.queue_length(jobname), backend.run_ids(jobname)
    taken = start + window if previous is None else start
    return JobStatus(
        jobname,
        first,
        queued,
        runs,
        rate,
        dead,
        rejection,
        datasets(backend, jobname),
        rate_window=window,
        taken=taken,
        queued_resources=backend.resource_queue_lengths(jobname),
    )
