"""Studies run in fresh processes: a large array through a chain of tasks, the manager's peak memory, Redis
behind a delaying proxy (:mod:`.latency`) and many workers (:mod:`.workers`).

``transfer-<size>``: :mod:`.transfer` once per scheduler (``sync`` first: the compute time of the chain). Per hop
time = (median wall time - sync's median) / 2 hops; throughput = array size / per hop time, set against this
machine's limit measured in the same study (:mod:`.transfer_account`, :mod:`.transfer_limit`). Peak RSS of every
process of the tree (sampled every 20 ms), above its RSS before the runs (interpreter, libraries), against 2x the
array size: ``b = a + 1`` needs both arrays in one process, so 2x is the floor for any scheduler.

``manager-rss-<n>``: :mod:`.manager_rss` ``repeat`` times per scheduler (``threads``, ours); median peak RSS
of the manager process, ours / threads against 1.2x; the largest size must complete.

``scale-<n>``: :mod:`.scale`, ours only, once per graph (trivial, tree): time, peak RSS per task (the user's graph
included, its share shown) against 1.2 KB a task.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .peers import OURS
from .report import align
from .runner import log
from .subproc import ChildResult, run_child
from .targets import Verdict
from .transfer import HOPS
from .transfer_account import Account, verdict
from .workloads import size_label

__all__ = ["DEFAULT", "QUICK", "STUDIES", "Study", "StudyResult"]

MB = 1e6
GB = 1e9
RSS_LIMIT = 2.0
"""Peak RSS of any process, above what it held before the runs (the interpreter and its libraries), at most this
many times the array size. (The worker that computes ``b = a + 1`` holds both arrays: 2x is the floor.)"""
MANAGER_LIMIT = 1.2
"""Our manager's peak RSS at most this many times the threads scheduler's."""


@dataclass
class StudyResult:
    name: str
    lines: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    run: Callable[[int], StudyResult]
    """``run(repeat)``."""


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / MB:,.0f}"


def _child_data(child: ChildResult) -> dict[str, Any]:
    return {"events": child.events, "error": child.error, "seconds": child.seconds, "leftovers": child.leftovers}


def _leftover_note(name: str, child: ChildResult) -> list[str]:
    if not child.leftovers:
        return []
    how = f"exit code {child.returncode}" + (", gave up on purpose" if child.last("error") else "")
    return [f"  NOTE {name}: {child.leftovers} process(es) of its tree outlived it by 3 s ({how}); killed"]


def transfer(label: str, nbytes: int, peers: list[str]) -> Study:
    """The chain with an array of ``nbytes``: ``sync`` (compute time), then ``peers``, then ours."""

    def run(repeat: int) -> StudyResult:
        out = StudyResult(f"transfer-{label}")
        run_timeout = 30 + 60 * nbytes / GB  # per run; the child makes 2 cold runs, then ``repeat`` timed ones
        children: dict[str, ChildResult] = {}
        for name in ["sync", *peers, OURS]:
            log(f"  transfer-{label} {name}: {repeat} run(s) in a fresh process")
            args = ["--scheduler", name, "--bytes", str(nbytes), "--repeat", str(repeat)]
            args += ["--run-timeout", f"{run_timeout:g}"]
            children[name] = run_child("transfer", args, timeout=60 + (repeat + 2) * run_timeout)
        log(f"  transfer-{label} machine limit: raw Unix socket to redis-server, tag passes, fresh memory")
        limit_child = run_child("transfer_limit", ["--bytes", str(nbytes), "--repeat", str(repeat)], run_timeout * 4)
        found = limit_child.last("limit")
        account = None if found is None else Account.of(nbytes, found)
        out.data["limit"] = _child_data(limit_child)
        times = {n: [e["seconds"] for e in c.all("run")] for n, c in children.items()}
        cold = {n: [e["seconds"] for e in c.all("cold")] for n, c in children.items()}
        compute = statistics.median(times["sync"]) if times["sync"] else None
        rows = []
        ours_rate: float | None = None
        for name, child in children.items():
            median = statistics.median(times[name]) if times[name] else None
            hop = None if median is None or compute is None or name == "sync" else (median - compute) / HOPS
            rate = None if hop is None else (nbytes / GB / hop if hop > 0 else float("inf"))
            end = child.last("done") or child.last("error") or {}
            peaks = end.get("peaks") or []
            worst = max(peaks, key=lambda p: p["peak_rss"]) if peaks else None
            rows.append(
                [
                    name,
                    f"{len(times[name])}",
                    " ".join(f"{c:.2f}" for c in cold[name]) if cold[name] else "-",
                    "-" if median is None else f"{median:.3f}",
                    "-" if hop is None else f"{hop:.3f}",
                    "-" if rate is None else f"{rate:.2f}",
                    "-" if worst is None else f"{worst['role']} {_mb(worst['peak_rss'])}",
                    "-" if worst is None else f"{worst['peak_rss'] / nbytes:.1f}x",
                    "ok" if child.error is None else child.error[:120],
                ]
            )
            out.data[name] = {"times_s": times[name], "cold_s": cold[name], "median_s": median, "hop_s": hop}
            out.data[name]["gb_per_s"] = rate
            out.data[name] |= _child_data(child)
            if name == OURS:
                out.verdicts += _transfer_verdicts(label, nbytes, child, rate, peaks, end, account)
                ours_rate = rate
        header = [
            "scheduler",
            "runs",
            "cold runs s",
            "median s",
            "per hop s",
            "GB/s/hop",
            "largest peak RSS MB",
            "x size",
            "status",
        ]
        out.lines.append(align(header, rows, left=1, groups=False))
        if account is None:
            out.lines.append(f"  machine limit not measured: {limit_child.error}")
        else:
            out.lines += account.lines(ours_rate)
        for name, child in children.items():
            cpu = _cpu_line(child)
            if cpu:
                out.lines.append(f"  {name} CPU s per timed run (median; other load hardly changes it): {cpu}")
            end = child.last("done") or child.last("error") or {}
            procs = ", ".join(f"{p['role']} {_mb(p['peak_rss'])}" for p in end.get("peaks") or [])
            if procs:
                out.lines.append(f"  {name} peak RSS MB (sampled every 20 ms): {procs}")
            if "self_maxrss" in end:
                reaped = _mb(end.get("children_maxrss"))
                out.lines.append(
                    f"  {name} manager VmHWM {_mb(end['self_maxrss'])} MB, largest reaped child ru_maxrss {reaped} MB"
                )
            out.lines += _leftover_note(name, child)
        return out

    desc = (
        f"a {nbytes / MB:,.0f} MB float64 array a -> b = a + 1 -> c = b.sum(), {HOPS} hops ({OURS}: fuse_chains=False)"
    )
    return Study(f"transfer-{label}", desc, run)


def _cpu_line(child: ChildResult) -> str:
    runs = [e["cpu"] for e in child.all("run") if "cpu" in e]
    if not runs:
        return ""
    roles = sorted({role for run in runs for role in run})
    medians = {role: statistics.median(run.get(role, 0.0) for run in runs) for role in roles}
    total = statistics.median(sum(run.values()) for run in runs)
    return f"total {total:.2f}: " + ", ".join(f"{role} {t:.2f}" for role, t in medians.items() if t >= 0.005)


def _transfer_verdicts(
    label: str,
    nbytes: int,
    child: ChildResult,
    rate: float | None,
    peaks: list[dict[str, Any]],
    end: dict[str, Any],
    account: Account | None,
) -> list[Verdict]:
    why = child.error
    if why:
        speed = Verdict(f"transfer-{label} throughput", False, f"{OURS} did not complete: {why}")
    elif rate is None:
        speed = Verdict(f"transfer-{label} throughput", None, "no compute time (sync failed)")
    else:
        speed = verdict(label, rate, account)
    every = [*peaks]
    if "self_maxrss" in end:
        every.append({"role": "manager (VmHWM)", "peak_rss": end["self_maxrss"]})
    if not every:
        return [speed, Verdict(f"transfer-{label} peak RSS", None, "no samples")]

    def growth(p: dict[str, Any]) -> int:
        return int(p["peak_rss"] - p.get("first_rss", 0))

    worst = max(every, key=growth)
    detail = (
        f"largest: {worst['role']} {_mb(worst['peak_rss'])} MB, {_mb(growth(worst))} MB above its RSS before the "
        f"runs = {growth(worst) / nbytes:.2f}x the array (<= {RSS_LIMIT:g}x = {_mb(RSS_LIMIT * nbytes)} MB)"
        + (" [run did not complete]" if why else "")
    )
    return [speed, Verdict(f"transfer-{label} peak RSS", growth(worst) <= RSS_LIMIT * nbytes, detail)]


def _rss_row(name: str, ntasks: int, med: dict[str, float] | None, error: str | None, procs: int) -> list[str]:
    status = "ok" if error is None else error[:120]
    if med is None:
        return [name, str(procs), "-", "-", "-", "-", "-", status]
    figures = [f"{med['run_s']:.2f}", f"{ntasks / med['run_s']:,.0f}", _mb(med["baseline"]), _mb(med["maxrss"])]
    return [name, str(procs), *figures, _mb(med["maxrss"] - med["baseline"]), status]


def _rss_verdicts(label: str, ntasks: int, peak: dict[str, dict[str, float]], errors: dict[str, str]) -> list[Verdict]:
    target = f"manager-rss-{label} vs threads"
    ours, threads = peak.get(OURS), peak.get("threads")
    if ours is None or threads is None:
        out = [Verdict(target, False if OURS in errors else None, errors.get(OURS, "not measured"))]
    else:
        r = ours["maxrss"] / threads["maxrss"]
        growth = threads["maxrss"] - threads["baseline"]
        g = "-" if growth <= 0 else f"{(ours['maxrss'] - ours['baseline']) / growth:.2f}x"
        detail = f"{_mb(ours['maxrss'])} vs {_mb(threads['maxrss'])} MB = {r:.2f}x (<= {MANAGER_LIMIT}x); growth {g}"
        out = [Verdict(target, r <= MANAGER_LIMIT, detail)]
    if ntasks >= 1_000_000:
        detail = f"{OURS} {ours['run_s']:.1f} s" if ours else f"{OURS}: {errors.get(OURS, 'not run')}"
        out.append(Verdict(f"{label} trivial tasks complete", ours is not None, detail))
    return out


def manager_rss(ntasks: int) -> Study:
    """``repeat`` fresh processes per scheduler (one for 1M tasks and more)."""
    label = size_label(ntasks)

    def run(repeat: int) -> StudyResult:
        out = StudyResult(f"manager-rss-{label}")
        runs = repeat if ntasks <= 100_000 else 1
        rows, peak, errors = [], {}, {}
        others: list[dict[str, Any]] = []
        for name in ("threads", OURS):
            log(f"  manager-rss-{label} {name}: {runs} fresh process(es)")
            done: list[dict[str, Any]] = []
            for _ in range(runs):
                args = ["--scheduler", name, "--tasks", str(ntasks)] + (["--sample"] if name == OURS else [])
                child = run_child("manager_rss", args, timeout=120 + ntasks / 2_000)
                out.lines += _leftover_note(name, child)
                out.data.setdefault(name, []).append(_child_data(child))
                end = child.last("done")
                if end is None or child.error:
                    errors[name] = child.error or "no result"
                    break
                done.append(end)
                others = end.get("others") or others
            med = {k: statistics.median(d[k] for d in done) for k in ("maxrss", "baseline", "run_s")} if done else None
            if med is not None:
                peak[name] = med
            rows.append(_rss_row(name, ntasks, med, errors.get(name), len(done)))
        header = ["scheduler", "procs", "run s", "tasks/s", "baseline MB", "peak MB", "growth MB", "status"]
        out.lines.insert(0, align(header, rows, left=1, groups=False))
        if others:
            procs = ", ".join(f"{p['role']} {_mb(p['peak_rss'])}" for p in others)
            out.lines.append(f"  {OURS} other processes, peak RSS MB (sampled every 50 ms): {procs}")
        out.verdicts = _rss_verdicts(label, ntasks, peak, errors)
        return out

    desc = (
        f"manager peak RSS (VmHWM: ru_maxrss of a fresh process, clean) for {ntasks:,} trivial tasks, threads vs {OURS}"
    )
    return Study(f"manager-rss-{label}", desc, run)


def scale(ntasks: int) -> Study:
    """:mod:`.scale`: one fresh process per graph (trivial, tree), ``repeat`` ignored (minutes each)."""
    label = size_label(ntasks)

    def run(repeat: int) -> StudyResult:
        from . import scale as scale_module

        sizes = {"trivial": ntasks, "tree": min(ntasks, scale_module.TREE_LEAVES)}
        children = {graph: scale_module.measure(sizes[graph], graph) for graph in scale_module.GRAPHS}
        out = StudyResult(f"scale-{label}")
        out.lines, out.verdicts, out.data = scale_module.summarize(ntasks, children)
        for graph, child in children.items():
            out.lines += _leftover_note(graph, child)
        return out

    desc = f"{ntasks:,} trivial tasks and a tree reduction (at most 2M leaves): time, manager peak RSS per task"
    return Study(f"scale-{label}", desc, run)


def _child_study(name: str, module: str, description: str, timeout: float) -> Study:
    """A study whose child (:mod:`.latency`, :mod:`.workers`) makes its own table and verdicts (``analyse``)."""

    def run(repeat: int) -> StudyResult:
        from importlib import import_module

        child = run_child(module, ["--quiet", "--repeat", str(repeat)], timeout=timeout * repeat)
        lines, verdicts, data = import_module(f"benchmarks.{module}").analyse(child.events)
        out = StudyResult(name, lines, verdicts, {"figures": data} | _child_data(child))
        if child.error:
            out.lines.append(f"  study child failed: {child.error}")
            out.verdicts.append(Verdict(name, False, f"did not complete: {child.error}"))
        out.lines += _leftover_note(name, child)
        return out

    return Study(name, description, run)


STUDIES: dict[str, Callable[[], Study]] = {
    "latency": lambda: _child_study(
        "latency",
        "latency",
        "manager and 2 workers through a proxy delaying each way 0, 0.5, 2, 5 ms: trivial-10k, tree-10k, 500 x 10 ms",
        300,
    ),
    "workers": lambda: _child_study(
        "workers",
        "workers",
        "2, 24, 96 local workers, 20 sleeps of 100 ms each (1,920 at 96): efficiency, Redis/manager CPU per task",
        600,
    ),
    "transfer-1GB": lambda: transfer("1GB", 1_000_000_000, ["processes"]),
    "transfer-256MB": lambda: transfer("256MB", 256_000_000, []),
    "manager-rss-100k": lambda: manager_rss(100_000),
    "manager-rss-1M": lambda: manager_rss(1_000_000),
    "scale-10M": lambda: scale(10_000_000),
}
DEFAULT: list[str] = [
    "transfer-1GB",
    "transfer-256MB",
    "manager-rss-100k",
    "manager-rss-1M",
    "latency",
    "workers",
    "scale-10M",
]
QUICK: list[str] = ["transfer-256MB", "manager-rss-100k"]
