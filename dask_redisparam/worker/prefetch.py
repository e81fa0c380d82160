"""Hiding the round trip: when a worker keeps the next message claimed while it runs the current one.

A worker completes a message and claims the next one in one round trip
(:meth:`Backend.complete_and_claim_many <dask_redisparam.backend.Backend.complete_and_claim_many>`). Without a
message in hand it has to wait for that round trip before it can run anything; with one *prefetched* (claimed
earlier, so it sits in the worker's processing list in Redis like any claimed message: a reaper requeues it, a
warm or cold stop gives it back), it sends the completion, runs that one at once, and reads the completion's reply
only then (:class:`Pipelining`; no thread: the reply waits in the socket). Across a network (a round trip of
milliseconds) that is the difference between a worker that
waits a round trip per message and one that never waits.

A prefetched message is one that no other worker can take meanwhile: at the end of a run, a worker may hold the
last message while another is idle, which lengthens the tail by up to one message. :class:`PrefetchPolicy` hence
prefetches only when it pays: when the measured round trip is at least :data:`PREFETCH_RATIO` of the measured run
time of a message, and the queue still held at least one message per worker of the job after the last claim (a
*surplus* of 0 or more: no worker is idle, idle workers wait on the queue, and each could take one more now). Near
the end of a run the surplus turns negative and no worker takes a new spare, so the last messages go to whoever is
free first. On a local server (round trips of a tenth of a millisecond) and messages of ~100 ms, it never
prefetches.

Examples
--------
>>> policy = PrefetchPolicy()
>>> policy.ahead()  # nothing measured yet
0
>>> for _ in range(5):
...     policy.round_trip(0.005); policy.ran(0.1); policy.queued(10)
>>> policy.ahead()  # 5 ms round trips for 100 ms messages, and a queue
1
>>> policy.queued(-3); policy.ahead()  # fewer queued messages than workers: the end of a run is near
0
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import NamedTuple

from ..backend import TRANSIENT_ERRORS, Backend
from ..backend.workers import SentCompletion
from ..config.address import RedisAddress
from ..errors import ServerOutOfMemory
from ..wire.bulk import Report
from ..wire.signing import Signer
from .report import REPORT_RETRIED, check_replicated, complete_many, report_unstored
from .signals import fault_test_hook

__all__ = [
    "ALPHA",
    "CONFIRMED_SECONDS",
    "MIN_ROUND_TRIP",
    "RISE",
    "PREFETCH_RATIO",
    "Claimed",
    "Pending",
    "Pipelining",
    "PrefetchPolicy",
]

logger = logging.getLogger(__name__)

PREFETCH_RATIO = 0.03
"""Prefetch when a round trip costs at least this share of a message's run time (3 %: 3 ms for 100 ms messages)."""
MIN_ROUND_TRIP = 0.002
"""...and at least this many seconds: shorter ones are a local server, whose round trips grow on a busy machine (a
CPU to wait for), where a held message would only keep another worker idle (measured: 96 local workers on 2
shared cores ran 1,920 x 100 ms sleeps in 2.9 s prefetching, 2.3 s not)."""
ALPHA = 0.3
"""Weight of the newest measurement in the moving average of a message's run time (:class:`PrefetchPolicy`)."""
RISE = 0.02
"""Weight of a longer round trip in the estimate of the round trip (a shorter one replaces it)."""

CONFIRMED_SECONDS = 1.0
"""A message claimed in the round trip of a completion that found its run alive needs no check of its own that the
run is alive (``EXISTS alive``) if it needs no input from Redis and starts within this many seconds."""


class Claimed(NamedTuple):
    """A message the worker claimed and has not started (it sits in the worker's processing list).

    ``alive_run`` names the run that a completion in the same round trip found alive (at monotonic time ``at``),
    or is ``""``.
    """

    message: bytes
    alive_run: str = ""
    at: float = 0.0

    def confirmed(self, run_id: str) -> bool:
        """Whether the run ``run_id`` is known alive as of this message's claim, recently enough.

        Examples
        --------
        >>> Claimed(b"m", "r1", time.monotonic()).confirmed("r1"), Claimed(b"m").confirmed("r1")
        (True, False)
        """
        return self.alive_run == run_id and time.monotonic() - self.at < CONFIRMED_SECONDS


class Pending(NamedTuple):
    """A completion sent whose reply is not read yet
    (:meth:`Backend.send_completion <dask_redisparam.backend.Backend.send_completion>`), and what the worker needs
    once it is back."""

    sent: SentCompletion
    report: Report
    msg_id: int
    attempt: int
    ntasks: int
    first: int


