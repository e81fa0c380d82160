"""What the dashboard's page shows of a job, as JSON: made from a :class:`~dask_redisparam.backend.monitor.JobLook`.

The worker records' fields that the page shows (``host``, ``pid``, ``tasks``, ``current``, ``started``; ``prefix``,
``rss``, ``beat`` and ``resources`` where the workers record them) are copied one by one: no other field of a
record, nothing that could be a secret, reaches the page.

Examples
--------
>>> from dask_redisparam.backend.stats import JobMetrics
>>> from dask_redisparam.backend.monitor import JobLook
>>> look = JobLook("demo", {"w1": {"host": "h", "pid": "7", "tasks": "3", "current": "r1/2", "heartbeat": "9.5"}},
...                1, 0, 0, {}, JobMetrics(), [], [], 0, 10.0)
>>> job_view(look)["workers"][0]["state"], job_view(look)["workers"][0]["beat"]
('busy', 9.5)
"""

from __future__ import annotations

from typing import Any

from ..backend.monitor import JobLook
from ..wire.resources import describe, of_record

__all__ = ["job_view"]


def _number(fields: dict[str, str], *names: str) -> float | None:
    for name in names:
        try:
            return float(fields[name])
        except (KeyError, ValueError):
            continue
    return None


def _worker(wid: str, f: dict[str, str]) -> dict[str, Any]:
    current = f.get("current", "")
    state = "stopping" if "stop" in f else ("busy" if current else "idle")
    return {
        "id": wid,
        "host": f.get("host", ""),
        "pid": f.get("pid", ""),
        "state": state,
        "current": current,
        "prefix": f.get("prefix", ""),
        "tasks": int(_number(f, "tasks") or 0),
        "rss": _number(f, "rss"),
        "beat": _number(f, "beat", "heartbeat"),
        "started": _number(f, "started"),
        "resources": describe(of_record(f.get("resources"))),
    }


def job_view(look: JobLook) -> dict[str, Any]:
    """The page's data of one job (JSON-able)."""
    m = look.metrics
    last = look.last_rejection
    rejection = {k: last[k] for k in ("reason", "worker", "run", "time", "count") if k in last}
    return {
        "job": look.jobname,
        "time": look.time,
        "workers": [_worker(wid, f) for wid, f in sorted(look.workers.items())],
        "registered": look.registered,
        "queued": look.queued,
        "dead_letters": look.dead_letters,
        "last_rejection": rejection,
        "counters": {"finished": m.finished, "failed": m.failed, "lost": m.lost, "retried": m.retried},
        "nbytes": look.nbytes,
        "runs": [
            {"id": run.run_id, "alive": run.alive, "nbytes": run.nbytes, "progress": run.progress} for run in look.runs
        ],
        "stream": [
            {"worker": e.worker, "run": e.run, "prefix": p, "finished": ok, "failed": bad, "start": t0, "end": t1}
            for e in look.events
            for p, ok, bad, t0, t1 in e.groups
        ],
        "unfinished_runs": look.unfinished_runs,
        "datasets": look.datasets,
    }
