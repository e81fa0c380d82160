"""Ten million tasks: the time and the manager's peak RSS per task, trivial tasks and a tree reduction.

``python -m benchmarks.scale [--tasks 10000000] [--tree-leaves 2000000] [--graph trivial --graph tree] [--json PATH]``

The tree reduction (8 children a node) runs with :data:`TREE_LEAVES` leaves by default: its manager peaks at about
3.4 KB a task (measured at 500k leaves: dask.order's working set, about 1 KB a task while it runs; dask's ``Alias``
argument per input with a set of its own; our sets of one dependent, 216 bytes each), so ten million leaves (11.4
million tasks) would need about 39 GB on this 24 GiB machine; ``--tree-leaves 10000000`` asks for it anyway.

Each graph runs in a fresh process (:mod:`.manager_rss`: ``RedisParam(workers=2)``, warmed up, default settings:
resume and signing on). The process's peak RSS (``VmHWM``) includes the user's graph, as the issue counts it; the
graph's own share is the RSS that building it added, measured in the same process before the compute. Printed per
graph: the time of the compute, tasks/s, the peak RSS and, per task, the peak above the process's baseline
(interpreter, imports, started param), the graph's share and the manager's own share (the rest), against
:data:`LIMIT_PER_TASK`.

The study ``scale-<n>`` of ``python -m benchmarks`` (not in ``--quick``) runs the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .report import align
from .runner import log
from .subproc import ChildResult, run_child
from .targets import Verdict
from .workloads import size_label

__all__ = ["LIMIT_PER_TASK", "main", "measure", "summarize"]

LIMIT_PER_TASK = 1200
"""Bytes of manager peak RSS per task, the user's graph included (issue 18: at most 1.2 KB a task)."""
GRAPHS = ("trivial", "tree")
TREE_LEAVES = 2_000_000
"""Leaves of the tree reduction by default (see the module docstring)."""


def measure(ntasks: int, graph: str) -> ChildResult:
    """One fresh process computing ``graph`` of ``ntasks`` tasks (leaves, for the tree)."""
    log(f"  scale-{size_label(ntasks)} {graph}: a fresh process")
    args = ["--tasks", str(ntasks), "--graph", graph]
    return run_child("manager_rss", args, timeout=300 + ntasks / 5_000)


def summarize(ntasks: int, children: dict[str, ChildResult]) -> tuple[list[str], list[Verdict], dict[str, Any]]:
    """The table, the verdicts and the data of :func:`measure`'s results, by graph (``ntasks``: the trivial run's;
    the 1.2 KB target is the trivial graph's, the tree's figure is reported)."""
    label = size_label(ntasks)
    rows, verdicts, data, notes = [], [], {}, []
    for graph, child in children.items():
        end = child.last("done")
        data[graph] = {"events": child.events, "error": child.error, "seconds": child.seconds}
        if end is None or child.error:
            rows.append([graph, "-", "-", "-", "-", "-", "-", "-", "-", (child.error or "no result")[:120]])
            if graph == "trivial":
                verdicts.append(Verdict(f"scale-{label} trivial tasks complete", False, child.error or "no result"))
            continue
        n = int(end["ntasks"])
        grown = end["maxrss"] - end["baseline"]
        own = grown - end["graph_bytes"]
        per_task = end["maxrss"] / n
        rows.append(
            [
                graph,
                f"{n:,}",
                f"{end['run_s']:.1f}",
                f"{n / end['run_s']:,.0f}",
                f"{end['maxrss'] / 1e6:,.0f}",
                f"{per_task:,.0f}",
                f"{grown / n:,.0f}",
                f"{end['graph_bytes'] / n:,.0f}",
                f"{own / n:,.0f}",
                "ok",
            ]
        )
        data[graph] |= {"per_task": per_task, "graph_per_task": end["graph_bytes"] / n, "own_per_task": own / n}
        detail = (
            f"peak {end['maxrss'] / 1e6:,.0f} MB = {per_task:,.0f} B/task (<= {LIMIT_PER_TASK:,}); user's graph "
            f"{end['graph_bytes'] / n:,.0f} B/task, manager's own {own / n:,.0f} B/task; {end['run_s']:.1f} s"
        )
        if graph == "trivial":
            verdicts.append(Verdict(f"scale-{label} trivial manager RSS per task", per_task <= LIMIT_PER_TASK, detail))
        else:  # reported, not a target
            notes.append(f"  {graph} ({n:,} tasks): {detail}")
        if graph == "trivial":
            verdicts.append(Verdict(f"scale-{label} trivial tasks complete", True, f"{end['run_s']:.1f} s"))
    header = ["graph", "tasks", "run s", "tasks/s", "peak MB", "B/task", "above base", "graph B/t", "own B/t", "status"]
    return [align(header, rows, left=1, groups=False), *notes], verdicts, data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000_000, help="trivial tasks")
    parser.add_argument("--tree-leaves", type=int, default=TREE_LEAVES, help="leaves of the tree reduction")
    parser.add_argument("--graph", action="append", choices=GRAPHS, help="repeatable; default: both")
    parser.add_argument("--json", type=Path, default=None, help="also save the events here")
    args = parser.parse_args(argv)
    sizes = {"trivial": args.tasks, "tree": args.tree_leaves}
    children = {graph: measure(sizes[graph], graph) for graph in args.graph or GRAPHS}
    lines, verdicts, data = summarize(args.tasks, children)
    print("\n".join(lines))
    for verdict in verdicts:
        print(f"  {verdict.line()}")
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=1, default=str))
    return 0 if all(v.ok is not False for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
