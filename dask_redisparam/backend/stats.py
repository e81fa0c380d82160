"""The job's statistics in Redis: what the completion script counts, and how to read it back.

A worker sums up each message it completes, per task key prefix (:class:`TaskStats`): tasks finished and failed,
their durations (a sum and a histogram over :data:`BUCKETS`), the first start and the last end. The completion
script (:data:`~dask_redisparam.backend.lua.COMPLETE`) adds them to the job's metrics hash
(:func:`~dask_redisparam.backend.keys.metrics`), to the run's progress hash and, as one entry, to the job's stream of
task events (:func:`~dask_redisparam.backend.keys.events`); the reaper counts lost messages and the manager the
retries it decides. :func:`parse_metrics`, :func:`parse_progress` and :func:`parse_event` read them back for the
dashboard and ``/metrics``.

Examples
--------
>>> stats = TaskStats()
>>> stats.add("inc", True, 10.0, 10.002)
>>> stats.add("inc", False, 10.002, 10.5)
>>> stats.arguments()
['inc', 1, 1, '0.5', '10.0', '10.5', 2, 1, 1, 6, 1]
>>> m = parse_metrics({"finished|inc": "1", "failed|inc": "1", "sum|inc": "0.5", "b1|inc": "1", "b6|inc": "1"})
>>> m.finished, m.failed, m.prefixes["inc"].buckets[:7]
(1, 1, [0, 1, 1, 1, 1, 1, 2])
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import re
from collections.abc import Hashable, Mapping

from dask.utils import key_split

__all__ = [
    "BUCKETS",
    "Event",
    "JobMetrics",
    "PrefixMetrics",
    "TaskStats",
    "clean_prefix",
    "parse_event",
    "parse_metrics",
    "parse_progress",
    "progress_totals",
    "task_prefix",
]

BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)
"""Upper bounds (seconds) of the task duration histogram; bucket ``len(BUCKETS)`` is ``+Inf``."""

PROGRESS_CAP = 30
"""Task key prefixes a run's progress shows by name (the most frequent); the others show as ``other``."""

_UNSAFE = re.compile(r"[\s|]+")


def task_prefix(key: Hashable) -> str:
    """A task key's prefix (:func:`dask.utils.key_split`), ``other`` for a key it cannot split.

    Examples
    --------
    >>> task_prefix(("inc-3f2a", 7)), task_prefix(())
    ('inc', 'other')
    """
    try:
        return str(key_split(key))
    except Exception:  # a key of a shape dask does not expect (an empty tuple...): still counted
        return "other"


def clean_prefix(prefix: str) -> str:
    """A task key prefix as the statistics store it: no blanks or ``|``, at most 60 characters.

    Examples
    --------
    >>> clean_prefix("my task|x"), clean_prefix("")
    ('my_task_x', '_')
    """
    return _UNSAFE.sub("_", prefix)[:60] or "_"


def progress_totals(tasks: Mapping[str, int], cap: int = PROGRESS_CAP) -> dict[str, int]:
    """Tasks per key prefix of a run (``tasks``: prefix -> count), the ``cap`` most frequent by name and the rest as
    ``other``.

    Examples
    --------
    >>> progress_totals({"a": 2, "b": 1, "c": 1}, cap=1)
    {'a': 2, 'other': 2}
    """
    counts: collections.Counter[str] = collections.Counter()
    for prefix, n in tasks.items():
        counts[clean_prefix(prefix)] += n
    out = dict(counts.most_common(cap))
    rest = sum(counts.values()) - sum(out.values())
    if rest:
        out["other"] = out.get("other", 0) + rest
    return out


def _bucket(seconds: float) -> int:
    """The first bucket whose bound is at least ``seconds`` (``len(BUCKETS)``: none).

    Examples
    --------
    >>> _bucket(0.0005), _bucket(0.001), _bucket(0.002), _bucket(1e9)
    (0, 0, 1, 12)
    """
    return bisect.bisect_left(BUCKETS, seconds)


@dataclasses.dataclass
class _Group:
    finished: int = 0
    failed: int = 0
    seconds: float = 0.0
    start: float = float("inf")
    end: float = 0.0
    buckets: dict[int, int] = dataclasses.field(default_factory=dict)


