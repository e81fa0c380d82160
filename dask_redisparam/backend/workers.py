"""The workers' side: registration, leases, claiming messages and completing them.

:class:`WorkerOps` registers a worker and renews its lease, asks workers to stop, claims messages into a
worker's processing list, loads a batch's inputs, stores results with the completion record (atomically, in a
Lua script), gives messages back or dead-letters them, and reaps a dead worker's claimed messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import redis

from ..errors import ServerError
from ..wire.bulk import Report
from ..wire.protocol import encode_lost
from . import keys
from .client import MAX_BLOCK, evalsha, flat, pairs, worker_keys
from .lua import METRICS_TTL
from .replies import reply_code
from .resources import ResourceOps

__all__ = ["DEAD_TTL", "SentCompletion", "WorkerOps"]

DEAD_TTL = 86400
"""Seconds the dead-letter list and the record of the last rejection are kept after the last rejection."""


class SentCompletion(NamedTuple):
    """A completion sent by :meth:`WorkerOps.send_completion` whose reply is not read yet: the connection it holds
    (given back by :meth:`WorkerOps.finish_completion`), how many replies to read, and what a script reload needs."""

    pool: Any
    conn: Any
    replies: int
    script_keys: list[str]
    args: list[Any]
    claims: int
    wait: tuple[Any, ...]


def _completion_commands(
    report: Report, claims: int, wait: tuple[Any, ...] = ()
) -> tuple[list[str], list[Any], list[tuple[Any, ...]]]:
    """The keys and arguments of the completion script for ``report``, and the commands after it: ``wait`` (a
    ``WAIT`` for replicas, if given: a script cannot call it, so it follows on the same connection), ``claims``
    claims (``LMOVE`` queue -> processing list) and, if any, the queue's length and the job's registered workers
    (``LLEN``, ``SCARD``)."""
    jobname, worker_id, run_id, message, record, values, ntasks, large, parts, stats = report
    metric_args = [worker_id, run_id, *stats] if stats else []
    args: list[Any] = [message, record, ntasks, len(metric_args), *metric_args]
    args += [len(parts), *(name for name, _ in parts)]
    args += [len(large), *pairs(large), *pairs(values)]
    script_keys = [
        keys.alive(jobname, run_id),
        keys.data(jobname, run_id),
        keys.done(jobname, run_id),
        keys.processing(jobname, worker_id),
        keys.worker(jobname, worker_id),
        keys.metrics(jobname),
        keys.progress(jobname, run_id),
        keys.events(jobname),
    ]
    claim = ("LMOVE", keys.queue(jobname), keys.processing(jobname, worker_id), "RIGHT", "LEFT")
    depth = [("LLEN", keys.queue(jobname)), ("SCARD", keys.workers(jobname))]
    tail: list[tuple[Any, ...]] = ([wait] if wait else []) + [claim] * claims + (depth if claims else [])
    return script_keys, args, tail


class WorkerOps(ResourceOps):
    """Operations on workers' keys and the job's queue, for the workers and for whoever reaps them.

    Attributes
    ----------
    wait_replicas : tuple of (int, float), optional
        ``(n, seconds)``: each completion is followed, in the same round trip, by ``WAIT n ms`` (the ``replicas``
        and ``replicas_timeout`` settings); None (the default): no ``WAIT``.
    last_acked : int or None
        How many replicas acknowledged the last completion (``WAIT``'s reply); None without ``wait_replicas``.
    """

    wait_replicas: tuple[int, float] | None = None
    last_acked: int | None = None

    def reap_worker(
        self, jobname: str, worker_id: str, notice: Callable[[str, int, int], bytes] | None = None
    ) -> list[tuple[str, int, int]]:
        """Requeue what a dead worker held (attempt + 1, atomically), forget it, and tell the runs' managers.

        ``notice(run_id, msg_id, stamp)`` makes the loss notice for a run (the caller signs it with the job's
        secret, if it has one); default: an unsigned :func:`~dask_redisparam.wire.protocol.encode_lost`, which the
        manager of a signed run ignores. Returns ``(run_id, msg_id, stamp)`` of every message put back (stamp: the
        server's time, in microseconds).
        """
        claimed = self.requeue_claim(jobname, worker_id)  # a resource message goes back to its class's queue
        flat = self._reap(
            keys=[*worker_keys(jobname, worker_id), keys.metrics(jobname)],
            args=[worker_id, METRICS_TTL * 1000],
        )
        moved = [(flat[i].decode(), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]
        if claimed is not None:
            moved.append(claimed)
        if moved:

            def notify(pipe: Any) -> None:
                for run_id, msg_id, stamp in moved:
                    record = notice(run_id, msg_id, stamp) if notice else encode_lost(msg_id, stamp, worker_id)
                    evalsha(pipe, self._notify, [keys.alive(jobname, run_id), keys.done(jobname, run_id)], [record])

            self._execute(notify)
        return moved

    def register_worker(self, jobname: str, worker_id: str, info: dict[str, str], ttl: float) -> bool:
        """Register a worker with a lease of ``ttl`` seconds; False if a live worker has the same id."""
        # ARGV: the lease in ms, the field/value pairs for HSET, and last the id for SADD
        argv = flat(int(ttl * 1000), info) + [worker_id]
        done = self._register(keys=[keys.worker(jobname, worker_id), keys.workers(jobname)], args=argv)
        return bool(done)

    def heartbeat(self, jobname: str, worker_id: str, ttl: float, info: dict[str, str]) -> tuple[bool, bool]:
        """Renew a worker's lease and update its fields.

        Returns ``(alive, stop)``: False if the lease had already expired, and whether a stop was requested.
        """
        return cast(
            tuple[bool, bool],
            tuple(
                bool(x)
                for x in self._heartbeat(keys=[keys.worker(jobname, worker_id)], args=flat(int(ttl * 1000), info))
            ),
        )

    def request_stop(self, jobname: str, worker_ids: Sequence[str]) -> int:
        """Ask live workers to stop (warm); returns how many were asked."""

        def ask(pipe: Any) -> None:
            for wid in worker_ids:
                evalsha(pipe, self._ask_stop, [keys.worker(jobname, wid)], [])

        return sum(int(x) for x in self._execute(ask))

    def deregister_worker(self, jobname: str, worker_id: str) -> int:
        """Return the worker's claimed messages to the queue and delete its keys; returns how many."""
        moved = self.requeue_claim(jobname, worker_id) is not None  # back to its class's queue
        return int(moved) + int(
            self._deregister(
                keys=worker_keys(jobname, worker_id),
                args=[worker_id],
            )
        )

    def claim(self, jobname: str, worker_id: str, timeout: float) -> bytes | None:
        """Move the next message into the worker's processing list (``BLMOVE``), waiting up to ``timeout``."""
        got = self._r.blmove(
            keys.queue(jobname),
            keys.processing(jobname, worker_id),
            min(timeout, MAX_BLOCK),  # type: ignore[arg-type]  # redis accepts fractional seconds
            "RIGHT",
            "LEFT",
        )
        return cast(bytes | None, got)

    def load_inputs(self, jobname: str, run_id: str, fields: Sequence[str]) -> tuple[bool, list[bytes | None]]:
        """Whether the run is alive, and the stored values of ``fields`` (one round trip)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.exists(keys.alive(jobname, run_id))
        if fields:
            pipe.hmget(keys.data(jobname, run_id), list(fields))
        replies = pipe.execute()
        return bool(replies[0]), (list(replies[1]) if fields else [])

    def complete(self, report: Report) -> int:
        """Store a batch's results and completion record and release the message, atomically.

        The large values' parts (:class:`~dask_redisparam.wire.bulk.Report`) are written first, in the same round trip.
        Returns 1 when stored, 0 when the run is gone and -1 when the worker no longer held the message (it was
        reaped and the message requeued); in both cases nothing is stored (and the parts are deleted).
        """
        return self.complete_and_claim(report, claim_next=False)[0]

    def complete_and_claim(self, report: Report, *, claim_next: bool = True) -> tuple[int, bytes | None]:
        """:meth:`complete`, and in the same round trip claim the next message if one waits (``LMOVE`` into the
        worker's processing list, as :meth:`claim` does): ``(what complete returns, the message or None)``.

        A part of a large value that Redis refused to store (``OOM``) raises the refusal; then nothing was stored
        and the message is still held (the script finds a part missing), and a message may have been claimed
        (see :meth:`held_messages`). A claim refused when the completion was stored (memory full: ``LMOVE`` may
        grow the memory, the script may not be stopped halfway) only returns no message.

        With :attr:`wait_replicas`, ``WAIT`` follows the script (before the claim) and :attr:`last_acked` holds its
        reply; the completion is stored either way (the caller decides what too few replicas mean).
        """
        status, claimed, _ = self.complete_and_claim_many(report, 1 if claim_next else 0)
        return status, (claimed[0] if claimed else None)

    def complete_and_claim_many(self, report: Report, claims: int) -> tuple[int, list[bytes], int | None]:
        """:meth:`complete_and_claim` with up to ``claims`` messages claimed (``LMOVE`` each, in queue order), and
        the queue's *surplus* after them: its length minus the job's registered workers (``LLEN`` - ``SCARD``; None
        when ``claims`` is 0), all in the one round trip: ``(what complete returns, the messages claimed, the
        surplus)``. A surplus of 0 or more means that every worker could claim one more message now.

        A worker that claims two keeps the second one *prefetched* (:mod:`dask_redisparam.worker.prefetch`): it sits
        in its processing list like the first, so a reaper requeues it and deregistration gives it back.
        """
        wait = self._wait_command()
        script_keys, args, tail = _completion_commands(report, claims, wait)
        jobname, run_id, parts = report.jobname, report.run_id, report.parts
        if not parts:

            def build(pipe: Any) -> None:
                evalsha(pipe, self._complete, script_keys, args)
                for command in tail:
                    pipe.execute_command(*command)

            replies = self._execute(build, raise_on_error=False)
            rerun = 0 in self.rerun  # the script ran after the pipeline (a server without it: after a failover)
        else:
            commands: list[tuple[Any, ...]] = [("HSET", keys.data(jobname, run_id), n, view) for n, view in parts]
            commands.append(("EVALSHA", self._complete.sha, len(script_keys), *script_keys, *args))
            commands += tail
            replies = self._send_large(commands)
            rerun = isinstance(replies[len(parts)], redis.exceptions.NoScriptError)
            if rerun:  # the parts are written
                replies[len(parts)] = self._complete(keys=script_keys, args=args)
            for reply in replies[: len(parts)]:  # a part that could not be written (e.g. OOM) is an error too
                if isinstance(reply, Exception):
                    raise reply
            replies = replies[len(parts) :]
        return self._completion_result(replies, claims, run_id, wait, rerun)

    def _wait_command(self) -> tuple[Any, ...]:
        """``WAIT n ms`` for :attr:`wait_replicas`, or ``()``."""
        wait = self.wait_replicas
        return () if wait is None else ("WAIT", wait[0], max(1, int(wait[1] * 1000)))

    def send_completion(self, report: Report, claims: int) -> SentCompletion:
        """Send what :meth:`complete_and_claim_many` sends (a report without large parts), on a connection of its
        own, without waiting for the reply: the worker runs its next message meanwhile, then reads the reply with
        :meth:`finish_completion`."""
        if report.parts:
            raise ValueError("send_completion takes no large values: use complete_and_claim_many")
        wait = self._wait_command()
        script_keys, args, tail = _completion_commands(report, claims, wait)
        commands: list[tuple[Any, ...]] = [("EVALSHA", self._complete.sha, len(script_keys), *script_keys, *args)]
        commands += tail
        pool = self._r.connection_pool
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return SentCompletion(pool, conn, len(commands), script_keys, args, claims, wait)

    def finish_completion(self, report: Report, sent: SentCompletion) -> tuple[int, list[bytes], int | None]:
        """Read the reply of :meth:`send_completion`: what :meth:`complete_and_claim_many` returns. A lost
        connection raises (the completion may or may not be stored, a message may have been claimed)."""
        replies: list[Any] = []
        try:
            for _ in range(sent.replies):
                try:
                    replies.append(sent.conn.read_response())
                except redis.exceptions.ResponseError as e:
                    replies.append(e)
        except BaseException:
            sent.conn.disconnect()
            raise
        finally:
            sent.pool.release(sent.conn)
        rerun = isinstance(replies[0], redis.exceptions.NoScriptError)
        if rerun:  # the claims after it did run
            replies[0] = self._complete(keys=sent.script_keys, args=sent.args)
        return self._completion_result(replies, sent.claims, report.run_id, sent.wait, rerun)

    def _completion_result(
        self, replies: list[Any], claims: int, run_id: str, wait_command: tuple[Any, ...] = (), rerun: bool = False
    ) -> tuple[int, list[bytes], int | None]:
        if isinstance(replies[0], Exception):
            raise replies[0]
        if wait_command:
            acked = replies.pop(1)  # a script run again after the pipeline is waited for after it
            if rerun:
                acked = self._r.execute_command(*wait_command)  # type: ignore[no-untyped-call]
            if isinstance(acked, Exception):
                raise acked
            self.last_acked = int(acked)
        if int(replies[0]) == -2:
            raise ServerError(
                f"Redis at {self.address.describe()}: a part of a large value of run {run_id} vanished before its "
                "completion was stored (deleted by someone else?); nothing was stored"
            )
        claimed: list[bytes] = []
        for reply in replies[1 : 1 + claims]:
            if isinstance(reply, Exception):
                if reply_code(reply) != "OOM":
                    raise reply
                break  # the next claim meets the full server itself
            if reply is None:
                break
            claimed.append(reply)
        depth = replies[1 + claims : 3 + claims]
        surplus = int(depth[0]) - int(depth[1]) if claims and all(isinstance(x, int) for x in depth) else None
        return int(replies[0]), claimed, surplus

    def held_messages(self, jobname: str, worker_id: str) -> list[bytes]:
        """The messages in a worker's processing list (claimed, not completed), oldest first."""
        return list(reversed(cast(list[bytes], self._r.lrange(keys.processing(jobname, worker_id), 0, -1))))

    def dead_letter(self, jobname: str, worker_id: str, message: bytes) -> None:
        """Move a rejected message from the worker's processing list to the job's dead-letter list (last 100)."""
        self._move(keys=[keys.processing(jobname, worker_id), keys.dead(jobname)], args=[message, 100, DEAD_TTL])

    def reject_message(
        self,
        jobname: str,
        worker_id: str,
        message: bytes,
        info: Mapping[str, str],
        run_id: str | None = None,
        notice: bytes | None = None,
    ) -> None:
        """Dead-letter a message the worker refused, record the rejection (``info``: reason, worker...) in the
        job's :func:`~dask_redisparam.backend.keys.rejected` hash, and, if ``run_id`` names a live run, push
        ``notice`` to its ``done`` list for its manager (two round trips)."""
        self.dead_letter(jobname, worker_id, message)

        def build(pipe: Any) -> None:
            if run_id is not None and notice is not None:
                evalsha(pipe, self._notify, [keys.alive(jobname, run_id), keys.done(jobname, run_id)], [notice])
            pipe.hset(keys.rejected(jobname), mapping=dict(info))
            pipe.hincrby(keys.rejected(jobname), "count", 1)
            pipe.expire(keys.rejected(jobname), DEAD_TTL)

        self._execute(build)

    def release_message(self, jobname: str, worker_id: str, message: bytes) -> None:
        """Drop a message from the worker's processing list without a result (its run is gone)."""
        self._r.lrem(keys.processing(jobname, worker_id), 1, message)  # type: ignore[arg-type]
