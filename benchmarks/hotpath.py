"""Where our scheduler spends its time on trivial tasks: the manager under cProfile, every process under py-spy.

``python -m benchmarks.hotpath [--tasks 10000] [--runs 5] [--seconds 8] [--out benchmarks/results/profile]``

1. Starts ``RedisParam(workers=2)``, warms it up, and runs the trivial graph ``--runs`` times under cProfile in this
   process (the manager): top functions by own time and by cumulative time; the stats go to ``manager.pstats``.
2. If ``py-spy`` is installed: runs the graph over and over for ``--seconds`` while ``py-spy record --format raw
   --idle --nonblocking`` samples the manager and each worker; prints, per process, the share of samples spent
   waiting on Redis (a socket read) and the functions with the most samples, own and inclusive.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import re
import shutil
import subprocess
import time
from pathlib import Path

from . import peers
from .rss import role_of
from .runner import warm_up
from .workloads import trivial

__all__ = ["main", "summarize_raw"]

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "profile"
WAITING = ("read_from_socket", "_read_from_socket", "recv", "select", "poll", "wait (threading.py")
"""Leaf frames that mean "blocked, waiting for Redis or another thread"."""
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """``func (path/to/dask_redisparam/backend/runs.py:12)`` -> ``dask_redisparam/backend/runs.py:func``."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for anchor in ("dask_redisparam/", "redis/", "dask/", "benchmarks/", "cloudpickle/"):
        if anchor in path:
            path = anchor + path.split(anchor, 1)[1]
            break
    else:
        path = os.path.basename(path)
    return f"{path}:{m.group('func')}"


def summarize_raw(text: str, top: int) -> list[str]:
    """Summarize py-spy's raw (collapsed) stacks of the main thread: idle share, top own and inclusive functions."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = waiting = other_threads = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        if "_bootstrap (threading.py" in frames[0]:
            other_threads += n  # a thread other than the main one: heartbeat, sampler...
            continue
        total += n
        if any(w in frames[-1] for w in WAITING):
            waiting += n
        own[_frame_name(frames[-1])] += n
        for name in {_frame_name(f) for f in frames}:
            incl[name] += n
    if not total:
        return ["  (no samples)"]
    out = [f"  main thread: {total} samples, {waiting / total:.0%} waiting (socket read / select / Event.wait)"]
    out[0] += f"; {other_threads} samples of other threads left out"
    out.append("  own samples:")
    out += [f"    {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    out.append("  inclusive samples (dask_redisparam and redis-py frames):")
    ours = [
        (k, v)
        for k, v in incl.most_common()
        if k.startswith(("dask_redisparam/", "redis/")) and v < 0.995 * total  # not the always-there entry frames
    ]
    out += [f"    {n / total:6.1%}  {name}" for name, n in ours[:top]]
    return out


def _cprofile(scheduler: peers.Ours, runs: int, tasks: int, top: int, out: Path) -> list[str]:
    dsk, keys = trivial(tasks).build()
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for _ in range(runs):
        scheduler.get(dsk, keys)
    profiler.disable()
    elapsed = time.perf_counter() - t0
    profiler.dump_stats(out / "manager.pstats")
    lines = [f"manager cProfile: {runs} x {tasks:,} trivial tasks in {elapsed:.2f} s (with profiling overhead)"]
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats(key).print_stats(top)
        body = buf.getvalue().splitlines()
        start = next((i for i, line in enumerate(body) if line.lstrip().startswith("ncalls")), 0)
        lines += [f"  -- top {top} by {key}", *[f"  {line}" for line in body[start:] if line.strip()]]
    return lines


def _py_spy(scheduler: peers.Ours, seconds: float, tasks: int, top: int, out: Path) -> list[str]:
    exe = shutil.which("py-spy")
    if exe is None:
        return ["py-spy not installed (pip install py-spy): no per-process sampling"]
    import psutil  # type: ignore[import-untyped, unused-ignore]

    me = psutil.Process()
    targets = {me.pid: "manager"}
    for proc in me.children(recursive=True):
        role = role_of(proc, me.pid)
        if role == "worker":
            targets[proc.pid] = f"worker-{proc.pid}"
    recorders = {}
    for pid, name in targets.items():
        argv = [exe, "record", "--pid", str(pid), "--duration", f"{seconds:g}", "--rate", "250", "--format", "raw"]
        argv += ["--idle", "--nonblocking", "-o", str(out / f"{name}.txt")]
        recorders[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dsk, keys = trivial(tasks).build()
    runs, t0 = 0, time.perf_counter()
    while any(r.poll() is None for r in recorders.values()):
        scheduler.get(dsk, keys)
        runs += 1
    elapsed = time.perf_counter() - t0
    lines = [
        f"py-spy ({seconds:g} s at 250 Hz, --idle --nonblocking): {runs} runs of {tasks:,} tasks in {elapsed:.1f} s"
    ]
    for name, rec in recorders.items():
        _, err = rec.communicate()
        path = out / f"{name}.txt"
        lines.append(f"{name} ({path}):")
        if rec.returncode != 0 or not path.exists():
            lines.append(f"  py-spy failed: {err.strip()[-300:]}")
            continue
        lines += summarize_raw(path.read_text(), top)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath", description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="runs under cProfile")
    parser.add_argument("--seconds", type=float, default=8.0, help="py-spy recording time")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scheduler = peers.Ours()
    scheduler.start()
    try:
        warm_up(scheduler, arrays=False)
        lines = _cprofile(scheduler, args.runs, args.tasks, args.top, args.out)
        lines += ["", *_py_spy(scheduler, args.seconds, args.tasks, args.top, args.out)]
    finally:
        scheduler.stop()
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
