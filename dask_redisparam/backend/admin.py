"""Inspection and clean-up of a job, for the CLI, the pool functions and the manager's liveness checks.

:class:`AdminOps` lists live and dead workers, their registration fields, the queue's length and the runs with
keys in Redis; removes what dead workers and dead runs left; key names (``SCAN``) come from :mod:`.held`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from . import keys
from .held import HeldOps
from .resume import ResumeOps
from .workers import WorkerOps

__all__ = ["AdminOps"]


class AdminOps(ResumeOps, WorkerOps, HeldOps):
    """Read-mostly operations over a whole job, and its clean-up."""

    def live_workers(self, jobname: str) -> list[str]:
        """Ids of the workers of ``jobname`` whose lease has not expired (two round trips)."""
        return self.worker_liveness(jobname)[0]

    def worker_liveness(self, jobname: str) -> tuple[list[str], list[str]]:
        """Ids of the registered workers of ``jobname``: ``(live, dead)``; dead ones' leases expired."""
        ids = sorted(m.decode() for m in cast(Iterable[bytes], self._r.smembers(keys.workers(jobname))))
        if not ids:
            return [], []
        pipe = self._r.pipeline(transaction=False)
        for wid in ids:
            pipe.exists(keys.worker(jobname, wid))
        flags = pipe.execute()
        return (
            [wid for wid, alive in zip(ids, flags, strict=True) if alive],
            [wid for wid, alive in zip(ids, flags, strict=True) if not alive],
        )

    def worker_records(self, jobname: str) -> dict[str, dict[str, str]]:
        """Registration fields of every live worker of the job, by id."""
        ids = sorted(m.decode() for m in cast(Iterable[bytes], self._r.smembers(keys.workers(jobname))))
        pipe = self._r.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(keys.worker(jobname, wid))
        out = {}
        for wid, fields in zip(ids, pipe.execute(), strict=True):
            if fields:
                out[wid] = {k.decode(): v.decode() for k, v in fields.items()}
        return out

    def queue_length(self, jobname: str) -> int:
        """Messages waiting in the job's queue."""
        return int(self._r.llen(keys.queue(jobname)))

    def rejections(self, jobname: str) -> tuple[int, dict[str, str]]:
        """The length of the job's dead-letter list and the record of the last rejection (empty: none kept)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.llen(keys.dead(jobname))
        pipe.hgetall(keys.rejected(jobname))
        count, fields = pipe.execute()
        return int(count), {k.decode(): v.decode(errors="replace") for k, v in fields.items()}

    def run_ids(self, jobname: str) -> dict[str, bool]:
        """Every run with a key in Redis, and whether its manager is alive."""
        runs = {rid for k in self.scan_keys(keys.runs_pattern(jobname)) if (rid := keys.run_id_of(k))}
        pipe = self._r.pipeline(transaction=False)
        for rid in sorted(runs):
            pipe.exists(keys.alive(jobname, rid))
        return {rid: bool(alive) for rid, alive in zip(sorted(runs), pipe.execute(), strict=True)}

    def clean(self, jobname: str) -> tuple[list[str], list[str], int]:
        """Remove what dead workers and dead runs left (the values of dead runs kept for resume included); returns
        (dead workers, dead runs, messages requeued).

        A dead worker's claimed messages go back to the queue first: cleaning never loses work.
        """
        registered = sorted(m.decode() for m in cast(Iterable[bytes], self._r.smembers(keys.workers(jobname))))
        live = set(self.live_workers(jobname))
        dead_workers = [wid for wid in registered if wid not in live]
        requeued = sum(self.deregister_worker(jobname, wid) for wid in dead_workers)
        runs = self.run_ids(jobname)
        for rid in self.registered_runs(jobname):  # a dead run kept for resume, or a stale entry of the registry
            if rid not in runs and not self._r.exists(keys.alive(jobname, rid)):
                runs[rid] = False
        dead_runs = sorted(rid for rid, alive in runs.items() if not alive)
        for rid in dead_runs:
            self.close_run(jobname, rid)
        for message in cast(list[bytes], self._r.lrange(keys.queue(jobname), 0, -1)):
            head = message.split(b"|", 2)
            if len(head) == 3 and head[1].decode(errors="replace") in dead_runs:
                self._r.lrem(keys.queue(jobname), 1, message)  # type: ignore[arg-type]
        return dead_workers, dead_runs, requeued

    def job_activity(self, jobname: str) -> tuple[int, int, int]:
        """What keeps a job busy: ``(queued messages, live runs, live workers holding a message)``.

        The durable local mode (:mod:`dask_redisparam.worker.keeper`) stops itself after a while of ``(0, 0, 0)``.
        """
        live = self.live_workers(jobname)
        pipe = self._r.pipeline(transaction=False)
        pipe.llen(keys.queue(jobname))
        for wid in live:
            pipe.llen(keys.processing(jobname, wid))
        queued, *held = pipe.execute()
        runs = sum(self.run_ids(jobname).values())
        return int(queued), runs, sum(1 for n in held if n)

    def server_info(self) -> dict[str, str]:
        """The server's ``INFO`` fields of the sections server, memory and persistence, as text (for the durable
        local mode's own server only, whose one user may run every command: no job's ACL grants ``INFO``).

        Examples
        --------
        The durable local mode's ``server status`` shows ``used_memory_human`` and ``aof_enabled``.
        """
        out: dict[str, str] = {}
        for section in ("server", "memory", "persistence"):
            fields = cast(dict[str, object], self._r.info(section))
            out.update({k: str(v) for k, v in fields.items()})
        return out
