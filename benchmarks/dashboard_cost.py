"""The cost of watching a run: trivial tasks with the dashboard open and refreshing, and without it, interleaved.

``python -m benchmarks.dashboard_cost [--tasks 100000] [--repeat 5] [--every 1.0]``

``RedisParam(workers=2)``, warmed up, computes the trivial graph ``--repeat`` times with a dashboard serving the
job while a thread loads its ``/api/jobs`` and ``/metrics`` every ``--every`` seconds (as the page and a Prometheus
scraper do), and as many times with no dashboard, alternately; it prints the medians and their ratio. The task
counters that the dashboard reads are always kept (inside the completion script): their own cost is measured by
comparing against a build without them, not here.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.request

from dask_redisparam import RedisParam
from dask_redisparam.dashboard.app import Dashboard

from .workloads import trivial

__all__ = ["main"]


def _poll(link: str, every: float, stop: threading.Event, loads: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        for path in ("api/jobs", "metrics"):
            with urllib.request.urlopen(link + path, timeout=30) as reply:
                reply.read()
        loads.append(time.perf_counter() - start)
        stop.wait(every)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--every", type=float, default=1.0)
    args = parser.parse_args(argv)
    n = args.tasks
    dsk, keys = trivial(n).build()
    runs: dict[str, list[float]] = {"watched": [], "unwatched": []}
    loads: list[float] = []
    with RedisParam(workers=2) as param:
        param(*trivial(2000).build())
        for _ in range(args.repeat):
            for mode in ("watched", "unwatched"):
                stop = threading.Event()
                board = poller = None
                if mode == "watched":
                    board = Dashboard(param.backend.address, param.settings.jobname, "127.0.0.1:0").start()
                    poller = threading.Thread(target=_poll, args=(board.link, args.every, stop, loads), daemon=True)
                    poller.start()
                wall = time.perf_counter()
                param(dsk, keys)
                wall = time.perf_counter() - wall
                stop.set()
                if poller is not None and board is not None:
                    poller.join()
                    board.stop()
                runs[mode].append(wall)
                print(f"{mode:10} {wall:6.2f} s  {n / wall:9,.0f} tasks/s", flush=True)
    medians = {mode: statistics.median(values) for mode, values in runs.items()}
    for mode, wall in medians.items():
        print(f"{mode:10} median {wall:6.2f} s ({n / wall:,.0f} tasks/s)")
    if loads:
        print(f"one refresh (/api/jobs + /metrics): median {statistics.median(loads) * 1000:.0f} ms")
    print(f"watched / unwatched: {medians['watched'] / medians['unwatched']:.3f}x the time")


if __name__ == "__main__":
    main()
