"""The manager's loop across a failover: notice it, reopen a run whose state vanished, and reconcile what was lost.

:class:`FailoverWatch` is asked after every successful round trip of :func:`~dask_redisparam.manager.loop.run_loop`.
For a Sentinel address it compares the primary the connections go to (:meth:`Backend.primary
<dask_redisparam.backend.Backend.primary>`, no round trip) with the last one seen; a change is a failover. Then, at
:data:`~dask_redisparam.manager.failover.AUDIT_DELAYS` after it, it takes one look at the run on the new primary
(:meth:`Backend.snapshot_run <dask_redisparam.backend.Backend.snapshot_run>`) and applies the recovery policy
(:meth:`RunState.recover <dask_redisparam.manager.run_recovery.Recovery.recover>`). A run whose ``alive`` key is gone
after a failover (the new primary never got its last renewals, or the failover outlasted the lease) is opened again
instead of failing with :class:`~dask_redisparam.errors.RunLost`; for any other address, or without a failover,
a vanished run is lost as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from ..backend import TRANSIENT_ERRORS, Backend
from ..errors import PayloadRejected, ReplicationFailed, RunLost
from ..wire.bulk import Part
from ..wire.protocol import LOST, REJECTED, UNREPLICATED, decode_rejected, loads_completion, open_lost
from .failover import AUDIT_DELAYS
from .lease import RUN_TTL, RunLease
from .state import RunState

__all__ = ["FailoverWatch", "confirm_replicated", "finish_run", "message_ids"]

FINISH_ATTEMPTS = 3
"""How often the end of a run (``WAIT`` for replicas, downloading the values) is tried through failovers."""
SETTLE_SECONDS = 30.0
"""Seconds :meth:`FailoverWatch.settle` waits for the new primary (the manager's outage grace)."""

logger = logging.getLogger(__name__)


def message_ids(run: RunState, records: list[bytes]) -> set[int]:
    """Ids of the messages that items of a run's ``done`` list answer (records and notices; unreadable ones are
    skipped)."""
    out: set[int] = set()
    options = run.options
    for record in records:
        try:
            if record.startswith(REJECTED):
                out.add(decode_rejected(record).msg_id)
            elif record.startswith(LOST):
                out.add(open_lost(record, options.signer, run.job, run.run_id)[0])
            elif not record.startswith(UNREPLICATED):
                out.add(loads_completion(record, options.signer, run.job, run.run_id).msg_id)
        except (PayloadRejected, ValueError, EOFError, TypeError):
            continue
    return out


class FailoverWatch:
    """Follows the run through failovers (see the module docstring).

    Parameters
    ----------
    backend : Backend
        The loop's connection.
    run : RunState
        The run.
    reopen : callable
        ``reopen(uploads, parts)`` opens the run again on the server (its ``alive`` key and the literals given).
    clock : callable
        Monotonic seconds.
    """

    def __init__(
        self,
        backend: Backend,
        run: RunState,
        reopen: Callable[[dict[str, bytes], list[Part]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = backend.address.kind == "sentinel"
        self.run = run
        self.reopen = reopen
        self.clock = clock
        self.primary = backend.primary()
        self.failovers = 0
        self.recovered = 0  # tasks run again
        self.resent = 0  # messages pushed again
        self._due: list[float] = []

    @classmethod
    def of(cls, backend: Backend, run: RunState, lease: RunLease) -> FailoverWatch:
        """The watch of a run whose lease is ``lease``: it reopens the run with the lease's keep time."""

        def reopen(uploads: dict[str, bytes], parts: list[Part]) -> None:
            backend.open_run(run.job, run.run_id, RUN_TTL, uploads, parts, keep=lease.keep)

        return cls(backend, run, reopen)

    def after_exchange(self, backend: Backend, alive: bool) -> None:
        """Called after each successful round trip of the loop, with whether the run's ``alive`` key was there."""
        run = self.run
        if self.enabled:
            primary = backend.primary()
            if primary is not None and primary != self.primary:
                if self.primary is not None:
                    self.failovers += 1
                    logger.warning(
                        "manager: Redis failover: the primary of %s is %s now (was %s); checking run %s",
                        run.options.describe_server,
                        primary,
                        self.primary,
                        run.run_id,
                    )
                    self._schedule()
                self.primary = primary
        if not alive:
            if not self.failovers:
                raise RunLost(
                    f"Redis at {run.options.describe_server} lost the state of run {run.run_id} of job {run.job!r}: "
                    "was the server restarted without persistence (or the run's keys deleted)?"
                )
            logger.warning("manager: run %s of job %r vanished in the failover; opening it again", run.run_id, run.job)
            self.reopen({}, [])
            self._schedule()
        if self._due and self.clock() >= self._due[0]:
            self.audit(backend)  # a lost connection meanwhile: the loop repeats its turn, and this look
            self._due.pop(0)

    def _schedule(self) -> None:
        now = self.clock()
        self._due = [now + delay for delay in AUDIT_DELAYS]

    def settle(self, backend: Backend) -> None:
        """Wait (up to :data:`SETTLE_SECONDS`) until the server answers, then look at the run and recover what a
        failover lost; later looks follow in the loop (:data:`~dask_redisparam.manager.failover.AUDIT_DELAYS`)."""
        deadline, delay = self.clock() + SETTLE_SECONDS, 0.05
        while True:
            try:
                self.primary = backend.primary() or self.primary
                self.audit(backend)
                break
            except TRANSIENT_ERRORS:
                if self.clock() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 2.0)
        self.failovers += 1
        self._schedule()

    def audit(self, backend: Backend) -> None:
        """Look at the run on the server and run, push and upload again what was lost (one snapshot)."""
        run = self.run
        look = backend.snapshot_run(run.job, run.run_id)
        if not look.alive:
            self.reopen({}, [])
        found = look.queued | look.held | message_ids(run, look.records)
        plan, uploads, parts = run.recover(look.fields, found)
        if uploads or parts:
            self.reopen(uploads, list(parts))
        if plan.empty:
            return
        self.recovered += len(plan.recompute)
        self.resent += len(plan.resend)
        logger.warning(
            "manager: the failover lost writes of run %s: %d task value(s) lost, %d task(s) run again, %d "
            "message(s) pushed again, %d message(s) superseded, %d literal(s) uploaded again%s",
            run.run_id,
            len(plan.lost),
            len(plan.recompute),
            len(plan.resend),
            len(plan.supersede),
            len(plan.reupload),
            "" if not plan.lost else f" (e.g. {', '.join(repr(k) for k in list(plan.lost)[:3])})",
        )


def confirm_replicated(backend: Backend, run: RunState, ttl: float) -> None:
    """With ``replicas_required``: at the end of the run, check that ``replicas`` replicas have all of its writes
    (:meth:`Backend.replicated <dask_redisparam.backend.Backend.replicated>`); else read the run's ``done`` list for
    a while for a worker's notice naming the task (:class:`~dask_redisparam.errors.ReplicationFailed` from it), and
    fail the run naming the primary.

    Raises
    ------
    ReplicationFailed
        Fewer replicas acknowledged the run's writes than asked for.
    """
    wanted = run.options.replicas_required
    if wanted is None:
        return
    acked = backend.replicated(run.job, run.run_id, wanted[0], wanted[1])
    if acked >= wanted[0]:
        return
    deadline = time.monotonic() + wanted[1] + 1.0
    while time.monotonic() < deadline:  # a worker's notice names the task
        records, _ = backend.exchange(run.job, run.run_id, [], [], ttl)
        for record in records:
            if record.startswith(UNREPLICATED):
                run.handle(record)
        time.sleep(0.1)
    primary = backend.primary() or run.options.describe_server
    raise ReplicationFailed(
        f"the writes of run {run.run_id} of job {run.job!r} were acknowledged by {acked} of the {wanted[0]} "
        f"replica(s) asked for within replicas_timeout ({wanted[1]:g} s) by the primary {primary} "
        "(replicas_required=True): a failover could lose them. Check the primary's replicas (INFO replication), or "
        "lower replicas"
    )


def finish_run(
    backend: Backend,
    run: RunState,
    finish: Callable[[Backend, RunState], dict[Hashable, Any]],
    loop: Callable[[], None],
    watch: FailoverWatch,
) -> dict[Hashable, Any]:
    """The end of a run whose tasks are done: :func:`confirm_replicated`, then ``finish`` (download the values, or
    keep them). Through a Sentinel failover at that moment (a lost connection, a value gone), the run is reconciled
    (:meth:`FailoverWatch.settle`) and ``loop`` runs again what was lost, up to :data:`FINISH_ATTEMPTS` times."""
    retried: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, RunLost)
    attempt = 1
    while True:
        try:
            confirm_replicated(backend, run, RUN_TTL)
            return finish(backend, run)
        except retried as e:
            if not watch.enabled or attempt >= FINISH_ATTEMPTS:
                raise
            attempt += 1
            logger.warning("manager: the end of run %s met a failover (%s); checking what it lost", run.run_id, e)
            watch.settle(backend)
            loop()
