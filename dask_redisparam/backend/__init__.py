"""The one doorway to Redis: every redis-py call of the package is in this subpackage.

:class:`Backend` wraps one connection pool to one server and offers the few operations that the manager
(:mod:`dask_redisparam.manager.state`), the workers (:mod:`dask_redisparam.worker`) and the CLI need. Each
operation is one round trip: a pipeline or a Lua script, never one command per task.

Blocking calls (``BLMOVE``, ``BLPOP``) always use a timeout shorter than the socket timeout, since redis-py
otherwise retries a blocking call that outlives its socket silently for a minute.

The operations are grouped by who uses them, one module each, each group deriving from the ones it uses
(``BackendBase`` < ``LargeValues`` < ``RunOps``, ``WorkerOps``, ``HeldOps`` < ``AdminOps`` < ``MonitorOps`` <
:class:`Backend`):

- :mod:`.client`: the connection, its constants and :class:`~.client.BackendBase` (pipelines, connection checks);
- :mod:`.cluster`: on a Redis Cluster, the slot map and a client per primary, which follows redirections;
  :mod:`.slots` routes each operation to the primary of its job's slot, :mod:`.nodes` are the clients of the nodes;
- :mod:`.runs`: the manager's side of a run;
- :mod:`.workers`: registration, leases, claiming and completing messages, reaping;
- :mod:`.large`: sending and reading the parts of large values;
- :mod:`.held`: values kept beyond their run (persisted values, published datasets);
- :mod:`.admin`: inspection and clean-up of a job;
- :mod:`.monitor`: read-only looks at a server's jobs, for the dashboard;
- :mod:`.failover`: which primary the connections go to, and what a run has there after a failover
  (:mod:`.sentinel` builds the client of a ``redis+sentinel://`` address).

:mod:`.stats` shapes the job's statistics (task counts and durations per key prefix, task events) that the
completion script keeps, and reads them back.

Beside them: :mod:`.keys` (every key name, as pure functions), :mod:`.lua` (the scripts), :mod:`.commands` and
:mod:`.replies` (the ACL check, the server's error replies). This subpackage imports only
:mod:`dask_redisparam.wire`, :mod:`dask_redisparam.config` and :mod:`dask_redisparam.errors`.

Examples
--------
>>> from dask_redisparam.worker.server import EmbeddedRedis
>>> with EmbeddedRedis() as server:
...     backend = Backend.connect(server.address)
...     backend.ping()
...     backend.close()
True
"""

from __future__ import annotations

import logging
import time

import redis

from ..config.address import RedisAddress
from ..errors import ServerUnavailable
from .client import MAX_BLOCK as MAX_BLOCK
from .client import SEND_BUFFER as SEND_BUFFER
from .client import SOCKET_TIMEOUT as SOCKET_TIMEOUT
from .client import TRANSIENT_ERRORS
from .failover import FailoverOps
from .monitor import MonitorOps
from .sentinel import _PrimaryUnknown

__all__ = ["TRANSIENT_ERRORS", "Backend"]

logger = logging.getLogger(__name__)

WAIT_FIRST = 0.1
"""Seconds before the second try of :meth:`Backend.connect` waiting for a server; doubles up to :data:`WAIT_MAX`."""
WAIT_MAX = 5.0
"""Longest pause between two tries of :meth:`Backend.connect` waiting for a server."""
WAIT_LOG_EVERY = 10.0
"""Seconds between two warnings while :meth:`Backend.connect` waits for a server."""


class Backend(MonitorOps, FailoverOps):
    """Redis operations of manager, workers and CLI, for one server.

    Use :meth:`connect`, which checks the server and the credentials at once and turns failures into
    :class:`~dask_redisparam.errors.ServerUnavailable` or
    :class:`~dask_redisparam.errors.AuthenticationFailed` naming the server.

    Attributes
    ----------
    address : RedisAddress
        The server.
    bytes_downloaded : int
        Bytes of stored values this backend fetched with :meth:`fetch_values` (results, not messages).
    """

    @classmethod
    def connect(cls, address: RedisAddress, *, retries: int = 3, wait: float | None = 0.0) -> Backend:
        """Connect and check with ``PING``; fail with an error that names the server.

        Parameters
        ----------
        address : RedisAddress
            The server.
        retries : int
            Retries of each later command through a lost connection.
        wait : float or None
            Seconds to wait for a server that cannot be reached yet (connection refused, host unknown, timeout, a
            server loading its data), trying again after :data:`WAIT_FIRST` seconds, doubling up to
            :data:`WAIT_MAX`, with a warning every :data:`WAIT_LOG_EVERY` seconds; None waits until it answers.
            The default, 0, fails at once (the manager). Refused credentials and TLS errors never wait.

        Raises
        ------
        ServerUnavailable
            The server cannot be reached (after ``wait`` seconds).
        AuthenticationFailed
            The server refused the credentials.
        """
        started = time.monotonic()
        delay, warned = WAIT_FIRST, -WAIT_LOG_EVERY
        while True:
            probe = cls(address, retries=0)
            try:
                probe.ping()
                break
            except ServerUnavailable as e:
                waited = time.monotonic() - started
                if wait == 0 or not _unreachable(e):
                    raise
                if wait is not None and waited >= wait:
                    raise ServerUnavailable(f"{e} (gave up after waiting {waited:.1f} s)") from None
                if waited - warned >= WAIT_LOG_EVERY:
                    logger.warning("waiting for Redis at %s (%.0f s so far): %s", address.describe(), waited, e)
                    warned = waited
                time.sleep(delay if wait is None else min(delay, wait - waited))
                delay = min(2 * delay, WAIT_MAX)
            finally:
                probe.close()
        if warned >= 0:
            logger.info("reached Redis at %s after %.0f s", address.describe(), time.monotonic() - started)
        return cls(address, retries=retries)


def _unreachable(error: ServerUnavailable) -> bool:
    """Whether the failure of ``PING`` behind ``error`` may pass by waiting: the server is not there (yet), as
    opposed to a TLS or protocol mismatch, which waiting does not cure."""
    cause = error.__context__  # the redis-py error that ping() turned into ``error``
    if isinstance(cause, _PrimaryUnknown):  # no Sentinel answers, or the primary is down: not a wrong service name
        return not cause.unknown
    if isinstance(cause, (redis.exceptions.BusyLoadingError, redis.TimeoutError)):
        return True
    text = str(cause if cause is not None else error)
    return "connecting to" in text and "SSL" not in text and "CERTIFICATE" not in text
