"""Where a worker with resources claims its next message: the queues of the resource classes its daemon covers,
then the job's shared queue.

A worker without resources claims from the job's queue only (``BLMOVE``, waiting up to a second), as always. A
worker whose daemon has resources (``dask-redisparam-worker --resources GPU=2``) first tries the queues of the classes
that the live runs list (:meth:`~dask_redisparam.backend.resources.ResourceOps.resource_classes`, read at most every
:data:`CLASSES_EVERY` seconds) and that its resources cover, in a rotating order, through the claim script that books
the daemon's resources in Redis; then it waits :data:`RESOURCE_POLL` seconds on the job's queue. After the message is
completed, :meth:`ResourceClaims.release` frees what it booked (see :mod:`dask_redisparam.backend.resources`).

Examples
--------
>>> from dask_redisparam.worker.server import EmbeddedRedis
>>> from dask_redisparam.backend import Backend
>>> with EmbeddedRedis() as server:
...     backend = Backend.connect(server.address)
...     claims = ResourceClaims("doc-job", "w1", "d1", (("GPU", 1.0),))
...     claims.claim(backend) is None, claims.holding
...     backend.close()
(True, False)
"""

from __future__ import annotations

import time

from ..backend import Backend
from ..wire.resources import Resources, covers, parse_class

__all__ = ["CLASSES_EVERY", "RESOURCE_POLL", "ResourceClaims"]

RESOURCE_POLL = 0.25
"""Seconds a worker with resources blocks on the job's shared queue before it looks at the resource queues again."""
CLASSES_EVERY = 1.0
"""Seconds a worker with resources keeps the list of the live runs' resource classes before reading it again."""


class ResourceClaims:
    """The claims of one worker process (see the module docstring).

    Parameters
    ----------
    jobname, worker_id : str
        The job and the worker.
    daemon : str
        The id of the daemon whose resources the worker shares with its siblings.
    resources : tuple of (str, float)
        The daemon's resources (empty: the worker claims from the job's queue only).
    """

    def __init__(self, jobname: str, worker_id: str, daemon: str, resources: Resources) -> None:
        self.jobname, self.worker_id, self.daemon, self.resources = jobname, worker_id, daemon, tuple(resources)
        self.holding = False  # a resource message's claim may be booked (freed after its completion)
        self._classes: list[tuple[str, Resources]] = []  # the listed classes that the resources cover
        self._read = -CLASSES_EVERY
        self._turn = 0  # rotates the order in which the classes are tried

    def claim(self, backend: Backend) -> bytes | None:
        """The next message, or None (nothing came within the wait)."""
        if not self.resources:
            return backend.claim(self.jobname, self.worker_id, timeout=1.0)
        if self.holding:  # a claim left booked (its release failed with the connection): free it first
            self.release(backend)
        now = time.monotonic()
        if now - self._read >= CLASSES_EVERY:
            listed = sorted(backend.resource_classes(self.jobname))
            self._classes = [(cls, parse_class(cls)) for cls in listed if covers(self.resources, parse_class(cls))]
            self._read = now
        if self._classes:
            self._turn += 1
            k = self._turn % len(self._classes)
            order = self._classes[k:] + self._classes[:k]
            got = backend.claim_resource(self.jobname, self.worker_id, self.daemon, self.resources, order)
            if got is not None:
                self.holding = True
                return got[1]
        return backend.claim(self.jobname, self.worker_id, timeout=RESOURCE_POLL)

    def release(self, backend: Backend) -> None:
        """Free the daemon's resources that the message just completed had booked (nothing if none, or if the
        message is still in the worker's processing list)."""
        if backend.release_claim(self.jobname, self.worker_id, self.daemon) >= 0:
            self.holding = False
