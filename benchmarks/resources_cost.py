"""The cost of worker resources: trivial tasks that need ``GPU=1`` against the same tasks that need nothing.

``python -m benchmarks.resources_cost [--tasks 20000] [--repeat 3]``

``RedisParam(workers=2, resources="GPU=2")`` (so both local processes may run a GPU task at once), warmed up,
computes the graph of ``--tasks`` independent no-op tasks (a plain dict: dask's own handling of a list of
``delayed`` is quadratic and would hide the scheduler) ``--repeat`` times with ``resources={"GPU": 1}`` for every task
(the compute keyword; ``dask.annotate`` gives the same annotation per task) and as many times without, alternately;
it prints the medians of the wall time and of the manager's CPU time (``time.process_time``) and their ratios. The
run with resources goes through the class's queue, the claim script that books the daemon's resources and the
release after each message; the other is the path every run without resources takes.
"""

from __future__ import annotations

import argparse
import statistics
import time

from dask_redisparam import RedisParam

from .tasks import noop

__all__ = ["main"]


def _graph(n: int) -> dict[tuple[str, int], tuple[object, int]]:
    return {("noop", i): (noop, i) for i in range(n)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with RedisParam(workers=2, resources="GPU=2") as p:
        warm = _graph(200)
        p.get(warm, list(warm), resources={"GPU": 1})  # warm up both paths
        p.get(warm, list(warm))
        for _ in range(args.repeat):
            for annotated in (False, True):
                graph = _graph(args.tasks)
                extra = {"resources": {"GPU": 1}} if annotated else {}
                wall, cpu = time.perf_counter(), time.process_time()
                values = p.get(graph, list(graph), **extra)
                times[annotated].append((time.perf_counter() - wall, time.process_time() - cpu))
                assert list(values) == list(range(args.tasks)), values[:3]
    for annotated in (False, True):
        wall = statistics.median(t[0] for t in times[annotated])
        cpu = statistics.median(t[1] for t in times[annotated])
        label = "resources GPU=1" if annotated else "no resources   "
        print(f"{label}: {args.tasks:,} tasks, median wall {wall:.2f} s, manager CPU {cpu:.2f} s")
    ratio_wall = statistics.median(t[0] for t in times[True]) / statistics.median(t[0] for t in times[False])
    ratio_cpu = statistics.median(t[1] for t in times[True]) / statistics.median(t[1] for t in times[False])
    print(f"ratio (resources / none): wall {ratio_wall:.2f}, manager CPU {ratio_cpu:.2f}")


if __name__ == "__main__":
    main()
