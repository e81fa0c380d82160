"""The cost of the task identities on the manager: trivial tasks with and without them, interleaved.

``python -m benchmarks.identity_cost [--tasks 100000] [--repeat 5]``

1. ``task_identities`` alone over the trivial graph: CPU seconds (best of three) and microseconds a task.
2. ``RedisParam(workers=2)``, warmed up, computes the trivial graph ``--repeat`` times with the identities and as
   many times without them (``task_identities`` replaced by one that returns no identity), alternately: wall
   time (throughput) and the manager process's CPU time of each run; medians and the median of the paired CPU
   differences. On a busy machine the wall times vary more than the identities cost: read the CPU column.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from dask._task_spec import convert_legacy_graph

import dask_redisparam.manager.graph as graph_module
from dask_redisparam import RedisParam
from dask_redisparam.manager.identity import Identities, task_identities

from .workloads import trivial

__all__ = ["main"]


def _none(nodes: Mapping[Hashable, Any], keys: Iterable[Hashable]) -> Identities:
    return Identities()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.tasks
    dsk, keys = trivial(n).build()
    nodes = convert_legacy_graph(dsk)
    alone = []
    for _ in range(3):
        start = time.process_time()
        task_identities(nodes, keys)
        alone.append(time.process_time() - start)
    print(f"task_identities alone: {min(alone):.3f} s CPU for {n:,} tasks ({min(alone) / n * 1e6:.2f} us a task)")
    runs: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
    with RedisParam(workers=2) as param:
        param(*trivial(2000).build())
        for _ in range(args.repeat):
            for mode in ("with", "without"):
                graph_module.task_identities = task_identities if mode == "with" else _none  # type: ignore[assignment]
                wall, cpu = time.perf_counter(), time.process_time()
                param(dsk, keys)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                runs[mode].append((wall, cpu))
                print(f"{mode:8} {wall:6.2f} s  {n / wall:9,.0f} tasks/s  manager CPU {cpu:5.2f} s", flush=True)
    graph_module.task_identities = task_identities
    for mode, values in runs.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{mode:8} median {wall:6.2f} s ({n / wall:,.0f} tasks/s), manager CPU {cpu:.2f} s")
    paired = statistics.median(a[1] - b[1] for a, b in zip(runs["with"], runs["without"], strict=True))
    print(f"identities: +{paired:.2f} s manager CPU a run (median of the paired differences)")


if __name__ == "__main__":
    main()
