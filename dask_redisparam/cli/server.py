"""``dask-redisparam server status|stop``: the durable local mode's server and workers
(:mod:`dask_redisparam.worker.durable`), found by their state directory.

Examples
--------
See what runs in the default state directory, then stop it (its append-only file stays)::

    dask-redisparam server status
    dask-redisparam server stop
"""

from __future__ import annotations

import os
import sys
import time

import click
import dask.config

from ..backend import Backend
from ..errors import RedisParamError
from ..worker import durable
from .common import configure_logging

__all__ = ["server_group"]

_STATE_DIR_HELP = (
    "The state directory of the durable mode [default: the dask config redisparam.state_dir, else "
    "$XDG_STATE_HOME/dask-redisparam or ~/.local/state/dask-redisparam]."
)


def _state_dir(given: str | None) -> str | None:
    """The state directory to look at (checked: private), None if it does not exist (it is not created here)."""
    chosen = given or dask.config.get("redisparam.state_dir", None) or durable.default_state_dir()
    if not os.path.isdir(os.path.expanduser(str(chosen))):
        click.echo(f"no durable server runs in {chosen} (no such directory)")
        return None
    try:
        return durable.prepare_state_dir(str(chosen))
    except RedisParamError as e:
        raise click.UsageError(str(e)) from None


@click.group(name="server", context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]})
def server_group() -> None:
    """The durable local mode's server and workers (RedisParam(durable=True)): status, stop."""


@server_group.command(name="status")
@click.option("--state-dir", default=None, help=_STATE_DIR_HELP)
def status_command(state_dir: str | None) -> None:
    """Show the durable server of a state directory: pids, socket, uptime, workers, memory, AOF (exit 1: none)."""
    where = _state_dir(state_dir)
    if where is None:
        sys.exit(1)
    record = durable.read_record(where)
    secret = durable.read_secret(where)
    if record is None or secret is None or not record.alive():
        stale = " (a stale record of a dead one: the next start replaces it)" if record is not None else ""
        click.echo(f"no durable server runs in {where}{stale}")
        sys.exit(1)
    info: dict[str, str] = {}
    live: list[str] = []
    problem = ""
    try:
        backend = Backend.connect(record.address(secret), retries=0)
        try:
            info = backend.server_info()
            live = backend.live_workers(record.jobname)
        finally:
            backend.close()
    except RedisParamError as e:
        problem = f"   (cannot ask it: {e})"
    up = time.time() - record.started
    aof = {"1": "on", "0": "off"}.get(info.get("aof_enabled", ""), "?")
    click.echo(f"durable server in {where}: running{problem}")
    click.echo(
        f"  keeper pid {record.keeper}, redis-server pid {record.server}, workers' supervisor pid {record.supervisor}"
    )
    click.echo(f"  socket {record.socket}   up {up:.0f} s   memory {info.get('used_memory_human', '?')}   AOF {aof}")
    click.echo(
        f"  job {record.jobname}: {len(live)} live worker(s) of {len(record.worker_ids)} {' '.join(live)}".rstrip()
    )
    click.echo(f"  stops itself after {record.idle:g} s idle")


@server_group.command(name="stop")
@click.option("--state-dir", default=None, help=_STATE_DIR_HELP)
@click.option("--purge", is_flag=True, help="Also remove the append-only file and the secret (the values are lost).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait before killing.")
def stop_command(state_dir: str | None, purge: bool, timeout: float) -> None:
    """Stop the durable server of a state directory: its workers first (warm), then the server."""
    where = _state_dir(state_dir)
    if where is None:
        return
    record = durable.stop_durable(where, timeout=timeout, purge=purge)
    kept = "append-only file removed" if purge else "append-only file kept (--purge removes it)"
    if record is None:
        click.echo(f"no durable server ran in {where}; {kept}")
        return
    click.echo(f"stopped the durable server (pid {record.server}) and its workers in {where}; {kept}")


@server_group.command(name="run", hidden=True)
@click.option("--state-dir", required=True)
@click.option("--jobname", required=True)
@click.option("--workers", type=click.IntRange(min=1), required=True)
@click.option("--idle", type=float, required=True)
@click.option("--start-timeout", type=float, default=60.0)
@click.option("--ready-fd", type=int, default=None)
@click.argument("worker_args", nargs=-1, type=click.UNPROCESSED)
def run_command(
    state_dir: str,
    jobname: str,
    workers: int,
    idle: float,
    start_timeout: float,
    ready_fd: int | None,
    worker_args: tuple[str, ...],
) -> None:
    """Run the keeper of a durable server (started by RedisParam(durable=True); not for direct use)."""
    configure_logging(0)
    from ..worker.keeper import Keeper

    keeper = Keeper(state_dir, jobname, workers, idle, worker_args, start_timeout)
    sys.exit(keeper.run(ready_fd))
