"""A run's lease: a thread of the manager, with its own connection, keeps the run's keys alive while it lives.

The run's ``alive`` key (and its ``done`` list) have a TTL of :data:`RUN_TTL` seconds, renewed every
:data:`RENEW_INTERVAL` seconds by :class:`RunLease`; its ``data`` hash has a TTL of its own, the run's
``keep`` seconds (the larger of ``redo_ttl`` and ``resume_ttl``, at least :data:`RUN_TTL`), renewed with it, and so
is the job's registry of runs (``resume_keep``: ``resume_ttl``, :mod:`dask_redisparam.backend.resume`). The thread
does not depend on the manager's loop, so a manager busy for seconds (converting a large graph, pickling a large
value, a callback that blocks) keeps its run. When the manager dies, ``alive`` and ``done`` expire within
:data:`RUN_TTL` seconds and the workers drop the run's messages as they claim them (they check ``alive`` in the
round trip that loads a message's inputs, and in the completion script); the values stay ``keep`` seconds.

A renewal that finds ``alive`` gone (a server restarted without its data, the key deleted, or no renewal for
:data:`RUN_TTL` seconds) never creates it again: :meth:`RunLease.check` raises :class:`RunLost` in the manager's
loop. Only a single call that holds Python's GIL for longer than :data:`RUN_TTL` can starve the thread.

Examples
--------
>>> from dask_redisparam.backend import Backend
>>> from dask_redisparam.worker.server import EmbeddedRedis
>>> with EmbeddedRedis() as server:
...     backend = Backend.connect(server.address)
...     backend.open_run("doc-job", "r1", RUN_TTL, {})
...     lease = RunLease(server.address, "doc-job", "r1", keep=60.0).start()
...     lease.check()
...     lease.stop()
...     backend.close_run("doc-job", "r1")
...     backend.close()
"""

from __future__ import annotations

import logging
import threading

from ..backend import Backend
from ..config.address import RedisAddress
from ..errors import RunLost

__all__ = ["RENEW_INTERVAL", "RUN_TTL", "RunLease"]

logger = logging.getLogger(__name__)

RUN_TTL = 4.0
"""Seconds a run's ``alive`` key and ``done`` list outlive their manager's last renewal: after a manager dies,
workers stop serving its run within this time."""
RENEW_INTERVAL = 0.5
"""Seconds between two renewals of a run's lease."""


class RunLease:
    """Renew a run's lease from a thread of its own, with its own connection, until :meth:`stop`.

    Parameters
    ----------
    address : RedisAddress
        The server (a second connection is opened to it).
    jobname, run_id : str
        The run.
    keep : float
        Seconds the run's ``data`` hash outlives the last renewal (at least :data:`RUN_TTL`).
    resume_keep : float
        Seconds the job's registry of runs lives at least after the last renewal (0: the run is not registered).
    ttl, interval : float
        The lease (:data:`RUN_TTL`) and the seconds between renewals (:data:`RENEW_INTERVAL`).
    follow_failover : bool
        A Sentinel address: a renewal that finds ``alive`` gone goes on renewing (the manager's loop opens the run
        again after a failover, or fails it: :mod:`dask_redisparam.manager.follow`).
    """

    def __init__(
        self,
        address: RedisAddress,
        jobname: str,
        run_id: str,
        *,
        keep: float,
        resume_keep: float = 0.0,
        ttl: float = RUN_TTL,
        interval: float = RENEW_INTERVAL,
        follow_failover: bool = False,
    ) -> None:
        self.address = address
        self.jobname = jobname
        self.run_id = run_id
        self.keep = max(keep, ttl)
        self.resume_keep = resume_keep
        self.ttl = ttl
        self.interval = interval
        self.lost = False
        self.follow_failover = follow_failover
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{run_id}", daemon=True)

    def start(self) -> RunLease:
        """Start renewing, every ``interval`` seconds from now (``open_run`` has just set the TTLs: a compute
        shorter than ``interval`` never opens the second connection)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing and close the connection (the keys keep their TTLs)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> None:
        """Raise :class:`RunLost` if a renewal found the run's ``alive`` key gone."""
        if self.lost:
            raise RunLost(
                f"Redis at {self.address.describe()} lost the state of run {self.run_id} of job {self.jobname!r}: "
                "was the server restarted without persistence (or the run's keys deleted), or was its lease not "
                f"renewed for {self.ttl:g} s (a server outage that long)?"
            )

    def _renew(self) -> None:
        backend: Backend | None = None  # made at the first renewal: a short compute never needs it
        failing = False
        try:
            while not self._stop.wait(self.interval):
                try:
                    backend = backend or Backend(self.address, retries=1)
                    alive = backend.renew_run(self.jobname, self.run_id, self.ttl, self.keep, self.resume_keep)
                except Exception as e:  # a passing fault: the next renewal may succeed within the lease
                    if not failing:
                        logger.warning("manager: cannot renew the lease of run %s: %s", self.run_id, e)
                    failing = True
                else:
                    failing = False
                    if not alive and not self.follow_failover:
                        self.lost = True
                        return
        finally:
            if backend is not None:
                backend.close()
