"""The manager's side of a run: its keys in Redis from opening to closing.

:class:`RunOps` opens a run (its lease and uploaded values), exchanges messages and completion records in one
round trip per turn of the manager's loop, waits for records, downloads results, withdraws unclaimed messages,
keeps a failed run's values for ``redo=`` and deletes the run's keys at the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..wire.bulk import Part
from . import keys
from .client import MAX_BLOCK, evalsha
from .large import LargeValues
from .lua import METRICS_TTL

__all__ = ["MARKER", "RunOps"]

MARKER = "@run"
"""The field a registered run's data hash gets when it opens (its value: the run id), so that the hash has its TTL
before the first value arrives (a worker's completion would give a new hash only the lease's TTL)."""


class RunOps(LargeValues):
    """Operations of the manager on one run's keys."""

    def open_run(
        self,
        jobname: str,
        run_id: str,
        ttl: float,
        values: dict[str, bytes],
        parts: Sequence[Part] = (),
        keep: float = 0.0,
        *,
        record: bytes | None = None,
        ids: bytes = b"",
        resume_keep: float = 0.0,
        progress: Mapping[str, int] | None = None,
    ) -> None:
        """Mark the run alive for ``ttl`` seconds and upload ``values`` (field -> sealed literal) and the ``parts``
        of large ones to its data hash, which lives ``keep`` seconds (at least ``ttl``; see :meth:`renew_run`).

        With a ``record`` (resume on), the run registers in the job's registry of runs with its task identities
        ``ids`` (16 bytes a field, :mod:`.resume`); the registry lives at least ``resume_keep`` seconds.
        ``progress`` (tasks to run per key prefix, :func:`~dask_redisparam.backend.stats.progress_totals`) starts
        the run's progress hash, which lives as long as the lease."""
        data, ms = keys.data(jobname, run_id), int(ttl * 1000)
        keep_ms = max(ms, int(keep * 1000))
        if parts:
            commands: list[tuple[Any, ...]] = [("HSET", data, name, view) for name, view in parts]
            commands += [("SET", keys.alive(jobname, run_id), b"1", "PX", ms), ("PEXPIRE", data, keep_ms)]
            for reply in self._send_large(commands):
                if isinstance(reply, Exception):
                    raise reply

        def build(pipe: Any) -> None:
            pipe.set(keys.alive(jobname, run_id), b"1", px=ms)
            if progress:
                pipe.hset(keys.progress(jobname, run_id), mapping={f"total|{p}": n for p, n in progress.items()})
                pipe.pexpire(keys.progress(jobname, run_id), ms)
            if values:
                pipe.hset(data, mapping=cast(Any, values))
                pipe.pexpire(data, keep_ms)
            if record is not None:  # the data hash exists from now on, with its TTL: values outlive a crash at once
                pipe.hset(data, MARKER, run_id)
                pipe.pexpire(data, keep_ms)
                registry = keys.runs(jobname)
                pipe.hset(registry, mapping={run_id: record, f"{run_id}.ids.0": ids})
                evalsha(pipe, self._extend, [registry], [max(ms, int(resume_keep * 1000))])

        self._execute(build)

    def renew_run(self, jobname: str, run_id: str, ttl: float, keep: float, resume_keep: float = 0.0) -> bool:
        """Renew the run's lease: ``alive``, ``done`` and ``progress`` for ``ttl`` seconds, ``data`` for ``keep``
        seconds, the job's registry of runs for at least ``resume_keep`` seconds (if > 0) (one round trip);
        returns False, creating nothing, if ``alive`` is gone."""

        def build(pipe: Any) -> None:
            pipe.pexpire(keys.alive(jobname, run_id), int(ttl * 1000))
            pipe.pexpire(keys.done(jobname, run_id), int(ttl * 1000))
            pipe.pexpire(keys.progress(jobname, run_id), int(ttl * 1000))
            pipe.pexpire(keys.data(jobname, run_id), int(keep * 1000))
            if resume_keep > 0:
                evalsha(pipe, self._extend, [keys.runs(jobname)], [int(resume_keep * 1000)])

        return bool(self._execute(build)[0])

    def exchange(
        self,
        jobname: str,
        run_id: str,
        messages: Sequence[bytes],
        release: Sequence[str],
        ttl: float,
        acknowledge: Sequence[bytes] = (),
        max_records: int = 4096,
        registry: dict[str, bytes] | None = None,
        retried: int = 0,
        routes: Mapping[bytes, str] | None = None,
        classes: Sequence[str] = (),
    ) -> tuple[list[bytes], bool]:
        """One round trip of the manager.

        Drops the completion records ``acknowledge`` (those the last call returned and the manager applied),
        pushes ``messages``, deletes ``release`` fields, renews the run's ``alive`` key for ``ttl`` seconds (the
        data hash has a TTL of its own: see :meth:`renew_run`) and reads up to ``max_records`` completion records.
        Records are removed only once acknowledged, and the removal is idempotent, so a reply lost with a broken
        connection loses no record (a record may come twice; the manager ignores repeats). ``registry`` sets fields
        of the run in the job's registry of runs (its progress, identities of added tasks: :mod:`.resume`), which
        is idempotent too. ``retried`` tasks the manager decided to run again since the last call are counted in
        the job's metrics hash. ``routes`` names the resource class of the messages that go to the queue of their
        class (:func:`~.keys.rqueue`) instead of the job's; ``classes``, the run's classes, are listed in the job's
        :func:`~.keys.resource_classes` for the workers (with the lease's TTL). Returns ``(records, run alive)``.
        """
        done = keys.done(jobname, run_id)

        def build(pipe: Any) -> None:
            if acknowledge:
                evalsha(pipe, self._ack, [done], [acknowledge[0], acknowledge[-1], len(acknowledge)])
            if classes:
                listed = keys.resource_classes(jobname)
                pipe.hset(listed, mapping={f"{cls}|{run_id}": b"1" for cls in classes})
                pipe.pexpire(listed, int(ttl * 1000))
            if messages and routes:
                by_queue: dict[str, list[bytes]] = {}
                for message in messages:
                    cls = routes.get(message)
                    name = keys.queue(jobname) if cls is None else keys.rqueue(jobname, cls)
                    by_queue.setdefault(name, []).append(message)
                for name, items in by_queue.items():
                    pipe.lpush(name, *items)
            elif messages:
                pipe.lpush(keys.queue(jobname), *messages)
            if release:
                pipe.hdel(keys.data(jobname, run_id), *release)
            if registry:
                pipe.hset(keys.runs(jobname), mapping=cast(Any, registry))
            if retried:
                pipe.hincrby(keys.metrics(jobname), "retried", retried)
                pipe.pexpire(keys.metrics(jobname), METRICS_TTL * 1000)
            pipe.pexpire(keys.alive(jobname, run_id), int(ttl * 1000))
            pipe.lrange(done, 0, max_records - 1)

        replies = self._execute(build)
        records = list(replies[-1])
        if acknowledge and 0 in self.rerun and replies[0]:  # the records read still began with the ones dropped
            records = records[len(acknowledge) :]
        return records, bool(replies[-2])

    def wait_records(self, jobname: str, run_id: str, timeout: float) -> bool:
        """Block up to ``timeout`` seconds (at most :data:`MAX_BLOCK`) until a completion record is there.

        Nothing is removed (the head of the list is moved onto itself), so nothing can be lost in transit.
        """
        done = keys.done(jobname, run_id)
        return self._r.blmove(done, done, min(timeout, MAX_BLOCK), "LEFT", "LEFT") is not None  # type: ignore[arg-type]

    def fetch_values(self, jobname: str, run_id: str, fields: Sequence[str]) -> list[bytes | None]:
        """Download stored values (one ``HMGET``)."""
        if not fields:
            return []
        values = cast(list[bytes | None], self._r.hmget(keys.data(jobname, run_id), list(fields)))
        self.bytes_downloaded += sum(len(v) for v in values if v is not None)
        return values

    def withdraw(
        self, jobname: str, messages: Sequence[bytes], routes: Mapping[bytes, str] | None = None
    ) -> list[bool]:
        """Remove messages that no worker has claimed yet from the queue (a message in ``routes`` from the queue of
        its resource class); say which were still there."""
        if not messages:
            return []
        pipe = self._r.pipeline(transaction=False)
        for message in messages:
            cls = routes.get(message) if routes else None
            queue = keys.queue(jobname) if cls is None else keys.rqueue(jobname, cls)
            pipe.lrem(queue, 1, message)  # type: ignore[arg-type]
        return [bool(n) for n in pipe.execute()]

    def keep_for_redo(self, jobname: str, run_id: str, ttl: float) -> bool:
        """Keep a failed run's stored values for ``ttl`` seconds under its redo key; False if it had none."""
        pipe = self._r.pipeline(transaction=False)
        pipe.exists(keys.data(jobname, run_id))
        replies = pipe.execute()
        if not replies[0]:
            return False
        pipe = self._r.pipeline(transaction=False)
        pipe.rename(keys.data(jobname, run_id), keys.redo(jobname, run_id))
        pipe.pexpire(keys.redo(jobname, run_id), int(ttl * 1000))
        pipe.execute()
        return True

    def copy_from_redo(self, jobname: str, redo_run: str, run_id: str, fields: dict[str, str]) -> int:
        """Copy kept values (new field -> field in the redo hash) into a run's data hash, inside Redis.

        Returns how many were there to copy.
        """
        if not fields:
            return 0
        args: list[str] = []
        for new, old in fields.items():
            args += [new, old]
        return int(self._copy(keys=[keys.redo(jobname, redo_run), keys.data(jobname, run_id)], args=args))

    def close_run(self, jobname: str, run_id: str, classes: Sequence[str] = ()) -> None:
        """Delete every key of the run, its entries in the job's registry of runs and its resource ``classes`` in
        the job's list of them (one round trip)."""

        def build(pipe: Any) -> None:
            if classes:
                pipe.hdel(keys.resource_classes(jobname), *(f"{cls}|{run_id}" for cls in classes))
            pipe.delete(
                keys.alive(jobname, run_id),
                keys.data(jobname, run_id),
                keys.done(jobname, run_id),
                keys.progress(jobname, run_id),
            )
            evalsha(pipe, self._unregister, [keys.runs(jobname)], [run_id])

        self._execute(build)
