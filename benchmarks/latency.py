"""The latency study: manager and workers reach Redis through a proxy that delays each direction.

``python -m benchmarks.latency [--delays-ms 0,0.5,2,5] [--repeat 3]``

One redis-server on loopback TCP; per delay, a :mod:`.delay_proxy` process in front of it and a started
``RedisParam(workers=2)`` (its own job, signing on, the default settings otherwise) whose manager and local workers
all connect through that proxy. The workloads (trivial-10k, tree-10k, 500 x 10 ms sleeps) run interleaved: each
repeat runs every workload at every delay, so that a drift of the shared machine's load hits every delay alike.
The median round trip a client measures through each proxy (``PING``) is reported beside the delay.

dask.distributed is not run through the delay: its workers talk to each other directly (peer-to-peer transfers,
addresses the scheduler hands out), so a proxy in front of the scheduler delays only part of its traffic; a fair
comparison needs delayed links between every pair of processes (network namespaces with ``tc netem``, which needs
privileges this study does not assume).

Targets (issue 18, item 3): at 2 ms each way, trivial-10k at least 0.9x its throughput at 0 ms through the same
proxy, and the sleeps at least 0.93 efficient; at 5 ms each way, the sleeps at least 0.90.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from typing import Any

from .delay_proxy import measure_rtt, start_proxy_process
from .netutil import redis_client
from .report import align
from .subproc import child_main, emit
from .targets import Verdict
from .workloads import Workload, sleeps, tree, trivial

__all__ = ["DELAYS_MS", "analyse", "main"]

DELAYS_MS = (0.0, 0.5, 2.0, 5.0)
WORKERS = 2
TRIVIAL_RATIO = 0.9
"""trivial-10k at 2 ms each way: at least this share of its throughput at 0 ms (same proxy)."""
SLEEP_EFFICIENCY = {2.0: 0.93, 5.0: 0.90}
"""500 x 10 ms sleeps: the efficiency to reach at these delays (ms each way)."""


def workloads() -> list[Workload]:
    return [trivial(10_000), tree(10_000, 8), sleeps(500, 0.01)]


class _Param:
    """One delay: its proxy process and its started param."""

    def __init__(self, server: Any, delay_ms: float, secret: str, index: int) -> None:
        from dask_redisparam import RedisParam

        address = server.address
        self.delay_ms = delay_ms
        self.proxy, port = start_proxy_process((address.host, address.port), delay_ms / 1000)
        self.param = RedisParam(
            host="127.0.0.1",
            port=port,
            password=address.password,
            secret=secret,
            workers=WORKERS,
            jobname=f"latency-{index}",
        )
        self.param.start()
        client = redis_client(self.param.backend.address)
        try:
            self.rtt = measure_rtt(client.ping)
        finally:
            client.close()

    def get(self, dsk: Any, keys: Any) -> Any:
        return self.param(dsk, keys)

    def stop(self) -> None:
        try:
            self.param.stop()
        finally:
            proxy: Any = self.proxy
            proxy.stdin.close()
            proxy.wait(10)


def _run(args: argparse.Namespace) -> None:
    from dask_redisparam.worker.server import EmbeddedRedis

    from .runner import warm_up

    delays = [float(d) for d in args.delays_ms.split(",")]
    todo = workloads()
    graphs = {w.name: w.build() for w in todo}
    secret = secrets.token_hex(16)
    params: list[_Param] = []
    with EmbeddedRedis(tcp=True) as server:
        try:
            for i, d in enumerate(delays):
                params.append(_Param(server, d, secret, i))
                warm_up(params[-1], arrays=False)  # type: ignore[arg-type]
                emit("rtt", delay_ms=d, rtt_s=params[-1].rtt)
            for r in range(args.repeat):
                for w in todo:
                    for p in params:
                        dsk, keys = graphs[w.name]
                        t0 = time.perf_counter()
                        result = p.get(dsk, keys)
                        elapsed = time.perf_counter() - t0
                        problem = w.check(result)
                        if problem is not None:
                            raise RuntimeError(f"{w.name} at {p.delay_ms} ms: wrong result: {problem}")
                        emit("run", workload=w.name, delay_ms=p.delay_ms, seconds=elapsed, repeat=r, ntasks=w.ntasks)
                        print(f"  {w.name:<16} {p.delay_ms:>4g} ms  {elapsed:7.3f} s", flush=True)
        finally:
            for p in params:
                p.stop()
    emit("done", workers=WORKERS)


def analyse(events: list[dict[str, Any]]) -> tuple[list[str], list[Verdict], dict[str, Any]]:
    """The table (one row per workload and delay: median s, tasks/s or efficiency, ratio to 0 ms), the targets
    and the figures, from the child's events."""
    rtts = {e["delay_ms"]: e["rtt_s"] for e in events if e.get("event") == "rtt"}
    times: dict[tuple[str, float], list[float]] = {}
    ntasks: dict[str, int] = {}
    for e in events:
        if e.get("event") == "run":
            times.setdefault((e["workload"], e["delay_ms"]), []).append(e["seconds"])
            ntasks[e["workload"]] = e["ntasks"]
    work = {w.name: w.ideal_seconds(WORKERS) for w in workloads()}
    med = {k: statistics.median(v) for k, v in times.items()}
    rows, data = [], {}
    for (name, delay), m in sorted(med.items(), key=lambda kv: (list(work).index(kv[0][0]), kv[0][1])):
        base = med.get((name, 0.0))
        ideal = work.get(name)
        eff = None if ideal is None else ideal / m
        rtt = rtts.get(delay)
        rows.append(
            [
                name,
                f"{delay:g}",
                "-" if rtt is None else f"{rtt * 1000:.2f}",
                str(len(times[(name, delay)])),
                f"{m:.3f}",
                f"{ntasks[name] / m:,.0f}",
                "-" if eff is None else f"{eff:.3f}",
                "-" if base is None else f"{base / m:.2f}x",
            ]
        )
        data[f"{name}@{delay:g}ms"] = {"times_s": times[(name, delay)], "median_s": m, "efficiency": eff, "rtt_s": rtt}
    header = ["workload", "ms each way", "PING ms", "runs", "median s", "tasks/s", "efficiency", "vs 0 ms"]
    lines = [align(header, rows, left=1, groups=False)] if rows else ["  no runs"]
    return lines, _verdicts(med), data


