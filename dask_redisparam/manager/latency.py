"""The round trip to Redis in the manager's window: enough messages queued that workers never wait a round trip.

Each worker runs a message, may keep the next one prefetched (:mod:`dask_redisparam.worker.prefetch`: when a round
trip costs at least :data:`PREFETCH_RATIO` of a message's run time), and finds a third in the queue when it claims.
After a completion, the manager needs about three round trips (the record reaches Redis, the manager's wait returns,
the turn that reads it, the turn that pushes the next message) before a new message is queued. So when the round
trip is significant, :func:`window` adds to ``ceil(live × queue_multiplier)`` one message per worker (its prefetched
one) and as many as the workers consume during those three round trips. On a local server (round trips of a tenth
of a millisecond) it adds nothing.

:class:`RoundTrip` estimates the round trip as the shortest turn of the manager's loop so far (a turn is at least
one round trip; the shortest is the closest to the network's own).

Examples
--------
>>> window(2, 2.0, None, None)  # nothing measured: the setting's window
4
>>> window(2, 2.0, 0.0002, 0.01)  # loopback
4
>>> window(2, 2.0, 0.012, 0.01)  # 6 ms each way, 100 ms messages
7
"""

from __future__ import annotations

import math

__all__ = ["MIN_ROUND_TRIP", "PREFETCH_RATIO", "REFILL_TRIPS", "RoundTrip", "window"]

PREFETCH_RATIO = 0.03
"""The share of a message's run time from which a round trip is significant (the workers' threshold, see
:data:`dask_redisparam.worker.prefetch.PREFETCH_RATIO`; the two sides share no code)."""
MIN_ROUND_TRIP = 0.002
"""...and at least this many seconds (the workers' :data:`~dask_redisparam.worker.prefetch.MIN_ROUND_TRIP`): a
shorter turn is a local server, whose turns grow on a busy machine, not with a network."""
REFILL_TRIPS = 3
"""Round trips between a completion and the next message in the queue."""
TARGET_SECONDS = 0.1
"""How long a message of small tasks runs (:data:`dask_redisparam.manager.run_dispatch.TARGET_SECONDS`)."""


def window(live: int, multiplier: float, rtt: float | None, mean_seconds: float | None) -> int:
    """Messages queued or running at once: ``ceil(live × multiplier)``, plus, when the round trip ``rtt`` is
    significant against a message's run time (about ``max(TARGET_SECONDS, mean task time)``), one per worker and
    those the workers run during :data:`REFILL_TRIPS` round trips."""
    base = math.ceil(live * multiplier)
    if rtt is None or live == 0:
        return base
    message = max(TARGET_SECONDS, mean_seconds or 0.0)
    if rtt < max(MIN_ROUND_TRIP, PREFETCH_RATIO * message):
        return base
    return base + live + math.ceil(live * REFILL_TRIPS * rtt / message)


class RoundTrip:
    """The shortest round trip seen (seconds), or None.

    Examples
    --------
    >>> rt = RoundTrip()
    >>> rt.seen(0.004), rt.seen(0.009), rt.seconds
    (True, False, 0.004)
    """

    def __init__(self) -> None:
        self.seconds: float | None = None

    def seen(self, seconds: float) -> bool:
        """Note a turn of ``seconds``; True if the estimate changed."""
        if self.seconds is None or seconds < self.seconds:
            self.seconds = seconds
            return True
        return False
