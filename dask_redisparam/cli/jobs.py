"""The commands that tidy a job and check its server: ``stop-all``, ``alive``, ``clean`` (``status`` is in
:mod:`~dask_redisparam.cli.status`)."""

from __future__ import annotations

import sys

import click

from ..pool import alive, stop_all
from .common import CONNECTION, CONTEXT, connect, setting_options, settings_of

__all__ = ["alive_command", "clean_command", "stop_all_command"]


@click.command(name="stop-all", context_settings=CONTEXT)
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


@click.command(name="alive", context_settings=CONTEXT)
@setting_options("url", "host", "port")
def alive_command(url: str | None, host: str | None, port: int | None) -> None:
    """Exit 0 if the Redis server answers, 1 if not."""
    settings = settings_of("alive-check", url, host, port)
    ok = alive(settings.address)
    assert settings.address is not None
    click.echo(f"{settings.address.describe()}: {'alive' if ok else 'not reachable'}")
    sys.exit(0 if ok else 1)


@click.command(name="clean", context_settings=CONTEXT)
@setting_options(*CONNECTION)
def clean_command(jobname: str, url: str | None, host: str | None, port: int | None) -> None:
    """Remove the keys of a job's dead runs and dead workers (their claimed tasks go back to the queue)."""
    settings, backend = connect(jobname, url, host, port)
    try:
        workers, runs, requeued = backend.clean(settings.jobname)
    finally:
        backend.close()
    click.echo(f"removed {len(workers)} dead worker(s), {len(runs)} dead run(s); requeued {requeued} message(s)")
