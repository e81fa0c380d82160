"""``python -m benchmarks``: run our scheduler and its peers on the same raw graphs, print a table, save JSON."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import peers, workloads
from .report import GRAPH_NOTE, RATIO_NOTE, format_table, save_json, target_lines, to_json
from .runner import log, run_all

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
QUICK_REPEAT = 2
DEFAULT_REPEAT = 3


def _names(values: list[str] | None, known: list[str], what: str) -> list[str] | None:
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--repeat", type=int, help=f"timed runs per scheduler and workload (default {DEFAULT_REPEAT})")
    parser.add_argument("--quick", action="store_true", help="the quick workload set, for a run in < 2 minutes")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these schedulers (repeatable or comma-separated): {', '.join(peers.NAMES)}",
    )
    parser.add_argument(
        "--workload",
        action="append",
        metavar="NAME",
        help=f"run only these workloads (repeatable or comma-separated): {', '.join(workloads.REGISTRY)}",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to save results (default: %(default)s)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="after a run longer than this, skip the remaining repeats of that scheduler and workload",
    )
    parser.add_argument("--list", action="store_true", help="list schedulers and workloads, then exit")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _prepare_environment() -> None:
    """Let worker processes of every scheduler import ``benchmarks.tasks``: they inherit our environment."""
    root = str(REPO_ROOT)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *parts])
    if root not in sys.path:
        sys.path.insert(0, root)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, factory in peers.SCHEDULERS.items():
            print(f"scheduler {name:<12} {factory().description}")
        for name, w in workloads.REGISTRY.items():
            print(f"workload  {name:<20} {w.description}")
        return 0
    only = _names(args.only, peers.NAMES, "scheduler") or peers.NAMES
    chosen = _names(args.workload, list(workloads.REGISTRY), "workload")
    chosen = chosen or (workloads.QUICK if args.quick else workloads.DEFAULT)
    todo = [workloads.REGISTRY[n] for n in chosen]
    repeat = args.repeat or (QUICK_REPEAT if args.quick else DEFAULT_REPEAT)
    _prepare_environment()

    factories = [(n, f) for n, f in peers.SCHEDULERS.items() if n in only]
    log(f"schedulers: {', '.join(n for n, _ in factories)}; workloads: {', '.join(chosen)}; repeat: {repeat}")
    log(f"note: {GRAPH_NOTE}")
    t0 = time.perf_counter()
    result = run_all(factories, todo, repeat, args.max_seconds)
    total = time.perf_counter() - t0

    log(f"\nmedians of {repeat} run(s); {RATIO_NOTE}")
    log(f"note: {GRAPH_NOTE}")
    log(format_table(result, todo))
    for line in target_lines(result, todo):
        log(line)
    startup = ", ".join(f"{n} {s:.2f} s" for n, s in result.startup_seconds.items())
    log(f"start-up + warm-up (untimed): {startup}")
    config = {
        "repeat": repeat,
        "quick": args.quick,
        "schedulers": [n for n, _ in factories],
        "workloads": chosen,
        "max_seconds": args.max_seconds,
        "workers": peers.WORKERS,
        "total_s": total,
    }
    descriptions = {n: f().description for n, f in factories}
    save_json(args.json, to_json(result, todo, config, descriptions))
    log(f"total {total:.1f} s; results saved to {args.json}")
    # a peer that fails is reported and left out; only a failure of ours fails the command
    ours_failed = peers.OURS in result.skipped or any(m.error for m in result.measurements if m.scheduler == peers.OURS)
    return 1 if ours_failed else 0


if __name__ == "__main__":
    sys.exit(main())
