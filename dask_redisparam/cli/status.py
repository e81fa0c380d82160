"""``dask-redisparam status``: a job's workers, queue, runs, task rate, dead letters, last rejection and published
datasets; once, as a refreshing table (``--watch``, as ``rq info --interval``), or as JSON (``--json``; one object
per line with ``--watch``) that validates against ``docs/status.schema.json``.

The task rate is measured over ``--rate-window`` seconds for a single snapshot, and between two refreshes with
``--watch``. ``--interval`` is the old name of ``--rate-window`` (deprecated: rq's ``--interval`` refreshes, which
is ``--watch --every`` here).

Examples
--------
>>> from dask_redisparam.pool import JobStatus
>>> status = JobStatus("demo", {"w1": {"host": "h", "pid": "7", "tasks": "3", "prefix": "inc"}}, 2, {"r1": True}, 1.5)
>>> document = status_document(status, "redis.example:6379")
>>> document["workers"][0]["prefix"], document["queued"], document["runs"]
('inc', 2, [{'id': 'r1', 'alive': True}])
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..pool import JobStatus, job_status
from ..wire.resources import describe, of_record, parse_class
from .common import CONNECTION, CONTEXT, connect, setting_options

__all__ = ["STATUS_FORMAT", "render_table", "status_command", "status_document"]

STATUS_FORMAT = 1
"""The ``format`` of ``status --json`` documents (``docs/status.schema.json``); raised when a field changes
meaning or goes away (new fields may appear within a format)."""


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _rejection(fields: dict[str, str]) -> dict[str, Any] | None:
    if not fields:
        return None
    from ..wire.protocol import REJECTION_REASONS

    reason = fields.get("reason", "")
    return {
        "time": _float(fields.get("time")),
        "worker": fields.get("worker", ""),
        "run": fields.get("run", ""),
        "reason": reason,
        "explanation": REJECTION_REASONS.get(reason, reason),
        "detail": fields.get("detail", ""),
        "count": _int(fields.get("count")) or 1,
    }


def status_document(status: JobStatus, server: str) -> dict[str, Any]:
    """A :class:`~dask_redisparam.pool.JobStatus` as the JSON document of ``status --json`` (see
    ``docs/status.schema.json``); ``server`` is the server's description (never its password)."""
    workers = []
    for wid, f in sorted(status.workers.items()):
        workers.append(
            {
                "id": wid,
                "host": f.get("host", ""),
                "pid": _int(f.get("pid")),
                "started": _float(f.get("started")),
                "tasks": _int(f.get("tasks")) or 0,
                "current": f.get("current", ""),
                "prefix": f.get("prefix", ""),
                "rss": _int(f.get("rss")),
                "beat": _float(f.get("beat")),
                "resources": dict(of_record(f.get("resources"))),
            }
        )
    return {
        "format": STATUS_FORMAT,
        "jobname": status.jobname,
        "server": server,
        "time": status.taken or time.time(),
        "queued": status.queued,
        "queued_resources": {_compact(c): n for c, n in status.queued_resources.items()},
        "tasks_per_second": round(status.tasks_per_second, 3),
        "rate_window": round(status.rate_window, 3),
        "dead_letters": status.dead_letters,
        "last_rejection": _rejection(status.last_rejection),
        "runs": [{"id": rid, "alive": alive} for rid, alive in sorted(status.runs.items())],
        "datasets": [
            {"name": name, "type": info.type, "bytes": info.nbytes, "age": round(info.age, 3), "ttl": info.ttl}
            for name, info in sorted(status.datasets.items())
        ],
        "workers": workers,
    }


def _compact(resource_class: str) -> str:
    """A resource class for people, without spaces: ``GPU=1,MEM=6.4e+10``."""
    return describe(parse_class(resource_class)).replace(" ", "")


def _mib(rss: str | None) -> str:
    value = _int(rss)
    return "" if value is None else f"{value / 2**20:.0f}"


