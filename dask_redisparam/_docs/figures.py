"""Figures of the documentation drawn from a real run at build time: nothing in them is made by hand.

:func:`demo_run` starts an embedded Redis server and two local workers, computes a small pipeline of four task
prefixes (``load``, ``clean``, ``fit``, ``summarize``) and returns the run's
:meth:`~dask_redisparam.RedisParam.timeline`; :func:`timeline_figure` draws it with
:func:`~dask_redisparam.timeline.plot_timeline` as PNG bytes and says what the picture shows. The docs build
(``docs/hooks/reference.py``) puts the PNG into the site as ``img/timeline-run.png`` and the caption under the
marker ``<!-- figure:timeline -->``.

The task functions live here so that the workers import them by name (cloudpickle pickles importable functions by
reference).

Examples
--------
>>> records = [(("load-1f", 0), "w-0", 0.0, 0.1, True), (("fit-2a", 0), "w-1", 0.1, 0.3, True)]
>>> png, caption = timeline_figure(records)
>>> png[:4] == b"\\x89PNG", caption
(True, '2 tasks of 2 prefixes (load, fit) on 2 workers, 0.30 s from the first start to the last end')
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

from dask.utils import key_split

__all__ = ["PARTITIONS", "clean", "demo_run", "fit", "load", "summarize", "timeline_figure"]

PARTITIONS = 12
"""Partitions of the demo pipeline: 3 tasks each, and one ``summarize``."""


def load(i: int) -> list[int]:
    """Read partition ``i`` (a made-up one: some partitions take longer)."""
    time.sleep(0.04 + 0.03 * (i % 3))
    return list(range(i * 1000, (i + 1) * 1000))


def clean(part: list[int]) -> list[int]:
    """Drop the multiples of 7."""
    time.sleep(0.02)
    return [x for x in part if x % 7]


def fit(part: list[int]) -> float:
    """A partition's mean."""
    time.sleep(0.06)
    return sum(part) / len(part)


def summarize(*means: float) -> float:
    """The mean of the means."""
    time.sleep(0.02)
    return sum(means) / len(means)


def demo_run(workers: int = 2) -> list[Any]:
    """Compute the demo pipeline on an embedded server with ``workers`` local workers; return its timeline.

    The embedded server and the workers live only as long as the run: the environment's ``REDISPARAM_*``
    variables are not used.
    """
    from dask.base import compute
    from dask.delayed import delayed

    from ..param import RedisParam
    from ..worker.server import EmbeddedRedis

    fits = [delayed(fit)(delayed(clean)(delayed(load)(i))) for i in range(PARTITIONS)]
    total = delayed(summarize)(*fits)
    with EmbeddedRedis() as server:
        url = server.address.to_url(show_password=True)
        with RedisParam(workers, url=url, jobname="docs-timeline") as param:
            param.map(abs, range(workers), tasks=0)  # the workers are warm (imports done) before the run drawn
            compute(total, scheduler=param)  # type: ignore[no-untyped-call]
            return param.timeline()


def timeline_figure(records: Sequence[Any]) -> tuple[bytes, str]:
    """The timeline as PNG bytes, and a caption that says what it shows (tasks, prefixes, workers, seconds)."""
    from ..timeline import plot_timeline

    ax = plot_timeline(records)
    out = io.BytesIO()
    ax.figure.savefig(out, format="png", dpi=100)
    prefixes = list(dict.fromkeys(key_split(r[0]) for r in sorted(records, key=lambda r: r[2])))
    workers = {r[1] for r in records}
    span = max(r[3] for r in records) - min(r[2] for r in records) if records else 0.0
    caption = (
        f"{len(records)} tasks of {len(prefixes)} prefixes ({', '.join(prefixes)}) on {len(workers)} workers, "
        f"{span:.2f} s from the first start to the last end"
    )
    return out.getvalue(), caption
