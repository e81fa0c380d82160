"""The workloads: raw dask graphs (plain dicts of tasks), built once and given as-is to every scheduler.

To add a workload, write a function that returns a :class:`Workload`, list a factory of it in :data:`REGISTRY`
under the workload's name, and list that name in :data:`DEFAULT` (and :data:`QUICK`) to run it by default. A
workload declares how many tasks it has (for tasks/s), how to check a result (outside the timed region), and
optionally the serial compute time of its tasks (``work_seconds``, for parallel efficiency = ideal / actual wall
time), a tasks/s target for our scheduler and the schedulers that skip it. Cross-workload targets (flat scaling,
ratios to a peer) are in :mod:`.targets`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dask.typing import Key

from .tasks import add, noop, sleep

__all__ = ["DEFAULT", "QUICK", "REGISTRY", "Graph", "Workload", "array_sum", "sleeps", "tree", "trivial"]

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
    exclude: frozenset[str] = frozenset()
    """Schedulers that do not run this workload (e.g. ``sync`` on sleeps: serial by design, nothing to learn)."""

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
        exclude=frozenset({"sync"}),
    )


def _expect_value(expected: float, rel: float = 0.0) -> Callable[[Any], str | None]:
    """Check a result that is one value (maybe wrapped in a 1-tuple, as ``get(dsk, [key])`` returns it)."""

    def check(result: Any) -> str | None:
        value = result[0] if isinstance(result, (tuple, list)) and len(result) == 1 else result
        try:
            ok = abs(float(value) - expected) <= rel * abs(expected)
        except (TypeError, ValueError):
            return f"expected a number, got {type(value).__name__}"
        return None if ok else f"got {value!r}, expected {expected!r}"

    return check


def tree_graph(n: int, split_every: int) -> tuple[Graph, Key]:
    """dask's tree reduction as a raw graph: leaves ``("leaf", i)`` -> levels of ``add`` over groups -> one root."""
    dsk: Graph = {("leaf", i): (noop, i) for i in range(n)}
    level: list[Key] = [("leaf", i) for i in range(n)]
    depth = 0
    while len(level) > 1:
        depth += 1
        groups = [level[i : i + split_every] for i in range(0, len(level), split_every)]
        level = []
        for j, group in enumerate(groups):
            key: Key = (f"tree-{depth}", j)
            dsk[key] = (add, *group)
            level.append(key)
    return dsk, level[0]


def tree(n: int, split_every: int) -> Workload:
    """A tree reduction of ``n`` trivial leaves, ``split_every`` children per node; only the root is requested."""
    dsk, _ = tree_graph(n, split_every)
    ntasks = len(dsk)

    def build() -> tuple[Graph, list[Key]]:
        graph, root = tree_graph(n, split_every)
        return graph, [root]

    return Workload(
        name=f"tree-{size_label(n)}",
        description=f"tree reduction of {n:,} no-op leaves, split_every={split_every} ({ntasks:,} tasks), root only",
        ntasks=ntasks,
        build=build,
        check=_expect_value(float(n * (n - 1) // 2)),
    )


def _array_collection(n: int, chunk: int) -> Any:
    import dask.array as da
    from dask.base import optimize

    x = da.random.default_rng(42).random((n, n), chunks=chunk)  # type: ignore[no-untyped-call]
    (optimized,) = optimize((x + x.T).sum())  # type: ignore[no-untyped-call]
    return optimized


def array_sum(n: int, chunk: int) -> Workload:
    """``(x + x.T).sum()`` of a random ``n``x``n`` dask array: its optimized graph, materialized as a dict."""
    from dask.local import get_sync

    collection = _array_collection(n, chunk)
    dsk: Graph = dict(collection.__dask_graph__())
    keys: list[Key] = list(collection.__dask_keys__())
    (expected,) = get_sync(dsk, keys)  # the reference value, outside every timed run

    return Workload(
        name=f"array-{n}",
        description=(
            f"dask.array (x + x.T).sum(), x random {n}x{n} float64 in {chunk}x{chunk} chunks: "
            f"dict(__dask_graph__()) after dask.optimize, {len(dsk):,} tasks"
        ),
        ntasks=len(dsk),
        build=lambda: (dict(dsk), list(keys)),
        check=_expect_value(float(expected), rel=1e-9),
    )


ISSUE_TARGET = "issue: 10,000 independent no-op tasks on 2 local workers at >= 2,000 tasks/s"
REGISTRY: dict[str, Callable[[], Workload]] = {
    "trivial-1k": lambda: trivial(1_000),
    "trivial-10k": lambda: trivial(10_000, target_rate=2_000, target_note=ISSUE_TARGET),
    "trivial-100k": lambda: trivial(100_000),
    "tree-10k": lambda: tree(10_000, 8),
    "sleep-1kx10ms": lambda: sleeps(1_000, 0.01),
    "sleep-250x10ms": lambda: sleeps(250, 0.01),
    "array-4000": lambda: array_sum(4000, 500),
}
"""Every known workload by name (``--workload NAME`` picks from these), made on demand."""

DEFAULT: list[str] = ["trivial-1k", "trivial-10k", "trivial-100k", "tree-10k", "sleep-1kx10ms", "array-4000"]
"""What a plain ``python -m benchmarks`` runs."""

QUICK: list[str] = ["trivial-1k", "trivial-10k", "trivial-100k", "tree-10k", "sleep-250x10ms", "array-4000"]
"""What ``--quick`` runs (with fewer repeats)."""
