"""A Gantt chart of a run: which worker ran which task, when, and whether it succeeded; tasks coloured by their key
prefix (``dask.utils.key_split``: ``inc`` for ``("inc-3f2a…", 7)``), as distributed's task stream, with a legend.

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
from collections.abc import Iterable, Sequence
from typing import Any

from dask.utils import key_split

from .manager.options import TimelineRecord

__all__ = ["FAILED_COLOR", "OTHER_COLOR", "PALETTE", "plot_timeline", "prefix_colors"]

PALETTE = (
    "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
    "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
)  # fmt: skip
"""The colours of task prefixes, in order of first appearance: matplotlib's ``tab10`` and the light half of
``tab20``, without their reds (failures) and greys (the other prefixes)."""
OTHER_COLOR = "tab:gray"
"""The colour of the prefixes beyond the :data:`PALETTE`'s length (the legend's ``other``)."""
FAILED_COLOR = "tab:red"
"""The colour of tasks that raised (or timed out, or were lost), whatever their prefix."""


def prefix_colors(prefixes: Sequence[str], palette: Sequence[str] = PALETTE) -> dict[str, str]:
    """A colour per prefix, in the order given (the first ``len(palette)``; the others get :data:`OTHER_COLOR`).

    Examples
    --------
    >>> prefix_colors(["load", "fit"])
    {'load': 'tab:blue', 'fit': 'tab:orange'}
    >>> prefix_colors(["a", "b", "c"], palette=["red", "blue"])["c"]
    'tab:gray'
    """
    return {prefix: palette[i] if i < len(palette) else OTHER_COLOR for i, prefix in enumerate(prefixes)}


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
    """Draw a Gantt chart of a run: one lane per worker, one bar per task coloured by its key prefix (in order of
    first start; beyond the 16 colours of :data:`PALETTE`, grey ``other``), failed tasks in red; a legend names
    the prefixes.

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
        worker ids (sorted), the legend's labels the prefixes (then ``other`` and ``failed`` when there are
        such tasks), ``ax.figure`` is the figure.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install matplotlib``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from dask_redisparam.manager.options import TimelineRecord
    >>> records = [
    ...     TimelineRecord(("load-8d1f", 0), "worker-1", 100.0, 100.5, True),
    ...     TimelineRecord(("load-8d1f", 1), "worker-2", 100.2, 101.0, False),
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
    >>> [text.get_text() for text in ax.get_legend().get_texts()]
    ['load', 'failed']
    """
    Figure, FigureCanvasAgg, Patch = _matplotlib()
    rows = [(key, str(worker), float(start), float(end), bool(ok)) for key, worker, start, end, ok in records]
    workers = sorted({worker for _, worker, _, _, _ in rows})
    lane = {worker: i for i, worker in enumerate(workers)}
    origin = min((start for _, _, start, _, _ in rows), default=0.0)
    prefixes = [key_split(key) for key, *_ in rows]
    first: dict[str, float] = {}
    for prefix, (_, _, start, _, ok) in zip(prefixes, rows, strict=True):
        if ok:  # failed tasks are red: a prefix that only failed has no colour
            first[prefix] = min(start, first.get(prefix, start))
    colors = prefix_colors(sorted(first, key=lambda p: (first[p], p)))

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
            color=[colors[p] if ok else FAILED_COLOR for p, (*_, ok) in zip(prefixes, rows, strict=True)],
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
    handles = [Patch(color=color, label=prefix) for prefix, color in colors.items() if color != OTHER_COLOR]
    if OTHER_COLOR in colors.values():
        handles.append(Patch(color=OTHER_COLOR, label="other"))
    if failed:
        handles.append(Patch(color=FAILED_COLOR, label="failed"))
    if handles:
        ax.legend(
            handles=handles,
            title="task prefix",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),  # outside the axes, right of the lanes: it never hides a bar
            borderaxespad=0.0,
            fontsize="small",
        )
    ax.grid(axis="x", alpha=0.3)

    if path is not None:
        ax.figure.savefig(os.fspath(path), format="png", dpi=100)
    return ax
