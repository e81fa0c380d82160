"""``dask-redisparam dashboard``: serve the live dashboard (and ``/metrics``) of a Redis server's jobs."""

from __future__ import annotations

import click

from ..dashboard import DEFAULT_ADDRESS, Dashboard
from ..errors import RedisParamError
from .common import CONTEXT, configure_logging, setting_options, settings_of

__all__ = ["dashboard_command"]


@click.command(name="dashboard", context_settings=CONTEXT)
@setting_options("url", "host", "port")
@click.option("--jobname", "job", default=None, help="Show only this job (default: every job on the server).")
@click.option(
    "--dashboard-address",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="host:port to listen on (port 0: a free one); loopback unless you say otherwise.",
)
def dashboard_command(
    url: str | None, host: str | None, port: int | None, job: str | None, dashboard_address: str
) -> None:
    """Serve a live web page of the jobs on a Redis server: workers, queue, runs' progress, task stream; and their
    Prometheus metrics on /metrics. It only reads Redis."""
    configure_logging(0)
    settings = settings_of(job, url, host, port)
    assert settings.address is not None
    try:
        dashboard = Dashboard(settings.address, job, dashboard_address)
    except (RedisParamError, ValueError, OSError) as e:
        raise click.ClickException(f"dashboard on {dashboard_address}: {e}") from None
    click.echo(f"dashboard of {settings.address.describe()} on {dashboard.link} (metrics: {dashboard.link}metrics)")
    try:
        dashboard.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.stop()
