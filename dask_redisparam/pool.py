"""Managing a job's worker pool: is the server alive, who serves, stop them all, clean up; and R's names.

These work on any :class:`~dask_redisparam.RedisParam`, started or not (an unstarted one opens a temporary
connection), and on a bare :class:`~dask_redisparam.address.RedisAddress` for the command line.

=================  ====================================================================
R (RedisParam)     Python
=================  ====================================================================
``rpalive(p)``     :func:`rpalive` / ``p.alive()``
``rpstopall(p)``   :func:`rpstopall` / ``p.stop_all()``
``rpworkers(x)``   :func:`rpworkers`: default worker count for an ``is_worker`` value
``rphost(p)``      :func:`rphost`; also ``rpport``, ``rppassword``, ``rpisworker``
``bpstopall(p)``   :func:`bpstopall`, deprecated as in R
=================  ====================================================================
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from typing import TYPE_CHECKING

from .address import RedisAddress
from .backend import Backend
from .errors import AuthenticationFailed, ConfigurationError, ServerError
from .settings import default_worker_count

if TYPE_CHECKING:
    from .param import RedisParam

__all__ = [
    "JobStatus",
    "alive",
    "bpstopall",
    "job_status",
    "rpalive",
    "rphost",
    "rpisworker",
    "rppassword",
    "rpport",
    "rpstopall",
    "rpworkers",
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
    """A snapshot of a job: its workers (id -> registration fields), queue depth and runs (id -> alive); the
    length of its dead-letter list and the last rejection of a task message (``reason``, ``detail``, ``worker``,
    ``time``, ``run``, ``count``; empty if none in the last day)."""

    jobname: str
    workers: dict[str, dict[str, str]]
    queued: int
    runs: dict[str, bool]
    tasks_per_second: float
    dead_letters: int = 0
    last_rejection: dict[str, str] = dataclasses.field(default_factory=dict)


def job_status(backend: Backend, jobname: str, interval: float = 1.0) -> JobStatus:
    """Take a :class:`JobStatus`; the task rate is measured over ``interval`` seconds (0: not measured)."""
    first = backend.worker_records(jobname)
    rate = 0.0
    if interval > 0:
        time.sleep(interval)
        second = backend.worker_records(jobname)
        done = sum(int(f.get("tasks", 0)) - int(first.get(w, {}).get("tasks", 0)) for w, f in second.items())
        rate, first = max(done, 0) / interval, second
    dead, rejection = backend.rejections(jobname)
    return JobStatus(jobname, first, backend.queue_length(jobname), backend.run_ids(jobname), rate, dead, rejection)


# ---------------------------------------------------------------------------------------------- R's names
def rpalive(param: RedisParam) -> bool:
    """R's ``rpalive``: whether the param's Redis server answers."""
    return param.alive()


def rpstopall(param: RedisParam) -> int:
    """R's ``rpstopall``: stop every worker listening on the param's jobname."""
    return param.stop_all()


def bpstopall(param: RedisParam) -> int:
    """Deprecated alias of :func:`rpstopall`, as in R."""
    warnings.warn("bpstopall() is deprecated; use rpstopall()", DeprecationWarning, stacklevel=2)
    return rpstopall(param)


def rpworkers(is_worker: bool | None) -> int:
    """R's ``rpworkers``: the default worker count: local CPUs for None, 1000 (a cap) for False, 1 for True."""
    if is_worker is None:
        return default_worker_count()
    if not isinstance(is_worker, bool):
        raise ConfigurationError(f"is_worker={is_worker!r} must be None, True or False")
    return 1 if is_worker else 1000


def _address(param: RedisParam) -> RedisAddress | None:
    return param.backend.address if param.is_up else param.settings.address


def rphost(param: RedisParam) -> str | None:
    """R's ``rphost``: the server's host (None for the embedded server, which has a socket path)."""
    address = _address(param)
    return None if address is None or address.path is not None else address.host


def rpport(param: RedisParam) -> int | None:
    """R's ``rpport``: the server's TCP port (None when on a Unix socket or not configured)."""
    address = _address(param)
    return None if address is None or address.path is not None else address.port


def rppassword(param: RedisParam) -> str | None:
    """R's ``rppassword``: the password in use, or None."""
    address = _address(param)
    return None if address is None else address.password


def rpisworker(param: RedisParam) -> bool | None:
    """R's ``rpisworker``: the param's ``is_worker`` mode."""
    return param.settings.is_worker
