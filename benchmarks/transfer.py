"""Child process of the transfer study: a large array through a chain of tasks, with the peak RSS of every process.

``python -m benchmarks.transfer --scheduler redisparam --bytes 1000000000 --repeat 3``

The chain is ``a = ones(n)`` -> ``b = a + 1`` -> ``c = b.sum()`` (a scalar), requested key ``c``. Our scheduler is
called with ``fuse_chains=False``, so ``a`` and ``b`` each really go through Redis: two hops (``processes``: with
``optimize_graph=False``, so that it does not fuse the chain either). Run with ``sync``
(in its own process) for the compute time of the chain. The first ``--cold`` runs (2; fresh processes map their
memory, slow on VMs, and our workers start keeping their heap once a value of 512 MiB passes: see
``dask_redisparam.worker.memory``) are reported apart and left out of the timed runs, for every scheduler alike.

Reports, as :func:`~.subproc.emit` events: each run's wall time and CPU time per role of the process tree, then
every process's first and peak sampled RSS, this process's peak RSS (``VmHWM``) and the largest reaped child's
``ru_maxrss``. If a run exceeds ``--run-timeout``, or more worker processes appear than were started plus
``--max-restarts`` (a crash loop), reports an error (with the peaks so far) and exits at once; the parent kills
what is left of the process group.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from typing import Any

from . import peers
from .rss import RssSampler, maxrss_bytes, peak_rss_bytes, role_of
from .runner import warm_up
from .subproc import child_main, emit
from .tasks import make_array, plus_one, total
from .workloads import Graph

__all__ = ["chain", "main"]

HOPS = 2
"""Values that travel between tasks: a -> b, b -> c."""


def chain(n: int) -> Graph:
    return {"a": (make_array, n), "b": (plus_one, "a"), "c": (total, "b")}


def tree_cpu() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each role of this process tree (workers summed): taken before
    and after a run, the run's CPU time, which other load on the machine hardly changes (unlike its wall time)."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    root = psutil.Process()
    out: dict[str, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            role = role_of(proc, root.pid)
        except psutil.Error:
            continue
        out[role] = out.get(role, 0.0) + times.user + times.system
    return out


class Watchdog(threading.Thread):
    """Ends this process (error event, exit code 3) on a run longer than ``run_timeout`` or a worker crash loop."""

    def __init__(self, sampler: RssSampler, workers: int, max_restarts: int, run_timeout: float) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.sampler, self.workers, self.max_restarts, self.run_timeout = sampler, workers, max_restarts, run_timeout
        self.run_started: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            seen = self.sampler.count("worker")
            started = self.run_started
            if seen > self.workers + self.max_restarts:
                self._fail(f"workers crash-loop: {seen} worker processes seen for {self.workers} workers")
            if started is not None and time.perf_counter() - started > self.run_timeout:
                self._fail(f"a run took more than --run-timeout={self.run_timeout:g} s; gave up")

    def _fail(self, message: str) -> None:
        peaks = [p.to_json() for p in self.sampler.snapshot()]
        emit("error", message=message, peaks=peaks, self_maxrss=peak_rss_bytes())
        os._exit(3)


def _run(args: argparse.Namespace) -> None:
    scheduler = peers.SCHEDULERS[args.scheduler]()
    if isinstance(scheduler, peers.Ours):
        scheduler.options["fuse_chains"] = False
    if isinstance(scheduler, peers.Processes):
        scheduler.options["optimize_graph"] = False  # else dask fuses the chain into one task: nothing moves
    n = args.bytes // 8
    dsk = chain(n)
    scheduler.start()
    try:
        warm_up(scheduler)
        scheduler.get(chain(1000), ["c"])  # imports numpy in the workers
        emit("started", scheduler=args.scheduler, nbytes=n * 8)
        with RssSampler(interval=args.interval) as sampler:
            watchdog = Watchdog(sampler, scheduler.workers, args.max_restarts, args.run_timeout)
            watchdog.start()
            for r in range(args.cold + args.repeat):  # the first ones: cold runs at full size (memory not yet mapped)
                scheduler.settle()
                cpu0 = tree_cpu()
                t0 = watchdog.run_started = time.perf_counter()
                got: Any = scheduler.get(dsk, ["c"])
                elapsed = time.perf_counter() - t0
                watchdog.run_started = None
                cpu = {role: round(t - cpu0.get(role, 0.0), 3) for role, t in tree_cpu().items()}
                value = got[0] if isinstance(got, (tuple, list)) else got
                if value != 2.0 * n:
                    emit("error", message=f"wrong result {value!r}, expected {2.0 * n!r}")
                    return
                emit("run" if r >= args.cold else "cold", run=r, seconds=elapsed, cpu=cpu)
                if elapsed > args.max_seconds:
                    break
            watchdog.stop.set()
        peaks = sampler.snapshot()
    finally:
        scheduler.stop()
    emit(
        "done",
        peaks=[p.to_json() for p in peaks],
        self_maxrss=peak_rss_bytes(),
        children_maxrss=maxrss_bytes(resource.RUSAGE_CHILDREN),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer", description=__doc__)
    parser.add_argument("--scheduler", choices=peers.NAMES, default=peers.OURS)
    parser.add_argument("--bytes", type=int, default=1_000_000_000, help="array size (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", type=int, default=2, help="untimed runs first (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="no more runs after one this long")
    parser.add_argument("--interval", type=float, default=0.02, help="RSS sampling interval, seconds")
    parser.add_argument("--max-restarts", type=int, default=3, help="worker restarts tolerated")
    parser.add_argument("--run-timeout", type=float, default=120.0, help="give up on a run longer than this")
    return child_main(_run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