def render_table(status: JobStatus, server: str) -> str:
    """The text that ``status`` prints: a summary, then one row per worker (CURRENT: the task key prefix of the
    task it runs, with the message ``run/number`` it belongs to)."""
    rate = f"{status.tasks_per_second:.1f}" if status.rate_window > 0 else "-"
    lines = [
        f"job {status.jobname} on {server}",
        f"workers: {len(status.workers)}   queued messages: {status.queued}   tasks/s: {rate}",
    ]
    if status.queued_resources:
        queued = ", ".join(
            f"{describe(parse_class(c)).replace(' ', '')}: {n}" for c, n in status.queued_resources.items()
        )
        lines.append(f"queued for resources: {queued}")
    live_runs = sorted(r for r, a in status.runs.items() if a)
    dead_runs = sorted(r for r, a in status.runs.items() if not a)
    lines.append(f"active runs: {len(live_runs)} {' '.join(live_runs)}".rstrip())
    if dead_runs:
        lines.append(f"dead runs (remove with 'clean'): {' '.join(dead_runs)}")
    lines.append(f"dead-lettered messages: {status.dead_letters}")
    for name, info in sorted(status.datasets.items()):
        left = "" if info.ttl is None else f", expires in {info.ttl:.0f} s"
        lines.append(
            f"dataset {name}: {info.type}, {info.nbytes / 2**20:.1f} MiB, published {info.age:.0f} s ago{left}"
        )
    rejection = _rejection(status.last_rejection)
    if rejection is not None:
        lines.append(f"last rejection: {_describe_rejection(rejection)}")
    if status.workers:
        rows = [("ID", "HOST", "PID", "TASKS", "UP (s)", "RSS (MiB)", "BEAT (s)", "RESOURCES", "CURRENT")]
        now = time.time()
        for wid, f in sorted(status.workers.items()):
            up = now - (_float(f.get("started")) or now)
            beat = _float(f.get("beat"))
            current = f.get("prefix", "") or ("?" if f.get("current") else "")
            if f.get("current"):
                current += f" ({f['current']})"
            rows.append(
                (
                    wid,
                    f.get("host", ""),
                    f.get("pid", ""),
                    f.get("tasks", "0"),
                    f"{up:.0f}",
                    _mib(f.get("rss")),
                    "" if beat is None else f"{max(now - beat, 0):.1f}",
                    describe(of_record(f.get("resources"))).replace(" ", "") or "-",
                    current,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _describe_rejection(rejection: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rejection["time"] or 0))
    run = f" of run {rejection['run']}" if rejection["run"] else ""
    return (
        f"{when} by worker {rejection['worker'] or '?'}{run}: {rejection['explanation']} "
        f"({rejection['detail']}); {rejection['count']} in all"
    )


def _deprecated_interval(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None:
        click.echo("status: --interval is deprecated, use --rate-window (to refresh: --watch --every)", err=True)
    return value


@click.command(name="status", context_settings=CONTEXT)
@setting_options(*CONNECTION)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (see docs/status.schema.json) instead of a table.")
@click.option("--watch", is_flag=True, help="Refresh until interrupted (Ctrl-C), as rq info --interval.")
@click.option(
    "--every",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--rate-window",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds over which a single snapshot measures the task rate (0: not measured) [default: 1.0]; with "
    "--watch the rate is measured between refreshes.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=None,
    callback=_deprecated_interval,
    help="Deprecated: the old name of --rate-window.",
)
def status_command(
    jobname: str,
    url: str | None,
    host: str | None,
    port: int | None,
    as_json: bool,
    watch: bool,
    every: float,
    rate_window: float | None,
    interval: float | None,
) -> None:
    """Show a job's workers (with the task prefix each one runs), queue depth, runs, task rate, dead-lettered
    messages, the last rejection and published datasets."""
    if rate_window is not None and interval is not None and rate_window != interval:
        raise click.UsageError("give --rate-window or its deprecated name --interval, not both")
    window = rate_window if rate_window is not None else interval if interval is not None else 1.0
    settings, backend = connect(jobname, url, host, port, read_only=True)
    server = backend.address.describe()
    try:
        if not watch:
            _show(job_status(backend, settings.jobname, window), server, as_json, clear=False)
            return
        previous: JobStatus | None = None
        clear = not as_json and sys.stdout.isatty()
        try:
            while True:
                previous = job_status(backend, settings.jobname, 0.0, previous)
                _show(previous, server, as_json, clear)
                time.sleep(every)
        except KeyboardInterrupt:
            return
    finally:
        backend.close()


def _show(status: JobStatus, server: str, as_json: bool, clear: bool) -> None:
    if as_json:
        click.echo(json.dumps(status_document(status, server), separators=(",", ":")))
        return
    if clear:
        click.clear()
    click.echo(render_table(status, server) + ("" if clear else "\n"))