class TaskStats:
    """What one message's tasks did, per key prefix, as the completion script's metric arguments."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}

    def add(self, prefix: str, ok: bool, start: float, end: float) -> None:
        """Count one task that finished (``ok``) or failed, ran from ``start`` to ``end`` (seconds)."""
        group = self._groups.get(prefix)
        if group is None:
            group = self._groups[prefix] = _Group()
        if ok:
            group.finished += 1
        else:
            group.failed += 1
        seconds = max(end - start, 0.0)
        group.seconds += seconds
        group.start, group.end = min(group.start, start), max(group.end, end)
        i = _bucket(seconds)
        group.buckets[i] = group.buckets.get(i, 0) + 1

    def add_many(self, prefix: str, oks: list[bool], starts: list[float], ends: list[float]) -> None:
        """:meth:`add` of several tasks of one prefix (the same counts, without a call per task).

        Examples
        --------
        >>> one, many = TaskStats(), TaskStats()
        >>> for ok, s, e in [(True, 0.0, 0.002), (False, 1.0, 1.5)]:
        ...     one.add("p", ok, s, e)
        >>> many.add_many("p", [True, False], [0.0, 1.0], [0.002, 1.5])
        >>> one.arguments() == many.arguments()
        True
        """
        group = self._groups.get(prefix)
        if group is None:
            group = self._groups[prefix] = _Group()
        done = sum(oks)
        group.finished += done
        group.failed += len(oks) - done
        buckets, total, bucket = group.buckets, group.seconds, bisect.bisect_left
        for start, end in zip(starts, ends, strict=True):
            seconds = end - start if end > start else 0.0
            total += seconds
            i = bucket(BUCKETS, seconds)
            buckets[i] = buckets.get(i, 0) + 1
        group.seconds = total
        if starts:
            group.start, group.end = min(group.start, min(starts)), max(group.end, max(ends))

    def arguments(self) -> list[str | int]:
        """The groups, flat: prefix, finished, failed, duration sum, first start, last end, b, b (bucket, count)."""
        out: list[str | int] = []
        for prefix, g in self._groups.items():
            out += [clean_prefix(prefix), g.finished, g.failed, repr(g.seconds), repr(g.start), repr(g.end)]
            out.append(len(g.buckets))
            for i, count in sorted(g.buckets.items()):
                out += [i, count]
        return out


@dataclasses.dataclass
class PrefixMetrics:
    """Counts of one task key prefix: tasks finished and failed, duration sum, cumulative histogram buckets."""

    finished: int = 0
    failed: int = 0
    seconds: float = 0.0
    buckets: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(BUCKETS) + 1))


@dataclasses.dataclass
class JobMetrics:
    """A job's counters: per prefix, and the messages lost with their workers, the tasks retried."""

    prefixes: dict[str, PrefixMetrics] = dataclasses.field(default_factory=dict)
    lost: int = 0
    retried: int = 0

    @property
    def finished(self) -> int:
        """Tasks finished, all prefixes."""
        return sum(p.finished for p in self.prefixes.values())

    @property
    def failed(self) -> int:
        """Tasks failed, all prefixes."""
        return sum(p.failed for p in self.prefixes.values())


def parse_metrics(fields: dict[str, str]) -> JobMetrics:
    """Read a job's metrics hash (field -> value); histogram buckets come back cumulative, as Prometheus has them."""
    out = JobMetrics(lost=int(fields.get("lost", 0)), retried=int(fields.get("retried", 0)))
    raw: dict[str, dict[int, int]] = {}
    for field, value in fields.items():
        name, sep, prefix = field.partition("|")
        if not sep:
            continue
        p = out.prefixes.setdefault(prefix, PrefixMetrics())
        if name == "finished":
            p.finished = int(value)
        elif name == "failed":
            p.failed = int(value)
        elif name == "sum":
            p.seconds = float(value)
        elif name.startswith("b") and name[1:].isdigit():
            raw.setdefault(prefix, {})[int(name[1:])] = int(value)
    for prefix, counts in raw.items():
        total = 0
        for i in range(len(BUCKETS) + 1):
            total += counts.get(i, 0)
            out.prefixes[prefix].buckets[i] = total
    return out


def parse_progress(fields: dict[str, str]) -> dict[str, dict[str, int]]:
    """Read a run's progress hash: ``{prefix: {"total": n, "done": n, "failed": n}}``.

    Examples
    --------
    >>> parse_progress({"total|inc": "4", "done|inc": "3"})
    {'inc': {'total': 4, 'done': 3, 'failed': 0}}
    """
    out: dict[str, dict[str, int]] = {}
    for field, value in fields.items():
        name, sep, prefix = field.partition("|")
        if sep and name in ("total", "done", "failed"):
            out.setdefault(prefix, {"total": 0, "done": 0, "failed": 0})[name] = int(value)
    return out


@dataclasses.dataclass
class Event:
    """One completed message of the task stream: its worker and run, and per prefix ``(prefix, finished, failed,
    first start, last end)``."""

    worker: str
    run: str
    groups: list[tuple[str, int, int, float, float]]


def parse_event(fields: dict[str, str]) -> Event:
    """Read one entry of the job's stream of task events.

    Examples
    --------
    >>> parse_event({"w": "w1", "r": "r1", "g": "inc 2 0 10.0 10.5"}).groups
    [('inc', 2, 0, 10.0, 10.5)]
    """
    groups = []
    for line in fields.get("g", "").split("\n"):
        parts = line.rsplit(" ", 4)
        if len(parts) == 5:
            groups.append((parts[0], int(parts[1]), int(parts[2]), float(parts[3]), float(parts[4])))
    return Event(fields.get("w", ""), fields.get("r", ""), groups)