def _verdicts(med: dict[tuple[str, float], float]) -> list[Verdict]:
    out = []
    base, at2 = med.get(("trivial-10k", 0.0)), med.get(("trivial-10k", 2.0))
    if base is None or at2 is None:
        out.append(Verdict("latency trivial-10k at 2 ms vs 0 ms", None, "not measured"))
    else:
        r = base / at2
        detail = f"{10_000 / at2:,.0f} vs {10_000 / base:,.0f} tasks/s = {r:.2f}x (>= {TRIVIAL_RATIO})"
        out.append(Verdict("latency trivial-10k at 2 ms vs 0 ms", r >= TRIVIAL_RATIO, detail))
    ideal = sleeps(500, 0.01).ideal_seconds(WORKERS)
    assert ideal is not None
    for delay, target in SLEEP_EFFICIENCY.items():
        m = med.get(("sleep-500x10ms", delay))
        name = f"latency sleep-500x10ms at {delay:g} ms efficiency"
        if m is None:
            out.append(Verdict(name, None, "not measured"))
        else:
            out.append(Verdict(name, ideal / m >= target, f"{ideal / m:.3f} ({m:.3f} s vs {ideal:.3f} s; >= {target})"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument("--delays-ms", default=",".join(f"{d:g}" for d in DELAYS_MS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quiet", action="store_true", help="only the events (as a child of python -m benchmarks)")
    args = parser.parse_args(argv)
    if args.quiet:
        return child_main(_run, args)
    from .subproc import run_child

    child = run_child("latency", ["--quiet", "--delays-ms", args.delays_ms, "--repeat", str(args.repeat)], 1800)
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
