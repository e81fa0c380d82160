"""Command-line interface: ``dask-redisparam-worker`` and the ``dask-redisparam`` group.

This is the only module that configures logging. Connection settings come from the options or the environment
(``REDISPARAM_URL``, ``REDISPARAM_HOST``/``_PORT``/``_PASSWORD``, then ``REDIS_HOST``/``_PORT``/``_PASSWORD``);
a password is only ever read from the environment, so it never shows in a process list.

Examples
--------
Serve job ``demo`` with 4 worker processes::

    REDISPARAM_HOST=redis.example dask-redisparam-worker --jobname demo --nworkers 4
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .backend import Backend
from .config.schema import setting
from .config.settings import Settings
from .errors import RedisParamError
from .pool import alive, job_status, stop_all

__all__ = ["main", "worker_main"]

logger = logging.getLogger(__name__)

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _configure_logging(verbose: int, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.INFO - 10 * min(verbose, 1)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
        stream=sys.stderr,
    )


def _settings(jobname: str | None, url: str | None, host: str | None, port: int | None) -> Settings:
    try:
        settings = Settings(jobname=jobname, is_worker=True, url=url, host=host, port=port)
    except RedisParamError as e:
        raise click.UsageError(str(e)) from None
    if settings.address is None:
        raise click.UsageError(
            "no Redis server configured: give --url or --host/--port, or set REDISPARAM_URL or "
            "REDISPARAM_HOST/REDISPARAM_PORT (or REDIS_HOST/REDIS_PORT)"
        )
    return settings


def _setting_options(*names: str) -> Callable[[_Command], _Command]:
    """Give a command the flags of the settings ``names``, as the settings table declares them
    (:data:`dask_redisparam.config.schema.SETTINGS`: flag, type, default, help, and the variables that set it)."""

    def decorate(command: _Command) -> _Command:
        for name in reversed(names):
            declared = setting(name)
            cli = declared.cli
            assert cli is not None, f"the setting {name} has no command-line flag"
            variables = [*([cli.envvar] if cli.envvar else []), *declared.env]
            option = click.option(
                declared.flag,
                type=cli.type,
                envvar=cli.envvar,
                required=cli.required,
                default=None if cli.required else declared.default,
                show_default=declared.default is not None,
                help=cli.help + (f" [{', '.join(variables)}]." if variables else "."),
            )
            command = option(command)
        return command

    return decorate


_CONNECTION = ("jobname", "url", "host", "port")


@click.command(name="worker", context_settings={"max_content_width": 100})
@_setting_options(*_CONNECTION)
@click.option("--nworkers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--id", "worker_id", envvar="REDISPARAM_ID", default=None, help="Worker id [REDISPARAM_ID].")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--max-tasks", type=click.IntRange(min=1), default=None, help="Exit after this many messages.")
@click.option("--no-restart", is_flag=True, help="Do not replace worker processes that die.")
@click.option(
    "--release-memory",
    is_flag=True,
    help="Give memory freed by large values back to the system at once (default: keep it for the next ones; "
    "see dask_redisparam.worker.memory).",
)
@_setting_options("heartbeat_interval", "heartbeat_ttl")
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to wait at start for a Redis server that cannot be reached (refused, unknown host, loading), "
    "retrying with a backoff (0.1 s doubling to 5 s) and logging every 10 s; then exit 1 [default: wait until it "
    "answers; 0: fail at once]. Refused credentials fail at once (exit code 78).",
)
@click.option("--child", is_flag=True, hidden=True, help="Serve in this process (used by the supervisor).")
@click.option("-v", "--verbose", count=True, help="More logging (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
def worker_command(
    jobname: str,
    url: str | None,
    host: str | None,
    port: int | None,
    nworkers: int,
    worker_id: str | None,
    burst: bool,
    max_tasks: int | None,
    no_restart: bool,
    release_memory: bool,
    heartbeat_interval: float,
    heartbeat_ttl: float,
    connect_timeout: float | None,
    child: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Serve the tasks of a job from a Redis server, until stopped (SIGTERM/SIGINT: warm; twice: cold)."""
    _configure_logging(verbose, quiet)
    settings = _settings(jobname, url, host, port)
    try:
        settings = settings.replace(heartbeat_interval=heartbeat_interval, heartbeat_ttl=heartbeat_ttl)
    except RedisParamError as e:
        raise click.UsageError(str(e)) from None
    address = settings.address
    assert address is not None
    from .worker.restarts import EXIT_CONFIG, exit_code_for

    if child:
        from .worker.loop import Worker
        from .worker.memory import reuse_freed_memory

        if not release_memory:
            reuse_freed_memory()
        name = worker_id or "(starting)"
        try:
            worker = Worker(
                address,
                settings.jobname,
                worker_id,
                heartbeat_interval=settings.heartbeat_interval,
                heartbeat_ttl=settings.heartbeat_ttl,
                burst=burst,
                max_tasks=max_tasks,
                connect_timeout=connect_timeout,
            )
            name = worker.id
            worker.run()
        except RedisParamError as e:
            logger.error("worker %s: %s", name, e)
            sys.exit(exit_code_for(e))
        return
    from .wire.signing import signer_from_environment
    from .worker.supervisor import Supervisor

    try:  # before starting any worker process: the server answers, the credentials and the secret work
        signer_from_environment()
        Backend.connect(address, wait=connect_timeout).close()
    except RedisParamError as e:
        logger.error("dask-redisparam-worker: %s", e)
        code = exit_code_for(e)
        sys.exit(code if code == EXIT_CONFIG else 1)
    child_args = ["--jobname", settings.jobname]
    child_args += ["--heartbeat-interval", str(heartbeat_interval), "--heartbeat-ttl", str(heartbeat_ttl)]
    if connect_timeout is not None:
        child_args += ["--connect-timeout", str(connect_timeout)]
    if burst:
        child_args.append("--burst")
    if max_tasks is not None:
        child_args += ["--max-tasks", str(max_tasks)]
    if release_memory:
        child_args.append("--release-memory")
    child_args += ["-v"] * verbose + (["--quiet"] if quiet else [])
    env = {"REDISPARAM_URL": address.to_url(show_password=True)}
    base_id = worker_id or uuid.uuid4().hex[:8]
    restart = not (no_restart or burst or max_tasks is not None)
    supervisor = Supervisor(nworkers, child_args, env, base_id, restart=restart, reap=(address, settings.jobname))
    sys.exit(supervisor.run())


