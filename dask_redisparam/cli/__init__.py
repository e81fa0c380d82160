"""Command-line interface: ``dask-redisparam-worker`` and the ``dask-redisparam`` group.

This is the only package that configures logging. Each command lives in a module of its own
(:mod:`~dask_redisparam.cli.worker`, :mod:`~dask_redisparam.cli.jobs`, :mod:`~dask_redisparam.cli.status`,
:mod:`~dask_redisparam.cli.runs`, :mod:`~dask_redisparam.cli.dashboard`, :mod:`~dask_redisparam.cli.server`);
:mod:`~dask_redisparam.cli.common` holds what they share (the flags that the settings table declares, connecting,
logging, ``-h`` and ``--version``).

Examples
--------
Serve job ``demo`` with 4 worker processes::

    REDISPARAM_HOST=redis.example dask-redisparam-worker --jobname demo --nworkers 4
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .common import CONTEXT, version_option
from .dashboard import dashboard_command
from .jobs import alive_command, clean_command, stop_all_command
from .runs import runs_command
from .server import server_group
from .status import status_command
from .worker import worker_command

__all__ = ["main", "worker_command", "worker_main"]


@click.group(name="redisparam", context_settings=CONTEXT)
@version_option("dask-redisparam")
def main() -> None:
    """dask-redisparam: run dask graphs through Redis; manage a job's worker pool."""


_COMMANDS = (
    worker_command,
    status_command,
    stop_all_command,
    alive_command,
    clean_command,
    runs_command,
    dashboard_command,
    server_group,
)
for _command in _COMMANDS:
    main.add_command(_command)


def worker_main(prog_name: str | None = None) -> Any:
    """Entry point of ``dask-redisparam-worker``."""
    return worker_command.main(prog_name=prog_name or os.path.basename(sys.argv[0]))
