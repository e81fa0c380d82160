"""Run each scheduler on each workload: start once, warm up, time ``repeat`` runs, check every result."""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dask.typing import Key

from .peers import Scheduler
from .tasks import noop
from .workloads import Graph, Workload

__all__ = ["Measurement", "RunResult", "run_all", "warm_up"]

WARMUP_TASKS = 1_000
"""No-op tasks of the warm-up graph: enough to reach a steady state (connections, caches, allocator)."""


@dataclass
class Measurement:
    """The timed runs of one scheduler on one workload."""

    workload: str
    scheduler: str
    ntasks: int
    workers: int
    times: list[float] = field(default_factory=list)
    error: str | None = None
    ideal_seconds: float | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def tasks_per_s(self) -> float | None:
        median = self.median
        return self.ntasks / median if median else None

    @property
    def efficiency(self) -> float | None:
        """Parallel efficiency: ideal wall time / actual (median) wall time."""
        median = self.median
        return self.ideal_seconds / median if median and self.ideal_seconds is not None else None


@dataclass
class RunResult:
    """Everything one invocation measured."""

    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Scheduler name -> why it was left out (failed to start)."""
    startup_seconds: dict[str, float] = field(default_factory=dict)
    """Scheduler name -> seconds to start it and run the warm-up graph (not part of any measurement)."""
    not_run: list[str] = field(default_factory=list)
    """Workload / scheduler pairs left out on purpose, and why."""


def log(message: str) -> None:
    print(message, flush=True)


def warm_up(scheduler: Scheduler, arrays: bool = True) -> None:
    """Untimed: independent no-op tasks, then (``arrays``) a small dask.array graph, so that workers import numpy."""
    dsk: Graph = {("warmup", i): (noop, i) for i in range(WARMUP_TASKS)}
    keys = list(dsk)
    got = list(scheduler.get(dsk, keys))
    if got != list(range(WARMUP_TASKS)):
        raise RuntimeError(f"the warm-up graph returned wrong values: {got!r}")
    if arrays:
        from .workloads import array_sum

        small = array_sum(64, 8)
        problem = small.check(scheduler.get(*small.build()))
        if problem is not None:
            raise RuntimeError(f"the warm-up array graph: {problem}")


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 300 else first[:297] + "..."


def _measure(
    scheduler: Scheduler,
    workload: Workload,
    graph: tuple[Graph, list[Key]],
    repeat: int,
    max_seconds: float,
) -> Measurement:
    dsk, keys = graph
    m = Measurement(
        workload.name,
        scheduler.name,
        workload.ntasks,
        scheduler.workers,
        ideal_seconds=workload.ideal_seconds(scheduler.workers),
    )
    for r in range(1, repeat + 1):
        label = f"  {workload.name:<16} {scheduler.name:<12} run {r}/{repeat}"
        try:
            scheduler.settle()
            t0 = time.perf_counter()
            result = scheduler.get(dsk, keys)
            elapsed = time.perf_counter() - t0
        except Exception as exc:
            m.error = _short(exc)
            log(f"{label}  FAILED: {m.error}")
            traceback.print_exc(file=sys.stderr)
            return m
        problem = workload.check(result)
        del result
        if problem is not None:
            m.error = f"wrong result: {problem}"
            log(f"{label}  {elapsed:8.3f} s  WRONG RESULT: {problem}")
            return m
        m.times.append(elapsed)
        log(f"{label}  {elapsed:8.3f} s  {workload.ntasks / elapsed:>12,.0f} tasks/s")
        if elapsed > max_seconds and r < repeat:
            log(f"  {'':<16} {scheduler.name:<12} (run over --max-seconds={max_seconds:g}: remaining repeats skipped)")
            break
    return m


def run_all(
    factories: Sequence[tuple[str, Callable[[], Scheduler]]],
    workloads: Sequence[Workload],
    repeat: int,
    max_seconds: float,
    max_tasks: dict[str, int] | None = None,
) -> RunResult:
    """Build each graph once, then for each scheduler: start it, warm it up, measure every workload, stop it.

    Schedulers run one at a time, so an idle cluster or pool of one does not compete for CPUs with another.
    ``max_tasks`` maps a scheduler to the largest workload (in tasks) it runs; a workload's ``exclude`` is honoured.
    """
    limits = max_tasks or {}
    out = RunResult()
    graphs: dict[str, tuple[Graph, list[Key]]] = {}
    for workload in workloads:
        t0 = time.perf_counter()
        graphs[workload.name] = workload.build()
        log(f"built {workload.name}: {workload.description} ({time.perf_counter() - t0:.3f} s)")
    for name, factory in factories:
        todo = []
        for workload in workloads:
            why = _why_not(name, workload, limits)
            if why is None:
                todo.append(workload)
            else:
                out.not_run.append(f"{workload.name} on {name}: {why}")
        if not todo:
            log(f"\n[{name}] not started: no workload to run")
            continue
        scheduler: Scheduler | None = None
        t0 = time.perf_counter()
        why_missing = factory().missing()
        if why_missing is not None:
            out.skipped[name] = why_missing
            log(f"\n[{name}] skipped: {why_missing}")
            continue
        try:
            scheduler = factory()
            log(f"\n[{name}] starting: {scheduler.description}")
            scheduler.start()
            warm_up(scheduler)
        except Exception as exc:
            reason = _short(exc)
            out.skipped[name] = reason
            log(f"[{name}] FAILED TO START, skipped: {reason}")
            traceback.print_exc(file=sys.stderr)
            if scheduler is not None:
                _stop_quietly(scheduler)
            continue
        out.startup_seconds[name] = time.perf_counter() - t0
        log(f"[{name}] started and warmed up in {out.startup_seconds[name]:.2f} s")
        try:
            for workload in todo:
                out.measurements.append(_measure(scheduler, workload, graphs[workload.name], repeat, max_seconds))
        finally:
            _stop_quietly(scheduler)
    return out


def _why_not(name: str, workload: Workload, limits: dict[str, int]) -> str | None:
    if name in workload.exclude:
        return "excluded by the workload"
    limit = limits.get(name)
    if limit is not None and workload.ntasks > limit:
        return f"{workload.ntasks:,} tasks > this run's limit of {limit:,} for {name}"
    return None


def _stop_quietly(scheduler: Scheduler) -> None:
    try:
        scheduler.stop()
    except Exception as exc:
        log(f"[{scheduler.name}] error while stopping (ignored): {_short(exc)}")
