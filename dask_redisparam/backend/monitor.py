"""Reading a server's jobs for the dashboard and ``/metrics``: read-only, a few round trips per look.

:meth:`MonitorOps.job_names` finds the jobs with keys on the server (one ``SCAN``); :meth:`MonitorOps.look` takes a
:class:`JobLook` of one job: its workers' records, queue, dead letters, counters, runs (alive, progress per task key
prefix, bytes held) and the task events of the last minutes. Nothing is written, and nothing of a worker's record
that could be a secret is read: the records hold no secret (host, pid, counts, times), and values are never read,
only their memory size (``MEMORY USAGE``, sampled), and of published datasets their descriptions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any, cast

from . import keys
from .admin import AdminOps
from .stats import Event, JobMetrics, parse_event, parse_metrics, parse_progress

__all__ = ["EVENTS_READ", "JobLook", "MonitorOps", "RunLook"]

EVENTS_READ = 2000
"""The most task events (messages) one look reads, newest first."""


@dataclasses.dataclass
class RunLook:
    """One run with keys in Redis: whether its manager lives, its progress per prefix, the bytes its values hold."""

    run_id: str
    alive: bool
    progress: dict[str, dict[str, int]]
    nbytes: int


@dataclasses.dataclass
class JobLook:
    """What the dashboard shows of one job."""

    jobname: str
    workers: dict[str, dict[str, str]]
    registered: int
    queued: int
    dead_letters: int
    last_rejection: dict[str, str]
    metrics: JobMetrics
    runs: list[RunLook]
    events: list[Event]
    redo_bytes: int  # values kept for redo= and persisted values
    time: float
    # runs whose manager died (the dashboard adds them, from dask_redisparam.manager.resume.list_runs)
    unfinished_runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    datasets: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes the job's values hold in Redis: runs, values kept for ``redo=`` or persisted (sampled), published
        datasets (as published)."""
        return sum(run.nbytes for run in self.runs) + self.redo_bytes + sum(int(d["bytes"]) for d in self.datasets)


def _text(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}


class MonitorOps(AdminOps):
    """Read-only looks at the jobs of a server."""

    def job_names(self) -> list[str]:
        """The jobs with keys on the server (one ``SCAN`` over ``drp:{*}:*``)."""
        found = {keys.jobname_of(k) for k in self.scan_keys(f"{keys.PREFIX}:{{*}}:*")}
        return sorted(j for j in found if j)

    def look(self, jobname: str, events_seconds: float = 300.0) -> JobLook:
        """Take a :class:`JobLook` of ``jobname``, with the task events of the last ``events_seconds`` (at most
        :data:`EVENTS_READ`); three round trips and a ``SCAN`` of the job's run keys."""
        now = time.time()
        ids = sorted(m.decode() for m in cast(Iterable[bytes], self._r.smembers(keys.workers(jobname))))
        names = self.scan_keys(keys.job_pattern(jobname))
        run_ids = sorted({rid for k in names if (rid := keys.run_id_of(k))})
        redo = [k for k in names if k.startswith((keys.redo(jobname, ""), keys.held(jobname, "")))]
        pipe = self._r.pipeline(transaction=False)
        for wid in ids:
            pipe.hgetall(keys.worker(jobname, wid))
        pipe.llen(keys.queue(jobname))
        pipe.llen(keys.dead(jobname))
        pipe.hgetall(keys.rejected(jobname))
        pipe.hgetall(keys.metrics(jobname))
        since = int((now - events_seconds) * 1000)
        pipe.xrevrange(keys.events(jobname), "+", f"{since}-0", count=EVENTS_READ)
        for rid in run_ids:
            pipe.exists(keys.alive(jobname, rid))
            pipe.hgetall(keys.progress(jobname, rid))
            pipe.memory_usage(keys.data(jobname, rid))
        for key in redo:
            pipe.memory_usage(key)
        replies = pipe.execute()
        workers = {wid: _text(f) for wid, f in zip(ids, replies[: len(ids)], strict=True) if f}
        queued, dead, rejected, metrics, events = replies[len(ids) : len(ids) + 5]
        rest = replies[len(ids) + 5 :]
        runs = [
            RunLook(rid, bool(rest[3 * i]), parse_progress(_text(rest[3 * i + 1])), int(rest[3 * i + 2] or 0))
            for i, rid in enumerate(run_ids)
        ]
        redo_bytes = sum(int(n or 0) for n in rest[3 * len(run_ids) :])
        return JobLook(
            jobname=jobname,
            workers=workers,
            registered=len(ids),
            queued=int(queued),
            dead_letters=int(dead),
            last_rejection=_text(rejected),
            metrics=parse_metrics(_text(metrics)),
            runs=runs,
            events=[parse_event(_text(fields)) for _, fields in events],
            redo_bytes=redo_bytes,
            time=now,
            datasets=self.datasets(jobname),
        )

    def datasets(self, jobname: str) -> list[dict[str, Any]]:
        """The job's published datasets: name, type, bytes, time of publication and seconds left (None: kept until
        unpublished); their values are never read."""
        out = []
        for name, (fields, ttl_ms) in self.dataset_records(jobname).items():
            text = {k: v.decode(errors="replace") for k, v in fields.items()}
            out.append(
                {
                    "name": name,
                    "type": text.get("type", ""),
                    "bytes": int(text.get("nbytes", 0) or 0),
                    "published": float(text.get("created", 0) or 0),
                    "expires_in": None if ttl_ms < 0 else round(ttl_ms / 1000, 1),
                }
            )
        return out
