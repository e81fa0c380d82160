"""The final table (medians, tasks/s, us/task, ratios to each peer) and the JSON file."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .runner import Measurement, RunResult
from .targets import Verdict
from .workloads import Workload

__all__ = ["align", "environment", "format_table", "ratio", "save_json", "to_json"]

GRAPH_NOTE = (
    "graphs are raw dicts of tasks (tuples; Task objects for dask.array), built once per workload and given "
    "unchanged to every scheduler: this measures schedulers, not dask collection overhead"
)
RATIO_NOTE = "vs X = median of X / median of this row: > 1 means this row is faster than X"


def ratio(row: Measurement, peer: Measurement | None) -> float | None:
    """How many times faster ``row`` is than ``peer`` (peer median / row median)."""
    if peer is None or row.median is None or peer.median is None or row.median == 0:
        return None
    return peer.median / row.median


def _by_workload(result: RunResult) -> dict[str, dict[str, Measurement]]:
    out: dict[str, dict[str, Measurement]] = {}
    for m in result.measurements:
        out.setdefault(m.workload, {})[m.scheduler] = m
    return out


def align(header: list[str], rows: list[list[str]], left: int = 2, groups: bool = True) -> str:
    """Rows as aligned text: the first ``left`` columns left-aligned, a rule where column 0 changes."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return " | ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs)

    rule = "-+-".join("-" * w for w in widths)
    out = [line(header), rule]
    previous = None
    for row in rows:
        if groups and previous is not None and row[0] != previous:
            out.append(rule)
        out.append(line(row))
        previous = row[0]
    return "\n".join(out)


def format_table(result: RunResult, workloads: Sequence[Workload]) -> str:
    """``workload | scheduler | runs | median | tasks/s | us/task | [efficiency] | vs <each>`` as aligned text."""
    grouped = _by_workload(result)
    names = list(dict.fromkeys(m.scheduler for m in result.measurements))
    show_eff = any(m.ideal_seconds is not None for m in result.measurements)
    header = ["workload", "scheduler", "runs", "median s", "tasks/s", "us/task"]
    header += ["efficiency"] if show_eff else []
    header += [f"vs {n}" for n in names]
    rows: list[list[str]] = []
    for workload in workloads:
        for name in names:
            m = grouped.get(workload.name, {}).get(name)
            if m is None:
                continue
            median, rate = m.median, m.tasks_per_s
            row = [workload.name, name, str(len(m.times))]
            row.append("FAILED" if median is None else f"{median:.4f}")
            row.append("-" if rate is None else f"{rate:,.0f}")
            row.append("-" if median is None else f"{median / m.ntasks * 1e6:,.1f}")
            if show_eff:
                row.append("-" if m.efficiency is None else f"{m.efficiency:.1%}")
            for peer in names:
                r = None if peer == name else ratio(m, grouped[workload.name].get(peer))
                row.append("-" if r is None else f"{r:.2f}x")
            rows.append(row)
    out = [align(header, rows)] if rows else ["(nothing measured)"]
    out += [f"FAILED {m.workload} on {m.scheduler}: {m.error}" for m in result.measurements if m.error]
    out += [f"SKIPPED {name} (did not start): {why}" for name, why in result.skipped.items()]
    out += [f"not run: {what}" for what in result.not_run]
    return "\n".join(out)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def environment() -> dict[str, Any]:
    """Versions and machine facts for the JSON file."""
    versions: dict[str, str | None] = {}
    for module in ("dask", "distributed", "dask_redisparam", "redis"):
        try:
            versions[module] = str(getattr(__import__(module), "__version__", None))
        except Exception:
            versions[module] = None
    status = _git("status", "--porcelain")
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "versions": versions,
    }


def to_json(
    result: RunResult,
    workloads: Sequence[Workload],
    config: dict[str, Any],
    descriptions: dict[str, str],
    verdicts: Sequence[Verdict],
    studies: dict[str, Any],
) -> dict[str, Any]:
    grouped = _by_workload(result)
    records = []
    for m in result.measurements:
        peers = grouped[m.workload]
        records.append(
            {
                "workload": m.workload,
                "scheduler": m.scheduler,
                "ntasks": m.ntasks,
                "workers": m.workers,
                "times_s": m.times,
                "median_s": m.median,
                "tasks_per_s": m.tasks_per_s,
                "us_per_task": None if m.median is None else m.median / m.ntasks * 1e6,
                "ideal_s": m.ideal_seconds,
                "efficiency": m.efficiency,
                "speedup_vs": {p: ratio(m, peers[p]) for p in peers if p != m.scheduler},
                "error": m.error,
            }
        )
    return {
        "environment": environment(),
        "config": config,
        "notes": [GRAPH_NOTE, "speedup_vs: " + RATIO_NOTE],
        "schedulers": descriptions,
        "workloads": {w.name: w.description for w in workloads},
        "startup_s": result.startup_seconds,
        "skipped": result.skipped,
        "not_run": result.not_run,
        "targets": [{"target": v.target, "status": v.status, "detail": v.detail} for v in verdicts],
        "results": records,
        "studies": studies,
    }


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
