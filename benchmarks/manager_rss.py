"""Child process of the manager-memory studies: ``n`` tasks in a fresh process, then its peak RSS.

``python -m benchmarks.manager_rss --scheduler redisparam --tasks 1000000 [--graph trivial|tree]``

Starts the scheduler (``threads``: nothing to start; ``redisparam``: ``RedisParam(workers=2)`` and a warm-up),
notes the peak RSS so far (the baseline: interpreter, imports, started scheduler), then builds the graph (``trivial``:
``n`` independent no-op tasks, all requested; ``tree``: a tree reduction of ``n`` no-op leaves, 8 children a node,
the root requested), notes the RSS the graph alone adds (``graph_bytes``: the user's share), computes, checks the
values and reports the peak: ``VmHWM``, which is ``ru_maxrss`` without what Linux carries over from the spawning
process (see :func:`.rss.peak_rss_bytes`). With ``--sample`` it also samples the RSS of its descendants
(redis-server, workers) every 50 ms, for information.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from . import peers
from .rss import RssSampler, maxrss_bytes, peak_rss_bytes
from .runner import warm_up
from .subproc import child_main, emit
from .workloads import Graph, tree_graph, trivial

SPLIT_EVERY = 8
"""Children of a node of the tree graph."""

__all__ = ["main"]


def _run(args: argparse.Namespace) -> None:
    scheduler = peers.SCHEDULERS[args.scheduler]()
    scheduler.start()
    try:
        warm_up(scheduler, arrays=False)
        gc.collect()
        baseline, before = peak_rss_bytes(), current_rss_bytes()
        sampler = RssSampler(interval=0.05, refresh=1.0).start() if args.sample else None
        t0 = time.perf_counter()
        dsk: Graph
        if args.graph == "tree":
            dsk, root = tree_graph(args.tasks, SPLIT_EVERY)
            keys = [root]
        else:
            dsk, keys = trivial(args.tasks).build()
        t1 = time.perf_counter()
        graph_bytes, ntasks = current_rss_bytes() - before, len(dsk)
        result: Any = scheduler.get(dsk, keys)
        t2 = time.perf_counter()
        peak, ru_maxrss = peak_rss_bytes(), maxrss_bytes()
        if sampler is not None:
            sampler.stop()
        problem = check(args.graph, args.tasks, result)
        del result
        if problem is not None:
            emit("error", message=problem)
            return
        others = [p.to_json() for p in sampler.snapshot() if p.role != "manager"] if sampler is not None else []
    finally:
        scheduler.stop()
    emit(
        "done",
        maxrss=peak,
        ru_maxrss=ru_maxrss,
        baseline=baseline,
        build_s=t1 - t0,
        run_s=t2 - t1,
        others=others,
        graph_bytes=graph_bytes,
        ntasks=ntasks,
        graph=args.graph,
    )


def current_rss_bytes() -> int:
    """This process's resident bytes now (``VmRSS``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def keys_values(n: int) -> list[int]:
    """The values of every ``n // 100``-th key of the trivial graph (a spot check)."""
    return list(range(0, n, max(1, n // 100)))


def check(graph: str, n: int, result: Any) -> str | None:
    """What is wrong with ``result``, or None (a spot check of the trivial graph; the tree's root is exact)."""
    if graph == "tree":
        (value,) = result
        return None if value == n * (n - 1) // 2 else f"wrong root: {value!r}"
    values = list(result)
    if len(values) != n or values[:: max(1, n // 100)] != keys_values(n):
        return f"wrong result: {len(values)} values"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.manager_rss", description=__doc__)
    parser.add_argument("--scheduler", choices=peers.NAMES, default=peers.OURS)
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks (trivial) or leaves (tree)")
    parser.add_argument("--graph", choices=("trivial", "tree"), default="trivial")
    parser.add_argument("--sample", action="store_true", help="also sample the RSS of child processes")
    return child_main(_run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