class PrefetchPolicy:
    """How many messages a worker keeps claimed beyond the one it runs next (0 or 1), from what it measured.

    Attributes
    ----------
    rtt, run : float or None
        The round trip to Redis (its floor, see :meth:`round_trip`) and the moving average of a message's run
        time, in seconds.
    surplus : int or None
        The queue's length minus the job's workers after the worker's last claim (None: unknown).
    """

    def __init__(self) -> None:
        self.rtt: float | None = None
        self.run: float | None = None
        self.surplus: int | None = None

    @staticmethod
    def _average(old: float | None, new: float) -> float:
        return new if old is None else old + ALPHA * (new - old)

    def round_trip(self, seconds: float) -> None:
        """A round trip took ``seconds`` (a completion, a load of inputs). The estimate follows a shorter one at
        once and a longer one slowly (:data:`RISE`): it is the network's floor, not the delays of a busy machine
        (a worker that waits for a CPU would hold messages that idle workers could run)."""
        if self.rtt is None or seconds < self.rtt:
            self.rtt = seconds
        else:
            self.rtt += RISE * (seconds - self.rtt)

    def ran(self, seconds: float) -> None:
        """A message's tasks ran ``seconds``."""
        self.run = self._average(self.run, seconds)

    def queued(self, surplus: int | None) -> None:
        """The queue held ``surplus`` messages more than the job has workers after the last claim (None: not
        asked, nothing changes)."""
        if surplus is not None:
            self.surplus = surplus

    def ahead(self) -> int:
        """Messages to keep claimed beyond the next one: 1 if the round trip is significant and the queue's surplus
        is not negative, else 0."""
        if self.rtt is None or self.run is None or self.surplus is None or self.surplus < 0:
            return 0
        return 1 if self.rtt >= max(MIN_ROUND_TRIP, PREFETCH_RATIO * self.run) else 0


class Pipelining:
    """The part of :class:`~dask_redisparam.worker.loop.Worker` that sends completions and keeps what they claim:
    :meth:`_send` a message's completion (without waiting for the reply if a claimed message is in hand to run
    meanwhile), :meth:`_finish_pending` to read the reply. The worker declares the attributes used here."""

    id: str
    address: RedisAddress
    max_tasks: int | None
    messages_done: int
    tasks_done: int
    signer: Signer | None
    _stop: threading.Event
    _recover: bool
    _held: collections.deque[Claimed]
    _pending: Pending | None
    _policy: PrefetchPolicy
    resources: tuple[tuple[str, float], ...]
    replicas: int
    replicas_required: bool

    def _send(self, backend: Backend, report: Report, msg_id: int, attempt: int, ntasks: int, first: int) -> None:
        """Send a message's completion, claiming in the same round trip what keeps the worker busy: the next
        message, plus one more if prefetching pays (:class:`PrefetchPolicy`). With a claimed message in hand, the
        reply is read after that message ran (:meth:`_finish_pending`); else the worker waits for it, as it has
        nothing else to do."""
        self._finish_pending(backend)  # the one before: long back, as this message ran meanwhile
        # a worker with resources claims nothing here: it looks at the resource classes first (worker/claims.py)
        claims = 0 if self._stop.is_set() or self.resources else max(0, 1 + self._policy.ahead() - len(self._held))
        if self.max_tasks is not None:  # never claim beyond the last message this worker will run
            claims = max(0, min(claims, self.max_tasks - self.messages_done - 1 - len(self._held)))
        if self._held and not report.parts:
            try:
                sent = backend.send_completion(report, claims)
            except TRANSIENT_ERRORS:  # sent or not: the retries of the synchronous path below find out
                self._recover = True
            else:
                self._pending = Pending(sent, report, msg_id, attempt, ntasks, first)
                return
            claims = 0
        started = time.perf_counter()
        try:
            status, claimed, surplus, lost_claim = complete_many(backend, report, claims, self._stop, self.address)
        except ServerOutOfMemory as e:
            self._recover = True  # the refused completion may have claimed the next message
            report_unstored(backend, report, msg_id, attempt, self.signer, e)
            return
        self._policy.round_trip(time.perf_counter() - started)
        self._completed(backend, report, msg_id, ntasks, status, claimed, surplus, lost_claim, first)

    def _finish_pending(self, backend: Backend) -> None:
        """Read the reply of the completion sent last, if any, and take what it claimed. A lost reply: the
        completion is sent again (a repeat after success stores nothing), and the processing list is read again
        (a claim may have moved a message)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        report, msg_id = pending.report, pending.msg_id
        lost_claim = False
        try:
            try:
                status, claimed, surplus = backend.finish_completion(report, pending.sent)
            except REPORT_RETRIED:
                lost_claim = True
                status, claimed, surplus, _ = complete_many(backend, report, 0, self._stop, self.address)
        except ServerOutOfMemory as e:
            self._recover = True  # the refused completion may have claimed the next message
            report_unstored(backend, report, msg_id, pending.attempt, self.signer, e)
            return
        self._completed(backend, report, msg_id, pending.ntasks, status, claimed, surplus, lost_claim, pending.first)

    def _completed(
        self,
        backend: Backend,
        report: Report,
        msg_id: int,
        ntasks: int,
        status: int,
        claimed: list[bytes],
        surplus: int | None,
        lost_claim: bool,
        first: int,
    ) -> None:
        self._recover = self._recover or lost_claim  # (if it gave up, the loop looks in the processing list anyway)
        if status > 0 and self.replicas > 0:  # WAIT followed the completion (backend.last_acked)
            check_replicated(backend, report, msg_id, first, required=self.replicas_required)
        alive_run = report.run_id if status == 1 else ""
        now = time.monotonic()
        self._held.extend(Claimed(m, alive_run, now) for m in claimed)
        self._policy.queued(surplus)
        if status < 0:
            logger.warning(
                "worker %s: lost the claim on message %d of run %s (lease expired, or a failover lost it); its "
                "result is dropped",
                self.id,
                msg_id,
                report.run_id,
            )
        fault_test_hook("completed")
        self.tasks_done += ntasks
