"""``python -m benchmarks``: run our scheduler and its peers on the same raw graphs, print a table, save JSON."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from . import peers, studies, workloads
from .report import GRAPH_NOTE, RATIO_NOTE, format_table, save_json, to_json
from .runner import RunResult, log, run_all
from .targets import Verdict, scaling_lines, workload_verdicts

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
QUICK_REPEAT = 2
DEFAULT_REPEAT = 3
QUICK_MAX_TASKS = {"distributed": 1_000, "ray": 10_000, "sync": 20_000, "threads": 20_000, "processes": 20_000}
"""--quick: the largest workload (tasks) each peer runs (distributed manages ~600 tasks/s here, ray ~700); ours runs
all."""


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
        help="run only these workloads and studies (repeatable or comma-separated): "
        + ", ".join([*workloads.REGISTRY, *studies.STUDIES]),
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to save results (default: %(default)s)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="after a run longer than this, skip the remaining repeats of that scheduler and workload",
    )
    parser.add_argument("--no-studies", action="store_true", help="skip the subprocess studies (transfer, memory)")
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


def _select(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The workloads and studies to run, by name."""
    known = [*workloads.REGISTRY, *studies.STUDIES]
    chosen = _names(args.workload, known, "workload")
    if chosen is None:
        chosen = (workloads.QUICK + studies.QUICK) if args.quick else (workloads.DEFAULT + studies.DEFAULT)
    if args.no_studies:
        chosen = [n for n in chosen if n not in studies.STUDIES]
    return [n for n in chosen if n in workloads.REGISTRY], [n for n in chosen if n in studies.STUDIES]


def _run_studies(names: list[str], repeat: int) -> tuple[list[studies.StudyResult], float]:
    t0 = time.perf_counter()
    done = []
    for name in names:
        study = studies.STUDIES[name]()
        log(f"\nstudy {name}: {study.description}")
        try:
            done.append(study.run(repeat))
        except Exception as exc:  # a broken study must not lose the rest of the report
            traceback.print_exc(file=sys.stderr)
            failed = studies.StudyResult(name, [f"  study failed: {type(exc).__name__}: {exc}"])
            failed.verdicts.append(Verdict(name, None, f"study failed: {type(exc).__name__}: {exc}"))
            done.append(failed)
    return done, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, factory in peers.SCHEDULERS.items():
            scheduler = factory()
            why = scheduler.missing()
            print(f"scheduler {name:<12} {scheduler.description}" + (f" [skipped here: {why}]" if why else ""))
        for name, make in workloads.REGISTRY.items():
            print(f"workload  {name:<20} {make().description}")
        for name, make_study in studies.STUDIES.items():
            print(f"study     {name:<20} {make_study().description}")
        return 0
    only = _names(args.only, peers.NAMES, "scheduler") or peers.NAMES
    chosen, chosen_studies = _select(args)
    if peers.OURS not in only:
        chosen_studies = []  # every study measures ours
    repeat = args.repeat or (QUICK_REPEAT if args.quick else DEFAULT_REPEAT)
    limits = QUICK_MAX_TASKS if args.quick else {}
    _prepare_environment()
    todo = [workloads.REGISTRY[n]() for n in chosen]

    factories = [(n, f) for n, f in peers.SCHEDULERS.items() if n in only]
    log(f"schedulers: {', '.join(n for n, _ in factories)}; workloads: {', '.join(chosen)}; repeat: {repeat}")
    log(f"studies: {', '.join(chosen_studies) or '-'}; task limits: {limits or '-'}")
    log(f"note: {GRAPH_NOTE}")
    t0 = time.perf_counter()
    result = run_all(factories, todo, repeat, args.max_seconds, limits) if todo else RunResult()
    study_results, study_s = _run_studies(chosen_studies, repeat)
    total = time.perf_counter() - t0

    verdicts: list[Verdict] = workload_verdicts(result, todo)
    if todo:
        log(f"\nmedians of {repeat} run(s); {RATIO_NOTE}")
        log(f"note: {GRAPH_NOTE}")
        log(format_table(result, todo))
        for line in scaling_lines(result):
            log(line)
        startup = ", ".join(f"{n} {s:.2f} s" for n, s in result.startup_seconds.items())
        log(f"start-up + warm-up (untimed): {startup}")
    for sr in study_results:
        log(f"\n{sr.name}:")
        for line in sr.lines:
            log(line)
        verdicts += sr.verdicts
    log("\ntargets of the performance issue:")
    for v in verdicts:
        log("  " + v.line())
    config = {
        "repeat": repeat,
        "quick": args.quick,
        "schedulers": [n for n, _ in factories],
        "workloads": chosen,
        "studies": chosen_studies,
        "max_tasks": limits,
        "max_seconds": args.max_seconds,
        "workers": peers.WORKERS,
        "total_s": total,
        "studies_s": study_s,
    }
    descriptions = {n: f().description for n, f in factories}
    data = {sr.name: {"lines": sr.lines, "data": sr.data} for sr in study_results}
    save_json(args.json, to_json(result, todo, config, descriptions, verdicts, data))
    log(f"total {total:.1f} s (studies {study_s:.1f} s); results saved to {args.json}")
    # a peer that fails is reported and left out; only a failure of ours fails the command
    ours_failed = peers.OURS in result.skipped or any(m.error for m in result.measurements if m.scheduler == peers.OURS)
    return 1 if ours_failed else 0


if __name__ == "__main__":
    sys.exit(main())