@click.group(name="redisparam", context_settings={"max_content_width": 100})
def main() -> None:
    """dask-redisparam: run dask graphs through Redis; manage a job's worker pool."""


main.add_command(worker_command)


def _connect(
    jobname: str, url: str | None, host: str | None, port: int | None, *, read_only: bool = False
) -> tuple[Settings, Backend]:
    """Connect to the job's server and check the user's access: to every command of the job, or with
    ``read_only`` (``status``) to its keys only, so that a monitoring user may look."""
    settings = _settings(jobname, url, host, port)
    assert settings.address is not None
    try:
        backend = Backend.connect(settings.address)
    except RedisParamError as e:
        raise click.ClickException(str(e)) from None
    try:
        backend.check_job_access(settings.jobname, commands=not read_only)
    except RedisParamError as e:
        backend.close()
        raise click.ClickException(str(e)) from None
    return settings, backend


@main.command(name="status")
@_setting_options(*_CONNECTION)
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds to measure the task rate.")
def status_command(jobname: str, url: str | None, host: str | None, port: int | None, interval: float) -> None:
    """Show a job's workers, queue depth, runs and recent task rate."""
    settings, backend = _connect(jobname, url, host, port, read_only=True)
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
    from .wire.protocol import REJECTION_REASONS

    reason = fields.get("reason", "")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(fields.get("time", "0") or 0)))
    run = f" of run {fields['run']}" if fields.get("run") else ""
    return (
        f"{when} by worker {fields.get('worker', '?')}{run}: {REJECTION_REASONS.get(reason, reason)} "
        f"({fields.get('detail', '')}); {fields.get('count', '1')} in all"
    )


@main.command(name="stop-all")
@_setting_options(*_CONNECTION)
@click.option("--wait", type=float, default=5.0, show_default=True, help="Seconds to wait for the workers to leave.")
def stop_all_command(jobname: str, url: str | None, host: str | None, port: int | None, wait: float) -> None:
    """Stop every worker of a job (warm: current tasks finish first); no other job is touched."""
    settings, backend = _connect(jobname, url, host, port)
    try:
        asked = stop_all(backend, settings.jobname, wait)
        left = backend.live_workers(settings.jobname)
    finally:
        backend.close()
    click.echo(f"asked {asked} worker(s) of job {settings.jobname} to stop; {len(left)} still running")


@main.command(name="alive")
@_setting_options("url", "host", "port")
def alive_command(url: str | None, host: str | None, port: int | None) -> None:
    """Exit 0 if the Redis server answers, 1 if not."""
    settings = _settings("alive-check", url, host, port)
    ok = alive(settings.address)
    assert settings.address is not None
    click.echo(f"{settings.address.describe()}: {'alive' if ok else 'not reachable'}")
    sys.exit(0 if ok else 1)


@main.command(name="clean")
@_setting_options(*_CONNECTION)
def clean_command(jobname: str, url: str | None, host: str | None, port: int | None) -> None:
    """Remove the keys of a job's dead runs and dead workers (their claimed tasks go back to the queue)."""
    settings, backend = _connect(jobname, url, host, port)
    try:
        workers, runs, requeued = backend.clean(settings.jobname)
    finally:
        backend.close()
    click.echo(f"removed {len(workers)} dead worker(s), {len(runs)} dead run(s); requeued {requeued} message(s)")


def worker_main(prog_name: str | None = None) -> Any:
    """Entry point of ``dask-redisparam-worker``."""
    return worker_command.main(prog_name=prog_name or os.path.basename(sys.argv[0]))
