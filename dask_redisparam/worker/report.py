"""What a worker hands back for a message it claimed: its results (through a lost connection), a failure when Redis is
too full to store them, or a refusal when the message must not be unpickled.

The :class:`~dask_redisparam.worker.loop.Worker` loop decides when; these functions do the reporting, through the
:class:`~dask_redisparam.backend.Backend`:

* :func:`complete` stores and reports a finished message, repeating through a lost connection for up to
  :data:`REPORT_GRACE` seconds (a repeat after success stores nothing);
* :func:`report_unstored` reports a message whose results Redis refused (memory full) as failed;
* :func:`check_replicated` warns (or, with ``replicas_required``, tells the manager) when fewer replicas than asked
  acknowledged a completion (``WAIT``, :attr:`Backend.wait_replicas
  <dask_redisparam.backend.workers.WorkerOps.wait_replicas>`);
* :func:`reject` dead-letters a message that is not a task message of this version or fails its signature check,
  and notifies the manager of its run.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from ..backend import TRANSIENT_ERRORS, Backend
from ..config.address import RedisAddress
from ..errors import PersistenceFailed, ServerOutOfMemory, ServerReadOnly, ServerUnavailable
from ..wire.bulk import Report
from ..wire.protocol import (
    REJECTION_REASONS,
    Completion,
    Unreplicated,
    classify_rejection,
    dumps_completion,
    encode_rejected,
    encode_unreplicated,
)
from ..wire.serialize import dumps_exception
from ..wire.signing import Signer

__all__ = [
    "REPORT_GRACE",
    "REPORT_RETRIED",
    "check_replicated",
    "complete",
    "complete_many",
    "reject",
    "report_unstored",
]

logger = logging.getLogger(__name__)

REPORT_GRACE = 120.0
"""Seconds a worker keeps trying to report a finished message to an unreachable Redis before it gives up."""

REPORT_RETRIED: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, PersistenceFailed, ServerReadOnly)
"""What a report is repeated through: a lost connection, a server that refuses writes for a while."""


def complete(
    backend: Backend, report: Report, claim_next: bool, stop: threading.Event, address: RedisAddress
) -> tuple[int, bytes | None, bool]:
    """Store and report, repeating through a lost connection; claim the next message in the same round trip if
    ``claim_next``.

    Parameters
    ----------
    backend : Backend
        The worker's connection.
    report : Report
        The message's completion record and results.
    claim_next : bool
        Claim the next message with the completion (False once the worker is stopping or at its last message).
    stop : threading.Event
        Set when a stop was asked for: the worker then gives up after 5 s instead of :data:`REPORT_GRACE`.
    address : RedisAddress
        The server (named in the error).

    Returns
    -------
    tuple of (int, bytes or None, bool)
        What :meth:`Backend.complete_and_claim <dask_redisparam.backend.Backend.complete_and_claim>` returns (the
        status and the message claimed, if any), and whether a claim may have moved a message whose reply was lost
        (it then sits in the worker's processing list: the worker looks there before its next claim). No claim is
        made again after a lost reply.

    Raises
    ------
    ServerUnavailable
        After :data:`REPORT_GRACE` seconds (or 5 s once a stop was asked for) without reaching Redis: the message
        stays claimed in Redis, and is requeued when the worker's lease runs out.
    """
    status, claimed, _, lost_claim = complete_many(backend, report, 1 if claim_next else 0, stop, address)
    return status, (claimed[0] if claimed else None), lost_claim


def complete_many(
    backend: Backend, report: Report, claims: int, stop: threading.Event, address: RedisAddress
) -> tuple[int, list[bytes], int | None, bool]:
    """:func:`complete` claiming up to ``claims`` messages
    (:meth:`Backend.complete_and_claim_many <dask_redisparam.backend.Backend.complete_and_claim_many>`):
    ``(status, the messages claimed, the queue's surplus after them, whether a lost reply may have claimed some)``.
    """
    delay, started, lost_claim = 0.05, time.monotonic(), False
    while True:
        try:
            status, claimed, surplus = backend.complete_and_claim_many(report, claims)
            return status, claimed, surplus, lost_claim
        except REPORT_RETRIED as e:
            # a message claimed by a call whose reply was lost sits in our processing list: picked up later
            lost_claim, claims = lost_claim or claims > 0, 0
            waited = time.monotonic() - started
            if waited > REPORT_GRACE or (stop.is_set() and waited > 5.0):
                raise ServerUnavailable(
                    f"worker {report.worker_id}: cannot report to Redis at {address.describe()} for {waited:.0f} s: {e}"
                ) from e
            logger.warning("worker %s: cannot report (%s); retrying", report.worker_id, e)
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def report_unstored(
    backend: Backend, report: Report, msg_id: int, attempt: int, signer: Signer | None, error: ServerOutOfMemory
) -> None:
    """Redis is too full to store the results of ``report``: report its message as failed (the manager fails the
    run), with a small record of its own; it fits, as a completion script is not refused once it has released the
    message."""
    worker_id, run_id = report.worker_id, report.run_id
    logger.warning(
        "worker %s: could not store the results of message %d of run %s: %s", worker_id, msg_id, run_id, error
    )
    failure = ServerOutOfMemory(f"{error} (worker {worker_id} could not store the results of message {msg_id})")
    completion = Completion(msg_id, attempt, worker_id, [], dumps_exception(failure, None))
    record = dumps_completion(completion, signer, report.jobname, run_id)
    backend.complete(Report(report.jobname, worker_id, run_id, report.message, record))


def reject(backend: Backend, jobname: str, worker_id: str, message: bytes, error: Exception) -> None:
    """Refuse a message that is not a task message of this version or fails its signature check.

    It is never unpickled: it goes to the job's dead-letter list, the rejection is recorded for ``status``, and the
    manager of its run (if the run is alive) gets a rejection notice, so that it sends the message again for another
    worker, or fails the run if every worker refuses. The warning says why, with a hint when the cause is likely a
    missing secret or another version of dask-redisparam.
    """
    reason, run_id, msg_id, attempt = classify_rejection(message, error)
    hint = ""
    if reason == "no-secret":
        hint = "; this worker has no secret: set REDISPARAM_SECRET (or REDISPARAM_SECRET_FILE) as for the manager"
    elif reason == "version":
        hint = "; run the same version of dask-redisparam on the manager and the workers"
    logger.warning(
        "worker %s: rejected a task message (not unpickled; dead-lettered): %s: %s%s",
        worker_id,
        REJECTION_REASONS.get(reason, reason),
        error,
        hint,
    )
    info = {"reason": reason, "detail": str(error)[:200], "worker": worker_id, "run": run_id or ""}
    info["time"] = f"{time.time():.3f}"
    notice = encode_rejected(msg_id, attempt, uuid.uuid4().hex[:12], reason, worker_id)
    backend.reject_message(jobname, worker_id, message, info, run_id, notice)


def check_replicated(backend: Backend, report: Report, msg_id: int, first_idx: int, *, required: bool) -> None:
    """After a stored completion with ``WAIT`` (:attr:`Backend.wait_replicas
    <dask_redisparam.backend.workers.WorkerOps.wait_replicas>`): if fewer replicas acknowledged it than asked, warn
    (naming how many did and the primary) and go on; with ``required``, also push a notice to the run's ``done``
    list, on which the manager fails the run with :class:`~dask_redisparam.errors.ReplicationFailed` naming the task
    (field ``first_idx``) and the primary. The completion stays stored either way."""
    wanted = backend.wait_replicas
    acked = backend.last_acked
    if wanted is None or acked is None or acked >= wanted[0]:
        return
    primary = backend.primary() or backend.address.describe()
    logger.warning(
        "worker %s: only %d of %d replica(s) of the primary %s acknowledged the completion of message %d of run %s "
        "within %g s%s",
        report.worker_id,
        acked,
        wanted[0],
        primary,
        msg_id,
        report.run_id,
        wanted[1],
        "; telling the manager (replicas_required)" if required else " (a failover now could lose it); going on",
    )
    if required:
        notice = Unreplicated(msg_id, first_idx, acked, wanted[0], primary, report.worker_id)
        delay = 0.05
        for _ in range(20):
            try:
                backend.notify_run(report.jobname, report.run_id, encode_unreplicated(notice))
                return
            except REPORT_RETRIED:
                time.sleep(delay)
                delay = min(2 * delay, 2.0)
