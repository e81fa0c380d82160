"""What the commands share: logging set-up, the settings of a command, the flags of settings, connecting.

Only the command line configures logging (:func:`configure_logging`). Connection settings come from the options
or the environment (``REDISPARAM_URL``, ``REDISPARAM_HOST``/``_PORT``/``_PASSWORD``, then
``REDIS_HOST``/``_PORT``/``_PASSWORD``); a password is only ever read from the environment, so it never shows in a
process list.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..backend import Backend
from ..config.schema import setting
from ..config.settings import Settings
from ..errors import RedisParamError

__all__ = ["CONNECTION", "CONTEXT", "configure_logging", "connect", "setting_options", "settings_of", "version_option"]

_Command = TypeVar("_Command", bound=Callable[..., Any])


CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
"""The click context settings of every command and group: ``-h`` is ``--help``."""


def version_option(prog_name: str) -> Callable[[_Command], _Command]:
    """``--version``: print ``<prog_name>, version <the installed package's version>`` and exit."""
    return click.version_option(
        None, "--version", package_name="dask-redisparam", prog_name=prog_name, message="%(prog)s, version %(version)s"
    )


def configure_logging(verbose: int, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.INFO - 10 * min(verbose, 1)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
        stream=sys.stderr,
    )


def settings_of(jobname: str | None, url: str | None, host: str | None, port: int | None) -> Settings:
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


def setting_options(*names: str) -> Callable[[_Command], _Command]:
    """Give a command the flags of the settings ``names``, as the settings table declares them
    (:data:`dask_redisparam.config.schema.SETTINGS`: flag, type, default, help, and the variables that set it)."""

    def decorate(command: _Command) -> _Command:
        for name in reversed(names):
            declared = setting(name)
            cli = declared.cli
            assert cli is not None, f"the setting {name} has no command-line flag"
            variables = [*([cli.envvar] if cli.envvar else []), *declared.env]
            kind: dict[str, Any] = {"is_flag": True} if cli.type is bool else {"type": cli.type}  # a bool: a flag
            option = click.option(
                declared.flag,
                **kind,
                envvar=cli.envvar,
                required=cli.required,
                default=None if cli.required else declared.default,
                show_default=declared.default is not None,
                help=cli.help + (f" [{', '.join(variables)}]." if variables else "."),
            )
            command = option(command)
        return command

    return decorate


CONNECTION = ("jobname", "url", "host", "port")


def connect(
    jobname: str, url: str | None, host: str | None, port: int | None, *, read_only: bool = False
) -> tuple[Settings, Backend]:
    """Connect to the job's server and check the user's access: to every command of the job, or with
    ``read_only`` (``status``) to its keys only, so that a monitoring user may look."""
    settings = settings_of(jobname, url, host, port)
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
