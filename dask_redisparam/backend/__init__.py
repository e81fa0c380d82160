"""The one doorway to Redis: every redis-py call of the package is in this subpackage.

:class:`Backend` wraps one connection pool to one server and offers the few operations that the manager
(:mod:`dask_redisparam.scheduler`), the workers (:mod:`dask_redisparam.worker`) and the CLI need. Each
operation is one round trip: a pipeline or a Lua script, never one command per task.

Blocking calls (``BLMOVE``, ``BLPOP``) always use a timeout shorter than the socket timeout, since redis-py
otherwise retries a blocking call that outlives its socket silently for a minute.

The operations are grouped by who uses them, one module each, and :class:`Backend` combines them:

- :mod:`.client`: the connection, its constants and :class:`~.client.BackendBase` (pipelines, connection checks);
- :mod:`.runs`: the manager's side of a run;
- :mod:`.workers`: registration, leases, claiming and completing messages, reaping;
- :mod:`.large`: sending and reading the parts of large values;
- :mod:`.admin`: inspection and clean-up of a job.

Examples
--------
>>> from dask_redisparam.server import EmbeddedRedis
>>> with EmbeddedRedis() as server:
...     backend = Backend.connect(server.address)
...     backend.ping()
...     backend.close()
True
"""

from __future__ import annotations

import logging

from ..address import RedisAddress
from .admin import AdminOps
from .client import MAX_BLOCK as MAX_BLOCK
from .client import SEND_BUFFER as SEND_BUFFER
from .client import SOCKET_TIMEOUT as SOCKET_TIMEOUT
from .client import TRANSIENT_ERRORS
from .client import wait_until as wait_until
from .large import LargeValues
from .runs import RunOps
from .workers import WorkerOps

__all__ = ["TRANSIENT_ERRORS", "Backend"]

logger = logging.getLogger(__name__)


class Backend(AdminOps, RunOps, WorkerOps, LargeValues):
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
    def connect(cls, address: RedisAddress, *, retries: int = 3) -> Backend:
        """Connect and check with ``PING``; fail fast with an error that names the server."""
        probe = cls(address, retries=0)
        try:
            probe.ping()
        finally:
            probe.close()
        return cls(address, retries=retries)
