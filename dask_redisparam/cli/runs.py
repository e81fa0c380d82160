"""``dask-redisparam runs``: the job's unended runs, live ones and dead ones kept for resume.

Examples
--------
::

    $ dask-redisparam runs --jobname demo
    RUN           STATE  AGE (s)  MANAGER      DONE/TOTAL  BYTES    RESUMABLE
    3f2a9c1d7e0b  dead   42       node1:4711   205/400     1.6 MB   yes (died 12 s ago)
"""

from __future__ import annotations

import click

from ..manager.resume import RunInfo, list_runs
from .common import CONNECTION, connect, setting_options

__all__ = ["runs_command"]


@click.command(name="runs")
@setting_options(*CONNECTION)
def runs_command(jobname: str, url: str | None, host: str | None, port: int | None) -> None:
    """List a job's unended runs: live ones, and dead ones whose values stay for a resume ('clean' drops these)."""
    settings, backend = connect(jobname, url, host, port, read_only=True)
    try:
        infos = list_runs(backend, settings.jobname)
    finally:
        backend.close()
    click.echo(f"job {settings.jobname} on {backend.address.describe()}: {len(infos)} unended run(s)")
    if not infos:
        return
    rows: list[tuple[str, ...]] = [("RUN", "STATE", "AGE (s)", "MANAGER", "DONE/TOTAL", "BYTES", "RESUMABLE")]
    rows += [_row(info) for info in infos]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _row(info: RunInfo) -> tuple[str, ...]:
    if info.alive:
        resumable = "no (live)"
    elif info.resumable:
        resumable = f"yes (died {info.died_ago:.0f} s ago)"
    else:
        resumable = "no (no values)"
    return (
        info.run_id,
        "alive" if info.alive else "dead",
        f"{info.age:.0f}",
        info.manager,
        f"{info.done}/{info.total}",
        _size(info.nbytes),
        resumable,
    )


def _size(nbytes: int) -> str:
    """Bytes for people.

    Examples
    --------
    >>> _size(512), _size(1_600_000)
    ('512 B', '1.6 MB')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"
