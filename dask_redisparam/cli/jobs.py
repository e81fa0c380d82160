"""The commands that look at and tidy a job: ``status``, ``stop-all``, ``alive``, ``clean``."""

from __future__ import annotations

import sys
import time

import click

from ..pool import alive, job_status, stop_all
from .common import CONNECTION, connect, setting_options, settings_of

__all__ = ["alive_command", "clean_command", "status_command", "stop_all_command"]


@click.command(name="status")
@setting_options(*CONNECTION)
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds to measure the task rate.")
def status_command(jobname: str, url: str | None, host: str | None, port: int | None, interval: float) -> None:
    """Show a job's workers, queue depth, runs, published datasets and recent task rate."""
    settings, backend = connect(jobname, url, host, port, read_only=True)
    try:
        status = job_status(backend, settings.jobname, interval)
    finally:
        backend.close()
    click.echo(f"job {status.jobname} on {backend.address.describe()}")
    click.echo(
        f"workers: {len(status.workers)}   queued messages: {status.queued}   tasks/s: {status.tasks_per_second:.1f}"
    )
    live_runs = sorted(r for r, a in status.runs.items() if a)
    dead_runs = sorted(r for r, a in status.runs.items() if not a)
    click.echo(f"active runs: {len(live_runs)} {' '.join(live_runs)}".rstrip())
    if dead_runs:
        click.echo(f"dead runs (remove with 'clean'): {' '.join(dead_runs)}")
    click.echo(f"dead-lettered messages: {status.dead_letters}")
    for name, info in sorted(status.datasets.items()):
        left = "" if info.ttl is None else f", expires in {info.ttl:.0f} s"
        click.echo(f"dataset {name}: {info.type}, {info.nbytes / 2**20:.1f} MiB, published {info.age:.0f} s ago{left}")
    if status.last_rejection:
        click.echo(f"last rejection: {_describe_rejection(status.last_rejection)}")
    if status.workers:
        rows = [("ID", "HOST", "PID", "TASKS", "UP (s)", "CURRENT")]
        now = time.time()
        for wid, f in sorted(status.workers.items()):
            up = now - float(f.get("started", now))
            rows.append(
                (wid, f.get("host", ""), f.get("pid", ""), f.get("tasks", "0"), f"{up:.0f}", f.get("current", ""))
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _describe_rejection(fields: dict[str, str]) -> str:
    from ..wire.protocol import REJECTION_REASONS

    reason = fields.get("reason", "")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(fields.get("time", "0") or 0)))
    run = f" of run {fields['run']}" if fields.get("run") else ""
    return (
        f"{when} by worker {fields.get('worker', '?')}{run}: {REJECTION_REASONS.get(reason, reason)} "
        f"({fields.get('detail', '')}); {fields.get('count', '1')} in all"
    )


@click.command(name="stop-all")
@setting_options(*CONNECTION)
@click.option("--wait", type=float, default=5.0, show_default=True, help="Seconds to wait for the workers to leave.")
def stop_all_command(jobname: str, url: str | None, host: str | None, port: int | None, wait: float) -> None:
    """Stop every worker of a job (warm: current tasks finish first); no other job is touched."""
    settings, backend = connect(jobname, url, host, port)
    try:
        asked = stop_all(backend, settings.jobname, wait)
        left = backend.live_workers(settings.jobname)
    finally:
        backend.close()
    click.echo(f"asked {asked} worker(s) of job {settings.jobname} to stop; {len(left)} still running")


@click.command(name="alive")
@setting_options("url", "host", "port")
def alive_command(url: str | None, host: str | None, port: int | None) -> None:
    """Exit 0 if the Redis server answers, 1 if not."""
    settings = settings_of("alive-check", url, host, port)
    ok = alive(settings.address)
    assert settings.address is not None
    click.echo(f"{settings.address.describe()}: {'alive' if ok else 'not reachable'}")
    sys.exit(0 if ok else 1)


@click.command(name="clean")
@setting_options(*CONNECTION)
def clean_command(jobname: str, url: str | None, host: str | None, port: int | None) -> None:
    """Remove the keys of a job's dead runs and dead workers (their claimed tasks go back to the queue)."""
    settings, backend = connect(jobname, url, host, port)
    try:
        workers, runs, requeued = backend.clean(settings.jobname)
    finally:
        backend.close()
    click.echo(f"removed {len(workers)} dead worker(s), {len(runs)} dead run(s); requeued {requeued} message(s)")
