"""A Gantt chart of a run: which worker ran which task, when, and whether it succeeded.

:meth:`RedisParam.timeline() <dask_redisparam.RedisParam.timeline>` returns one
:class:`~dask_redisparam.manager.state.TimelineRecord` ``(key, worker, start, end, ok)`` per task of the param's last
run; :func:`plot_timeline` draws them with matplotlib (an optional dependency, imported only when called)::

    with RedisParam(workers=4) as p:
        x.sum().compute(scheduler=p)
        plot_timeline(p.timeline(), path="timeline.png")

No global matplotlib state is touched: without ``ax`` the chart is drawn on a fresh
:class:`matplotlib.figure.Figure` with its own Agg canvas (no ``pyplot``, no display needed, safe in threads).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .manager.options import TimelineRecord

__all__ = ["plot_timeline"]

OK_COLOR = "tab:blue"
"""The colour of tasks that succeeded."""
FAILED_COLOR = "tab:red"
"""The colour of tasks that raised (or timed out, or were lost)."""


def _matplotlib() -> tuple[Any, Any, Any]:
    """``(Figure, FigureCanvasAgg, Patch)``, or an ImportError that says how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # type: ignore[import-not-found, unused-ignore]
        from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
        from matplotlib.patches import Patch  # type: ignore[import-not-found, unused-ignore]
    except ImportError as e:
        raise ImportError("plot_timeline needs matplotlib, which is not installed: pip install matplotlib") from e
    return Figure, FigureCanvasAgg, Patch


def plot_timeline(
    records: Iterable[TimelineRecord | tuple[Any, str, float, float, bool]],
    ax: Any = None,
    path: str | os.PathLike[str] | None = None,
) -> Any:
    """Draw a Gantt chart of a run: one lane per worker, one bar per task, failed tasks in another colour.

    Parameters
    ----------
    records : iterable of TimelineRecord
        ``(key, worker, start, end, ok)`` per task, as :meth:`RedisParam.timeline
        <dask_redisparam.RedisParam.timeline>` returns them (plain tuples in that order work too). Times are
        seconds on the workers' clocks; the x axis counts from the earliest start.
    ax : matplotlib.axes.Axes, optional
        Where to draw, e.g. from ``plt.subplots()``. Default: a new figure sized to the number of workers, made
        without ``pyplot``: nothing is shown until you save it (``path``) or display ``ax.figure`` (in Jupyter,
        once ``%matplotlib inline`` is on or ``matplotlib.pyplot`` is imported).
    path : str or os.PathLike, optional
        Also save the figure there as a PNG.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on: ``ax.patches`` holds one bar per task (in ``records`` order), the y tick labels are the
        worker ids (sorted), ``ax.figure`` is the figure.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install matplotlib``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from dask_redisparam.manager.options import TimelineRecord
    >>> records = [
    ...     TimelineRecord("a", "worker-1", 100.0, 100.5, True),
    ...     TimelineRecord("b", "worker-2", 100.2, 101.0, False),
    ... ]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     png = pathlib.Path(tmp) / "timeline.png"
    ...     ax = plot_timeline(records, path=png)
    ...     png.read_bytes()[:4] == b"\\x89PNG"
    True
    >>> len(ax.patches), [label.get_text() for label in ax.get_yticklabels()]
    (2, ['worker-1', 'worker-2'])
    >>> [(round(float(bar.get_x()), 3), round(float(bar.get_width()), 3)) for bar in ax.patches]  # (start, seconds)
    [(0.0, 0.5), (0.2, 0.8)]
    """
    Figure, FigureCanvasAgg, Patch = _matplotlib()
    rows = [(key, str(worker), float(start), float(end), bool(ok)) for key, worker, start, end, ok in records]
    workers = sorted({worker for _, worker, _, _, _ in rows})
    lane = {worker: i for i, worker in enumerate(workers)}
    origin = min((start for _, _, start, _, _ in rows), default=0.0)

    if ax is None:
        figure = Figure(figsize=(9.0, max(2.5, 1.2 + 0.45 * len(workers))), layout="constrained")
        FigureCanvasAgg(figure)  # attaches itself: savefig works without pyplot or a display
        ax = figure.add_subplot()

    if rows:
        ax.barh(
            [lane[worker] for _, worker, _, _, _ in rows],
            [max(end - start, 0.0) for _, _, start, end, _ in rows],
            left=[start - origin for _, _, start, _, _ in rows],
            height=0.8,
            color=[OK_COLOR if ok else FAILED_COLOR for *_, ok in rows],
            edgecolor="white",
            linewidth=0.5,
        )
    ax.set_yticks(range(len(workers)), labels=workers)
    if workers:
        ax.set_ylim(len(workers) - 0.5, -0.5)  # the first worker on top
    ax.set_xlabel("seconds since the first task started")
    ax.set_ylabel("worker")
    failed = sum(1 for *_, ok in rows if not ok)
    title = f"{len(rows)} task(s) on {len(workers)} worker(s)"
    ax.set_title(title + (f", {failed} failed" if failed else ""))
    ax.legend(
        handles=[Patch(color=OK_COLOR, label="ok"), Patch(color=FAILED_COLOR, label="failed")],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),  # outside the axes, right of the lanes: it never hides a bar
        borderaxespad=0.0,
        fontsize="small",
    )
    ax.grid(axis="x", alpha=0.3)

    if path is not None:
        ax.figure.savefig(os.fspath(path), format="png", dpi=100)
    return ax
