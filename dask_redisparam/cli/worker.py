"""``dask-redisparam-worker`` (also ``dask-redisparam worker``): serve a job's tasks, under a supervisor that keeps
``--nworkers`` processes running.

Examples
--------
Serve job ``demo`` with 4 worker processes::

    REDISPARAM_HOST=redis.example dask-redisparam-worker --jobname demo --nworkers 4
"""

from __future__ import annotations

import logging
import sys
import uuid

import click

from ..backend import Backend
from ..errors import RedisParamError
from .common import CONNECTION, CONTEXT, configure_logging, setting_options, settings_of, version_option

__all__ = ["worker_command"]

logger = logging.getLogger(__name__)


@click.command(name="worker", context_settings=CONTEXT)
@version_option("dask-redisparam-worker")
@setting_options(*CONNECTION)
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
@setting_options(
    "heartbeat_interval", "heartbeat_ttl", "replicas", "replicas_timeout", "replicas_required", "resources"
)
@click.option("--daemon", "daemon_id", default=None, hidden=True, help="Daemon id (used by the supervisor).")
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
    replicas: int,
    replicas_timeout: float,
    replicas_required: bool,
    resources: str | None,
    daemon_id: str | None,
    connect_timeout: float | None,
    child: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Serve the tasks of a job from a Redis server, until stopped (SIGTERM/SIGINT: warm; twice: cold)."""
    configure_logging(verbose, quiet)
    settings = settings_of(jobname, url, host, port)
    try:
        settings = settings.replace(
            heartbeat_interval=heartbeat_interval,
            heartbeat_ttl=heartbeat_ttl,
            replicas=replicas,
            replicas_timeout=replicas_timeout,
            replicas_required=replicas_required,
            resources=resources,
        )
    except RedisParamError as e:
        raise click.UsageError(str(e)) from None
    address = settings.address
    assert address is not None
    from ..worker.restarts import EXIT_CONFIG, exit_code_for

    if child:
        from ..worker.loop import Worker
        from ..worker.memory import reuse_freed_memory

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
                replicas=settings.replicas,
                replicas_timeout=settings.replicas_timeout,
                replicas_required=settings.replicas_required,
                resources=settings.resources,
                daemon=daemon_id,
            )
            name = worker.id
            worker.run()
        except RedisParamError as e:
            logger.error("worker %s: %s", name, e)
            sys.exit(exit_code_for(e))
        return
    from ..wire.signing import signer_from_environment
    from ..worker.supervisor import Supervisor

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
    if settings.replicas > 0:
        child_args += ["--replicas", str(settings.replicas), "--replicas-timeout", str(settings.replicas_timeout)]
        child_args += ["--replicas-required"] if settings.replicas_required else []
    if burst:
        child_args.append("--burst")
    if max_tasks is not None:
        child_args += ["--max-tasks", str(max_tasks)]
    if release_memory:
        child_args.append("--release-memory")
    base_id = worker_id or uuid.uuid4().hex[:8]
    if settings.resources:  # shared by the processes of this daemon: they book them under its id
        given = ",".join(f"{n}={a!r}" for n, a in settings.resources)
        child_args += ["--resources", given, "--daemon", daemon_id or base_id]
    child_args += ["-v"] * verbose + (["--quiet"] if quiet else [])
    env = {"REDISPARAM_URL": address.to_url(show_password=True)}
    restart = not (no_restart or burst or max_tasks is not None)
    supervisor = Supervisor(nworkers, child_args, env, base_id, restart=restart, reap=(address, settings.jobname))
    sys.exit(supervisor.run())
