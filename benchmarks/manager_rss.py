"""Child process of the manager-memory study: ``n`` trivial tasks in a fresh process, then its peak RSS.

``python -m benchmarks.manager_rss --scheduler redisparam --tasks 1000000``

Starts the scheduler (``threads``: nothing to start; ``redisparam``: ``RedisParam(workers=2)`` and a warm-up),
notes the peak RSS so far (the baseline: interpreter, imports, started scheduler), then builds the graph of ``n``
independent no-op tasks, computes all ``n`` keys, checks the values and reports the peak: ``VmHWM``, which is
``ru_maxrss`` without what Linux carries over from the spawning process (see :func:`.rss.peak_rss_bytes`).
With ``--sample`` it also samples the RSS of its descendants (redis-server, workers) every 50 ms, for information.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from . import peers
from .rss import RssSampler, maxrss_bytes, peak_rss_bytes
from .runner import warm_up
from .subproc import child_main, emit
from .workloads import Graph, trivial

__all__ = ["main"]


def _run(args: argparse.Namespace) -> None:
    scheduler = peers.SCHEDULERS[args.scheduler]()
    scheduler.start()
    try:
        warm_up(scheduler, arrays=False)
        baseline = peak_rss_bytes()
        sampler = RssSampler(interval=0.05, refresh=1.0).start() if args.sample else None
        t0 = time.perf_counter()
        dsk: Graph
        dsk, keys = trivial(args.tasks).build()
        t1 = time.perf_counter()
        result: Any = scheduler.get(dsk, keys)
        t2 = time.perf_counter()
        peak, ru_maxrss = peak_rss_bytes(), maxrss_bytes()
        if sampler is not None:
            sampler.stop()
        values = list(result)
        if len(values) != args.tasks or values[:: max(1, args.tasks // 100)] != keys_values(args.tasks):
            emit("error", message=f"wrong result: {len(values)} values")
            return
        others = [p.to_json() for p in sampler.snapshot() if p.role != "manager"] if sampler is not None else []
    finally:
        scheduler.stop()
    emit("done", maxrss=peak, ru_maxrss=ru_maxrss, baseline=baseline, build_s=t1 - t0, run_s=t2 - t1, others=others)


def keys_values(n: int) -> list[int]:
    """The values of every ``n // 100``-th key of the trivial graph (a spot check)."""
    return list(range(0, n, max(1, n // 100)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.manager_rss", description=__doc__)
    parser.add_argument("--scheduler", choices=peers.NAMES, default=peers.OURS)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--sample", action="store_true", help="also sample the RSS of child processes")
    return child_main(_run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
