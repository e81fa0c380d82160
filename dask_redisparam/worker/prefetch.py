"""Hiding the round trip: when a worker keeps the next message claimed while it runs the current one.

A worker completes a message and claims the next one in one round trip
(:meth:`Backend.complete_and_claim_many <dask_redisparam.backend.Backend.complete_and_claim_many>`). Without a
message in hand it has to wait for that round trip before it can run anything; with one *prefetched* (claimed
earlier, so it sits in the worker's processing list in Redis like any claimed message: a reaper requeues it, a
warm or cold stop gives it back), it runs that one at once while the completion travels on a thread of its own
(:class:`Reporter`). Across a network (a round trip of milliseconds) that is the difference between a worker that
waits a round trip per message and one that never waits.

A prefetched message is one that no other worker can take meanwhile: at the end of a run, a worker may hold the
last message while another is idle, which lengthens the tail by up to one message. :class:`PrefetchPolicy` hence
prefetches only when it pays: when the measured round trip is at least :data:`PREFETCH_RATIO` of the measured run
time of a message, and the queue still held messages after the last claim (a non-empty queue means that no worker
is idle: idle workers wait on it). On a local server (round trips of a tenth of a millisecond) and messages of
~100 ms, it never prefetches.

Examples
--------
>>> policy = PrefetchPolicy()
>>> policy.ahead()  # nothing measured yet
0
>>> for _ in range(5):
...     policy.round_trip(0.005); policy.ran(0.1); policy.queued(10)
>>> policy.ahead()  # 5 ms round trips for 100 ms messages, and a queue
1
>>> policy.queued(0); policy.ahead()  # the queue ran dry: others may be idle
0
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from ..wire.bulk import Report

__all__ = ["ALPHA", "CONFIRMED_SECONDS", "PREFETCH_RATIO", "Claimed", "Pending", "PrefetchPolicy", "Reporter"]

PREFETCH_RATIO = 0.03
"""Prefetch when a round trip costs at least this share of a message's run time (3 %: 3 ms for 100 ms messages)."""
ALPHA = 0.3
"""Weight of the newest measurement in the moving averages of :class:`PrefetchPolicy`."""

CONFIRMED_SECONDS = 1.0
"""A message claimed in the round trip of a completion that found its run alive needs no check of its own that the
run is alive (``EXISTS alive``) if it needs no input from Redis and starts within this many seconds."""

T = TypeVar("T")


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
    """A completion on its way (:class:`Reporter`): its future (what
    :func:`~dask_redisparam.worker.report.complete_many` returns) and what the worker needs once it is back."""

    future: concurrent.futures.Future[tuple[int, list[bytes], int, bool]]
    report: Report
    msg_id: int
    attempt: int
    ntasks: int


class PrefetchPolicy:
    """How many messages a worker keeps claimed beyond the one it runs next (0 or 1), from what it measured.

    Attributes
    ----------
    rtt, run : float or None
        Moving averages of the round trips to Redis and of the run time of a message, in seconds.
    queue : int
        The queue's length after the worker's last claim (-1: unknown).
    """

    def __init__(self) -> None:
        self.rtt: float | None = None
        self.run: float | None = None
        self.queue = -1

    @staticmethod
    def _average(old: float | None, new: float) -> float:
        return new if old is None else old + ALPHA * (new - old)

    def round_trip(self, seconds: float) -> None:
        """A round trip took ``seconds`` (a completion, a load of inputs)."""
        self.rtt = self._average(self.rtt, seconds)

    def ran(self, seconds: float) -> None:
        """A message's tasks ran ``seconds``."""
        self.run = self._average(self.run, seconds)

    def queued(self, length: int) -> None:
        """The queue held ``length`` messages after the last claim (-1: not asked)."""
        if length >= 0:
            self.queue = length

    def ahead(self) -> int:
        """Messages to keep claimed beyond the next one: 1 if the round trip is significant and the queue is not
        empty, else 0."""
        if self.rtt is None or self.run is None or self.queue < 1:
            return 0
        return 1 if self.rtt >= PREFETCH_RATIO * self.run else 0


class Reporter:
    """One thread that sends completions while the worker runs its next message; :meth:`submit` returns a
    future.

    Examples
    --------
    >>> with Reporter("doc") as reporter:
    ...     reporter.submit(sum, [1, 2]).result()
    3
    """

    def __init__(self, worker_id: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"report-{worker_id}")

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        """Wait for what was submitted, then end the thread."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
