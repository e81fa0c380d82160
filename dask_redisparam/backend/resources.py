"""Worker resources in Redis: the queues of resource classes and the claims that book a daemon's resources.

A message whose tasks need resources waits in the queue of its class (:func:`~.keys.rqueue`), never in the job's
shared queue. A worker whose daemon has resources claims from those queues with
:data:`~.lua.CLAIM_RESOURCE`, a script
that, atomically, checks that the daemon's free resources cover the class, moves the message into the worker's
processing list (the same reliable dequeue as the shared queue's), adds the class's amounts to the daemon's use
(:func:`~.keys.daemon`: ``use|<name>``, shared by the daemon's processes) and writes the worker's claim
(:func:`~.keys.claim`: class, daemon, the message's header). A worker holds at most one such message.

Nothing is only in a worker's memory: completing the message and then :data:`~.lua.RELEASE_CLAIM` frees the use (only
once the message has left the processing list); :data:`~.lua.REQUEUE_CLAIM`, run before a dead worker is reaped or a
stopping one deregisters, sends the message back to its class's queue and frees the use. A daemon's hash goes away
when nothing is in use (each claim writes its capacities again).

Managers list the classes of their live runs in :func:`~.keys.resource_classes` (``<class>|<run>`` fields, renewed
each turn of their loop with the lease's TTL, deleted when the run closes), which workers read to know where to
look (:meth:`ResourceOps.resource_classes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from ..wire.resources import Resources
from . import keys
from .large import LargeValues

__all__ = ["ResourceOps"]


class ResourceOps(LargeValues):
    """Claims of resource messages and the classes of live runs (see the module docstring)."""

    def resource_classes(self, jobname: str) -> set[str]:
        """The resource classes that live runs of the job queue messages for."""
        fields = cast(Iterable[bytes], self._r.hkeys(keys.resource_classes(jobname)))
        return {f.decode().rsplit("|", 1)[0] for f in fields}

    def resource_queue_lengths(self, jobname: str) -> dict[str, int]:
        """Messages queued per resource class of the job's live runs (two round trips)."""
        classes = sorted(self.resource_classes(jobname))
        if not classes:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for cls in classes:
            pipe.llen(keys.rqueue(jobname, cls))
        return {cls: int(n) for cls, n in zip(classes, pipe.execute(), strict=True)}

    def claim_resource(
        self,
        jobname: str,
        worker_id: str,
        daemon_id: str,
        capacity: Resources,
        classes: Sequence[tuple[str, Resources]],
    ) -> tuple[str, bytes] | None:
        """Claim the next message of the first of ``classes`` (``(class name, demand)``) that the daemon's free
        ``capacity`` covers, booking its demand (:data:`~.lua.CLAIM_RESOURCE`); ``(class, message)`` or None."""
        if not classes:
            return None
        args: list[Any] = [daemon_id, len(capacity)]
        for name, amount in capacity:
            args += [name, repr(float(amount))]
        for cls, demand in classes:
            args += [cls, len(demand)]
            for name, amount in demand:
                args += [name, repr(float(amount))]
        script_keys = [
            keys.claim(jobname, worker_id),
            keys.daemon(jobname, daemon_id),
            keys.processing(jobname, worker_id),
            *(keys.rqueue(jobname, cls) for cls, _ in classes),
        ]
        got = self._claim_resource(keys=script_keys, args=args)
        if not got:
            return None
        return bytes(got[0]).decode(), bytes(got[1])

    def release_claim(self, jobname: str, worker_id: str, daemon_id: str) -> int:
        """Free the resources of the worker's completed resource message (:data:`~.lua.RELEASE_CLAIM`): 1 freed, 0 the
        worker held none, -1 the message is still in its processing list (nothing freed)."""
        script_keys = [
            keys.claim(jobname, worker_id),
            keys.daemon(jobname, daemon_id),
            keys.processing(jobname, worker_id),
        ]
        return int(self._release_claim(keys=script_keys, args=[]))

    def requeue_claim(self, jobname: str, worker_id: str) -> tuple[str, int, int] | None:
        """Send the resource message a worker holds back to its class's queue and free its daemon's resources
        (before the worker is reaped or deregisters): ``(run id, message id, stamp)`` of the message moved (stamp:
        the server's time in microseconds), or None."""
        fields = cast(dict[bytes, bytes], self._r.hgetall(keys.claim(jobname, worker_id)))
        if not fields or b"class" not in fields or b"daemon" not in fields:
            return None
        cls, daemon_id = fields[b"class"].decode(), fields[b"daemon"].decode()
        script_keys = [
            keys.claim(jobname, worker_id),
            keys.daemon(jobname, daemon_id),
            keys.processing(jobname, worker_id),
            keys.rqueue(jobname, cls),
        ]
        got = self._requeue_claim(keys=script_keys, args=[cls])
        if not got:
            return None
        _, run_id, msg_id, _ = bytes(got[0]).decode(errors="replace").split("|", 3)
        return run_id, int(msg_id), int(got[1])

    def use_of(self, jobname: str, daemon_id: str) -> dict[str, float]:
        """What a daemon uses of its resources now (``{name: amount}``; empty when nothing is in use)."""
        fields = cast(dict[bytes, bytes], self._r.hgetall(keys.daemon(jobname, daemon_id)))
        return {k.decode()[4:]: float(v) for k, v in fields.items() if k.startswith(b"use|")}
