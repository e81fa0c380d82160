"""The many-workers study: 2, 24 and 96 local workers, 20 sleeps of 100 ms per worker (1,920 at 96).

``python -m benchmarks.workers [--workers 2,24,96] [--repeat 3]``

Per pool size, one started ``RedisParam(workers=n)`` (the embedded server, the default settings: signing and
resume on), warmed up, then ``repeat`` runs of ``20 n`` independent sleeps of 100 ms (ideal wall time 2.0 s at
every size). For each run: wall time, parallel efficiency (ideal / wall), and the CPU per task of the redis-server
(``INFO cpu``: ``used_cpu_sys`` + ``used_cpu_user``, before and after), of the manager (``time.process_time`` of
this process: its loop and its lease thread) and of the workers (their processes' CPU times, from psutil). Before
the runs, 2 s with the pool idle give the server's idle CPU per second (heartbeats, blocked claims timing out), the
per-worker cost that is not per task.

Target (issue 18, item 2): at 96 workers, efficiency at least 0.95; the server's CPU per task reported at 2, 24
and 96 workers (and it should stay flat).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from .netutil import redis_client, redis_cpu_seconds
from .report import align
from .subproc import child_main, emit
from .targets import Verdict
from .workloads import sleeps

__all__ = ["EFFICIENCY", "analyse", "main"]

PER_WORKER = 20
SECONDS = 0.1
EFFICIENCY = 0.95
"""Parallel efficiency to reach at 96 workers."""
IDLE_SECONDS = 2.0


def _worker_cpu(skip: set[int]) -> float:
    """CPU seconds of this process's descendants (the workers and their supervisor), but the ``skip`` pids."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        if child.pid in skip:
            continue
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _server_pids() -> set[int]:
    import psutil  # type: ignore[import-untyped, unused-ignore]

    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "redis-server" in child.name():
                out.add(child.pid)
        except psutil.Error:
            continue
    return out


def _run(args: argparse.Namespace) -> None:
    from dask_redisparam import RedisParam

    from .runner import warm_up

    for n in [int(x) for x in args.workers.split(",")]:
        w = sleeps(PER_WORKER * n, SECONDS)
        dsk, keys = w.build()
        param = RedisParam(workers=n, start_timeout=600.0, jobname=f"workers-{n}")
        t0 = time.perf_counter()
        param.start()
        try:
            started = time.perf_counter() - t0
            warm_up(_Get(param), arrays=False)  # type: ignore[arg-type]
            client = redis_client(param.backend.address)
            skip = _server_pids()
            time.sleep(1.0)  # let the warm-up's leftovers settle
            r0 = redis_cpu_seconds(client)
            time.sleep(IDLE_SECONDS)
            idle = (redis_cpu_seconds(client) - r0) / IDLE_SECONDS
            emit("pool", workers=n, start_s=started, redis_idle_cpu_per_s=idle)
            print(f"  {n} workers: started in {started:.1f} s; redis idle CPU {idle * 1000:.1f} ms/s", flush=True)
            for r in range(args.repeat):
                r0, m0, w0 = redis_cpu_seconds(client), time.process_time(), _worker_cpu(skip)
                t0 = time.perf_counter()
                result = param(dsk, keys)
                elapsed = time.perf_counter() - t0
                r1, m1, w1 = redis_cpu_seconds(client), time.process_time(), _worker_cpu(skip)
                problem = w.check(result)
                if problem is not None:
                    raise RuntimeError(f"{w.name} on {n} workers: wrong result: {problem}")
                emit(
                    "run",
                    workers=n,
                    ntasks=w.ntasks,
                    seconds=elapsed,
                    ideal_s=w.ideal_seconds(n),
                    redis_cpu_s=r1 - r0,
                    manager_cpu_s=m1 - m0,
                    worker_cpu_s=w1 - w0,
                    repeat=r,
                )
                print(f"  {n:>3} workers run {r + 1}: {elapsed:.3f} s", flush=True)
                time.sleep(0.5)
            client.close()
        finally:
            param.stop()
    emit("done")


class _Get:
    def __init__(self, param: Any) -> None:
        self.param = param

    def get(self, dsk: Any, keys: Any) -> Any:
        return self.param(dsk, keys)


def analyse(events: list[dict[str, Any]]) -> tuple[list[str], list[Verdict], dict[str, Any]]:
    """The table (one row per pool size: medians), the target at 96 workers and the figures."""
    pools = {e["workers"]: e for e in events if e.get("event") == "pool"}
    runs: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if e.get("event") == "run":
            runs.setdefault(e["workers"], []).append(e)
    rows, data, verdicts = [], {}, []
    for n, rs in sorted(runs.items()):
        ntasks = rs[0]["ntasks"]

        def med(field: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(r[field] for r in rs)

        eff = rs[0]["ideal_s"] / med("seconds")
        idle = pools.get(n, {}).get("redis_idle_cpu_per_s")
        rows.append(
            [
                str(n),
                str(ntasks),
                str(len(rs)),
                f"{med('seconds'):.3f}",
                f"{eff:.3f}",
                f"{med('redis_cpu_s') / ntasks * 1e6:.0f}",
                f"{med('manager_cpu_s') / ntasks * 1e6:.0f}",
                f"{med('worker_cpu_s') / ntasks * 1e6:.0f}",
                "-" if idle is None else f"{idle * 1000:.1f}",
            ]
        )
        data[str(n)] = {"runs": rs, "efficiency": eff, "pool": pools.get(n)}
        if n == 96:
            detail = f"{eff:.3f} ({med('seconds'):.3f} s vs ideal {rs[0]['ideal_s']:.3f} s; >= {EFFICIENCY})"
            verdicts.append(Verdict("workers-96 sleep-1920x100ms efficiency", eff >= EFFICIENCY, detail))
    if rows:
        per_task = ", ".join(f"{r[0]}: {r[5]} us" for r in rows)
        verdicts.append(Verdict("workers Redis CPU per task reported", True, per_task))
    else:
        verdicts.append(Verdict("workers-96 sleep-1920x100ms efficiency", None, "not measured"))
    header = ["workers", "tasks", "runs", "median s", "efficiency", "redis us/task", "manager us/task"]
    header += ["workers us/task", "redis idle ms/s"]
    lines = [align(header, rows, left=1, groups=False)] if rows else ["  no runs"]
    return lines, verdicts, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument("--workers", default="2,24,96", help="pool sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quiet", action="store_true", help="only the events (as a child of python -m benchmarks)")
    args = parser.parse_args(argv)
    if args.quiet:
        return child_main(_run, args)
    from .subproc import run_child

    child = run_child("workers", ["--quiet", "--workers", args.workers, "--repeat", str(args.repeat)], 3600)
    lines, verdicts, _ = analyse(child.events)
    for line in lines:
        print(line)
    for v in verdicts:
        print("  " + v.line())
    if child.error:
        print(f"  child failed: {child.error}")
    return 0 if child.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
