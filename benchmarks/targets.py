"""The performance issue's targets for our scheduler, checked against measurements: PASS / FAIL / NOT RUN lines.

Workload targets (from the runner's medians): tasks/s of a workload, flat scaling of the per-task cost from 1k to
100k trivial tasks, tree reduction wall time against the ``processes`` peer, parallel efficiency of the sleeps.
The subprocess studies (:mod:`.studies`) make their own :class:`Verdict` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .peers import OURS
from .runner import Measurement, RunResult
from .workloads import Workload

__all__ = ["SCALING_LIMIT", "TRANSFER_LIMIT_RATIO", "TRANSFER_RATE", "Verdict", "scaling_lines", "workload_verdicts"]

SCALING = ("trivial-1k", "trivial-100k")
SCALING_LIMIT = 1.3
"""Per-task cost at 100k trivial tasks at most this many times the cost at 1k."""
TREE = ("tree-10k", "processes", 1.0)
"""Our tree reduction's wall time at most this many times the peer's."""
EFFICIENCY = 0.93
"""Parallel efficiency of our scheduler on every sleep workload (known task cost)."""
TRANSFER_RATE = 1.2
"""GB/s per hop of a large array through the chain (the performance issue: at 256 MB and 1 GB)..."""
TRANSFER_LIMIT_RATIO = 0.8
"""... or at least this fraction of what this machine allows, measured in the same run (:mod:`.transfer_limit`: a
raw socket to redis-server moving the same bytes the same way, plus the two tag passes that signing needs)."""


@dataclass(frozen=True)
class Verdict:
    """One target: its name, whether it was met (``None``: not measured), and the figures."""

    target: str
    ok: bool | None
    detail: str

    @property
    def status(self) -> str:
        return "NOT RUN" if self.ok is None else ("PASS" if self.ok else "FAIL")

    def line(self) -> str:
        return f"{self.status:<7} {self.target}: {self.detail}"


def _grouped(result: RunResult) -> dict[str, dict[str, Measurement]]:
    out: dict[str, dict[str, Measurement]] = {}
    for m in result.measurements:
        out.setdefault(m.workload, {})[m.scheduler] = m
    return out


def _per_task(m: Measurement | None) -> float | None:
    return None if m is None or m.median is None else m.median / m.ntasks


def _scaling(grouped: dict[str, dict[str, Measurement]], scheduler: str) -> tuple[float, float, float] | None:
    small, large = (_per_task(grouped.get(w, {}).get(scheduler)) for w in SCALING)
    return None if small is None or large is None else (small * 1e6, large * 1e6, large / small)


def scaling_lines(result: RunResult) -> list[str]:
    """Per-task cost of every scheduler at 1k and 100k trivial tasks (information; our target is a verdict)."""
    grouped = _grouped(result)
    lines = []
    for name in dict.fromkeys(m.scheduler for m in result.measurements):
        found = _scaling(grouped, name)
        if found is not None:
            small, large, ratio = found
            lines.append(f"  scaling {name:<12} {small:8.1f} us/task at 1k, {large:8.1f} at 100k: {ratio:.2f}x")
    return lines


def workload_verdicts(result: RunResult, workloads: Sequence[Workload]) -> list[Verdict]:
    grouped = _grouped(result)
    names = {w.name for w in workloads}
    out: list[Verdict] = []
    for w in workloads:
        if w.target_rate is None:
            continue
        m = grouped.get(w.name, {}).get(OURS)
        rate = None if m is None else m.tasks_per_s
        shown = "-" if rate is None else f"{rate:,.0f}"
        detail = f"{OURS} {shown} tasks/s (median) vs >= {w.target_rate:,.0f}" + (
            f" ({w.target_note})" if w.target_note else ""
        )
        out.append(Verdict(f"{w.name} rate", None if rate is None else rate >= w.target_rate, detail))
    if set(SCALING) <= names:
        found = _scaling(grouped, OURS)
        detail = "not measured" if found is None else f"{found[0]:.1f} -> {found[1]:.1f} us/task = {found[2]:.2f}x"
        ok = None if found is None else found[2] <= SCALING_LIMIT
        out.append(Verdict("flat scaling 1k -> 100k", ok, f"{OURS} {detail} (<= {SCALING_LIMIT}x)"))
    workload, peer, limit = TREE
    if workload in names:
        ours, theirs = grouped.get(workload, {}).get(OURS), grouped.get(workload, {}).get(peer)
        if ours is None or theirs is None or ours.median is None or theirs.median is None:
            out.append(Verdict(f"{workload} vs {peer}", None, f"needs both {OURS} and {peer}"))
        else:
            r = ours.median / theirs.median
            detail = (
                f"{OURS} {ours.median:.3f} s ({ours.median / ours.ntasks * 1e6:.1f} us/task) vs {peer} "
                f"{theirs.median:.3f} s: {r:.2f}x (<= {limit}x)"
            )
            out.append(Verdict(f"{workload} vs {peer}", r <= limit, detail))
    for w in workloads:
        if w.work_seconds is None:
            continue
        m = grouped.get(w.name, {}).get(OURS)
        eff = None if m is None else m.efficiency
        shown = "-" if eff is None or m is None else f"{eff:.3f} ({m.median:.3f} s vs ideal {m.ideal_seconds:.3f} s)"
        ok = None if eff is None else eff >= EFFICIENCY
        out.append(Verdict(f"{w.name} efficiency", ok, f"{OURS} {shown} (>= {EFFICIENCY})"))
    return out
