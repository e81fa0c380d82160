"""The workloads: raw dask graphs (plain dicts of tuple tasks), built once and given as-is to every scheduler.

To add a workload, write a function that returns a :class:`Workload` and list it in :data:`REGISTRY`; list its
name in :data:`DEFAULT` (and :data:`QUICK`) to run it by default. A workload declares how many tasks it has (for
tasks/s), how to check a result (outside the timed region), and optionally the serial compute time of its tasks
(``work_seconds``, for parallel efficiency = ideal / actual wall time) and a tasks/s target for our scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dask.typing import Key

from .tasks import noop, sleep

__all__ = ["DEFAULT", "QUICK", "REGISTRY", "Graph", "Workload", "sleeps", "trivial"]

Graph = dict[Key, Any]
"""A raw dask graph: key -> task tuple (or literal)."""


@dataclass(frozen=True)
class Workload:
    """One benchmark graph and what to make of a run of it."""

    name: str
    description: str
    ntasks: int
    build: Callable[[], tuple[Graph, list[Key]]]
    """Make the graph and the keys to request (called once per workload per invocation)."""
    check: Callable[[Any], str | None]
    """Given what a scheduler returned, an error message, or ``None`` if the result is right."""
    work_seconds: float | None = None
    """Serial compute time of all tasks; ideal wall time on ``w`` workers is ``work_seconds / w``."""
    target_rate: float | None = None
    """Tasks/s our scheduler should reach (from an issue), reported as PASS/FAIL."""
    target_note: str = ""

    def ideal_seconds(self, workers: int) -> float | None:
        """The wall time of a perfect scheduler with ``workers`` workers, if the task cost is known."""
        return None if self.work_seconds is None else self.work_seconds / max(workers, 1)


def size_label(n: int) -> str:
    """``1000`` -> ``1k``, ``10000`` -> ``10k``, ``1500`` -> ``1500``."""
    for factor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


def _expect_sequence(expected: list[Any]) -> Callable[[Any], str | None]:
    def check(result: Any) -> str | None:
        try:
            got = list(result)
        except TypeError:
            return f"expected a sequence of {len(expected)} values, got {type(result).__name__}"
        if got == expected:
            return None
        if len(got) != len(expected):
            return f"expected {len(expected)} values, got {len(got)}"
        bad = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
        return f"value {bad} is {got[bad]!r}, expected {expected[bad]!r}"

    return check


def trivial(n: int, *, target_rate: float | None = None, target_note: str = "") -> Workload:
    """``n`` independent no-op tasks, all keys requested: pure scheduling overhead."""

    def build() -> tuple[Graph, list[Key]]:
        dsk: Graph = {("noop", i): (noop, i) for i in range(n)}
        return dsk, list(dsk)

    return Workload(
        name=f"trivial-{size_label(n)}",
        description=f"{n:,} independent no-op tasks, all {n:,} keys requested",
        ntasks=n,
        build=build,
        check=_expect_sequence(list(range(n))),
        target_rate=target_rate,
        target_note=target_note,
    )


def sleeps(n: int, seconds: float) -> Workload:
    """``n`` independent tasks that each sleep ``seconds``: parallel efficiency with a known task cost."""

    def build() -> tuple[Graph, list[Key]]:
        dsk: Graph = {("sleep", i): (sleep, i, seconds) for i in range(n)}
        return dsk, list(dsk)

    return Workload(
        name=f"sleep-{size_label(n)}x{seconds * 1000:g}ms",
        description=f"{n:,} independent tasks sleeping {seconds * 1000:g} ms each",
        ntasks=n,
        build=build,
        check=_expect_sequence(list(range(n))),
        work_seconds=n * seconds,
    )


ISSUE_TARGET = "issue: 10,000 independent no-op tasks on 2 local workers at >= 2,000 tasks/s"

REGISTRY: dict[str, Workload] = {
    w.name: w
    for w in (
        trivial(1_000),
        trivial(10_000, target_rate=2_000, target_note=ISSUE_TARGET),
        trivial(100_000),
        sleeps(1_000, 0.01),
    )
}
"""Every known workload by name (``--workload NAME`` picks from these)."""

DEFAULT: list[str] = ["trivial-1k", "trivial-10k"]
"""What a plain ``python -m benchmarks`` runs."""

QUICK: list[str] = ["trivial-1k", "trivial-10k"]
"""What ``--quick`` runs (with fewer repeats)."""
